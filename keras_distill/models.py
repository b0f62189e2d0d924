"""Reference teacher and student networks for 28x28 grey images.

These are the networks the main job (``keras-distill``), the benchmarks and
the notebooks distil between. They are plain Keras 3 Sequential models of
standard layers, so they can also be converted to ``tf_keras`` for TFMOT.
"""

import keras

STUDENTS = ("cnn", "mlp")


TEACHERS = ("vgg", "wide")


def build_teacher(input_shape=(28, 28, 1), num_classes=10, seed=0, kind="vgg"):
    """A VGG-style CNN teacher that outputs logits.

    Args:
        input_shape: Shape of one image, channels last.
        num_classes: Number of classes (logits out).
        seed: Seed of the weight initialisers, so a build is reproducible.
        kind: ``"vgg"`` (two blocks of 32 and 64 filters and a 128-unit
            head, about 0.47M parameters: the main job's teacher) or
            ``"wide"`` (three blocks of 32, 64 and 128 filters and a
            256-unit head, about 0.59M parameters and 4x the compute; with
            augmentation and a cosine schedule it reaches 94% on
            Fashion-MNIST, see bench/results/sweeps/README.md).

    Returns:
        An uncompiled ``keras.Sequential``.

    Example:
    >>> build_teacher().count_params() > 400_000
    True
    >>> build_teacher(kind="wide").count_params()
    585514
    """
    if kind not in TEACHERS:
        raise ValueError(f"`kind` must be one of {TEACHERS}, got {kind!r}.")
    init = keras.initializers.GlorotUniform
    layers = keras.layers

    def conv_bn(filters, name, index):
        return [
            layers.Conv2D(filters, 3, padding="same", use_bias=False,
                          kernel_initializer=init(seed * 100 + index),
                          name=f"{name}_conv"),
            layers.BatchNormalization(momentum=0.9, name=f"{name}_bn"),
            layers.ReLU(name=f"{name}_relu"),
        ]

    blocks = conv_bn(32, "block1a", 1) + conv_bn(32, "block1b", 2) + [
        layers.MaxPooling2D(name="block1_pool")] + conv_bn(
        64, "block2a", 3) + conv_bn(64, "block2b", 4) + [
        layers.MaxPooling2D(name="block2_pool")]
    head = 128
    if kind == "wide":
        blocks += conv_bn(128, "block3a", 10) + conv_bn(128, "block3b", 11) + [
            layers.MaxPooling2D(name="block3_pool")]
        head = 256
    return keras.Sequential(
        [keras.Input(input_shape, name="image")] + blocks + [
            layers.Flatten(name="flatten"),
            layers.Dropout(0.3, seed=seed * 100 + 5, name="dropout1"),
            layers.Dense(head, activation="relu",
                         kernel_initializer=init(seed * 100 + 6), name="fc"),
            layers.Dropout(0.3, seed=seed * 100 + 7, name="dropout2"),
            layers.Dense(num_classes, kernel_initializer=init(seed * 100 + 8),
                         name="logits", dtype="float32"),
        ],
        name="teacher" if kind == "vgg" else "teacher_wide",
    )


def build_student(kind="cnn", input_shape=(28, 28, 1), num_classes=10, seed=0):
    """A small student that outputs logits.

    Args:
        kind: ``"cnn"`` (two 3x3 convolutions, 13,978 parameters on 28x28x1) or
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
    layers = keras.layers
    base = seed * 100 + 50
    if kind == "mlp":
        body = [
            layers.Flatten(name="flatten"),
            layers.Dense(32, activation="relu", kernel_initializer=init(base + 1),
                         name="fc"),
        ]
    else:
        body = [
            layers.Conv2D(8, 3, padding="same", activation="relu",
                          kernel_initializer=init(base + 1), name="block1_conv"),
            layers.MaxPooling2D(name="block1_pool"),
            layers.Conv2D(16, 3, padding="same", activation="relu",
                          kernel_initializer=init(base + 2), name="block2_conv"),
            layers.MaxPooling2D(name="block2_pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(16, activation="relu", kernel_initializer=init(base + 3),
                         name="fc"),
        ]
    return keras.Sequential(
        [keras.Input(input_shape, name="image")]
        + body
        + [layers.Dense(num_classes, kernel_initializer=init(base + 9),
                        name="logits")],
        name=f"student_{kind}",
    )
