"""The cases verification runs: each graph's inputs, real or generated.

A case is ``(signature key, label)``. The label is the batch size (``"3"``), followed, when the
signature has dynamic dimensions beyond the batch, by the size each one is probed at
(``"3,token_ids_1=5"``). Dimension ``<input>_<axis>`` is what ``verify.dims`` names (and the
symbol jax2tf gives it by default). Dynamic dimensions at the same axis index of one signature's
inputs get the same size in every case (``token_ids`` and ``padding_mask`` of a BERT share their
length); ``verify.dims.<input>_<axis>`` or a jax2tf symbol (``verify.dims.seq``) sets the sizes.

Generated values follow a rule per input, first match wins: ``verify.values.<input>`` (``{low,
high}`` or a list), the source's hints (``ExportContext.input_hints``: an Embedding's
``input_dim``, a lookup layer's vocabulary), the input's name (``*mask*``: a padding mask of
0/1, ``*segment_ids``/``*type_ids``: 0/1), then the dtype (integers 0-9, floats N(0, 1)).

Real examples (``verify.inputs``) and the kept files share one ``.npz`` key scheme,
``[signature/][case/]input``; a key without a signature applies to every signature with that
input. The kept ``verify_inputs.npz`` is therefore itself a valid ``verify.inputs``.
"""

import re
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from exportkit.errors import ConfigError
from exportkit.verification.protocol import Case

DEFAULT_INTS = (0, 10)
WORDS = ("the", "a", "model", "export", "verify", "token", "hello", "world")
MASK_NAME = re.compile(r"mask", re.IGNORECASE)
SEGMENT_NAME = re.compile(r"(segment|type)_ids$", re.IGNORECASE)


# ---- shapes --------------------------------------------------------------------------------


def dims_of(spec) -> List[Optional[int]]:
    return spec.shape.as_list() if spec.shape.rank is not None else []


def is_string(spec) -> bool:
    return spec.dtype.name == "string"


def jax_symbols(polymorphic_shapes: Optional[Mapping[str, str]]) -> Dict[str, Dict[int, str]]:
    """input -> {axis: symbol} from jax2tf's ``polymorphic_shapes`` overrides (``"(batch, seq)"``)."""
    found = {}
    for name, shape in (polymorphic_shapes or {}).items():
        parts = [p.strip() for p in str(shape).strip().strip("()").split(",")]
        found[name] = {axis: p for axis, p in enumerate(parts) if p.isidentifier()}
    return found


def plan(
    specs,
    batch_sizes,
    dims: Mapping[str, List[int]],
    dim_sizes: List[int],
    symbols: Optional[Dict[str, Dict[int, str]]] = None,
) -> List[Tuple[str, Dict[str, List[int]]]]:
    """``[(label, {input: concrete shape})]`` for one signature: every batch size times every probe
    of its other dynamic dimensions (probe k takes each group's k-th size, cycling)."""
    symbols = symbols or {}
    group_of: Dict[Tuple[str, int], str] = {}
    sizes: Dict[str, List[int]] = {}
    shared_sizes: Dict[str, List[int]] = {}
    for name, spec in specs.items():
        for axis, d in enumerate(dims_of(spec)):
            if axis == 0 or d is not None:
                continue
            own, symbol = f"{name}_{axis}", symbols.get(name, {}).get(axis)
            shared = symbol if symbol and symbol != own else f"axis {axis}"
            if own in dims:  # its own sizes; the others at this axis follow them unless set too
                group_of[(name, axis)], sizes[own] = own, list(dims[own])
                shared_sizes.setdefault(shared, list(dims[own]))
            else:
                group_of[(name, axis)] = shared
    for group in set(group_of.values()) - set(sizes):
        sizes[group] = list(dims[group]) if group in dims else shared_sizes.get(group, list(dim_sizes))
    display: Dict[str, str] = {}
    for (name, axis), group in group_of.items():  # what a label calls a group: a key one can set
        display.setdefault(group, group if group in dims or not group.startswith("axis ") else f"{name}_{axis}")
    probes = max((len(s) for s in sizes.values()), default=1)
    leading = {dims_of(s)[0] if dims_of(s) else None for s in specs.values()}
    batches = list(batch_sizes) if leading == {None} else [next(iter(leading)) or 1]
    cases = []
    for batch in batches:
        for k in range(probes):
            pick = {g: s[k % len(s)] for g, s in sizes.items()}
            label = ",".join([str(batch)] + [f"{display[g]}={pick[g]}" for g in sorted(pick, key=display.__getitem__)])
            shapes = {
                name: [
                    batch if a == 0 and d is None else d if d is not None else pick[group_of[(name, a)]]
                    for a, d in enumerate(dims_of(spec))
                ]
                for name, spec in specs.items()
            }
            if (label, shapes) not in cases:
                cases.append((label, shapes))
    return cases


def check_dims(signatures, dims: Mapping[str, List[int]], symbols) -> None:
    """Every ``verify.dims`` key names a dynamic dimension (``<input>_<axis>`` or a jax2tf symbol)."""
    names = {
        f"{n}_{a}"
        for specs in signatures.values()
        for n, s in specs.items()
        for a, d in enumerate(dims_of(s))
        if a > 0 and d is None
    }
    names |= {symbol for axes in symbols.values() for a, symbol in axes.items() if a > 0}
    for key in dims:
        if key not in names:
            raise ConfigError(
                f"verify.dims.{key} names no dynamic dimension of a signature; they are "
                f"{', '.join(sorted(names)) or 'none (every dimension but the batch is fixed)'}"
            )


# ---- value rules -----------------------------------------------------------------------------


def parse_values(values: Optional[Mapping[str, Any]], known: Optional[List[str]] = None) -> Dict[str, Dict[str, Any]]:
    """``verify.values`` checked: input -> ``{"low", "high"}`` or ``{"values": [...]}``; with
    ``known``, a name that is no input is an error (a typo)."""
    rules = {}
    for name, value in (values or {}).items():
        key = f"verify.values.{name}"
        if known is not None and name not in known:
            raise ConfigError(f"{key}: no input is named {name!r}; the inputs are {', '.join(known)}")
        if isinstance(value, Mapping):
            if (
                set(value) - {"low", "high"}
                or not {"low", "high"} <= set(value)
                or not all(isinstance(value[k], (int, float)) for k in ("low", "high"))
                or value["low"] >= value["high"]
            ):
                raise ConfigError(
                    f"{key}={dict(value)}: give {{low: L, high: H}} with L < H (integers "
                    f"are drawn from [L, H)), or a list of values"
                )
            rules[name] = {"low": value["low"], "high": value["high"]}
        elif isinstance(value, (list, tuple)) and len(value) > 0:
            rules[name] = {"values": list(value)}
        else:
            raise ConfigError(f"{key}={value!r}: give {{low: L, high: H}} or a non-empty list of values")
        rules[name]["origin"] = key
    return rules


def rule_for(name: str, spec, configured: Mapping, hints: Mapping) -> Dict[str, Any]:
    """The rule an input's generated values follow (see the module's docstring)."""
    if name in configured:
        return dict(configured[name])
    if name in hints:
        return dict(hints[name])
    if not is_string(spec) and MASK_NAME.search(name):
        return {"mask": True, "origin": "its name (a padding mask)"}
    if not is_string(spec) and SEGMENT_NAME.search(name):
        return {"low": 0, "high": 2, "integer": True, "origin": "its name (segment ids)"}
    return {"origin": "default"}


def generate(rng, spec, shape: List[int], rule: Mapping[str, Any]) -> np.ndarray:
    """Seeded values of ``spec``'s dtype and ``shape`` following ``rule``."""
    if is_string(spec):
        words = [str(w) for w in rule.get("values", WORDS)]
        if rule.get("sentence"):
            lengths = rng.integers(1, 5, size=shape)
            text = [" ".join(words[i] for i in rng.integers(0, len(words), size=n)) for n in lengths.ravel()]
        else:
            text = [words[i] for i in rng.integers(0, len(words), size=int(np.prod(shape)))]
        return np.array([t.encode() for t in text], dtype=object).reshape(shape)
    dtype = np.dtype(spec.dtype.as_numpy_dtype)
    if "values" in rule:
        return np.asarray(rule["values"], dtype=dtype)[rng.integers(0, len(rule["values"]), size=shape)]
    if rule.get("mask") and len(shape) >= 2 and shape[-1] > 0:  # ones up to a random length >= 1
        lengths = rng.integers(1, shape[-1] + 1, size=shape[:-1])
        return (np.arange(shape[-1]) < lengths[..., None]).astype(dtype)
    if rule.get("mask") or dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(dtype)
    if "low" in rule:
        if np.issubdtype(dtype, np.integer) or rule.get("integer"):
            return rng.integers(int(np.ceil(rule["low"])), int(np.ceil(rule["high"])), size=shape).astype(dtype)
        return rng.uniform(rule["low"], rule["high"], size=shape).astype(dtype)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(*DEFAULT_INTS, size=shape).astype(dtype)
    return rng.standard_normal(size=shape).astype(dtype)


def describe(rule: Mapping[str, Any], dtype) -> str:
    """What an input's generated values were, for messages."""
    if "values" in rule:
        return f"values from {rule['origin']}"
    if "low" in rule:
        return f"[{rule['low']}, {rule['high']}) from {rule['origin']}"
    if rule.get("mask"):
        return "a 0/1 padding mask (from its name)"
    kind = np.dtype(dtype).kind
    return (
        f"integers {DEFAULT_INTS[0]}-{DEFAULT_INTS[1] - 1}"
        if kind in "iu"
        else "N(0, 1) values"
        if kind == "f"
        else "random values"
    ) + " (the dtype's default)"


def model_error(error: BaseException) -> str:
    """The line of a model's exception that says what went wrong: past Keras' "Exception
    encountered when calling X.call()." and TensorFlow's ``{{function_node ...}}`` prefix."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # Keras' bold
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [type(error).__name__]
    where = ""
    if lines[0].startswith("Exception encountered when calling") and len(lines) > 1:
        where = lines[0][len("Exception encountered when calling ") :].rstrip(".") + ": "
        lines = lines[1:]
    return where + re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", lines[0])


def make_inputs(
    signatures,
    batch_sizes,
    seed,
    *,
    values: Optional[Mapping[str, Any]] = None,
    hints: Optional[Mapping] = None,
    dims: Optional[Mapping] = None,
    dim_sizes=(2, 5),
    symbols=None,
) -> Dict[Case, Dict[str, np.ndarray]]:
    """Seeded generated inputs per case of every signature.

    >>> make_inputs({"serving_default": {"x": tf.TensorSpec([None, 4])}}, [1, 3], seed=0)
    {("serving_default", "1"): {"x": ...}, ("serving_default", "3"): {"x": ...}}
    """
    rng = np.random.default_rng(seed)
    configured = parse_values(values)
    check_dims(signatures, dims or {}, symbols or {})
    cases = {}
    for key, specs in signatures.items():
        for label, shapes in plan(specs, batch_sizes, dims or {}, list(dim_sizes), symbols):
            cases[(key, label)] = {
                name: generate(rng, spec, shapes[name], rule_for(name, spec, configured, hints or {}))
                for name, spec in specs.items()
            }
    return cases


# ---- real examples ---------------------------------------------------------------------------


def load_examples(path: str, signatures, partial=()) -> Dict[Case, Dict[str, np.ndarray]]:
    """The cases of ``verify.inputs``: keys ``[signature/][case/]input``; ``ConfigError`` naming
    ``verify.inputs`` and the input for a bad file, a missing key, a wrong shape or dtype. The
    signatures in ``partial`` (train/eval steps: their targets may be generated) may lack inputs."""
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ConfigError(
            f"verify.inputs={path!r} cannot be read as a .npz file ({e}); save the examples "
            f"with numpy.savez(PATH, input_name=array, ...)"
        ) from None
    if not isinstance(flat, dict) or not flat:
        raise ConfigError(f"verify.inputs={path!r} holds no arrays; save them with numpy.savez(PATH, x=...)")
    by_case: Dict[Case, Dict[str, str]] = {}
    shared: Dict[str, Dict[str, str]] = {}  # signature ('' for every one) -> input -> key
    for key in flat:
        parts = key.split("/")
        if len(parts) > 3 or (len(parts) > 1 and parts[0] not in signatures):
            raise ConfigError(
                f"verify.inputs={path!r}: key {key!r} is not [signature/][case/]input with a "
                f"signature among {', '.join(signatures)}"
            )
        if len(parts) == 3:
            by_case.setdefault((parts[0], parts[1]), {})[parts[2]] = key
        else:
            shared.setdefault(parts[0] if len(parts) == 2 else "", {})[parts[-1]] = key
    cases = {}
    for sig, specs in signatures.items():
        labels: List[Optional[str]] = [label for s, label in by_case if s == sig] or [None]
        for label in labels:
            own = by_case.get((sig, label), {}) if label is not None else {}
            keys = {**shared.get("", {}), **shared.get(sig, {}), **own}
            missing = [n for n in specs if n not in keys]
            if sig in partial:
                specs = {n: spec for n, spec in specs.items() if n in keys}
            elif missing:
                raise ConfigError(
                    f"verify.inputs={path!r} has no array for input {missing[0]} of {sig}; add "
                    f"key {missing[0]!r} (or '{sig}/{missing[0]}') to the .npz"
                )
            arrays = {n: checked(path, keys[n], flat[keys[n]], spec, f"{sig} input {n}") for n, spec in specs.items()}
            batches = {a.shape[0] for a in arrays.values() if a.ndim}
            if len(batches) > 1:
                raise ConfigError(
                    f"verify.inputs={path!r}: the arrays of {sig} have different batch sizes "
                    f"{sorted(batches)}; give every input the same number of examples"
                )
            cases[(sig, label or str(next(iter(batches), 1)))] = arrays
    return cases


def checked(path: str, key: str, array: np.ndarray, spec, what: str) -> np.ndarray:
    """``array`` as ``spec`` takes it: same rank, fixed dimensions equal, dtype of the same kind
    (an int64 array feeds an int32 input when its values fit)."""
    dims = dims_of(spec)
    where = f"verify.inputs={path!r}: {key!r} for {what}"
    if array.ndim != len(dims) or any(d is not None and d != s for d, s in zip(dims, array.shape)):
        raise ConfigError(f"{where} has shape {list(array.shape)}, the input takes {dims} (null: any size)")
    if is_string(spec):
        if array.dtype.kind not in "SU":
            raise ConfigError(f"{where} has dtype {array.dtype}, the input takes strings")
        return np.array([s.encode() if isinstance(s, str) else bytes(s) for s in array.ravel()], dtype=object).reshape(
            array.shape
        )
    want = np.dtype(spec.dtype.as_numpy_dtype)
    kinds = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
    if array.dtype.kind not in kinds.get(want.kind, want.kind):
        raise ConfigError(f"{where} has dtype {array.dtype}, the input takes {want}; save it as {want}")
    cast = array.astype(want)
    if want.kind in "iu" and not np.array_equal(cast, array):
        raise ConfigError(f"{where} has values that do not fit {want}")
    return cast


# ---- the cases of one export -------------------------------------------------------------------


def serve_cases(signatures, verify, seed: int, hints, symbols) -> Dict[Case, Dict[str, np.ndarray]]:
    """Every signature's cases: ``verify.inputs``' examples, or generated data."""
    if verify.inputs:
        return load_examples(str(verify.inputs), signatures)
    return make_inputs(
        signatures,
        list(verify.batch_sizes),
        seed,
        values=verify["values"],
        hints=hints,
        dims=verify.dims,
        dim_sizes=list(verify.dim_sizes),
        symbols=symbols,
    )


def step_case(
    key: str,
    specs,
    serve: Mapping[Case, Mapping[str, np.ndarray]],
    serve_outputs: Mapping[Case, Mapping[str, np.ndarray]],
    verify,
    seed: int,
    signatures,
) -> Tuple[Case, Dict[str, np.ndarray]]:
    """One case of a train/eval step: its inputs from ``verify.inputs`` where given, else the
    model's inputs of the first signature's largest serve case and generated targets: integer
    class ids below the matching output's last dimension for a target one rank lower (a sparse
    loss), values in [0, 1) shaped like the output otherwise."""
    given: Dict[str, np.ndarray] = {}
    if verify.inputs:
        given = next(
            (
                a
                for (s, _), a in load_examples(str(verify.inputs), {**signatures, key: specs}, partial=(key,)).items()
                if s == key
            ),
            {},
        )
    first = next(iter(signatures))
    base_case = max((c for c in serve if c[0] == first), key=lambda c: batch_of(serve[c]))
    features, outputs = serve[base_case], serve_outputs[base_case]
    batch = batch_of(given) if given else batch_of(features)
    configured = parse_values(verify["values"])
    rng = np.random.default_rng(seed + 1)
    arrays: Dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        if name in given or name in features:
            arrays[name] = given[name] if name in given else features[name]
            continue
        output = max((o for o in outputs if name.startswith(o)), key=len, default=None)
        out = np.asarray(outputs[output]) if output is not None else np.zeros([batch])
        dims = dims_of(spec)
        shape = [
            batch if a == 0 else d if d is not None else (out.shape[a] if a < out.ndim else 1)
            for a, d in enumerate(dims)
        ]
        rule = configured.get(name)
        if rule is None and spec.dtype.is_integer:
            sparse = out.ndim == len(dims) + 1 and out.shape[-1] > 1
            rule = {"low": 0, "high": out.shape[-1] if sparse else 2, "origin": f"output {output}"}
        arrays[name] = generate(rng, spec, shape, rule or {"low": 0.0, "high": 1.0, "origin": "targets"})
    return (key, str(batch)), arrays


def batch_of(arrays: Mapping[str, np.ndarray]) -> int:
    return next((int(np.shape(a)[0]) for a in arrays.values() if np.ndim(a)), 1)


def source_failure(case: Case, arrays, error: BaseException, specs, verify, hints, tag: str = "serve") -> str:
    """One line for a source model that fails on verify's inputs: the input and the key to set."""
    sig, label = case
    message = model_error(error)
    where = f"the source model failed on verify's inputs for {sig} (case {label}): {message}; "
    if verify.inputs and tag == "serve":
        return where + f"the inputs were the examples of verify.inputs={verify.inputs}: check their values and shapes"
    configured = parse_values(verify["values"])
    rules = {n: rule_for(n, s, configured, hints) for n, s in specs.items()}
    named = [n for n in specs if re.search(rf"\b{re.escape(n)}\b", message)]
    unset = [
        n
        for n in specs
        if rules[n]["origin"] == "default" and not np.issubdtype(np.asarray(arrays[n]).dtype, np.floating)
    ]
    suspect = (named or unset or list(specs))[0]
    hint = (
        f"input {suspect} got {describe(rules[suspect], np.asarray(arrays[suspect]).dtype)}: set +verify.values.{suspect}={{low: 0, high: N}} "
        f"or a list of values, or give real examples with verify.inputs=FILE.npz"
    )
    probed = [p.split("=")[0] for p in label.split(",")[1:]]
    if probed:
        hint += f"; if a length is the cause, set +verify.dims.{probed[0]}=[...] (this case: {label})"
    if tag != "serve":
        hint += f"; or leave the {tag} graph unverified with verify.steps=false"
    return where + hint


def symbols_of(cfg) -> Dict[str, Dict[int, str]]:
    """The jax2tf stage's symbols per input, so ``verify.dims.<symbol>`` can name them."""
    node = (cfg.pipeline.stages or {}).get("jax2tf") if "pipeline" in cfg else None
    return jax_symbols(node.get("polymorphic_shapes") if node else None)


def step_specs(function) -> Dict[str, Any]:
    """A traced step's named input specs, as its SignatureDef takes them."""
    args, kwargs = function.structured_input_signature
    return {**{spec.name: spec for spec in args}, **dict(kwargs)}
