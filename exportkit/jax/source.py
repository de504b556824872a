"""JAX models: a factory returns ``(apply_fn, params)`` (``model=jax``), or the Python API hands
over one (``model=jax_in_memory``), called as ``apply_fn(params, *inputs)`` with the inputs in the
signature's order. A Flax linen module stands for its ``apply``: ``(module, variables)`` or a
bound module (``module.bind(variables)``) is ``(module.apply, variables)``.

``params`` is any pytree of arrays. With ``model.params_path`` the pytree's structure (and each
leaf's shape and dtype) comes from the factory, the values from the file, so a factory may
return templates (``jax.ShapeDtypeStruct``, e.g. from ``jax.eval_shape``) instead of arrays.

This source fills the model and the reference; the ``jax2tf`` stage turns the params into
``tf.Variable``s and the function into ``ctx.model.serving_fn`` (so the pipeline's needs/adds check
names a missing jax2tf stage).
"""

import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from exportkit.context import ExportContext
from exportkit.errors import ModelSourceError
from exportkit.imports import instantiate
from exportkit.jax.params import check_params, load_params
from exportkit.signatures import name_outputs
from exportkit.sources.base import Source


@dataclass
class JaxModel:
    """What ``model=jax`` exports: ``apply_fn(params, *inputs)`` and its ``params`` pytree."""

    apply_fn: Callable[..., Any]
    params: Any


class JaxSource(Source):
    """What every JAX source does once it has the ``JaxModel`` (``get_model``)."""

    adds = ("model.instance", "model.reference")
    signatures_required = (
        "model=jax needs `signatures`: a JAX function has no input shapes to infer them from; "
        "add e.g. +signatures.serving_default={inputs: {x: {shape: [null, 8], dtype: float32}}} "
        "(null is a dynamic dimension; inputs are passed to apply_fn(params, *inputs) in this order)"
    )
    params_path: Optional[str] = None

    def get_model(self, ctx: ExportContext) -> "JaxModel":
        raise NotImplementedError

    def missing_hint(self, need: str) -> str:
        if need in ("model.serving_fn", "variables"):
            return (
                "model=jax needs the jax2tf stage before trace, and the pipeline has none: use "
                "pipeline=jax (model=jax selects it) or re-enable pipeline.stages.jax2tf"
            )
        return ""

    def load(self, ctx: ExportContext) -> ExportContext:
        import jax

        model = self.get_model(ctx)
        if self.params_path:
            model.params = load_params(self.params_path, model.params)
        check_params(model.params)
        ctx.model.instance = model
        jitted = jax.jit(model.apply_fn)
        ctx.model.reference = {
            key: reference_fn(jitted, model, list(specs)) for key, specs in ctx.model.signatures.items()
        }
        return ctx  # the jax2tf stage adds serving_fn and variables


class JaxFactory(JaxSource):
    """``model=jax``: ``model.build`` is a ``_target_`` node returning ``(apply_fn, params)``."""

    def __init__(self, build: Any, params_path: Optional[str] = None) -> None:
        self.build = build
        self.params_path = params_path

    def get_model(self, ctx: ExportContext) -> JaxModel:
        built = instantiate(
            self.build,
            "model.build._target_",
            ModelSourceError,
            "check the dotted path and the kwargs given beside it",
            _convert_="all",
        )
        return as_jax_model(built, f"model.build._target_={self.build._target_!r} returned")


class JaxInMemory(JaxSource):
    """``model=jax_in_memory``: the ``(apply_fn, params)`` or Flax module the Python API hands over
    (``exportkit.export_saved_model((apply_fn, params), path, input_signature=[...])``).

    ``description`` is set by the API to what it was given (``(apply_fn, params):
    my_models.mlp_apply``, ``flax.linen module my_models.CNN``), so the manifest's config says
    what was exported; the export itself does not depend on it.
    """

    takes_object = True
    signatures_required = (
        "a JAX model needs `input_signature`: a JAX function has no input shapes to infer them "
        "from; pass e.g. input_signature=[tf.TensorSpec([None, 8], tf.float32, name='x')] "
        "(None is a dynamic dimension; inputs are passed to apply_fn(params, *inputs) in this order)"
    )

    def __init__(self, description: Optional[str] = None) -> None:
        self.description = description

    def get_model(self, ctx: ExportContext) -> JaxModel:
        return as_jax_model(ctx.model.instance, "export_saved_model was given", "a JAX model is")


def is_jax_model(obj: Any) -> bool:
    """Whether the Python API should export ``obj`` as a JAX model: ``(apply_fn, params)``, a
    ``JaxModel``, or a Flax linen module (bound, or paired with its variables). Imports nothing."""
    if isinstance(obj, JaxModel) or _flax_module(obj) is not None:
        return True
    return isinstance(obj, (tuple, list)) and len(obj) == 2 and callable(obj[0])


def describe(obj: Any) -> str:
    """One line saying what a JAX model handed to the API is (recorded as ``model.description``)."""
    module = _flax_module(obj)
    if module is not None:
        bound = "bound " if _is_flax_module(obj) else ""
        return f"{bound}flax.linen module {_dotted(type(module))}"
    fn = obj.apply_fn if isinstance(obj, JaxModel) else obj[0]
    return f"(apply_fn, params): {_dotted(fn)}"


def as_jax_model(built: Any, where: str, kind: str = "a JAX factory returns") -> JaxModel:
    """``(apply_fn, params)``, ``(flax module, variables)`` or a bound Flax module -> ``JaxModel``."""
    if isinstance(built, JaxModel):
        return JaxModel(built.apply_fn, built.params)
    if _is_flax_module(built):
        if getattr(built, "scope", None) is None:
            raise ModelSourceError(
                f"{where} an unbound Flax module {type(built).__name__}; give "
                f"(module, variables) or module.bind(variables)"
            )
        module, variables = built.unbind()
        return JaxModel(apply_fn=module.apply, params=_plain(variables))
    if not (isinstance(built, (tuple, list)) and len(built) == 2 and callable(built[0])):
        raise ModelSourceError(
            f"{where} {type(built).__name__}; {kind} (apply_fn, params) with "
            f"apply_fn(params, *inputs), (flax_module, variables) or a bound Flax module"
        )
    if _is_flax_module(built[0]):
        return JaxModel(apply_fn=built[0].apply, params=_plain(built[1]))
    return JaxModel(apply_fn=built[0], params=built[1])


def _is_flax_module(obj: Any) -> bool:
    # By the class's ancestry, not isinstance: flax need not (and must not) be imported to ask.
    return any(c.__module__.startswith("flax.linen") and c.__name__ == "Module" for c in type(obj).__mro__)


def _flax_module(obj: Any):
    if _is_flax_module(obj):
        return obj
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and _is_flax_module(obj[0]):
        return obj[0]
    return None


def _plain(variables: Any) -> Any:
    """Flax's ``FrozenDict`` (older Flax) as plain dicts, so params paths read ``params/Dense_0/kernel``."""
    unfreeze = getattr(variables, "unfreeze", None)
    return unfreeze() if callable(unfreeze) else variables


def _dotted(obj: Any) -> str:
    target = getattr(obj, "func", obj)  # functools.partial
    owner = getattr(target, "__self__", None)
    if owner is not None and not isinstance(owner, type(sys)):  # a bound method: module.apply
        return f"{_dotted(type(owner))}.{getattr(target, '__name__', '?')}"
    module, name = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    return f"{module}.{name}" if module and name else type(obj).__name__


def reference_fn(jitted, model: JaxModel, names: List[str]):
    """fn(dict of numpy inputs) -> dict of numpy outputs: the JAX function, for verify."""

    def reference(inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        outputs = name_outputs(jitted(model.params, *[inputs[n] for n in names]))
        return {k: np.asarray(v) for k, v in outputs.items()}

    return reference


def input_names(obj: Any) -> List[str]:
    """The names ``apply_fn`` (or a Flax module's ``__call__``) gives its inputs, past ``params``:
    what the API names unnamed ``input_signature`` specs (``input_{i}`` beyond them)."""
    import inspect

    module = _flax_module(obj)
    if module is not None:
        fn, skip = type(module).__call__, 1  # self
    else:
        fn, skip = (obj.apply_fn if isinstance(obj, JaxModel) else obj[0]), 1  # params
    try:
        parameters = list(inspect.signature(fn).parameters.values())[skip:]
    except (TypeError, ValueError):
        return []
    names = []
    for p in parameters:
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            break
        names.append(p.name)
    return names
