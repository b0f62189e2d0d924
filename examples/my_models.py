"""Model builders the example job files name as ``my_models:<function>``.

A builder is called as ``builder(input_shape, num_classes)`` and returns an
uncompiled Keras model that outputs logits (no softmax).

Example:
>>> tiny_cnn((32, 32, 3), 5).output_shape
(None, 5)
"""

import keras


def tiny_cnn(input_shape, num_classes):
    """A 3-block CNN of about 6k parameters for small RGB or grey images."""
    layers = keras.layers
    return keras.Sequential([
        keras.Input(input_shape),
        layers.Conv2D(8, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(num_classes),
    ], name="tiny_cnn")
