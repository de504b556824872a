"""Model sources: each turns ``cfg.model`` into a model plus what the stages need from it.

A source fills ``ctx.model``, ``ctx.signatures``, ``ctx.serving_fn``, ``ctx.reference`` and
``ctx.variables``. The build stage picks one by ``model.kind``.
"""
import importlib

from exportkit.context import ExportContext

# model.kind -> module with ``load(ctx)``; imported only when picked (TensorFlow, JAX are heavy)
SOURCES = {
    "keras": "exportkit.sources.keras",
    "keras_file": "exportkit.sources.keras",
    "in_memory": "exportkit.sources.keras",  # the Python API hands the model over
    "jax": "exportkit.sources.jax",
}


def load(ctx: ExportContext) -> ExportContext:
    return importlib.import_module(SOURCES[ctx.cfg.model.kind]).load(ctx)
