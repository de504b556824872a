"""The built-in example model that ``python -m exportkit`` exports when given no arguments."""


def build_example_model(features: int = 8, units: int = 16, classes: int = 3):
    """A tiny MLP classifier: ``features`` inputs -> ``classes`` softmax probabilities.

    >>> model = build_example_model(features=4)
    >>> model.output_shape
    (None, 3)
    """
    import keras

    inputs = keras.Input(shape=(features,), name="features")
    hidden = keras.layers.Dense(units, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(classes, activation="softmax", name="probabilities")(hidden)
    return keras.Model(inputs, outputs, name="example_mlp")
