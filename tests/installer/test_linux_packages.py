"""The Linux packages: the .deb installs into a scratch root, runs and purges cleanly; the
.tar.gz unpacks and runs; both carry the self-tested bundle."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = [
    pytest.mark.timeout(1200),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux packages"),
    pytest.mark.skipif(shutil.which("dpkg-deb") is None or shutil.which("objdump") is None,
                       reason="needs dpkg-deb and objdump (a Debian-like system)"),
]
SelfTest = Callable[..., Any]
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256)
# Written by update-desktop-database and gtk-update-icon-cache when they are installed.
REGENERATED = {"mimeinfo.cache", "icon-theme.cache"}


@dataclass(frozen=True)
class Packages:
    deb: Path
    tarball: Path
    version: str


@pytest.fixture(scope="module")
def packages(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Packages:
    dist = tmp_path_factory.mktemp("packages")
    result = subprocess.run(
        [sys.executable, "installer/linux/build_packages.py", "--bundle", str(bundle_dir),
         "--dist", str(dist)],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True,
        timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    debs = list(dist.glob("llamarunner_*.deb"))
    tarballs = list(dist.glob("llamarunner-*-linux-*.tar.gz"))
    assert len(debs) == 1 and len(tarballs) == 1, list(dist.iterdir())
    version = debs[0].name.split("_")[1]
    return Packages(debs[0], tarballs[0], version)


def control(deb: Path) -> dict[str, str]:
    text = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True,
                          check=True).stdout
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith(" "):
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return fields


def relation_names(value: str) -> list[str]:
    return [item.split()[0] for item in value.split(",") if item.strip()]


def owning_package(library: Path) -> str:
    """The package that installed ``library``, under any of its merged-/usr spellings."""
    spellings = []
    for path in (library, Path(os.path.realpath(library))):
        text = path.as_posix()
        spellings += [text, text.removeprefix("/usr"), "/usr" + text]
    for candidate in dict.fromkeys(spellings):
        found = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if found.returncode == 0:
            return found.stdout.split(":")[0]
    raise AssertionError(f"no package owns {library}")


# ---- what is in the .deb ------------------------------------------------------------------------


def test_deb_control_names_package_version_and_system_dependencies(
        packages: Packages, build_bundle: ModuleType) -> None:
    fields = control(packages.deb)
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert fields["Package"] == "llamarunner"
    assert fields["Architecture"] == arch
    assert packages.deb.name == f"llamarunner_{fields['Version']}_{arch}.deb"
    assert int(fields["Installed-Size"]) > 50_000  # KiB: the whole bundle is in
    depends = relation_names(fields["Depends"])
    # llama-server's runtime libraries and what Qt's xcb plugin needs but PyInstaller does
    # not bundle (libxcb must match the X server; GL/EGL the drivers).
    for package in ("libc6", "libgomp1", "libstdc++6", "libgcc-s1", "libxcb1", "libgl1",
                    "libegl1"):
        assert package in depends, fields["Depends"]
    assert re.search(r"libc6 \(>= 2\.\d+\)", fields["Depends"])
    description = subprocess.run(["dpkg-deb", "-f", str(packages.deb), "Description"],
                                 capture_output=True, text=True, check=True).stdout
    runtime = build_bundle.read_runtime(build_bundle.default_runtime_binary())
    assert f"bundles llama-server from llama.cpp {runtime.version}" in description


def test_deb_lays_out_opt_command_menu_entry_and_icons(packages: Packages) -> None:
    listing = subprocess.run(["dpkg-deb", "-c", str(packages.deb)], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    entries = {line.split()[5].removeprefix("."): line for line in listing}
    assert all(line.split()[1] == "root/root" for line in listing)
    assert "/opt/llamarunner/llamarunner" in entries
    assert "/opt/llamarunner/_internal/runtime/llama-server" in entries
    assert "/opt/llamarunner/_internal/runtime/runtime.json" in entries
    assert entries["/opt/llamarunner/llamarunner"].startswith("-rwxr-xr-x")
    link = entries["/usr/bin/llamarunner"]
    assert link.startswith("l") and link.endswith("-> ../../opt/llamarunner/llamarunner")
    assert "/usr/share/applications/llamarunner.desktop" in entries
    for size in ICON_SIZES:
        assert f"/usr/share/icons/hicolor/{size}x{size}/apps/llamarunner.png" in entries
    outside = [path for path in entries if not path.startswith(
        ("/opt/llamarunner", "/usr/bin/llamarunner", "/usr/share/applications/",
         "/usr/share/icons/hicolor/", "/usr/share/doc/llamarunner/"))
        and path.rstrip("/") not in ("", "/opt", "/usr", "/usr/bin", "/usr/share",
                                     "/usr/share/icons", "/usr/share/doc")]
    assert not outside, outside


def test_deb_carries_copyright_and_third_party_notices(packages: Packages,
                                                       tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(packages.deb), str(tmp_path)], check=True)
    doc = tmp_path / "usr/share/doc/llamarunner"
    notices = (doc / "THIRD-PARTY-NOTICES.txt").read_text(encoding="utf-8")
    assert notices == (tmp_path / "opt/llamarunner/licenses/THIRD-PARTY-NOTICES.txt"
                       ).read_text(encoding="utf-8")
    for name in ("PySide6_Essentials", "aiohttp", "Python", "llama.cpp"):
        assert f"\n{name} " in notices
    copyright_text = (doc / "copyright").read_text(encoding="utf-8")
    assert "/usr/share/doc/llamarunner/THIRD-PARTY-NOTICES.txt" in copyright_text
    assert "/opt/llamarunner/licenses/" in copyright_text
    # Whole, for systems that keep only the copyright files of /usr/share/doc.
    assert copyright_text.endswith(notices.rstrip() + "\n")
    assert not (doc / "copyright").is_symlink()
    assert (tmp_path / "opt/llamarunner/licenses/PySide6_Essentials/LGPL-3.0.txt").is_file()


def test_deb_maintainer_scripts_refresh_caches_and_honour_dpkg_root(
        packages: Packages, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-e", str(packages.deb), str(tmp_path / "DEBIAN")], check=True)
    for name in ("postinst", "postrm"):
        script = tmp_path / "DEBIAN" / name
        assert os.access(script, os.X_OK)
        text = script.read_text()
        assert "gtk-update-icon-cache" in text and "update-desktop-database" in text
        assert '"${DPKG_ROOT:-}/usr/share' in text
        subprocess.run(["sh", "-n", str(script)], check=True)
    md5sums = (tmp_path / "DEBIAN" / "md5sums").read_text()
    assert " opt/llamarunner/llamarunner\n" in md5sums


def test_desktop_entry_is_valid_and_starts_the_command(packages: Packages,
                                                       tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(packages.deb), str(tmp_path)], check=True)
    entry = tmp_path / "usr/share/applications/llamarunner.desktop"
    text = entry.read_text()
    assert "\nExec=llamarunner\n" in text
    assert "\nIcon=llamarunner\n" in text
    assert "\nName=LlamaRunner Pro\n" in text
    assert "@" not in text, "a template placeholder was left unfilled"
    validator = shutil.which("desktop-file-validate")
    if validator:
        result = subprocess.run([validator, str(entry)], capture_output=True, text=True)
        assert result.returncode == 0 and "error" not in result.stdout, result.stdout


def test_deb_depends_are_installed_here(packages: Packages) -> None:
    """What the .deb asks for exists, at the asked version, on this Debian system."""
    for item in control(packages.deb)["Depends"].split(","):
        match = re.fullmatch(r"\s*(\S+)(?: \(>= ([^)]+)\))?\s*", item)
        assert match, item
        name, minimum = match.groups()
        query = subprocess.run(["dpkg-query", "-W", "-f", "${Version} ${Status}", name],
                               capture_output=True, text=True)
        assert query.returncode == 0 and "install ok installed" in query.stdout, (
            f"{name} is not installed here: {query.stdout}{query.stderr}")
        if minimum:
            installed = query.stdout.split()[0]
            assert subprocess.run(["dpkg", "--compare-versions", installed, "ge", minimum]
                                  ).returncode == 0, f"{name} {installed} < {minimum}"


def test_deb_relations_cover_every_system_library_the_bundle_links(
        packages: Packages, bundle_dir: Path, build_packages: ModuleType) -> None:
    """Cross-check the soname -> package table against this system's dpkg database."""
    fields = control(packages.deb)
    declared = set(relation_names(fields["Depends"]))
    declared |= set(relation_names(fields.get("Recommends", "")))
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    cache = subprocess.run([ldconfig, "-p"], capture_output=True, text=True,
                           check=True).stdout
    needs = build_packages.elf_needs(bundle_dir)
    checked = 0
    for soname in sorted(needs.missing):
        match = re.search(rf"^\s*{re.escape(soname)} \([^)]*x86-64[^)]*\) => (\S+)$"
                          if os.uname().machine == "x86_64"
                          else rf"^\s*{re.escape(soname)} \([^)]*\) => (\S+)$",
                          cache, re.MULTILINE)
        if match is None:
            continue  # not on this system: only allowed for Recommends (checked below)
        package = owning_package(Path(match.group(1)))
        assert package in declared, f"{soname} comes from {package}, not declared"
        checked += 1
    assert checked >= 5
    for soname in needs.missing:
        if f"{soname} " not in cache:
            pkg, relation = build_packages.SYSTEM_PACKAGES[soname]
            assert relation == build_packages.RECOMMENDS, f"{soname} ({pkg}) is missing here"


# ---- installing it -----------------------------------------------------------------------------


def dpkg(root: Path, admin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """dpkg on a scratch root: its own database, maintainer scripts run outside a chroot."""
    return subprocess.run(
        ["dpkg", f"--root={root}", f"--admindir={admin}", f"--log={admin / 'dpkg.log'}",
         "--force-script-chrootless", "--force-not-root", *args],
        capture_output=True, text=True, timeout=300)


def test_deb_installs_runs_and_purges_without_a_trace(
        packages: Packages, tmp_path: Path, selftest: SelfTest,
        display_env: dict[str, str] | None) -> None:
    root, admin = tmp_path / "root", tmp_path / "admin"
    root.mkdir()
    for folder in ("info", "updates", "triggers"):
        (admin / folder).mkdir(parents=True)
    (admin / "status").touch()

    # The scratch database knows no other package; the Depends are checked against the
    # real system in test_deb_depends_are_installed_here.
    installed = dpkg(root, admin, "--force-depends", "--install", str(packages.deb))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    command = root / "usr/bin/llamarunner"
    assert command.is_symlink()
    assert command.resolve() == (root / "opt/llamarunner/llamarunner").resolve()
    assert (root / "usr/share/applications/llamarunner.desktop").is_file()
    status = subprocess.run(["dpkg-query", f"--admindir={admin}", "-W", "-f",
                             "${Status} ${Version}", "llamarunner"],
                            capture_output=True, text=True)
    assert status.stdout == f"install ok installed {packages.version}"

    result = selftest(command, display_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"bundle {root / 'opt' / 'llamarunner'}" in result.stdout

    purged = dpkg(root, admin, "--purge", "llamarunner")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    # The caches the maintainer scripts regenerate belong to the system, not the package
    # (on a real system they exist before and after); nothing else may stay.
    left = [p for p in root.rglob("*") if not p.is_dir() and p.name not in REGENERATED]
    assert not left, f"files left after purge: {left}"
    assert not (root / "opt" / "llamarunner").exists()
    assert "llamarunner" not in (admin / "status").read_text()


# ---- the .tar.gz ---------------------------------------------------------------------------------


def test_tarball_holds_the_bundle_and_runs_where_unpacked(
        packages: Packages, tmp_path: Path, bundle_dir: Path, selftest: SelfTest) -> None:
    assert packages.tarball.name.startswith(f"llamarunner-{packages.version}-linux-")
    with tarfile.open(packages.tarball) as tar:
        members = tar.getmembers()
        assert {m.name.split("/")[0] for m in members} == {"llamarunner"}
        assert all(m.uid == 0 and m.gid == 0 for m in members)
        tar.extractall(tmp_path, filter="data")
    unpacked = tmp_path / "llamarunner"
    bundled = sorted(p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*"))
    assert sorted(p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*")) == bundled
    result = selftest(unpacked / "llamarunner")
    assert result.returncode == 0, result.stdout + result.stderr
