"""What Keras itself computes for the ``train`` and ``eval`` graphs' inputs, so verify can hold
the exported steps against the source model (``Training.reference``).

Each reference takes the step's named inputs (the model's inputs plus ``<output>_target``) as
NumPy arrays and runs Keras' own ``train_on_batch`` / ``test_on_batch`` on them, then puts every
variable back (model, optimizer, metrics, seed generators): the source state is used as a copy
and left as it was exported. ``train`` gives the batch's ``loss`` computed before the update;
``eval`` gives ``loss`` and ``predictions/<output>``.
"""

from typing import Any, Callable, Dict

import numpy as np

from exportkit.keras.calls import model_inputs, name_outputs
from exportkit.keras.training import TARGET_SUFFIX


def training_reference(model) -> Dict[str, Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]]:
    """``{"train": fn, "eval": fn}`` for a compiled model with an optimizer, else ``{}``."""
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        return {}

    def split(tensors):
        features = {n: v for n, v in tensors.items() if not n.endswith(TARGET_SUFFIX)}
        with state_kept(model):  # only the outputs' structure: a stateful layer's state stays
            y_pred = model(model_inputs(features), training=False)
        named = name_outputs(model, y_pred)
        targets = {o: tensors[f"{o}{TARGET_SUFFIX}"] for o in named}
        if isinstance(y_pred, dict):
            y = {k: targets[k] for k in y_pred}
        elif isinstance(y_pred, (list, tuple)):
            y = [targets[k] for k in named]
        else:
            y = targets[next(iter(named))]
        return model_inputs(features), y, named

    def train(tensors):
        x, y, _ = split(tensors)
        with state_kept(model):
            logs = model.train_on_batch(x, y, return_dict=True)
        return {"loss": np.asarray(logs["loss"])}

    def evaluate(tensors):
        x, y, named = split(tensors)
        with state_kept(model):
            logs = model.test_on_batch(x, y, return_dict=True)
        out = {"loss": np.asarray(logs["loss"])}
        out.update({f"predictions/{k}": np.asarray(v) for k, v in named.items()})
        return out

    return {"train": train, "eval": evaluate}


class state_kept:
    """Every variable of the model (stateful layers' states too), its optimizer and metrics is
    put back on exit."""

    def __init__(self, model: Any) -> None:
        from exportkit.keras.stateful import state_variables

        groups = [model.variables, state_variables(model), model.optimizer.variables, model.metrics_variables]
        seen, self.variables = set(), []
        for v in (v for group in groups for v in group):
            if id(v) not in seen:
                seen.add(id(v))
                self.variables.append(v)

    def __enter__(self):
        self.values = [np.array(v.numpy(), copy=True) for v in self.variables]
        return self

    def __exit__(self, *exc) -> None:
        for v, value in zip(self.variables, self.values):
            v.assign(value)
