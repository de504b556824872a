"""export_dir's filesystem: creating its parents, its name's length, and a refused step as one
line (``FilesystemError``) naming the path, the system's reason and the fix."""

import contextlib
import errno
import os
from pathlib import Path
from typing import List

from exportkit.errors import FilesystemError

RANDOM_CHARS = 8  # tempfile.mkdtemp's random suffix
MAX_PID_DIGITS = 7  # Linux pid_max is at most 4194304


def filesystem_error(error: OSError, doing: str, path: Path) -> FilesystemError:
    """``error`` as one line: what could not be done, the system's reason, and the fix."""
    code = error.errno or errno.EIO
    return FilesystemError(f"cannot {doing}: {os.strerror(code)}; {_hint(code, Path(path))}", Path(path), code)


def _hint(code: int, path: Path) -> str:
    if code in (errno.EACCES, errno.EPERM):
        return "choose a writable export_dir"
    if code == errno.EROFS:
        return f"the filesystem at {mount_point(path)} is read-only; choose a writable export_dir"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"free space on {mount_point(path)} (the filesystem holding export_dir) or choose another export_dir"
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


def mount_point(path: Path) -> Path:
    path = _existing(path)
    with contextlib.suppress(OSError):
        device = path.stat().st_dev
        while path.parent != path and path.parent.stat().st_dev == device:
            path = path.parent
    return path


def check_name_length(export_dir: Path) -> None:
    try:
        path_limit = os.pathconf(_existing(export_dir.parent), "PC_PATH_MAX")
    except (OSError, ValueError):
        path_limit = 4096
    length = (
        len(os.fsencode(export_dir)) + 1 + len(f".{export_dir.name}.staging-{'9' * MAX_PID_DIGITS}-") + RANDOM_CHARS
    )
    if length >= path_limit:
        raise FilesystemError(
            f"export_dir is a path of {len(os.fsencode(export_dir))} bytes ({_short(str(export_dir))}); with the "
            f"staging directory beside it that is over the system's limit of {path_limit} bytes for a path; "
            f"choose a shorter export_dir",
            export_dir,
            errno.ENAMETOOLONG,
        )
    try:
        limit = os.pathconf(_existing(export_dir.parent), "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    name = len(os.fsencode(export_dir.name))
    staging = f".{export_dir.name}.staging-{'9' * MAX_PID_DIGITS}-{'x' * RANDOM_CHARS}"
    extra = len(os.fsencode(staging)) - name
    if name > limit:
        raise FilesystemError(
            f"export_dir name {_short(export_dir.name)} is {name} bytes, over the limit of {limit} "
            f"of the filesystem at {mount_point(export_dir)}; choose a shorter export_dir",
            export_dir,
            errno.ENAMETOOLONG,
        )
    if name + extra > limit:
        raise FilesystemError(
            f"export_dir name {_short(export_dir.name)} ({name} bytes) is too long: exportkit "
            f"stages the export beside it as .NAME.staging-PID-XXXXXXXX, {name + extra} bytes, "
            f"over the filesystem's limit of {limit}; choose an export_dir name of at most "
            f"{limit - extra} bytes",
            export_dir,
            errno.ENAMETOOLONG,
        )


def _short(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:30] + "..." + name[-6:])


def make_parents(directory: Path) -> List[Path]:
    """Create ``directory`` and its missing parents; return the ones this call created, deepest first."""
    missing = []
    path = directory
    created: List[Path] = []
    try:
        while not path.exists() and path.parent != path:
            missing.append(path)
            path = path.parent
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
