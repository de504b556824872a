"""The consumer matrix's models: from libraries nobody here wrote, built without downloads.

Each factory is an importable ``_target_`` (``tests.consumer_models.mobilenet_v2``), registered in
a registry that refuses duplicate names, and tiny so the whole matrix stays fast on 2 cores.
``CASES`` says, per factory, how the test drives it: the export's extra overrides, inputs the
model accepts (token ids below the vocabulary, segment ids 0/1, words of the adapted
vocabulary, a dynamic sequence length other than verify's), and targets for compiled models.

>>> case = CASES["text_classifier"]
>>> model = text_classifier()
>>> model(case.tensors(case.inputs(batch=2)))  # doctest: +SKIP
"""

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import keras
import numpy as np

from tests.registry import Registry

REGISTRY = Registry()
register = REGISTRY.register

SENTENCES = [
    "the cat sat on the mat",
    "a dog ate my homework",
    "the quick brown fox",
    "jumps over the lazy dog",
    "my cat likes the dog",
]
COLORS = ["red", "green", "blue"]
SIZES = [3, 5, 7, 11]
VOCABULARY_SIZE, MAX_SEQUENCE_LENGTH = 50, 16


def _randomize_batchnorm(model, seed: int = 0) -> None:
    """Non-trivial moving statistics: a loader that drops them (mean 0, variance 1) shows."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = tuple(layer.moving_mean.shape)
            layer.moving_mean.assign(rng.normal(0.0, 0.5, shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))


@register
def mobilenet_v2():
    """keras.applications MobileNetV2, random weights, 32x32 input; logits (no softmax) so the
    comparison sees the deep net's own numbers."""
    image = keras.Input((32, 32, 3), name="image")  # else the input is named by a global counter
    model = keras.applications.MobileNetV2(
        input_tensor=image, alpha=0.35, weights=None, classes=5, classifier_activation=None
    )
    _randomize_batchnorm(model)
    return model


@register
def bert_tiny():
    """keras-hub BertBackbone from an explicit config (no preset): token_ids, segment_ids,
    padding_mask -> sequence_output, pooled_output."""
    import keras_hub

    return keras_hub.models.BertBackbone(
        vocabulary_size=VOCABULARY_SIZE,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
    )


@register
def gpt2_tiny():
    """keras-hub GPT2Backbone from an explicit config (no preset): token_ids, padding_mask."""
    import keras_hub

    return keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCABULARY_SIZE,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
    )


@register
def text_classifier():
    """Raw strings -> TextVectorization (adapted: a lookup table) -> Embedding -> pooling -> Dense."""
    vectorize = keras.layers.TextVectorization(max_tokens=24, output_sequence_length=8, name="vectorize")
    vectorize.adapt(SENTENCES)
    text = keras.Input((1,), dtype="string", name="text")
    x = keras.layers.Embedding(24, 6, name="embedding")(vectorize(text))
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(text, outputs, name="text_classifier")


@register
def lookup_dict():
    """A dict of inputs: StringLookup and IntegerLookup (adapted, one-hot) + Normalization (adapted)."""
    rng = np.random.default_rng(1)
    color_lookup = keras.layers.StringLookup(output_mode="one_hot", name="color_lookup")
    color_lookup.adapt(np.array(COLORS * 2))
    size_lookup = keras.layers.IntegerLookup(output_mode="one_hot", name="size_lookup")
    size_lookup.adapt(np.array(SIZES, dtype="int64"))
    normalize = keras.layers.Normalization(name="normalize")
    normalize.adapt(rng.normal(5.0, 3.0, (64, 3)).astype("float32"))
    color = keras.Input((1,), dtype="string", name="color")
    size = keras.Input((1,), dtype="int64", name="size")
    amount = keras.Input((3,), dtype="float32", name="amount")
    joined = keras.layers.Concatenate(name="joined")([color_lookup(color), size_lookup(size), normalize(amount)])
    outputs = keras.layers.Dense(2, name="score")(joined)
    return keras.Model({"color": color, "size": size, "amount": amount}, outputs, name="lookup_dict")


@register
def lstm_varlen(features: int = 4):
    """An LSTM over sequences of any length: input shape [None, None, features]."""
    sequence = keras.Input((None, features), name="sequence")
    x = keras.layers.LSTM(6, name="lstm")(sequence)
    outputs = keras.layers.Dense(2, name="out")(x)
    return keras.Model(sequence, outputs, name="lstm_varlen")


@register
def bn_dropout_sparse(features: int = 10, classes: int = 4):
    """The most common Keras set-up: BatchNorm + Dropout, softmax, sparse categorical cross-entropy."""
    x_in = keras.Input((features,), name="features")
    x = keras.layers.Dense(16, name="hidden")(x_in)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Dropout(0.3, name="dropout")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(x_in, outputs, name="bn_dropout_sparse")
    _randomize_batchnorm(model)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@register
def dict_io_compiled():
    """Two named inputs, two named outputs, a different loss (and weight) per output."""
    a = keras.Input((6,), name="a")
    b = keras.Input((3,), name="b")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(keras.layers.Concatenate()([a, b]))
    value = keras.layers.Dense(1, name="value")(hidden)
    klass = keras.layers.Dense(3, activation="softmax", name="klass")(hidden)
    model = keras.Model({"a": a, "b": b}, {"value": value, "klass": klass}, name="dict_io")
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss={"value": "mse", "klass": "categorical_crossentropy"},
        loss_weights={"value": 0.5, "klass": 1.0},
        metrics={"klass": ["accuracy"]},
    )
    return model


def _flax_cnn_module():
    import flax.linen as nn

    class CNN(nn.Module):
        """Conv -> BatchNorm (running statistics at inference) -> relu -> mean pool -> Dense."""

        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Conv(4, (3, 3), name="conv")(x)
            x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
            x = nn.relu(x).mean(axis=(1, 2))
            return {"logits": nn.Dense(3, name="head")(x)}

    return CNN()


def flax_cnn_apply(variables, x):
    """Inference: BatchNorm reads ``variables['batch_stats']``."""
    return _flax_cnn_module().apply(variables, x, train=False)


@register
def flax_cnn(seed: int = 0):
    """A Flax CNN with BatchNorm statistics, as ``(apply_fn, variables)`` for ``model=jax``; the
    statistics are random, so an export that ignored ``batch_stats`` would not match."""
    import jax
    import jax.numpy as jnp

    variables = _flax_cnn_module().init(jax.random.key(seed), jnp.zeros((1, 8, 8, 3), jnp.float32))
    rng = np.random.default_rng(seed)
    stats = variables["batch_stats"]["bn"]
    batch_stats = {
        "bn": {
            "mean": rng.normal(0.0, 0.5, stats["mean"].shape).astype("float32"),
            "var": rng.uniform(0.5, 2.0, stats["var"].shape).astype("float32"),
        }
    }
    return flax_cnn_apply, {"params": variables["params"], "batch_stats": batch_stats}


# --- how the matrix drives each model -------------------------------------------------------


@dataclass
class Case:
    """One row of the matrix: the factory, how it is exported, and data it accepts."""

    name: str
    source: str  # "keras" or "jax"
    make_inputs: Callable[[np.random.Generator, int], Dict[str, np.ndarray]]
    overrides: Tuple[str, ...] = ()  # extra export overrides (signatures of a JAX model)
    make_targets: Optional[Callable[[np.random.Generator, int], object]] = None  # compiled models
    jax_shapes: Dict[str, Tuple[Optional[int], ...]] = field(default_factory=dict)  # JAX: input -> shape

    @property
    def target(self) -> str:
        return f"tests.consumer_models.{self.name}"

    @property
    def compiled(self) -> bool:
        return self.make_targets is not None

    def inputs(self, batch: int = 3, seed: int = 0) -> Dict[str, np.ndarray]:
        return self.make_inputs(np.random.default_rng(seed), batch)

    def targets(self, batch: int = 3, seed: int = 0):
        return self.make_targets(np.random.default_rng(seed + 1000), batch)

    @staticmethod
    def tensors(inputs: Dict[str, np.ndarray]):
        """What the source model is called with: the one tensor, or the dict by input name."""
        import tensorflow as tf

        tensors = {k: tf.constant(v) for k, v in inputs.items()}
        return next(iter(tensors.values())) if len(tensors) == 1 else tensors


SEQ = 5  # a dynamic sequence length other than verify's default probe (2)


def _tokens(rng, batch, names=("token_ids", "padding_mask")):
    out = {
        "token_ids": rng.integers(1, VOCABULARY_SIZE, (batch, SEQ)).astype("int32"),
        "padding_mask": np.ones((batch, SEQ), "int32"),
    }
    out["padding_mask"][0, -2:] = 0  # a padded row
    if "segment_ids" in names:
        out["segment_ids"] = np.zeros((batch, SEQ), "int32")
        out["segment_ids"][:, SEQ // 2 :] = 1
    return {k: out[k] for k in names}


def _words(rng, batch):
    words = " ".join(SENTENCES).split() + ["unseen"]
    return np.array([[" ".join(rng.choice(words, rng.integers(2, 7)))] for _ in range(batch)], dtype=object)


CASES: Dict[str, Case] = {
    c.name: c
    for c in [
        Case("mobilenet_v2", "keras", lambda rng, b: {"image": rng.uniform(-1, 1, (b, 32, 32, 3)).astype("float32")}),
        Case("bert_tiny", "keras", lambda rng, b: _tokens(rng, b, ("padding_mask", "segment_ids", "token_ids"))),
        Case("gpt2_tiny", "keras", lambda rng, b: _tokens(rng, b, ("padding_mask", "token_ids"))),
        Case("text_classifier", "keras", lambda rng, b: {"text": _words(rng, b).astype(bytes)}),
        Case(
            "lookup_dict",
            "keras",
            lambda rng, b: {
                "color": np.array([[c] for c in rng.choice(COLORS + ["purple"], b)]).astype(bytes),
                "size": rng.choice(SIZES + [4], (b, 1)).astype("int64"),
                "amount": rng.normal(5.0, 3.0, (b, 3)).astype("float32"),
            },
        ),
        Case(
            "lstm_varlen", "keras", lambda rng, b: {"sequence": rng.standard_normal((b, SEQ + 2, 4)).astype("float32")}
        ),
        Case(
            "bn_dropout_sparse",
            "keras",
            lambda rng, b: {"features": rng.standard_normal((b, 10)).astype("float32")},
            make_targets=lambda rng, b: rng.integers(0, 4, (b,)).astype("int64"),
        ),
        Case(
            "dict_io_compiled",
            "keras",
            lambda rng, b: {
                "a": rng.standard_normal((b, 6)).astype("float32"),
                "b": rng.standard_normal((b, 3)).astype("float32"),
            },
            make_targets=lambda rng, b: {
                "value": rng.standard_normal((b, 1)).astype("float32"),
                "klass": np.eye(3, dtype="float32")[rng.integers(0, 3, b)],
            },
        ),
        Case(
            "flax_cnn",
            "jax",
            lambda rng, b: {"x": rng.standard_normal((b, 8, 8, 3)).astype("float32")},
            overrides=("+signatures.serving_default={inputs: {x: {shape: [null, 8, 8, 3], dtype: float32}}}",),
            jax_shapes={"x": (None, 8, 8, 3)},
        ),
    ]
}
assert set(CASES) == set(REGISTRY), "every registered model has a Case and every Case a model"
