"""serve/train/eval MetaGraphDefs of a compiled model, through the TF2 and TF1 loaders and
TensorFlow's own saved_model_cli, in both layouts: ``serving`` (the default: ``serve`` alone in
``saved_model.pb``, ``train``/``eval`` under ``graphs/<tag>/``) and ``tf1`` (TF 1.14's three
MetaGraphDefs in one ``saved_model.pb``). Each graph is loaded from ``files.graph_dir``."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import exportkit
from exportkit.artifact.files import GRAPHS, graph_dir, saved_model_file
from tests.conftest import export, run_cli, serve

COMPILED = ("model=keras", "model.build._target_=tests.models.sequential", "+model.build.compiled=true")
X = np.random.default_rng(0).standard_normal((8, 6)).astype("float32")
Y = np.random.default_rng(1).standard_normal((8, 2)).astype("float32")


def saved_model_files(export_dir):
    """The export's SavedModel protos: the root's, and ``graphs/<tag>/``'s (layout=serving)."""
    nested = sorted((Path(export_dir) / GRAPHS).glob("*")) if (Path(export_dir) / GRAPHS).is_dir() else []
    return [saved_model_file(d) for d in [Path(export_dir), *nested]]


def meta_graphs(export_dir):
    found = {}
    for path in saved_model_files(export_dir):
        proto = saved_model_pb2.SavedModel()
        if path.suffix == ".pb":
            proto.ParseFromString(path.read_bytes())
        else:
            from google.protobuf import text_format

            text_format.Parse(path.read_text(), proto)
        found.update({tuple(m.meta_info_def.tags): m for m in proto.meta_graphs})
    return found


# the tf1 layout's graphs run in `make test-slow` (tests/test_layout_consumers.py reads it in `make test`)
@pytest.fixture(scope="module", params=["serving", pytest.param("tf1", marks=pytest.mark.slow)])
def compiled_export(tmp_path_factory, request):
    export_dir = tmp_path_factory.mktemp("compiled") / "model"
    result = export(*COMPILED, f"export_dir={export_dir}", f"layout={request.param}")
    return export_dir, result


def test_three_tagged_graphs_with_their_signatures(compiled_export):
    export_dir, _ = compiled_export
    graphs = meta_graphs(export_dir)
    assert set(graphs) == {("serve",), ("train",), ("eval",)}
    expected = {
        "serve": ("serving_default", "tensorflow/serving/predict"),
        "train": ("train", "tensorflow/supervised/training"),
        "eval": ("eval", "tensorflow/supervised/eval"),
    }
    for (tag,), graph in graphs.items():
        key, method = expected[tag]
        assert [k for k in graph.signature_def if not k.startswith("__")] == [key]
        assert graph.signature_def[key].method_name == method
    train = graphs[("train",)].signature_def["train"]
    assert set(train.inputs) == {"x", "out_target"}
    assert set(train.outputs) == {"loss", "predictions/out", "metrics/mae/value"}
    assert set(graphs[("eval",)].signature_def["eval"].outputs) == set(train.outputs)


def test_each_graph_carries_only_its_own_functions(compiled_export):
    export_dir, _ = compiled_export
    graphs = meta_graphs(export_dir)

    def ops(graph):  # of the graph's own functions, not TF's checkpoint save/restore helpers
        return {
            node.op
            for f in graph.graph_def.library.function
            for node in f.node_def
            if "_traced_" not in f.signature.name
        }

    assert not any("Apply" in op or "Assign" in op for op in ops(graphs[("serve",)]))
    assert any(
        "AssignSubVariableOp" == op or "ResourceApplyGradientDescent" == op or "AssignVariableOp" == op
        for op in ops(graphs[("train",)])
    )
    names = {tag: {f.signature.name for f in g.graph_def.library.function} for (tag,), g in graphs.items()}
    assert not any("train" in n for n in names["serve"] | names["eval"])
    saved_model = sum(path.stat().st_size for path in saved_model_files(export_dir))
    single = sum(len(saved_model_pb2.SavedModel(meta_graphs=[g]).SerializeToString()) for g in graphs.values())
    assert saved_model <= single + 64  # one proto, three graphs: no shared copies, no blow-up


def test_train_lowers_the_loss_and_eval_changes_no_weight(compiled_export):
    export_dir, _ = compiled_export
    train = tf.saved_model.load(str(graph_dir(export_dir, "train")), tags=["train"])
    losses = [float(train.signatures["train"](x=X, out_target=Y)["loss"]) for _ in range(5)]
    assert all(b < a for a, b in zip(losses, losses[1:]))
    evaluate = tf.saved_model.load(str(graph_dir(export_dir, "eval")), tags=["eval"]).signatures["eval"]
    assert len({float(evaluate(x=X, out_target=Y)["loss"]) for _ in range(3)}) == 1


def _weights_after(export_dir, tag, key, steps, prefix):
    """Run a graph ``steps`` times in a TF1 session, then save its variables with the graph's own
    saver and return the model weights it holds."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, [tag], str(graph_dir(export_dir, tag)))
        sig = meta.signature_def[key]
        for _ in range(steps):
            sess.run(sig.outputs["loss"].name, {sig.inputs["x"].name: X, sig.inputs["out_target"].name: Y})
        sess.run(meta.saver_def.save_tensor_name, {meta.saver_def.filename_tensor_name: str(prefix)})
    reader = tf.train.load_checkpoint(str(prefix))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith("model_variables/")}


def test_eval_changes_no_weight_and_train_does(compiled_export, tmp_path):
    export_dir, _ = compiled_export
    exported = tf.train.load_checkpoint(str(export_dir / "variables" / "variables"))
    after_eval = _weights_after(export_dir, "eval", "eval", 3, tmp_path / "eval")
    after_train = _weights_after(export_dir, "train", "train", 3, tmp_path / "train")
    assert after_eval and set(after_eval) == set(after_train)
    for key, value in after_eval.items():
        np.testing.assert_array_equal(value, exported.get_tensor(key))
    assert any(not np.array_equal(v, exported.get_tensor(k)) for k, v in after_train.items())


def test_serve_graph_matches_the_source(compiled_export):
    export_dir, result = compiled_export
    np.testing.assert_allclose(serve(export_dir, {"x": X})["out"], result.context.model.instance(X).numpy(), atol=1e-6)


@pytest.mark.parametrize("tag", ["serve", "train", "eval"])
def test_tf1_loader_loads_every_graph_and_train_trains(compiled_export, tag):
    export_dir, result = compiled_export
    key = {"serve": "serving_default"}.get(tag, tag)
    want = result.context.model.instance(X).numpy()
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, [tag], str(graph_dir(export_dir, tag)))
        sig = meta.signature_def[key]
        feed = {sig.inputs["x"].name: X}
        if tag == "serve":
            got = sess.run(sig.outputs["out"].name, feed)
        else:
            feed[sig.inputs["out_target"].name] = Y
            losses = [float(sess.run(sig.outputs["loss"].name, feed)) for _ in range(4)]
    if tag == "serve":
        np.testing.assert_allclose(got, want, atol=1e-6)
    elif tag == "train":
        assert all(b < a for a, b in zip(losses, losses[1:]))
    else:
        assert len(set(losses)) == 1


def test_checkpoint_holds_optimizer_and_metric_state(compiled_export):
    export_dir, result = compiled_export
    keys = tf.train.list_variables(str(export_dir / "variables" / "variables"))
    groups = {name.split("/")[0] for name, _ in keys if name.endswith("VARIABLE_VALUE")}
    assert groups == {"model_variables", "optimizer_variables", "metrics_variables"}
    model = result.context.model.instance
    assert sum(k.startswith("optimizer_variables/") for k, _ in keys) == len(model.optimizer.variables)


@pytest.mark.parametrize(
    "overrides,tags",
    [
        ((), {"serve", "train", "eval"}),
        (("serving_only=true",), {"serve"}),
    ],
)
@pytest.mark.parametrize("as_text", [False, True])
@pytest.mark.parametrize("layout", ["serving", "tf1"])
def test_serving_only_and_as_text_in_every_mode(tmp_path, overrides, tags, as_text, layout):
    export_dir = tmp_path / "m"
    result = export(
        *COMPILED,
        f"export_dir={export_dir}",
        f"as_text={as_text}",
        *overrides,
        "pipeline.stages.verify=null",
        f"layout={layout}",
    )
    for path in saved_model_files(export_dir):
        assert path.name == ("saved_model.pbtxt" if as_text else "saved_model.pb")
    assert {t for (t,) in meta_graphs(export_dir)} == tags
    for tag in tags:
        tf.saved_model.load(str(graph_dir(export_dir, tag)), tags=[tag])
    np.testing.assert_allclose(serve(export_dir, {"x": X})["out"], result.context.model.instance(X).numpy(), atol=1e-6)


def test_uncompiled_model_gets_serve_only(export_dir):
    export(
        "model=keras",
        "model.build._target_=tests.models.sequential",
        f"export_dir={export_dir}",
        "pipeline.stages.verify=null",
    )
    assert set(meta_graphs(export_dir)) == {("serve",)}


def test_saved_model_cli_show_and_run_on_every_tag_set(compiled_export, tmp_path):
    export_dir, result = compiled_export
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    stdout = ""
    for directory in sorted({graph_dir(export_dir, tag) for tag in ("serve", "train", "eval")}):
        shown = subprocess.run(
            [*cli, "show", "--dir", str(directory), "--all"], capture_output=True, text=True, timeout=300
        )
        assert shown.returncode == 0, shown.stderr
        stdout += shown.stdout
    for tag, key in (("serve", "serving_default"), ("train", "train"), ("eval", "eval")):
        assert f"MetaGraphDef with tag-set: '{tag}'" in stdout and f"signature_def['{key}']" in stdout
    for tag, key in (("serve", "serving_default"), ("train", "train"), ("eval", "eval")):
        outdir = tmp_path / tag
        np.save(tmp_path / "x.npy", np.ones((2, 6), "float32"))
        np.save(tmp_path / "t.npy", np.zeros((2, 2), "float32"))
        inputs = f"x={tmp_path / 'x.npy'}" + (f";out_target={tmp_path / 't.npy'}" if tag != "serve" else "")
        # --outdir only for serve: it writes a file per output key, and TF 1.14's keys
        # (metrics/mae/value) contain '/'; without it the results are printed.
        extra = ["--outdir", str(outdir)] if tag == "serve" else []
        done = subprocess.run(
            [
                *cli,
                "run",
                "--dir",
                str(graph_dir(export_dir, tag)),
                "--tag_set",
                tag,
                "--signature_def",
                key,
                "--inputs",
                inputs,
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        if tag == "serve":
            got = np.load(outdir / "out.npy")
            np.testing.assert_allclose(
                got, result.context.model.instance(np.ones((2, 6), "float32")).numpy(), atol=1e-6
            )
        else:
            for output in ("loss", "predictions/out", "metrics/mae/value"):
                assert f"Result for output key {output}:" in done.stdout


@pytest.mark.slow
def test_cli_compiled_factory_and_compile_node(tmp_path):
    compiled = tmp_path / "compiled"
    run_cli(*COMPILED, f"export_dir={compiled}", f"hydra.run.dir={tmp_path}/r1", check=True)
    assert {t for (t,) in meta_graphs(compiled)} == {"serve", "train", "eval"}
    node = tmp_path / "node"
    run_cli(
        "model=keras",
        "model.build._target_=tests.models.sequential",
        f"export_dir={node}",
        "compile={optimizer: {_target_: keras.optimizers.Adam, learning_rate: 0.01}, loss: mse, metrics: [mae]}",
        "as_text=true",
        f"hydra.run.dir={tmp_path}/r2",
        check=True,
    )
    assert {t for (t,) in meta_graphs(node)} == {"serve", "train", "eval"}
    train = tf.saved_model.load(str(graph_dir(node, "train")), tags=["train"]).signatures["train"]
    assert "metrics/mae/value" in train(x=X, out_target=Y)
    loaded = exportkit.load_from_saved_model(node)
    assert type(loaded.optimizer).__name__ == "Adam"
    assert abs(float(loaded.optimizer.learning_rate.numpy()) - 0.01) < 1e-7
    serving = tmp_path / "serving"
    run_cli(*COMPILED, "serving_only=true", f"export_dir={serving}", f"hydra.run.dir={tmp_path}/r3", check=True)
    assert set(meta_graphs(serving)) == {("serve",)}
