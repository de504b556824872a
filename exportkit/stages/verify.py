"""verify: reload the export in a fresh process and compare it with the source model
(``exportkit.verification``: the cases, the comparison, the process, the kept files)."""

from exportkit.context import ExportContext
from exportkit.stages.base import Stage
from exportkit.verification.check import verify_staged


class Verify(Stage):
    """Every signature (and a compiled model's train/eval steps) on every case, within
    ``verify.atol``/``verify.rtol`` (``verify.tolerances.<output>``) and ``verify.top1``; a
    mismatch fails the export."""

    needs = ("model.reference", "model.signatures", "saved_model_file")
    adds = ("verify_report",)

    def __call__(self, ctx: ExportContext) -> ExportContext:
        verify_staged(ctx)
        return ctx
