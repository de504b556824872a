"""Users' own stages, plugged in by ``_target_`` in the tests."""

import json

from exportkit.stages.base import Stage


class CountParams(Stage):
    needs = ("model",)

    def __call__(self, ctx):
        ctx.extra["params"] = ctx.model.count_params()
        (ctx.work_dir / "assets.extra").mkdir(exist_ok=True)
        (ctx.work_dir / "assets.extra" / "params.json").write_text(json.dumps({"params": ctx.extra["params"]}))
        return ctx


class Broken(Stage):
    def __call__(self, ctx):
        raise RuntimeError("broken on purpose")
