"""build: seed everything, resolve custom objects, and load the model from its source
(``ctx.run.source``, chosen by ``model._target_``). What the source adds, this stage adds."""

from exportkit.context import ExportContext
from exportkit.imports import import_custom_objects
from exportkit.stages.base import Stage


class Build(Stage):
    adds = ("model.custom_objects",)  # plus the source's own `adds` (see pipeline.check_dependencies)
    loads_source = True

    def __call__(self, ctx: ExportContext) -> ExportContext:
        source = ctx.run.source
        source.reset()
        source.seed(int(ctx.run.cfg.seed))
        ctx.model.custom_objects = {**import_custom_objects(ctx.run.cfg.custom_objects), **ctx.model.custom_objects}
        return source.load(ctx)
