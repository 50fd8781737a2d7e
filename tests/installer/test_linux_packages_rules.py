"""The .deb's rules as plain functions: versions, system-library relations, the menu entry."""

from __future__ import annotations

from types import ModuleType

import pytest


@pytest.mark.parametrize(("python", "debian"), [
    ("0.1.0", "0.1.0"),
    ("1.2.0rc1", "1.2.0~rc1"),
    ("2.0a1", "2.0~a1"),
    ("2.0b3", "2.0~b3"),
    ("1.0.0.dev4", "1.0.0~dev4"),
])
def test_pre_releases_sort_before_their_release(build_packages: ModuleType, python: str,
                                                debian: str) -> None:
    assert build_packages.debian_version(python) == debian


def test_relations_come_from_what_the_bundle_links(build_packages: ModuleType) -> None:
    needs = build_packages.ElfNeeds(
        missing={
            "libc.so.6": ["llamarunner"],
            "libgomp.so.1": ["_internal/runtime/llama-server"],
            "libstdc++.so.6": ["_internal/runtime/llama-server"],
            "libxcb.so.1": ["_internal/libX11.so.6"],
            "libwayland-client.so.0": ["_internal/PySide6/Qt/plugins/platforms/libqwayland.so"],
            # Linked only by a Wayland plugin: X11 users must not be made to install it.
            "libEGL.so.1": ["_internal/PySide6/Qt/plugins/wayland-shell-integration/x.so"],
        },
        glibc=(2, 34),
    )
    relations = build_packages.package_relations(needs)
    assert relations["Depends"] == ["libc6 (>= 2.34)", "libgomp1", "libstdc++6", "libxcb1"]
    assert relations["Recommends"] == ["libegl1", "libwayland-client0"]


def test_a_library_with_no_known_package_stops_the_build(build_packages: ModuleType) -> None:
    needs = build_packages.ElfNeeds(missing={"libmystery.so.7": ["_internal/odd.so"]})
    with pytest.raises(build_packages.PackagingError,
                       match=r"libmystery\.so\.7 \(linked by _internal/odd\.so\).*SYSTEM_PACKAGES"):
        build_packages.package_relations(needs)


def test_menu_entry_template_is_filled_in(build_packages: ModuleType) -> None:
    entry = build_packages.desktop_entry("/opt/llamarunner/llamarunner", "/icons/app.png")
    assert entry.startswith("[Desktop Entry]\n")
    assert "\nExec=/opt/llamarunner/llamarunner\n" in entry
    assert "\nIcon=/icons/app.png\n" in entry
    assert "@" not in entry and "#" not in entry
