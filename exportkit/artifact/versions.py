"""Publishing numbered versions under a TensorFlow Serving model base path: ``BASE/1``, ``BASE/2``...

TF Serving polls a base path and loads every directory whose name is an integer. ``version_slot``
gives one export its number and its ``export_slot`` (``exportkit.artifact.publish``)::

    with version_slot(Path("/srv/models/clf"), "auto", overwrite=False) as slot:
        write_the_export(slot.work_dir)       # .3.staging-PID-*: a dot-name TF Serving ignores
        slot.publish()                        # /srv/models/clf/3 appears whole, in one rename
    slot.version, slot.previous               # 3, 2 (the highest version on disk when 3 was chosen)
    finish(slot, keep=2, labels={"stable": 2}, model_name="clf", model_config_file=...)

- Choosing: under ``BASE/.exportkit.lock`` (``flock``, held for milliseconds), ``auto`` takes one
  more than the highest version on disk or reserved. A version is reserved from the moment its
  ``export_slot`` holds ``.N.lock`` (entered before the base lock is released) until it is
  published, so two concurrent exports get two numbers.
- A killed run: its locks die with it, its ``.N.lock`` names a dead pid so N is free again, and
  its staging directory is a dot-name TF Serving never loads; the next run on the base path
  removes what it left (``sweep_dead``).
- After publishing (``finish``), under the base lock again: the model config file is rewritten
  atomically (a temporary file renamed over it) listing the versions that stay, then the versions
  beyond ``keep`` are renamed aside to dot-names and only then deleted, so a polling server never
  sees a half-deleted version. The version just published and every labelled one always stay.
"""

import contextlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import AbstractSet, Callable, Dict, Iterator, List, Mapping, Optional, Set, Tuple

from exportkit.artifact import leftovers, lock
from exportkit.artifact.filesystem import filesystem_error, make_parents
from exportkit.artifact.publish import Slot, export_slot
from exportkit.errors import ConfigError, ExportDirBusyError, ExportDirExistsError

BASE_LOCK = ".exportkit.lock"
_LEFTOVER = re.compile(r"\.(\d+)\.(staging|old|verify)-(\d+)-.")
_VERSION_LOCK = re.compile(r"\.(\d+)\.lock")
_YOUNG_LOCK_S = 10.0  # a lock file without a pid yet is reserved for this long (its owner is writing it)


def list_versions(base: Path) -> Dict[int, Path]:
    """Version number -> directory, for every directory of ``base`` named by an integer (as TF Serving
    reads a base path); {} when ``base`` does not exist.

    >>> list_versions(Path("/nonexistent"))
    {}
    """
    found = {}
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(base):
            if entry.name.isdigit() and entry.is_dir():
                found[int(entry.name)] = Path(entry.path)
    return dict(sorted(found.items()))


def reserved_versions(base: Path) -> Set[int]:
    """Versions whose ``.N.lock`` is held by a live process (an export of N under way)."""
    found = set()
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(base):
            match = _VERSION_LOCK.fullmatch(entry.name)
            if match and _lock_is_live(Path(entry.path)):
                found.add(int(match.group(1)))
    return found


def _lock_is_live(path: Path) -> bool:
    try:
        text = path.read_text().strip()
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False
    if text.isdigit():
        return leftovers.alive(int(text))
    return age < _YOUNG_LOCK_S


@contextlib.contextmanager
def base_lock(base: Path) -> Iterator[None]:
    """Hold ``base/.exportkit.lock`` (blocking: every holder keeps it for milliseconds)."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(lock.held(base / BASE_LOCK))
        except OSError as error:
            raise filesystem_error(error, f"lock serving.base_path {base} ({BASE_LOCK})", base) from error
        yield


def sweep_dead(base: Path, notify: Callable[[str], None] = lambda line: None) -> None:
    """Under the base lock: every version's leftovers of dead runs (staging, old, verify dirs, stale
    ``.N.lock`` files), cleaned as ``export_slot`` cleans its own, under that version's lock."""
    numbers = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            leftover, lock_file = _LEFTOVER.match(entry.name), _VERSION_LOCK.fullmatch(entry.name)
            if leftover and not leftovers.alive(int(leftover.group(3))):
                numbers.add(int(leftover.group(1)))
            elif lock_file and not _lock_is_live(Path(entry.path)):
                numbers.add(int(lock_file.group(1)))
    for number in sorted(numbers):
        export_dir = base / str(number)
        try:
            fd = lock.acquire(export_dir)
        except (ExportDirBusyError, OSError):
            continue  # a live run holds it: its leftovers are its own business
        try:
            leftovers.clean(export_dir, notify)
        finally:
            lock.release(fd, lock.lock_path(export_dir))


def choose_version(base: Path, version, overwrite: bool, labels: Mapping[str, int]) -> Tuple[int, Optional[int]]:
    """Under the base lock: (the version to publish, the highest version on disk or None)."""
    on_disk = list_versions(base)
    if version == "auto":
        number = max(set(on_disk) | reserved_versions(base), default=0) + 1
    else:
        number = int(version)
        if number in on_disk and any(on_disk[number].iterdir()) and not overwrite:
            free = max(set(on_disk) | reserved_versions(base)) + 1
            raise ExportDirExistsError(
                f"serving.version={number}: version {number} already exists under serving.base_path={base}; "
                f"pass overwrite=true to replace it, or serving.version=auto for the next free version ({free})"
            )
    for label, labelled in labels.items():
        if labelled != number and labelled not in on_disk:
            raise ConfigError(
                f"serving.labels.{label}={labelled}: there is no version {labelled} under "
                f"serving.base_path={base} (versions: {_listing(on_disk)}; this export is "
                f"version {number}); label a version that exists or this one"
            )
    return number, (max(on_disk) if on_disk else None)


def _listing(versions) -> str:
    return ", ".join(map(str, sorted(versions))) or "none"


@contextlib.contextmanager
def version_slot(
    base: Path,
    version,
    overwrite: bool,
    labels: Optional[Mapping[str, int]] = None,
    notify: Callable[[str], None] = lambda line: None,
    check: Callable[[], None] = lambda: None,
) -> Iterator[Slot]:
    """An ``export_slot`` at ``base/N``, N chosen (``auto``) or given, reserved until published.

    The slot also carries ``version`` (N), ``base_path`` and ``previous`` (the highest version on
    disk when N was chosen, or None). ``check`` runs under the base lock before N is chosen (to
    refuse a bad model config file before anything is written). On failure, a base path this run
    created is removed again.

    >>> with version_slot(Path("/tmp/models/clf"), "auto", overwrite=False) as slot:  # doctest: +SKIP
    ...     (slot.work_dir / "saved_model.pb").write_bytes(b"...")
    ...     slot.publish()
    """
    base = Path(base).expanduser().absolute()
    created = make_parents(base)
    slot = None
    try:
        with contextlib.ExitStack() as stack:
            with base_lock(base):
                sweep_dead(base, notify)
                check()
                number, previous = choose_version(base, version, overwrite, dict(labels or {}))
                slot = stack.enter_context(export_slot(base / str(number), overwrite, notify))
            slot.version, slot.base_path, slot.previous = number, base, previous
            yield slot
    finally:
        if created and not (slot is not None and slot.published):
            _remove_created(base, created)


def _remove_created(base: Path, created: List[Path]) -> None:
    """Remove a base path this run created, if nothing but its lock file is there."""
    with contextlib.suppress(OSError), base_lock(base):
        if os.listdir(base) == [BASE_LOCK]:
            os.unlink(base / BASE_LOCK)  # waiters holding the unlinked file notice and retry
            for parent in created:
                os.rmdir(parent)


def plan_keep(
    versions, published: int, keep: Optional[int], labels: Mapping[str, int], busy: AbstractSet[int] = frozenset()
) -> Tuple[List[int], List[int]]:
    """(versions that stay, versions to remove): the ``keep`` highest, labelled ones, and the
    published one, the ``busy`` ones (being written by a live run) and every version above them,
    so that what stays unlabelled is always the newest versions, whichever concurrent run
    finishes last.

    >>> plan_keep([1, 2, 3, 4, 5], published=5, keep=2, labels={"stable": 1})
    ([1, 4, 5], [2, 3])
    >>> plan_keep([3, 5, 6, 7, 8], published=5, keep=2, labels={})
    ([5, 6, 7, 8], [3])
    """
    ordered = sorted(versions)
    oldest_live = min({published, *busy})
    stay = set(ordered if keep is None else ordered[-keep:]) | {v for v in ordered if v >= oldest_live}
    stay |= set(labels.values())
    return [v for v in ordered if v in stay], [v for v in ordered if v not in stay]


def finish(
    slot: Slot,
    keep: Optional[int] = None,
    labels: Optional[Mapping[str, int]] = None,
    model_name: Optional[str] = None,
    model_config_file: Optional[Path] = None,
    notify: Callable[[str], None] = lambda line: None,
) -> Dict[str, List[int]]:
    """After ``slot.publish()``: write the model config, then remove the versions beyond ``keep``.

    Returns ``{"kept": [...], "removed": [...]}``.
    """
    assert slot.base_path is not None and slot.version is not None  # a version_slot's slot
    base, labels = slot.base_path, dict(labels or {})
    with base_lock(base):
        on_disk = list_versions(base)
        kept, removed = plan_keep(on_disk, slot.version, keep, labels, busy=reserved_versions(base))
        if model_config_file is not None:
            from exportkit.artifact import model_config

            model_config.update(Path(model_config_file), model_name or base.name, base, kept, labels)
            notify(
                f"model config {model_config_file}: {model_name or base.name} versions {_listing(kept)}"
                + (f", labels {', '.join(f'{k}={v}' for k, v in sorted(labels.items()))}" if labels else "")
            )
        asides = []
        for number in removed:
            aside = leftovers.sibling(on_disk[number], "old")  # a dot-name: TF Serving unloads it whole
            try:
                os.rename(on_disk[number], aside)
            except OSError:
                continue  # gone meanwhile
            asides.append(aside)
    for aside in asides:
        shutil.rmtree(aside, ignore_errors=True)  # what stays is removed by the next run (sweep_dead)
    if removed:
        notify(f"removed version(s) {_listing(removed)} (serving.keep={keep}); kept {_listing(kept)}")
    return {"kept": kept, "removed": removed}
