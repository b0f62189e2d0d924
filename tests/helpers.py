"""Small models and data shared by the tests (both Keras flavours)."""

import numpy as np


def keras_module(flavour):
    if flavour == "keras":
        import keras

        return keras
    import tf_keras

    return tf_keras


def mlp(flavour, units=(16,), classes=3, features=8, softmax=False, seed=0,
        regularizer=None, batchnorm=False):
    """A Sequential MLP of the given flavour, built with fixed weights."""
    k = keras_module(flavour)
    layers = []
    first = True
    for i, u in enumerate(units):
        kwargs = {"input_shape": (features,)} if (first and flavour != "keras") else {}
        layers.append(k.layers.Dense(
            u, activation="relu", kernel_regularizer=regularizer,
            kernel_initializer=k.initializers.GlorotUniform(seed + i), **kwargs))
        first = False
        if batchnorm:
            layers.append(k.layers.BatchNormalization())
    kwargs = {"input_shape": (features,)} if (first and flavour != "keras") else {}
    layers.append(k.layers.Dense(
        classes, activation="softmax" if softmax else None,
        kernel_initializer=k.initializers.GlorotUniform(seed + 99), **kwargs))
    if flavour == "keras":
        layers.insert(0, k.Input((features,)))
    return k.Sequential(layers)


def data(n=64, features=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, classes, size=n)
    return x, y


def log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def np_distill_loss(t_logits, s_logits, y, alpha, temperature, weights=None):
    """numpy reference of the Distiller's total loss on one batch."""
    n = len(y)
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    log_q = log_softmax(s_logits)
    ce = -log_q[np.arange(n), y]
    log_pt = log_softmax(np.asarray(t_logits) / temperature)
    log_qt = log_softmax(np.asarray(s_logits) / temperature)
    kl = (np.exp(log_pt) * (log_pt - log_qt)).sum(-1) * temperature**2
    student = (w * ce).sum() / n
    distill = (w * kl).sum() / n
    return alpha * student + (1 - alpha) * distill, student, distill


def image_teacher():
    """A small Keras 3 teacher for 8x8x1 images, 4 classes (pruning/QAT tests)."""
    import keras

    init = keras.initializers.GlorotUniform
    return keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu", kernel_initializer=init(10)),
        keras.layers.Dense(4, kernel_initializer=init(11)),
    ], name="teacher")


def image_data(n=96, seed=0):
    """8x8x1 images whose class depends on the top-left quadrant's brightness."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 1)).astype("float32")
    y = (x[:, :4, :4].mean(axis=(1, 2, 3)) * 8).astype("int64") % 4
    return x, y


def subclassed_tf_keras_model():
    """A built, subclassed tf_keras model (which TFMOT cannot wrap)."""
    import tf_keras

    class Student(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = tf_keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    student = Student()
    student(np.zeros((1, 3), "float32"))
    return student


def counter(k, name):
    """A pass-through layer of Keras module ``k`` counting the batches it
    sees, in-graph (its ``calls`` weight)."""

    class Counter(k.layers.Layer):
        def build(self, input_shape):
            self.calls = self.add_weight(name="calls", shape=(), initializer="zeros",
                                         trainable=False)

        def call(self, x):
            self.calls.assign(self.calls + 1.0)
            return x

        def compute_output_shape(self, input_shape):
            return input_shape

    return Counter(name=name)


def value_and_grads(loss_fn, *arrays):
    """``loss_fn(*arrays)`` and the gradients of its sum, as numpy arrays,
    on the current Keras backend (TensorFlow or JAX)."""
    import keras
    import pytest

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        variables = [tf.Variable(a) for a in arrays]
        with tf.GradientTape() as tape:
            value = loss_fn(*variables)
        grads = tape.gradient(value, variables)
        return np.asarray(value), [None if g is None else np.asarray(g)
                                   for g in grads]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def total(*xs):
            value = loss_fn(*xs)
            return jnp.sum(value), value

        (_, value), grads = jax.value_and_grad(
            total, argnums=tuple(range(len(arrays))), has_aux=True
        )(*(jnp.asarray(a) for a in arrays))
        return np.asarray(value), [np.asarray(g) for g in grads]
    pytest.skip(f"no gradient helper for the {backend} backend")


def check_tf_function(fn, arrays, extra=(), jit_compile=False):
    """``fn(*variables, *extra)`` inside ``tf.function`` (XLA if asked)
    equals the eager value and has finite gradients (TensorFlow only)."""
    import tensorflow as tf

    eager = np.asarray(fn(*arrays, *extra))
    variables = [tf.Variable(a) for a in arrays]

    @tf.function(jit_compile=jit_compile)
    def value_and_gradients():
        with tf.GradientTape() as tape:
            value = fn(*variables, *extra)
            loss = tf.reduce_sum(value)
        return value, tape.gradient(loss, variables)

    value, grads = value_and_gradients()
    np.testing.assert_allclose(value.numpy(), eager, rtol=1e-5, atol=1e-6)
    for g in grads:
        assert np.isfinite(g.numpy()).all()


def check_jax_jit(fn, args):
    """``fn(*args)`` under ``jax.jit`` (gradients through the first two
    arguments, the rest traced too) equals the eager value, with finite
    gradients (JAX only)."""
    import jax
    import jax.numpy as jnp

    eager = np.asarray(fn(*args))

    @jax.jit
    def value_and_gradients(*xs):
        def total(a, b):
            value = fn(a, b, *xs[2:])
            return jnp.sum(value), value

        (_, value), grads = jax.value_and_grad(
            total, argnums=(0, 1), has_aux=True)(*xs[:2])
        return value, grads

    value, grads = value_and_gradients(*args)
    np.testing.assert_allclose(np.asarray(value), eager, rtol=1e-5, atol=1e-6)
    for g in grads:
        assert np.isfinite(np.asarray(g)).all()
