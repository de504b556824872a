"""Signatures, in one place: the config's ``signatures`` <-> ``tf.TensorSpec``s, both ways.

A signature is ``{inputs: {NAME: {shape: [null, 8], dtype: float32}}}`` in the config (``null``
a dynamic dimension). ``parse`` checks the config once (no TensorFlow); ``to_specs`` gives
the ordered ``{name: tf.TensorSpec}`` per signature key the stages trace; ``to_config`` turns
specs (the API's ``input_signature``) back into config entries. ``name_outputs`` keys a model's
outputs by name, as every SignatureDef's outputs are.

>>> parsed = parse({"serving_default": {"inputs": {"x": {"shape": [None, 8]}}}})
>>> to_specs(parsed)["serving_default"]["x"]
TensorSpec(shape=(None, 8), dtype=tf.float32, name='x')
"""

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from omegaconf import MISSING, OmegaConf

from exportkit.errors import ConfigError, ModelSourceError, SignatureError, first_line

DTYPES = (
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "bool",
    "string",
)


@dataclass
class TensorSpecConf:
    """One input of a signature: ``shape`` with ``null`` for a dynamic dimension."""

    shape: List[Optional[int]] = MISSING
    dtype: str = "float32"


@dataclass
class SignatureConf:
    """A serving signature: input name -> spec. Outputs are keyed by the model's output names."""

    inputs: Dict[str, TensorSpecConf] = field(default_factory=dict)


def parse(signatures: Optional[Mapping]) -> Dict[str, SignatureConf]:
    """The config's ``signatures`` checked (defaults filled in), by key; ``ConfigError`` naming
    the key and the fix for anything malformed."""
    checked = {}
    for key, sig in (signatures or {}).items():
        node = checked_node(
            SignatureConf, sig, f"signatures.{key}", "{inputs: {NAME: {shape: [null, 8], dtype: float32}}}"
        )
        _check(key, node)
        checked[key] = node
    return checked


def checked_node(schema, value, where: str, example: str):
    """``value`` merged onto the structured ``schema`` (defaults filled in, nothing missing), or a
    ``ConfigError`` naming ``where`` and showing ``example``."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        node = OmegaConf.merge(OmegaConf.structured(schema), value)
        OmegaConf.to_container(node, throw_on_missing=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{where} is malformed ({first_line(e)}); write it as {example}") from e
    return node


def _check(key: str, sig: SignatureConf) -> None:
    if not sig.inputs:
        raise ConfigError(f"signatures.{key}.inputs is empty: give at least one input with a shape and a dtype")
    for name, spec in sig.inputs.items():
        where = f"signatures.{key}.inputs.{name}"
        if not name.isidentifier():
            raise ConfigError(
                f"{where}: input name {name!r} must be a Python identifier "
                f"(letters, digits and '_'), as TensorFlow signatures require"
            )
        if spec.dtype not in DTYPES:
            raise ConfigError(f"{where}.dtype={spec.dtype!r} is not supported; use one of {', '.join(DTYPES)}")
        for dim in spec.shape:
            if dim is not None and dim < 1:
                raise ConfigError(
                    f"{where}.shape={list(spec.shape)} has {dim}; each dimension "
                    f"is a positive size or null for a dynamic one"
                )


def tensor_spec(shape: Sequence[Optional[int]], dtype, name: str):
    import tensorflow as tf

    return tf.TensorSpec(shape=list(shape), dtype=tf.as_dtype(dtype), name=name)


def to_specs(parsed: Mapping[str, SignatureConf]) -> Dict[str, Dict[str, Any]]:
    """Parsed signatures -> signature key -> ordered ``{input name: tf.TensorSpec}``."""
    return {
        key: OrderedDict((name, tensor_spec(spec.shape, spec.dtype, name)) for name, spec in sig.inputs.items())
        for key, sig in parsed.items()
    }


def to_config(named_specs: Sequence) -> Dict[str, Dict[str, Any]]:
    """``[(name, tf.TensorSpec), ...]`` -> the config's ``inputs`` entries (what the manifest records)."""
    import tensorflow as tf

    inputs = {}
    for name, spec in named_specs:
        if not isinstance(spec, tf.TensorSpec):
            raise SignatureError(f"input_signature: {name!r} is a {type(spec).__name__}, expected a tf.TensorSpec")
        if spec.shape.rank is None:
            raise SignatureError(f"input_signature: {name!r} has an unknown rank; give a shape such as [None, 8]")
        inputs[name] = {"shape": spec.shape.as_list(), "dtype": spec.dtype.name}
    return inputs


def name_outputs(outputs, names: Optional[Callable[[int], List[str]]] = None) -> Dict[str, Any]:
    """Outputs keyed by name: a dict as returned; a tuple/list or one tensor by ``names(count)``
    (the model's output names), else ``output_0``, ``output_1``...

    >>> name_outputs((a, b))
    {'output_0': a, 'output_1': b}
    """
    if isinstance(outputs, Mapping):
        bad = [k for k in outputs if not isinstance(k, str)]
        if bad:
            raise ModelSourceError(f"the model returned a dict with non-string keys {bad}; name each output")
        return dict(outputs)
    flat = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    given = names(len(flat)) if names is not None else []
    keys = given if len(given) == len(flat) else [f"output_{i}" for i in range(len(flat))]
    return dict(zip(keys, flat))
