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
        """Conv -> BatchNorm (running statistics at inference) -> relu -> mean pool -> Dropout
        (deterministic at inference: no ``dropout`` rng) -> Dense."""

        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Conv(4, (3, 3), name="conv")(x)
            x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
            x = nn.relu(x).mean(axis=(1, 2))
            x = nn.Dropout(0.5, deterministic=not train, name="dropout")(x)
            return {"logits": nn.Dense(3, name="head")(x)}

    return CNN()


def flax_cnn_apply(variables, x):
    """Inference: BatchNorm reads ``variables['batch_stats']``."""
    return _flax_cnn_module().apply(variables, x, train=False)


@register
def flax_cnn(seed: int = 0):
    """A Flax CNN with BatchNorm statistics and Dropout, as ``(apply_fn, variables)`` for
    ``model=jax``; the statistics are random, so an export that ignored ``batch_stats`` would not
    match, and an export that applied Dropout would not either."""
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


# --- more Keras models: tokenizers, stateful, mixed precision, int8 ----------------------------

WORDPIECE_VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(" ".join(SENTENCES).split())), "##s"]


def _tokens_classifier(tokenizer, vocabulary_size: int, name: str):
    """Raw strings (shape ``()``) -> a keras-hub tokenizer -> Embedding -> pooling -> Dense."""
    text = keras.Input(shape=(), dtype="string", name="text")
    hidden = keras.layers.Embedding(vocabulary_size, 4, name="embed")(tokenizer(text))
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(hidden)
    return keras.Model(text, keras.layers.Dense(3, name="logits")(pooled), name=name)


@register
def wordpiece_tokenizer():
    """keras-hub's WordPieceTokenizer (tensorflow_text's ops) from an explicit vocabulary."""
    import keras_hub

    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=WORDPIECE_VOCABULARY, sequence_length=8, lowercase=True, name="wordpiece"
    )
    return _tokens_classifier(tokenizer, len(WORDPIECE_VOCABULARY), "wordpiece_tokenizer")


def sentencepiece_proto(vocabulary_size: int = 40) -> bytes:
    """A tiny SentencePiece model trained in memory on SENTENCES (deterministic, no downloads)."""
    import io

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 4),
        model_writer=model,
        vocab_size=vocabulary_size,
        model_type="unigram",
        normalization_rule_name="identity",
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        num_threads=1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


@register
def sentencepiece_tokenizer():
    """keras-hub's SentencePieceTokenizer (tensorflow_text's ops) over a proto trained in memory."""
    import keras_hub

    tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(
        proto=sentencepiece_proto(), sequence_length=8, name="sentencepiece"
    )
    return _tokens_classifier(tokenizer, tokenizer.vocabulary_size(), "sentencepiece_tokenizer")


@register
def bert_classifier_preprocessed():
    """keras-hub's BertTextClassifier (a tiny BertBackbone, explicit config) behind its own
    BertTextClassifierPreprocessor (BertTokenizer from a vocabulary list): raw strings -> logits."""
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(WORDPIECE_VOCABULARY),
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
    )
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer=keras_hub.tokenizers.BertTokenizer(vocabulary=WORDPIECE_VOCABULARY), sequence_length=8
    )
    classifier = keras_hub.models.BertTextClassifier(backbone=backbone, preprocessor=preprocessor, num_classes=3)
    text = keras.Input(shape=(), dtype="string", name="text")
    return keras.Model(text, classifier(preprocessor(text)), name="bert_classifier_preprocessed")


STATEFUL_BATCH = 4  # tests/test_consumers.py's BATCH: a stateful RNN keeps its state for one batch size


@register
def lstm_stateful(features: int = 3):
    """``LSTM(stateful=True)``: a fixed batch, the state carried across calls, and a non-zero state
    (from one call) when exported."""
    sequence = keras.Input(batch_size=STATEFUL_BATCH, shape=(5, features), name="sequence")
    outputs = keras.layers.Dense(2, name="out")(keras.layers.LSTM(6, stateful=True, name="lstm")(sequence))
    model = keras.Model(sequence, outputs, name="lstm_stateful")
    model(np.random.default_rng(3).standard_normal((STATEFUL_BATCH, 5, features)).astype("float32"))
    return model


def rnn_states(model):
    """The state variables of a model's stateful RNN layers (``[]`` for any other model)."""
    return [v for layer in model._flatten_layers() if getattr(layer, "stateful", False) for v in layer.states]


def _mixed(policy: str):
    keras.mixed_precision.set_global_policy(policy)
    try:
        inputs = keras.Input((6,), name="x")
        hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
        hidden = keras.layers.BatchNormalization(name="bn")(hidden)
        model = keras.Model(inputs, keras.layers.Dense(4, name="out")(hidden), name=policy)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    _randomize_batchnorm(model)
    return model


@register
def mixed_bfloat16():
    """``mixed_bfloat16``: float32 variables and input, bfloat16 compute and output."""
    return _mixed("mixed_bfloat16")


@register
def mixed_float16():
    """``mixed_float16``: float32 variables and input, float16 compute and output."""
    return _mixed("mixed_float16")


@register
def int8_quantized():
    """``model.quantize("int8")`` (Keras' int8 Dense: int8 kernel and its scale, inputs quantized
    per call)."""
    inputs = keras.Input((8,), name="x")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden), name="int8_quantized")
    model.quantize("int8")
    return model


# --- Keras on the JAX backend: exported by a process with KERAS_BACKEND=jax --------------------


def _numpy_weights(model, seed: int = 0):
    """Every float variable from NumPy (a variance from [0.5, 2]): the same weights on any backend
    and in any process, whatever its random state."""
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        if "float" not in str(variable.dtype):
            continue  # Dropout's seed
        shape = tuple(variable.shape)
        value = rng.uniform(0.5, 2.0, shape) if "variance" in variable.path else rng.normal(0.0, 0.5, shape)
        variable.assign(value.astype(str(variable.dtype)))
    return model


@register
def keras_jax_functional():
    """Two named inputs, two named outputs, BatchNorm statistics and Dropout."""
    a, b = keras.Input((6,), name="a"), keras.Input((3,), name="b")
    h = keras.layers.Concatenate(name="joined")([keras.layers.Dense(8, activation="relu", name="d1")(a), b])
    h = keras.layers.Dropout(0.5, name="dropout")(keras.layers.BatchNormalization(name="bn")(h))
    outputs = {
        "score": keras.layers.Dense(1, name="score")(h),
        "probs": keras.layers.Dense(4, activation="softmax", name="probs")(h),
    }
    return _numpy_weights(keras.Model({"a": a, "b": b}, outputs, name="keras_jax_functional"))


@keras.saving.register_keras_serializable(package="consumer_models")
class Subclassed(keras.Model):
    """A subclassed model: layers made in ``__init__``, the graph in ``call``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(5, activation="tanh", name="hidden")
        self.head = keras.layers.Dense(2, name="head")

    def call(self, x):
        return self.head(self.hidden(x)) * 3.0


@register
def keras_jax_subclassed(features: int = 7):
    model = Subclassed(name="keras_jax_subclassed")
    model(np.zeros((1, features), "float32"))  # built
    return _numpy_weights(model, seed=1)


# --- JAX libraries as (apply_fn, params) ---------------------------------------------------------


def _perturbed(params, seed: int):
    """Every leaf plus noise: no zero biases (Haiku's and Equinox's initializers may leave some)."""
    import jax

    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda a: (np.asarray(a) + rng.normal(0.0, 0.1, np.shape(a))).astype(np.asarray(a).dtype), params
    )


@register
def equinox_mlp(seed: int = 0):
    """An Equinox MLP: ``eqx.partition`` into its arrays (an ``eqx.nn.MLP`` pytree) and the rest;
    ``apply_fn`` combines them and maps over the batch."""
    import equinox as eqx
    import jax

    model = eqx.nn.MLP(5, 3, 8, 2, activation=jax.nn.tanh, key=jax.random.key(seed))
    params, static = eqx.partition(model, eqx.is_array)

    def equinox_apply(params, x):
        return jax.vmap(eqx.combine(params, static))(x)

    return equinox_apply, _perturbed(params, seed)


def _haiku_forward(x):
    import haiku as hk
    import jax

    return {"logits": hk.nets.MLP([8, 3], activation=jax.nn.tanh)(x)}


@register
def haiku_mlp(seed: int = 0):
    """A Haiku MLP: ``hk.without_apply_rng(hk.transform(f))``'s ``apply`` and its params
    (module names such as ``mlp/~/linear_0``)."""
    import haiku as hk
    import jax
    import jax.numpy as jnp

    transformed = hk.without_apply_rng(hk.transform(_haiku_forward))
    params = transformed.init(jax.random.key(seed), jnp.zeros((1, 5), jnp.float32))
    return transformed.apply, _perturbed(params, seed)


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
    factory: str = ""  # the registered factory, when it is not ``name`` (one model, two rows)
    # Keras' backend: "jax" rows are exported (and their source run) by a fresh process with
    # KERAS_BACKEND=jax, through the Python API (via="api") or the CLI (via="cli").
    keras_backend: str = "tensorflow"
    via: str = "cli"
    imports: Tuple[str, ...] = ()  # op libraries a fresh process imports before reading the export

    @property
    def target(self) -> str:
        return f"tests.consumer_models.{self.factory or self.name}"

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


def _texts(rng, batch):
    """Sentences of SENTENCES' words (and one the vocabularies lack), one string per example."""
    words = " ".join(SENTENCES).split() + ["unseen"]
    return np.array([" ".join(rng.choice(words, rng.integers(2, 7))) for _ in range(batch)]).astype(bytes)


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
        Case("wordpiece_tokenizer", "keras", lambda rng, b: {"text": _texts(rng, b)}, imports=("tensorflow_text",)),
        Case("sentencepiece_tokenizer", "keras", lambda rng, b: {"text": _texts(rng, b)}, imports=("tensorflow_text",)),
        Case(
            "bert_classifier_preprocessed",
            "keras",
            lambda rng, b: {"text": _texts(rng, b)},
            imports=("tensorflow_text",),
        ),
        Case("lstm_stateful", "keras", lambda rng, b: {"sequence": rng.standard_normal((b, 5, 3)).astype("float32")}),
        Case("mixed_bfloat16", "keras", lambda rng, b: {"x": rng.standard_normal((b, 6)).astype("float32")}),
        Case("mixed_float16", "keras", lambda rng, b: {"x": rng.standard_normal((b, 6)).astype("float32")}),
        Case("int8_quantized", "keras", lambda rng, b: {"x": rng.standard_normal((b, 8)).astype("float32")}),
        *[
            Case(
                f"keras_jax_functional_{via}",
                "keras",
                lambda rng, b: {
                    "a": rng.standard_normal((b, 6)).astype("float32"),
                    "b": rng.standard_normal((b, 3)).astype("float32"),
                },
                factory="keras_jax_functional",
                keras_backend="jax",
                via=via,
            )
            for via in ("api", "cli")
        ],
        *[
            Case(
                f"keras_jax_subclassed_{via}",
                "keras",
                lambda rng, b: {"x": rng.standard_normal((b, 7)).astype("float32")},
                factory="keras_jax_subclassed",
                keras_backend="jax",
                via=via,
            )
            for via in ("api", "cli")
        ],
        *[
            Case(
                name,
                "jax",
                lambda rng, b: {"x": rng.standard_normal((b, 5)).astype("float32")},
                overrides=("+signatures.serving_default={inputs: {x: {shape: [null, 5], dtype: float32}}}",),
                jax_shapes={"x": (None, 5)},
            )
            for name in ("equinox_mlp", "haiku_mlp")
        ],
    ]
}
assert {c.factory or c.name for c in CASES.values()} == set(REGISTRY), (
    "every registered model has a Case and every Case a model"
)
