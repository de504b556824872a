"""A user's own model module, as the worked example of docs/cli.md ("Your own model and experiment
file") uses it.

python -m exportkit model=keras model.build._target_=my_models.classifier +model.build.units=32
"""

import keras


def classifier(features: int = 10, units: int = 16, classes: int = 4, dropout: float = 0.1):
    """A small classifier; dropout is inactive at inference, so the export verifies exactly."""
    inputs = keras.Input((features,), name="features")
    x = keras.layers.Dense(units, activation="relu", name="hidden")(inputs)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="classifier")
