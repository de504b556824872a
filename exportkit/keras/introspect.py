"""What a Keras model says about the values its inputs take, so verify generates inputs the
model accepts: ids below an ``Embedding``'s ``input_dim``, words of a lookup layer's vocabulary.

The functional graph is walked from each model input to the layers that read it, through
layers that pass values on unchanged (``Reshape``, ``Flatten``...) and into nested functional
models. The result is a plain dict (``ExportContext.input_hints``), so the verify stage needs
no Keras:

>>> input_hints(keras_hub.models.BertBackbone(vocabulary_size=50, ...))
{'token_ids': {'low': 0, 'high': 50, 'integer': True, 'origin': "ReversibleEmbedding 'token_embedding' (input_dim 50)"},
 'segment_ids': {'low': 0, 'high': 2, ...}}
"""

from typing import Any, Dict, List, Optional

from exportkit.keras.calls import input_name, known_inputs

# Layers whose output holds the same values as their input (only the layout changes).
PASS_THROUGH = {
    "Reshape",
    "Flatten",
    "Permute",
    "RepeatVector",
    "Identity",
    "Masking",
    "Cast",
    "ExpandDims",
    "Squeeze",
    "InputLayer",
}
MAX_DEPTH = 8


def input_hints(model) -> Dict[str, Dict[str, Any]]:
    """Input name -> ``{"low", "high", "integer"}`` or ``{"values", "sentence"}``, with ``origin``
    (the layer it came from); inputs nothing is known about are left out."""
    functional = getattr(model, "_functional", None) or model  # a Sequential wraps a Functional
    hints = {}
    for tensor in known_inputs(functional) or []:
        hint = tensor_hint(functional, tensor, 0)
        if hint:
            hints[input_name(tensor)] = hint
    return hints


def tensor_hint(functional, tensor, depth: int) -> Optional[Dict[str, Any]]:
    """The tightest hint of every layer reading ``tensor`` in ``functional``."""
    found: List[Dict[str, Any]] = []
    for layer, node, position in consumers(functional, tensor):
        hint = layer_hint(layer)
        if hint is None and depth < MAX_DEPTH:
            inner = known_inputs(layer) if hasattr(layer, "_operations") else None
            if inner and len(inner) == len(node.input_tensors):  # a nested functional model
                hint = tensor_hint(layer, inner[position], depth + 1)
            elif type(layer).__name__ in PASS_THROUGH:
                hints = [tensor_hint(functional, out, depth + 1) for out in node.output_tensors]
                hint = merge([h for h in hints if h])
        if hint:
            found.append(hint)
    return merge(found)


def consumers(functional, tensor):
    """(layer, node, position of ``tensor`` among the node's inputs) for each use in this graph."""
    for op in getattr(functional, "_operations", []) or []:
        for node in getattr(op, "_inbound_nodes", []) or []:
            for position, t in enumerate(node.input_tensors):
                if t is tensor:
                    yield op, node, position


def layer_hint(layer) -> Optional[Dict[str, Any]]:
    kind = type(layer).__name__
    if hasattr(layer, "get_vocabulary") and callable(layer.get_vocabulary):
        return vocabulary_hint(layer, kind)
    for attribute in ("input_dim", "vocabulary_size", "num_tokens"):  # Embedding, keras-hub, CategoryEncoding
        size = getattr(layer, attribute, None)
        if isinstance(size, int) and size > 0:
            return {"low": 0, "high": size, "integer": True, "origin": f"{kind} {layer.name!r} ({attribute} {size})"}
    return None


def vocabulary_hint(layer, kind: str) -> Optional[Dict[str, Any]]:
    """The vocabulary a lookup layer reads (``StringLookup``, ``IntegerLookup``, ``TextVectorization``),
    less its mask and out-of-vocabulary tokens; None while it has none (not adapted)."""
    try:
        vocabulary = list(layer.get_vocabulary())
    except Exception:  # noqa: BLE001 - a layer without a vocabulary yet says nothing
        return None
    special = {getattr(layer, "mask_token", None), getattr(layer, "oov_token", None), "", "[UNK]", -1}
    words = [w.decode() if isinstance(w, bytes) else w.item() if hasattr(w, "item") else w for w in vocabulary]
    words = [w for w in words if w not in special]
    if not words:
        return None
    hint: Dict[str, Any] = {"values": words, "origin": f"{kind} {layer.name!r} (its vocabulary of {len(words)})"}
    if kind == "TextVectorization" and getattr(layer, "_split", None) == "whitespace":
        hint["sentence"] = True
    return hint


def merge(hints: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """One hint from several readers: the narrowest range (a vocabulary wins over a range)."""
    if not hints:
        return None
    vocabularies = [h for h in hints if "values" in h]
    if vocabularies:
        return vocabularies[0]
    return min(hints, key=lambda h: h["high"] - h["low"])
