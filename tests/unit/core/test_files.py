"""core.files: the one atomic write, on real files, and the rule that every writer uses it."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from llamarunner.core import files
from llamarunner.core.files import (
    atomic_link_or_copy,
    atomic_write,
    atomic_writer,
    move_into_place,
    resolve_target,
)

PACKAGE = Path(__file__).parents[3] / "app" / "llamarunner"
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions and links")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_a_new_file_and_replaces_an_old_one(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write(path, b"first")
    assert path.read_bytes() == b"first"
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second"
    assert leftovers(tmp_path) == []


@posix_only
def test_a_new_file_gets_the_usual_mode_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh"
        atomic_write(fresh, b"x")
        assert mode_of(fresh) == 0o644  # 0666 minus the umask, as open() would give
        private = tmp_path / "private"
        atomic_write(private, b"x", mode=0o600)
        assert mode_of(private) == 0o600
        fresh.chmod(0o640)
        atomic_write(fresh, b"y")
        assert mode_of(fresh) == 0o640
        # Without keep_mode the file gets `mode`, whatever the old one had.
        atomic_write(fresh, b"z", keep_mode=False, mode=0o600)
        assert mode_of(fresh) == 0o600
    finally:
        os.umask(umask)


@posix_only
def test_a_symlink_stays_a_link_and_its_target_is_written(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "config.json"
    real.parent.mkdir()
    real.write_bytes(b"old")
    real.chmod(0o640)
    link = tmp_path / "config.json"
    link.symlink_to(Path("dotfiles") / "config.json")  # relative, as users make them
    atomic_write(link, b"new")
    assert link.is_symlink()
    assert os.readlink(link) == str(Path("dotfiles") / "config.json")
    assert real.read_bytes() == b"new"
    assert mode_of(real) == 0o640
    # The temp file was made next to the target, on its disk, and is gone.
    assert leftovers(real.parent) == [] and leftovers(tmp_path) == []
    assert resolve_target(link) == real.resolve()


@posix_only
def test_a_chain_of_links_and_a_dangling_link_write_the_final_target(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    middle = tmp_path / "middle.json"
    middle.symlink_to(real)
    top = tmp_path / "top.json"
    top.symlink_to(middle)
    atomic_write(top, b"through two links")  # real does not exist yet: created
    assert top.is_symlink() and middle.is_symlink()
    assert real.read_bytes() == b"through two links"


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_a_failed_write_leaves_the_old_file_and_no_temp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b"old")

    def fail(*_args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_an_exception_inside_the_writer_block_discards_the_data(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match="bad digest"), atomic_writer(path) as out:
        out.write(b"half of something")
        raise ValueError("bad digest")
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_even_an_interrupt_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x"

    def interrupt(*_args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, b"data")
    monkeypatch.undo()
    assert not path.exists() and leftovers(tmp_path) == []


def test_the_order_is_write_fsync_replace_fsync_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        calls.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write(tmp_path / "x", b"data")
    assert calls == (["fsync", "replace"] if os.name == "nt" else ["fsync", "replace", "fsync"])


def test_replace_is_retried_on_windows_style_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[int] = []
    monkeypatch.setattr(files, "_REPLACE_ATTEMPTS", 3)
    monkeypatch.setattr(files, "_REPLACE_RETRY_DELAY", 0)

    def locked(src: Any, dst: Any) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise PermissionError(13, "in use")

    monkeypatch.setattr(os, "replace", locked)
    files.replace(Path("a"), Path("b"))
    assert len(attempts) == 3


def test_move_into_place_renames_a_finished_file(tmp_path: Path) -> None:
    scratch = tmp_path / ".scratch"
    scratch.mkdir()
    made = scratch / "model.gguf"
    made.write_bytes(b"GGUF")
    target = tmp_path / "model.gguf"
    move_into_place(made, target)
    assert target.read_bytes() == b"GGUF" and not made.exists()


@posix_only
def test_move_into_place_takes_a_read_only_file_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = tmp_path / ".made"
    made.write_bytes(b"GGUF")
    made.chmod(0o444)  # as some writers leave what they finished
    opened: list[str] = []

    def only_for_reading(file: Any, mode: str = "r", *args: Any) -> Any:
        opened.append(mode)
        if "+" in mode:  # what 0444 means for anyone but root
            raise PermissionError(13, "Permission denied")
        return open(file, mode, *args)

    monkeypatch.setattr(files, "open", only_for_reading, raising=False)
    target = tmp_path / "model.gguf"
    move_into_place(made, target)
    assert opened == ["r+b", "rb"]
    assert target.read_bytes() == b"GGUF" and mode_of(target) == 0o444


def test_link_or_copy_links_on_one_disk_and_copies_otherwise(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "cache" / "model.gguf"
    source.parent.mkdir()
    source.write_bytes(b"GGUF" * 1000)
    models = tmp_path / "models"
    models.mkdir()
    linked = models / "a.gguf"
    atomic_link_or_copy(source, linked)
    assert linked.read_bytes() == source.read_bytes()
    assert linked.stat().st_ino == source.stat().st_ino

    def no_links(*_args: Any) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    copied = models / "b.gguf"
    copied.write_bytes(b"an older file")
    atomic_link_or_copy(source, copied)
    assert copied.read_bytes() == source.read_bytes()
    assert copied.stat().st_ino != source.stat().st_ino
    assert leftovers(models) == []


# Writing a file the app keeps is one job with one implementation (core/files.py): these
# calls elsewhere mean a second, home-made atomic write (or a non-atomic one).
_WRITE_CALLS = re.compile(
    r"os\.replace\(|os\.rename\(|\.rename\(|shutil\.move\(|mkstemp\(|NamedTemporaryFile\("
    r"|\.write_text\(|\.write_bytes\(|open\([^)\n]*, *[\"'][wx]")
# Each exception, and why it is not a file write that needs the helper.
_ALLOWED = {
    # Moves the previous run's log aside before a new one is opened: a rename, no data.
    "runner/process.py",
    # Builds a whole runtime in a staging folder and renames the folder into place: the
    # folder is the atomic unit (and old builds are moved aside the same way).
    "runtime/installer.py",
}


def test_every_writer_uses_the_one_atomic_write() -> None:
    found = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if _WRITE_CALLS.search(path.read_text(encoding="utf-8"))
    }
    assert found - {"core/files.py"} <= _ALLOWED, sorted(found - _ALLOWED)
