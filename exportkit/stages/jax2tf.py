"""jax2tf: a JAX model's params become ``tf.Variable``s and its function a TensorFlow one
(``exportkit.jax.variables`` and ``exportkit.jax.convert``); JAX is imported when it runs."""

from typing import Mapping, Optional

from exportkit.context import Conversion, ExportContext
from exportkit.errors import ConfigError
from exportkit.stages.base import Stage
from exportkit.variables import mib, nbytes


class Jax2TF(Stage):
    """Configured in ``conf/pipeline/jax.yaml``::

    jax2tf:
      _target_: exportkit.stages.jax2tf.Jax2TF
      with_gradient: false      # true: the SavedModel carries JAX's VJP, variables trainable
      polymorphic_shapes: null  # input name -> jax2tf shape, e.g. {tokens: "(batch, seq)"}
    """

    needs = ("model.instance", "model.signatures")
    adds = ("model.serving_fn", "variables")

    def __init__(
        self, with_gradient: bool = False, polymorphic_shapes: Optional[Mapping[str, str]] = None, required: bool = True
    ) -> None:
        super().__init__(required)
        self.with_gradient = bool(with_gradient)
        self.polymorphic_shapes = dict(polymorphic_shapes or {})

    def __call__(self, ctx: ExportContext) -> ExportContext:
        from exportkit.jax import versions
        from exportkit.jax.convert import lowering_platforms, serving_fn
        from exportkit.jax.source import JaxModel
        from exportkit.jax.variables import make_variables

        model = ctx.model.instance
        if not isinstance(model, JaxModel):
            raise ConfigError(
                f"pipeline.stages.jax2tf converts JAX models, but model._target_="
                f"{ctx.run.cfg.model._target_} gives a {type(model).__name__}; use that "
                f"model's own pipeline (e.g. pipeline=keras)"
            )
        self._check_overrides(ctx.model.signatures)
        platforms = lowering_platforms(ctx.run.cfg.target)
        choice = versions.choose(notify=ctx.run.reporter.progress)
        variables, tree, names = make_variables(model, trainable=self.with_gradient)
        ctx.variables["params"] = variables
        ctx.model.serving_fn = serving_fn(
            model.apply_fn, tree, platforms, self.with_gradient, self.polymorphic_shapes, choice.version
        )
        renamed = {key: name for key, name in names.items() if key != name}
        ctx.conversion = Conversion(list(platforms), choice.version, self.with_gradient, renamed)
        ctx.run.reporter.progress(
            f"{len(variables)} params as variables ({mib(nbytes(variables))}), lowering "
            f"for {', '.join(platforms)}, calling convention version {choice.version}"
        )
        return ctx

    def _check_overrides(self, signatures) -> None:
        names = {n for specs in signatures.values() for n in specs}
        unknown = sorted(set(self.polymorphic_shapes) - names)
        if unknown:
            raise ConfigError(
                f"pipeline.stages.jax2tf.polymorphic_shapes names {unknown}, which no "
                f"signature has as an input; inputs are {sorted(names)}"
            )
