"""Each user mistake gives a message naming the key or value and the fix, and leaves nothing behind."""

import pytest

from exportkit.errors import ConfigError, ExportDirExistsError, ModelSourceError, SignatureError, VerificationError
from tests.conftest import export, leftovers

KERAS = ("model=keras", "model.build._target_=tests.models.sequential")

CASES = {
    "unimportable target": (
        ["model=keras", "model.build._target_=tests.models.no_such_factory"],
        ModelSourceError,
        "model.build._target_='tests.models.no_such_factory'",
    ),
    "factory returns no model": (
        ["model=keras", "model.build._target_=tests.models.not_a_model"],
        ModelSourceError,
        "not a keras.Model",
    ),
    "bad factory kwarg": ([*KERAS, "+model.build.colour=red"], ModelSourceError, "kwargs"),
    "unimportable custom object": (
        [*KERAS, "+custom_objects.Scale=tests.models.NoSuchLayer"],
        ModelSourceError,
        "custom_objects.Scale='tests.models.NoSuchLayer'",
    ),
    "custom object module missing": (
        [*KERAS, "+custom_objects.Scale=nowhere.Scale"],
        ModelSourceError,
        "cannot import module 'nowhere'",
    ),
    "missing model file": (
        ["model=keras_file", "model.path=/nonexistent/model.keras"],
        ModelSourceError,
        "model.path='/nonexistent/model.keras': no such file",
    ),
    "bad dtype": (
        [*KERAS, "+signatures.serving_default={inputs: {x: {shape: [null, 6], dtype: float31}}}"],
        ConfigError,
        "signatures.serving_default.inputs.x.dtype='float31'",
    ),
    "bad shape": (
        [*KERAS, "+signatures.serving_default={inputs: {x: {shape: [null, -6]}}}"],
        ConfigError,
        "signatures.serving_default.inputs.x.shape=[None, -6]",
    ),
    "malformed signature": (
        [*KERAS, "+signatures.serving_default={inputz: {}}"],
        ConfigError,
        "signatures.serving_default",
    ),
    "model.build target not set": (["model=keras"], ConfigError, "model.build._target_"),
    "no signature for an unbuilt model": (
        ["model=keras", "model.build._target_=tests.models.subclassed"],
        SignatureError,
        "cannot infer an input signature",
    ),
    "stage target unimportable": (
        [*KERAS, "pipeline.stages.trace._target_=nowhere.Trace"],
        ConfigError,
        "pipeline.stages.trace._target_='nowhere.Trace'",
    ),
    "disabled stage needed later": (
        [*KERAS, "pipeline.stages.trace=null"],
        ConfigError,
        "pipeline.stages.write_graphs needs `graphs`",
    ),
    "disabled write_graphs is named": (
        [*KERAS, "pipeline.stages.write_graphs=null"],
        ConfigError,
        "pipeline.stages.verify needs `saved_model_file` from an earlier stage, but no enabled stage before "
        "it adds it; re-enable pipeline.stages.write_graphs, which adds it",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_mistake_names_the_key_and_leaves_nothing(case, export_dir):
    overrides, error, message = CASES[case]
    with pytest.raises(error) as raised:
        export(*overrides, f"export_dir={export_dir}")
    assert message in str(raised.value)
    assert leftovers(export_dir) == []
    assert not export_dir.parent.exists()  # the parent this run would have created is gone too


def test_existing_export_dir_is_untouched_without_overwrite(export_dir):
    export_dir.mkdir(parents=True)
    (export_dir / "saved_model.pb").write_bytes(b"old model")
    with pytest.raises(ExportDirExistsError) as raised:
        export(*KERAS, f"export_dir={export_dir}")
    assert str(export_dir) in str(raised.value) and "overwrite=true" in str(raised.value)
    assert isinstance(raised.value, AssertionError)  # as TF 1.14 raised
    assert [p.name for p in export_dir.iterdir()] == ["saved_model.pb"]
    assert (export_dir / "saved_model.pb").read_bytes() == b"old model"
    assert leftovers(export_dir) == [export_dir]


def test_model_whose_outputs_change_fails_verification_and_writes_nothing(export_dir):
    with pytest.raises(VerificationError) as raised:
        export("model=keras", "model.build._target_=tests.models.stochastic", f"export_dir={export_dir}")
    assert "does not match the source model" in str(raised.value)
    assert "verify.atol" in str(raised.value)
    assert leftovers(export_dir) == []


def test_failed_verification_keeps_the_previous_export(export_dir):
    export(*KERAS, f"export_dir={export_dir}", "pipeline.stages.verify=null")
    before = {p.name: p.read_bytes() for p in export_dir.rglob("*") if p.is_file()}
    with pytest.raises(VerificationError):
        export(
            "model=keras", "model.build._target_=tests.models.stochastic", f"export_dir={export_dir}", "overwrite=true"
        )
    after = {p.name: p.read_bytes() for p in export_dir.rglob("*") if p.is_file()}
    assert after == before
    assert leftovers(export_dir) == [export_dir]
