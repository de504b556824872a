"""Putting an export at ``export_dir``: one writer at a time, a staging sibling, a swap without a gap.

``export_slot`` is the whole life of one export on disk::

    with export_slot(Path("/srv/models/1"), overwrite=True, notify=print) as slot:
        write_the_export(slot.work_dir)
        slot.publish()

- One writer per export_dir: ``.NAME.lock`` beside it is ``flock``-ed from the first check to the
  end of publishing and holds the owner's pid. A second exportkit process fails at once
  (``ExportDirBusyError``); a killed owner's lock dies with it and the next run takes the file over.
- Dead runs' leftovers beside export_dir (``.NAME.staging-PID-*``, ``.NAME.old-PID-*``,
  ``.NAME.verify-PID-*`` whose PID no longer runs) are removed under the lock before the check;
  an old export stranded by a killed fallback swap (below; export_dir absent, and the dead run
  left both its ``.old-`` and its ``.staging-``) is renamed back to export_dir.
- The swap: Linux ``renameat2(RENAME_EXCHANGE)`` puts the new export at export_dir and the old one
  at the staging name in one step, so a model server polling export_dir never finds it missing.
  Where the kernel or filesystem lacks RENAME_EXCHANGE (not Linux, some network and FUSE
  filesystems), the old export is renamed aside and then the new one renamed in: between those
  two renames export_dir is absent, and a kill there leaves the old export at ``.NAME.old-PID-*``
  (restored by the next run).
- A filesystem that refuses a step (read-only, full, no permission, a name too long, a parent
  that is a file) is a one-line ``FilesystemError`` that names the path and the fix, and nothing
  is left behind.

Not done: the exported files are not fsync-ed before the swap (only the parent directory after
it), so a power loss, unlike a killed process, can still leave recently written files empty.
"""
import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

from exportkit.errors import ExportDirBusyError, ExportDirExistsError, ExportkitError, FilesystemError

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276}  # for a libc without the wrapper (glibc < 2.28)
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)  # what a kernel or filesystem says to a flag it lacks
_RANDOM_CHARS = 8  # tempfile.mkdtemp's random suffix
_MAX_PID_DIGITS = 7  # Linux pid_max is at most 4194304


def _load_renameat2(use_wrapper: bool = True):
    """libc's renameat2, or the raw syscall where libc has none (``use_wrapper=False`` forces that)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    args = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if use_wrapper and hasattr(libc, "renameat2"):
        call = libc.renameat2
        call.argtypes, call.restype = args, ctypes.c_int
        return call
    number = _SYS_RENAMEAT2.get(os.uname().machine)
    if number is None:
        return None
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    return lambda *values: syscall(ctypes.c_long(number), *(t(v) for t, v in zip(args, values)))


_RENAMEAT2 = _load_renameat2()
# Whether this platform has the renameat2 call at all; a filesystem may still refuse
# RENAME_EXCHANGE (``exchange_supported`` asks it), and publishing then falls back.
ATOMIC_EXCHANGE = _RENAMEAT2 is not None


def renameat2(src, dst, flags: int) -> None:
    """Linux ``renameat2(2)``: rename ``src`` to ``dst`` with RENAME_NOREPLACE or RENAME_EXCHANGE.

    Raises OSError (ENOSYS where the call does not exist, EINVAL where the filesystem lacks the flag).

    >>> renameat2("/tmp/a", "/tmp/b", RENAME_EXCHANGE)  # doctest: +SKIP
    """
    if _RENAMEAT2 is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS), str(src))
    if _RENAMEAT2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(src), None, str(dst))


def exchange_supported(directory) -> bool:
    """Whether ``directory``'s filesystem swaps two directories atomically (RENAME_EXCHANGE).

    Creates and removes two empty probe directories in ``directory``.

    >>> exchange_supported(Path("/tmp"))  # doctest: +SKIP
    True
    """
    first = tempfile.mkdtemp(prefix=".exportkit-probe-", dir=directory)
    try:
        second = tempfile.mkdtemp(prefix=".exportkit-probe-", dir=directory)
        try:
            renameat2(first, second, RENAME_EXCHANGE)
            return True
        except OSError as error:
            if error.errno in _UNSUPPORTED:
                return False
            raise
        finally:
            os.rmdir(second)
    finally:
        os.rmdir(first)


def lock_path(export_dir: Path) -> Path:
    return export_dir.parent / f".{export_dir.name}.lock"


def check_export_dir(export_dir: Path, overwrite: bool) -> None:
    """Refuse a file at export_dir, or a non-empty directory unless ``overwrite``."""
    if export_dir.exists() and not export_dir.is_dir():
        raise ExportDirExistsError(f"export_dir {export_dir} exists and is a file; choose another export_dir")
    if export_dir.is_dir() and any(export_dir.iterdir()) and not overwrite:
        raise ExportDirExistsError(
            f"export_dir {export_dir} already exists and is not empty; pass overwrite=true to "
            f"replace it (the old export stays until the new one is complete), or choose another export_dir")


class Slot:
    """One run's claim on export_dir: write into ``work_dir``, then ``publish()``."""

    def __init__(self, export_dir: Path, work_dir: Path, overwrite: bool):
        self.export_dir, self.work_dir, self.overwrite = export_dir, work_dir, overwrite
        self.published = False

    def publish(self) -> None:
        """Swap ``work_dir`` in at export_dir (checked again first); the old export is then removed."""
        if self.published:
            raise RuntimeError(f"{self.work_dir} is already published at {self.export_dir}")
        try:
            os.chmod(self.work_dir, 0o755)  # mkdtemp makes it 0700
            old = self._swap()
        except OSError as error:
            raise filesystem_error(error, f"publish {self.work_dir.name} as export_dir {self.export_dir}",
                                   self.export_dir.parent) from error
        self.published = True
        _fsync_dir(self.export_dir.parent)
        if old is not None:
            _discard(old, self.export_dir)

    def _swap(self) -> Optional[Path]:
        """The new export at export_dir; returns where the old one now is (None if there was none)."""
        work, target = self.work_dir, self.export_dir
        for _ in range(3):  # export_dir may appear or vanish under us (not by exportkit: we hold the lock)
            check_export_dir(target, self.overwrite)
            if os.path.lexists(target):
                try:
                    renameat2(work, target, RENAME_EXCHANGE)
                    return work  # the old export, now at the staging name
                except OSError as error:
                    if error.errno == errno.ENOENT and not os.path.lexists(target):
                        continue
                    if error.errno not in _UNSUPPORTED:
                        raise
                return self._swap_with_gap()
            try:
                renameat2(work, target, RENAME_NOREPLACE)
                return None
            except OSError as error:
                if error.errno == errno.EEXIST:
                    continue
                if error.errno not in _UNSUPPORTED:
                    raise
            os.rename(work, target)
            return None
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(target))

    def _swap_with_gap(self) -> Path:
        old = _sibling(self.export_dir, "old")
        os.rename(self.export_dir, old)
        try:
            os.rename(self.work_dir, self.export_dir)
        except BaseException:
            with contextlib.suppress(OSError):
                os.rename(old, self.export_dir)
            raise
        return old


@contextlib.contextmanager
def export_slot(export_dir: Path, overwrite: bool,
                notify: Callable[[str], None] = lambda line: None) -> Iterator[Slot]:
    """Lock export_dir, clean up what dead runs left beside it, check it, and give a staging dir.

    ``slot.work_dir`` is the staging directory to write into; ``slot.publish()`` swaps it in.
    On any exception inside the block (or a block that does not publish) the staging dir, the
    parents this run created and the lock are removed: nothing is left beside export_dir.
    ``notify`` gets one line per cleanup of a dead run's leftovers.

    >>> with export_slot(Path("/tmp/exports/model"), overwrite=True) as slot:  # doctest: +SKIP
    ...     (slot.work_dir / "saved_model.pb").write_bytes(b"...")
    ...     slot.publish()
    """
    export_dir = Path(export_dir).absolute()
    _check_name_length(export_dir)
    created = _make_parents(export_dir.parent)
    lock, slot = None, None
    try:
        try:
            lock = _acquire_lock(export_dir)
        except OSError as error:
            raise filesystem_error(error, f"lock export_dir {export_dir} (lock file {lock_path(export_dir).name})",
                                   export_dir.parent) from error
        _clean_leftovers(export_dir, notify)
        check_export_dir(export_dir, overwrite)
        try:
            work = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.staging-{os.getpid()}-",
                                         dir=export_dir.parent))
        except OSError as error:
            raise filesystem_error(error, f"create the staging directory beside export_dir {export_dir}",
                                   export_dir.parent) from error
        slot = Slot(export_dir, work, overwrite)
        try:
            yield slot
        except BaseException as error:
            converted = _write_error(error, slot)
            if converted is None:
                raise
            raise converted from error
    finally:
        published = slot is not None and slot.published
        if slot is not None and not published:
            shutil.rmtree(slot.work_dir, ignore_errors=True)
        if lock is not None:
            _release_lock(lock, lock_path(export_dir))
        if not published:
            for parent in created:  # deepest first; one another process wrote into stays
                with contextlib.suppress(OSError):
                    os.rmdir(parent)


def verify_temp_dir(export_dir: Path) -> Path:
    """A new directory ``.NAME.verify-PID-XXXXXXXX`` beside export_dir, for the verify worker's files.

    Remove it when done; if this process is killed first, the next ``export_slot`` on export_dir
    removes it.

    >>> tmp = verify_temp_dir(Path("/tmp/exports/model"))  # doctest: +SKIP
    """
    export_dir = Path(export_dir).absolute()
    try:
        return Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.verify-{os.getpid()}-", dir=export_dir.parent))
    except OSError as error:
        raise filesystem_error(error, f"create a temporary directory beside export_dir {export_dir}",
                               export_dir.parent) from error


def filesystem_error(error: OSError, doing: str, path: Path) -> FilesystemError:
    """``error`` as one line: what could not be done, the system's reason, and the fix."""
    code = error.errno or errno.EIO
    return FilesystemError(f"cannot {doing}: {os.strerror(code)}; {_hint(code, Path(path))}", Path(path), code)


def _hint(code: int, path: Path) -> str:
    if code in (errno.EACCES, errno.EPERM):
        return "choose a writable export_dir"
    if code == errno.EROFS:
        return f"the filesystem at {_mount_point(path)} is read-only; choose a writable export_dir"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"free space on {_mount_point(path)} (the filesystem holding export_dir) or choose another export_dir"
    if code == errno.ENAMETOOLONG:
        return "choose a shorter export_dir"
    if code in (errno.ENOTDIR, errno.EEXIST):
        return f"{_existing(path)} is a file, not a directory; choose another export_dir"
    if code in (errno.EXDEV, errno.EBUSY):
        return "export_dir may be a mount point, which cannot be replaced by a rename; choose a directory inside it"
    return "check export_dir's filesystem or choose another export_dir"


def _existing(path: Path) -> Path:
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def _mount_point(path: Path) -> Path:
    path = _existing(path)
    with contextlib.suppress(OSError):
        device = path.stat().st_dev
        while path.parent != path and path.parent.stat().st_dev == device:
            path = path.parent
    return path


def _check_name_length(export_dir: Path) -> None:
    try:
        limit = os.pathconf(_existing(export_dir.parent), "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    name = len(os.fsencode(export_dir.name))
    staging = f".{export_dir.name}.staging-{'9' * _MAX_PID_DIGITS}-{'x' * _RANDOM_CHARS}"
    extra = len(os.fsencode(staging)) - name
    if name > limit:
        raise FilesystemError(f"export_dir name {_short(export_dir.name)} is {name} bytes, over the limit of {limit} "
                              f"of the filesystem at {_mount_point(export_dir)}; choose a shorter export_dir",
                              export_dir, errno.ENAMETOOLONG)
    if name + extra > limit:
        raise FilesystemError(f"export_dir name {_short(export_dir.name)} ({name} bytes) is too long: exportkit "
                              f"stages the export beside it as .NAME.staging-PID-XXXXXXXX, {name + extra} bytes, "
                              f"over the filesystem's limit of {limit}; choose an export_dir name of at most "
                              f"{limit - extra} bytes", export_dir, errno.ENAMETOOLONG)


def _short(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:30] + "..." + name[-6:])


def _make_parents(directory: Path) -> List[Path]:
    """Create ``directory`` and its missing parents; return the ones this call created, deepest first."""
    missing = []
    path = directory
    while not path.exists() and path.parent != path:
        missing.append(path)
        path = path.parent
    created: List[Path] = []
    try:
        if not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except FileExistsError:
                if not path.is_dir():
                    raise
                continue  # another process made it meanwhile: not ours to remove
            created.append(path)
    except OSError as error:
        for parent in reversed(created):
            with contextlib.suppress(OSError):
                os.rmdir(parent)
        raise filesystem_error(error, f"create {directory}", path) from error
    return created[::-1]


def _acquire_lock(export_dir: Path) -> int:
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
        _release_lock(fd, path)
        raise
    return fd


def _release_lock(fd: int, path: Path) -> None:
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):  # a zombie is dead: its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    return True


def _sibling(export_dir: Path, kind: str) -> Path:
    return export_dir.parent / f".{export_dir.name}.{kind}-{os.getpid()}-{os.urandom(4).hex()}"


def _clean_leftovers(export_dir: Path, notify: Callable[[str], None]) -> None:
    """Under the lock: remove dead runs' staging, old and verify dirs; restore a stranded old export."""
    pattern = re.compile(rf"\.{re.escape(export_dir.name)}\.(staging|old|verify)-(\d+)-.")
    stale = []
    try:
        for entry in os.scandir(export_dir.parent):
            found = pattern.match(entry.name)
            if found and not _alive(int(found.group(2))):
                stale.append((found.group(1), int(found.group(2)), Path(entry.path)))
        # The fallback's window is the only state with an .old- and a .staging- of the same pid:
        # its .old- is the whole old export (one being removed after a publish has no staging).
        staging_pids = {pid for kind, pid, _ in stale if kind == "staging"}
        olds = sorted((s for s in stale if s[0] == "old" and s[1] in staging_pids),
                      key=lambda s: s[2].lstat().st_mtime_ns)
        if olds and not os.path.lexists(export_dir):
            _, pid, old = olds[-1]
            _rename_noreplace(old, export_dir)
            stale.remove(olds[-1])
            notify(f"restored {export_dir} from {old.name} left by dead process {pid}")
        for _, _, path in stale:
            _remove(path)
    except OSError as error:
        raise filesystem_error(error, f"clean up the leftovers of dead runs beside export_dir {export_dir}",
                               export_dir.parent) from error
    if stale:
        notify(f"removed {len(stale)} leftover(s) of dead exportkit process(es) beside {export_dir}")


def _rename_noreplace(src: Path, dst: Path) -> None:
    try:
        renameat2(src, dst, RENAME_NOREPLACE)
    except OSError as error:
        if error.errno not in _UNSUPPORTED:
            raise
        os.rename(src, dst)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        os.unlink(path)
    else:
        shutil.rmtree(path)


def _discard(old: Path, export_dir: Path) -> None:
    """Remove the replaced export, under an ``.old-`` name that says what it is."""
    if old.name.startswith(f".{export_dir.name}.staging-"):
        aside = _sibling(export_dir, "old")
        with contextlib.suppress(OSError):
            os.rename(old, aside)
            old = aside
    with contextlib.suppress(OSError):  # what stays is removed by the next run on export_dir
        _remove(old)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_error(error: BaseException, slot: Slot) -> Optional[FilesystemError]:
    """An error of the block that is the filesystem's doing (a full disk, say) as a FilesystemError."""
    if isinstance(error, ExportkitError) or not isinstance(error, Exception):
        return None
    code = getattr(error, "errno", None) if isinstance(error, OSError) else None
    if code in (errno.ENOSPC, errno.EDQUOT) or os.strerror(errno.ENOSPC) in str(error):
        code = code if code in (errno.ENOSPC, errno.EDQUOT) else errno.ENOSPC  # TF's errors carry only the text
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG):
        filename = getattr(error, "filename", None)
        if filename is None or slot.work_dir not in Path(os.path.abspath(str(filename))).parents:
            return None
    else:
        return None
    return filesystem_error(OSError(code, os.strerror(code)),
                            f"write the export for export_dir {slot.export_dir}", slot.export_dir.parent)
