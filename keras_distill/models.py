"""Reference teacher and student networks for 28x28 grey images.

These are the networks the main job (``keras-distill``), the benchmarks and
the notebooks distil between. They are plain Keras 3 Sequential models of
standard layers, so they can also be converted to ``tf_keras`` for TFMOT.
"""

import keras

STUDENTS = ("cnn", "mlp")


def build_teacher(input_shape=(28, 28, 1), num_classes=10, seed=0):
    """A VGG-style CNN teacher (about 0.42M parameters) that outputs logits.

    Args:
        input_shape: Shape of one image, channels last.
        num_classes: Number of classes (logits out).
        seed: Seed of the weight initialisers, so a build is reproducible.

    Returns:
        An uncompiled ``keras.Sequential``.

    Example:
    >>> build_teacher().count_params() > 400_000
    True
    """
    init = keras.initializers.GlorotUniform
    s = iter(range(seed * 100, seed * 100 + 100))
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(32, 3, padding="same", use_bias=False,
                          kernel_initializer=init(next(s))),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Conv2D(32, 3, padding="same", use_bias=False,
                          kernel_initializer=init(next(s))),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", use_bias=False,
                          kernel_initializer=init(next(s))),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Conv2D(64, 3, padding="same", use_bias=False,
                          kernel_initializer=init(next(s))),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dropout(0.3, seed=next(s)),
            layers.Dense(128, activation="relu",
                         kernel_initializer=init(next(s))),
            layers.Dropout(0.3, seed=next(s)),
            layers.Dense(num_classes, kernel_initializer=init(next(s))),
        ],
        name="teacher",
    )


def build_student(kind="cnn", input_shape=(28, 28, 1), num_classes=10, seed=0):
    """A small student that outputs logits.

    Args:
        kind: ``"cnn"`` (two 3x3 convolutions, about 17k parameters) or
            ``"mlp"`` (784-32-10, about 25k parameters).
        input_shape: Shape of one image, channels last.
        num_classes: Number of classes (logits out).
        seed: Seed of the weight initialisers.

    Returns:
        An uncompiled ``keras.Sequential``.

    Example:
    >>> build_student("cnn").count_params() < build_teacher().count_params() / 10
    True
    """
    if kind not in STUDENTS:
        raise ValueError(f"`kind` must be one of {STUDENTS}, got {kind!r}.")
    init = keras.initializers.GlorotUniform
    s = iter(range(seed * 100 + 50, seed * 100 + 100))
    layers = keras.layers
    if kind == "mlp":
        body = [
            layers.Flatten(),
            layers.Dense(32, activation="relu", kernel_initializer=init(next(s))),
        ]
    else:
        body = [
            layers.Conv2D(8, 3, padding="same", activation="relu",
                          kernel_initializer=init(next(s))),
            layers.MaxPooling2D(),
            layers.Conv2D(16, 3, padding="same", activation="relu",
                          kernel_initializer=init(next(s))),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(16, activation="relu", kernel_initializer=init(next(s))),
        ]
    return keras.Sequential(
        [keras.Input(input_shape)]
        + body
        + [layers.Dense(num_classes, kernel_initializer=init(next(s)))],
        name=f"student_{kind}",
    )
