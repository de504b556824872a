"""Stateful layers: a ``keras.layers.RNN`` (``LSTM``, ``GRU``, ...) with ``stateful=True`` keeps
its last state in variables of its own (``layer.states``) that Keras creates outside its
automatic tracking, so they are not among ``model.variables``.

The export carries them as Keras' own ``model.export()`` does (it exports every variable its
endpoints use): they are the ``state`` variable group (``state_variables/<i>`` in the checkpoint
and in every graph's object layout), the ``serve`` graph reads the state and assigns the new one
on every call, and both the TF2 loader and the TF1 session loader (TF Serving) restore it. A
loaded export therefore keeps one state shared by every request, starting from the state the
source model had when it was exported; reloading the export resets it.

Because the state variables have the layer's batch size, a stateful model's signatures take
that fixed batch (Keras' export leaves it dynamic, and a call on another batch broadcasts
against the state instead of failing).

Verification compares the export with the source model on the same sequence of calls from the
same initial state: ``carry_state`` wraps the source's references so that each call starts from
the state the previous call (of any signature) left, beginning with the exported state, and
leaves the source model's own state as it found it.
"""

from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import numpy as np

from exportkit.errors import SignatureError

GROUP = "state"


def stateful_layers(model) -> List[Tuple[Any, List[Any]]]:
    """``[(layer, its state variables)]`` for every stateful layer of ``model`` that holds state
    variables outside ``model.variables``, in the model's layer order."""
    import keras

    tracked = {id(v) for v in model.variables}
    found: List[Tuple[Any, List[Any]]] = []
    seen: Set[int] = set()
    for layer in model._flatten_layers(include_self=False):
        states = getattr(layer, "states", None) if getattr(layer, "stateful", False) is True else None
        if states is None:
            continue
        variables = [
            v
            for v in keras.tree.flatten(states)
            if isinstance(v, keras.Variable) and id(v) not in tracked and id(v) not in seen
        ]
        seen.update(id(v) for v in variables)
        if variables:
            found.append((layer, variables))
    return found


def state_variables(model) -> List[Any]:
    """The stateful layers' state variables (``keras.Variable``), in layer order."""
    return [v for _, variables in stateful_layers(model) for v in variables]


def variable_groups(model) -> Dict[str, List[Any]]:
    """``{"state": [tf.Variable, ...]}`` for a model with stateful layers, else ``{}`` (so other
    exports keep their checkpoint layout)."""
    variables = state_variables(model)
    return {GROUP: [v.value for v in variables]} if variables else {}


def fixed_batch(model, signatures: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """A stateful model's signatures with the batch dimension its state has: a dynamic batch
    takes it, another fixed batch is a ``SignatureError``. Other models' are returned as given."""
    layers = stateful_layers(model)
    if not layers:
        return signatures
    layer, variables = layers[0]
    batch = int(variables[0].shape[0])
    from exportkit.signatures import tensor_spec

    fixed: Dict[str, Dict[str, Any]] = {}
    for key, specs in signatures.items():
        fixed[key] = {}
        for name, spec in specs.items():
            dims = spec.shape.as_list() if spec.shape.rank else None
            if dims and dims[0] is not None and dims[0] != batch:
                raise SignatureError(
                    f"signatures.{key}.inputs.{name} has batch dimension {dims[0]}, but the model is "
                    f"stateful: layer {layer.name!r} ({type(layer).__name__}, stateful=True) keeps "
                    f"its state for a batch of {batch}; give batch {batch} (or leave it null)"
                )
            fixed[key][name] = tensor_spec([batch, *dims[1:]], spec.dtype, name) if dims else spec
    return fixed


def carry_state(model, references: Dict[str, Callable]) -> Dict[str, Callable]:
    """The source model's references (signature key -> fn), made to carry one state across
    their calls in call order, from the state the model has at the first call (what the
    checkpoint holds: nothing runs the model between ``write_checkpoint`` and verify); the
    model's own state is put back after each call. Unchanged for a model without state."""
    variables = state_variables(model)
    if not variables:
        return references
    carried: List[Optional[List[np.ndarray]]] = [None]

    def wrap(reference):
        def call(inputs):
            own = [np.array(v.numpy(), copy=True) for v in variables]
            for v, value in zip(variables, carried[0] or own):
                v.assign(value)
            try:
                return reference(inputs)
            finally:
                carried[0] = [np.array(v.numpy(), copy=True) for v in variables]
                for v, value in zip(variables, own):
                    v.assign(value)

        return call

    return {key: wrap(fn) for key, fn in references.items()}


def restore(model, values: List[np.ndarray]) -> None:
    """Assign the checkpoint's ``state`` group to a rebuilt model's stateful layers' states."""
    from exportkit.variables import assign

    assign(state_variables(model), values, GROUP)
