"""The model-source interface: a small class chosen by ``model._target_``, like a stage.

The pipeline instantiates ``cfg.model`` (its fields are the constructor's keyword arguments,
nested ``_target_`` nodes such as ``model.build`` left as config) and the build stage calls
``load(ctx)``. A source declares the context fields it ``adds``, so the pipeline's needs/adds
check sees what each source really provides. Sources shipped with exportkit live in the framework
packages (``exportkit.keras.source``, ``exportkit.jax.source``); a user's own plugs in the same way::

    class MySource(Source):
        adds = MODEL_FIELDS
        def __init__(self, path: str):
            self.path = path
        def load(self, ctx):
            ...
            return ctx

    python -m exportkit model._target_=mypkg.MySource +model.path=/data/m
"""

import abc
from typing import Tuple

from exportkit.context import ExportContext

# what a source fills for the export of a model: the object, its signatures, what they serve,
# the reference outputs verify compares with, the variables to checkpoint
MODEL_FIELDS = ("model.instance", "model.signatures", "model.serving_fn", "model.reference", "variables")


class Source(abc.ABC):
    adds: Tuple[str, ...] = ("model.instance",)
    # True for a source that exports a model object handed over by the Python API
    takes_object: bool = False
    # Non-empty when the export needs `signatures` in the config (nothing to infer them from):
    # the one-line error shown without them.
    signatures_required: str = ""

    def reset(self) -> None:
        """Called by the build stage before seeding: clear whatever earlier models left behind."""
        return None

    def seed(self, seed: int) -> None:
        """Seed Python, NumPy and TensorFlow, so a factory that initialises randomly builds the
        same model on every run."""
        import random

        import numpy as np
        import tensorflow as tf

        random.seed(seed)
        np.random.seed(seed)
        tf.random.set_seed(seed)

    def missing_hint(self, need: str) -> str:
        """Why a stage's ``need`` may be missing for this source (e.g. a converting stage)."""
        return ""

    @abc.abstractmethod
    def load(self, ctx: ExportContext) -> ExportContext:
        """Fill ``ctx.model.instance`` and what ``adds`` names, and return the context."""
