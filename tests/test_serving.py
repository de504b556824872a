"""Serving releases: numbered versions under a base path, warmup records, the signature contract,
``exportkit inspect``; and a TF Serving-style load: a poller loads every new version as it appears
while racing, killed and pruning exports publish through the CLI."""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from exportkit.artifact import contract, versions
from exportkit.artifact.versions import version_slot
from exportkit.errors import ConfigError, ExportDirExistsError
from tests.conftest import ROOT, export, run_cli

MODEL = ("model=keras", "model.build._target_=tests.models.sequential")


# ---------------------------------------------------------------- the contract diff (no TensorFlow)


def sig(inputs=None, outputs=None, method="tensorflow/serving/predict"):
    inputs = {"x": ("float32", [None, 6])} if inputs is None else inputs
    outputs = {"out": ("float32", [None, 2])} if outputs is None else outputs
    tensors = lambda d: {k: {"dtype": t, "shape": s} for k, (t, s) in d.items()}  # noqa: E731
    return {"method_name": method, "inputs": tensors(inputs), "outputs": tensors(outputs)}


BASE = {"serve": {"serving_default": sig()}}


@pytest.mark.parametrize(
    "new, expected",
    [
        ({"serve": {"serving_default": sig(inputs={})}}, "serve/serving_default: input x removed"),
        (
            {"serve": {"serving_default": sig(inputs={"features": ("float32", [None, 6])})}},
            "serve/serving_default: input x removed",
        ),  # a rename
        (
            {"serve": {"serving_default": sig(outputs={"logits": ("float32", [None, 2])})}},
            "serve/serving_default: output out removed",
        ),
        (
            {"serve": {"serving_default": sig(inputs={"x": ("float64", [None, 6])})}},
            "serve/serving_default: input x dtype float32 -> float64",
        ),
        (
            {"serve": {"serving_default": sig(outputs={"out": ("int32", [None, 2])})}},
            "serve/serving_default: output out dtype float32 -> int32",
        ),
        (
            {"serve": {"serving_default": sig(inputs={"x": ("float32", [1, 6])})}},
            "serve/serving_default: input x shape [null, 6] -> [1, 6] (narrowed)",
        ),
        (
            {"serve": {"serving_default": sig(inputs={"x": ("float32", [None, 7])})}},
            "serve/serving_default: input x shape [null, 6] -> [null, 7] (changed)",
        ),
        (
            {"serve": {"serving_default": sig(outputs={"out": ("float32", [None, 3])})}},
            "serve/serving_default: output out shape [null, 2] -> [null, 3] (changed)",
        ),
        (
            {"serve": {"serving_default": sig(inputs={"x": ("float32", [None, 6, 1])})}},
            "serve/serving_default: input x shape [null, 6] -> [null, 6, 1] (changed)",
        ),
        (
            {"serve": {"serving_default": sig(inputs={"x": ("float32", [None, 6]), "y": ("int64", [None])})}},
            "serve/serving_default: input y added (clients that do not send it are refused)",
        ),
        (
            {"serve": {"serving_default": sig(method="tensorflow/serving/classify")}},
            "serve/serving_default: method name tensorflow/serving/predict -> tensorflow/serving/classify",
        ),
        ({"serve": {"other": sig()}}, "serve/serving_default: signature removed"),
        ({"train": {"serving_default": sig()}}, "tag-set serve removed"),
    ],
)
def test_each_breaking_change_is_named(new, expected):
    found = contract.diff(BASE, new)
    assert found.status == "breaking" and expected in found.breaking, found


def test_additions_and_widenings_are_compatible_and_identity_is_same():
    assert contract.diff(BASE, BASE).status == "same" and contract.diff(BASE, BASE).compatible == []
    new = {
        "serve": {
            "serving_default": sig(
                inputs={"x": ("float32", [None, None])},
                outputs={"out": ("float32", [None, 2]), "extra": ("int64", [None])},
            ),
            "second": sig(),
        },
        "train": {"train": sig()},
    }
    found = contract.diff(BASE, new)
    assert found.status == "compatible" and found.breaking == []
    assert found.compatible == [
        "serve/second: signature added",
        "serve/serving_default: input x shape [null, 6] -> [null, null] (widened)",
        "serve/serving_default: output extra added",
        "tag-set train added",
    ]
    # an output made fixed is compatible for its consumers; an unknown rank made known narrows an input
    assert (
        contract.diff(BASE, {"serve": {"serving_default": sig(outputs={"out": ("float32", [4, 2])})}}).status
        == "compatible"
    )
    unknown = {"serve": {"serving_default": sig(inputs={"x": ("float32", None)})}}
    assert contract.diff(unknown, BASE).breaking == [
        "serve/serving_default: input x shape unknown rank -> [null, 6] (narrowed)"
    ]
    many = contract.diff(BASE, {"serve": {"serving_default": sig(inputs={}, outputs={})}, "eval": {}})
    assert many.status == "breaking" and "(and" not in many.summary() and len(many.breaking) == 2


# ---------------------------------------------------------------- versions (fake exports, no TensorFlow)


def fake_version(base, version="auto", overwrite=False, labels=None, content="v"):
    with version_slot(base, version, overwrite, labels) as slot:
        (slot.work_dir / "saved_model.pb").write_text(content)
        slot.publish()
    return slot


RESERVE = r"""
import sys, time
from pathlib import Path
from exportkit.artifact.versions import version_slot
with version_slot(Path(sys.argv[1]), "auto", False) as slot:
    (slot.work_dir / "saved_model.pb").write_text("child")
    print(slot.version, flush=True)
    time.sleep(float(sys.argv[2]))
    slot.publish()
"""


def test_auto_reserves_until_published_and_a_killed_reservation_blocks_nothing(tmp_path):
    base = tmp_path / "models" / "clf"
    assert fake_version(base).version == 1 and fake_version(base).version == 2
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    holder = subprocess.Popen(
        [sys.executable, "-c", RESERVE, str(base), "60"], env=env, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "3"  # reserved, not yet on disk
    assert versions.list_versions(base).keys() == {1, 2} and versions.reserved_versions(base) == {3}
    assert fake_version(base).version == 4  # the reservation is respected
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert sorted(p.name for p in base.iterdir() if p.name.startswith(".3.")) != []  # its leftovers
    assert fake_version(base).version == 5  # not blocked; the dead run's leftovers are swept
    assert sorted(os.listdir(base)) == [".exportkit.lock", "1", "2", "4", "5"]
    assert fake_version(base, 3).version == 3  # nor is an explicit export of the number it held
    with pytest.raises(
        ExportDirExistsError,
        match=r"serving.version=2: version 2 already exists .* "
        r"serving.version=auto for the next free version \(6\)",
    ):
        fake_version(base, 2)
    assert fake_version(base, 2, overwrite=True, content="again").version == 2
    assert (base / "2" / "saved_model.pb").read_text() == "again"
    with pytest.raises(ConfigError, match=r"serving.labels.stable=9: there is no version 9 .*versions: 1, 2, 3, 4, 5"):
        fake_version(base, labels={"stable": 9})
    assert sorted(os.listdir(base)) == [".exportkit.lock", "1", "2", "3", "4", "5"]


def test_a_failed_first_export_leaves_no_base_path(tmp_path):
    base = tmp_path / "new" / "clf"
    with pytest.raises(RuntimeError):
        with version_slot(base, "auto", False):
            raise RuntimeError("stage failed")
    assert os.listdir(tmp_path) == []


def test_keep_plan_spares_the_published_labelled_and_busy_versions():
    assert versions.plan_keep([1, 2, 3, 4, 5], published=5, keep=2, labels={"stable": 1}) == ([1, 4, 5], [2, 3])
    # the published and the busy versions stay, and so does every version above them: removing 3
    # and 4 here (or 2 below, while 1 is still being written) would leave a gap that the next
    # release's keep does not close (1 published last: [1, 3] on disk, not the newest)
    assert versions.plan_keep([1, 2, 3, 4, 5], published=2, keep=1, labels={}) == ([2, 3, 4, 5], [1])
    assert versions.plan_keep([1, 2, 3], published=3, keep=1, labels={}, busy={1}) == ([1, 2, 3], [])
    assert versions.plan_keep([1, 2, 3, 4], published=4, keep=1, labels={}, busy={3}) == ([3, 4], [1, 2])
    assert versions.plan_keep([1, 2, 3], published=3, keep=None, labels={}) == ([1, 2, 3], [])


def test_schema_rules_for_serving_keys():
    from exportkit.composition import compose
    from exportkit.schema import validate

    for overrides, message in [
        (["serving.keep=2"], "serving.keep needs serving.base_path"),
        (["+serving.labels.stable=1"], "serving.labels needs serving.base_path"),
        (["serving.version=3"], "serving.version needs serving.base_path"),
        (["serving.base_path=/tmp/b", "serving.version=latest"], "serving.version='latest' is neither `auto`"),
        (["serving.base_path=/tmp/b", "serving.keep=0"], "serving.keep=0 keeps no version"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate(compose([*overrides, "export_dir=/tmp/unused"]))


# ---------------------------------------------------------------- a TF Serving-style load

POLLER = r"""
import hashlib, json, os, sys, time
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

base, stop, out = sys.argv[1], sys.argv[2], sys.argv[3]
seen = set()

def load(version):
    # What TF Serving does with a new version directory: every file whole, the serve graph through
    # the TF1 session loader, then each warmup record run.
    path = os.path.join(base, version)
    manifest = json.load(open(os.path.join(path, "assets.extra", "manifest.json")))
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256(open(os.path.join(path, rel), "rb").read()).hexdigest() == digest, rel
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in
               tf.data.TFRecordDataset(os.path.join(path, "assets.extra", "tf_serving_warmup_requests"))]
    answers = []
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], path)
        for log in records:
            request = log.predict_log.request
            signature = meta.signature_def[request.model_spec.signature_name]
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            names = sorted(signature.outputs)
            values = sess.run([signature.outputs[n].name for n in names],
                              {signature.inputs[k].name: v for k, v in inputs.items()})
            answers.append({"model": request.model_spec.name, "signature": request.model_spec.signature_name,
                            "inputs": {k: v.tolist() for k, v in inputs.items()},
                            "outputs": {n: v.tolist() for n, v in zip(names, values)}})
    return {"version": int(version), "answers": answers, "at": time.time()}

open(stop + ".ready", "w").close()
while True:
    last = os.path.exists(stop)
    names = sorted(n for n in os.listdir(base) if n.isdigit()) if os.path.isdir(base) else []
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        try:
            result = load(name)
        except Exception as error:
            result = {"version": int(name), "error": repr(error)}
        with open(out, "a") as f:
            f.write(json.dumps(result) + "\n")
    if last:
        break
    time.sleep(0.02)
"""


def cli_env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "examples")]))


def wait_for(predicate, timeout=300, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """One base path served while exports publish into it: A (verify on), then B and C racing
    with `auto` while D (verify on) is killed with SIGKILL mid-way, then E with keep, a label and
    the model config file. Returns what the poller loaded and what each export said."""
    root = tmp_path_factory.mktemp("serving")
    base, stop, loaded = root / "models" / "clf", root / "stop", root / "loaded.jsonl"
    config_file = root / "models" / "models.config"
    poller = subprocess.Popen(
        [sys.executable, "-c", POLLER, str(base), str(stop), str(loaded)],
        env=cli_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: Path(str(stop) + ".ready").exists(), what="the poller")

    def cli(name, *extra):
        return run_cli(*MODEL, f"serving.base_path={base}", f"hydra.run.dir={root / name}", *extra)

    done = {"A": cli("A")}
    assert done["A"].returncode == 0, done["A"].stderr[-3000:]
    killed = subprocess.Popen(
        [sys.executable, "-m", "exportkit", *MODEL, f"serving.base_path={base}", f"hydra.run.dir={root / 'D'}"],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        racing = [pool.submit(cli, name, "pipeline.stages.verify=null") for name in "BC"]
        # D is killed once its graph is written (it is then verifying: mid-way)
        staged = wait_for(
            lambda: [p for p in base.glob(f".*.staging-{killed.pid}-*") if (p / "saved_model.pb").exists()],
            what="D's staged graph",
        )
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        done.update(B=racing[0].result(), C=racing[1].result())
    done["E"] = cli(
        "E",
        "pipeline.stages.verify=null",
        "serving.keep=2",
        "+serving.labels.stable=1",
        f"serving.model_config_file={config_file}",
    )
    stop.touch()
    poller.wait(timeout=300)
    return {
        "base": base,
        "done": done,
        "killed_version": int(staged[0].name.split(".")[1]),
        "loaded": [json.loads(line) for line in loaded.read_text().splitlines()],
        "poller_stderr": poller.stderr.read(),
        "config_file": config_file,
    }


def published(release):
    """Export name -> the version it published (from the CLI's last line, `export: PATH`)."""
    return {
        name: int(Path(run.stdout.strip().splitlines()[-1].split("export: ")[-1]).name)
        for name, run in release["done"].items()
    }


def test_every_version_the_poller_loads_is_whole_and_answers(release, tmp_path):
    from exportkit.verification.cases import make_inputs

    for name, done in release["done"].items():
        assert done.returncode == 0, (name, done.stderr[-3000:])
    loaded = release["loaded"]
    assert [r for r in loaded if "error" in r] == [], (loaded, release["poller_stderr"][-3000:])
    # it loaded exactly the published versions (each once, whole: every file's sha256 as recorded)
    assert sorted(r["version"] for r in loaded) == sorted(published(release).values())
    # every answer is the source model's output for the request's inputs (seeded: one model for all)
    reference = export(*MODEL, f"export_dir={tmp_path / 'reference'}", "pipeline.stages.verify=null")
    want_inputs = make_inputs(
        reference.context.model.signatures, [1, 3], seed=0, hints=reference.context.model.input_hints
    )
    for record in loaded:
        assert len(record["answers"]) == 2
        for answer, ((key, batch), inputs) in zip(record["answers"], want_inputs.items()):
            assert answer["model"] == "clf" and answer["signature"] == key
            np.testing.assert_array_equal(np.array(answer["inputs"]["x"], np.float32), inputs["x"])
            want = reference.context.model.reference[key](inputs)["out"]
            got = np.array(answer["outputs"]["out"], np.float32)
            assert got.shape == (int(batch), 2)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))


def test_racing_exports_get_two_versions_and_a_killed_one_leaves_nothing(release):
    base, got = release["base"], published(release)
    assert got["A"] == 1 and got["B"] != got["C"] and {got["B"], got["C"]} <= {2, 3, 4}
    # D reserved a number and died holding it: while it lived nobody else took it; once dead it blocks
    # nothing: E's auto is one more than the highest version on disk (D's number again if it was that).
    killed = release["killed_version"]
    assert got["E"] == max(got["B"], got["C"]) + 1 and len(set(got.values())) == 4
    raced = release["done"]["B"].stdout + release["done"]["C"].stdout
    assert killed not in (got["B"], got["C"]) or "leftover(s) of dead exportkit process(es)" in raced
    assert not [p for p in os.listdir(base) if p.startswith(".") and p != versions.BASE_LOCK]


def test_keep_labels_and_the_model_config_file(release):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    base, got = release["base"], published(release)
    # keep=2 keeps the two highest and the labelled 1; the rest were renamed aside, then deleted
    kept = sorted({1, got["E"], max(got["B"], got["C"])})
    assert sorted(versions.list_versions(base)) == kept
    removed = sorted(set(got.values()) - set(kept))
    assert (
        f"removed version(s) {', '.join(map(str, removed))} (serving.keep=2); kept {', '.join(map(str, kept))}"
    ) in release["done"]["E"].stdout
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(release["config_file"].read_text(), config)
    (entry,) = config.model_config_list.config
    assert entry.name == "clf" and entry.base_path == str(base) and entry.model_platform == "tensorflow"
    assert list(entry.model_version_policy.specific.versions) == kept
    assert dict(entry.version_labels) == {"stable": 1}
    # another model's entry in the same file is kept when this one is updated
    from exportkit.artifact import model_config

    shared = release["config_file"].with_name("shared.config")
    shared.write_text('model_config_list { config { name: "other" base_path: "/srv/other" } }\n')
    model_config.update(shared, "clf", base, kept, {"canary": got["E"]})
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(shared.read_text(), config)
    assert [e.name for e in config.model_config_list.config] == ["other", "clf"]
    assert dict(config.model_config_list.config[1].version_labels) == {"canary": got["E"]}


def test_verify_replays_the_warmup_records_and_the_manifest_records_the_contract(release):
    base, got = release["base"], published(release)
    manifest = json.loads((base / "1" / "assets.extra" / "manifest.json").read_text())
    assert "warmup: 2 requests replayed through the TF1 session loader" in release["done"]["A"].stdout
    assert manifest["serving"]["warmup"]["records"] == manifest["serving"]["warmup"]["replayed"] == 2
    assert manifest["contract"] == {
        "serve": {
            "serving_default": {
                "method_name": "tensorflow/serving/predict",
                "inputs": {"x": {"dtype": "float32", "shape": [None, 6]}},
                "outputs": {"out": {"dtype": "float32", "shape": [None, 2]}},
            }
        }
    }
    assert "contract_check" not in manifest["serving"]  # version 1 had nothing to compare with
    latest = json.loads((base / str(got["E"]) / "assets.extra" / "manifest.json").read_text())
    assert latest["serving"]["contract_check"]["status"] == "same"
    assert latest["serving"]["previous"] == max(got["B"], got["C"])


def test_the_contract_gate_refuses_a_breaking_version_unless_allowed(release, tmp_path):
    from exportkit.sweep_summary import export_facts

    against = release["base"] / "1"
    wider = (
        "+model.build.features=7",
        f"serving.compare_to={against}",
        "pipeline.stages.verify=null",
        "serving.warmup=false",
    )
    refused = run_cli(*MODEL, *wider, f"export_dir={tmp_path / 'x'}", f"hydra.run.dir={tmp_path / 'h1'}")
    assert refused.returncode == 1 and not (tmp_path / "x").exists()
    errors = [line for line in refused.stderr.splitlines() if line.startswith("exportkit: error:")]
    assert errors == [
        f"exportkit: error: the new signatures break the contract of {against}: "
        f"serve/serving_default: input x shape [null, 6] -> [null, 7] (changed); keep the names, "
        f"dtypes and shapes clients use, or pass serving.allow_breaking=true to publish anyway"
    ]
    allowed = run_cli(
        *MODEL,
        *wider,
        "serving.allow_breaking=true",
        f"export_dir={tmp_path / 'x'}",
        f"hydra.run.dir={tmp_path / 'h2'}",
    )
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "contract: BREAKING (serving.allow_breaking=true)" in allowed.stdout
    assert export_facts(tmp_path / "x")["contract"] == "breaking"
    assert export_facts(against)["contract"] == "-"
    assert export_facts(release["base"] / str(published(release)["E"]))["contract"] == "same"
    assert not (tmp_path / "x" / "assets.extra" / "tf_serving_warmup_requests").exists()  # serving.warmup=false


def test_a_warmup_record_that_does_not_run_fails_verify(tmp_path, monkeypatch):
    from exportkit import serving
    from exportkit.errors import VerificationError
    from tests.conftest import leftovers

    real = serving.warmup_cases
    monkeypatch.setattr(
        serving,
        "warmup_cases",
        lambda ctx: {
            case: {name: array[:, :5] for name, array in arrays.items()} for case, arrays in real(ctx).items()
        },
    )
    with pytest.raises(VerificationError, match=r"warmup record 0 \(serving_default\) does not run"):
        export(*MODEL, f"export_dir={tmp_path / 'bad'}")
    assert leftovers(tmp_path / "bad") == []


# ---------------------------------------------------------------- inspect


def test_inspect_json_of_a_base_path_and_an_export_without_importing_tensorflow(release):
    base, got = release["base"], published(release)
    on_disk = sorted(versions.list_versions(base))
    newest = base / str(got["E"])
    # told at exit, by an atexit handler
    probe = (
        "import atexit, json, runpy, sys; sys.argv = ['exportkit', 'inspect', sys.argv[1], '--json']\n"
        "atexit.register(lambda: print(json.dumps({'tf': sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'jax'))})))\n"
        "runpy.run_module('exportkit', run_name='__main__')\n"
    )
    for path in (base, newest):
        done = subprocess.run(
            [sys.executable, "-c", probe, str(path)], env=cli_env(), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        text = done.stdout.strip()
        assert json.loads(text.splitlines()[-1]) == {"tf": []}
        found = json.loads(text[: text.rindex("\n")])
        facts = found["latest"] if path == base else found
        if path == base:
            assert found["kind"] == "base_path" and found["latest_version"] == got["E"]
            assert [v["version"] for v in found["versions"]] == on_disk
            assert [v["verify"] for v in found["versions"]] == ["ok"] + ["off"] * (len(on_disk) - 1)
            assert [v["contract"] for v in found["versions"]] == ["-"] + ["same"] * (len(on_disk) - 1)
        else:
            assert found["kind"] == "export" and found["path"] == str(path)
        assert facts["signatures"]["serve"]["serving_default"]["inputs"] == {
            "x": {"dtype": "float32", "shape": [None, 6]}
        }
        assert facts["signatures_from"] == "manifest" and facts["warmup_records"] == 2
        assert facts["sizes"]["saved_model"] == (newest / "saved_model.pb").stat().st_size
        assert facts["sizes"]["warmup"] == (newest / "assets.extra" / "tf_serving_warmup_requests").stat().st_size
        assert facts["serving"] == {
            "model_name": "clf",
            "base_path": str(base),
            "version": got["E"],
            "previous": max(got["B"], got["C"]),
        }
        assert facts["contract_check"]["status"] == "same" and facts["verify"] == {"status": "off"}
    one = run_cli("inspect", base / "1")
    assert one.returncode == 0
    for expected in (
        "tag-set serve:",
        "input  x: float32 [?, 6]",
        "output out: float32 [?, 2]",
        "verify: ok, max abs error",
        "contract: not compared",
        "warmup",
    ):
        assert expected in one.stdout, one.stdout
    missing = run_cli("inspect", base / "nothing")
    assert missing.returncode == 1
    assert missing.stderr.strip().endswith("is not a directory; give an export or a base path")
    again = run_cli("verify", base / "1")  # verified at export: its kept cases run again (tests/test_verify_command.py)
    assert again.returncode == 0 and "OK on /CPU:0" in again.stdout, again.stderr[-2000:]


def test_reproduce_writes_a_versioned_export_at_out_not_as_a_new_version(release, tmp_path):
    base = release["base"]
    before = sorted(os.listdir(base))
    done = subprocess.run(
        [sys.executable, "-m", "exportkit.reproduce", str(base / "1"), "--out", str(tmp_path / "again")],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reproduced:" in done.stdout and sorted(os.listdir(base)) == before
    warmup = Path("assets.extra") / "tf_serving_warmup_requests"
    assert (tmp_path / "again" / warmup).read_bytes() == (base / "1" / warmup).read_bytes()  # model name "clf" kept


def concurrent_releases(root, processes, rounds):
    """``processes`` exports at once with ``auto`` and ``keep=2``, ``rounds`` times: every one
    publishes (none refused because another's keep removed the version it compares with), each
    under a version of its own, and the model config file lists what is on disk."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    base, config_file = root / "models" / "clf", root / "models" / "models.config"

    def release(name):
        return run_cli(
            *MODEL,
            f"serving.base_path={base}",
            "serving.keep=2",
            f"serving.model_config_file={config_file}",
            "pipeline.stages.verify=null",
            f"hydra.run.dir={root / 'runs' / name}",
        )

    every = []
    for round_ in range(rounds):
        with concurrent.futures.ThreadPoolExecutor(processes) as pool:
            done = list(pool.map(release, [f"{round_}-{i}" for i in range(processes)]))
        for run in done:
            assert run.returncode == 0, run.stderr[-3000:]
        every += [int(Path(run.stdout.strip().splitlines()[-1].split("export: ")[-1]).name) for run in done]
        on_disk = sorted(versions.list_versions(base))
        assert on_disk == sorted(every)[-len(on_disk) :] and 2 <= len(on_disk) <= processes + 1
        config = model_server_config_pb2.ModelServerConfig()
        text_format.Parse(config_file.read_text(), config)
        (entry,) = config.model_config_list.config
        assert list(entry.model_version_policy.specific.versions) == on_disk
    assert len(set(every)) == len(every) == processes * rounds  # a version of its own, each
    assert not [p for p in os.listdir(base) if p.startswith(".") and p != versions.BASE_LOCK]


def test_concurrent_releases_with_keep_all_publish(tmp_path):
    concurrent_releases(tmp_path, processes=4, rounds=2)


@pytest.mark.slow
def test_eight_concurrent_releases_with_keep_ten_rounds(tmp_path):
    concurrent_releases(tmp_path, processes=8, rounds=10)
