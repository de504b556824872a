"""jax2tf: a JAX function as a TensorFlow one, by native serialization (an ``XlaCallModule`` op)
lowered for ``target.platforms``, with every ``null`` of a signature's shape a symbolic dimension.

A function that cannot be traced under those symbols (two dimensions it broadcasts or
concatenates together have different symbols, a reshape needs a dimension known) fails with one
``ConversionError`` line naming the inputs' symbols and ``pipeline.stages.jax2tf.polymorphic_shapes``
with a value to try (``shape_error``), not with JAX's traceback.
"""

import re
from typing import Any, Dict, List, Optional

import jax
import tensorflow as tf
from jax.experimental import jax2tf

from exportkit.errors import ConfigError, ConversionError
from exportkit.jax import versions
from exportkit.signatures import name_outputs

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
BATCH_SYMBOL = "batch"


def lowering_platforms(target) -> List[str]:
    """``target.platforms`` checked against what JAX can lower for (``cpu``, ``cuda``, ...)."""
    platforms = [str(p).lower() for p in target.platforms]
    bad = [p for p in platforms if p not in PLATFORMS]
    if not platforms or bad:
        hint = " ('gpu' is spelt 'cuda' or 'rocm')" if "gpu" in bad else ""
        raise ConfigError(
            f"target.platforms={list(target.platforms)}: each must be one of "
            f"{', '.join(PLATFORMS)}{hint}, and at least one is needed; e.g. target=gpu "
            f"gives [cpu, cuda]"
        )
    return list(dict.fromkeys(platforms))


def polymorphic_shape(name: str, shape: tf.TensorShape, override: Optional[str] = None) -> Optional[str]:
    """jax2tf's shape spec for one input: every unknown dimension a symbol; a leading unknown
    dimension is ``batch``, shared by all inputs, the others ``<input>_<axis>``.

    >>> polymorphic_shape("x", tf.TensorShape([None, 8]))
    '(batch, 8)'
    >>> polymorphic_shape("tokens", tf.TensorShape([None, None]))
    '(batch, tokens_1)'
    """
    if override is not None:
        return override
    dims = shape.as_list()
    if all(d is not None for d in dims):
        return None
    symbols = [
        str(d) if d is not None else (BATCH_SYMBOL if axis == 0 else f"{name}_{axis}") for axis, d in enumerate(dims)
    ]
    return "(" + ", ".join(symbols) + ("," if len(symbols) == 1 else "") + ")"


def serving_fn(apply_fn, params_tree, platforms, with_gradient: bool, overrides: Dict[str, str], version: int):
    """fn(dict of input tensors) -> dict of named outputs, for the generic trace stage.

    Converted anew for each signature it is traced for, as the symbolic shapes come from that
    signature's input specs.
    """

    def fn(inputs: Dict[str, Any]) -> Dict[str, Any]:
        names = list(inputs)
        specs = {n: polymorphic_shape(n, inputs[n].shape, overrides.get(n)) for n in names}
        converted = jax2tf.convert(
            apply_fn,
            polymorphic_shapes=[None, *specs.values()],
            with_gradient=with_gradient,
            native_serialization_platforms=tuple(platforms),
        )
        try:
            with versions.serialization(version):
                outputs = converted(params_tree, *[inputs[n] for n in names])
        except (jax.errors.InconclusiveDimensionOperation, TypeError, ValueError) as e:
            error = shape_error(e, specs, overridden=bool(overrides)) or inputs_error(e, inputs, params_tree)
            if error is None:
                raise
            raise error from e
        return name_outputs(outputs)

    # AutoGraph must not rewrite jax2tf's Python; the converted function is a graph already.
    return tf.autograph.experimental.do_not_convert(fn)


POLYMORPHIC_SHAPES_KEY = "pipeline.stages.jax2tf.polymorphic_shapes"


def shape_error(error: BaseException, specs: Dict[str, Optional[str]], overridden: bool) -> Optional[ConversionError]:
    """JAX's error tracing under symbolic shapes as one line: the inputs' symbols, JAX's own first
    line, and a ``pipeline.stages.jax2tf.polymorphic_shapes`` value to try (dimensions named in the
    error get one shared symbol). None when ``error`` is not about the symbols (a bug of the model).

    The error has ``symbols`` (input -> spec) and ``suggestion`` (input -> spec) fields, and passes
    through ``tf.function`` tracing unchanged (AutoGraph would otherwise restate it over many lines).
    """
    symbolic = {n: s for n, s in specs.items() if s is not None}
    symbols = list(dict.fromkeys(sym for s in symbolic.values() for sym in _symbols(s)))
    message = str(error)
    mentioned = [sym for sym in symbols if re.search(rf"\b{re.escape(sym)}\b", message)]
    if not mentioned and not isinstance(error, jax.errors.InconclusiveDimensionOperation):
        return None
    suggestion = dict(symbolic)
    shared = [sym for sym in mentioned if sym != BATCH_SYMBOL] or mentioned
    if len(shared) >= 2:  # dimensions JAX needs equal: one symbol for all of them
        suggestion = {n: _rename(s, {sym: shared[0] for sym in shared[1:]}) for n, s in symbolic.items()}
        advice = f"dimensions that must be equal need one symbol ({', '.join(shared)} -> {shared[0]})"
    else:
        advice = "give dimensions that must be equal one symbol, and a dimension the function needs known a number"
    cause = _jax_cause(error).strip() or type(error).__name__  # its first line, as errors.first_line gives
    cause = " ".join(cause.splitlines()[0].split()).rstrip(".")
    cause = cause if len(cause) <= 300 else cause[:297] + "..."
    which = (
        f"{POLYMORPHIC_SHAPES_KEY}={_render(symbolic)}"
        if overridden
        else (
            f"the default symbolic shapes {_render(symbolic)} (each null its own symbol, a leading null "
            f"`{BATCH_SYMBOL}` shared by every input)"
        )
    )
    converted = ConversionError(
        f"jax2tf cannot convert the JAX function under {which}: {cause}; {advice} with "
        f"{POLYMORPHIC_SHAPES_KEY}, e.g. '{POLYMORPHIC_SHAPES_KEY}={_render(suggestion)}'"
    )
    converted.symbols, converted.suggestion = symbolic, suggestion  # type: ignore[attr-defined]  # this error's own
    converted.ag_pass_through = True  # type: ignore[attr-defined]  # AutoGraph re-raises it as it is
    return converted


def inputs_error(error: BaseException, inputs: Dict[str, Any], params_tree) -> Optional[ConversionError]:
    """A JAX function that does not fit the signature's inputs (a shape JAX refuses: ``dot_general
    requires contracting dimensions to have the same shape, got (5,) and (4,)``) as one line naming
    each input's and each param's shape; None for any other error."""
    cause = " ".join((_jax_cause(error).strip() or type(error).__name__).splitlines()[0].split()).rstrip(".")
    if not re.search(r"shape|dimension|incompatible", cause, re.IGNORECASE):
        return None
    given = ", ".join(f"{n}: {inputs[n].dtype.name}{_dims(inputs[n].shape)}" for n in inputs)
    leaves = jax.tree_util.tree_flatten_with_path(params_tree)[0]
    params = ", ".join(
        f"{jax.tree_util.keystr(path)}: {_dims(getattr(leaf, 'shape', ()))}" for path, leaf in leaves[:8]
    )
    more = f" and {len(leaves) - 8} more" if len(leaves) > 8 else ""
    converted = ConversionError(
        f"the JAX function does not fit the signature's inputs: {cause[:300]}; inputs {given}; params {params}{more}; "
        f"give the signature the shapes the function takes (signatures.serving_default, or input_signature)"
    )
    converted.ag_pass_through = True  # type: ignore[attr-defined]  # AutoGraph re-raises it as it is
    return converted


def _dims(shape) -> str:
    dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _symbols(spec: str) -> List[str]:
    return [t for t in re.findall(r"[A-Za-z_]\w*", spec)]


def _rename(spec: str, renames: Dict[str, str]) -> str:
    return re.sub(r"[A-Za-z_]\w*", lambda m: renames.get(m.group(0), m.group(0)), spec)


def _render(specs: Dict[str, str]) -> str:
    """``{x: "(batch, 8)", ...}``: the value as a Hydra override writes it."""
    return "{" + ", ".join(f'{n}: "{s}"' for n, s in specs.items()) + "}"


def _jax_cause(error: BaseException) -> str:
    """JAX's own message: AutoGraph may have wrapped it in "in user code:" and a stack."""
    text = str(error)
    if text.lstrip().startswith("in user code:"):
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        return lines[-1].split(": ", 1)[-1] if lines else text
    return text
