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
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional

from exportkit.artifact import leftovers, lock, renames
from exportkit.artifact.filesystem import check_name_length, filesystem_error, make_parents
from exportkit.errors import ExportDirExistsError, ExportkitError, FilesystemError


def check_export_dir(export_dir: Path, overwrite: bool) -> None:
    """Refuse a file at export_dir, or a non-empty directory unless ``overwrite``."""
    if export_dir.exists() and not export_dir.is_dir():
        raise ExportDirExistsError(f"export_dir {export_dir} exists and is a file; choose another export_dir")
    if export_dir.is_dir() and any(export_dir.iterdir()) and not overwrite:
        raise ExportDirExistsError(
            f"export_dir {export_dir} already exists and is not empty; pass overwrite=true to "
            f"replace it (the old export stays until the new one is complete), or choose another export_dir"
        )


class Slot:
    """One run's claim on export_dir: write into ``work_dir``, then ``publish()``."""

    def __init__(self, export_dir: Path, work_dir: Path, overwrite: bool):
        self.export_dir, self.work_dir, self.overwrite = export_dir, work_dir, overwrite
        self.published = False
        # a numbered version under a serving base path (exportkit.artifact.versions.version_slot):
        # its number, the base path, and the highest version on disk when it was chosen
        self.version: Optional[int] = None
        self.base_path: Optional[Path] = None
        self.previous: Optional[int] = None

    def publish(self) -> None:
        """Swap ``work_dir`` in at export_dir (checked again first); the old export is then removed."""
        if self.published:
            raise RuntimeError(f"{self.work_dir} is already published at {self.export_dir}")
        try:
            os.chmod(self.work_dir, 0o755)  # mkdtemp makes it 0700
            old = self._swap()
        except OSError as error:
            raise filesystem_error(
                error, f"publish {self.work_dir.name} as export_dir {self.export_dir}", self.export_dir.parent
            ) from error
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
                    renames.renameat2(work, target, renames.RENAME_EXCHANGE)
                    return work  # the old export, now at the staging name
                except OSError as error:
                    if error.errno == errno.ENOENT and not os.path.lexists(target):
                        continue
                    if error.errno not in renames.UNSUPPORTED:
                        raise
                return self._swap_with_gap()
            try:
                renames.renameat2(work, target, renames.RENAME_NOREPLACE)
                return None
            except OSError as error:
                if error.errno == errno.EEXIST:
                    continue
                if error.errno not in renames.UNSUPPORTED:
                    raise
            os.rename(work, target)
            return None
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(target))

    def _swap_with_gap(self) -> Path:
        old = leftovers.sibling(self.export_dir, "old")
        os.rename(self.export_dir, old)
        try:
            os.rename(self.work_dir, self.export_dir)
        except BaseException:
            with contextlib.suppress(OSError):
                os.rename(old, self.export_dir)
            raise
        return old


@contextlib.contextmanager
def export_slot(export_dir: Path, overwrite: bool, notify: Callable[[str], None] = lambda line: None) -> Iterator[Slot]:
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
    check_name_length(export_dir)
    created = make_parents(export_dir.parent)
    held, slot = None, None
    try:
        try:
            held = lock.acquire(export_dir)
        except OSError as error:
            raise filesystem_error(
                error, f"lock export_dir {export_dir} (lock file {lock.lock_path(export_dir).name})", export_dir.parent
            ) from error
        leftovers.clean(export_dir, notify)
        check_export_dir(export_dir, overwrite)
        try:
            work = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.staging-{os.getpid()}-", dir=export_dir.parent))
        except OSError as error:
            raise filesystem_error(
                error, f"create the staging directory beside export_dir {export_dir}", export_dir.parent
            ) from error
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
        if held is not None:
            lock.release(held, lock.lock_path(export_dir))
        if not published:
            for parent in created:  # deepest first; one another process wrote into stays
                with contextlib.suppress(OSError):
                    os.rmdir(parent)


def _discard(old: Path, export_dir: Path) -> None:
    """Remove the replaced export, under an ``.old-`` name that says what it is."""
    if old.name.startswith(f".{export_dir.name}.staging-"):
        aside = leftovers.sibling(export_dir, "old")
        with contextlib.suppress(OSError):
            os.rename(old, aside)
            old = aside
    with contextlib.suppress(OSError):  # what stays is removed by the next run on export_dir
        leftovers.remove(old)


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
    return filesystem_error(
        OSError(code, os.strerror(code)), f"write the export for export_dir {slot.export_dir}", slot.export_dir.parent
    )
