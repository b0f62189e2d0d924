"""Feature distillation: taps, adapters, feature terms, both Keras flavours."""

import keras
import numpy as np
import pytest

from keras_distill import (
    AttentionDistiller,
    Distiller,
    FeatureDistiller,
    FeaturePair,
    FSPDistiller,
    FSPPair,
    L2Distiller,
    MultiTeacherDistiller,
    RKDDistiller,
    tap_model,
)
from keras_distill.datasets import find_fashion_mnist, load_fashion_mnist
from keras_distill.models import build_student, build_teacher
from helpers import counter, data, keras_module, log_softmax, np_distill_loss

FLAVOURS = ["keras", "tf_keras"]


# ------------------------------------------------------------------ helpers
def net(flavour, widths=(16,), classes=3, features=8, seed=0, batchnorm=False,
        count=False, sequential=False):
    """An MLP with layers named hidden1, hidden2, ..., logits."""
    k = keras_module(flavour)
    layers = [counter(k, "count")] if count else []
    for i, width in enumerate(widths):
        layers.append(k.layers.Dense(
            width, activation="relu", name=f"hidden{i + 1}",
            kernel_initializer=k.initializers.GlorotUniform(seed + i)))
        if batchnorm:
            layers.append(k.layers.BatchNormalization(name=f"bn{i + 1}"))
    layers.append(k.layers.Dense(
        classes, name="logits", kernel_initializer=k.initializers.GlorotUniform(seed + 99)))
    if sequential:
        return k.Sequential([k.Input((features,))] + layers)
    x = inputs = k.Input((features,), name="x")
    for layer in layers:
        x = layer(x)
    return k.Model(inputs, x)


def nested(flavour, seed=0):
    """A Functional model whose body is a nested Sequential 'backbone'."""
    k = keras_module(flavour)
    init = k.initializers.GlorotUniform
    backbone = k.Sequential([
        k.Input((8,)),
        k.layers.Dense(6, activation="relu", name="hidden", kernel_initializer=init(seed)),
        k.layers.Dense(5, activation="relu", name="embed", kernel_initializer=init(seed + 1)),
    ], name="backbone")
    inputs = k.Input((8,), name="x")
    outputs = k.layers.Dense(3, name="head", kernel_initializer=init(seed + 2))(
        backbone(inputs))
    return k.Model(inputs, outputs, name="outer"), backbone


def cnn(flavour, role, seed=0):
    """Small CNNs with the layer names of keras_distill.models, either flavour."""
    k = keras_module(flavour)
    init = k.initializers.GlorotUniform
    layers = k.layers
    if role == "teacher":
        body = [
            layers.Conv2D(16, 3, padding="same", name="block1a_conv",
                          kernel_initializer=init(seed + 1)),
            layers.BatchNormalization(name="block1a_bn"),
            layers.ReLU(name="block1b_relu"),
            layers.MaxPooling2D(name="block1_pool"),
            layers.Conv2D(32, 3, padding="same", activation="relu",
                          name="block2b_relu", kernel_initializer=init(seed + 2)),
            layers.MaxPooling2D(name="block2_pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(32, activation="relu", name="fc",
                         kernel_initializer=init(seed + 3)),
        ]
    else:
        body = [
            layers.Conv2D(4, 3, padding="same", activation="relu",
                          name="block1_conv", kernel_initializer=init(seed + 11)),
            layers.MaxPooling2D(name="block1_pool"),
            layers.Conv2D(8, 3, padding="same", activation="relu",
                          name="block2_conv", kernel_initializer=init(seed + 12)),
            layers.MaxPooling2D(name="block2_pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(16, activation="relu", name="fc",
                         kernel_initializer=init(seed + 13)),
        ]
    logits = layers.Dense(10, name="logits", kernel_initializer=init(seed + 9))
    return k.Sequential([k.Input((28, 28, 1))] + body + [logits], name=role)


def compile_(d, k, lr=0.0, alpha=0.3, temperature=2.0, **kwargs):
    d.compile(optimizer=k.optimizers.SGD(lr) if lr == 0.0 else k.optimizers.Adam(lr),
              alpha=alpha, temperature=temperature,
              student_loss_fn=k.losses.SparseCategoricalCrossentropy(from_logits=True),
              **kwargs)


def one_batch_logs(d, x, y, **kwargs):
    h = d.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False, **kwargs)
    return {name: values[0] for name, values in h.history.items()}


def features_of(model, name, x):
    """A layer's output computed with the plain model (the reference)."""
    return keras.ops.convert_to_numpy(tap_model(model, [name])(x)[1])


def l2_normalize(x, axis=-1):
    """tf.math.l2_normalize in keras.ops: a user loss for every backend."""
    ops = keras.ops
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis, keepdims=True), 1e-12))


def np_cosine_distance(t, s):
    """numpy reference of ``cosine`` below (float64)."""
    def normalize(x):
        x = np.asarray(x, np.float64)
        return x / np.sqrt(np.maximum((x * x).sum(-1, keepdims=True), 1e-12))

    return 1.0 - (normalize(t) * normalize(s)).sum(-1)


@pytest.fixture(scope="module")
def fashion():
    if find_fashion_mnist() is None:
        pytest.skip("Fashion-MNIST is not on this machine")
    (x, y), _ = load_fashion_mnist(allow_download=False)
    rng = np.random.default_rng(0)
    index = rng.choice(len(x), 2000, replace=False)
    return (x[index, :, :, None] / 255.0).astype("float32"), y[index].astype("int64")


# ------------------------------------------------------- the training step
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_one_forward_pass_per_network_per_batch(flavour):
    k = keras_module(flavour)
    x, y = data(32)
    student = net(flavour, (4,), count=True, seed=3)
    teacher = net(flavour, (16,), count=True)
    s_count, t_count = student.get_layer("count"), teacher.get_layer("count")
    d = FeatureDistiller(student, teacher, pairs=[
        FeaturePair("hidden1", "hidden1", adapter="auto"),
        FeaturePair("count", "count", name="input_l2"),
    ])
    compile_(d, k, lr=0.01)

    def counts():
        return float(np.asarray(s_count.calls)), float(np.asarray(t_count.calls))

    start = counts()
    d.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.subtract(counts(), start).tolist() == [8, 8]  # 4 batches x 2 epochs
    start = counts()
    d.evaluate(x, y, batch_size=8, verbose=0)  # labels: the student alone
    assert np.subtract(counts(), start).tolist() == [4, 0]
    start = counts()
    d.fit(x, y, batch_size=8, epochs=3, verbose=0, cache_teacher=True)
    assert np.subtract(counts(), start).tolist() == [12, 4]  # teacher: one pass


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_total_loss_matches_numpy(flavour):
    """Every term by hand: logits KD (scaled), L2 features, sample weights."""
    k = keras_module(flavour)
    x, y = data(32)
    w = np.random.default_rng(2).uniform(0, 2, size=32)
    teacher, student = net(flavour, (6,)), net(flavour, (6, 4), seed=5)
    t_logits, s_logits = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    t_hidden = features_of(teacher, "hidden1", x)
    s_hidden = features_of(student, "hidden1", x)
    d = FeatureDistiller(student, teacher, logits_weight=0.5, pairs=[
        FeaturePair("hidden1", "hidden1", weight=3.0, name="hint")])
    compile_(d, k, alpha=0.3, temperature=2.0)
    logs = one_batch_logs(d, x, y, sample_weight=w)
    _, student_loss, distill = np_distill_loss(t_logits, s_logits, y, 0.3, 2.0, weights=w)
    hint = (w * ((s_hidden - t_hidden) ** 2).mean(axis=1)).sum() / 32
    np.testing.assert_allclose(logs["hint"], hint, rtol=1e-5)
    np.testing.assert_allclose(logs["distillation_loss"], 0.5 * distill, rtol=1e-5)
    np.testing.assert_allclose(
        logs["loss"], 0.3 * student_loss + 0.7 * 0.5 * distill + 3.0 * hint, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # the unused logits
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_feature_distillation_alone_on_unlabelled_data(flavour):
    k = keras_module(flavour)
    x, _ = data(64)
    d = FeatureDistiller(net(flavour, (4,), seed=1), net(flavour, (16,)),
                         logits_weight=0.0,
                         pairs=[FeaturePair("hidden1", "hidden1", adapter="dense")])
    d.compile(optimizer=k.optimizers.Adam(0.05), alpha=0.0)
    h = d.fit(x, epochs=5, verbose=0).history
    assert h["distillation_loss"] == [0.0] * 5
    assert h["l2_hidden1"][-1] < h["l2_hidden1"][0]
    np.testing.assert_allclose(h["loss"], h["l2_hidden1"], rtol=1e-6)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_adapters_train_and_stay_out_of_the_student(flavour):
    k = keras_module(flavour)
    x, y = data(64)
    student, teacher = net(flavour, (4,), seed=2), net(flavour, (16,))
    d = FeatureDistiller(student, teacher,
                         pairs=[FeaturePair("hidden1", "hidden1", adapter="auto")])
    assert d.student is student
    adapter = d.adapters["l2_hidden1"]
    assert isinstance(adapter, k.layers.Dense) and adapter.units == 16
    adapter_ids = {id(v) for v in adapter.weights}
    assert not adapter_ids & {id(v) for v in student.weights}
    assert adapter_ids <= {id(v) for v in d.trainable_weights}
    before = [np.array(v) for v in adapter.weights]
    s_before = [v.copy() for v in student.get_weights()]
    t_before = [v.copy() for v in teacher.get_weights()]
    compile_(d, k, lr=0.05)
    d.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert all(not np.allclose(a, np.asarray(v)) for a, v in zip(before, adapter.weights))
    assert any(not np.allclose(a, b) for a, b in zip(s_before, student.get_weights()))
    for a, b in zip(t_before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(student.weights) == 4  # two Dense layers, no adapter
    np.testing.assert_allclose(d.predict(x, verbose=0), student.predict(x, verbose=0),
                               rtol=1e-6)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_batchnorm_statistics_untouched_by_evaluate(flavour):
    k = keras_module(flavour)
    x, y = data(64)
    student = net(flavour, (8,), batchnorm=True, seed=4)
    d = FeatureDistiller(student, net(flavour, (8,), batchnorm=True),
                         pairs=[("bn1", "bn1"), ("hidden1", "hidden1")])
    compile_(d, k)
    before = [w.copy() for w in student.get_weights()]
    d.evaluate(x * 10 + 3, y, verbose=0)
    d.evaluate(x * 10 + 3, verbose=0)
    d.predict(x * 10 + 3, verbose=0)
    for a, b in zip(before, student.get_weights()):
        np.testing.assert_array_equal(a, b)
    d.fit(x * 10 + 3, y, epochs=1, verbose=0)  # training does update them
    moving_mean = np.asarray(student.get_layer("bn1").moving_mean)
    assert not np.allclose(moving_mean, 0.0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_cached_and_online_feature_losses_are_equal_under_shuffle(flavour):
    k = keras_module(flavour)
    x, y = data(64)
    teacher = net(flavour, (16, 8))

    def history(shuffle=True, **fit_kwargs):
        d = FeatureDistiller(net(flavour, (4, 8), seed=2), teacher, pairs=[
            FeaturePair("hidden2", "hidden2"),
            FeaturePair("hidden1", "hidden1", loss="rkd"),
        ])
        compile_(d, k)  # learning rate 0: each epoch sees the same weights
        k.utils.set_random_seed(0)  # the same shuffles (RKD depends on them)
        h = d.fit(x, y, batch_size=8, epochs=2, shuffle=shuffle, verbose=0,
                  **fit_kwargs)
        return d, h.history

    _, online = history()
    d, cached = history(cache_teacher=True)
    assert d.teacher_cache_info["features"] == {"hidden2": (64, 8), "hidden1": (64, 16)}
    for name in ("loss", "distillation_loss", "l2_hidden2", "rkd_hidden1"):
        np.testing.assert_allclose(cached[name], online[name], rtol=1e-5)
    # RKD depends on which samples share a batch (unlike the per-sample L2),
    # so equal RKD losses mean the cached features travel with their inputs.
    _, unshuffled = history(shuffle=False, cache_teacher=True)
    assert abs(unshuffled["rkd_hidden1"][0] - cached["rkd_hidden1"][0]) > 1e-3


def test_a_misaligned_feature_cache_would_be_detected():
    """The alignment test above can fail: shuffled features give another loss."""
    import keras

    x, y = data(64)
    d = FeatureDistiller(net("keras", (4, 8), seed=2), net("keras", (16, 8)),
                         pairs=[FeaturePair("hidden2", "hidden2")])
    compile_(d, keras)
    right = d.teacher_cache(x).pack(x)
    wrong = dict(right)
    features = dict(right["keras_distill_teacher_features"])
    features["hidden2"] = features["hidden2"][::-1]
    wrong["keras_distill_teacher_features"] = features
    losses = [d.fit(packed, y, batch_size=8, epochs=1, verbose=0).history["l2_hidden2"][0]
              for packed in (right, wrong)]
    assert abs(losses[0] - losses[1]) > 1e-2 * losses[0]


_MIRRORED_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
from helpers import data, keras_module
from test_features import FeatureDistiller, FeaturePair, compile_, net, one_batch_logs

flavour = sys.argv[2]
k = keras_module(flavour)
x, y = data(32)
w = np.random.default_rng(1).uniform(0.5, 1.5, size=32)

def one_step(strategy):
    with strategy.scope():
        student = net(flavour, (4,), seed=3)
        d = FeatureDistiller(student, net(flavour, (16,)), pairs=[
            FeaturePair("hidden1", "hidden1", adapter="auto", weight=2.0),
            FeaturePair("logits", "logits")])
        compile_(d, k, lr=0.5)
    d.adapters["l2_hidden1"].set_weights(
        [np.random.default_rng(5).normal(size=(4, 16)), np.zeros(16)])
    logs = one_batch_logs(d, x, y, sample_weight=w)
    weights = student.trainable_weights + d.adapters["l2_hidden1"].trainable_weights
    return logs, [v.numpy() for v in weights]

cpus = tf.config.list_logical_devices("CPU")
mirrored = tf.distribute.MirroredStrategy([c.name for c in cpus[:2]])
assert mirrored.num_replicas_in_sync == 2
logs_2, weights_2 = one_step(mirrored)
logs_1, weights_1 = one_step(tf.distribute.get_strategy())
for name in ("loss", "l2_hidden1", "l2_logits"):
    np.testing.assert_allclose(logs_2[name], logs_1[name], rtol=1e-5)
for a, b in zip(weights_2, weights_1):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
print("OK")
"""


@pytest.mark.tensorflow  # tf.distribute
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_mirrored_strategy_step_equals_single_device_step(flavour):
    """Feature terms under tf.distribute: the same step as on one device.

    Run in a child process: two MirroredStrategy objects in one process
    reuse collective instance keys, so this test would break the
    Distiller's own MirroredStrategy test run after it (and vice versa).
    """
    import os
    import subprocess
    import sys

    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([os.path.dirname(tests),
                                           os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT, tests, flavour],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_jit_compile():
    import keras

    x, y = data(64)
    d = FeatureDistiller(net("keras", (4,)), net("keras", (16,)),
                         pairs=[FeaturePair("hidden1", "hidden1", adapter="auto")])
    compile_(d, keras, lr=0.05, jit_compile=True)
    h = d.fit(x, y, batch_size=16, epochs=4, verbose=0, cache_teacher=True).history
    assert h["l2_hidden1"][-1] < h["l2_hidden1"][0]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_teacher_input_fn_is_applied_online_and_to_the_cache(flavour):
    k = keras_module(flavour)
    x, y = data(32, features=8)
    teacher = net(flavour, (16,), features=4)  # takes 4 of the 8 features
    student = net(flavour, (16,), seed=7)
    seen = []

    def first_four(batch):
        seen.append(batch.shape)
        return batch[:, :4]

    t_hidden = features_of(teacher, "hidden1", x[:, :4])
    s_hidden = features_of(student, "hidden1", x)
    want = ((s_hidden - t_hidden) ** 2).mean()
    for cache in (False, True):
        d = FeatureDistiller(student, teacher, teacher_input_fn=first_four,
                             pairs=[("hidden1", "hidden1")])
        compile_(d, k)
        logs = one_batch_logs(d, x, y, cache_teacher=cache)
        np.testing.assert_allclose(logs["l2_hidden1"], want, rtol=1e-5)
    assert seen  # traced at least once


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_nested_feature_distillation_with_cache(flavour):
    k = keras_module(flavour)
    x, y = data(32)
    teacher, _ = nested(flavour)
    student, _ = nested(flavour, seed=4)
    d = FeatureDistiller(student, teacher, pairs=[
        FeaturePair("backbone/hidden", "backbone/hidden", name="hint")])
    compile_(d, k, lr=0.05)
    h = d.fit(x, y, batch_size=8, epochs=3, verbose=0, cache_teacher=True).history
    assert h["hint"][-1] < h["hint"][0]
    assert d.teacher_cache_info["features"] == {"backbone_hidden": (32, 6)}


@pytest.mark.tensorflow  # a tf_keras student with a Keras 3 teacher
def test_mixed_flavours_teacher_of_the_other_flavour():
    import tf_keras

    x, y = data(32)
    d = FeatureDistiller(net("tf_keras", (4,)), net("keras", (16,)),
                         pairs=[FeaturePair("hidden1", "hidden1", adapter="auto")])
    assert isinstance(d, tf_keras.Model)
    assert isinstance(d.adapters["l2_hidden1"], tf_keras.layers.Dense)
    compile_(d, tf_keras, lr=0.01)
    h = d.fit(x, y, epochs=2, verbose=0).history
    assert np.isfinite(h["loss"]).all()


def test_each_loss_kind_matches_the_loss_functions():
    import keras

    from keras_distill import losses

    x, y = data(16)
    teacher, student = net("keras", (6, 5)), net("keras", (3, 5), seed=1)
    t1, t2 = (features_of(teacher, n, x) for n in ("hidden1", "hidden2"))
    s1, s2 = (features_of(student, n, x) for n in ("hidden1", "hidden2"))

    def cosine(t, s):
        return 1.0 - keras.ops.sum(l2_normalize(t, -1) * l2_normalize(s, -1), -1)

    d = FeatureDistiller(student, teacher, pairs=[
        FeaturePair("hidden2", "hidden2", loss="rkd", name="rkd",
                    loss_kwargs={"angle_weight": 10.0}),
        FeaturePair("hidden2", "hidden2", loss=cosine, name="cos"),
        FeaturePair("hidden2", "hidden2", loss=keras.losses.MeanSquaredError(),
                    name="keras_mse"),
    ])
    compile_(d, keras)
    logs = one_batch_logs(d, x, y)
    np.testing.assert_allclose(
        logs["rkd"], float(losses.rkd_loss(t2, s2, angle_weight=10.0)), rtol=1e-5)
    np.testing.assert_allclose(logs["cos"], np_cosine_distance(t2, s2).mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(logs["keras_mse"], ((t2 - s2) ** 2).mean(), rtol=1e-5)
    del t1, s1


def test_fsp_and_attention_terms_match_the_loss_functions():
    import keras

    from keras_distill import losses

    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    y = np.arange(8) % 10
    teacher, student = cnn("keras", "teacher"), cnn("keras", "student")
    tb1, tb2 = (features_of(teacher, n, x) for n in ("block1_pool", "block2b_relu"))
    sb1, sb2 = (features_of(student, n, x) for n in ("block1_pool", "block2_conv"))
    d = FeatureDistiller(student, teacher, pairs=[
        FSPPair("block1_pool", "block2b_relu", "block1_pool", "block2_conv",
                adapter="auto", name="fsp"),
        FeaturePair("block2b_relu", "block2_conv", loss="at", name="at"),
    ])
    first, second = d.adapters["fsp"]
    assert (first.filters, second.filters) == (16, 32)
    compile_(d, keras)
    logs = one_batch_logs(d, x, y)
    want = losses.fsp_loss(tb1, tb2, first(sb1), second(sb2))
    np.testing.assert_allclose(logs["fsp"], float(want), rtol=1e-4)
    np.testing.assert_allclose(logs["at"], float(losses.at_loss(tb2, sb2)), rtol=1e-5)


# --------------------------------------------------------------- bad input
def test_shape_mismatch_names_the_pair_and_both_shapes():
    teacher, student = build_teacher(), build_student("cnn")
    with pytest.raises(ValueError, match=r"pairs\[0\].*'l2' needs equal shapes, but the "
                                         r"teacher's features have shape \(None, 14, 14, "
                                         r"64\) and the student's \(None, 14, 14, 16\)\. "
                                         r"Pass adapter='auto'"):
        FeatureDistiller(student, teacher, pairs=[("block2b_relu", "block2_conv")])
    with pytest.raises(ValueError, match=r"\(None, 7, 7, 64\).*\(None, 14, 14, 64\) "
                                         r"after the adapter.*equal spatial size"):
        FeatureDistiller(student, teacher, pairs=[
            FeaturePair("block2_pool", "block2_conv", adapter="auto")])
    with pytest.raises(ValueError, match=r"attention transfer needs maps of equal "
                                         r"height and width"):
        AttentionDistiller(student, teacher, layer_pairs=[("block1_pool", "block2_pool")])
    with pytest.raises(ValueError, match=r"'at' needs channels-last feature maps.*'fc'"):
        AttentionDistiller(student, teacher, layer_pairs=[("fc", "fc")])


def test_fsp_errors():
    teacher, student = build_teacher(), build_student("cnn")
    with pytest.raises(ValueError, match=r"FSP matrix relates two maps of equal height "
                                         r"and width, but the teacher's 'block1a_relu' "
                                         r"has shape \(None, 28, 28, 32\) and "
                                         r"'block2b_relu' \(None, 14, 14, 64\)"):
        FSPDistiller(student, teacher, pairs=[(("block1a_relu", "block2b_relu"),
                                               ("block1_conv", "block1_conv"))])
    with pytest.raises(ValueError, match=r"the first layers have 32 \(teacher\) and 8 "
                                         r"\(student\) channels.*adapter='auto'"):
        FSPDistiller(student, teacher, pairs=[(("block1a_relu", "block1b_relu"),
                                               ("block1_conv", "block1_conv"))])
    with pytest.raises(ValueError, match="use FSPPair"):
        FeaturePair("a", "b", loss="fsp")


def test_bad_arguments():
    import keras
    import tf_keras

    student, teacher = net("keras", (4,)), net("keras", (16,))
    with pytest.raises(ValueError, match="`loss` must be one of"):
        FeaturePair("hidden1", "hidden1", loss="l3")
    with pytest.raises(ValueError, match="`weight` must be a non-negative"):
        FeaturePair("hidden1", "hidden1", weight=-1.0)
    with pytest.raises(ValueError, match="`adapter` must be None"):
        FeaturePair("hidden1", "hidden1", adapter="conv3x3")
    with pytest.raises(ValueError, match="does not take"):
        FeaturePair("hidden1", "hidden1", loss="at", loss_kwargs={"q": 1})
    with pytest.raises(TypeError, match="layer name"):
        FeaturePair("", "hidden1")
    with pytest.raises(ValueError, match="already used by the distiller"):
        FeaturePair("hidden1", "hidden1", name="student_loss")
    with pytest.raises(ValueError, match="used twice"):
        FeatureDistiller(student, teacher, pairs=[
            FeaturePair("hidden1", "hidden1", adapter="auto", name="a"),
            FeaturePair("logits", "logits", name="a")])
    with pytest.raises(TypeError, match=r"pairs\[0\]"):
        FeatureDistiller(student, teacher, pairs=["hidden1"])
    with pytest.raises(TypeError, match="tf_keras layer, but the student is a keras"):
        FeatureDistiller(student, teacher, pairs=[FeaturePair(
            "hidden1", "hidden1", adapter=tf_keras.layers.Dense(16))])
    with pytest.raises(ValueError, match="'conv1x1' needs a 4-D feature map"):
        FeatureDistiller(student, teacher, pairs=[
            FeaturePair("hidden1", "hidden1", adapter="conv1x1")])
    with pytest.raises(TypeError, match="teacher_input_fn"):
        FeatureDistiller(student, teacher, pairs=[], teacher_input_fn=3)
    with pytest.raises(ValueError, match="logits_weight"):
        FeatureDistiller(student, teacher, pairs=[], logits_weight=float("nan"))
    # Default names stay unique.
    d = FeatureDistiller(student, teacher, pairs=[
        ("logits", "logits"), ("logits", "logits"),
        FeaturePair("hidden1", "hidden1", adapter=keras.layers.Dense(16, name="mine"))])
    assert d.feature_term_names == ("l2_logits", "l2_logits_2", "l2_hidden1")
    assert d.adapters["l2_hidden1"].name == "mine"


def _broken(t, s):
    return keras.ops.mean(keras.ops.log(s - 1e6), axis=-1)  # log(<0): NaN


def _with_a_broken_term(flavour, **kwargs):
    d = FeatureDistiller(net(flavour, (4,)), net(flavour, (4,), seed=1), pairs=[
        FeaturePair("hidden1", "hidden1"),
        FeaturePair("hidden1", "hidden1", loss=_broken, name="broken_term")], **kwargs)
    compile_(d, keras_module(flavour), lr=0.01)
    return d


@pytest.mark.tensorflow  # check_numerics is tf.debugging.check_numerics
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_check_numerics_names_the_nan_feature_term(flavour):
    import tensorflow as tf

    x, y = data(32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="'broken_term'"):
        _with_a_broken_term(flavour, check_numerics=True).fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_nan_feature_term_is_reported_by_name(flavour):
    x, y = data(32)
    d = _with_a_broken_term(flavour)
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        h = d.fit(x, y, epochs=1, verbose=0).history
    assert np.isnan(h["broken_term"][0]) and np.isfinite(h["l2_hidden1"][0])


def test_rkd_refuses_sample_weights():
    import keras

    x, y = data(16)
    d = RKDDistiller(net("keras", (4,)), net("keras", (16,)),
                     layer_pairs=[("hidden1", "hidden1")])
    compile_(d, keras)
    with pytest.raises(ValueError, match="sample_weight"):
        d.fit(x, y, sample_weight=np.ones(16), epochs=1, verbose=0)


# --------------------------------------------------------------- serialising
def test_keras3_feature_distiller_saves_and_loads(tmp_path):
    import keras

    x, y = data(32)
    d = FeatureDistiller(net("keras", (4,)), net("keras", (16,)), logits_weight=0.5,
                         pairs=[FeaturePair("hidden1", "hidden1", adapter="auto"),
                                FeaturePair("logits", "logits", loss="rkd")])
    compile_(d, keras, lr=0.05)
    d.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "features.keras")
    d.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert type(loaded) is FeatureDistiller
    assert loaded.pairs == d.pairs and loaded.logits_weight == 0.5
    np.testing.assert_allclose(loaded.predict(x, verbose=0), d.predict(x, verbose=0),
                               rtol=1e-6)
    for a, b in zip(loaded.adapters["l2_hidden1"].weights, d.adapters["l2_hidden1"].weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b))


def test_convenience_classes_round_trip_their_config():
    teacher, student = build_teacher(), build_student("cnn")
    cases = [
        (L2Distiller, dict(layer_pairs=[("fc", "fc")], adapter="auto", weight=2.0)),
        (FSPDistiller, dict(pairs=[(("block1_pool", "block2b_relu"),
                                    ("block1_pool", "block2_conv"))], adapter="auto")),
        (AttentionDistiller, dict(layer_pairs=[("block2_pool", "block2_pool")], p=1)),
        (RKDDistiller, dict(layer_pairs=[("fc", "fc")], angle_weight=0.0)),
    ]
    for cls, kwargs in cases:
        d = cls(student, teacher, **kwargs)
        again = cls.from_config(d.get_config())
        assert type(again) is cls
        assert again.pairs == d.pairs
        assert again.feature_term_names == d.feature_term_names


@pytest.mark.tensorflow  # tf_keras models
def test_tf_keras_config_round_trip_keeps_the_adapter_flavour():
    import tf_keras

    pair = FeaturePair("hidden1", "hidden1", weight=0.5,
                       adapter=tf_keras.layers.Dense(16, name="mine"))
    d = FeatureDistiller(net("tf_keras", (4,)), net("tf_keras", (16,)), pairs=[pair],
                         logits_weight=0.0)
    again = type(d).from_config(d.get_config())
    assert isinstance(again, tf_keras.Model)
    adapter = again.adapters["l2_hidden1"]
    assert isinstance(adapter, tf_keras.layers.Dense) and adapter.name == "mine"
    assert adapter is not pair.adapter and again.logits_weight == 0.0


# ------------------------------------------------------------ many teachers
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_multi_teacher_distils_the_weighted_average_of_logits(flavour):
    k = keras_module(flavour)
    x, y = data(32)
    inner = net(flavour, (16,), seed=3)
    probabilities = k.Sequential([inner, k.layers.Softmax()])
    teachers = [net(flavour, (16,), seed=1), net(flavour, (16,), seed=2), probabilities]
    student = net(flavour, (4,), seed=9)
    logits = [t.predict(x, verbose=0) for t in teachers[:2]]
    logits.append(log_softmax(inner.predict(x, verbose=0)))
    weights = np.array([1.0, 2.0, 1.0]) / 4.0
    average = sum(w * z for w, z in zip(weights, logits))
    s_logits = student.predict(x, verbose=0)
    d = MultiTeacherDistiller(student, teachers, teacher_weights=[1, 2, 1])
    assert d.teacher.teacher_kinds == ("logits", "logits", "probabilities")
    assert d.teachers == teachers
    compile_(d, k, alpha=0.2, temperature=3.0)
    for cache in (False, True):
        logs = one_batch_logs(d, x, y, cache_teacher=cache)
        total, _, distill = np_distill_loss(average, s_logits, y, 0.2, 3.0)
        np.testing.assert_allclose(logs["distillation_loss"], distill, rtol=1e-4)
        np.testing.assert_allclose(logs["loss"], total, rtol=1e-4)


def test_multi_teacher_errors_and_config():
    import keras

    teachers = [net("keras", (8,), seed=s) for s in range(2)]
    with pytest.raises(ValueError, match="one per teacher"):
        MultiTeacherDistiller(net("keras", (4,)), teachers, teacher_weights=[1.0])
    with pytest.raises(ValueError, match="different shapes"):
        MultiTeacherDistiller(net("keras", (4,)), [teachers[0], net("keras", classes=5)])
    with pytest.raises(ValueError, match="mixes Keras flavours"):
        MultiTeacherDistiller(net("keras", (4,)), [teachers[0], net("tf_keras")])
    with pytest.raises(ValueError, match="must not all be 0"):
        MultiTeacherDistiller(net("keras", (4,)), teachers, teacher_weights=[0, 0])
    d = MultiTeacherDistiller(net("keras", (4,)), teachers, teacher_weights=[3, 1])
    again = MultiTeacherDistiller.from_config(d.get_config())
    assert again.teacher.teacher_weights == (0.75, 0.25)
    x, _ = data(8)
    np.testing.assert_allclose(again.teacher.predict(x, verbose=0),
                               d.teacher.predict(x, verbose=0), rtol=1e-6)
    assert isinstance(again, keras.Model)


# ------------------------------------------------------------ real data
def _fit_real(d, k, x, y, epochs=3, lr=3e-3, alpha=0.1):
    d.compile(optimizer=k.optimizers.Adam(lr), alpha=alpha, temperature=4.0,
              student_loss_fn=k.losses.SparseCategoricalCrossentropy(from_logits=True))
    return d.fit(x, y, batch_size=128, epochs=epochs, verbose=0,
                 cache_teacher=True).history


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_feature_distiller_on_fashion_mnist_both_flavours(fashion, flavour):
    k = keras_module(flavour)
    x, y = fashion
    student = cnn(flavour, "student")
    d = FeatureDistiller(student, cnn(flavour, "teacher"), pairs=[
        FeaturePair("block2b_relu", "block2_conv", adapter="auto", weight=2.0),
        FeaturePair("block1_pool", "block1_pool", loss="at", weight=5.0),
    ])
    h = _fit_real(d, k, x, y)
    for name in ("l2_block2_conv", "at_block1_pool", "student_loss"):
        assert h[name][-1] < h[name][0], (name, h[name])
    results = d.evaluate(x[:500], y[:500], verbose=0, return_dict=True)
    assert set(results) == {"loss", "student_loss"}


@pytest.mark.parametrize("variant", ["l2", "fsp", "at", "rkd", "custom"])
def test_each_variant_reduces_its_feature_loss_on_fashion_mnist(fashion, variant):
    import keras

    x, y = fashion
    teacher, student = build_teacher(), build_student("cnn")
    if variant == "l2":
        d = L2Distiller(student, teacher, layer_pairs=[("block2b_relu", "block2_conv"),
                                                       ("fc", "fc")])
    elif variant == "fsp":
        d = FSPDistiller(student, teacher, adapter="auto", weight=10.0, pairs=[
            (("block1_pool", "block2b_relu"), ("block1_pool", "block2_conv"))])
    elif variant == "at":
        d = AttentionDistiller(student, teacher, weight=10.0, layer_pairs=[
            ("block1_pool", "block1_pool"), ("block2_pool", "block2_pool")])
    elif variant == "rkd":
        d = RKDDistiller(student, teacher, layer_pairs=[("fc", "fc")])
    else:
        def cosine_distance(t, s):
            return 1.0 - keras.ops.sum(l2_normalize(t, -1) * l2_normalize(s, -1), -1)

        d = FeatureDistiller(student, teacher, pairs=[
            FeaturePair("fc", "fc", loss=cosine_distance, adapter="auto")])
    h = _fit_real(d, keras, x, y)
    assert d.student is student
    for name in d.feature_term_names:
        assert h[name][-1] < h[name][0], (name, h[name])
    assert "features" in d.teacher_cache_info


def test_extension_keeps_the_plain_distiller_intact():
    """FeatureDistiller without pairs is the plain Distiller."""
    import keras

    x, y = data(32)
    teacher, student = net("keras", (16,)), net("keras", (4,), seed=3)
    plain = Distiller(student, teacher)
    feature = FeatureDistiller(student, teacher, pairs=[])
    for d in (plain, feature):
        compile_(d, keras)
    np.testing.assert_allclose(one_batch_logs(plain, x, y)["loss"],
                               one_batch_logs(feature, x, y)["loss"], rtol=1e-6)


def test_subclassed_student_through_features_fn():
    """A subclassed student's features come from its features_fn; the
    feature shapes are found from `student_input_shape`; the config keeps
    both."""

    @keras.saving.register_keras_serializable(package="kd_tests")
    class Net(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(6, activation="relu")
            self.out = keras.layers.Dense(3)

        def call(self, x, training=None):
            return self.out(self.hidden(x))

    @keras.saving.register_keras_serializable(package="kd_tests")
    def net_features(x, training):
        h = student.hidden(x)
        return student.out(h), {"hidden": h}

    x, y = data(32)
    student = Net()
    student(np.zeros((1, 8), "float32"))  # built by a call: no input_shape
    teacher = net("keras", (16,))
    with pytest.raises(ValueError, match="input_shape"):
        FeatureDistiller(student, teacher, pairs=[
            FeaturePair("hidden1", "hidden", adapter="auto")],
            student_features_fn=net_features)
    d = FeatureDistiller(student, teacher, pairs=[
        FeaturePair("hidden1", "hidden", adapter="auto")],
        student_features_fn=net_features, student_input_shape=(8,))
    compile_(d, keras)
    logs = one_batch_logs(d, x, y)
    assert np.isfinite(logs["l2_hidden"]) and logs["l2_hidden"] > 0
    config = d.get_config()
    assert config["student_input_shape"] == [8]
    assert config["student_features_fn"] is not None
