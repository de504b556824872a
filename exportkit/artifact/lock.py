"""One writer per export_dir: ``.NAME.lock`` beside it, ``flock``-ed, holding the owner's pid.

A finished run unlinks the file before closing it; a waiter that locked a file since unlinked
retries on the new one, so the lock is never held twice. A killed owner's lock dies with it and
the next run takes the file over.
"""

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator, Optional

from exportkit.errors import ExportDirBusyError


def lock_path(export_dir: Path) -> Path:
    """``.NAME.lock`` beside export_dir."""
    return export_dir.parent / f".{export_dir.name}.lock"


def acquire(export_dir: Path) -> int:
    """Lock export_dir (an fd to ``release``), or ``ExportDirBusyError`` naming the live owner's pid."""
    path = lock_path(export_dir)
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner, current = _read_pid(fd), _same_file(fd, path)
            os.close(fd)
            if current:
                raise ExportDirBusyError(export_dir, owner) from None
            continue  # its owner released (and unlinked) it meanwhile
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            break
        os.close(fd)  # unlinked by a releasing owner between our open and flock: lock the new file
    else:
        raise ExportDirBusyError(export_dir)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except BaseException:
        release(fd, path)
        raise
    return fd


@contextlib.contextmanager
def held(path: Path) -> Iterator[None]:
    """Hold ``path``'s ``flock`` for the block, waiting for it (every holder keeps it for
    milliseconds); a file its holder removed meanwhile is opened again. ``OSError`` from opening it
    is the caller's to tell."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            break
        os.close(fd)  # removed by a holder that gave up on its directory: take the new file
    try:
        yield
    finally:
        os.close(fd)


def release(fd: int, path: Path) -> None:
    try:
        with contextlib.suppress(OSError):
            os.unlink(path)  # before closing: whoever waits on this file sees it is stale
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_ino, held.st_dev) == (on_disk.st_ino, on_disk.st_dev)


def _read_pid(fd: int) -> Optional[int]:
    for _ in range(50):  # the owner writes its pid just after taking the lock
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None
