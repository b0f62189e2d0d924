"""numpy references for keras_distill.losses."""

import numpy as np
import pytest
import tensorflow as tf

from keras_distill import losses


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
    np.testing.assert_allclose(rows.numpy(), want_rows, rtol=1e-10)


def test_kd_loss_is_exact_for_huge_logits():
    t = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 5e3]], dtype=np.float32)
    s = np.array([[0.0, 1e4, -1e4], [-1e4, 1e4, 5e3]], dtype=np.float32)
    got = losses.kd_loss(t, s, temperature=2.0, reduction="none").numpy()
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
    s = tf.Variable(rng.normal(size=(8, 5)))
    for temperature in (1.0, 4.0, 10.0):
        with tf.GradientTape() as tape:
            loss = losses.kd_loss(t, s, temperature)
        grad = tape.gradient(loss, s).numpy()
        p = np.exp(_log_softmax(t / temperature))
        q = np.exp(_log_softmax(s.numpy() / temperature))
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
        losses.soft_label_loss(t, s, tt, ts, reduction="none").numpy(),
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
    p = tf.nn.softmax(z).numpy()
    logits = losses.probabilities_to_logits(p)
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), p, rtol=1e-10)
    # Underflowed probabilities stay finite.
    assert np.all(np.isfinite(losses.probabilities_to_logits(
        np.array([[1.0, 0.0]], np.float32)).numpy()))


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
