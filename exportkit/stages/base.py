"""The stage interface: a small class configured by its constructor, called with the context."""

import abc
from typing import Callable, Tuple

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
            needs = ("model.instance",)
            def __call__(self, ctx):
                ctx.extra["params"] = ctx.model.instance.count_params()
                return ctx
    """

    needs: Tuple[str, ...] = ()
    adds: Tuple[str, ...] = ()
    # True: this stage runs the model source (``ctx.run.source.load``), so it adds the source's ``adds``
    loads_source: bool = False
    # True, the default, and all a stage of yours needs: it starts once every earlier stage's
    # files are complete. exportkit's write_graphs sets False to build its graphs while
    # write_checkpoint's write goes on, and waits for it itself (exportkit.background).
    reads_files: bool = True

    def __init__(self, required: bool = True) -> None:
        self.required = required

    def wanted(self, cfg) -> bool:
        """False when the config gives this stage nothing to do (``convert`` without ``formats``):
        the runner then leaves it out, as if it were disabled."""
        return True

    @abc.abstractmethod
    def __call__(self, ctx: ExportContext) -> ExportContext:
        """Do the stage's one job and return the context."""


class CallableStage(Stage):
    """A plain callable (``ctx -> ctx``) used as a stage: it needs and adds nothing declared."""

    def __init__(self, function: Callable[[ExportContext], ExportContext], required: bool = True) -> None:
        super().__init__(required)
        self.function = function

    def __call__(self, ctx: ExportContext) -> ExportContext:
        return self.function(ctx)
