"""What dead runs leave beside export_dir (``.NAME.staging-PID-*``, ``.NAME.old-PID-*``,
``.NAME.verify-PID-*``): named with the owner's pid, removed by the next run once that pid is dead;
an old export stranded by a killed fallback swap is restored."""

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from exportkit.artifact.filesystem import filesystem_error
from exportkit.artifact.renames import rename_noreplace


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):  # a zombie is dead: its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    return True


def sibling(export_dir: Path, kind: str) -> Path:
    return export_dir.parent / f".{export_dir.name}.{kind}-{os.getpid()}-{os.urandom(4).hex()}"


def clean(export_dir: Path, notify: Callable[[str], None]) -> None:
    """Under the lock: remove dead runs' staging, old and verify dirs; restore a stranded old export."""
    pattern = re.compile(rf"\.{re.escape(export_dir.name)}\.(staging|old|verify)-(\d+)-.")
    stale = []
    try:
        for entry in os.scandir(export_dir.parent):
            found = pattern.match(entry.name)
            if found and not alive(int(found.group(2))):
                stale.append((found.group(1), int(found.group(2)), Path(entry.path)))
        # The fallback's window is the only state with an .old- and a .staging- of the same pid:
        # its .old- is the whole old export (one being removed after a publish has no staging).
        staging_pids = {pid for kind, pid, _ in stale if kind == "staging"}
        olds = sorted(
            (s for s in stale if s[0] == "old" and s[1] in staging_pids), key=lambda s: s[2].lstat().st_mtime_ns
        )
        if olds and not os.path.lexists(export_dir):
            _, pid, old = olds[-1]
            rename_noreplace(old, export_dir)
            stale.remove(olds[-1])
            notify(f"restored {export_dir} from {old.name} left by dead process {pid}")
        for _, _, path in stale:
            remove(path)
    except OSError as error:
        raise filesystem_error(
            error, f"clean up the leftovers of dead runs beside export_dir {export_dir}", export_dir.parent
        ) from error
    if stale:
        notify(f"removed {len(stale)} leftover(s) of dead exportkit process(es) beside {export_dir}")


def remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        os.unlink(path)
    else:
        shutil.rmtree(path)


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
        raise filesystem_error(
            error, f"create a temporary directory beside export_dir {export_dir}", export_dir.parent
        ) from error
