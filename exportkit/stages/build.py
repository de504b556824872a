"""build: seed everything, resolve custom objects, and load the model from its source
(``ctx.source``, chosen by ``model._target_``). What the source adds, this stage adds."""

from exportkit.context import ExportContext
from exportkit.imports import import_custom_objects
from exportkit.stages.base import Stage


class Build(Stage):
    adds = ("custom_objects",)  # plus the source's own `adds` (see pipeline.check_dependencies)
    loads_source = True

    def __call__(self, ctx: ExportContext) -> ExportContext:
        source = ctx.source
        source.reset()
        source.seed(int(ctx.cfg.seed))
        ctx.custom_objects = {**import_custom_objects(ctx.cfg.custom_objects), **ctx.custom_objects}
        return source.load(ctx)
