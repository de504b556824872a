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
    model = keras.Sequential([keras.Input((features,), name="x"),
                              keras.layers.Dense(units, activation="tanh", name="hidden"),
                              keras.layers.Dense(2, name="out")], name="seq")
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
        model.compile(optimizer="adam", loss={"score": "mse", "label": "categorical_crossentropy"},
                      metrics={"label": ["accuracy"]})
    return model


class Scale(keras.layers.Layer):
    """A custom layer with a trainable weight, not registered: it needs ``custom_objects``."""

    def __init__(self, init: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.init = init

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer=keras.initializers.Constant(self.init),
                                     name="scale")

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
