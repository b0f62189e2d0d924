"""keras_distill.taps: feature taps through public Keras API, both flavours.

Keras 3 cases also run under ``KERAS_BACKEND=jax``; tf_keras cases need the
TensorFlow backend and are skipped otherwise.
"""

import keras
import numpy as np
import pytest

from keras_distill import _tap_graph
from keras_distill.taps import Taps, tap_model
from helpers import counter

FLAVOURS = [
    "keras",
    pytest.param("tf_keras", marks=pytest.mark.skipif(
        keras.backend.backend() != "tensorflow",
        reason="tf_keras needs the TensorFlow backend")),
]


# ------------------------------------------------------------------ helpers
def kmod(flavour):
    if flavour == "keras":
        return keras
    import tf_keras

    return tf_keras


def np_(t):
    """A tensor of either flavour and any backend, as numpy."""
    if hasattr(t, "numpy"):
        return t.numpy()
    return np.asarray(keras.ops.convert_to_numpy(t))


def data(n=6, features=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, features)).astype("float32")


def init(k, seed):
    return k.initializers.GlorotUniform(seed)


def flat_model(flavour, sequential):
    """x -> hidden1 (6) -> hidden2 (5) -> logits (3)."""
    k = kmod(flavour)
    layers = [
        k.layers.Dense(6, activation="relu", name="hidden1", kernel_initializer=init(k, 1)),
        k.layers.Dense(5, activation="relu", name="hidden2", kernel_initializer=init(k, 2)),
        k.layers.Dense(3, name="logits", kernel_initializer=init(k, 3)),
    ]
    if sequential:
        return k.Sequential([k.Input((8,))] + layers, name="flat")
    x = inputs = k.Input((8,), name="x")
    for layer in layers:
        x = layer(x)
    return k.Model(inputs, x, name="flat")


def nested_model(flavour, inner_sequential=True):
    """outer(x) = head(backbone(x)), backbone(x) = embed(block(x)),
    block(x) = conv(x): two levels of nesting."""
    k = kmod(flavour)
    conv = k.layers.Dense(7, activation="relu", name="conv", kernel_initializer=init(k, 4))
    if inner_sequential:
        block = k.Sequential([k.Input((8,)), conv], name="block")
    else:
        bx = k.Input((8,))
        block = k.Model(bx, conv(bx), name="block")
    bx = k.Input((8,))
    embed = k.layers.Dense(5, activation="relu", name="embed", kernel_initializer=init(k, 5))
    backbone = k.Model(bx, embed(block(bx)), name="backbone")
    x = k.Input((8,), name="x")
    head = k.layers.Dense(3, name="head", kernel_initializer=init(k, 6))
    return k.Model(x, head(backbone(x)), name="outer")


def reference(model, path, x):
    """A path's output computed by a separate sub-model of the original.

    In these models every nested model is called on the outer input, so a
    Functional model from the owner's inputs to the layer's first output
    (the one of the owner's own graph) is the reference.
    """
    k = kmod("keras" if isinstance(model, keras.Model) else "tf_keras")
    *heads, name = path.split("/")
    owner = model
    for head in heads:
        owner = owner.get_layer(head)
    layer = owner.get_layer(name)
    first = layer.get_output_at(0) if hasattr(layer, "get_output_at") else layer.output
    return np_(k.Model(owner.inputs[0], first)(x))


def train_one_step(tapped, flavour, x):
    k = kmod(flavour)
    n_out = len(tapped.outputs)
    tapped.compile(optimizer=k.optimizers.SGD(0.1), loss=["mse"] * n_out)
    targets = [np.ones((len(x),) + tuple(o.shape[1:]), "float32") for o in tapped.outputs]
    tapped.fit(x, targets, epochs=1, batch_size=len(x), verbose=0)


# ---------------------------------------------------------------- flat taps
@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("sequential", [True, False])
def test_flat_taps(flavour, sequential):
    k = kmod(flavour)
    x = data()
    model = flat_model(flavour, sequential)
    tapped = tap_model(model, ["hidden2", "hidden1"])
    assert isinstance(tapped, k.Model)
    logits, hidden2, hidden1 = [np_(t) for t in tapped(x)]
    np.testing.assert_allclose(logits, np_(model(x)), rtol=1e-6, atol=1e-6)
    d1, d2 = model.get_layer("hidden1"), model.get_layer("hidden2")
    np.testing.assert_allclose(hidden1, np_(d1(x)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hidden2, np_(d2(d1(x))), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hidden1, reference(model, "hidden1", x), rtol=1e-6, atol=1e-6)
    # Same layers, same variables.
    assert [id(v) for v in tapped.weights] == [id(v) for v in model.weights]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_input_layer_can_be_tapped(flavour):
    x = data()
    model = flat_model(flavour, sequential=False)
    _, features = tap_model(model, ["x"])(x)
    np.testing.assert_allclose(np_(features), x)


# -------------------------------------------------------------- nested taps
@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("inner_sequential", [True, False])
def test_nested_taps_two_levels(flavour, inner_sequential):
    x = data()
    model = nested_model(flavour, inner_sequential)
    paths = ["backbone/block/conv", "backbone/embed", "backbone", "head",
             "backbone/block"]
    tapped = tap_model(model, paths)
    out, conv, embed, body, head, block = [np_(t) for t in tapped(x)]
    np.testing.assert_allclose(out, np_(model(x)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(head, out, rtol=1e-6, atol=1e-6)
    backbone = model.get_layer("backbone")
    np.testing.assert_allclose(body, np_(backbone(x)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(embed, body, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(block, np_(backbone.get_layer("block")(x)),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(conv, reference(model, "backbone/block/conv", x),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(conv, block, rtol=1e-6, atol=1e-6)
    # Every variable of the tap model is a variable of the model.
    model_ids = {id(v) for v in model.weights}
    assert {id(v) for v in tapped.weights} == model_ids


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_sequential_holding_a_model_tapped_twice(flavour):
    """A Sequential top model, and a second tap of the same model (its
    layers then have more calls outside the model's own graph)."""
    k = kmod(flavour)
    bx = k.Input((8,))
    backbone = k.Model(bx, k.layers.Dense(5, name="embed")(bx), name="backbone")
    model = k.Sequential([k.Input((8,)), backbone, k.layers.Dense(2, name="head")])
    x = data()
    first = [np_(t) for t in tap_model(model, ["backbone/embed", "head"])(x)]
    second = [np_(t) for t in tap_model(model, ["backbone/embed"])(x)]
    np.testing.assert_allclose(first[0], np_(model(x)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(first[1], np_(backbone(x)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(second[1], first[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_nested_model_runs_once(flavour):
    k = kmod(flavour)
    count = counter(k, "count")
    inner = k.Sequential([k.Input((8,)), count, k.layers.Dense(4, name="hidden")],
                         name="inner")
    inputs = k.Input((8,))
    model = k.Model(inputs, k.layers.Dense(3, name="out")(inner(inputs)))
    tapped = tap_model(model, ["inner/hidden", "inner/count"])
    before = float(np_(count.calls))
    tapped(data(4))
    assert float(np_(count.calls)) == before + 1


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_training_the_tap_model_trains_the_model(flavour):
    x = data(16)
    model = nested_model(flavour)
    tapped = tap_model(model, ["backbone/block/conv", "head"])
    conv = model.get_layer("backbone").get_layer("block").get_layer("conv")
    before = np_(conv.kernel).copy()
    out_before = np_(model(x))
    train_one_step(tapped, flavour, x)
    assert not np.allclose(np_(conv.kernel), before)
    assert not np.allclose(np_(model(x)), out_before)
    np.testing.assert_allclose(np_(tapped(x)[0]), np_(model(x)), rtol=1e-5, atol=1e-6)


def training_probe(k, name):
    """Doubles its input in training mode, passes it through otherwise."""

    class Probe(k.layers.Layer):
        def call(self, x, training=None):
            return x * 2.0 if training else x

        def compute_output_shape(self, input_shape):
            return input_shape

    return Probe(name=name)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_nested_call_arguments_are_kept(flavour):
    """A nested model called with training=False is called the same way."""
    k = kmod(flavour)
    backbone = k.Sequential([k.Input((8,)), training_probe(k, "probe"),
                             k.layers.Dense(4, name="hidden")], name="backbone")
    x_in = k.Input((8,))
    model = k.Model(x_in, training_probe(k, "top")(backbone(x_in, training=False)))
    tapped = tap_model(model, ["backbone/probe", "top"])
    x = data(4)
    for training in (True, False, None):
        out, probe, top = [np_(t) for t in tapped(x, training=training)]
        np.testing.assert_allclose(out, np_(model(x, training=training)),
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(top, out)
        reference_probe = np_(backbone.get_layer("probe")(
            x, training=bool(training) if flavour == "keras" else False))
        np.testing.assert_allclose(probe, reference_probe, rtol=1e-6)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_nested_model_on_an_intermediate_tensor(flavour):
    k = kmod(flavour)
    inner = k.Sequential([k.Input((8,)), k.layers.Dense(8, name="d")], name="inner")
    x_in = k.Input((8,))
    pre = k.layers.Dense(8, name="pre")
    model = k.Model(x_in, k.layers.Dense(2, name="o")(inner(pre(x_in))))
    tapped = tap_model(model, ["inner/d", "pre"])
    x = data(4)
    out, d, p = [np_(t) for t in tapped(x)]
    np.testing.assert_allclose(out, np_(model(x)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(p, np_(pre(x)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d, np_(inner(pre(x))), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------- Taps
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_taps_object(flavour):
    x = data()
    model = nested_model(flavour)
    taps = Taps(model, ["backbone/embed", "backbone/embed", "head"], "student")
    assert taps.paths == ["backbone/embed", "backbone/embed", "head"]
    assert taps.keys == ["backbone_embed", "backbone_embed_", "head"]
    assert taps.key("head") == "head"
    assert taps.shapes["backbone/embed"] == (None, 5)
    assert taps.shapes["head"] == (None, 3)
    out, features = taps(x, training=False)
    np.testing.assert_allclose(np_(out), np_(model(x)), rtol=1e-6, atol=1e-6)
    assert sorted(features) == sorted(taps.keys)
    np.testing.assert_allclose(np_(features["head"]), np_(out), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_taps_without_paths_call_the_model(flavour):
    x = data()
    model = flat_model(flavour, sequential=True)
    taps = Taps(model, [], "teacher")
    out, features = taps(x, training=False)
    assert features == {} and taps.shapes == {} and taps.keys == []
    np.testing.assert_allclose(np_(out), np_(model(x)), rtol=1e-6, atol=1e-6)


class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__(name="subnet")
        self.hidden = keras.layers.Dense(6, activation="relu", name="hidden")
        self.out = keras.layers.Dense(3, name="out")

    def call(self, x, training=False):
        return self.out(self.hidden(x))

    def features(self, x, training):
        h = self.hidden(x)
        return self.out(h), {"hidden": h, "deep/path": h * 2.0}


def test_features_fn_for_a_subclassed_model():
    x = data()
    sub = SubclassedNet()
    taps = Taps(sub, ["deep/path", "hidden"], "teacher", features_fn=sub.features,
                input_shape=(8,))
    assert taps.shapes == {"deep/path": (None, 6), "hidden": (None, 6)}
    assert taps.keys == ["deep_path", "hidden"]
    out, features = taps(x, training=False)
    np.testing.assert_allclose(np_(out), np_(sub(x)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np_(features["hidden"]), np_(sub.hidden(x)), rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(np_(features["deep_path"]), 2 * np_(sub.hidden(x)),
                               rtol=1e-6, atol=1e-6)


def test_features_fn_errors():
    sub = SubclassedNet()
    with pytest.raises(ValueError, match="input_shape="):
        Taps(sub, ["hidden"], "teacher", features_fn=sub.features)
    with pytest.raises(ValueError, match=r"no feature for \['nope'\]"):
        Taps(sub, ["nope"], "teacher", features_fn=sub.features, input_shape=(8,))
    with pytest.raises(ValueError, match=r"must return `\(output"):
        Taps(sub, ["hidden"], "teacher", features_fn=lambda x, t: sub(x),
             input_shape=(8,))
    with pytest.raises(TypeError, match="features_fn"):
        Taps(sub, ["hidden"], "teacher", features_fn="hidden", input_shape=(8,))


def test_features_fn_uses_the_models_input_shape():
    model = flat_model("keras", sequential=True)

    def fn(x, training):
        h = model.get_layer("hidden1")(x)
        return model(x, training=training), {"h": h}

    taps = Taps(model, ["h"], "teacher", features_fn=fn)
    assert taps.shapes == {"h": (None, 6)}


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_unknown_names_list_the_closest(flavour):
    model = nested_model(flavour)
    with pytest.raises(ValueError, match=r"no layer named 'hed'\. Did you mean "
                                         r"'head'.*Its layers: .*'backbone/block/conv'"):
        tap_model(model, ["hed"])
    with pytest.raises(ValueError, match=r"'backbone/block/cnv'.*'backbone/block/conv'"):
        tap_model(model, ["backbone/block/cnv"])
    with pytest.raises(ValueError, match=r"'head' is a Dense, not a model"):
        tap_model(model, ["head/kernel"])
    with pytest.raises(TypeError, match="must be a layer name"):
        tap_model(model, ["/head"])


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_subclassed_model_without_features_fn(flavour):
    k = kmod(flavour)

    class Sub(k.Model):
        def __init__(self):
            super().__init__()
            self.hidden = k.layers.Dense(4, name="hidden")
            self.out = k.layers.Dense(3)

        def call(self, x):
            return self.out(self.hidden(x))

    sub = Sub()
    sub(data(2))
    with pytest.raises(ValueError, match=r"subclassed model.*Functional API.*features_fn"):
        tap_model(sub, ["hidden"])
    with pytest.raises(ValueError, match=r"The student .*subclassed"):
        Taps(sub, ["hidden"], "student")
    # ... also when nested in a Functional model.
    x = k.Input((8,))
    outer = k.Model(x, sub(x))
    with pytest.raises(ValueError, match=r"sub-model 'sub.*subclassed"):
        tap_model(outer, [f"{sub.name}/hidden"])


def test_unbuilt_sequential():
    unbuilt = keras.Sequential([keras.layers.Dense(3, name="d")])
    with pytest.raises(ValueError, match="not built yet.*keras.Input"):
        tap_model(unbuilt, ["d"])


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_shared_layer_is_refused(flavour):
    k = kmod(flavour)
    shared = k.layers.Dense(8, name="shared")
    x = k.Input((8,))
    model = k.Model(x, k.layers.Dense(2, name="out")(shared(shared(x))))
    with pytest.raises(ValueError, match=r"'shared' is called 2 times"):
        tap_model(model, ["shared"])
    # A shared nested model too.
    inner = k.Sequential([k.Input((8,)), k.layers.Dense(8, name="d")], name="inner")
    model = k.Model(x, inner(inner(x)))
    with pytest.raises(ValueError, match=r"'inner' is called 2 times"):
        tap_model(model, ["inner/d"])


def test_layer_not_used_in_the_forward_pass():
    with pytest.raises(ValueError, match=r"'lonely' is not used in its forward pass"):
        _tap_graph._select_call([], "teacher", "lonely")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_multi_output_layer_is_refused(flavour):
    k = kmod(flavour)

    class Split(k.layers.Layer):
        def call(self, x):
            return [x[:, :4], x[:, 4:]]

        def compute_output_shape(self, input_shape):
            return [(input_shape[0], 4), (input_shape[0], 4)]

    x = k.Input((8,))
    a, b = Split(name="split")(x)
    model = k.Model(x, k.layers.Concatenate(name="cat")([a, b]))
    with pytest.raises(ValueError, match=r"'split' returns 2 tensors"):
        tap_model(model, ["split"])


def test_not_a_model():
    with pytest.raises(TypeError, match="must be a Keras model"):
        tap_model(keras.layers.Dense(2), ["x"])
