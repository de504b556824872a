"""The verification process started with the export (``exportkit.verification.process``): it starts
before the build stage ends, serves every job of a sweep, is replaced when it dies, is killed
at ``verify.timeout_s`` when it hangs, and never outlives the exporting process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from exportkit import pipeline
from exportkit.artifact import manifest
from exportkit.artifact.leftovers import alive
from exportkit.errors import ConfigError, VerificationError
from exportkit.stages.base import Stage
from tests.conftest import ROOT, compose, leftovers, run_cli, serve

# these tests look at the verification process an export starts and ends itself
pytestmark = pytest.mark.own_verifier
KERAS = ("model=keras", "model.build._target_=tests.models.sequential")
SEEN = []  # what each Probe stage saw: {"pid", "alive", "at"}


class Probe(Stage):
    """A stage that looks at (and, for a test, harms) the verification process the pipeline started."""

    def __init__(self, action: str = "record") -> None:
        super().__init__()
        self.action = action

    def __call__(self, ctx):
        pid = ctx.run.verifier.pid if ctx.run.verifier is not None else None
        SEEN.append({"pid": pid, "alive": pid is not None and alive(pid), "at": time.time()})
        if self.action == "kill":
            os.kill(pid, signal.SIGKILL)
            wait_dead(pid)
        elif self.action == "stop":
            os.kill(pid, signal.SIGSTOP)
        elif self.action == "corrupt":  # an export that cannot be loaded: the worker says why
            (ctx.run.work_dir / "saved_model.pb").write_bytes(b"not a SavedModel")
        return ctx


def wait_dead(pid, seconds=15.0):
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def probed_export(export_dir, *overrides, action="record", after="build"):
    """The in-process pipeline with a Probe stage right after stage ``after``."""
    cfg = OmegaConf.to_container(pipeline.resolved(compose(*KERAS, f"export_dir={export_dir}", *overrides)))
    stages = {}
    for name, node in cfg["pipeline"]["stages"].items():
        stages[name] = node
        if name == after:
            stages["probe"] = {"_target_": "tests.test_verifier.Probe", "action": action}
    cfg["pipeline"]["stages"] = stages
    SEEN.clear()
    return pipeline.run(pipeline.resolved(OmegaConf.create(cfg)))


def check_round_trip(export_dir):
    """The written export computes the source model's outputs kept by verify (assets.extra/)."""
    extra = Path(export_dir) / "assets.extra"
    with np.load(extra / "verify_inputs.npz") as inputs, np.load(extra / "verify_outputs.npz") as outputs:
        assert len(outputs.files) >= 2
        for key in outputs.files:  # serving_default/<case>/<output>
            signature, case, name = key.split("/", 2)
            given = {k.split("/", 2)[2]: inputs[k] for k in inputs.files if k.startswith(f"{signature}/{case}/")}
            want = outputs[key]
            got = serve(export_dir, given, signature)[name]
            np.testing.assert_allclose(got, want, atol=1e-6 * max(1.0, float(np.abs(want).max())), rtol=1e-5)


@pytest.mark.parametrize("early", ["true", "false"])
def test_the_verifier_starts_before_the_build_stage_ends_and_is_gone_after(export_dir, early):
    result = probed_export(export_dir, f"verify.early_start={early}")
    worker = result.manifest["verification"]["worker"]
    [seen] = SEEN
    if early == "true":  # running during the build, and the very process that verified
        assert seen["alive"] and seen["pid"] == worker["pid"]
        assert worker["started_at"] < seen["at"] and worker["served"] == 1
    else:  # verify.early_start=false: the verify stage started its own
        assert seen["pid"] is None and worker["started_at"] > seen["at"]
    assert result.manifest["verification"]["verified"] is True and worker["peak_rss_mib"] > 100
    assert not alive(worker["pid"])  # no orphan
    check_round_trip(export_dir)


def test_a_killed_verifier_is_replaced_and_the_export_still_verifies(export_dir):
    result = probed_export(export_dir, action="kill", after="write_graphs")
    [seen] = SEEN
    worker = result.manifest["verification"]["worker"]
    assert result.manifest["verification"]["verified"] is True
    assert worker["pid"] != seen["pid"] and not alive(seen["pid"]) and not alive(worker["pid"])
    check_round_trip(export_dir)


def test_a_hung_verifier_hits_verify_timeout_s_and_nothing_is_published(export_dir):
    start = time.monotonic()
    with pytest.raises(VerificationError) as raised:
        probed_export(export_dir, "verify.timeout_s=2", action="stop", after="write_graphs")
    message = str(raised.value)
    assert "\n" not in message and "verify.timeout_s=2" in message and "nothing was written" in message
    assert time.monotonic() - start < 60
    [seen] = SEEN
    assert wait_dead(seen["pid"], 5)  # killed (a stopped process too) and reaped
    assert leftovers(export_dir) == []


def test_an_export_the_worker_cannot_load_fails_with_its_reason_and_the_worker_serves_on(export_dir):
    from exportkit.verification.process import Verifier

    with Verifier() as shared:
        cfg = OmegaConf.to_container(pipeline.resolved(compose(*KERAS, f"export_dir={export_dir}")))
        stages = dict(cfg["pipeline"]["stages"])
        cfg["pipeline"]["stages"] = {
            **{k: v for k, v in stages.items() if k != "verify"},
            "probe": {"_target_": "tests.test_verifier.Probe", "action": "corrupt"},
            "verify": stages["verify"],
        }
        SEEN.clear()
        with pytest.raises(VerificationError) as raised:
            pipeline.Export(pipeline.resolved(OmegaConf.create(cfg)), verifier=shared).run()
        message = str(raised.value)
        # one line: what the worker was doing and why; its whole output in the log file it names
        assert message.startswith(
            "the export could not be reloaded and run in a fresh process: loading the serve graph: "
        )
        assert "\n" not in message and "Traceback" not in message, message
        log = Path(message.rsplit("(its output: ", 1)[1].rstrip(")"))
        assert "Traceback" in log.read_text() and "saved_model.pb" in log.read_text(), log.read_text()[-2000:]
        log.unlink()
        assert leftovers(export_dir) == []
        # the same worker (not the exporting process's to end) verifies the next export
        [seen] = SEEN
        assert shared.alive() and shared.pid == seen["pid"]
        result = pipeline.Export(pipeline.resolved(compose(*KERAS, f"export_dir={export_dir}")), verifier=shared).run()
        worker = result.manifest["verification"]["worker"]
        assert worker["pid"] == seen["pid"] and worker["served"] == 2
        check_round_trip(export_dir)
    assert not alive(seen["pid"])


def test_verify_timeout_s_must_be_a_positive_number(export_dir):
    from exportkit import schema

    with pytest.raises(ConfigError, match=r"^verify.timeout_s=0: .*positive number of seconds"):
        schema.validate(compose(*KERAS, f"export_dir={export_dir}", "verify.timeout_s=0"))


def test_a_sweep_of_three_jobs_uses_one_verifier_process(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli("-m", *KERAS, "seed=0,1,2", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr
    records = [manifest.read(sweep / str(job) / "saved_model").to_dict() for job in range(3)]
    workers = [r["verification"]["worker"] for r in records]
    assert all(r["verification"]["verified"] for r in records)
    assert len({w["pid"] for w in workers}) == 1 and [w["served"] for w in workers] == [1, 2, 3]
    assert not alive(workers[0]["pid"])  # ended with the sweep
    for job in range(3):
        check_round_trip(sweep / str(job) / "saved_model")
    # three different models (seeds), each checked against its own source outputs
    outputs = [np.load(sweep / str(j) / "saved_model/assets.extra/verify_outputs.npz") for j in range(3)]
    assert not np.allclose(outputs[0][outputs[0].files[0]], outputs[1][outputs[1].files[0]])


def test_exports_inside_shared_verifier_use_one_process_and_using_none_opts_out(tmp_path):
    import keras

    import exportkit
    from exportkit.verification.process import using

    def model(seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([keras.Input((3,), name="x"), keras.layers.Dense(2, name="d")])

    with exportkit.shared_verifier() as shared:
        first, second = (exportkit.export_saved_model(model(s), tmp_path / f"m{s}", verbose=False) for s in (0, 1))
        with using(None):  # this export starts and ends its own
            third = exportkit.export_saved_model(model(2), tmp_path / "m2", verbose=False)
        pid = shared.pid
    workers = [r.manifest["verification"]["worker"] for r in (first, second, third)]
    assert all(r.manifest["verification"]["verified"] for r in (first, second, third))
    assert workers[0]["pid"] == workers[1]["pid"] == pid and [w["served"] for w in workers[:2]] == [1, 2]
    assert workers[2]["pid"] != pid and workers[2]["served"] == 1 and not alive(workers[2]["pid"])
    assert not alive(pid)  # ended with the block
    for s in range(3):
        check_round_trip(tmp_path / f"m{s}")


def test_the_verifier_dies_with_a_killed_exporting_process(tmp_path):
    """kill -9 of the exporting process: its verifier (PR_SET_PDEATHSIG) goes with it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exportkit",
            *KERAS,
            f"export_dir={tmp_path / 'model'}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        worker = None
        deadline = time.monotonic() + 60
        while worker is None and time.monotonic() < deadline and cli.poll() is None:
            worker = next(iter(children(cli.pid, "verification.worker")), None)
            time.sleep(0.05)
        assert worker is not None, "no verifier was started"
        cli.kill()
        cli.wait()
        assert wait_dead(worker, 10), f"verifier {worker} outlived its exporting process"
    finally:
        if cli.poll() is None:
            cli.kill()


def children(parent: int, marker: str):
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        ppid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), None)
        if ppid == parent and marker in cmdline:
            found.append(int(entry.name))
    return found
