"""The format matrix: every model of the consumer matrix (tests/consumer_models.py) x every
deployment format (``formats``: LiteRT, ONNX, OpenVINO, and LiteRT with dynamic-range int8), as
exportkit converts and verifies them.

Each model is exported once, with every format optional, so a format that fails is recorded in
the manifest (``formats[name]``: status, reason, max_scaled_error, top1_agreement) instead of
failing the export. A cell is ``ok`` when the manifest says so. Control rule, as in
tests/test_consumers.py: where exportkit's artifact failed, the same format is made by the model's
own library (Keras' ``model.export(path, format=...)`` with the same converter settings; for a JAX
model, the format's converter on jax2tf's own SavedModel, ``jax2tf + tf.saved_model.save``), run
by the same runtime on the same inputs and compared with the source model within the format's
tolerance. Where the control fails too, the cell is the format's own limit (skipped, with the
control's failure as its reason); where the control works, exportkit's failure is a defect and
the cell fails.

Keras models on the JAX backend (``Case.keras_backend == "jax"``) are left out: their export runs
in a process of its own (tests/test_consumers.py) and their serve graph is a jax2tf one, the case
the Flax, Equinox and Haiku rows cover.

Every cell is marked ``consumers``. With ``EXPORTKIT_FORMAT_MATRIX_OUT=path.md`` set, the table
(model x format: ``ok <max scaled error>[, top-1 N%]`` / ``limit: <why>`` / ``FAIL``) and each
cell's full reason are written there when the module ends (``bench/format_matrix.py`` runs it and
prints the table).
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import pytest

from tests.conftest import export
from tests.consumer_models import CASES, REGISTRY, rnn_states
from tests.test_consumers import Subject, first_line, jax2tf_export, narrow_float_tolerance

pytestmark = pytest.mark.consumers

BATCH = 4  # neither of verify's default batch sizes


@dataclass(frozen=True)
class Column:
    """One format column: the ``formats.<name>`` node exportkit gets, and what the control needs."""

    name: str
    node: str  # the override adding it
    kind: str  # litert | onnx | openvino
    tolerance: float  # the format's default, relative to the outputs' scale
    quantized: bool = False


COLUMNS = {
    c.name: c
    for c in [
        Column("litert", "formats.litert.optional=true", "litert", 1e-4),
        Column("onnx", "formats.onnx.optional=true", "onnx", 1e-4),
        Column("openvino", "formats.openvino.optional=true", "openvino", 1e-4),
        Column(
            "litert_int8",
            "+formats.litert_int8={_target_: exportkit.formats.litert.LiteRT, quantize: dynamic_int8, optional: true}",
            "litert",
            0.1,
            quantized=True,
        ),
    ]
}
# the TensorFlow-backend rows (Keras and JAX libraries); Keras-on-JAX rows export in a process of their own
MODELS = [name for name, case in CASES.items() if case.keras_backend == "tensorflow"]

OK, LIMIT, FAIL = "ok", "limit", "FAIL"
OUTCOMES: Dict[Tuple[str, str], Tuple[str, str]] = {}  # (model, column) -> (cell text, full reason)


# --- the model, exportkit's export with every format ----------------------------------------------


@dataclass
class Row:
    """One model: its source, exportkit's export with every format optional, its reference outputs."""

    subject: Subject
    formats: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # the manifest's formats
    export_error: Optional[str] = None
    seconds: float = 0.0
    _controls: Dict[str, Any] = field(default_factory=dict)


def make_row(name: str, work: Path) -> Row:
    import time

    case = CASES[name]
    subject = Subject(case, work)
    row = Row(subject)
    overrides = [
        f"model={case.source}",
        f"model.build._target_={case.target}",
        *case.overrides,
        f"export_dir={work / 'exportkit'}",
        "+formats=[litert,onnx,openvino]",
        *(c.node for c in COLUMNS.values()),
    ]
    start = time.perf_counter()
    try:
        result = export(*overrides)
        row.formats = dict(result.manifest["formats"])
        subject.export_dir, subject.source = work / "exportkit", result.context.model.instance
    except Exception as e:  # noqa: BLE001 - every cell of the row says it
        row.export_error = first_line(e)
    row.seconds = time.perf_counter() - start
    if case.source == "jax":  # the function and params, from the factory (deterministic)
        subject.source = REGISTRY[name]()
    elif subject.source is None:
        import keras

        keras.utils.set_random_seed(0)
        subject.source = REGISTRY[name]()
    subject.inputs = case.inputs(BATCH, seed=7)
    states = [] if case.source == "jax" else rnn_states(subject.source)
    exported = [v.numpy() for v in states]
    subject.want = subject.call_source(subject.inputs)  # a stateful source: its first call from the exported state
    for variable, value in zip(states, exported):  # back to the exported state, for the control
        variable.assign(value)
    return row


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    cache: Dict[str, Row] = {}

    def get(name: str) -> Row:
        if name not in cache:
            cache[name] = make_row(name, tmp_path_factory.mktemp(name))
        return cache[name]

    yield get
    if os.environ.get("EXPORTKIT_FORMAT_MATRIX_OUT"):
        seconds = {name: row.seconds for name, row in cache.items()}
        Path(os.environ["EXPORTKIT_FORMAT_MATRIX_OUT"]).write_text(matrix_markdown(OUTCOMES, seconds))


# --- the control: the model's own library export in the format, run by the format's runtime -------


def control_artifact(row: Row, column: Column) -> Tuple[str, Path]:
    """The format made by the model's own library, with the converter settings exportkit used:
    (the runtime's kind, the artifact's path). Raises what the library raises."""
    s = row.subject
    out = s.work / f"control_{column.name}"
    out.mkdir(exist_ok=True)
    if s.case.source == "jax":
        saved = s.work / "control_saved_model"
        if not saved.exists():
            jax2tf_export(s.case, *s.source, saved)
        return column.kind, convert_saved_model(saved, out, column)
    import tensorflow as tf

    path = out / {"litert": "model.tflite", "onnx": "model.onnx", "openvino": "model.xml"}[column.kind]
    kwargs: Dict[str, Any] = {}
    if column.kind == "litert":
        # exportkit's select_tf_ops=false: builtin ops only (Keras' own default adds SELECT_TF_OPS)
        kwargs["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
        if column.quantized:
            kwargs["optimizations"] = [tf.lite.Optimize.DEFAULT]
    s.source.export(str(path), format=column.kind, verbose=False, **kwargs)
    return column.kind, path


def convert_saved_model(saved: Path, out: Path, column: Column) -> Path:
    """The format's own converter on a SavedModel (a JAX model's control)."""
    if column.kind == "litert":
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serving_default"])
        if column.quantized:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        (out / "model.tflite").write_bytes(converter.convert())
        return out / "model.tflite"
    if column.kind == "onnx":
        from tf2onnx import convert, tf_loader

        graph_def, inputs, outputs = tf_loader.from_saved_model(
            str(saved), None, None, tag="serve", signatures=["serving_default"]
        )
        convert.from_graph_def(
            graph_def, input_names=inputs, output_names=outputs, opset=17, output_path=str(out / "model.onnx")
        )
        return out / "model.onnx"
    import openvino

    openvino.save_model(openvino.convert_model(str(saved)), str(out / "model.xml"))
    return out / "model.xml"


def run_artifact(kind: str, path: Path, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The artifact run by its format's runtime on ``inputs`` (fed by name)."""
    if kind == "litert":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        (key,) = interpreter.get_signature_list()  # Keras' and jax2tf's: one signature
        runner = interpreter.get_signature_runner(key)
        feed = pair(list(runner.get_input_details()), inputs)
        return {k: np.asarray(v) for k, v in runner(**feed).items()}
    if kind == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = pair([i.name for i in session.get_inputs()], inputs)
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    import openvino

    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    feed = pair([port.get_any_name() for port in compiled.inputs], inputs)
    result = compiled(feed)
    return {port.get_any_name(): np.asarray(result[port]) for port in compiled.outputs}


def plain(name: str) -> str:
    """A tensor's name without a runtime's decorations (``serving_default_a:0`` -> ``a``)."""
    name = name.split(":")[0]
    return re.sub(r"^(serving_default_|serve_)", "", name)


def pair(names, values: Dict[str, Any]) -> Dict[str, Any]:
    """``values`` keyed by ``names`` (an artifact's inputs or outputs): by name, else one to one."""
    if len(names) == 1 and len(values) == 1:
        return {names[0]: next(iter(values.values()))}
    found = {}
    for name in names:
        match = [k for k in values if k == plain(name)] or [k for k in values if plain(name).endswith(k)]
        if len(match) != 1:
            raise AssertionError(f"cannot pair {sorted(names)} with the model's {sorted(values)}")
        found[name] = values[match[0]]
    return found


def scaled_error(got: Dict[str, np.ndarray], want: Dict[str, np.ndarray]) -> float:
    """max |got - want| / max |want| over the model's outputs, in float64; each output paired with
    the artifact's output of that name, else (an artifact with extra or renamed outputs) with the
    closest one of its shape: generous to the control, so a cell blames the format only when it must."""
    try:
        candidates = {name: [(got[name], w)] for name, w in pair(list(got), want).items()}
    except AssertionError:
        candidates = {name: [(g, w) for g in got.values()] for name, w in want.items()}
    worst = 0.0
    for name, options in candidates.items():
        errors = [one_error(np.asarray(g), np.asarray(w)) for g, w in options]
        errors = [e for e in errors if e is not None]
        assert errors, f"{name}: no output of the source model's shape among {sorted(got)}"
        worst = max(worst, min(errors))
    return worst


def one_error(g: np.ndarray, w: np.ndarray) -> Optional[float]:
    """max |g - w| / max |w| (inf for unequal non-float outputs); None where the shapes differ."""
    if g.shape != w.shape:
        return None
    if not (np.issubdtype(w.dtype, np.floating) or narrow_float_tolerance(w.dtype)):
        return 0.0 if np.array_equal(g, w) else float("inf")
    g, w = g.astype("float64"), w.astype("float64")
    return float(np.max(np.abs(g - w))) / max(float(np.max(np.abs(w))), 1e-30)


def control(row: Row, column: Column) -> str:
    """Raises unless the model's own library export in this format converts, runs and matches the
    source model within the format's tolerance (4 ulps for outputs narrower than float32)."""
    if column.name not in row._controls:
        try:
            kind, path = control_artifact(row, column)
            got = run_artifact(kind, path, row.subject.inputs)
            error = scaled_error(got, row.subject.want)
            narrow = max([narrow_float_tolerance(np.asarray(w).dtype) for w in row.subject.want.values()] + [0.0])
            tolerance = max(column.tolerance, narrow)
            if not error <= tolerance:
                raise AssertionError(f"the control's max error {error:.3g} > tolerance {tolerance:g}")
            row._controls[column.name] = f"max error {error:.3g} of the outputs' scale, tolerance {tolerance:g}"
        except Exception as e:  # noqa: BLE001 - the control's own failure is the cell's answer
            row._controls[column.name] = e
    if isinstance(row._controls[column.name], Exception):
        raise row._controls[column.name]
    return row._controls[column.name]


def control_label(row: Row, column: Column) -> str:
    if row.subject.case.source == "jax":
        return f"{column.kind}'s converter on jax2tf + tf.saved_model.save"
    return f"Keras' model.export(format={column.kind!r})"


# --- the cells ------------------------------------------------------------------------------------


def ok_text(record: Dict[str, Any], column: Column) -> str:
    error = record["max_scaled_error"]
    text = "ok 0" if error == 0 else f"ok {error:.2g}" if column.quantized else f"ok {error:.0e}"
    if column.quantized and record.get("top1_agreement") is not None:
        text += f", top-1 {100 * record['top1_agreement']:.0f}%"
    return text


# (pattern in the converters' text, the short reason a table cell shows); the full reason is under the table
SHORT = [
    (r"XlaCallModule", "jax2tf export (XlaCallModule)"),
    (r"No conversion rule found for operations: ([^\n]+)", "no conversion rule for {}"),
    (r"'tf\.(\w+)' op is neither a custom op nor a flex op", "{} has no builtin (Select TF ops)"),
    (r"No Op registered for (\w+)", "tf2onnx leaves {} unconverted"),
    (r"Unsupported ops: ([^\n]+)", "tf2onnx cannot convert {}"),
    (r"Conversion is failed for: ([^\n]+)", "no conversion for {}"),
    (r"(LookupTableFindV2)/table_handle", "no conversion for {} (lookup table)"),
    (r"(SentencepieceTokenizeOp)/sp_handle", "no conversion for {}"),
    (r"'tfl\.(\w+)' op operand #0 must be .*?but got '(tensor<[^>]*>)'", "no builtin {} of {}"),
    (r"Optype \((\w+)\) bound to different types", "tf2onnx writes {} with float16 and bfloat16 inputs"),
    (
        r"does not match the source model: (?:\S+ at batch \S+: )?(max error \S+ is \S+ of the outputs' scale)",
        "wrong numbers: {}",
    ),
    (r"can't convert from: f32 precision to: dynamic", "the CPU plugin cannot run a bfloat16 Cast"),
    (r"'tf\.(\w+)' op", "the converter fails on {}"),
]


def short(*texts: str) -> str:
    """What a cell says of a failure: the op the converter names, else the first reason's start."""
    for pattern, text in SHORT:
        for source in texts:
            match = re.search(pattern, source)
            if match:
                return text.format(*(g.strip()[:70] for g in match.groups()))
    return texts[0][:90].strip()


def cells():
    for model in MODELS:
        for column in COLUMNS:
            yield pytest.param(model, column, id=f"{model}-{column}")


@pytest.mark.parametrize("model,column", list(cells()))
def test_cell(rows, model, column):
    row, col = rows(model), COLUMNS[column]
    if row.export_error:
        OUTCOMES[model, column] = (FAIL, f"no export: {row.export_error}")
        pytest.fail(f"exportkit's export with every format optional failed: {row.export_error}")
    record = row.formats.get(column)
    assert record is not None, f"the manifest records no formats.{column}: {sorted(row.formats)}"
    if record["status"] == "ok":
        # the format's tolerance, never under the outputs' own precision (a float16 output's rounding)
        floor = max((narrow_float_tolerance(np.asarray(w).dtype) for w in (row.subject.want or {}).values()), default=0)
        assert record["max_scaled_error"] <= max(record["tolerance"], floor), record
        OUTCOMES[model, column] = (ok_text(record, col), "")
        return
    reason = record["reason"] or record["status"]
    try:
        matched = control(row, col)
    except Exception as control_error:  # noqa: BLE001 - the format's own limit
        limit = first_line(control_error)
        OUTCOMES[model, column] = (
            f"{LIMIT}: {short(reason, str(control_error))}",
            f"exportkit: {reason} -- {control_label(row, col)} fails too: {limit}",
        )
        pytest.skip(f"format limit: {control_label(row, col)} fails too: {limit} (exportkit: {reason})")
    OUTCOMES[model, column] = (
        f"{FAIL}: {short(reason)}",
        f"exportkit: {reason} -- but {control_label(row, col)} converts and matches ({matched})",
    )
    pytest.fail(
        f"{control_label(row, col)} of {model} converts, runs and matches ({matched}), but exportkit's failed: {reason}"
    )


def matrix_markdown(outcomes: Dict[Tuple[str, str], Tuple[str, str]], seconds: Dict[str, float]) -> str:
    """model x format (blank: not run), then each cell that is not ok with its full reason."""
    headers = ["litert", "onnx", "openvino", "litert dynamic_int8"]
    lines = ["| model | " + " | ".join(headers) + " |", "|---" * (len(headers) + 1) + "|"]
    for model in MODELS:
        if not any(m == model for m, _ in outcomes):
            continue
        cells_ = [outcomes.get((model, column), ("", ""))[0] for column in COLUMNS]
        lines.append(f"| {model} | " + " | ".join(cells_) + " |")
    notes = [f"- {model} x {column}: {reason[:600]}" for (model, column), (_, reason) in outcomes.items() if reason]
    total = f"({len(seconds)} exports with every format, {sum(seconds.values()):.0f} s in all)"
    return "\n".join(lines + ["", total] + ([""] + notes if notes else [])) + "\n"
