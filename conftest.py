"""Test set-up: quiet TensorFlow, two logical CPUs for MirroredStrategy tests.

The suite runs twice in CI: on Keras 3's TensorFlow backend (everything) and
with ``KERAS_BACKEND=jax`` (the distillers, terms, losses and taps). Under a
backend other than TensorFlow, tests of ``tf_keras`` models (a parameter id
containing ``tf_keras``: ``tf_keras`` shares tensors with TensorFlow only)
and tests marked ``@pytest.mark.tensorflow`` (``tf.distribute``,
``tf.function``, ``tf.debugging``) are skipped, with that reason.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

# The multi-process tests' worker scripts set up their own process
# (KERAS_BACKEND, TF_CONFIG): never imported by --doctest-modules.
collect_ignore_glob = ["tests/_*_worker.py"]
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )
except RuntimeError:  # TF already initialised by an earlier import.
    pass


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "tensorflow: needs Keras 3's TensorFlow backend (skipped on others)",
    )


def pytest_collection_modifyitems(config, items):
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    tf_keras_skip = pytest.mark.skip(
        reason=f"tf_keras models need the TensorFlow backend, not {backend}")
    tf_skip = pytest.mark.skip(
        reason=f"uses TensorFlow-only APIs; backend is {backend}")
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "tf_keras" in callspec.id:
            item.add_marker(tf_keras_skip)
        elif item.get_closest_marker("tensorflow") is not None:
            item.add_marker(tf_skip)


@pytest.fixture(scope="module")
def jax_float64():
    """float64 inputs stay float64 on JAX only with ``jax_enable_x64``: on
    for the module that asks (``pytest.mark.usefixtures("jax_float64")``),
    as it was afterwards. A no-op on other backends."""
    import keras

    if keras.backend.backend() != "jax":
        yield
        return
    import jax

    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
