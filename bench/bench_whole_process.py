"""Whole processes, as a user runs them: ``python -m exportkit`` against its peer, alternating.

Each figure runs both commands of a pair in turn, ``--repeats`` times, and prints the median
wall time of each, their ratio and the commands. The pairs:

- ``verified``: ``python -m exportkit`` (the example model, verified) / a script that builds the
  same model (``exportkit.example_model``) and calls Keras 3's ``model.export()``; target <= 1.3x.
- ``unverified``: the same with ``pipeline.stages.verify=null``; target <= 1.1x.
- ``sweep``: an 8-variant sweep (``-m seed=0,...,7``, verified) in one invocation / 8 separate
  invocations; target <= 0.5x.
- ``help``: ``python -m exportkit --help`` and ``--cfg job``; target < 0.4 s each.
- memory, with each pair: every command's peak resident memory (``wait4``'s ``ru_maxrss``: the
  largest of the process and the children it waited for, so a verified export's figure is the
  larger of the exporting process and its verify worker); with verify off, the exporting
  process's own against the Keras script's: target within 10%.
- ``before``: the verified export with ``verify.early_start=false`` (the verify process started
  only when the export is written, as before the early start) / the default, in the same runs;
  with ``sweep``, the 8-variant sweep with ``verify.early_start=false`` too.

- ``--baseline DIR``: an earlier exportkit checkout (``git worktree add DIR COMMIT``; its
  ``exportkit/conf`` is linked to its ``conf/`` here) run as a third command of each pair, in the
  same alternation: the before/after of a change, measured in the same runs.

Timings on a loaded machine are noisy: only the ratios of one run mean something (``uptime`` is
printed with them).

    .venv/bin/python bench/bench_whole_process.py [--repeats 5] [--only verified,unverified,sweep,help,before]
        [--baseline DIR]
"""

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERAS_SCRIPT = """\
import os, sys
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
from exportkit.example_model import build_example_model
build_example_model().export(sys.argv[1], format="tf_saved_model", verbose=False)
"""
SEEDS = 8
print = functools.partial(print, flush=True)  # progress shows in a log file as it comes


def shown(command, env_note=""):
    """A command as a user would type it (python for the interpreter, paths shortened)."""
    words = ["python" if c == sys.executable else c for c in command]
    return (env_note + " " if env_note else "") + " ".join(words)


class Bench:
    def __init__(self, root: Path, env: dict) -> None:
        self.root, self.env, self.count = root, env, 0
        self.cpu = []  # CPU seconds (user + sys) of each timed command, its children included
        self.rss = []  # peak resident MiB of each timed command

    def fresh(self, name: str) -> Path:
        self.count += 1
        return self.root / f"{name}-{self.count}"

    def time(self, command, extra_env=None) -> float:
        """Runs ``command``; returns its wall time, keeps its CPU time and peak RSS (MiB: the
        process's own, or one of the children it waited for if that was larger)."""
        with tempfile.TemporaryFile() as stderr:
            start = time.perf_counter()
            child = subprocess.Popen(
                command,
                cwd=self.root,
                env=dict(self.env, **(extra_env or {})),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            _, status, usage = os.wait4(child.pid, 0)
            seconds = time.perf_counter() - start
            child.returncode = os.waitstatus_to_exitcode(status)
            self.cpu.append(usage.ru_utime + usage.ru_stime)
            self.rss.append(usage.ru_maxrss / 1024)
            if child.returncode != 0:
                stderr.seek(0)
                raise SystemExit(
                    f"failed ({child.returncode}): {shown(command)}\n{stderr.read().decode(errors='replace')[-3000:]}"
                )
        return seconds


def baseline_env(directory: Path, env: dict) -> dict:
    """The environment that runs ``python -m exportkit`` from an earlier checkout ``directory``."""
    link = directory / "exportkit" / "conf"
    if not link.exists():
        link.symlink_to(Path("..") / "conf")
    return dict(env, PYTHONPATH=str(directory))


def baseline_commit(directory: Path) -> str:
    done = subprocess.run(["git", "-C", str(directory), "log", "-1", "--format=%h"], capture_output=True, text=True)
    return done.stdout.strip() or str(directory)


def exportkit_cmd(bench: Bench, *overrides):
    run = bench.fresh("ek")
    return [sys.executable, "-m", "exportkit", f"export_dir={run}/saved_model", f"hydra.run.dir={run}", *overrides]


VERIFY_STAGE = {}  # label -> the verify stage's seconds in each run (from the manifest)


def timed_export(bench: Bench, label: str, extra=(), extra_env=None) -> float:
    """A verified ``python -m exportkit``'s wall time; its verify stage's time kept in VERIFY_STAGE
    (how long the export waited for the verify process: its start-up, unless started early)."""
    command = exportkit_cmd(bench, *extra)
    seconds = bench.time(command, extra_env)
    recorded = json.loads((Path(command[3].split("=", 1)[1]) / "assets.extra" / "manifest.json").read_text())
    VERIFY_STAGE.setdefault(label, []).extend(s["seconds"] for s in recorded["stages"] if s["name"] == "verify")
    return seconds


def alternate(bench: Bench, pair, repeats: int):
    """``pair``: [(label, fn() -> seconds, command shown)]; each run in turn, ``repeats`` times."""
    times = {label: [] for label, _, _ in pair}
    for _ in range(repeats):
        for label, fn, _ in pair:
            first = len(bench.cpu)
            times[label].append(fn())
            CPU.setdefault(label, []).append(sum(bench.cpu[first:]))
            RSS.setdefault(label, []).append(max(bench.rss[first:]))
    return {label: statistics.median(values) for label, values in times.items()}, times


CPU = {}  # label -> CPU seconds per run: what a machine without a free core pays in wall time
RSS = {}  # label -> peak resident MiB per run (the largest process of the run)


def report(title, pair, medians, times, target=None, results=None):
    print(f"\n## {title}")
    for label, _, command in pair:
        runs = " ".join(f"{t:.2f}" for t in times[label])
        print(
            f"  {label:>22}: median {medians[label]:6.2f} s  (runs: {runs}; CPU median "
            f"{statistics.median(CPU[label]):.2f} s; peak RSS median {statistics.median(RSS[label]):.0f} MiB)"
            f"\n  {'':>22}  $ {command}"
        )
    if len(pair) == 2:
        (a, _, _), (b, _, _) = pair
        ratio = medians[a] / medians[b]
        cpu_ratio = statistics.median(CPU[a]) / statistics.median(CPU[b])
        rss_ratio = statistics.median(RSS[a]) / statistics.median(RSS[b])
        print(
            f"  ratio {a} / {b}: {ratio:.2f}x"
            + (f"  (target <= {target}x)" if target else "")
            + f"; CPU time ratio {cpu_ratio:.2f}x; peak RSS ratio {rss_ratio:.2f}x"
        )
        if results is not None:
            results[title] = {
                "ratio": round(ratio, 3),
                "cpu_ratio": round(cpu_ratio, 3),
                "rss_ratio": round(rss_ratio, 3),
                **{k: round(v, 3) for k, v in medians.items()},
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sweep-repeats", type=int, default=3)
    parser.add_argument("--only", default="verified,unverified,sweep,help,before")
    parser.add_argument("--json", default=None, help="also write the medians and ratios here")
    parser.add_argument("--baseline", default=None, help="an earlier exportkit checkout, run in the same alternation")
    args = parser.parse_args()
    only = set(args.only.split(","))

    root = Path(tempfile.mkdtemp(prefix="exportkit-bench-process-"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    bench = Bench(root, env)
    script = root / "keras_export.py"
    script.write_text(KERAS_SCRIPT)
    before = ["verify.early_start=false"]
    base = baseline_env(Path(args.baseline).resolve(), env) if args.baseline else None
    base_name = f"baseline {baseline_commit(Path(args.baseline))}" if base else ""
    print(f"exportkit from {ROOT}; python {sys.version.split()[0]}; {os.cpu_count()} cpus")
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)")
    results = {}
    try:
        keras = (
            "keras model.export()",
            lambda: bench.time([sys.executable, str(script), str(bench.fresh("keras"))]),
            shown([sys.executable, "keras_export.py", "OUT"]),
        )
        verified = (
            "exportkit (verified)",
            lambda: timed_export(bench, "early"),
            shown([sys.executable, "-m", "exportkit", "export_dir=OUT"]),
        )
        if "verified" in only or "before" in only:
            pair = [verified, keras]
            if "before" in only:
                pair.append(
                    (
                        "exportkit, late verifier",
                        lambda: timed_export(bench, "late", before),
                        shown([sys.executable, "-m", "exportkit", "export_dir=OUT", *before]),
                    )
                )
            if base:
                pair.append(
                    (
                        base_name,
                        lambda: timed_export(bench, "baseline", extra_env=base),
                        shown([sys.executable, "-m", "exportkit", "export_dir=OUT"], f"PYTHONPATH={args.baseline}"),
                    )
                )
            medians, times = alternate(bench, pair, args.repeats)
            report("verified export / keras model.export()", pair[:2], medians, times, 1.3, results)
            if "before" in only:
                report("before (late verifier) / keras model.export()", [pair[2], keras], medians, times, 1.3, results)
            if base:
                report(
                    f"{base_name}: verified export / keras model.export()",
                    [pair[-1], keras],
                    medians,
                    times,
                    1.3,
                    results,
                )
            for label, values in VERIFY_STAGE.items():
                print(
                    f"  verify stage, {label} verifier: median {statistics.median(values):.2f} s "
                    f"(runs: {' '.join(f'{v:.2f}' for v in values)})"
                )
                results[f"verify_stage_{label}"] = round(statistics.median(values), 3)
        if "unverified" in only:
            pair = [
                (
                    "exportkit (verify off)",
                    lambda: bench.time(exportkit_cmd(bench, "pipeline.stages.verify=null")),
                    shown([sys.executable, "-m", "exportkit", "export_dir=OUT", "pipeline.stages.verify=null"]),
                ),
                keras,
            ]
            if base:
                pair.append(
                    (
                        f"{base_name} (verify off)",
                        lambda: bench.time(exportkit_cmd(bench, "pipeline.stages.verify=null"), base),
                        shown(
                            [sys.executable, "-m", "exportkit", "export_dir=OUT", "pipeline.stages.verify=null"],
                            f"PYTHONPATH={args.baseline}",
                        ),
                    )
                )
            medians, times = alternate(bench, pair, args.repeats)
            report("unverified export / keras model.export()", pair[:2], medians, times, 1.1, results)
            if base:
                report(
                    f"{base_name}: unverified export / keras model.export()",
                    [pair[2], keras],
                    medians,
                    times,
                    1.1,
                    results,
                )
        if "sweep" in only:
            seeds = ",".join(map(str, range(SEEDS)))

            def sweep(extra=(), extra_env=None):
                run = bench.fresh("sweep")
                return bench.time(
                    [sys.executable, "-m", "exportkit", "-m", f"seed={seeds}", f"hydra.sweep.dir={run}", *extra],
                    extra_env,
                )

            def separate():
                return sum(bench.time(exportkit_cmd(bench, f"seed={s}")) for s in range(SEEDS))

            pair = [
                (f"one {SEEDS}-job sweep", sweep, shown([sys.executable, "-m", "exportkit", "-m", f"seed={seeds}"])),
                (
                    f"{SEEDS} separate runs",
                    separate,
                    f"for s in {{0..{SEEDS - 1}}}; do python -m exportkit seed=$s export_dir=OUT_$s; done",
                ),
            ]
            if "before" in only:
                pair.append(
                    (
                        "sweep, late verifier",
                        lambda: sweep(before),
                        shown([sys.executable, "-m", "exportkit", "-m", f"seed={seeds}", *before]),
                    )
                )
            if base:
                pair.append(
                    (
                        f"{base_name}: sweep",
                        lambda: sweep(extra_env=base),
                        shown(
                            [sys.executable, "-m", "exportkit", "-m", f"seed={seeds}"], f"PYTHONPATH={args.baseline}"
                        ),
                    )
                )
            medians, times = alternate(bench, pair, args.sweep_repeats)
            report(f"{SEEDS}-variant sweep / {SEEDS} separate invocations", pair[:2], medians, times, 0.5, results)
            if base:
                report(
                    f"{base_name}: {SEEDS}-variant sweep / {SEEDS} separate invocations",
                    [pair[-1], pair[1]],
                    medians,
                    times,
                    0.5,
                    results,
                )
            if "before" in only:
                report(
                    f"before: {SEEDS}-variant sweep (late verifier) / {SEEDS} separate invocations",
                    [pair[2], pair[1]],
                    medians,
                    times,
                    0.5,
                    results,
                )
        if "help" in only:
            pair = [
                (
                    "--help",
                    lambda: bench.time([sys.executable, "-m", "exportkit", "--help"]),
                    shown([sys.executable, "-m", "exportkit", "--help"]),
                ),
                (
                    "--cfg job",
                    lambda: bench.time([sys.executable, "-m", "exportkit", "--cfg", "job"]),
                    shown([sys.executable, "-m", "exportkit", "--cfg", "job"]),
                ),
                (
                    "python -c pass",
                    lambda: bench.time([sys.executable, "-c", "pass"]),
                    shown([sys.executable, "-c", "pass"]),
                ),
            ]
            medians, times = alternate(bench, pair, max(args.repeats, 7))
            report("--help and --cfg job (target < 0.4 s each)", pair, medians, times)
            results["help"] = {k: round(v, 3) for k, v in medians.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nload after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
