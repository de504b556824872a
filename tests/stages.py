"""Users' own stages, plugged in by ``_target_`` in the tests."""

import json

from exportkit.stages.base import Stage


class CountParams(Stage):
    needs = ("model.instance",)

    def __call__(self, ctx):
        ctx.extra["params"] = ctx.model.instance.count_params()
        (ctx.run.work_dir / "assets.extra").mkdir(exist_ok=True)
        (ctx.run.work_dir / "assets.extra" / "params.json").write_text(json.dumps({"params": ctx.extra["params"]}))
        return ctx


class Broken(Stage):
    def __call__(self, ctx):
        raise RuntimeError("broken on purpose")


class Hold(Stage):
    """Holds the export mid-way (after the stage it is placed after) until the process is
    signalled: touches ``path`` when it starts waiting."""

    def __init__(self, path: str, only_seed=None, required: bool = True) -> None:
        super().__init__(required)
        self.path, self.only_seed = path, only_seed

    def __call__(self, ctx):
        import threading
        from pathlib import Path

        if self.only_seed is not None and int(ctx.run.cfg.seed) != int(self.only_seed):
            return ctx  # another job of a sweep: not held

        Path(self.path).touch()
        threading.Event().wait()  # interrupted by the signal's handler, never set
        return ctx
