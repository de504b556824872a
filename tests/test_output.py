"""What an export contains and how the runner treats stages: manifest, overwrite, text protos,
targets, disabled and user stages."""

import hashlib
import json

import numpy as np
from omegaconf import DictConfig

from exportkit.errors import VerificationError
from tests.conftest import compose, export, leftovers, random_inputs, serve

KERAS = ("model=keras", "model.build._target_=tests.models.sequential")


def test_manifest_records_config_versions_stages_files_fingerprint_verify(export_dir):
    result = export(*KERAS, f"export_dir={export_dir}", "seed=7")
    manifest = json.loads((export_dir / "assets.extra" / "manifest.json").read_text())
    assert set(manifest) >= {"config", "versions", "stages", "files", "fingerprint", "verify"}
    assert manifest["config"]["seed"] == 7 and manifest["config"]["export_dir"] == str(export_dir)
    assert {"exportkit", "python", "tensorflow", "keras"} <= set(manifest["versions"])
    assert [s["name"] for s in manifest["stages"]] == ["build", "trace", "write_checkpoint", "write_graphs", "verify"]
    on_disk = {p.relative_to(export_dir).as_posix() for p in export_dir.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {"assets.extra/manifest.json"}
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((export_dir / rel).read_bytes()).hexdigest() == digest
    import tensorflow as tf

    fingerprint = tf.saved_model.experimental.read_fingerprint(str(export_dir))
    assert int(manifest["fingerprint"]["saved_model_checksum"]) == fingerprint.saved_model_checksum
    case = manifest["verify"]["serving_default"]["1"]["out"]
    assert case["ok"] is True and case["max_abs_error"] <= 1e-5
    assert result.manifest == manifest


def test_overwrite_replaces_the_old_export(export_dir):
    export(*KERAS, "+model.build.units=3", f"export_dir={export_dir}", "pipeline.stages.verify=null")
    export(*KERAS, "+model.build.units=5", f"export_dir={export_dir}", "overwrite=true", "pipeline.stages.verify=null")
    config = json.loads((export_dir / "assets.extra" / "manifest.json").read_text())["config"]
    assert config["model"]["build"]["units"] == 5
    assert leftovers(export_dir) == [export_dir]


def test_as_text_writes_a_loadable_pbtxt(export_dir):
    result = export(*KERAS, f"export_dir={export_dir}", "as_text=true")
    assert (export_dir / "saved_model.pbtxt").exists() and not (export_dir / "saved_model.pb").exists()
    inputs = random_inputs({"x": (6,)}, 2)
    want = result.context.model.instance(inputs["x"]).numpy()
    np.testing.assert_allclose(serve(export_dir, inputs)["out"], want, atol=1e-6)


def test_gpu_target_without_a_gpu_verifies_on_the_cpu_and_records_the_gpu_as_not_verified(export_dir):
    """The graphs are device-agnostic: verify runs where it can and says where it could not."""
    import tensorflow as tf

    result = export(*KERAS, "target=gpu", f"export_dir={export_dir}")
    verify = [r for r in result.records if r.name == "verify"][0]
    verification = result.manifest["verification"]
    assert verify.status == "ok" and verification["verified"] is True and verification["cases"] == 2
    if tf.config.list_logical_devices("GPU"):
        assert verification["devices_verified"] == ["/GPU:0"] and verification["devices_not_verified"] == {}
    else:
        assert verification["devices_verified"] == ["/CPU:0"]
        assert verification["devices_not_verified"] == {"/GPU:0": "not present on this machine"}
        assert "not verified on /GPU:0" in verify.detail
    for size in ("1", "3"):
        assert result.manifest["verify"]["serving_default"][size]["out"]["ok"] is True
    inputs = random_inputs({"x": (6,)}, 3)
    np.testing.assert_allclose(
        serve(export_dir, inputs)["out"], result.context.model.instance(inputs["x"]).numpy(), atol=1e-5
    )


def test_user_stage_plugs_in_by_target_and_null_disables(export_dir):
    result = export(
        *KERAS,
        f"export_dir={export_dir}",
        "pipeline.stages.verify=null",
        "+pipeline.stages.count={_target_: tests.stages.CountParams}",
    )
    assert [r.name for r in result.records] == ["build", "trace", "write_checkpoint", "write_graphs", "count"]
    assert result.context.extra["params"] == result.context.model.instance.count_params()
    assert json.loads((export_dir / "assets.extra" / "params.json").read_text()) == {
        "params": result.context.model.instance.count_params()
    }


def test_optional_stage_failure_is_recorded_and_the_run_goes_on(export_dir):
    result = export(
        *KERAS,
        f"export_dir={export_dir}",
        "pipeline.stages.verify=null",
        "+pipeline.stages.broken={_target_: tests.stages.Broken, required: false}",
    )
    broken = result.records[-1]
    assert broken.status == "failed" and "broken on purpose" in broken.detail
    assert (export_dir / "saved_model.pb").exists()


def test_required_user_stage_failure_aborts(export_dir):
    import pytest

    with pytest.raises(RuntimeError, match="broken on purpose"):
        export(*KERAS, f"export_dir={export_dir}", "+pipeline.stages.broken={_target_: tests.stages.Broken}")
    assert leftovers(export_dir) == []


def test_tight_tolerance_is_a_hard_failure(export_dir):
    """No 'succeeded with a warning': a mismatch beyond atol/rtol fails, whatever its size."""
    import pytest

    with pytest.raises(VerificationError):
        export(
            "model=keras",
            "model.build._target_=tests.models.stochastic",
            f"export_dir={export_dir}",
            "verify.atol=0.5",
            "verify.rtol=0",
        )
    export(
        "model=keras",
        "model.build._target_=tests.models.stochastic",
        f"export_dir={export_dir}",
        "verify.atol=100",
        "verify.rtol=0",
    )
    assert (export_dir / "saved_model.pb").exists()


def test_every_config_group_option_composes():
    from exportkit.composition import group_options

    groups = {g: group_options(g) for g in ("model", "target", "pipeline")}
    assert {"example", "keras", "keras_file", "jax", "in_memory"} <= set(groups["model"])
    for group, options in groups.items():
        for option in options:
            cfg = compose(f"{group}={option}", "export_dir=/tmp/x")
            assert isinstance(cfg[group], DictConfig) and cfg[group]  # the option's node, not empty
            if group == "model":
                assert cfg.model._target_  # each model option names its source class
            if group == "target":
                assert cfg.target.name == option
