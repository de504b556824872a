"""The consumer matrix: models from libraries nobody here wrote (tests/consumer_models.py), read by
the tools people use after exporting, each cell compared numerically with the source model.

Every model is exported once per module, through the CLI's in-process path, and shared by every
consumer. Control rule: where a consumer fails on exportkit's export, the same consumer runs on
the same model's own library export (Keras' ``model.export(path)``; for a JAX model, jax2tf +
``tf.saved_model.save``, as jax2tf documents). A cell may fail only where that control fails
too: that is the consumer's own limit, and the cell is skipped with the control's failure as
its reason. Otherwise it fails. ``load_from_saved_model`` reads no library export: its control is
Keras' own rebuild of the model (``model.save`` + ``keras.saving.load_model``).

Keras models on the JAX backend (``Case.keras_backend == "jax"``) are built, run and exported by
a fresh process with ``KERAS_BACKEND=jax`` (the backend is chosen when Keras is imported): the
Python API in a script that also saves the source's outputs and makes Keras' own export, or
``python -m exportkit`` beside it; this process (the TensorFlow backend) reads the exports. A
stateful model is compared on each reader's first call after a fresh load, with the source's first
call from the exported state. Outputs narrower than float32 (mixed precision) are compared in
float64 within 4 units in their last place, relative to the outputs' scale.

Most cells are marked ``consumers`` (``make test-consumers``); a small subset runs in ``make
test``. With ``EXPORTKIT_MATRIX_OUT=path.md`` set, the outcome table (model x consumer: ok /
consumer limit / FAIL) and each failure's first line are written there when the module ends
(``bench/consumer_matrix.py`` runs the whole matrix and prints it).
"""

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import pytest

from tests.conftest import ROOT, export
from tests.consumer_models import CASES, REGISTRY, Case, rnn_states

RTOL = 1e-4  # relative to the outputs' scale: max|got - want| <= RTOL * max|want|
CONVERTER_RTOL = 1e-3  # TFLite and ONNX runtimes fuse and reorder float ops
TINY = 1e-30
BATCH = 4  # neither of verify's default batch sizes
BIN = Path(sys.executable).parent
SUBPROCESS_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")

OK, LIMIT, FAIL, NA = "ok", "consumer limit", "FAIL", "n/a"
NO_EXPORT = "no export to read (even with verify off):"
OUTCOMES: Dict[tuple, tuple] = {}  # (model, consumer) -> (outcome, first line of the reason)


def first_line(error: BaseException) -> str:
    """The error's first line; for TF's and Keras' wrappers ("in user code:", "Exception
    encountered when calling X.call()."), the line that says what went wrong."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # Keras' bold
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [type(error).__name__]
    line = lines[0]
    if line.startswith("Exception encountered when calling") and len(lines) > 1:
        line = f"{line} {lines[1]}"
    elif line == "in user code:":
        line = f"in user code: {lines[-1]}"
    return f"{type(error).__name__}: {line[:300]}"


# --- the source model, its exports, its reference outputs --------------------------------------


@dataclass
class Subject:
    """One model of the matrix: the source, exportkit's export of it, and what it computes."""

    case: Case
    work: Path
    source: Any = None  # the keras.Model, or (apply_fn, params)
    export_dir: Optional[Path] = None  # exportkit's export (verified when verify_error is None)
    export_error: Optional[str] = None  # why there is no export at all
    verify_error: Optional[str] = None  # why the export with verify on failed
    inputs: Dict[str, np.ndarray] = field(default_factory=dict)
    want: Dict[str, np.ndarray] = field(default_factory=dict)
    _control: Any = None

    @property
    def control_label(self) -> str:
        if self.case.keras_backend == "jax":
            return "Keras' model.export() (JAX backend)"
        return "Keras' model.export()" if self.case.source == "keras" else "jax2tf + tf.saved_model.save"

    def control_dir(self) -> Path:
        """The model's own library export, made once on first need (a cell failed); on the JAX
        backend, made by the exporting process beside exportkit's export."""
        if self._control is None:
            path = self.work / "control"
            try:
                if self.case.source == "keras":
                    self.source.export(str(path), verbose=False)
                else:
                    jax2tf_export(self.case, *self.source, path)
                self._control = path
            except Exception as e:  # noqa: BLE001 - the control's own failure is the cell's answer
                self._control = e
        if isinstance(self._control, Exception):
            raise RuntimeError(f"the control export failed: {first_line(self._control)}") from self._control
        return self._control

    def structured(self, inputs):
        """The inputs as the model itself takes them (one tensor, a list, a dict), as a user
        passes them to a layer standing in for the model."""
        import keras

        from exportkit.keras.calls import input_name

        tensors = tf_inputs(inputs)
        if self.case.source == "jax" or self.source is None:  # JAX; Keras on JAX (in its process)
            return Case.tensors(inputs)
        return keras.tree.map_structure(lambda t: tensors[input_name(t)], self.source.input)

    def call_source(self, inputs):
        if self.case.source == "jax":
            apply_fn, params = self.source
            return numpy_outputs(apply_fn(params, *inputs.values()))
        return numpy_outputs(self.source(self.structured(inputs), training=False))


def numpy_outputs(outputs) -> Dict[str, np.ndarray]:
    """A dict of outputs as numpy; one unnamed output is keyed ``output``."""
    if isinstance(outputs, dict):
        return {k: np.asarray(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return {f"output_{i}": np.asarray(v) for i, v in enumerate(outputs)}
    return {"output": np.asarray(outputs)}


def jax2tf_export(case: Case, apply_fn, params, path: Path) -> None:
    """A JAX model's own SavedModel, the way jax2tf's documentation exports one: the params' leaves
    (any pytree: a dict, an Equinox module) as variables, passed to the converted function."""
    import jax
    import tensorflow as tf
    from jax.experimental import jax2tf

    ((name, shape),) = case.jax_shapes.items()
    poly = "(b, " + ", ".join(str(d) for d in shape[1:]) + ")"
    leaves, treedef = jax.tree_util.tree_flatten(params)
    module = tf.Module()
    module.params = [tf.Variable(np.asarray(a), trainable=False) for a in leaves]
    converted = jax2tf.convert(
        lambda leaves, x: apply_fn(jax.tree_util.tree_unflatten(treedef, leaves), x),
        polymorphic_shapes=[None, poly],
        with_gradient=False,
    )

    @tf.function(autograph=False, input_signature=[tf.TensorSpec(shape, tf.float32, name=name)])
    def serve(x):
        return converted(module.params, x)

    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve.get_concrete_function()})


def make_subject(case: Case, work: Path) -> Subject:
    """Export with verify on; if that fails, again with verify off so the consumers still get an
    export to read (the ``export`` column records the verified export's failure)."""
    if case.keras_backend == "jax":
        return keras_jax_subject(case, work)
    subject = Subject(case, work)
    base = (f"model={case.source}", f"model.build._target_={case.target}", *case.overrides)
    for attempt, extra in enumerate([(), ("pipeline.stages.verify=null",)]):
        export_dir = work / f"exportkit{attempt}"
        try:
            result = export(*base, f"export_dir={export_dir}", *extra)
        except Exception as e:  # noqa: BLE001 - told in the cell
            if attempt == 0:
                subject.verify_error = first_line(e)
            else:
                subject.export_error = first_line(e)
            continue
        subject.export_dir, subject.source = export_dir, result.context.model.instance
        break
    if case.source == "jax":  # the JAX function and params, straight from the factory (deterministic)
        subject.source = REGISTRY[case.name]()
    elif subject.source is None:  # no export: the source for the control, from the same factory
        import keras

        keras.utils.set_random_seed(0)
        subject.source = REGISTRY[case.name]()
    subject.inputs = case.inputs(BATCH, seed=7)
    states = [] if case.source == "jax" else rnn_states(subject.source)
    exported = [v.numpy() for v in states]
    subject.want = subject.call_source(subject.inputs)  # a stateful source's first call from the exported state
    for variable, value in zip(states, exported):  # back to the exported state (for the control)
        variable.assign(value)
    return subject


KERAS_JAX_ENV = {"KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
KERAS_JAX_SCRIPT = r"""
import importlib, json, sys, traceback
from pathlib import Path

import keras
import numpy as np

import exportkit

assert keras.backend.backend() == "jax", keras.backend.backend()
target, via, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
module, _, name = target.rpartition(".")
model = getattr(importlib.import_module(module), name)()
with np.load(work / "inputs.npz") as data:
    inputs = {k: data[k] for k in data.files}
outputs = model(inputs if len(inputs) > 1 else next(iter(inputs.values())), training=False)
if not isinstance(outputs, dict):
    outputs = {"output": outputs}
np.savez(work / "want.npz", **{k: np.asarray(v) for k, v in outputs.items()})


def first_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {(lines or [''])[0][:300]}"


result = {}
try:
    model.export(str(work / "control"), verbose=False)
except Exception as e:
    result["control_error"] = first_line(e)
if via == "api":
    for attempt, overrides in enumerate([[], ["pipeline.stages.verify=null"]]):
        try:
            exportkit.export_saved_model(model, work / f"exportkit{attempt}", overrides=overrides, verbose=False)
        except Exception as e:
            result["verify_error" if attempt == 0 else "export_error"] = first_line(e)
            traceback.print_exc()
            continue
        result["export_dir"] = str(work / f"exportkit{attempt}")
        break
(work / "result.json").write_text(json.dumps(result))
"""


def keras_jax_subject(case: Case, work: Path) -> Subject:
    """A Keras model on the JAX backend: a fresh process with KERAS_BACKEND=jax builds it, saves its
    outputs on this subject's inputs, makes Keras' own export and (``via="api"``) exportkit's;
    for ``via="cli"``, ``python -m exportkit`` exports it beside that process. Either export is
    retried with verify off if it fails (as ``make_subject`` does)."""
    subject = Subject(case, work)
    subject.inputs = case.inputs(BATCH, seed=7)
    np.savez(work / "inputs.npz", **subject.inputs)
    env = dict(os.environ, PYTHONPATH=str(ROOT), **KERAS_JAX_ENV)
    env.pop("HYDRA_FULL_ERROR", None)
    run = dict(cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    script = subprocess.Popen([sys.executable, "-c", KERAS_JAX_SCRIPT, case.target, case.via, str(work)], **run)
    if case.via == "cli":
        cli = [sys.executable, "-m", "exportkit", "model=keras", f"model.build._target_={case.target}", *case.overrides]
        for attempt, extra in enumerate([(), ("pipeline.stages.verify=null",)]):
            export_dir = work / f"exportkit{attempt}"
            done = subprocess.run(
                [*cli, f"export_dir={export_dir}", f"hydra.run.dir={work / f'run{attempt}'}", *extra],
                timeout=600,
                **run,
            )
            if done.returncode == 0:
                subject.export_dir = export_dir
                break
            errors = [line for line in done.stderr.splitlines() if line.startswith("exportkit: error:")]
            reason = (errors or [line for line in done.stderr.splitlines() if line.strip()] or [""])[-1]
            setattr(
                subject,
                "verify_error" if attempt == 0 else "export_error",
                f"the CLI exited {done.returncode}: {reason}",
            )
    stdout, stderr = script.communicate(timeout=600)
    if script.returncode != 0:
        raise RuntimeError(f"the KERAS_BACKEND=jax process failed:\n{stdout[-2000:]}\n{stderr[-4000:]}")
    result = json.loads((work / "result.json").read_text())
    if case.via == "api":
        subject.verify_error, subject.export_error = result.get("verify_error"), result.get("export_error")
        subject.export_dir = Path(result["export_dir"]) if "export_dir" in result else None
    subject._control = RuntimeError(result["control_error"]) if "control_error" in result else work / "control"
    with np.load(work / "want.npz") as data:
        subject.want = {k: data[k] for k in data.files}
    return subject


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    """Exported on first use, once per module, shared by every consumer's cell."""
    cache: Dict[str, Subject] = {}

    def get(name: str) -> Subject:
        if name not in cache:
            cache[name] = make_subject(CASES[name], tmp_path_factory.mktemp(name))
        return cache[name]

    yield get
    if os.environ.get("EXPORTKIT_MATRIX_OUT"):
        Path(os.environ["EXPORTKIT_MATRIX_OUT"]).write_text(matrix_markdown(OUTCOMES))


# --- comparing ---------------------------------------------------------------------------------


def narrow_float_tolerance(dtype: np.dtype) -> float:
    """4 units in the last place of a float narrower than float32 (bfloat16, float16: NumPy
    knows the second, ml_dtypes the first), which one rounding more or less may cost; else 0."""
    if dtype.kind in "fV" and dtype.itemsize < 4 and dtype.names is None:
        import ml_dtypes

        return float(4 * ml_dtypes.finfo(dtype).eps)
    return 0.0


def assert_matches(got: Dict[str, np.ndarray], want: Dict[str, np.ndarray], rtol: float = RTOL) -> None:
    """Same outputs (by name; one output against one output), same shapes, and
    ``max|got - want| <= rtol * max|want|`` per output, computed in float64, with ``rtol`` at
    least a narrow float's 4 units in the last place (exact for non-float outputs)."""
    got = {k.split(":")[0]: np.asarray(v) for k, v in got.items()}
    if len(got) == 1 and len(want) == 1:
        pairs = [(next(iter(want)), next(iter(got.values())), next(iter(want.values())))]
    else:
        assert set(got) == set(want), f"outputs {sorted(got)} != the source model's {sorted(want)}"
        pairs = [(k, got[k], want[k]) for k in want]
    for name, g, w in pairs:
        assert g.shape == w.shape, f"{name}: shape {g.shape} != the source model's {w.shape}"
        narrow = narrow_float_tolerance(w.dtype)
        if not (np.issubdtype(w.dtype, np.floating) or narrow):
            np.testing.assert_array_equal(g, w, err_msg=name)
            continue
        if g.dtype.kind == "V" and g.dtype.names is None and g.dtype.itemsize == w.dtype.itemsize:
            g = g.view(w.dtype)  # bfloat16 through a .npy file: its bytes, a dtype NumPy cannot name
        g, w, tol = g.astype("float64"), w.astype("float64"), max(rtol, narrow)
        assert np.all(np.isfinite(g)), f"{name}: non-finite values"
        err, scale = float(np.max(np.abs(g - w))), float(np.max(np.abs(w)))
        assert err <= tol * max(scale, TINY), f"{name}: max abs error {err:.3g} > {tol:.3g} x output scale {scale:.3g}"


def tf_inputs(inputs):
    import tensorflow as tf

    return {k: tf.constant(v) for k, v in inputs.items()}


# --- the consumers: each reads one export and raises unless it matches the source model --------


def tf2_load(tags=None):
    def consume(path: Path, s: Subject) -> None:
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path), tags=tags)
        outputs = loaded.signatures["serving_default"](**tf_inputs(s.inputs))
        assert_matches({k: v.numpy() for k, v in outputs.items()}, s.want)

    return consume


def tf1_session(path: Path, s: Subject) -> None:
    """TensorFlow Serving's way: the TF1 loader and the serving_default SignatureDef's tensors."""
    import tensorflow as tf

    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
        meta_graph = tf.compat.v1.saved_model.load(sess, ["serve"], str(path))
        signature = meta_graph.signature_def["serving_default"]
        assert set(signature.inputs) == set(s.inputs), f"inputs {sorted(signature.inputs)} != {sorted(s.inputs)}"
        feed = {signature.inputs[k].name: v for k, v in s.inputs.items()}
        got = sess.run({k: t.name for k, t in signature.outputs.items()}, feed_dict=feed)
    assert_matches(got, s.want)


def with_imports(command, imports, main: str):
    """``command`` (a console script or ``python -m module``); where the export needs op
    libraries (``Case.imports``: tensorflow_text for keras-hub's tokenizers), the same tool run by
    a Python that imports them first, as a user of such a model must (``main`` calls the tool)."""
    if not imports:
        return command
    args = command[3:] if command[1] == "-m" else command[1:]
    code = f"import sys; import {', '.join(imports)}; sys.argv[0] = {command[0]!r}; {main}"
    return [sys.executable, "-c", code, *args]


def saved_model_cli(*args, imports=()) -> str:
    command = with_imports(
        [str(BIN / "saved_model_cli"), *map(str, args)],
        imports,
        "from tensorflow.python.tools.saved_model_cli import main; sys.exit(main())",
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"saved_model_cli {args[0]} exited {done.returncode}: {lines[-1] if lines else ''}")
    return done.stdout


DTYPES = {"DT_FLOAT": "float32", "DT_INT32": "int32", "DT_INT64": "int64", "DT_STRING": "string"}


def cli_show(path: Path, s: Subject) -> None:
    """``saved_model_cli show --all``: the serve tag-set's serving_default lists the model's inputs
    (names, dtypes, ranks) and outputs (names, ranks)."""
    text = saved_model_cli("show", "--dir", path, "--all", imports=s.case.imports)
    block = re.search(
        r"MetaGraphDef with tag-set: 'serve' .*?signature_def\['serving_default'\]:(.*?)Method name", text, re.S
    )
    assert block, "no serving_default under the 'serve' tag-set in `saved_model_cli show --all`"
    found = {
        kind: {
            name: (dtype, shape)
            for name, dtype, shape in re.findall(
                kind + r"\['([^']+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\)|unknown_rank)", block.group(1)
            )
        }
        for kind in ("inputs", "outputs")
    }
    for name, value in s.inputs.items():
        assert name in found["inputs"], f"input {name!r} not among {sorted(found['inputs'])}"
        dtype, shape = found["inputs"][name]
        want_dtype = "string" if value.dtype.kind in "SUO" else str(value.dtype)
        assert DTYPES.get(dtype) == want_dtype, f"input {name}: {dtype}, the model takes {want_dtype}"
        rank = len([d for d in shape.strip("()").split(",") if d.strip()])
        assert shape == "unknown_rank" or rank == value.ndim, f"input {name}: shape {shape}, rank {value.ndim} given"
    assert set(found["inputs"]) == set(s.inputs), f"inputs {sorted(found['inputs'])} != {sorted(s.inputs)}"
    outputs = found["outputs"]
    if not (len(outputs) == 1 == len(s.want)):
        assert set(outputs) == set(s.want), f"outputs {sorted(outputs)} != the source model's {sorted(s.want)}"


def cli_run(path: Path, s: Subject) -> None:
    """``saved_model_cli run --inputs k=file.npy;... --outdir``, outputs compared."""
    tmp = s.work / f"cli_run_{abs(hash(str(path)))}"
    tmp.mkdir(exist_ok=True)
    specs = []
    for name, value in s.inputs.items():
        np.save(tmp / f"{name}.npy", value)
        specs.append(f"{name}={tmp / (name + '.npy')}")
    out = tmp / "out"
    saved_model_cli(
        "run",
        "--dir",
        path,
        "--tag_set",
        "serve",
        "--signature_def",
        "serving_default",
        "--inputs",
        ";".join(specs),
        "--outdir",
        out,
        "--overwrite",
        imports=s.case.imports,
    )
    assert_matches({p.stem: np.load(p, allow_pickle=True) for p in out.glob("*.npy")}, s.want)


def tfsm_layer(endpoint=None):
    """``keras.layers.TFSMLayer``, as Keras documents it; it passes what it is called with
    positionally to the endpoint. The default endpoint (``serve``) is called as the model is (one
    tensor, a list or a dict); a signature (``serving_default``) with the one tensor, or the dict
    of named inputs."""

    def consume(path: Path, s: Subject) -> None:
        import keras

        layer = keras.layers.TFSMLayer(str(path), **({"call_endpoint": endpoint} if endpoint else {}))
        inputs = Case.tensors(s.inputs) if endpoint else s.structured(s.inputs)
        assert_matches(numpy_outputs(layer(inputs)), s.want)

    return consume


def tflite(path: Path, s: Subject) -> None:
    """The TFLite converter (default ops) and interpreter's serving_default signature runner."""
    import tensorflow as tf

    content = tf.lite.TFLiteConverter.from_saved_model(str(path), signature_keys=["serving_default"]).convert()
    runner = tf.lite.Interpreter(model_content=content).get_signature_runner("serving_default")
    assert_matches(runner(**s.inputs), s.want, rtol=CONVERTER_RTOL)


def onnx(path: Path, s: Subject) -> None:
    """``python -m tf2onnx.convert --saved-model``, then an onnxruntime session."""
    import onnxruntime

    out = s.work / f"model_{abs(hash(str(path)))}.onnx"
    command = with_imports(
        [
            sys.executable,
            "-m",
            "tf2onnx.convert",
            "--saved-model",
            str(path),
            "--tag",
            "serve",
            "--signature_def",
            "serving_default",
            "--opset",
            "17",
            "--output",
            str(out),
        ],
        s.case.imports,
        "import runpy; runpy.run_module('tf2onnx.convert', run_name='__main__', alter_sys=True)",
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=SUBPROCESS_ENV)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "Error" in line or "error" in line]
        raise RuntimeError(f"tf2onnx exited {done.returncode}: {(errors or done.stderr.splitlines() or [''])[-1]}")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feed = {}
    for node in session.get_inputs():
        value = s.inputs[node.name.split(":")[0]]
        feed[node.name] = value.astype(str).astype(object) if value.dtype.kind in "SO" else value
    names = [node.name for node in session.get_outputs()]
    assert_matches(dict(zip(names, session.run(names, feed))), s.want, rtol=CONVERTER_RTOL)


def load_from_saved_model(path: Path, s: Subject) -> None:
    """exportkit's own loader: the same outputs; for a compiled model the same loss, and one
    ``fit`` step runs and changes it."""
    import exportkit

    loaded = exportkit.load_from_saved_model(str(path))
    assert_matches(numpy_outputs(loaded(s.structured(s.inputs), training=False)), s.want)
    if not s.case.compiled:
        return
    x, y = {k: v for k, v in s.inputs.items()}, s.case.targets(BATCH, seed=7)
    x = next(iter(x.values())) if len(x) == 1 else x
    want_loss = s.source.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)["loss"]
    before = loaded.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)["loss"]
    assert abs(before - want_loss) <= RTOL * max(abs(want_loss), TINY), f"loss {before} != the source's {want_loss}"
    history = loaded.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    after = loaded.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)["loss"]
    assert np.isfinite(history.history["loss"][0]) and np.isfinite(after)
    assert abs(after - before) > 1e-6 * abs(before), f"one fit step left the loss at {before}"


CONSUMERS: Dict[str, Callable[[Path, Subject], None]] = {
    "tf2_load": tf2_load(),
    "tf2_load_serve": tf2_load(["serve"]),
    "tf1_session": tf1_session,
    "cli_show": cli_show,
    "cli_run": cli_run,
    "tfsm_layer": tfsm_layer(),
    "tfsm_serving_default": tfsm_layer("serving_default"),
    "tflite": tflite,
    "onnx": onnx,
    "load_from_saved_model": load_from_saved_model,
}


def keras_rebuild(s: Subject) -> None:
    """The control of ``load_from_saved_model``, which rebuilds the model from its Keras config:
    Keras' own rebuild, ``model.save("m.keras")`` then ``keras.saving.load_model``, compared the
    same way. Where Keras cannot rebuild the model from its own format either (a keras-hub
    tokenizer's vocabulary is an asset Keras loads only after rebuilding the functional graph that
    calls it), the cell is Keras' limit; otherwise a failure is exportkit's."""
    import keras

    model = s.source if s.source is not None else REGISTRY[s.case.factory or s.case.name]()  # JAX backend: rebuilt here
    path = s.work / "control_rebuild.keras"
    model.save(str(path))
    rebuilt = keras.saving.load_model(str(path))
    assert_matches(numpy_outputs(rebuilt(s.structured(s.inputs), training=False)), s.want)


# exportkit's own loader: no library export it reads; its control is Keras' own rebuild
OWN_CONTROL = {"load_from_saved_model": ("Keras' model.save() + keras.saving.load_model()", keras_rebuild)}
KERAS_ONLY = {"load_from_saved_model"}
# The default `make test` runs these (text + lookup tables, and a compiled sparse classifier with
# BatchNorm); every other cell is marked `consumers`.
FAST_MODELS = ("text_classifier", "bn_dropout_sparse")
FAST_CONSUMERS = ("tf2_load", "tf1_session", "tfsm_layer", "load_from_saved_model")


def cells():
    for model, case in CASES.items():
        for consumer in ("export", *CONSUMERS):
            if consumer in KERAS_ONLY and case.source != "keras":
                continue
            fast = model in FAST_MODELS and consumer in (*FAST_CONSUMERS, "export")
            yield pytest.param(model, consumer, id=f"{model}-{consumer}", marks=() if fast else pytest.mark.consumers)


@pytest.mark.parametrize("model,consumer", list(cells()))
def test_cell(subjects, model, consumer):
    subject = subjects(model)
    if consumer == "export":
        if subject.verify_error:
            OUTCOMES[model, consumer] = (FAIL, subject.verify_error)
            pytest.fail(f"exportkit's export (verify on) failed: {subject.verify_error}")
        OUTCOMES[model, consumer] = (OK, "")
        return
    consume = CONSUMERS[consumer]
    try:
        if subject.export_dir is None:
            raise RuntimeError(f"{NO_EXPORT} {subject.export_error}")
        consume(subject.export_dir, subject)
    except Exception as error:
        reason = first_line(error)
        if consumer in OWN_CONTROL:
            label, control_check = OWN_CONTROL[consumer]
            try:
                control_check(subject)
            except Exception as control_error:  # noqa: BLE001 - Keras' own limit
                limit = first_line(control_error)
                OUTCOMES[model, consumer] = (LIMIT, limit)
                pytest.skip(f"consumer limit: {label} fails too: {limit}")
            OUTCOMES[model, consumer] = (FAIL, reason)
            raise
        try:
            control = subject.control_dir()
        except Exception as control_error:  # noqa: BLE001 - a consumer limit  # no control to prove a consumer limit with
            OUTCOMES[model, consumer] = (FAIL, f"{reason} ({first_line(control_error)})")
            raise
        try:
            consume(control, subject)
        except Exception as control_error:  # noqa: BLE001 - a consumer limit
            limit = first_line(control_error)
            OUTCOMES[model, consumer] = (LIMIT, limit)
            pytest.skip(f"consumer limit: {consumer} fails on {subject.control_label} too: {limit}")
        OUTCOMES[model, consumer] = (FAIL, reason)
        raise AssertionError(
            f"{consumer} reads {subject.control_label} of {model} but not exportkit's export: {reason}"
        ) from error
    OUTCOMES[model, consumer] = (OK, "")


def matrix_markdown(outcomes: Dict[tuple, tuple]) -> str:
    """model x consumer: ok / consumer limit / FAIL (n/a: the consumer does not apply; blank: not
    run), then each non-ok cell's first line."""
    columns = ["export", *CONSUMERS]
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for model, case in CASES.items():
        row = []
        for consumer in columns:
            if consumer in KERAS_ONLY and case.source != "keras":
                row.append(NA)
            else:
                row.append(outcomes.get((model, consumer), ("", ""))[0])
        lines.append(f"| {model} | " + " | ".join(row) + " |")
    notes = [
        f"- {model} x {consumer}: {outcome}: {reason[:400]}"
        for (model, consumer), (outcome, reason) in outcomes.items()
        if outcome != OK and NO_EXPORT not in reason
    ]
    unread = sorted({model for (model, _), (_, reason) in outcomes.items() if NO_EXPORT in reason})
    notes += [
        f"- {model}: every other FAIL: no export to read, even with verify off (see {model} x export)"
        for model in unread
    ]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


# --- the harness itself (no TensorFlow) ---------------------------------------------------------


def test_comparison_is_relative_to_the_outputs_scale():
    """Random-weight deep nets output values near 1e-11: an error of 10% of that must fail
    although it is far below any absolute tolerance; float noise at that scale passes."""
    want = {"out": np.array([[1e-11, -3e-11]], "float32")}
    assert_matches({"out": want["out"] * (1 + 1e-6)}, want)
    with pytest.raises(AssertionError, match="max abs error"):
        assert_matches({"out": want["out"] * 1.1}, want)
    with pytest.raises(AssertionError, match="shape"):
        assert_matches({"out": want["out"][0]}, want)
    with pytest.raises(AssertionError, match="outputs"):
        assert_matches({"a": want["out"], "b": want["out"]}, {"a": want["out"], "c": want["out"]})
    with pytest.raises(AssertionError, match="non-finite"):
        assert_matches({"out": np.full((1, 2), np.nan, "float32")}, want)
    assert_matches({"output_0:0": want["out"]}, want)  # one output against one, whatever its name


def test_matrix_table_lists_every_model_and_consumer():
    text = matrix_markdown(
        {
            ("bert_tiny", "tflite"): (OK, ""),
            ("lookup_dict", "onnx"): (LIMIT, "why"),
            ("bn_dropout_sparse", "export"): (FAIL, "ValueError: x"),
            ("bn_dropout_sparse", "tflite"): (FAIL, f"RuntimeError: {NO_EXPORT} ValueError: x"),
        }
    )
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert set(CASES) <= set(rows) and all(c in rows["model"] for c in CONSUMERS)
    assert "| n/a |" in rows["flax_cnn"]
    assert "- lookup_dict x onnx: consumer limit: why" in text
    assert "- bn_dropout_sparse x export: FAIL: ValueError: x" in text
    assert "bn_dropout_sparse x tflite" not in text and "- bn_dropout_sparse: every other FAIL: no export" in text
    assert (
        rows["bn_dropout_sparse"].startswith("| bn_dropout_sparse | FAIL |") and "| FAIL |" in rows["bn_dropout_sparse"]
    )
