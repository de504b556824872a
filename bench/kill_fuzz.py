"""Kill-fuzz: SIGKILL whole CLI exports at random moments; export_dir must never be partial.

    .venv/bin/python bench/kill_fuzz.py [--n 100] [--seed 0] [--cmd "/path/to/python"]

Each round starts ``python -m exportkit`` (the built-in example model, ``export_dir=<tmp>/out``):
half the rounds with ``overwrite=true`` over a complete export, half with export_dir absent. After a
uniform random delay in [0, T] (T: one full export, measured first) the exportkit process alone is
SIGKILL-ed (not its group: its verify worker must die with it). Then:

- export_dir is classified: absent / old complete / new complete / partial. Complete: its
  ``assets.extra/manifest.json`` lists every other file, each with the sha256 it has.
- ``.out.*`` leftovers beside export_dir are counted, and again after the next run (a full export
  with overwrite=true, which must succeed); what remains is then removed, so rounds are independent.
- verify workers of this fuzz still alive 2 s after the kill are counted (orphans) and killed.

Prints a table; exits 1 if an export was partial, an old export was lost (absent after the kill of
an overwrite), a verify worker was orphaned, or a next run failed.
"""

import argparse
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "assets.extra/manifest.json"


def exportkit_command(cmd, out: Path, run_dir: Path, overwrite: bool):
    return [
        *cmd,
        "-m",
        "exportkit",
        f"export_dir={out}",
        f"hydra.run.dir={run_dir}",
        *(["overwrite=true"] if overwrite else []),
    ]


def environment():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "examples")]), TF_CPP_MIN_LOG_LEVEL="2")


def full_export(cmd, out: Path, run_dir: Path, log: Path) -> int:
    with open(log, "ab") as sink:
        return subprocess.run(
            exportkit_command(cmd, out, run_dir, True), env=environment(), stdout=sink, stderr=sink, cwd=out.parent
        ).returncode


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def complete(export_dir: Path) -> bool:
    """The manifest lists every other file of the export, and each hashes to what it records."""
    try:
        files = json.loads((export_dir / MANIFEST).read_text())["files"]
        on_disk = {p.relative_to(export_dir).as_posix() for p in export_dir.rglob("*") if p.is_file()}
        return on_disk - {MANIFEST} == set(files) and all(
            sha256(export_dir / rel) == digest for rel, digest in files.items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def identity(export_dir: Path):
    """Which export this is: the directory's and its manifest's inodes (an export is never edited)."""
    try:
        return os.stat(export_dir).st_ino, os.stat(export_dir / MANIFEST).st_ino
    except OSError:
        return None


def classify(export_dir: Path, old) -> str:
    if not os.path.lexists(export_dir):
        return "absent, old export lost" if old is not None else "absent"
    if not complete(export_dir):
        return "partial"
    return "old complete" if identity(export_dir) == old else "new complete"


def beside(export_dir: Path):
    return sorted(export_dir.parent.glob(f".{export_dir.name}.*"))


def verify_workers(parent: int):
    """Pids of live verify workers started by the exporting process ``parent`` (``--parent PID``:
    the verifier is started with the export, before any path is known)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        words = cmdline.split()
        if "exportkit.verification.worker" in words and f"--parent {parent}" in " ".join(words):
            found.append(int(entry.name))
    return found


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="rounds (kills); --n 5 for a quick check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cmd",
        default=sys.executable,
        help="the python that runs exportkit (it must exec python: its pid is the one killed)",
    )
    parser.add_argument("--t", type=float, default=None, help="kill window in seconds (default: measured)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and its logs")
    args = parser.parse_args()
    cmd, rng = shlex.split(args.cmd), random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="exportkit-kill-fuzz-"))
    out, log = root / "out", root / "exportkit.log"
    counts = {
        key: 0
        for key in (
            "killed",
            "finished before the kill",
            "absent",
            "absent, old export lost",
            "old complete",
            "new complete",
            "partial",
            "orphaned verify workers",
            "next runs failed",
        )
    }
    left_after_kill, left_after_next = [], []
    try:
        start = time.perf_counter()
        if full_export(cmd, out, root / "runs" / "first", log) != 0 or not complete(out):
            print(f"the first export failed; see {log}", file=sys.stderr)
            args.keep = True
            return 2
        window = args.t if args.t is not None else time.perf_counter() - start
        print(
            f"one full export: {time.perf_counter() - start:.1f} s; killing within [0, {window:.1f}] s; "
            f"{args.n} rounds, seed {args.seed}, work dir {root}",
            flush=True,
        )
        for i in range(args.n):
            overwrite = rng.random() < 0.5
            delay = rng.uniform(0, window)
            if overwrite and not complete(out):
                full_export(cmd, out, root / "runs" / f"{i}-setup", log)
            if not overwrite:
                remove(out)
            old = identity(out) if overwrite else None
            with open(log, "ab") as sink:
                proc = subprocess.Popen(
                    exportkit_command(cmd, out, root / "runs" / f"{i}", overwrite),
                    env=environment(),
                    stdout=sink,
                    stderr=sink,
                    cwd=root,
                )
            try:
                proc.wait(timeout=delay)
                counts["finished before the kill"] += 1
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)  # that process only: its children must die with it
                proc.wait()
                counts["killed"] += 1
            time.sleep(2)
            orphans = verify_workers(proc.pid)
            for pid in orphans:
                os.kill(pid, signal.SIGKILL)
            counts["orphaned verify workers"] += len(orphans)
            outcome = classify(out, old)
            counts[outcome] += 1
            left_after_kill.append(len(beside(out)))
            next_rc = full_export(cmd, out, root / "runs" / f"{i}-next", log)
            counts["next runs failed"] += next_rc != 0 or not complete(out)
            remaining = beside(out)
            left_after_next.append(len(remaining))
            for path in remaining:
                remove(path)
            print(
                f"round {i + 1}/{args.n}: {'overwrite' if overwrite else 'fresh    '} kill at {delay:5.1f} s "
                f"-> {outcome}; {left_after_kill[-1]} beside, {left_after_next[-1]} after the next run"
                f"{f'; {len(orphans)} orphaned verify worker(s)' if orphans else ''}",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    rows = [
        ("rounds", args.n),
        *counts.items(),
        ("leftovers after the kill (rounds with any)", sum(n > 0 for n in left_after_kill)),
        ("leftovers after the kill (total)", sum(left_after_kill)),
        ("leftovers after the next run (rounds with any)", sum(n > 0 for n in left_after_next)),
        ("leftovers after the next run (total)", sum(left_after_next)),
    ]
    must_be_zero = ("partial", "absent, old export lost", "orphaned verify workers", "next runs failed")
    print()
    for name, value in rows:
        print(f"{name:<48} {value:>5}{'   (must be 0)' if name in must_be_zero else ''}")
    return 1 if any(counts[name] for name in must_be_zero) else 0


if __name__ == "__main__":
    sys.exit(main())
