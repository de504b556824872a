"""JAX models through the jax2tf pipeline: round trips through the written SavedModel, compared
numerically with the JAX function itself (rebuilt from its factory, not taken from the export)."""

import sys

import numpy as np
import pytest

from tests import jax_models
from tests.conftest import ROOT, compose, export, leftovers, random_inputs, run_cli, serve

MLP_SIG = "+signatures.serving_default={inputs: {x: {shape: [null, 6], dtype: float32}}}"
TWO_SIG = (
    "+signatures.serving_default={inputs: {image: {shape: [null, 5], dtype: float32}, "
    "meta: {shape: [null, 3], dtype: float32}}}"
)


def jax_outputs(apply_fn, params, *inputs):
    from exportkit.signatures import name_outputs

    return {k: np.asarray(v) for k, v in name_outputs(apply_fn(params, *inputs)).items()}


def xla_call_modules(export_dir):
    """(version, platforms) of every XlaCallModule op in the written saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    found = []
    for meta_graph in proto.meta_graphs:
        nodes = list(meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            nodes.extend(function.node_def)
        for node in nodes:
            if node.op == "XlaCallModule":
                found.append((node.attr["version"].i, [p.decode() for p in node.attr["platforms"].list.s]))
    return found


@pytest.fixture(scope="module")
def mlp_export(tmp_path_factory):
    export_dir = tmp_path_factory.mktemp("jax") / "mlp"
    result = export(
        "model=jax",
        "model.build._target_=tests.jax_models.mlp",
        MLP_SIG,
        f"export_dir={export_dir}",
        "verify.batch_sizes=[1,7]",
    )
    return export_dir, result


@pytest.mark.parametrize("batch", [1, 7])
def test_mlp_dynamic_batch_matches_jax(mlp_export, batch):
    export_dir, _ = mlp_export
    apply_fn, params = jax_models.mlp()
    inputs = random_inputs({"x": (6,)}, batch, seed=batch)
    got = serve(export_dir, inputs)
    want = jax_outputs(apply_fn, params, inputs["x"])
    assert set(got) == {"output_0"} and got["output_0"].shape == (batch, 2)
    np.testing.assert_allclose(got["output_0"], want["output_0"], atol=1e-5, rtol=1e-5)


def test_mlp_export_is_native_serialization_verified_in_a_fresh_process(mlp_export):
    import tensorflow as tf

    export_dir, result = mlp_export
    assert [(r.name, r.status) for r in result.records] == [
        ("build", "ok"),
        ("jax2tf", "ok"),
        ("trace", "ok"),
        ("write_checkpoint", "ok"),
        ("write_graphs", "ok"),
        ("verify", "ok"),
    ]
    report = result.manifest["verify"]["serving_default"]
    assert set(report) == {"1", "7"} and all(case["output_0"]["ok"] for case in report.values())
    assert xla_call_modules(export_dir) == [(10, ["CPU"])]
    signature = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    assert signature.structured_input_signature[1]["x"].shape.as_list() == [None, 6]
    assert result.manifest["config"]["pipeline"]["stages"]["jax2tf"]["with_gradient"] is False


def test_params_are_checkpoint_variables(mlp_export):
    import tensorflow as tf

    export_dir, _ = mlp_export
    _, params = jax_models.mlp()
    reader = tf.train.load_checkpoint(str(export_dir / "variables" / "variables"))
    keys = sorted(k for k in reader.get_variable_to_shape_map() if k.startswith("params_variables/"))
    assert len(keys) == 4
    # pytree order: layers/0/bias, layers/0/kernel, layers/1/bias, layers/1/kernel
    want = [
        params["layers"][0]["bias"],
        params["layers"][0]["kernel"],
        params["layers"][1]["bias"],
        params["layers"][1]["kernel"],
    ]
    for i, array in enumerate(want):
        np.testing.assert_array_equal(reader.get_tensor(f"params_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE"), array)


def test_weights_are_not_in_the_graph(tmp_path):
    """4 MiB of params: saved_model.pb stays tiny, variables/ holds them."""
    export_dir = tmp_path / "wide"
    export(
        "model=jax",
        "model.build._target_=tests.jax_models.wide",
        "+model.build.width=512",
        "+model.build.layers=4",
        f"export_dir={export_dir}",
        "pipeline.stages.verify=null",
        "+signatures.serving_default={inputs: {x: {shape: [null, 512], dtype: float32}}}",
    )
    pb = (export_dir / "saved_model.pb").stat().st_size
    variables = sum(p.stat().st_size for p in (export_dir / "variables").iterdir())
    assert variables >= 4 * 512 * 512 * 4
    assert pb < 100_000 and pb * 40 < variables, (pb, variables)
    apply_fn, params = jax_models.wide(width=512, layers=4)
    inputs = random_inputs({"x": (512,)}, 3)
    np.testing.assert_allclose(
        serve(export_dir, inputs)["y"], jax_outputs(apply_fn, params, inputs["x"])["y"], atol=1e-5
    )


def test_two_inputs_share_one_batch_symbol(tmp_path):
    import tensorflow as tf

    from exportkit.jax.convert import polymorphic_shape

    assert polymorphic_shape("image", tf.TensorShape([None, 5])) == "(batch, 5)"
    assert polymorphic_shape("tokens", tf.TensorShape([None, None])) == "(batch, tokens_1)"
    assert polymorphic_shape("x", tf.TensorShape([4, 5])) is None
    export_dir = tmp_path / "two"
    # apply_fn concatenates image and meta: it lowers only if both have the same batch symbol
    export(
        "model=jax",
        "model.build._target_=tests.jax_models.two_inputs",
        TWO_SIG,
        f"export_dir={export_dir}",
        "verify.batch_sizes=[2]",
    )
    apply_fn, params = jax_models.two_inputs()
    inputs = random_inputs({"image": (5,), "meta": (3,)}, 4)
    got = serve(export_dir, inputs)
    want = jax_outputs(apply_fn, params, inputs["image"], inputs["meta"])
    assert set(got) == {"score", "label"}
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, rtol=1e-5)
    # one symbol: the module rejects inputs whose batch sizes differ
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"XlaCallModule[\s\S]*\(4, 5\) != \(3, 3\)"):
        serve(export_dir, {"image": inputs["image"], "meta": inputs["meta"][:3]})
    # with a symbol per input (the polymorphic_shapes override) the same function cannot lower
    with pytest.raises(Exception, match=r"(?i)concatenate"):
        export(
            "model=jax",
            "model.build._target_=tests.jax_models.two_inputs",
            TWO_SIG,
            f"export_dir={tmp_path / 'apart'}",
            "pipeline.stages.verify=null",
            "pipeline.stages.jax2tf.polymorphic_shapes={image: '(b1, 5)', meta: '(b2, 3)'}",
        )


def test_params_from_npz(tmp_path):
    from exportkit.jax.params import save_params

    apply_fn, trained = jax_models.mlp(seed=1)  # differs from the factory's seed-0 values
    path = tmp_path / "params.npz"
    save_params(path, trained)
    export_dir = tmp_path / "npz"
    # mlp_template has only shapes and dtypes: every value must come from the file
    export(
        "model=jax",
        "model.build._target_=tests.jax_models.mlp_template",
        f"model.params_path={path}",
        MLP_SIG,
        f"export_dir={export_dir}",
        "verify.batch_sizes=[3]",
    )
    inputs = random_inputs({"x": (6,)}, 3)
    got = serve(export_dir, inputs)["output_0"]
    np.testing.assert_allclose(got, jax_outputs(apply_fn, trained, inputs["x"])["output_0"], atol=1e-5)
    _, untrained = jax_models.mlp(seed=0)
    assert not np.allclose(got, jax_outputs(apply_fn, untrained, inputs["x"])["output_0"], atol=1e-3)


def test_params_from_an_orbax_checkpoint(tmp_path):
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    from exportkit.errors import ModelSourceError

    apply_fn, trained = jax_models.mlp(seed=1)
    checkpoint = tmp_path / "checkpoint"
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(checkpoint, jax.tree_util.tree_map(jnp.asarray, trained))  # as training leaves them
    checkpointer.wait_until_finished()
    export_dir = tmp_path / "orbax"
    result = export(
        "model=jax",
        "model.build._target_=tests.jax_models.mlp_template",
        f"model.params_path={checkpoint}",
        MLP_SIG,
        f"export_dir={export_dir}",
        "verify.batch_sizes=[2]",
    )
    # the manifest pins the checkpoint directory's contents, as it pins a .npz file's
    from exportkit.artifact import manifest

    recorded = result.manifest["inputs"]["model.params_path"]["sha256"]
    assert recorded == manifest.sha256(checkpoint)
    inputs = random_inputs({"x": (6,)}, 2)
    np.testing.assert_allclose(
        serve(export_dir, inputs)["output_0"], jax_outputs(apply_fn, trained, inputs["x"])["output_0"], atol=1e-5
    )
    (checkpoint / "tampered").write_text("x")
    assert manifest.sha256(checkpoint) != recorded
    # Orbax would restore a (16, 2) kernel into a (8, 2) request without a word: exportkit says so
    with pytest.raises(ModelSourceError, match=r"'layers/0/bias' is float32\[16\] in the file but float32\[8\]"):
        export(
            "model=jax",
            "model.build._target_=tests.jax_models.mlp_template",
            "+model.build.units=8",
            f"model.params_path={checkpoint}",
            MLP_SIG,
            f"export_dir={tmp_path / 'bad'}",
        )
    with pytest.raises(ModelSourceError, match="not an Orbax checkpoint directory"):
        export(
            "model=jax",
            "model.build._target_=tests.jax_models.mlp_template",
            f"model.params_path={tmp_path}",
            MLP_SIG,
            f"export_dir={tmp_path / 'bad'}",
        )


def test_npz_that_does_not_match_the_params_is_named(tmp_path):
    from exportkit.errors import ConfigError, ModelSourceError

    _, params = jax_models.mlp()
    missing = tmp_path / "missing.npz"
    np.savez(missing, **{"layers/0/kernel": params["layers"][0]["kernel"], "extra": np.zeros(1)})
    with pytest.raises(ModelSourceError, match=r"missing \['layers/0/bias'.*unexpected \['extra'\]"):
        export(
            "model=jax",
            "model.build._target_=tests.jax_models.mlp",
            f"model.params_path={missing}",
            MLP_SIG,
            f"export_dir={tmp_path / 'a'}",
        )
    wrong = tmp_path / "wrong.npz"
    arrays = {
        "layers/0/kernel": np.zeros((6, 5), "float32"),
        "layers/0/bias": np.zeros(16, "float32"),
        "layers/1/kernel": np.zeros((16, 2), "float32"),
        "layers/1/bias": np.zeros(2, "float32"),
    }
    np.savez(wrong, **arrays)
    with pytest.raises(
        ModelSourceError, match=r"'layers/0/kernel' is float32\[6, 5\] in the file but float32\[6, 16\]"
    ):
        export(
            "model=jax",
            "model.build._target_=tests.jax_models.mlp",
            f"model.params_path={wrong}",
            MLP_SIG,
            f"export_dir={tmp_path / 'b'}",
        )
    with pytest.raises(ConfigError, match=r"expected a \.npz file"):
        export(
            "model=jax",
            "model.build._target_=tests.jax_models.mlp",
            "model.params_path=params.msgpack",
            MLP_SIG,
            f"export_dir={tmp_path / 'c'}",
        )
    assert not leftovers(tmp_path / "a") and not leftovers(tmp_path / "b")


@pytest.mark.slow
def test_flax_example_through_the_cli(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import flax_mlp
    finally:
        sys.path.remove(str(ROOT / "examples"))
    export_dir = tmp_path / "flax"
    run_cli(
        "model=jax",
        "model.build._target_=flax_mlp.build",
        "+signatures.serving_default={inputs: {features: {shape: [null, 8], dtype: float32}}}",
        f"export_dir={export_dir}",
        "verify.batch_sizes=[1,5]",
        cwd=tmp_path,
        check=True,
    )
    apply_fn, variables = flax_mlp.build()
    for batch in (1, 5):
        inputs = random_inputs({"features": (8,)}, batch, seed=batch)
        got = serve(export_dir, inputs)
        want = jax_outputs(apply_fn, variables, inputs["features"])
        assert set(got) == {"logits", "probabilities"}
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=1e-5, rtol=1e-5)


def test_missing_signature_is_a_clear_error(tmp_path):
    from exportkit.errors import SignatureError

    with pytest.raises(SignatureError, match=r"model=jax needs `signatures`.*\+signatures.serving_default="):
        export("model=jax", "model.build._target_=tests.jax_models.mlp", f"export_dir={tmp_path / 'm'}")
    done = run_cli("model=jax", "model.build._target_=tests.jax_models.mlp", f"export_dir={tmp_path / 'm'}")
    assert done.returncode == 1
    assert "exportkit: error: model=jax needs `signatures`" in done.stderr
    assert "Traceback" not in done.stderr
    assert not leftovers(tmp_path / "m")


def test_model_jax_alone_selects_the_jax_pipeline(tmp_path):
    from exportkit.errors import ConfigError

    stages = list(compose("model=jax", "export_dir=/tmp/x").pipeline.stages)
    assert stages == ["build", "jax2tf", "trace", "write_checkpoint", "write_graphs", "convert", "verify"]
    assert "jax2tf" not in compose("model=keras", "export_dir=/tmp/x").pipeline.stages
    # an explicit pipeline=keras wins over model=jax's choice, and says what is missing
    with pytest.raises(ConfigError, match="needs the jax2tf stage"):
        export(
            "model=jax",
            "pipeline=keras",
            "model.build._target_=tests.jax_models.mlp",
            MLP_SIG,
            f"export_dir={tmp_path / 'm'}",
        )
    with pytest.raises(
        ConfigError,
        match=r"jax2tf converts JAX models, but model._target_=exportkit.keras.source.KerasFactory gives a Sequential; use .*pipeline=keras",
    ):
        export(
            "model=keras",
            "pipeline=jax",
            "model.build._target_=tests.models.sequential",
            f"export_dir={tmp_path / 'k'}",
        )
    with pytest.raises(ConfigError, match=r"polymorphic_shapes names \['y'\].*inputs are \['x'\]"):
        export(
            "model=jax",
            "model.build._target_=tests.jax_models.mlp",
            MLP_SIG,
            f"export_dir={tmp_path / 'y'}",
            "pipeline.stages.jax2tf.polymorphic_shapes={y: '(batch, 6)'}",
        )
    assert not any(leftovers(tmp_path / d) for d in "mky")


def test_factory_that_returns_no_pair_is_named(tmp_path):
    from exportkit.errors import ModelSourceError

    with pytest.raises(ModelSourceError, match=r"tests.jax_models.not_a_pair.*returns \(apply_fn, params\)"):
        export("model=jax", "model.build._target_=tests.jax_models.not_a_pair", MLP_SIG, f"export_dir={tmp_path / 'm'}")


def test_gpu_target_lowers_for_cpu_and_cuda(tmp_path):
    export_dir = tmp_path / "gpu"
    result = export(
        "model=jax", "model.build._target_=tests.jax_models.mlp", MLP_SIG, "target=gpu", f"export_dir={export_dir}"
    )
    assert xla_call_modules(export_dir) == [(10, ["CPU", "CUDA"])]
    verify = [r for r in result.records if r.name == "verify"][0]
    import tensorflow as tf

    verification = result.manifest["verification"]
    assert verify.status == "ok" and verification["verified"] is True and verification["cases"] == 2
    if not tf.config.list_logical_devices("GPU"):  # verified on the CPU; the GPU recorded as not verified
        assert verification["devices_verified"] == ["/CPU:0"]
        assert verification["devices_not_verified"] == {"/GPU:0": "not present on this machine"}
    assert result.manifest["verify"]["serving_default"]["3"]["output_0"]["ok"] is True
    # the multi-platform module still runs here, on the CPU
    apply_fn, params = jax_models.mlp()
    inputs = random_inputs({"x": (6,)}, 2)
    np.testing.assert_allclose(
        serve(export_dir, inputs)["output_0"], jax_outputs(apply_fn, params, inputs["x"])["output_0"], atol=1e-5
    )


def test_platforms_list_and_bad_platform(tmp_path):
    from exportkit.errors import ConfigError

    export_dir = tmp_path / "tpu"
    export(
        "model=jax",
        "model.build._target_=tests.jax_models.mlp",
        MLP_SIG,
        "target.platforms=[tpu,cpu]",
        f"export_dir={export_dir}",
        "pipeline.stages.verify=null",
    )
    assert xla_call_modules(export_dir) == [(10, ["TPU", "CPU"])]
    with pytest.raises(ConfigError, match=r"target.platforms=\['gpu'\].*'gpu' is spelt 'cuda'"):
        export(
            "model=jax",
            "model.build._target_=tests.jax_models.mlp",
            MLP_SIG,
            "target.platforms=[gpu]",
            f"export_dir={tmp_path / 'bad'}",
        )


@pytest.mark.parametrize("with_gradient", [True, False])
def test_with_gradient(tmp_path, with_gradient):
    import jax
    import tensorflow as tf

    export_dir = tmp_path / "grad"
    export(
        "model=jax",
        "model.build._target_=tests.jax_models.mlp",
        MLP_SIG,
        f"export_dir={export_dir}",
        f"pipeline.stages.jax2tf.with_gradient={str(with_gradient).lower()}",
        "pipeline.stages.verify=null",
    )
    loaded = tf.saved_model.load(str(export_dir))  # keeps the variables alive
    signature = loaded.signatures["serving_default"]
    x = tf.constant(random_inputs({"x": (6,)}, 3)["x"])

    def gradient():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(signature(x=x)["output_0"])
        return tape.gradient(loss, x)

    apply_fn, params = jax_models.mlp()
    if with_gradient:  # JAX's VJP, saved with the SavedModel, through the reloaded signature
        want = jax.grad(lambda x: apply_fn(params, x).sum())(x.numpy())
        np.testing.assert_allclose(gradient().numpy(), np.asarray(want), atol=1e-5)
    else:
        with pytest.raises(LookupError, match="does not support gradients"):
            gradient()


def test_version_guard_fails_naming_both_versions(tmp_path, monkeypatch):
    from exportkit.errors import ConversionError
    from exportkit.jax import versions as jax_versions

    monkeypatch.setattr(jax_versions, "tf_maximum_version", lambda: 8)  # an older TF than JAX can target
    with pytest.raises(ConversionError) as error:
        export("model=jax", "model.build._target_=tests.jax_models.mlp", MLP_SIG, f"export_dir={tmp_path / 'm'}")
    message = str(error.value)
    for part in (
        "calling convention version 10",
        "emit versions 9 to 10",
        "supports versions up to 8",
        "upgrade tensorflow",
        "install a jax and jaxlib old enough to emit version 8",
    ):
        assert part in message, message
    assert not leftovers(tmp_path / "m")


def test_version_guard_picks_a_version_this_tensorflow_runs(tmp_path, monkeypatch):
    from exportkit.jax import versions as jax_versions

    monkeypatch.setattr(jax_versions, "tf_maximum_version", lambda: 9)  # JAX defaults to 10
    export_dir = tmp_path / "v9"
    result = export(
        "model=jax",
        "model.build._target_=tests.jax_models.mlp",
        MLP_SIG,
        f"export_dir={export_dir}",
        "verify.batch_sizes=[2]",
    )
    assert xla_call_modules(export_dir) == [(9, ["CPU"])]
    assert result.context.conversion.calling_convention_version == 9
    assert {r.name: r.status for r in result.records}["verify"] == "ok"
    import jax

    assert jax.config.jax_export_calling_convention_version == 10  # restored after the export
    assert jax.config.jax_include_full_tracebacks_in_locations is True


def test_sweep_mixes_keras_and_jax(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli(
        "-m",
        "+experiment=keras_mlp,jax_mlp",
        f"hydra.sweep.dir={sweep}",
        "verify.batch_sizes=[2]",
        cwd=tmp_path,
        check=True,
    )
    from exportkit.artifact import manifest

    kinds = {}
    for job in ("0", "1"):
        export_dir = sweep / job / "saved_model"
        source = manifest.read(export_dir).to_dict()["config"]["model"]["_target_"]
        kinds[source.split(".")[1]] = export_dir  # exportkit.keras.source.KerasFactory -> keras
        assert manifest.read(export_dir).to_dict()["verify"]["serving_default"]["2"]
    assert set(kinds) == {"keras", "jax"}
    inputs = random_inputs({"features": (8,)}, 2)
    for export_dir in kinds.values():  # both are the same kind of classifier: 8 -> 3 probabilities
        out = serve(export_dir, inputs)["probabilities"]
        assert out.shape == (2, 3)
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    from exportkit.example_jax_model import build_example_jax_model

    apply_fn, params = build_example_jax_model()
    np.testing.assert_allclose(
        serve(kinds["jax"], inputs)["probabilities"],
        jax_outputs(apply_fn, params, inputs["features"])["probabilities"],
        atol=1e-6,
    )
    assert list(manifest.read(kinds["jax"]).to_dict()["config"]["pipeline"]["stages"])[1] == "jax2tf"
    assert "jax2tf" not in manifest.read(kinds["keras"]).to_dict()["config"]["pipeline"]["stages"]


def test_variables_adopt_aligned_buffers_and_copy_the_rest():
    """Large params are held once: an aligned array or a CPU jax.Array becomes the variable's
    buffer without a copy; a misaligned array is copied (once) and left untouched."""
    import jax.numpy as jnp

    from exportkit.jax.host_buffers import aligned_empty
    from exportkit.jax.variables import to_variable

    aligned = aligned_empty((64, 64), "float32")
    aligned[...] = 1.0
    shared = to_variable(aligned, trainable=False, name="aligned")
    aligned[0, 0] = 5.0  # the test writes; exportkit never does
    assert shared.numpy()[0, 0] == 5.0
    for side in (64, 2048):  # under and over COPY_ONCE_FROM: TensorFlow's copy, one aligned copy
        raw = np.ones(side * side + 1, "float32")
        misaligned = raw[1:].reshape(side, side)  # 4 bytes past an allocation: never 64-byte aligned
        copied = to_variable(misaligned, trainable=False, name="misaligned")
        misaligned[0, 0] = 5.0
        assert copied.numpy()[0, 0] == 1.0 and copied.numpy()[1, 1] == 1.0
    np.testing.assert_array_equal(
        to_variable(jnp.arange(6.0).reshape(2, 3), False, "j").numpy(), np.arange(6.0).reshape(2, 3)
    )
    import ml_dtypes  # bfloat16: NumPy's DLPack cannot carry it, the plain copy still works

    bf16 = np.arange(4, dtype=ml_dtypes.bfloat16)
    assert to_variable(bf16, False, "b").numpy().tolist() == bf16.tolist()


def test_misaligned_numpy_params_give_the_same_bytes_verified_or_not(tmp_path):
    """Params TensorFlow cannot adopt are copied once into aligned buffers: verified or not, the
    export is byte for byte the same, and the checkpoint holds the source's values."""
    import tensorflow as tf

    import exportkit
    from bench.jax_models import wide

    apply_fn, params = wide(width=64, layers=3)
    spec = [tf.TensorSpec([None, 64], tf.float32, name="x")]
    sources = [jax_models.misaligned(p) for p in params]
    verified = exportkit.export_saved_model(
        (apply_fn, sources), tmp_path / "verified", verbose=False, input_signature=spec
    )
    written = exportkit.export_saved_model(
        (apply_fn, sources),
        tmp_path / "unverified",
        verbose=False,
        input_signature=spec,
        overrides=["pipeline.stages.verify=null"],
    )
    assert [r.status for r in verified.records] == ["ok"] * 6 and [r.status for r in written.records] == ["ok"] * 5
    reader = tf.train.load_checkpoint(str(tmp_path / "unverified" / "variables" / "variables"))
    keys = sorted(k for k in reader.get_variable_to_shape_map() if k.endswith("VARIABLE_VALUE"))
    for key, source in zip(keys, params):
        np.testing.assert_array_equal(reader.get_tensor(key), source)
    files = sorted(
        p.relative_to(tmp_path / "unverified")
        for p in (tmp_path / "unverified").rglob("*")
        if p.is_file() and p.parent.name != "assets.extra"
    )  # verify's files, the manifest
    assert {str(f) for f in files} >= {
        "saved_model.pb",
        "fingerprint.pb",
        "variables/variables.index",
        "variables/variables.data-00000-of-00001",
    }
    for name in files:
        assert (tmp_path / "verified" / name).read_bytes() == (tmp_path / "unverified" / name).read_bytes(), name


class HalveParams:
    """A user stage between trace and write_checkpoint that reads and changes the params' variables."""

    needs, adds, required = ("variables",), (), True

    def __call__(self, ctx):
        for variable in ctx.variables["params"]:
            variable.assign(variable * 0.5)
        return ctx


def test_a_user_stage_reading_the_variables_gets_their_values_and_its_changes_are_exported(tmp_path):
    import tensorflow as tf

    import exportkit
    from bench.jax_models import wide

    apply_fn, params = wide(width=64, layers=3)
    sources = [jax_models.misaligned(p) for p in params]
    spec = [tf.TensorSpec([None, 64], tf.float32, name="x")]
    exportkit.export_saved_model(
        (apply_fn, sources),
        tmp_path / "plain",
        verbose=False,
        input_signature=spec,
        overrides=["pipeline.stages.verify=null"],
    )
    # halve runs after trace and before the checkpoint: placed there by its node's `after`
    halved = exportkit.export_saved_model(
        (apply_fn, sources),
        tmp_path / "halved",
        verbose=False,
        input_signature=spec,
        overrides=[
            "pipeline.stages.verify=null",
            "+pipeline.stages.halve={_target_: tests.test_jax.HalveParams, after: trace}",
        ],
    )
    assert [r.name for r in halved.records] == [
        "build",
        "jax2tf",
        "trace",
        "halve",
        "write_checkpoint",
        "write_graphs",
    ]
    for name in ("plain", "halved"):
        reader = tf.train.load_checkpoint(str(tmp_path / name / "variables" / "variables"))
        keys = sorted(k for k in reader.get_variable_to_shape_map() if k.endswith("VARIABLE_VALUE"))
        assert len(keys) == 3
        for key, source in zip(keys, params):
            want = source * np.float32(0.5) if name == "halved" else source
            np.testing.assert_array_equal(reader.get_tensor(key), want)
    for source, original in zip(sources, params):  # the user's arrays are left as they were
        np.testing.assert_array_equal(source, original)


def test_npz_members_are_read_into_aligned_buffers(tmp_path):
    import zipfile

    from exportkit.jax.host_buffers import read_npz_member

    arrays = {
        "a/b": np.arange(12, dtype="float32").reshape(3, 4),
        "c": np.arange(5, dtype="int64"),
        "f": np.asfortranarray(np.ones((2, 3))),
    }
    for save in (np.savez, np.savez_compressed):
        path = tmp_path / f"{save.__name__}.npz"
        save(path, **arrays)
        with zipfile.ZipFile(path) as archive:
            for key in ("a/b", "c"):
                got = read_npz_member(archive, key)
                np.testing.assert_array_equal(got, arrays[key])
                assert got.dtype == arrays[key].dtype and got.ctypes.data % 64 == 0
            assert read_npz_member(archive, "f") is None  # Fortran order: left to np.load


def test_verify_compares_with_the_jax_function(tmp_path):
    from exportkit.errors import VerificationError

    export_dir = tmp_path / "tampered"
    with pytest.raises(VerificationError, match=r"serving_default/output_0 at batch 1: max abs error"):
        export(
            "model=jax",
            "model.build._target_=tests.jax_models.mlp",
            MLP_SIG,
            f"export_dir={export_dir}",
            "+pipeline.stages.tamper={_target_: tests.jax_models.TamperParams}",
            # verify moved after tamper: stages run in config order, and + appends
            "~pipeline.stages.verify",
            "+pipeline.stages.verify2={_target_: exportkit.stages.verify.Verify}",
        )
    assert not leftovers(export_dir)


def scaled(params, x):
    return x @ params["w"] * params["s"]


def test_a_0d_param_exports_verified_and_round_trips(tmp_path):
    import jax.numpy as jnp
    import tensorflow as tf

    import exportkit

    params = {"w": np.arange(8, dtype="float32").reshape(4, 2), "s": jnp.float32(0.5)}
    result = exportkit.export_saved_model(
        (scaled, params),
        tmp_path / "m",
        verbose=False,
        input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")],
    )
    assert result.manifest["verification"]["verified"] is True
    x = random_inputs({"x": (4,)}, 3)["x"]
    (got,) = serve(tmp_path / "m", {"x": x}).values()
    np.testing.assert_allclose(got, x @ np.arange(8, dtype="float32").reshape(4, 2) * 0.5, rtol=1e-6, atol=1e-5)


def test_a_signature_that_does_not_fit_the_params_is_one_line_naming_the_shapes(tmp_path):
    import tensorflow as tf

    import exportkit
    from exportkit.errors import ConversionError

    params = {"w": np.ones((4, 2), "float32"), "s": np.float32(0.5)}
    with pytest.raises(ConversionError) as raised:
        exportkit.export_saved_model(
            (scaled, params),
            tmp_path / "m",
            verbose=False,
            input_signature=[tf.TensorSpec([None, 5], tf.float32, name="x")],
        )
    message = str(raised.value)
    assert "\n" not in message and "got (5,) and (4,)" in message
    assert "inputs x: float32[?, 5]" in message and "['w']: [4, 2]" in message
    assert leftovers(tmp_path / "m") == []


def odd_keys(params, x):
    return x @ params["gewicht_ü"] + params["b ias[0]"]


def test_params_with_non_ascii_and_odd_keys_export_verified_and_the_same_bytes_twice(tmp_path):
    import tensorflow as tf

    import exportkit
    from exportkit.jax.variables import variable_name

    assert variable_name("gewicht_ü", 0) == "gewicht__" and variable_name("['b ias[0]']", 1) == "__b_ias_0___"
    params = {"gewicht_ü": np.arange(8, dtype="float32").reshape(4, 2), "b ias[0]": np.ones((2,), "float32")}
    spec = [tf.TensorSpec([None, 4], tf.float32, name="x")]
    first = exportkit.export_saved_model((odd_keys, params), tmp_path / "a", verbose=False, input_signature=spec)
    second = exportkit.export_saved_model((odd_keys, params), tmp_path / "b", verbose=False, input_signature=spec)
    assert first.manifest["verification"]["verified"] is True
    assert first.manifest["digest"] == second.manifest["digest"]
    assert first.manifest["conversion"]["renamed"] == {"b ias[0]": "b_ias_0_", "gewicht_ü": "gewicht__"}
    x = random_inputs({"x": (4,)}, 3)["x"]
    (got,) = serve(tmp_path / "a", {"x": x}).values()
    np.testing.assert_allclose(got, odd_keys(params, x), rtol=1e-6, atol=1e-5)
