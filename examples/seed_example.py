"""TF 1.14's own example for tf.keras.experimental.export_saved_model, as written, with exportkit
in place of tf.keras.experimental (tf.keras is Keras 3 on TensorFlow 2.21)."""
import tensorflow as tf

import exportkit

# Create a tf.keras model.
model = tf.keras.Sequential()
model.add(tf.keras.layers.Dense(1, input_shape=[10]))
model.summary()

# Save the tf.keras model in the SavedModel format.
path = '/tmp/simple_keras_model'
exportkit.export_saved_model(model, path)

# Load the saved keras model back.
new_model = exportkit.load_from_saved_model(path)
new_model.summary()
