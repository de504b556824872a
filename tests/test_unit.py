"""The fast tier (``make test-unit``): pieces that need no TensorFlow process of their own, each
checked on real data: the verification protocol and comparison, the manifest reader, the config
reference, sizes."""

import json
import subprocess
import sys

import numpy as np
import pytest

from exportkit.artifact.facts import format_size
from exportkit.artifact.manifest import MANIFEST, Manifest
from exportkit.errors import LoadError
from exportkit.verification import compare, kept
from exportkit.verification.protocol import Latency, Reply, Request, decode, encode
from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def test_a_request_and_a_reply_survive_their_json_line():
    request = Request("/e", "in.npz", "out.npz", "auto", ["my_layers"], {"train_step": "train"}, Latency(5, 1.5))
    assert Request.from_json(request.to_json()) == request
    assert "\n" not in request.to_json()
    reply = Reply(ok=True, device="/CPU:0", load_s={"serve": 0.1}, latency={"k": {"1": {"p50_ms": 0.2}}})
    assert Reply.from_json(reply.to_json()) == reply


def test_cases_survive_the_npz_encoding_strings_included(tmp_path):
    cases = {
        ("serving_default", "3"): {"x": np.arange(6, dtype="float32").reshape(3, 2)},
        ("serving_default", "1,seq=5"): {"text": np.array([b"a b", b"\xc3\xa9"], dtype=object)},
    }
    np.savez(tmp_path / "c.npz", **encode(cases))
    with np.load(tmp_path / "c.npz", allow_pickle=False) as data:
        back = decode(data)
    assert back.keys() == cases.keys()
    np.testing.assert_array_equal(back[("serving_default", "3")]["x"], cases[("serving_default", "3")]["x"])
    assert back[("serving_default", "1,seq=5")]["text"].tolist() == [b"a b", b"\xc3\xa9"]


def test_compare_reports_errors_beyond_tolerance_shapes_and_top1():
    want = {("k", "2"): {"p": np.array([[0.1, 0.9], [0.8, 0.2]]), "s": np.array([b"a"])}}
    close = {("k", "2"): {"p": want[("k", "2")]["p"] + 1e-7, "s": np.array([b"a"])}}
    report, failures = compare.compare(want, close, {"p": (1e-5, 1e-5), "s": (0, 0)}, top1={"p"})
    assert failures == [] and report["k"]["2"]["p"]["top1_agreement"] == 1.0
    swapped = {("k", "2"): {"p": want[("k", "2")]["p"][:, ::-1], "s": np.array([b"b"])}}
    _, failures = compare.compare(want, swapped, {"p": (1e-5, 1e-5), "s": (0, 0)}, top1={"p"})
    assert any("max abs error 0.8" in f for f in failures) and any("strings differ" in f for f in failures)
    assert any("top-1 class agrees on 0% of 2 rows" in f for f in failures)
    _, failures = compare.compare(want, {("k", "2"): {"p": np.zeros((3, 2)), "s": np.array([b"a"])}}, {})
    assert failures == ["k/p at batch 2: shape (3, 2) != source (2, 2)"]


def test_kept_cases_round_trip_and_a_missing_array_is_one_line(tmp_path):
    cases = kept.KeptCases(
        inputs={("k", "1"): {"x": np.ones((1, 2), "float32")}},
        expected={("k", "1"): {"y": np.zeros((1,), "float32")}},
        graph_of={"k": "serve"},
        tolerances={"y": (1e-5, 1e-6)},
        top1=set(),
        source="generated",
    )
    kept.keep(tmp_path / kept.KEPT_DIR, cases)
    back = kept.read(tmp_path)
    assert back.graph_of == {"k": "serve"} and back.tolerances == {"y": (1e-5, 1e-6)}
    np.testing.assert_array_equal(back.inputs[("k", "1")]["x"], np.ones((1, 2)))
    kept.save_npz(tmp_path / kept.KEPT_DIR / kept.OUTPUTS_FILE, {})
    with pytest.raises(Exception, match="has no array 'k/1/y'"):
        kept.read(tmp_path)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"config": {', "cannot be read as JSON"),
        ("[1, 2]", "holds a JSON list"),
        ('{"files": {}}', "`config` is missing"),
        ('{"config": {}, "files": []}', "`files` is list"),
    ],
)
def test_a_damaged_manifest_is_one_line_naming_the_file(tmp_path, text, message):
    (tmp_path / MANIFEST).parent.mkdir(parents=True)
    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(LoadError, match=message) as caught:
        Manifest.read(tmp_path)
    assert str(tmp_path / MANIFEST) in str(caught.value) and "\n" not in str(caught.value)


def test_a_manifest_round_trips_and_says_its_verify_status(tmp_path):
    written = Manifest(
        config={"seed": 0},
        files={"saved_model.pb": "ab"},
        stages=[{"name": "verify", "status": "ok", "seconds": 1.0, "detail": ""}],
        verify={"serving_default": {"1": {"y": {"max_abs_error": 0.5, "ok": False}}}},
    )
    (tmp_path / MANIFEST).parent.mkdir(parents=True)
    (tmp_path / MANIFEST).write_text(written.to_json())
    back = Manifest.read(tmp_path)
    assert back == written and json.loads(written.to_json())["files"] == {"saved_model.pb": "ab"}
    assert back.verify_status() == {"status": "failed", "max_abs_error": 0.5, "batch_sizes": {"serving_default": [1]}}
    assert Manifest(config={}).verify_status() == {"status": "off"}


def test_sizes_read_as_people_write_them():
    assert [format_size(v) for v in (None, 0, 1536, 5 * 2**20, 3 * 2**30)] == [
        "-",
        "0 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]


def test_the_config_reference_matches_the_schema():
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_config_reference.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_stage_node_places_itself_before_or_after_another():
    from omegaconf import OmegaConf

    from exportkit.errors import ConfigError
    from exportkit.pipeline import stage_order

    def nodes(**extra):
        base = {"build": {}, "trace": {}, "write_checkpoint": {}, "write_graphs": {}, "verify": {}}
        return OmegaConf.create({**base, **extra})

    assert stage_order(nodes(mine={"after": "trace"})) == [
        "build",
        "trace",
        "mine",
        "write_checkpoint",
        "write_graphs",
        "verify",
    ]
    assert stage_order(nodes(mine={"before": "build"}, more={"after": "mine"}, verify=None))[:3] == [
        "mine",
        "more",
        "build",
    ]
    assert stage_order(nodes(mine={}))[-1] == "mine"  # no placement: appended, as the config lists it
    with pytest.raises(ConfigError, match=r"pipeline.stages.mine.after='trase' names no enabled stage; the stages"):
        stage_order(nodes(mine={"after": "trase"}))
    with pytest.raises(ConfigError, match="has both `before` and `after`"):
        stage_order(nodes(mine={"after": "trace", "before": "verify"}))
    with pytest.raises(ConfigError, match="placed relative to"):
        stage_order(nodes(a={"after": "b"}, b={"after": "a"}))


def test_keep_leaves_the_newest_versions_whichever_concurrent_release_finishes_last():
    from exportkit.artifact.versions import plan_keep

    # 7 and 8 published; 5 and 6 by slower runs: 6 finishes while 5 is still being written
    assert plan_keep([3, 4, 6, 7, 8], published=6, keep=2, labels={}, busy={5}) == ([6, 7, 8], [3, 4])
    # then 5 finishes last: nothing newer than it is removed, so what stays is still the newest
    assert plan_keep([5, 6, 7, 8], published=5, keep=2, labels={}) == ([5, 6, 7, 8], [])
    # a later release prunes back to keep; a labelled version stays
    assert plan_keep([5, 6, 7, 8, 9], published=9, keep=2, labels={"stable": 5}) == ([5, 8, 9], [6, 7])


def test_the_sweep_summary_has_columns_per_format_and_draws_each_artifact(tmp_path):
    """A format named with underscores keeps its own columns; summary.svg has one point per
    verified artifact, labelled with its variant; a failed one shows its status and error."""
    import xml.dom.minidom

    from exportkit import sweep_summary

    def row(job, quantize, status, error):
        cells = {"status": status, "bytes": 2048 if status == "ok" else None, "max_scaled_error": error}
        return {
            "job": job,
            "overrides": ["+formats=[litert]", f"formats.my_lite.quantize={quantize}"],
            "status": "ok",
            "reason": "",
            "export_dir": f"/x/{job}",
            "saved_model_bytes": 100,
            "checkpoint_bytes": 10,
            "stages": {"build": 0.1},
            "verify_max_abs_error": 0.0,
            "verify": "ok",
            "p50_ms": {"1": 0.2},
            "contract": "-",
            "fingerprint": "",
            "digest": "",
            "formats": {"my_lite": {**cells, "top1": 1.0, "p50_ms": {"1": 0.01} if status == "ok" else {}}},
        }

    rows = [row(0, "none", "ok", 1e-7), row(1, "int8", "failed", 0.29)]
    sweep_summary.write(rows, tmp_path)
    header, *lines = (tmp_path / "summary.csv").read_text().splitlines()
    names = header.split(",")
    assert {"my_lite_status", "my_lite_bytes", "my_lite_max_scaled_error", "my_lite_top1", "my_lite_p50_ms_b1"} <= set(
        names
    )
    first = dict(zip(names, lines[0].split(",")))
    assert first["my_lite_status"] == "ok" and first["my_lite_bytes"] == "2048" and first["my_lite_p50_ms_b1"] == "0.01"
    assert "failed (err 0.29)" in (tmp_path / "summary.md").read_text()
    svg = (tmp_path / "summary.svg").read_text()
    xml.dom.minidom.parseString(svg)  # well-formed
    assert svg.count("<circle") == 1 and "0 my_lite (none): err 1e-07, top-1 100%" in svg


class _Lines:
    """A reporter that keeps the stage lines it is given."""

    def __init__(self):
        self.ended = []

    def stage_ended(self, record):
        self.ended.append((record.name, record.status, record.detail))


def test_work_a_stage_leaves_running_ends_its_record_and_its_failure_is_that_stages():
    import threading

    from exportkit.background import Background
    from exportkit.context import StageRecord

    background, lines, go, done = Background(), _Lines(), threading.Event(), []
    background.start(lambda: (go.wait(), done.append("written")))
    writer = StageRecord("write", "ok", 0.0)
    assert background.left_by(writer, required=True, started=0.0)  # held open: nothing reported yet
    assert not background.left_by(StageRecord("quick", "ok", 0.0), required=True, started=0.0)
    go.set()
    background.finish(lines)
    assert done == ["written"] and lines.ended == [("write", "ok", "")] and writer.seconds > 0

    def fail():
        raise OSError(28, "No space left on device")

    background.start(fail)
    optional = StageRecord("optional", "ok", 0.0)
    background.left_by(optional, required=False, started=0.0)
    background.finish(lines)  # an optional stage's failure is recorded, and the run goes on
    assert optional.status == "failed" and "No space left" in optional.detail
    background.start(fail)
    required = StageRecord("required", "ok", 0.0)
    background.left_by(required, required=True, started=0.0)
    with pytest.raises(OSError, match="No space left") as raised:
        background.finish(lines)
    assert raised.value is background.failed and required.status == "failed"
    with pytest.raises(OSError):  # and again at every later wait: a failure cannot be swallowed
        background.finish(lines)


def test_abandoning_waits_for_the_work_still_running():
    """A failed or stopped export removes its staging directory only once nothing writes there."""
    import threading

    from exportkit.background import Background
    from exportkit.context import StageRecord

    background, go, done = Background(), threading.Event(), []
    background.start(lambda: (go.wait(), done.append("written")))
    background.left_by(StageRecord("write", "ok", 0.0), required=True, started=0.0)
    release = threading.Timer(0.05, go.set)  # releases the work; abandon() must wait until it ends
    release.start()
    background.abandon()
    assert done == ["written"]
    release.join()
