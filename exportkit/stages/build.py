"""build: seed everything, resolve custom objects, and load the model from its source."""
from exportkit import sources
from exportkit.context import ExportContext
from exportkit.imports import import_custom_objects
from exportkit.stages.base import Stage


class Build(Stage):
    adds = ("model", "custom_objects", "signatures", "serving_fn", "reference", "variables")

    def __call__(self, ctx: ExportContext) -> ExportContext:
        if ctx.model is None and ctx.cfg.model.kind != "jax":  # a JAX model has no Keras names
            fresh_keras_names()
        seed_everything(ctx.cfg.seed)
        ctx.custom_objects = {**import_custom_objects(ctx.cfg.custom_objects), **ctx.custom_objects}
        return sources.load(ctx)


def seed_everything(seed: int) -> None:
    """Python, NumPy and TensorFlow (through Keras) start from ``seed``, so a factory that
    initialises weights randomly builds the same model on every run."""
    import keras

    keras.utils.set_random_seed(int(seed))


def fresh_keras_names() -> None:
    """Reset Keras's name counters before building from the config: layer and variable names
    land in the graph, so the same config exports the same bytes however many models this
    process built before (a notebook, a test session, ``exportkit.reproduce``)."""
    import keras

    keras.backend.clear_session()
