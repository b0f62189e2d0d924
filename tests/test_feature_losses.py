"""numpy float64 references for the feature and relational losses.

Run under every backend: the default (TensorFlow) and ``KERAS_BACKEND=jax``
(with float64 enabled for this module, so the float64 references hold).
"""

import itertools

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


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


# ---------------------------------------------------------------------------
# numpy references (float64, written from the papers' formulas)


def np_l2(t, s):
    sq = (np.asarray(s, np.float64) - np.asarray(t, np.float64)) ** 2
    return sq.mean(), sq.reshape(len(sq), -1).mean(axis=1)


def np_fsp_matrix(f1, f2):
    f1 = np.asarray(f1, np.float64)
    f2 = np.asarray(f2, np.float64)
    h, w = f1.shape[1:3]
    return np.einsum("bhwi,bhwj->bij", f1, f2) / (h * w)


def np_rms(f):
    f = np.asarray(f, np.float64)
    return f / np.sqrt((f**2).mean(axis=(1, 2, 3), keepdims=True))


def np_fsp_loss(t1, t2, s1, s2, normalize):
    if normalize:
        t1, t2, s1, s2 = map(np_rms, (t1, t2, s1, s2))
    sq = (np_fsp_matrix(s1, s2) - np_fsp_matrix(t1, t2)) ** 2
    return sq.mean(), sq.mean(axis=(1, 2))


def np_attention(a, p):
    a = np.asarray(a, np.float64)
    q = (np.abs(a) ** p).sum(axis=-1).reshape(len(a), -1)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def np_at(t, s, p):
    rows = ((np_attention(s, p) - np_attention(t, p)) ** 2).sum(axis=1)
    return rows.mean(), rows


def np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_kl(p, q):
    return (p * (np.log(p) - np.log(q))).sum(axis=-1)


def np_dkd_parts(t, s, labels, temperature):
    """TCKD and NCKD per sample, unweighted, without T² (Zhao et al. eq. 1-4)."""
    pt = np_softmax(np.asarray(t, np.float64) / temperature)
    ps = np_softmax(np.asarray(s, np.float64) / temperature)
    tckd, nckd = [], []
    for b, y in enumerate(labels):
        bt = np.array([pt[b, y], 1 - pt[b, y]])
        bs = np.array([ps[b, y], 1 - ps[b, y]])
        others = [c for c in range(pt.shape[1]) if c != y]
        hat_t = pt[b, others] / pt[b, others].sum()
        hat_s = ps[b, others] / ps[b, others].sum()
        tckd.append(np_kl(bt, bs))
        nckd.append(np_kl(hat_t, hat_s))
    return np.array(tckd), np.array(nckd)


def np_dkd(t, s, labels, alpha, beta, temperature):
    tckd, nckd = np_dkd_parts(t, s, labels, temperature)
    rows = temperature**2 * (alpha * tckd + beta * nckd)
    return rows.mean(), rows


def np_huber(x):
    a = np.abs(x)
    return np.where(a < 1, 0.5 * x**2, a - 0.5)


def np_rkd(t, s, distance_weight=25.0, angle_weight=50.0):
    """Park et al. 2019, with explicit loops over pairs and triplets."""

    def relations(x):
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        n = len(x)
        d = np.array([[np.linalg.norm(x[i] - x[j]) for j in range(n)]
                      for i in range(n)])
        d = d / d[d > 0].mean()
        angle = np.zeros((n, n, n))
        for i, j, k in itertools.product(range(n), repeat=3):
            u, v = x[i] - x[j], x[k] - x[j]
            nu, nv = np.linalg.norm(u), np.linalg.norm(v)
            if nu > 0 and nv > 0:
                angle[i, j, k] = u @ v / (nu * nv)  # cos of the angle at x_j
        return d, angle

    dt, at = relations(t)
    ds, as_ = relations(s)
    return (distance_weight * np_huber(ds - dt).mean()
            + angle_weight * np_huber(as_ - at).mean())


def finite_gradient(loss_fn, *variables):
    loss, grads = value_and_grads(loss_fn, *variables)
    assert np.isfinite(loss).all(), loss
    for g in grads:
        assert g is not None
        assert np.isfinite(g).all()
    return loss, grads


RNG = np.random.default_rng(0)


# ---------------------------------------------------------------------------
# l2_loss


def test_l2_loss_matches_numpy():
    t = RNG.normal(size=(4, 3, 3, 5))
    s = RNG.normal(size=(4, 3, 3, 5))
    want, want_rows = np_l2(t, s)
    np.testing.assert_allclose(float(losses.l2_loss(t, s)), want, rtol=1e-12)
    rows = losses.l2_loss(t, s, reduction="none")
    assert rows.shape == (4,)
    np.testing.assert_allclose(np.asarray(rows), want_rows, rtol=1e-12)
    got32 = losses.l2_loss(t.astype("float32"), s.astype("float32"))
    assert _dtype(got32) == "float32"
    np.testing.assert_allclose(float(got32), want, rtol=1e-5)
    assert _dtype(losses.l2_loss(t, s)) == "float64"


def test_l2_loss_huge_and_float16_inputs_stay_finite():
    t = np.full((2, 4), 1e4, np.float16)
    s = np.full((2, 4), -1e4, np.float16)
    got = losses.l2_loss(t, s)
    assert _dtype(got) == "float32"  # float16 promoted: 4e8 > float16 max
    np.testing.assert_allclose(float(got), 4e8, rtol=1e-6)
    t = RNG.normal(size=(3, 8)).astype("float32") * 1e6
    _, (grad,) = finite_gradient(lambda s: losses.l2_loss(t, s), -t)
    np.testing.assert_allclose(grad, -4 * t / t.size, rtol=1e-6)


def test_l2_loss_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError,
                       match=r"teacher \(2, 3\) and student \(2, 4\).*adapter"):
        losses.l2_loss(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="reduction"):
        losses.l2_loss(np.zeros((2, 3)), np.zeros((2, 3)), reduction="sum")


@tf_only
def test_l2_loss_checks_dynamic_shapes_in_graphs():
    spec = tf.TensorSpec([None, 3], tf.float32)
    fn = tf.function(losses.l2_loss, input_signature=[spec, spec])
    np.testing.assert_allclose(
        float(fn(np.ones((2, 3), "f"), np.zeros((2, 3), "f"))), 1.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="same shape"):
        fn(np.ones((2, 3), "f"), np.zeros((1, 3), "f"))  # would broadcast


# ---------------------------------------------------------------------------
# fsp_matrix / fsp_loss


def test_fsp_matrix_matches_numpy():
    f1 = RNG.normal(size=(3, 4, 5, 2))
    f2 = RNG.normal(size=(3, 4, 5, 6))
    got = losses.fsp_matrix(f1, f2)
    assert got.shape == (3, 2, 6)
    np.testing.assert_allclose(np.asarray(got), np_fsp_matrix(f1, f2), rtol=1e-12)
    got32 = losses.fsp_matrix(f1.astype("float32"), f2.astype("float32"))
    np.testing.assert_allclose(np.asarray(got32), np_fsp_matrix(f1, f2),
                               rtol=1e-5, atol=1e-6)


def test_fsp_matrix_spatial_mismatch_is_explained():
    with pytest.raises(ValueError, match=(
            r"f1 \(2, 4, 4, 3\) and f2 \(2, 8, 8, 3\).*same height and "
            r"width.*pool")):
        losses.fsp_matrix(np.zeros((2, 4, 4, 3)), np.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"`f2`.*\(2, 4\)"):
        losses.fsp_matrix(np.zeros((2, 4, 4, 3)), np.zeros((2, 4)))


@pytest.mark.parametrize("normalize", [False, True])
def test_fsp_loss_matches_numpy(normalize):
    # The student's spatial size may differ from the teacher's.
    t1, t2 = RNG.normal(size=(4, 6, 6, 3)), RNG.normal(size=(4, 6, 6, 5))
    s1, s2 = RNG.normal(size=(4, 3, 3, 3)), RNG.normal(size=(4, 3, 3, 5))
    want, want_rows = np_fsp_loss(t1, t2, s1, s2, normalize)
    got = losses.fsp_loss(t1, t2, s1, s2, normalize=normalize)
    np.testing.assert_allclose(float(got), want, rtol=1e-10)
    rows = losses.fsp_loss(t1, t2, s1, s2, normalize=normalize, reduction="none")
    assert rows.shape == (4,)
    np.testing.assert_allclose(np.asarray(rows), want_rows, rtol=1e-10)
    got32 = losses.fsp_loss(*(x.astype("float32") for x in (t1, t2, s1, s2)),
                            normalize=normalize)
    np.testing.assert_allclose(float(got32), want, rtol=1e-5)


def test_fsp_loss_unnormalised_is_paddleslim_exactly():
    t1, t2, s1, s2 = (RNG.integers(-3, 4, size=(2, 2, 2, 2)).astype("float32")
                      for _ in range(4))
    want = np_fsp_loss(t1, t2, s1, s2, normalize=False)[0]
    got = float(losses.fsp_loss(t1, t2, s1, s2, normalize=False))
    assert got == np.float32(want)  # small integers: every step is exact


def test_fsp_loss_normalised_is_scale_invariant():
    t1, t2 = RNG.normal(size=(2, 4, 4, 3)), RNG.normal(size=(2, 4, 4, 2))
    s1, s2 = RNG.normal(size=(2, 4, 4, 3)), RNG.normal(size=(2, 4, 4, 2))
    base = float(losses.fsp_loss(t1, t2, s1, s2))
    scaled = float(losses.fsp_loss(1e3 * t1, 1e-2 * t2, 7 * s1, 1e5 * s2))
    np.testing.assert_allclose(scaled, base, rtol=1e-10)
    assert float(losses.fsp_loss(t1, t2, 5 * t1, 0.1 * t2)) < 1e-20


@pytest.mark.parametrize("magnitude", [1e4, 1e5, 1e6])
def test_fsp_loss_huge_activations_stay_finite(magnitude):
    t1, t2, s1, s2 = (np.abs(RNG.normal(size=(2, 8, 8, 4))).astype("float32")
                      * magnitude for _ in range(4))
    for normalize in (False, True):
        loss, _ = finite_gradient(
            lambda a, b: losses.fsp_loss(t1, t2, a, b, normalize=normalize),
            s1, s2)
        want = np_fsp_loss(t1, t2, s1, s2, normalize)[0]
        np.testing.assert_allclose(float(loss), want, rtol=1e-4)


def test_fsp_loss_normalised_survives_any_finite_scale():
    t1, t2, s1, s2 = (RNG.normal(size=(2, 4, 4, 3)).astype("float32")
                      for _ in range(4))
    want = np_fsp_loss(t1, t2, s1, s2, normalize=True)[0]
    # 1e30**2 overflows float32; float16 maps of 6e4 overflow when squared.
    loss, _ = finite_gradient(
        lambda a, b: losses.fsp_loss(1e30 * t1, t2, a, b), 1e30 * s1, s2)
    np.testing.assert_allclose(float(loss), want, rtol=1e-4)
    half = [np.clip(x * 3e4, -6e4, 6e4).astype("float16") for x in (t1, t2, s1, s2)]
    assert np.isfinite(float(losses.fsp_loss(*half)))
    assert np.isfinite(float(losses.fsp_loss(*half, normalize=False)))


def test_fsp_loss_zero_maps_are_safe():
    zeros = np.zeros((2, 3, 3, 2), np.float32)
    ones = np.ones((2, 3, 3, 2), np.float32)
    loss, _ = finite_gradient(
        lambda a, b: losses.fsp_loss(ones, ones, a, b), zeros, zeros)
    np.testing.assert_allclose(float(loss), 1.0)  # G_t = 1, G_s = 0


def test_fsp_loss_channel_mismatch_asks_for_an_adapter():
    t1, t2 = np.zeros((2, 4, 4, 3)), np.zeros((2, 4, 4, 5))
    s1, s2 = np.zeros((2, 4, 4, 3)), np.zeros((2, 4, 4, 2))
    with pytest.raises(ValueError, match=(
            r"teacher \(3, 5\).*student \(3, 2\).*adapter is needed")):
        losses.fsp_loss(t1, t2, s1, s2)
    with pytest.raises(ValueError, match=r"student_first.*student_second.*pool"):
        losses.fsp_loss(t1, t2, s1, np.zeros((2, 2, 2, 5)))
    with pytest.raises(ValueError, match="batch size"):
        losses.fsp_loss(t1, t2, s1[:1], np.zeros((1, 4, 4, 5)))
    with pytest.raises(TypeError, match="normalize"):
        losses.fsp_loss(t1, t2, s1, np.zeros((2, 4, 4, 5)), normalize="rms")


# ---------------------------------------------------------------------------
# at_loss


@pytest.mark.parametrize("p", [1, 2, 3.5])
def test_at_loss_matches_numpy(p):
    t = RNG.normal(size=(5, 4, 6, 8))
    s = RNG.normal(size=(5, 4, 6, 3))  # channels may differ
    want, want_rows = np_at(t, s, p)
    np.testing.assert_allclose(float(losses.at_loss(t, s, p=p)), want, rtol=1e-10)
    rows = losses.at_loss(t, s, p=p, reduction="none")
    assert rows.shape == (5,)
    np.testing.assert_allclose(np.asarray(rows), want_rows, rtol=1e-10)
    got32 = losses.at_loss(t.astype("float32"), s.astype("float32"), p=p)
    np.testing.assert_allclose(float(got32), want, rtol=1e-5)


def test_at_loss_relates_to_the_authors_code():
    """The authors' (diff).pow(2).mean() is this loss divided by H·W."""
    t = RNG.normal(size=(3, 4, 5, 6))
    s = RNG.normal(size=(3, 4, 5, 2))
    authors = ((np_attention(s, 2) - np_attention(t, 2)) ** 2).mean()
    np.testing.assert_allclose(float(losses.at_loss(t, s)) / (4 * 5), authors,
                               rtol=1e-10)


@pytest.mark.parametrize("magnitude", [1e4, 1e6, 1e30])
def test_at_loss_huge_activations_stay_finite(magnitude):
    t = RNG.normal(size=(2, 4, 4, 3)).astype("float32")
    s = RNG.normal(size=(2, 4, 4, 5)).astype("float32")
    loss, _ = finite_gradient(
        lambda x: losses.at_loss(t * magnitude, x), s * magnitude)
    np.testing.assert_allclose(float(loss), np_at(t, s, 2)[0], rtol=1e-4)
    half = losses.at_loss(np.full((1, 2, 2, 3), 6e4, np.float16),
                          np.full((1, 2, 2, 3), 1.0, np.float16))
    assert float(half) == 0.0


def test_at_loss_all_zero_maps_give_no_nan():
    zeros = np.zeros((2, 3, 3, 4), np.float32)
    t = RNG.normal(size=(2, 3, 3, 4)).astype("float32")
    loss, _ = finite_gradient(lambda s: losses.at_loss(t, s), zeros)
    np.testing.assert_allclose(float(loss), 1.0, rtol=1e-6)  # ||0 - unit||^2
    loss, _ = finite_gradient(lambda s: losses.at_loss(zeros, s), zeros)
    assert float(loss) == 0.0
    finite_gradient(lambda s: losses.at_loss(t, s, p=1), zeros)


def test_at_loss_errors():
    with pytest.raises(ValueError, match=(
            r"teacher \(2, 8, 8, 4\) and student \(2, 4, 4, 4\).*pool")):
        losses.at_loss(np.zeros((2, 8, 8, 4)), np.zeros((2, 4, 4, 4)))
    with pytest.raises(ValueError, match=r"`teacher_feat`.*\(2, 4\)"):
        losses.at_loss(np.zeros((2, 4)), np.zeros((2, 4, 4, 4)))
    with pytest.raises(ValueError, match="`p`.*0.5"):
        losses.at_loss(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 1)), p=0.5)
    with pytest.raises(TypeError, match="`p`"):
        losses.at_loss(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 1)), p="2")


# ---------------------------------------------------------------------------
# dkd_loss


@pytest.mark.parametrize("alpha,beta,temperature", [
    (1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (1.0, 0.0, 2.0), (0.0, 1.0, 10.0)])
def test_dkd_loss_matches_numpy(alpha, beta, temperature):
    t = RNG.normal(size=(16, 10)) * 3
    s = RNG.normal(size=(16, 10)) * 3
    labels = RNG.integers(0, 10, size=16)
    want, want_rows = np_dkd(t, s, labels, alpha, beta, temperature)
    got = losses.dkd_loss(t, s, labels, alpha, beta, temperature)
    np.testing.assert_allclose(float(got), want, rtol=1e-9)
    rows = losses.dkd_loss(t, s, labels[:, None], alpha, beta, temperature,
                           reduction="none")  # (batch, 1) labels too
    assert rows.shape == (16,)
    np.testing.assert_allclose(np.asarray(rows), want_rows, rtol=1e-9, atol=1e-14)
    got32 = losses.dkd_loss(t.astype("float32"), s.astype("float32"),
                            labels.astype("float32"), alpha, beta, temperature)
    assert _dtype(got32) == "float32"
    np.testing.assert_allclose(float(got32), want, rtol=1e-4)


def test_dkd_reformulates_kd_paper_eq5():
    """KD = TCKD + (1 - p_t^T) NCKD, per sample (Zhao et al. 2022, eq. 5)."""
    t = RNG.normal(size=(12, 7)) * 4
    s = RNG.normal(size=(12, 7)) * 4
    labels = RNG.integers(0, 7, size=12)
    for temperature in (1.0, 4.0):
        kd = np.asarray(losses.kd_loss(t, s, temperature, reduction="none"))
        tckd = np.asarray(losses.dkd_loss(t, s, labels, 1.0, 0.0, temperature,
                                          reduction="none"))
        nckd = np.asarray(losses.dkd_loss(t, s, labels, 0.0, 1.0, temperature,
                                          reduction="none"))
        p_target = np_softmax(t / temperature)[np.arange(12), labels]
        np.testing.assert_allclose(kd, tckd + (1 - p_target) * nckd, rtol=1e-10)


def test_dkd_loss_is_exact_for_huge_logits():
    t = np.array([[1e4, 0.0, -1e4], [1e4, 0.0, -1e4]], np.float32)
    s = np.array([[0.0, 1e4, -1e4], [1e4, -1e4, 0.0]], np.float32)
    labels = np.array([0, 0])
    tckd = np.asarray(
        losses.dkd_loss(t, s, labels, 1.0, 0.0, 2.0, reduction="none"))
    nckd = np.asarray(
        losses.dkd_loss(t, s, labels, 0.0, 1.0, 2.0, reduction="none"))
    # Row 0: teacher sure of the target, student of class 1: TCKD = 1e4 / T,
    # times T^2 = 2e4; the non-target classes agree (class 1 dominates both).
    # Row 1: the target shares agree, the non-target classes are swapped: a
    # mask of "- 1000" (the official code) would not remove logit/T = 5000.
    np.testing.assert_allclose(tckd, [2e4, 0.0], rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(nckd, [0.0, 2e4], rtol=1e-6, atol=1e-3)
    finite_gradient(lambda a, b: losses.dkd_loss(a, b, labels), t, s)


def test_dkd_loss_zero_when_equal_and_gradient_finite():
    t = RNG.normal(size=(6, 5)).astype("float32") * 100
    labels = RNG.integers(0, 5, size=6)
    assert float(losses.dkd_loss(t, t, labels)) == 0.0
    finite_gradient(lambda s: losses.dkd_loss(t, s, labels), t * 0.5)


def test_dkd_loss_errors():
    t = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 3\).*one-hot.*argmax"):
        losses.dkd_loss(t, t, np.eye(3)[[0, 1, 2, 0]])
    with pytest.raises(ValueError, match=r"`labels`.*\(4,\).*\(5,\)"):
        losses.dkd_loss(t, t, np.zeros(5, int))
    with pytest.raises(ValueError, match=r"`labels`.*\[0, 3\).*from 0 to 3"):
        losses.dkd_loss(t, t, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="`labels`.*-1"):
        losses.dkd_loss(t, t, [0, 1, 2, -1])
    with pytest.raises(ValueError, match="non-integer"):
        losses.dkd_loss(t, t, [0.5, 1, 2, 0])
    with pytest.raises(TypeError, match="`labels`.*bool"):
        losses.dkd_loss(t, t, [True, False, True, True])
    with pytest.raises(ValueError, match=r"at least 2 classes.*\(4, 1\)"):
        losses.dkd_loss(np.zeros((4, 1)), np.zeros((4, 1)), [0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 5\)"):
        losses.dkd_loss(t, np.zeros((4, 5)), [0, 0, 0, 0])
    with pytest.raises(ValueError, match="`beta`"):
        losses.dkd_loss(t, t, [0, 0, 0, 0], beta=-1.0)
    with pytest.raises(TypeError, match="`alpha`"):
        losses.dkd_loss(t, t, [0, 0, 0, 0], alpha=None)
    with pytest.raises(ValueError, match="`temperature`"):
        losses.dkd_loss(t, t, [0, 0, 0, 0], temperature=0.0)


@tf_only
def test_dkd_loss_checks_label_range_in_graphs():
    fn = tf.function(lambda t, s, y: losses.dkd_loss(t, s, y))
    t = np.zeros((2, 3), np.float32)
    assert float(fn(t, t, np.array([0, 2]))) == 0.0
    with pytest.raises(tf.errors.InvalidArgumentError, match="class ids"):
        fn(t, t, np.array([0, 3]))


# ---------------------------------------------------------------------------
# rkd_loss


def test_rkd_loss_matches_numpy():
    t = RNG.normal(size=(6, 8))
    s = RNG.normal(size=(6, 3))  # widths may differ
    np.testing.assert_allclose(float(losses.rkd_loss(t, s)), np_rkd(t, s),
                               rtol=1e-10)
    for wd, wa in ((1.0, 0.0), (0.0, 1.0), (2.5, 0.5)):
        np.testing.assert_allclose(
            float(losses.rkd_loss(t, s, wd, wa)), np_rkd(t, s, wd, wa), rtol=1e-10)
    got32 = losses.rkd_loss(t.astype("float32"), s.astype("float32"))
    np.testing.assert_allclose(float(got32), np_rkd(t, s), rtol=1e-5)


def test_rkd_loss_flattens_higher_ranks_and_handles_duplicates():
    t = RNG.normal(size=(5, 2, 3, 2))
    s = RNG.normal(size=(5, 4))
    s[3] = s[1]  # a duplicated student embedding: a zero distance
    t[4] = t[0]
    np.testing.assert_allclose(float(losses.rkd_loss(t, s)), np_rkd(t, s),
                               rtol=1e-10)


def test_rkd_loss_is_scale_invariant_and_zero_for_equal_relations():
    t = RNG.normal(size=(5, 4))
    rotation = np.linalg.qr(RNG.normal(size=(4, 4)))[0]
    assert float(losses.rkd_loss(t, 3.0 * t @ rotation)) < 1e-20
    s = RNG.normal(size=(5, 7))
    np.testing.assert_allclose(float(losses.rkd_loss(1e-3 * t, 1e4 * s)),
                               float(losses.rkd_loss(t, s)), rtol=1e-10)


@pytest.mark.parametrize("magnitude", [1e4, 1e6, 1e25])
def test_rkd_loss_huge_embeddings_stay_finite(magnitude):
    t = RNG.normal(size=(6, 5)).astype("float32")
    s = RNG.normal(size=(6, 3)).astype("float32")
    loss, _ = finite_gradient(
        lambda x: losses.rkd_loss(t * magnitude, x), s * magnitude)
    np.testing.assert_allclose(float(loss), np_rkd(t, s), rtol=1e-4)


def test_rkd_loss_gradient_finite_for_duplicated_rows():
    t = RNG.normal(size=(6, 5)).astype("float32")
    s = RNG.normal(size=(6, 3)).astype("float32")
    s[2] = s[0]
    s[5] = s[0]
    t[1] = t[4]
    loss, (grad,) = finite_gradient(lambda x: losses.rkd_loss(t, x), s)
    np.testing.assert_allclose(float(loss), np_rkd(t, s), rtol=1e-5)
    assert np.abs(grad).max() < 1e3  # no 1/eps spikes either
    # A batch of one repeated embedding, and a batch of one.
    same = np.tile(s[:1], (4, 1))
    loss, _ = finite_gradient(lambda x: losses.rkd_loss(t[:4], x), same)
    assert np.isfinite(float(loss))
    loss, _ = finite_gradient(lambda x: losses.rkd_loss(same, x), same)
    assert float(loss) == 0.0
    loss, _ = finite_gradient(lambda x: losses.rkd_loss(t[:1], x), s[:1])
    assert float(loss) == 0.0


def test_rkd_loss_errors():
    with pytest.raises(ValueError, match=r"teacher \(4, 3\) and student \(5, 3\)"):
        losses.rkd_loss(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"`student_embed`.*\(4,\)"):
        losses.rkd_loss(np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="`angle_weight`"):
        losses.rkd_loss(np.zeros((4, 3)), np.zeros((4, 3)), angle_weight=-1.0)
    with pytest.raises(TypeError, match="`distance_weight`"):
        losses.rkd_loss(np.zeros((4, 3)), np.zeros((4, 3)), distance_weight="25")


# ---------------------------------------------------------------------------
# Every loss in tf.function, with and without XLA (TensorFlow), and inside
# jax.jit (JAX)


def _cases():
    rng = np.random.default_rng(7)
    f = lambda *shape: rng.normal(size=shape).astype("float32")  # noqa: E731
    labels = np.array([0, 3, 1, 2], np.int32)
    return {
        "l2_loss": (losses.l2_loss, (f(4, 3, 3, 2), f(4, 3, 3, 2))),
        "fsp_matrix": (losses.fsp_matrix, (f(4, 3, 3, 2), f(4, 3, 3, 5))),
        "fsp_loss": (losses.fsp_loss,
                     (f(4, 4, 4, 2), f(4, 4, 4, 3), f(4, 2, 2, 2), f(4, 2, 2, 3))),
        "fsp_loss_raw": (lambda *a: losses.fsp_loss(*a, normalize=False),
                         (f(4, 4, 4, 2), f(4, 4, 4, 3), f(4, 4, 4, 2), f(4, 4, 4, 3))),
        "at_loss": (losses.at_loss, (f(4, 3, 3, 6), f(4, 3, 3, 2))),
        "dkd_loss": (losses.dkd_loss, (f(4, 5) * 1e3, f(4, 5), labels)),
        "rkd_loss": (losses.rkd_loss, (f(4, 6), np.repeat(f(2, 3), 2, axis=0))),
    }


@tf_only
@pytest.mark.parametrize("name", sorted(_cases()))
@pytest.mark.parametrize("jit_compile", [False, True])
def test_losses_run_in_tf_function(name, jit_compile):
    fn, args = _cases()[name]
    check_tf_function(fn, args[:2], extra=args[2:], jit_compile=jit_compile)


@jax_only
@pytest.mark.parametrize("name", sorted(_cases()))
def test_losses_run_in_jax_jit(name):
    fn, args = _cases()[name]
    check_jax_jit(fn, args)


@tf_only
def test_losses_accept_unknown_batch_size_in_graphs():
    spec4 = tf.TensorSpec([None, 4, 4, 3], tf.float32)

    @tf.function(input_signature=[spec4, spec4])
    def total(a, b):
        return (losses.l2_loss(a, b) + losses.fsp_loss(a, b, b, a)
                + losses.at_loss(a, b) + losses.rkd_loss(a, b))

    a, b = RNG.normal(size=(2, 3, 4, 4, 3)).astype("float32")
    eager = (losses.l2_loss(a, b) + losses.fsp_loss(a, b, b, a)
             + losses.at_loss(a, b) + losses.rkd_loss(a, b))
    np.testing.assert_allclose(float(total(a, b)), float(eager), rtol=1e-5)
