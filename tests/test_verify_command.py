"""``exportkit verify PATH`` on exports that already exist, and the latency verify measures: the
kept cases run again in a fresh process (CLI subprocess, as a user runs it) pass on a fresh
export, and fail with one line when the kept outputs or a weight in the checkpoint are changed."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, export, run_cli

MODEL = ("model=keras", "model.build._target_=tests.models.sequential", "+model.build.compiled=true")
KEPT = "assets.extra"
MANIFEST_PATH = "assets.extra/manifest.json"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A verified export of a compiled model (serve, train and eval graphs), in-process."""
    root = tmp_path_factory.mktemp("verify_command")
    result = export(*MODEL, f"export_dir={root / 'model'}")
    return {"root": root, "dir": root / "model", "result": result}


def copy_of(exported, name):
    target = exported["root"] / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(exported["dir"], target, symlinks=True)
    return target


def kept(export_dir, kind):
    with np.load(export_dir / KEPT / f"verify_{kind}.npz") as data:
        return {k: data[k] for k in data.files}


def reseal(export_dir):
    """Record the export's files as they are now in its manifest (sha256s and digest), as an export
    whose files really are these would have: verify's numeric check, past its integrity check."""
    from exportkit.artifact import canonical, manifest

    recorded = manifest.read(export_dir)
    recorded.files = manifest.file_hashes(export_dir)
    recorded.digest = canonical.content_digest(recorded.files)
    (export_dir / manifest.MANIFEST).write_text(recorded.to_json())


def error_lines(done):
    return [line for line in done.stderr.splitlines() if line.startswith("exportkit: error:")]


def check_latency(record, batches=(1, 3)):
    cases = record["signatures"]["serving_default"]
    assert sorted(cases) == [str(b) for b in batches] and record["load_s"]["serve"] > 0
    for label, case in cases.items():
        assert case["batch"] == int(label) and 1 <= case["runs"] <= 20
        assert case["first_ms"] > 0 and 0 < case["p50_ms"] <= case["p90_ms"] <= case["p99_ms"]


def test_the_kept_cases_are_the_source_models_outputs(exported):
    """What ``exportkit verify`` compares with is what the source model computed at export time."""
    inputs, outputs = kept(exported["dir"], "inputs"), kept(exported["dir"], "outputs")
    index = json.loads((exported["dir"] / KEPT / "verify.json").read_text())
    assert {(c["graph"], c["signature"], c["case"]) for c in index["cases"]} == {
        ("serve", "serving_default", "1"),
        ("serve", "serving_default", "3"),
        ("train", "train", "3"),
        ("eval", "eval", "3"),
    }
    reference = exported["result"].context.model.reference["serving_default"]
    for batch in ("1", "3"):
        want = reference({"x": inputs[f"serving_default/{batch}/x"]})["out"]
        np.testing.assert_array_equal(outputs[f"serving_default/{batch}/out"], want)
        assert want.shape == (int(batch), 2)


def test_verify_passes_on_a_fresh_export_with_a_json_report(exported):
    done = run_cli("verify", exported["dir"], "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["failures"] == [] and report["path"] == str(exported["dir"])
    assert report["version"] is None and report["cases"] == 4 and report["inputs"] == "generated"
    assert report["signatures"] == {"serving_default": ["1", "3"], "train": ["3"], "eval": ["3"]}
    assert report["tensorflow"]["here"] == report["tensorflow"]["exported_with"]
    (run,) = report["devices"]
    assert run["device"] == "/CPU:0" and run["ok"] and run["warmup"]["records"] == 2
    scale = float(np.abs(kept(exported["dir"], "outputs")["serving_default/3/out"]).max())
    assert 0 <= run["max_abs_error"] <= 1e-5 * max(scale, 1.0)
    assert set(run["report"]) == {"serving_default", "train", "eval"}
    assert all(o["ok"] for sizes in run["report"].values() for case in sizes.values() for o in case.values())
    check_latency(run["latency"])
    text = run_cli("verify", exported["dir"])
    assert text.returncode == 0 and text.stderr.strip() == ""
    assert "OK on /CPU:0: max abs error" in text.stdout and "warmup: 2 requests replayed" in text.stdout
    assert "latency serving_default: load" in text.stdout and "b3 first" in text.stdout


def test_perturbed_kept_outputs_fail_with_one_line(exported):
    export_dir = copy_of(exported, "outputs_changed")
    outputs = kept(export_dir, "outputs")
    outputs["serving_default/3/out"] = (
        outputs["serving_default/3/out"] + 1e-2 * np.abs(outputs["serving_default/3/out"]).max()
    )
    from exportkit.verification.kept import save_npz

    save_npz(export_dir / KEPT / "verify_outputs.npz", outputs)
    reseal(export_dir)
    done = run_cli("verify", export_dir)
    assert done.returncode == 1 and done.stdout == ""
    (line,) = error_lines(done)
    assert line.startswith(
        f"exportkit: error: {export_dir} does not reproduce the outputs recorded at export "
        f"time: on /CPU:0: serving_default/out at batch 3: max abs error "
    )
    assert "(and" not in line and len(done.stderr.strip().splitlines()) == 1
    report = json.loads(run_cli("verify", export_dir, "--json", "--latency-runs", "0").stdout)
    assert report["ok"] is False and len(report["failures"]) == 1 and report["devices"][0]["latency"] is None
    assert report["devices"][0]["report"]["serving_default"]["1"]["out"]["ok"] is True


def test_a_changed_weight_in_the_checkpoint_fails_verify(exported):
    """A checkpoint rewritten with every key as it was but one kernel changed (as a bad copy, or a
    different training run under the same name, would be)."""
    import tensorflow as tf

    export_dir = copy_of(exported, "weight_changed")
    prefix = str(export_dir / "variables" / "variables")
    reader = tf.train.load_checkpoint(prefix)
    names = sorted(reader.get_variable_to_shape_map())
    values = {n: reader.get_tensor(n) for n in names}
    (kernel,) = [n for n in names if n.startswith("model_variables/") and values[n].shape == (4, 2)]  # out's
    values[kernel] = values[kernel] + 0.5
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(values[n]) for n in names],
    )
    assert not np.array_equal(
        tf.train.load_checkpoint(prefix).get_tensor(kernel),
        tf.train.load_checkpoint(str(exported["dir"] / "variables" / "variables")).get_tensor(kernel),
    )
    reseal(export_dir)
    done = run_cli("verify", export_dir)
    assert done.returncode == 1
    (line,) = error_lines(done)
    assert (
        "does not reproduce the outputs recorded at export time: on /CPU:0: serving_default/out at batch 1: "
        "max abs error"
        in line
        and "more)" in line
    )


def test_a_base_path_verifies_its_highest_version_or_the_one_given(exported):
    base = exported["root"] / "base"
    base.mkdir()
    shutil.copytree(exported["dir"], base / "1", symlinks=True)
    shutil.copytree(exported["dir"], base / "2", symlinks=True)
    from exportkit.verification.kept import save_npz

    outputs = kept(base / "2", "outputs")
    outputs["serving_default/1/out"] = -outputs["serving_default/1/out"] - 1.0
    save_npz(base / "2" / KEPT / "verify_outputs.npz", outputs)
    reseal(base / "2")
    highest = run_cli("verify", base, "--latency-runs", "0")
    assert highest.returncode == 1
    (line,) = error_lines(highest)
    assert line.startswith(f"exportkit: error: {base / '2'} does not reproduce")
    one = run_cli("verify", base, "--version", "1", "--json", "--latency-runs", "3")
    assert one.returncode == 0, one.stderr[-2000:]
    report = json.loads(one.stdout)
    assert report["path"] == str(base / "1") and report["version"] == 1 and report["ok"]
    assert {c["runs"] for c in report["devices"][0]["latency"]["signatures"]["serving_default"].values()} == {3}
    missing = run_cli("verify", base, "--version", "5")
    assert missing.returncode == 1
    assert error_lines(missing) == [f"exportkit: error: verify: {base} has no version 5 (versions: 1, 2)"]


def test_verify_refuses_an_export_without_kept_cases_and_a_device_that_is_absent(exported, tmp_path):
    unverified = tmp_path / "unverified"
    export(*MODEL, f"export_dir={unverified}", "pipeline.stages.verify=null")
    assert not (unverified / KEPT / "verify.json").exists()
    done = run_cli("verify", unverified)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert error_lines(done) == [
        f"exportkit: error: verify: {unverified} keeps no verification cases ({KEPT}/verify.json is missing): "
        f"it was exported with verification off or by an older exportkit; export it again with the verify "
        f"stage on to verify it later"
    ]
    absent = run_cli("verify", exported["dir"], "--device", "/GPU:7")
    assert absent.returncode == 1
    (line,) = error_lines(absent)
    assert line.startswith(
        f"exportkit: error: {exported['dir']} could not be loaded and run on /GPU:7: device "
        f"/GPU:7 is not present on this machine (TensorFlow sees /CPU:0"
    )


def test_verify_help_is_fast_and_imports_no_framework():
    probe = (
        "import atexit, runpy, sys; sys.argv = ['exportkit', 'verify', '--help']\n"
        "atexit.register(lambda: print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'jax'))))\n"
        "runpy.run_module('exportkit', run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--device DEVICE" in done.stdout and done.stdout.strip().splitlines()[-1] == "[]"


def test_latency_is_recorded_in_the_manifest_and_the_sweep_summary(exported, tmp_path):
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from exportkit.artifact import manifest
    from exportkit.sweep_summary import SweepSummary

    recorded = manifest.read(exported["dir"]).to_dict()
    ((device, record),) = recorded["verification"]["latency"].items()
    assert device == "/CPU:0"
    check_latency(record)
    off = tmp_path / "latency_off"
    export(*MODEL, f"export_dir={off}", "verify.latency.enabled=false", "verify.steps=false")
    assert (
        "latency" not in manifest.read(off).to_dict()["verification"]
        and manifest.read(off).to_dict()["verification"]["verified"]
    )

    summary = SweepSummary()
    sweep = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    summary.on_multirun_start(sweep)
    for num, export_dir in enumerate([exported["dir"], off]):
        (tmp_path / "sweep" / str(num)).mkdir(parents=True)
        config = OmegaConf.create(
            {"hydra": {"job": {"num": num}, "runtime": {"output_dir": str(tmp_path / "sweep" / str(num))}}}
        )
        summary.on_job_end(
            config, JobReturn(overrides=[f"seed={num}"], status=JobStatus.COMPLETED, _return_value=str(export_dir))
        )
    summary.on_multirun_end(sweep)
    import csv

    with open(tmp_path / "sweep" / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cases = record["signatures"]["serving_default"]
    assert [(float(r["p50_ms_b1"]), float(r["p50_ms_b3"])) for r in rows[:1]] == [
        (cases["1"]["p50_ms"], cases["3"]["p50_ms"])
    ]
    assert (rows[1]["p50_ms_b1"], rows[1]["p50_ms_b3"]) == ("", "")
    assert "p50 b1 (ms)" in (tmp_path / "sweep" / "summary.md").read_text()


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "name, damage, told",
    [
        ("json", lambda d: flip_last_byte(d / "assets" / "saved_model.json"), "assets/saved_model.json changed"),
        ("fingerprint", lambda d: flip_last_byte(d / "fingerprint.pb"), "fingerprint.pb changed"),
        ("graph", lambda d: flip_last_byte(d / "saved_model.pb"), "saved_model.pb changed"),
        (
            "weights",
            lambda d: flip_last_byte(d / "variables" / "variables.data-00000-of-00001"),
            "variables/variables.data-00000-of-00001 changed",
        ),
        ("missing", lambda d: (d / "assets" / "saved_model.json").unlink(), "assets/saved_model.json is missing"),
        ("unknown", lambda d: (d / "assets" / "extra.txt").write_text("x"), "assets/extra.txt is not in the manifest"),
        (
            "recorded sha256",
            lambda d: (d / MANIFEST_PATH).write_text(
                (d / MANIFEST_PATH)
                .read_text()
                .replace(json.loads((d / MANIFEST_PATH).read_text())["files"]["saved_model.pb"], "0" * 64)
            ),
            "its digest does not match the sha256 it records",
        ),
        ("manifest", lambda d: (d / MANIFEST_PATH).write_text('{"config": {'), "cannot be read as JSON"),
    ],
)
def test_verify_checks_every_byte_the_manifest_records_first(exported, name, damage, told):
    export_dir = copy_of(exported, f"damaged_{name.replace(' ', '_')}")
    damage(export_dir)
    done = run_cli("verify", export_dir)
    assert done.returncode == 1 and done.stdout == "", done.stderr
    (line,) = error_lines(done)
    assert told in line and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_damaged_kept_cases_are_one_line_naming_the_file(exported):
    export_dir = copy_of(exported, "damaged_cases")
    outputs = export_dir / KEPT / "verify_outputs.npz"
    outputs.write_bytes(outputs.read_bytes()[:100])
    reseal(export_dir)  # the cases file itself is what is wrong, not the record of it
    done = run_cli("verify", export_dir)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = error_lines(done)
    assert f"{outputs} cannot be read" in line


def test_a_passing_verify_says_every_file_matched(exported):
    done = run_cli("verify", exported["dir"], "--latency-runs", "0")
    assert done.returncode == 0, done.stderr
    files = len([p for p in exported["dir"].rglob("*") if p.is_file()]) - 1  # the manifest itself
    assert f"integrity: {files} files match the sha256 their manifest records" in done.stdout


def test_inspect_of_a_damaged_manifest_is_one_line_naming_it(exported):
    export_dir = copy_of(exported, "inspect_damaged")
    (export_dir / MANIFEST_PATH).write_text('{"config": {')
    done = run_cli("inspect", export_dir)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    (line,) = error_lines(done)
    assert f"{export_dir / MANIFEST_PATH} cannot be read as JSON" in line
