"""to_tf_keras: Keras 3 -> tf_keras with identical weights and outputs."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_distill._compat import import_tfmot
from keras_distill._introspect import iter_layers
from keras_distill.convert import SUPPORTED_LAYERS, to_tf_keras
from keras_distill.models import build_student, build_teacher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
L = keras.layers


def assert_same(model, x, atol=1e-5):
    import tf_keras

    converted = to_tf_keras(model)
    assert isinstance(converted, tf_keras.Model)
    assert converted.name == model.name
    expected = model.predict(x, verbose=0)
    got = converted.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=atol)
    assert len(converted.weights) == len(model.weights)
    originals = {l.name: l for l in [model, *iter_layers(model)] if l.weights}
    twins = [l for l in [converted, *iter_layers(converted)] if l.weights
             and not isinstance(l, tf_keras.Model)]
    assert sorted(l.name for l in twins) == sorted(
        n for n, l in originals.items() if not isinstance(l, keras.Model))
    for twin in twins:
        for a, b in zip(originals[twin.name].get_weights(), twin.get_weights()):
            np.testing.assert_array_equal(a, b)
    return converted


def randomise_batchnorm(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in iter_layers(model):
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                               rng.normal(0, 0.1, beta.shape).astype("float32"),
                               rng.normal(0, 0.1, mean.shape).astype("float32"),
                               rng.uniform(0.5, 1.5, var.shape).astype("float32")])


def images(n=4, shape=(28, 28, 1), seed=0):
    return np.random.default_rng(seed).random((n,) + shape).astype("float32")


def test_project_teacher_and_students():
    teacher = build_teacher()
    randomise_batchnorm(teacher)
    converted = assert_same(teacher, images())
    assert [l.name for l in converted.layers] == [l.name for l in teacher.layers]
    for kind in ("cnn", "mlp"):
        student = build_student(kind)
        converted = assert_same(student, images())
        assert [l.name for l in converted.layers] == [l.name for l in student.layers]


def residual_model():
    inputs = keras.Input((12, 12, 3), name="image")
    x = L.Rescaling(1 / 2.0, offset=0.1)(inputs)
    x = L.ZeroPadding2D(1)(x)
    x = L.Conv2D(8, 3, name="stem")(x)
    x = L.BatchNormalization()(x)
    y = L.Activation("relu")(x)
    r = L.DepthwiseConv2D(3, padding="same")(y)
    r = L.ReLU(max_value=6.0)(r)
    r = L.Conv2D(8, 1, use_bias=False)(r)
    s = L.Add(name="residual")([y, r])
    s2 = L.SeparableConv2D(8, 3, padding="same", activation="swish")(s)
    c = L.Concatenate()([s, s2])
    c = L.AveragePooling2D(2)(c)
    c = L.MaxPooling2D()(c)
    g = L.GlobalAveragePooling2D()(c)
    g = L.Dropout(0.2)(g)
    g = L.Dense(10, kernel_regularizer=keras.regularizers.L2(1e-3))(g)
    g = L.LeakyReLU(0.2)(g)
    return keras.Model(inputs, L.Softmax()(g), name="residual_net")


def test_functional_with_residual_add():
    model = residual_model()
    randomise_batchnorm(model)
    converted = assert_same(model, images(3, (12, 12, 3)))
    assert type(converted.get_layer("residual")).__name__ == "Add"
    # The regulariser came along: same loss value.
    np.testing.assert_allclose(float(sum(converted.losses)),
                               float(sum(model.losses)), rtol=1e-6)


def test_conv1d_and_other_layers():
    model = keras.Sequential([
        keras.Input((20, 4)), L.Conv1D(6, 3, activation="tanh"),
        L.MaxPooling1D(), L.AveragePooling1D(2), L.Flatten(), L.Reshape((4, 6)),
        L.Permute((2, 1)), L.Flatten(), L.Dense(5), L.ELU(), L.PReLU(),
        L.LayerNormalization(),
    ], name="conv1d_net")
    assert_same(model, images(2, (20, 4)))


def test_nested_model_and_shared_layer():
    inner = keras.Sequential([keras.Input((8,)), L.Dense(8, activation="relu"),
                              L.BatchNormalization()], name="inner")
    randomise_batchnorm(inner)
    inputs = keras.Input((8,))
    shared = L.Dense(8, name="shared")
    h = inner(inputs)
    h = L.Add()([shared(h), shared(shared(h))])
    model = keras.Model(inputs, L.Dense(3)(h), name="outer")
    converted = assert_same(model, images(2, (8,)))
    assert len(converted.weights) == len(model.weights)  # shared stays shared
    assert type(converted.get_layer("inner")).__name__ == "Sequential"


def test_converted_model_trains_and_is_independent():
    import tf_keras

    model = build_student("mlp")
    before = [w.numpy().copy() for w in model.weights]
    converted = to_tf_keras(model)
    converted.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    converted.fit(images(32), np.zeros(32, "int64"), epochs=1, verbose=0)
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)


def test_tf_keras_model_returned_unchanged():
    import tf_keras

    model = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
    assert to_tf_keras(model) is model


def test_supported_layers_listed():
    for name in ("Dense", "Conv2D", "DepthwiseConv2D", "SeparableConv2D",
                 "BatchNormalization", "Add", "Concatenate", "Rescaling"):
        assert name in SUPPORTED_LAYERS


# -- errors ---------------------------------------------------------------------


class Scale(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_custom_layer_is_named():
    model = keras.Sequential([keras.Input((3,)), Scale(name="double"), L.Dense(2)])
    with pytest.raises(ValueError, match=r"'double'.*Scale.*custom layer"):
        to_tf_keras(model)


def test_subclass_of_builtin_layer_counts_as_custom():
    class MyDense(L.Dense):
        pass

    model = keras.Sequential([keras.Input((3,)), MyDense(2, name="mine")])
    with pytest.raises(ValueError, match=r"'mine'.*MyDense.*custom layer"):
        to_tf_keras(model)


def test_unsupported_layer_type():
    model = keras.Sequential([keras.Input((5, 3)), L.LSTM(4, name="rnn")])
    with pytest.raises(ValueError, match=r"'rnn'.*LSTM.*not supported"):
        to_tf_keras(model)


def test_subclassed_model():
    model = Subclassed()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed model.*Sequential or a Functional"):
        to_tf_keras(model)


def test_ops_call_in_functional_model():
    inputs = keras.Input((3,))
    outputs = L.Dense(2)(keras.ops.add(inputs, 1.0))
    with pytest.raises(ValueError, match=r"keras.ops. call, not a layer.*keras.layers.Add"):
        to_tf_keras(keras.Model(inputs, outputs))


def test_lora_dense():
    model = keras.Sequential([keras.Input((3,)), L.Dense(4, name="d")])
    model.layers[0].enable_lora(2)
    with pytest.raises(ValueError, match=r"'d'.*lora_rank=2"):
        to_tf_keras(model)


def test_unbuilt_model():
    with pytest.raises(ValueError, match="not built"):
        to_tf_keras(keras.Sequential([L.Dense(2)]))


def test_not_a_model():
    with pytest.raises(TypeError, match="must be a Keras model"):
        to_tf_keras("model")


# -- TFMOT import without side effects -------------------------------------------


def test_import_tfmot_keeps_environment_in_process():
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    tfmot = import_tfmot()
    assert os.environ.get("TF_USE_LEGACY_KERAS") == before
    assert hasattr(tfmot, "sparsity") and hasattr(tfmot, "quantization")


ISOLATION_SCRIPT = textwrap.dedent("""
    import json, os
    from keras_distill._compat import import_tfmot
    import_tfmot()
    import tensorflow as tf
    print("RESULT " + json.dumps({
        "env": os.environ.get("TF_USE_LEGACY_KERAS"),
        "tf_keras_version": tf.keras.version(),
    }))
""")


def test_import_tfmot_in_fresh_process_leaves_tf_keras_alone():
    # A fresh process where tf.keras was never touched: a bare TFMOT import
    # would make tf.keras Keras 2 there (DESIGN.md section 5).
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_USE_LEGACY_KERAS", None)
    run = subprocess.run([sys.executable, "-c", ISOLATION_SCRIPT], capture_output=True,
                         text=True, env=env, timeout=300)
    lines = [l for l in run.stdout.splitlines() if l.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["env"] is None
    assert result["tf_keras_version"].startswith("3.")


# -- the output layer, through public API (keras_distill._compat) ----------------


@pytest.mark.parametrize("flavour", ["keras", "tf_keras"])
def test_output_layer_of_nested_and_shared_layers(flavour):
    from keras_distill import _compat, _introspect
    from tests.helpers import keras_module

    k = keras_module(flavour)
    inputs = k.Input((4,))
    hidden = k.layers.Dense(3, name="hidden")(inputs)
    head = k.Sequential([k.Input((3,)), k.layers.Dense(2, activation="softmax")],
                        name="head")
    model = k.Model(inputs, head(hidden))
    assert _compat.output_layer(model) is head
    assert _compat.ends_in_softmax(model) is True
    shared = k.layers.Dense(4, name="shared")
    model = k.Model(inputs, shared(shared(inputs)))
    assert _compat.output_layer(model) is shared
    assert _compat.ends_in_softmax(model) is False
    assert _compat.output_layer(k.Model(inputs, [hidden, hidden])) is None
    assert _introspect.is_graph_model(model)
    outer = k.Sequential([k.Input((3,)), head])
    assert [l.name for l in _introspect.iter_layers(outer)] == ["head", head.layers[0].name]
    assert [l.name for l in _introspect.iter_layers(outer, nested=False)] == ["head"]


def test_subclassed_models_are_not_graph_models():
    from keras_distill import _introspect
    from tests.helpers import subclassed_tf_keras_model

    assert not _introspect.is_graph_model(subclassed_tf_keras_model())


def test_input_names_are_kept():
    inputs = keras.Input((3,), name="pixels")
    functional = keras.Model(inputs, L.Dense(2)(inputs))
    assert to_tf_keras(functional).inputs[0].name.startswith("pixels")
    sequential = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    converted = to_tf_keras(sequential)
    assert converted.get_config()["layers"][0]["config"]["name"] == (
        sequential.get_config()["layers"][0]["config"]["name"])


# -- the private Keras attributes, in one module (keras_distill._keras_private) --


@pytest.mark.parametrize("flavour", ["keras", "tf_keras"])
def test_tracked_sublayers(flavour):
    from keras_distill import _keras_private
    from tests.helpers import keras_module

    k = keras_module(flavour)

    class Block(k.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.first = k.layers.Dense(2, name="first")
            self.second = k.layers.Dense(2, name="second")

        def call(self, x):
            return self.second(self.first(x))

    block = Block(name="block")
    block(np.zeros((1, 3), "float32"))
    assert [l.name for l in _keras_private.tracked_sublayers(block)] == [
        "first", "second"]
    wrapper = k.layers.TimeDistributed(k.layers.Dense(2, name="inner"))
    assert [l.name for l in _keras_private.tracked_sublayers(wrapper)] == ["inner"]
    assert _keras_private.tracked_sublayers(k.layers.Dense(2)) == []
    assert _keras_private.tracked_sublayers(object()) == []


def test_private_keras_attributes_only_in_keras_private():
    import pathlib
    import re

    package = pathlib.Path(__file__).resolve().parents[1] / "keras_distill"
    private = re.compile(r"_flatten_layers|_run_through_graph|\b_tracker\b")
    users = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                   if private.search(p.read_text()))
    assert users == ["_keras_private.py"]
