"""exportkit.artifact.publish: one writer per export_dir, a swap without a gap, kills at every step,
full and read-only filesystems, dead runs' leftovers. Fake exports (a few small files) stand in for
SavedModels, so nothing here imports TensorFlow; one test races two real CLI exports."""

import concurrent.futures
import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

from exportkit.artifact import renames
from exportkit.artifact.leftovers import verify_temp_dir
from exportkit.artifact.publish import export_slot
from exportkit.errors import ExportDirBusyError, ExportDirExistsError, ExportkitError, FilesystemError
from tests.conftest import ROOT, leftovers, run_cli

OLD = {"saved_model.pb": "old graph", "variables/variables.index": "old index", "DONE": "old"}
NEW = {
    "saved_model.pb": "new graph",
    "variables/variables.index": "new index",
    "variables/variables.data-00000-of-00001": "new data",
    "DONE": "new",
}
NEXT = {"saved_model.pb": "next graph", "DONE": "next"}


def write_fake(work_dir: Path, files: dict) -> None:
    """Through os.mkdir/os.open/os.write, so the fault injection below can kill between them."""
    for rel, text in files.items():
        path = work_dir / rel
        os.makedirs(path.parent, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def contents(directory: Path) -> dict:
    return {
        p.relative_to(directory).as_posix(): p.read_text() for p in sorted(Path(directory).rglob("*")) if p.is_file()
    }


def state(export_dir: Path) -> str:
    """absent, old, new, next, or partial."""
    if not os.path.lexists(export_dir):
        return "absent"
    found = contents(export_dir)
    for name, files in (("old", OLD), ("new", NEW), ("next", NEXT)):
        if found == files:
            return name
    return "partial"


def beside(export_dir: Path) -> list:
    """What exportkit keeps beside export_dir: lock, staging, old and verify directories."""
    return sorted(p.name for p in leftovers(export_dir) if p != export_dir)


def put(export_dir: Path, files: dict, overwrite: bool = True) -> None:
    with export_slot(export_dir, overwrite) as slot:
        write_fake(slot.work_dir, files)
        slot.publish()


def snapshot(directory: Path) -> dict:
    return {
        p.relative_to(directory).as_posix(): (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None,
            p.stat().st_mtime_ns,
        )
        for p in [Path(directory), *sorted(Path(directory).rglob("*"))]
    }


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_publish_swaps_in_the_new_export_and_leaves_nothing_beside(export_dir):
    put(export_dir, OLD, overwrite=False)
    assert state(export_dir) == "old" and beside(export_dir) == []
    assert export_dir.stat().st_mode & 0o777 == 0o755
    with export_slot(export_dir, overwrite=True) as slot:
        assert slot.work_dir.parent == export_dir.parent
        assert slot.work_dir.name.startswith(f".model.staging-{os.getpid()}-")
        assert beside(export_dir) == sorted([".model.lock", slot.work_dir.name])
        write_fake(slot.work_dir, NEW)
        slot.publish()
        assert state(export_dir) == "new"
    assert beside(export_dir) == []


def test_exchange_is_available_here_and_through_the_raw_syscall(tmp_path):
    assert renames.atomic_exchange() and renames.exchange_supported(tmp_path)
    assert os.listdir(tmp_path) == []
    syscall = renames._load_renameat2(use_wrapper=False)
    (tmp_path / "a").mkdir(), (tmp_path / "a" / "in_a").touch(), (tmp_path / "b").mkdir()
    assert (
        syscall(
            renames.AT_FDCWD,
            os.fsencode(tmp_path / "a"),
            renames.AT_FDCWD,
            os.fsencode(tmp_path / "b"),
            renames.RENAME_EXCHANGE,
        )
        == 0
    )
    assert (tmp_path / "b" / "in_a").exists() and not (tmp_path / "a" / "in_a").exists()


def test_failure_or_no_publish_inside_the_slot_leaves_nothing(tmp_path):
    export_dir = tmp_path / "new" / "deeper" / "model"
    with pytest.raises(RuntimeError, match="stage failed"):
        with export_slot(export_dir, overwrite=False) as slot:
            write_fake(slot.work_dir, NEW)
            raise RuntimeError("stage failed")
    assert os.listdir(tmp_path) == []  # the parents this run created are gone too
    with export_slot(export_dir, overwrite=False) as slot:
        write_fake(slot.work_dir, NEW)
    assert os.listdir(tmp_path) == []


def test_existing_export_dir_is_refused_under_the_lock_with_todays_messages(export_dir):
    put(export_dir, OLD)
    with pytest.raises(ExportDirExistsError, match="already exists and is not empty; pass overwrite=true"):
        with export_slot(export_dir, overwrite=False):
            pass
    export_dir.with_name("file").write_text("x")
    with pytest.raises(ExportDirExistsError, match="exists and is a file; choose another export_dir"):
        with export_slot(export_dir.with_name("file"), overwrite=True):
            pass
    assert state(export_dir) == "old" and beside(export_dir) == [] and beside(export_dir.with_name("file")) == []


def test_publish_checks_again_under_the_lock(export_dir):
    export_dir.mkdir(parents=True)
    with pytest.raises(ExportDirExistsError):
        with export_slot(export_dir, overwrite=False) as slot:  # empty: allowed here
            write_fake(slot.work_dir, NEW)
            (export_dir / "sneaked_in").write_text("x")
            slot.publish()
    assert contents(export_dir) == {"sneaked_in": "x"} and beside(export_dir) == []


CHILD = r"""
import os, sys, time
from pathlib import Path
from exportkit.artifact.publish import export_slot
from exportkit.errors import ExportkitError
export_dir, overwrite, tag, sync, hold = Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3], Path(sys.argv[4]), float(sys.argv[5])
while not (sync / "go").exists():
    time.sleep(0.001)
try:
    with export_slot(export_dir, overwrite) as slot:
        (sync / f"{tag}.holding").touch()
        for rel in ("saved_model.pb", "variables/variables.index", "DONE"):
            (slot.work_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (slot.work_dir / rel).write_text(f"{tag} {rel}")
        deadline = time.monotonic() + hold
        while (time.monotonic() < deadline) if hold >= 0 else not (sync / "release").exists():
            time.sleep(0.005)
        slot.publish()
except ExportkitError as error:
    print(f"exportkit: error: {error}", file=sys.stderr)
    sys.exit(1)
"""


def start_child(export_dir, overwrite, tag, sync, hold):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(export_dir), "1" if overwrite else "0", tag, str(sync), str(hold)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def child_files(tag):
    return {rel: f"{tag} {rel}" for rel in ("saved_model.pb", "variables/variables.index", "DONE")}


def wait_for(path, timeout=30):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.005)


def test_second_writer_fails_at_once_naming_the_owner_and_a_killed_owner_is_taken_over(export_dir, tmp_path):
    sync = tmp_path / "sync"
    sync.mkdir()
    (sync / "go").touch()
    owner = start_child(export_dir, True, "owner", sync, -1)
    wait_for(sync / "owner.holding")
    with pytest.raises(ExportDirBusyError) as busy:
        with export_slot(export_dir, overwrite=True):
            pass
    # refused while the owner still holds it (it holds until told): the second writer did not wait
    assert owner.poll() is None and not (sync / "release").exists()
    assert str(busy.value) == (
        f"export_dir {export_dir} is being written by another exportkit process "
        f"(pid {owner.pid}); wait for it to finish or choose another export_dir"
    )
    assert busy.value.pid == owner.pid and isinstance(busy.value, ExportkitError)
    (sync / "release").touch()
    assert owner.wait(30) == 0, owner.stderr.read()
    assert contents(export_dir) == child_files("owner") and beside(export_dir) == []

    (sync / "release").unlink()
    (sync / "owner.holding").unlink()
    killed = start_child(export_dir, True, "owner", sync, -1)
    wait_for(sync / "owner.holding")
    killed.kill()
    killed.wait()
    assert ".model.lock" in beside(export_dir)
    lines = []
    with export_slot(export_dir, overwrite=True, notify=lines.append) as slot:
        write_fake(slot.work_dir, NEW)
        slot.publish()
    assert lines == [f"removed 1 leftover(s) of dead exportkit process(es) beside {export_dir}"]
    assert state(export_dir) == "new" and beside(export_dir) == []


def test_same_process_second_slot_is_busy_too(export_dir):
    with export_slot(export_dir, overwrite=False):
        with pytest.raises(ExportDirBusyError, match=f"pid {os.getpid()}"):
            with export_slot(export_dir, overwrite=False):
                pass
    assert beside(export_dir) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_processes_racing_to_publish(export_dir, tmp_path, overwrite):
    for round_, hold in enumerate((0.0, 0.05, 0.2)):
        if overwrite:
            put(export_dir, OLD)
        else:
            shutil.rmtree(export_dir, ignore_errors=True)
        sync = tmp_path / f"sync{overwrite}{round_}"
        sync.mkdir()
        racers = {tag: start_child(export_dir, overwrite, tag, sync, hold) for tag in ("a", "b")}
        (sync / "go").touch()
        done = {tag: (p.wait(30), p.stderr.read()) for tag, p in racers.items()}
        winners = [tag for tag, (rc, _) in done.items() if rc == 0]
        for rc, err in done.values():
            assert rc in (0, 1), err
            if rc == 1:
                assert err.count("\n") == 1 and err.startswith("exportkit: error: ") and "Traceback" not in err
                assert "being written by another exportkit process" in err or (
                    not overwrite and "already exists and is not empty" in err
                ), err
        if overwrite:
            assert winners and contents(export_dir) in [child_files(tag) for tag in winners]
        else:
            assert len(winners) == 1 and contents(export_dir) == child_files(winners[0])
        assert beside(export_dir) == []


def test_two_cli_exports_racing_to_the_same_export_dir(tmp_path):
    """Needs the pipeline to publish through export_slot (the lock)."""
    export_dir = tmp_path / "out"

    def cli(i):
        return run_cli("pipeline.stages.verify=null", f"export_dir={export_dir}", f"hydra.run.dir={tmp_path}/run{i}")

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        done = list(pool.map(cli, (0, 1)))
    codes = sorted(d.returncode for d in done)
    assert codes == [0, 1], [d.stderr[-2000:] for d in done]
    loser = next(d for d in done if d.returncode == 1)
    assert len([line for line in loser.stderr.splitlines() if line.startswith("exportkit: error:")]) == 1
    assert "Traceback" not in loser.stderr + loser.stdout
    assert (export_dir / "assets.extra" / "manifest.json").exists() and beside(export_dir) == []


POLLER = r"""
import os, sys, time
path, stop = sys.argv[1], sys.argv[2]
seen = missing = 0
open(stop + ".ready", "w").close()
while not os.path.exists(stop):
    seen += 1
    missing += not os.path.exists(path)
print(seen, missing)
"""


def test_a_reader_polling_export_dir_never_finds_it_missing(export_dir, tmp_path):
    put(export_dir, OLD)
    stop = tmp_path / "stop"
    poller = subprocess.Popen(
        [sys.executable, "-c", POLLER, str(export_dir / "DONE"), str(stop)], stdout=subprocess.PIPE, text=True
    )
    wait_for(tmp_path / "stop.ready")
    for i in range(300):  # enough for the fallback's gap (rename aside, rename in) to be seen here
        put(export_dir, NEW if i % 2 else OLD)
    stop.touch()
    seen, missing = map(int, poller.communicate(timeout=30)[0].split())
    assert seen > 0 and missing == 0


# Fault injection: a child process counts every filesystem call publishing makes and dies
# (os._exit, as SIGKILL would: no cleanup) just before call K, for every K.
_COUNTED = [
    (os, name) for name in ("mkdir", "rmdir", "rename", "unlink", "chmod", "open", "write", "ftruncate", "fsync")
] + [(shutil, "rmtree"), (fcntl, "flock")]


def _publish_killed_at(kill_at: int, export_dir: Path, count_file: Path, exchange: bool) -> int:
    pid = os.fork()
    if pid:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    try:
        calls = [0]

        def counted(real):
            def call(*args, **kwargs):
                calls[0] += 1
                if calls[0] == kill_at:
                    os._exit(9)
                return real(*args, **kwargs)

            return call

        if not exchange:  # a filesystem without renameat2: the rename-aside fallback

            def unsupported(*args):
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

            renames.renameat2 = unsupported
        for module, name in _COUNTED + [(renames, "renameat2")]:
            setattr(module, name, counted(getattr(module, name)))
        with export_slot(export_dir, overwrite=True) as slot:
            write_fake(slot.work_dir, NEW)
            slot.publish()
        count_file.write_text(str(calls[0]))
        os._exit(0)
    except BaseException:  # noqa: BLE001 - the child must never return into pytest
        traceback.print_exc()
        os._exit(3)


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "rename_fallback"])
@pytest.mark.parametrize("had_old", [True, False], ids=["over_old", "fresh"])
def test_killed_at_every_filesystem_step_export_dir_is_whole_and_the_next_run_cleans_up(
    export_dir, tmp_path, had_old, exchange
):
    def start_over():  # the same calls each time: also the parents' mkdir in a fresh run
        shutil.rmtree(export_dir.parent, ignore_errors=True)
        if had_old:
            put(export_dir, OLD)

    count_file = tmp_path / "count"
    start_over()
    assert _publish_killed_at(0, export_dir, count_file, exchange) == 0
    total = int(count_file.read_text())
    assert total > 10 and state(export_dir) == "new"
    outcomes = {}
    for kill_at in range(1, total + 2):
        start_over()
        rc = _publish_killed_at(kill_at, export_dir, count_file, exchange)
        assert rc == (0 if kill_at > total else 9)
        after_kill = state(export_dir)
        outcomes[after_kill] = outcomes.get(after_kill, 0) + 1
        stranded = [p for p in export_dir.parent.glob(".model.old-*") if state(p) == "old"]
        if had_old and exchange:
            assert after_kill in ("old", "new"), (kill_at, after_kill)
        elif had_old:  # the fallback's window: the old export waits beside, whole, for the next run
            assert after_kill in ("old", "new") or (after_kill == "absent" and stranded), (kill_at, after_kill)
        else:
            assert after_kill in ("absent", "new"), (kill_at, after_kill)

        lines = []
        with export_slot(export_dir, overwrite=True, notify=lines.append) as slot:
            assert state(export_dir) in (("old", "new") if had_old else ("absent", "new")), kill_at
            assert beside(export_dir) == sorted([".model.lock", slot.work_dir.name]), kill_at
            write_fake(slot.work_dir, NEXT)
            slot.publish()
        assert state(export_dir) == "next" and beside(export_dir) == [], kill_at
        if after_kill == "absent" and had_old:
            assert lines[0].startswith(f"restored {export_dir} from .model.old-"), lines
    if had_old and not exchange:
        assert outcomes.get("absent"), outcomes  # the window exists, and the next run closed it


@pytest.fixture
def tmpfs(tmp_path):
    """A 256 KiB tmpfs at tmp_path/disk (needs root; skipped where mounting is refused)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


@pytest.mark.parametrize("had_old", [True, False], ids=["over_old", "fresh"])
def test_full_disk_is_one_line_and_leaves_the_old_export_untouched(tmpfs, had_old):
    export_dir = tmpfs / "exports" / "model"
    if had_old:
        put(export_dir, OLD)
        before = snapshot(export_dir)
    with pytest.raises(FilesystemError) as full:
        with export_slot(export_dir, overwrite=True) as slot:
            (slot.work_dir / "variables.data").write_bytes(b"\0" * 1_000_000)
            slot.publish()
    message = str(full.value)
    assert "\n" not in message and os.strerror(errno.ENOSPC) in message and str(export_dir) in message
    assert f"free space on {tmpfs}" in message and full.value.errno == errno.ENOSPC
    assert beside(export_dir) == []
    if had_old:
        assert snapshot(export_dir) == before
    else:
        assert os.listdir(tmpfs) == []


def test_disk_full_before_the_run_starts(tmpfs):
    export_dir = tmpfs / "model"
    put(export_dir, OLD)
    before = snapshot(export_dir)
    with pytest.raises(OSError):
        with open(tmpfs / "filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
    with pytest.raises(FilesystemError, match=os.strerror(errno.ENOSPC)) as full:
        put(export_dir, NEW)
    assert "\n" not in str(full.value)
    assert snapshot(export_dir) == before and beside(export_dir) == []


def test_read_only_filesystem_is_one_line_and_touches_nothing(tmpfs):
    export_dir = tmpfs / "model"
    put(export_dir, OLD)
    before = snapshot(tmpfs)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    for target in (export_dir, tmpfs / "new" / "model"):
        with pytest.raises(FilesystemError) as read_only:
            put(target, NEW)
        message = str(read_only.value)
        assert "\n" not in message and os.strerror(errno.EROFS) in message
        assert "choose a writable export_dir" in message and read_only.value.errno == errno.EROFS
    assert snapshot(tmpfs) == before


def test_parent_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "exports").write_text("not a directory")
    with pytest.raises(FilesystemError) as not_dir:
        put(tmp_path / "exports" / "v1" / "model", NEW)
    assert str(not_dir.value) == (
        f"cannot create {tmp_path}/exports/v1: {os.strerror(errno.ENOTDIR)}; "
        f"{tmp_path}/exports is a file, not a directory; choose another export_dir"
    )
    assert os.listdir(tmp_path) == ["exports"] and (tmp_path / "exports").read_text() == "not a directory"


def test_name_too_long_for_the_staging_sibling_is_said_before_anything_is_created(tmp_path):
    with pytest.raises(FilesystemError) as too_long:
        put(tmp_path / "new" / ("n" * 240), NEW)
    message = str(too_long.value)
    assert "\n" not in message and "(240 bytes) is too long" in message and "at most 229 bytes" in message
    with pytest.raises(FilesystemError, match="is 300 bytes, over the limit of 255"):
        put(tmp_path / "new" / ("n" * 300), NEW)
    assert too_long.value.errno == errno.ENAMETOOLONG and os.listdir(tmp_path) == []
    put(tmp_path / "new" / ("n" * 229), NEW)  # the longest that fits


def test_dead_runs_leftovers_are_cleaned_and_a_stranded_old_export_restored(export_dir):
    dead, alive = dead_pid(), os.getppid()
    parent = export_dir.parent
    write_fake(parent / f".model.staging-{dead}-half", {"saved_model.pb": "half"})
    write_fake(parent / f".model.old-{dead}-whole", OLD)
    write_fake(parent / f".model.verify-{dead}-tmp", {"inputs.npz": "x"})
    write_fake(parent / f".model.staging-{alive}-busy", {"saved_model.pb": "being written"})
    (parent / ".other.staging-1-x").mkdir()
    lines = []
    with export_slot(export_dir, overwrite=True, notify=lines.append) as slot:
        assert state(export_dir) == "old"
        write_fake(slot.work_dir, NEW)
        slot.publish()
    assert lines == [
        f"restored {export_dir} from .model.old-{dead}-whole left by dead process {dead}",
        f"removed 2 leftover(s) of dead exportkit process(es) beside {export_dir}",
    ]
    assert state(export_dir) == "new" and beside(export_dir) == [f".model.staging-{alive}-busy"]
    assert (parent / ".other.staging-1-x").is_dir()

    write_fake(parent / f".model.old-{dead}-whole", OLD)  # export_dir exists: not restored, removed
    lines.clear()
    with export_slot(export_dir, overwrite=True, notify=lines.append):
        pass
    assert lines == [f"removed 1 leftover(s) of dead exportkit process(es) beside {export_dir}"]
    assert state(export_dir) == "new"

    shutil.rmtree(export_dir)  # an .old- without its run's .staging- was being removed: never restored
    write_fake(parent / f".model.old-{dead}-half", {"saved_model.pb": "half removed"})
    lines.clear()
    with export_slot(export_dir, overwrite=False, notify=lines.append):
        assert state(export_dir) == "absent"
    assert lines == [f"removed 1 leftover(s) of dead exportkit process(es) beside {export_dir}"]


def test_verify_temp_dir_of_a_killed_run_is_removed_by_the_next(export_dir):
    put(export_dir, OLD)
    tmp = verify_temp_dir(export_dir)
    assert tmp.parent == export_dir.parent and tmp.name.startswith(f".model.verify-{os.getpid()}-")
    shutil.rmtree(tmp)
    probe = (
        "import sys, os; from pathlib import Path; from exportkit.artifact.leftovers import verify_temp_dir\n"
        "tmp = verify_temp_dir(Path(sys.argv[1])); (tmp / 'inputs.npz').write_text('x')\n"
        "os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", probe, str(export_dir)], env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert len(beside(export_dir)) == 1
    lines = []
    with export_slot(export_dir, overwrite=True, notify=lines.append):
        pass
    assert lines == [f"removed 1 leftover(s) of dead exportkit process(es) beside {export_dir}"]
    assert beside(export_dir) == [] and state(export_dir) == "old"


def test_publish_module_imports_no_framework():
    probe = (
        "import sys, exportkit.artifact.publish\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'jax', 'hydra', 'omegaconf') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_hash_cache_gives_the_files_digests_and_rehashes_a_changed_file(tmp_path):
    import hashlib

    from exportkit.artifact.digests import HashCache

    files = [tmp_path / f"f{i}" for i in range(3)]
    for i, path in enumerate(files):
        path.write_bytes(bytes([i]) * (3 << 20 if i == 0 else 10))
    cache = HashCache()
    assert [cache.sha256(p) for p in files] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    files[1].write_bytes(b"changed after it was hashed")
    assert cache.sha256(files[1]) == hashlib.sha256(b"changed after it was hashed").hexdigest()
    files[2].unlink()
    with pytest.raises(FileNotFoundError):
        cache.sha256(files[2])
