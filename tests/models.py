"""The tiny models the tests export, in a registry that refuses duplicate names.

Factories are importable ``_target_``s (``tests.models.sequential``) for the CLI, and callables
for the Python API.
"""

import keras
import numpy as np

from tests.registry import Registry

REGISTRY = Registry()
register = REGISTRY.register


@register
def sequential(units: int = 4, features: int = 6, compiled: bool = False):
    model = keras.Sequential(
        [
            keras.Input((features,), name="x"),
            keras.layers.Dense(units, activation="tanh", name="hidden"),
            keras.layers.Dense(2, name="out"),
        ],
        name="seq",
    )
    if compiled:
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    return model


@register
def functional_multi_io(compiled: bool = False):
    """Two named inputs, two named outputs."""
    image = keras.Input((5,), name="image")
    meta = keras.Input((3,), name="meta")
    joined = keras.layers.Concatenate()([image, meta])
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(joined)
    score = keras.layers.Dense(1, name="score")(hidden)
    label = keras.layers.Dense(4, activation="softmax", name="label")(hidden)
    model = keras.Model({"image": image, "meta": meta}, {"score": score, "label": label}, name="multi")
    if compiled:
        model.compile(
            optimizer="adam",
            loss={"score": "mse", "label": "categorical_crossentropy"},
            metrics={"label": ["accuracy"]},
        )
    return model


class Scale(keras.layers.Layer):
    """A custom layer with a trainable weight, not registered: it needs ``custom_objects``."""

    def __init__(self, init: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.init = init

    def build(self, input_shape):
        self.scale = self.add_weight(
            shape=(input_shape[-1],), initializer=keras.initializers.Constant(self.init), name="scale"
        )

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {**super().get_config(), "init": self.init}


@register
def custom_layer(compiled: bool = False):
    inputs = keras.Input((4,), name="x")
    outputs = keras.layers.Dense(3, name="out")(Scale(1.5, name="scale")(inputs))
    model = keras.Model(inputs, outputs, name="custom")
    if compiled:
        model.compile(optimizer="sgd", loss="mse")
    return model


class Subclassed(keras.Model):
    """A subclassed model without get_config: needs an explicit signature."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(3, name="dense")

    def call(self, x):
        return {"y": keras.ops.relu(self.dense(x)) + 1.0}


@register
def subclassed(compiled: bool = False):
    model = Subclassed(name="sub")
    if compiled:
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


class Noisy(keras.layers.Layer):
    """Different outputs on every call: verification must fail on it."""

    def call(self, x):
        import tensorflow as tf

        return x + tf.random.normal(tf.shape(x))  # a fresh draw on every call


@register
def stochastic():
    inputs = keras.Input((3,), name="x")
    return keras.Model(inputs, Noisy()(keras.layers.Dense(3)(inputs)), name="noisy")


@register
def not_a_model():
    return np.zeros(3)


class NoConfig(keras.Model):
    """Subclassed, built from a function argument: no get_config(), so no JSON config."""

    def __init__(self, activation=keras.ops.relu, **kwargs):
        super().__init__(**kwargs)
        self.activation = activation
        self.dense = keras.layers.Dense(2, name="dense")

    def call(self, x):
        return self.activation(self.dense(x))


@register
def no_config(compiled: bool = False):
    model = NoConfig(name="no_config")
    if compiled:
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


@register
def with_lambda():
    inputs = keras.Input((3,), name="x")
    return keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs))


class EagerOnlyOffset(keras.layers.Layer):
    """Adds 1 inside a traced graph and 0 when called eagerly: the export computes something
    other than the source model, deterministically, so verification must fail on it."""

    def call(self, x):
        import tensorflow as tf

        return x + (0.0 if tf.executing_eagerly() else 1.0)


@register
def graph_differs():
    inputs = keras.Input((3,), name="x")
    return keras.Model(inputs, EagerOnlyOffset()(keras.layers.Dense(2, name="out")(inputs)), name="differs")


# --- compiled models with any Keras loss (train/eval graphs), and functions in the JSON config ---


@register
def sparse_classifier(loss="sparse_categorical_crossentropy", activation="softmax", compiled: bool = True):
    """A classifier over 4 classes trained on integer class ids (no dropout: train steps compare
    exactly with Keras')."""
    model = keras.Sequential(
        [
            keras.Input((6,), name="x"),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(4, activation=activation, name="out"),
        ],
        name="classifier",
    )
    if compiled:
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss, metrics=["accuracy"])
    return model


def _heads(x):
    hidden = keras.layers.Dense(8, activation="tanh", name="hidden")(x)
    return (
        keras.layers.Dense(1, name="score")(hidden),
        keras.layers.Dense(3, activation="softmax", name="label")(hidden),
        keras.layers.Dense(2, name="aux")(hidden),
    )


@register
def dict_heads(compiled: bool = True):
    """Three named outputs: ``score`` (mse), ``label`` (sparse CE), ``aux`` with no loss, weighted
    losses and per-output metrics."""
    x = keras.Input((6,), name="x")
    score, label, aux = _heads(x)
    model = keras.Model(x, {"score": score, "label": label, "aux": aux}, name="dict_heads")
    if compiled:
        model.compile(
            optimizer=keras.optimizers.Adam(0.01),
            loss={"score": "mse", "label": "sparse_categorical_crossentropy"},
            loss_weights={"score": 0.5, "label": 2.0},
            metrics={"label": ["accuracy"], "score": ["mae"]},
        )
    return model


@register
def list_heads(compiled: bool = True):
    """Two outputs as a list, losses and metrics given as lists (one entry per output)."""
    x = keras.Input((6,), name="x")
    score, label, _ = _heads(x)
    model = keras.Model(x, [score, label], name="list_heads")
    if compiled:
        model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            loss=["mse", keras.losses.SparseCategoricalCrossentropy()],
            loss_weights=[0.3, 1.0],
            metrics=[["mae"], ["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=2)]],
        )
    return model


def scaled_tanh(x):
    """A custom activation function: serialized by name, so loading needs it in custom_objects."""
    return keras.ops.tanh(x) * 1.5


def half_squared_error(y_true, y_pred):
    """A custom loss function."""
    return 0.5 * keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)


@register
def with_functions(compiled: bool = True):
    """Python functions in the JSON config: a custom activation, a custom loss, Keras' own
    ``categorical_accuracy`` function as a metric."""
    x = keras.Input((5,), name="x")
    hidden = keras.layers.Dense(6, activation=scaled_tanh, name="hidden")(x)
    model = keras.Model(x, keras.layers.Dense(3, activation="softmax", name="out")(hidden), name="functions")
    if compiled:
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=half_squared_error,
            metrics=[keras.metrics.categorical_accuracy, keras.losses.mean_squared_error],
        )
    return model


class DictSubclassed(keras.Model):
    """A subclassed model called with a dict of two inputs."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2, name="dense")

    def call(self, inputs):
        return self.dense(keras.ops.concatenate([inputs["a"], inputs["b"] * 2.0], axis=-1))


@register
def dict_subclassed():
    return DictSubclassed(name="dict_sub")
