"""numpy references for keras_distill.losses.

Run under every backend: the default (TensorFlow) and ``KERAS_BACKEND=jax``
(with float64 enabled for these modules, so the float64 references hold).
"""

import ast
import importlib
import inspect
import pkgutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_distill import losses
from helpers import check_jax_jit, check_tf_function, value_and_grads

BACKEND = keras.backend.backend()
tf_only = pytest.mark.tensorflow
jax_only = pytest.mark.skipif(BACKEND != "jax", reason="JAX backend only")


pytestmark = pytest.mark.usefixtures("jax_float64")


def _log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def np_kd(t, s, temperature):
    log_p = _log_softmax(np.asarray(t, np.float64) / temperature)
    log_q = _log_softmax(np.asarray(s, np.float64) / temperature)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
    return temperature**2 * kl.mean(), temperature**2 * kl


def np_soft_label(t, s, tt, ts):
    p = np.exp(_log_softmax(np.asarray(t, np.float64) / tt))
    ce = -(p * _log_softmax(np.asarray(s, np.float64) / ts)).sum(-1)
    return ce.mean(), ce


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
def test_kd_loss_matches_numpy(temperature):
    rng = np.random.default_rng(0)
    t = rng.normal(size=(16, 10)) * 3
    s = rng.normal(size=(16, 10)) * 3
    want, want_rows = np_kd(t, s, temperature)
    got = losses.kd_loss(t.astype("float32"), s.astype("float32"), temperature)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    rows = losses.kd_loss(t, s, temperature, reduction="none")
    assert rows.shape == (16,)
    np.testing.assert_allclose(np.asarray(rows), want_rows, rtol=1e-10)


def test_kd_loss_is_exact_for_huge_logits():
    t = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 5e3]], dtype=np.float32)
    s = np.array([[0.0, 1e4, -1e4], [-1e4, 1e4, 5e3]], dtype=np.float32)
    got = np.asarray(losses.kd_loss(t, s, temperature=2.0, reduction="none"))
    assert np.all(np.isfinite(got))
    want = np_kd(t.astype(np.float64), s.astype(np.float64), 2.0)[1]
    # Row 0: the teacher is sure of class 0, the student of class 1:
    # KL = (1e4 - 0) / T = 5000, times T^2 = 4 -> 20000.
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got[0], 20000.0, rtol=1e-6)
    assert got[1] == 0.0


def test_kd_loss_is_zero_when_student_equals_teacher():
    t = np.random.default_rng(1).normal(size=(4, 7)).astype("float32") * 50
    assert float(losses.kd_loss(t, t, 3.0)) == 0.0


def test_kd_loss_gradient_is_t_squared_scaled():
    """d/ds T^2 KL(p || softmax(s/T)) = T (q - p), averaged over the batch."""
    rng = np.random.default_rng(2)
    t = rng.normal(size=(8, 5))
    s = rng.normal(size=(8, 5))
    for temperature in (1.0, 4.0, 10.0):
        _, (grad,) = value_and_grads(
            lambda x: losses.kd_loss(t, x, temperature), s)
        p = np.exp(_log_softmax(t / temperature))
        q = np.exp(_log_softmax(s / temperature))
        np.testing.assert_allclose(grad, temperature * (q - p) / 8, rtol=1e-9)


@pytest.mark.parametrize("tt,ts", [(1.0, 1.0), (4.0, 2.0), (0.5, 3.0)])
def test_soft_label_loss_matches_numpy(tt, ts):
    rng = np.random.default_rng(3)
    t = rng.normal(size=(12, 6)) * 4
    s = rng.normal(size=(12, 6)) * 4
    want, want_rows = np_soft_label(t, s, tt, ts)
    np.testing.assert_allclose(float(losses.soft_label_loss(t, s, tt, ts)), want,
                               rtol=1e-10)
    np.testing.assert_allclose(
        np.asarray(losses.soft_label_loss(t, s, tt, ts, reduction="none")),
        want_rows, rtol=1e-10)


def test_soft_label_loss_finite_for_huge_logits():
    t = np.array([[1e4, -1e4]], np.float32)
    s = np.array([[-1e4, 1e4]], np.float32)
    got = float(losses.soft_label_loss(t, s))
    np.testing.assert_allclose(got, 2e4, rtol=1e-6)


def test_losses_keep_spatial_axes_with_reduction_none():
    rng = np.random.default_rng(4)
    t = rng.normal(size=(2, 3, 3, 4))
    s = rng.normal(size=(2, 3, 3, 4))
    rows = losses.kd_loss(t, s, 2.0, reduction="none")
    assert rows.shape == (2, 3, 3)
    np.testing.assert_allclose(float(losses.kd_loss(t, s, 2.0)),
                               np_kd(t, s, 2.0)[0], rtol=1e-10)


def test_probabilities_to_logits_round_trips():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(6, 5))
    p = np.exp(_log_softmax(z))
    logits = losses.probabilities_to_logits(p)
    assert keras.backend.standardize_dtype(logits.dtype) == "float64"
    np.testing.assert_allclose(np.exp(_log_softmax(np.asarray(logits))), p,
                               rtol=1e-10)
    # Underflowed probabilities stay finite.
    assert np.all(np.isfinite(np.asarray(losses.probabilities_to_logits(
        np.array([[1.0, 0.0]], np.float32)))))
    # Also in float64, where the smallest normal float is 2.2e-308.
    tiny = np.asarray(losses.probabilities_to_logits(np.array([[1.0, 0.0]])))
    np.testing.assert_allclose(tiny[0, 1], np.log(np.finfo(np.float64).tiny))
    # float16 and integer inputs are computed in float32.
    for p16 in (np.array([[0.5, 0.5]], np.float16), np.array([[1, 0]])):
        out = losses.probabilities_to_logits(p16)
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        assert np.all(np.isfinite(np.asarray(out)))


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan")])
def test_bad_temperature_is_a_value_error(bad):
    with pytest.raises(ValueError, match="temperature"):
        losses.kd_loss(np.zeros((1, 2)), np.zeros((1, 2)), bad)
    with pytest.raises(ValueError, match="student_temperature"):
        losses.soft_label_loss(np.zeros((1, 2)), np.zeros((1, 2)), 1.0, bad)


def test_non_numeric_temperature_is_a_type_error():
    with pytest.raises(TypeError, match="temperature"):
        losses.kd_loss(np.zeros((1, 2)), np.zeros((1, 2)), "4")
    with pytest.raises(TypeError, match="temperature"):
        losses.kd_loss(np.zeros((1, 2)), np.zeros((1, 2)), True)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        losses.kd_loss(np.zeros((2, 3)), np.zeros((2, 4)), 1.0)


def test_bad_reduction():
    with pytest.raises(ValueError, match="reduction"):
        losses.kd_loss(np.zeros((1, 2)), np.zeros((1, 2)), 1.0, reduction="sum")


@pytest.mark.parametrize("dtype,want", [
    ("float16", "float32"), ("float32", "float32"), ("float64", "float64"),
    ("int32", "float32")])
def test_logit_losses_dtype_rule(dtype, want):
    t = np.array([[2.0, 1.0, 0.0]]).astype(dtype)
    for value in (losses.kd_loss(t, t), losses.soft_label_loss(t, t)):
        assert keras.backend.standardize_dtype(value.dtype) == want
    mixed = losses.kd_loss(t, np.zeros((1, 3), np.float64))
    assert keras.backend.standardize_dtype(mixed.dtype) == "float64"


def test_losses_module_does_not_import_tensorflow():
    """keras.ops only: no module-level TensorFlow import, in any module of
    the package."""
    modules = [losses] + [
        importlib.import_module(f"{losses.__name__}.{info.name}")
        for info in pkgutil.iter_modules(losses.__path__)
    ]
    assert {m.__name__.rsplit(".", 1)[-1] for m in modules} >= {
        "losses", "_common", "logits", "features"}
    for module in modules:
        tree = ast.parse(inspect.getsource(module))
        for node in tree.body:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "tensorflow" for n in names), (
                module.__name__, names)


def test_public_names_are_kept():
    for name in ("kd_loss", "soft_label_loss", "probabilities_to_logits",
                 "dkd_loss", "l2_loss", "fsp_matrix", "fsp_loss", "at_loss",
                 "rkd_loss"):
        assert name in losses.__all__ and callable(getattr(losses, name))
        assert getattr(losses, name).__doc__


def test_old_check_names_are_aliases():
    from keras_distill import _validation

    assert losses._check_temperature is _validation.check_temperature
    assert losses._check_weight is _validation.check_weight
    assert losses._check_bool is _validation.check_bool


def _logit_cases():
    rng = np.random.default_rng(8)
    t = (rng.normal(size=(4, 6)) * 1e3).astype("float32")  # huge logits
    s = rng.normal(size=(4, 6)).astype("float32")
    return {
        "kd_loss": lambda a, b: losses.kd_loss(a, b, 4.0),
        "kd_loss_none": lambda a, b: losses.kd_loss(a, b, 2.0, reduction="none"),
        "soft_label_loss": lambda a, b: losses.soft_label_loss(a, b, 4.0, 2.0),
        "soft_label_loss_none": lambda a, b: losses.soft_label_loss(
            a, b, reduction="none"),
        "probabilities_to_logits": lambda a, b: losses.probabilities_to_logits(
            keras.ops.softmax(a, axis=-1)) + 0.0 * b,
    }, (t, s)


@jax_only
@pytest.mark.parametrize("name", sorted(_logit_cases()[0]))
def test_logit_losses_run_in_jax_jit(name):
    cases, args = _logit_cases()
    check_jax_jit(cases[name], args)


@tf_only
@pytest.mark.parametrize("name", sorted(_logit_cases()[0]))
@pytest.mark.parametrize("jit_compile", [False, True])
def test_logit_losses_run_in_tf_function(name, jit_compile):
    cases, args = _logit_cases()
    check_tf_function(cases[name], args, jit_compile=jit_compile)


@tf_only
def test_kd_loss_on_tf_keras_outputs_under_xla():
    """tf.Tensors from a tf_keras model, in a jit-compiled training step."""
    import tf_keras

    rng = np.random.default_rng(9)
    x = rng.normal(size=(8, 5)).astype("float32")
    teacher = tf_keras.Sequential([tf_keras.layers.Dense(4)])
    student = tf_keras.Sequential([tf_keras.layers.Dense(4)])
    teacher(x), student(x)  # build

    @tf.function(jit_compile=True)
    def step(x):
        with tf.GradientTape() as tape:
            loss = losses.kd_loss(teacher(x) * 100.0, student(x), 4.0)
        return loss, tape.gradient(loss, student.trainable_variables)

    loss, grads = step(tf.constant(x))
    want = np_kd(teacher(x).numpy() * 100.0, student(x).numpy(), 4.0)[0]
    np.testing.assert_allclose(float(loss), want, rtol=1e-4)
    assert all(np.isfinite(g.numpy()).all() for g in grads)
