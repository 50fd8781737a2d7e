"""Atomic file writes: readers and crashes see the old file or the new one, never half."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# Windows refuses to replace a file that an editor or virus scanner holds open; such locks
# are usually released within milliseconds.
_REPLACE_ATTEMPTS = 10 if os.name == "nt" else 1
_REPLACE_RETRY_DELAY = 0.05
_CHUNK = 1 << 20
_TEMP_SUFFIX = ".tmp"


def resolve_target(path: Path) -> Path:
    """The file a write to `path` must really replace: symlinks followed to their target.

    Replacing the link itself would turn a user's link (a dotfiles repository, say) into a
    plain file and leave the file it pointed at behind, stale.
    """
    path = Path(path)
    if not path.is_symlink():
        return path
    return Path(os.path.realpath(path))


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable after a power cut (POSIX; a no-op elsewhere)."""
    # Windows cannot open a folder for fsync, and some file systems refuse it; the data
    # file itself was already synced either way.
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace(source: Path, target: Path) -> None:
    """os.replace, retried briefly on Windows while another program holds `target` open."""
    for attempt in range(_REPLACE_ATTEMPTS):
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if attempt == _REPLACE_ATTEMPTS - 1:
                raise
            time.sleep(_REPLACE_RETRY_DELAY)


def temp_path_for(target: Path) -> Path:
    """A fresh name next to `target`: same folder, so the final rename stays on one disk."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")


def _open_temp(target: Path, mode: int) -> tuple[int, Path]:
    # O_EXCL: never write into a file someone else made; `mode` minus the umask, as any
    # newly created file gets (mkstemp would give 0600 whatever the caller wants).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temp = temp_path_for(target)
        try:
            return os.open(temp, flags, mode), temp
        except FileExistsError:
            continue


def _existing_mode(target: Path) -> int | None:
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return None


@contextlib.contextmanager
def atomic_writer(path: Path, *, keep_mode: bool = True, mode: int = 0o666
                  ) -> Iterator[BinaryIO]:
    """Write `path` through a binary handle; the file changes only if the block succeeds.

    The data goes to a temp file in the target's folder, is flushed and fsynced, then
    renamed over the target; the folder is fsynced after the rename. A symlink is followed
    and its target replaced (the link stays a link). With `keep_mode` an existing file keeps
    its permissions; a new file gets `mode` minus the umask (so does every write without
    `keep_mode`). If the block raises, or any step fails, the temp file is removed and the
    target is untouched. For large data, copy into the handle in chunks.
    """
    target = resolve_target(Path(path))
    old_mode = _existing_mode(target) if keep_mode else None
    fd, temp = _open_temp(target, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if old_mode is not None:
            os.chmod(temp, old_mode)
    except BaseException:
        _discard(temp)
        raise
    _install(temp, target)


def atomic_write(path: Path, data: bytes, *, keep_mode: bool = True, mode: int = 0o666) -> None:
    """Replace `path` with `data` atomically and durably (see `atomic_writer`)."""
    with atomic_writer(path, keep_mode=keep_mode, mode=mode) as handle:
        handle.write(data)


def move_into_place(source: Path, target: Path) -> None:
    """Rename a finished file (written by someone else) over `target`, durably.

    `source` must be on the same file system as `target`, best in the same folder. It is
    fsynced before the rename, so a power cut never leaves `target` naming empty blocks.
    """
    target = resolve_target(Path(target))
    _fsync_file(Path(source))
    replace(Path(source), target)
    fsync_dir(target.parent)


def _fsync_file(path: Path) -> None:
    handle: BinaryIO
    try:
        # Read-write: Windows cannot flush a file opened only for reading.
        handle = open(path, "r+b")  # noqa: SIM115 - closed below, whichever way it opened
    except PermissionError:
        if os.name == "nt":
            return  # a read-only file there cannot be flushed; the rename still is atomic
        handle = open(path, "rb")  # noqa: SIM115 - POSIX flushes read-only handles too
    with handle:
        os.fsync(handle.fileno())


def atomic_link_or_copy(source: Path, target: Path) -> None:
    """Put a copy of `source` at `target` atomically: a hard link when both share a disk
    (no space used, no time spent), else a chunked copy that never holds the file in memory.
    """
    target = resolve_target(Path(target))
    temp = temp_path_for(target)
    try:
        os.link(source, temp)
    except OSError:
        with open(source, "rb") as src, atomic_writer(target, keep_mode=False) as out:
            shutil.copyfileobj(src, out, _CHUNK)
        return
    _install(temp, target)


def move_folder_into_place(source: Path, target: Path) -> None:
    """Rename a finished folder (a model made of several files) to `target`, durably.

    Every file is fsynced first and the rename is one step, so `target` either does not
    exist or holds every file whole. `target` must not exist yet: folders cannot be
    renamed over one another on every OS.
    """
    for path in Path(source).rglob("*"):
        if path.is_file():
            _fsync_file(path)
    fsync_dir(Path(source))
    os.rename(source, target)
    fsync_dir(Path(target).parent)


def atomic_link_or_copy_folder(source: Path, target: Path) -> None:
    """`atomic_link_or_copy` for a folder: built next to `target`, renamed into place."""
    target = Path(target)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.",
                                    suffix=".tmp"))
    try:
        for path in sorted(Path(source).rglob("*")):
            relative = path.relative_to(source)
            if path.is_dir():
                (scratch / relative).mkdir(parents=True, exist_ok=True)
            else:
                (scratch / relative).parent.mkdir(parents=True, exist_ok=True)
                atomic_link_or_copy(path, scratch / relative)
        move_folder_into_place(scratch, target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _install(temp: Path, target: Path) -> None:
    """Rename a finished temp file over `target` and fsync the folder; on failure the temp
    file is removed and the target left as it was."""
    try:
        replace(temp, target)
    except BaseException:
        _discard(temp)
        raise
    fsync_dir(target.parent)


def _discard(temp: Path) -> None:
    with contextlib.suppress(OSError):
        temp.unlink()
