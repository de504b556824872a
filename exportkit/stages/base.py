"""The stage interface: a small class configured by its constructor, called with the context."""

import abc
from typing import Tuple

from exportkit.context import ExportContext


class Stage(abc.ABC):
    """One step of the export.

    Subclasses set ``needs`` (context fields that must be filled before it runs) and ``adds``
    (fields it fills). A required stage that fails aborts the export; an optional one
    (``required: false`` in its config node) is recorded as failed and the run goes on.
    Raise ``exportkit.errors.StageSkipped`` to be recorded as skipped with a reason.

    Example, a user's stage plugged in with
    ``+pipeline.stages.count={_target_: mypkg.CountParams}``::

        class CountParams(Stage):
            needs = ("model",)
            def __call__(self, ctx):
                ctx.extra["params"] = ctx.model.count_params()
                return ctx
    """

    needs: Tuple[str, ...] = ()
    adds: Tuple[str, ...] = ()
    # True: may run while an earlier stage's background work goes on (exportkit.background): it
    # changes no variable's values (the checkpoint is being written from them) and calls
    # exportkit.background.finish(ctx) before it reads what that work writes
    beside_background: bool = False
    # False: never reads the values of ctx.variables in this process (tracing and saving graphs
    # do not), so variables made without their values may stay so (ExportContext.unfilled)
    reads_variables: bool = True

    def __init__(self, required: bool = True) -> None:
        self.required = required

    @abc.abstractmethod
    def __call__(self, ctx: ExportContext) -> ExportContext:
        """Do the stage's one job and return the context."""
