"""JAX models (``model=jax``): a factory returns ``(apply_fn, params)``, called as
``apply_fn(params, *inputs)`` with the inputs in the signature's order.

``params`` is any pytree of arrays. With ``model.params_path`` the pytree's structure (and each
leaf's shape and dtype) comes from the factory, the values from the file, so a factory may
return templates (``jax.ShapeDtypeStruct``, e.g. from ``jax.eval_shape``) instead of arrays.

This source fills the model and the reference; the ``jax2tf`` stage turns the params into
``tf.Variable``s and the function into ``ctx.serving_fn`` (so the pipeline's needs/adds check
names a missing jax2tf stage).
"""
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


class JaxFactory(Source):
    """``model=jax``: ``model.build`` is a ``_target_`` node returning ``(apply_fn, params)``."""

    adds = ("model", "reference")
    signatures_required = (
        "model=jax needs `signatures`: a JAX function has no input shapes to infer them from; "
        "add e.g. +signatures.serving_default={inputs: {x: {shape: [null, 8], dtype: float32}}} "
        "(null is a dynamic dimension; inputs are passed to apply_fn(params, *inputs) in this order)")

    def __init__(self, build: Any, params_path: Optional[str] = None) -> None:
        self.build = build
        self.params_path = params_path

    def missing_hint(self, need: str) -> str:
        if need in ("serving_fn", "variables"):
            return ("model=jax needs the jax2tf stage before trace, and the pipeline has none: use "
                    "pipeline=jax (model=jax selects it) or re-enable pipeline.stages.jax2tf")
        return ""

    def load(self, ctx: ExportContext) -> ExportContext:
        import jax

        built = instantiate(self.build, "model.build._target_", ModelSourceError,
                            "check the dotted path and the kwargs given beside it", _convert_="all")
        model = as_jax_model(built, f"model.build._target_={self.build._target_!r}")
        if self.params_path:
            model.params = load_params(self.params_path, model.params)
        check_params(model.params)
        ctx.model = model
        jitted = jax.jit(model.apply_fn)
        ctx.reference = {key: reference_fn(jitted, model, list(specs)) for key, specs in ctx.signatures.items()}
        return ctx  # the jax2tf stage adds serving_fn and variables


def as_jax_model(built: Any, where: str) -> JaxModel:
    if not (isinstance(built, (tuple, list)) and len(built) == 2 and callable(built[0])):
        raise ModelSourceError(f"{where} returned {type(built).__name__}; a JAX factory returns "
                               f"(apply_fn, params) with apply_fn(params, *inputs)")
    return JaxModel(apply_fn=built[0], params=built[1])


def reference_fn(jitted, model: JaxModel, names: List[str]):
    """fn(dict of numpy inputs) -> dict of numpy outputs: the JAX function, for verify."""
    def reference(inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        outputs = name_outputs(jitted(model.params, *[inputs[n] for n in names]))
        return {k: np.asarray(v) for k, v in outputs.items()}

    return reference
