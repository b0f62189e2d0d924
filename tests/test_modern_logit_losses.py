"""DIST and logit standardisation: numpy references, terms, compiled steps."""

import keras
import numpy as np
import pytest

from keras_distill import losses, terms
from helpers import check_jax_jit, check_tf_function
from test_feature_losses import np_dkd

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.usefixtures("jax_float64")


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_standardise(z):
    """Sun et al. 2024, eq. 6, population standard deviation."""
    z = np.asarray(z, np.float64)
    c = z - z.mean(-1, keepdims=True)
    return c / (np.sqrt((c**2).mean(-1, keepdims=True)) + 1e-7)


def np_pearson_rows(a, b):
    """Pearson's correlation of each row, as DIST's official code."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1)
                             * np.linalg.norm(b, axis=1) + 1e-8)


def np_dist(t, s, temperature, beta, gamma):
    ys = np_softmax(np.asarray(s, np.float64) / temperature)
    yt = np_softmax(np.asarray(t, np.float64) / temperature)
    inter = 1 - np_pearson_rows(ys, yt)
    intra = 1 - np_pearson_rows(ys.T, yt.T).mean()
    rows = temperature**2 * (beta * inter + gamma * intra)
    return rows.mean(), rows


def np_kd(t, s, temperature):
    p = np_softmax(np.asarray(t, np.float64) / temperature)
    q = np_softmax(np.asarray(s, np.float64) / temperature)
    return temperature**2 * (p * (np.log(p) - np.log(q))).sum(-1)


def logits(seed=0, n=8, c=5, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, c)) * scale).astype("float64"), (
        rng.normal(size=(n, c)) * scale / 2).astype("float64")


def test_standardise_logits_matches_numpy():
    t, _ = logits()
    np.testing.assert_allclose(losses.standardise_logits(t), np_standardise(t),
                               rtol=1e-6, atol=1e-9)


def test_standardised_logits_have_zero_mean_and_unit_deviation():
    t, _ = logits(scale=50.0)
    z = np.asarray(losses.standardise_logits(t))
    np.testing.assert_allclose(z.mean(-1), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.std(-1), 1.0, atol=1e-6)


def test_constant_logits_standardise_to_zero_not_nan():
    z = np.asarray(losses.standardise_logits(np.full((2, 4), 3.0)))
    assert np.all(z == 0.0)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_standardised_kd_matches_numpy(temperature):
    t, s = logits(1)
    got = losses.kd_loss(t, s, temperature, reduction="none", standardise=True)
    np.testing.assert_allclose(
        got, np_kd(np_standardise(t), np_standardise(s), temperature),
        rtol=1e-6)


def test_standardised_kd_ignores_the_logits_scale_and_shift():
    t, s = logits(2)
    a = float(losses.kd_loss(t, s, 2.0, standardise=True))
    b = float(losses.kd_loss(10 * t + 3, 0.1 * s - 7, 2.0, standardise=True))
    assert a == pytest.approx(b, rel=1e-5)
    assert float(losses.kd_loss(t, 10 * t + 3, 2.0, standardise=True)) < 1e-10


def test_standardised_dkd_matches_numpy():
    t, s = logits(3)
    y = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    got = losses.dkd_loss(t, s, y, alpha=1.0, beta=8.0, temperature=2.0,
                          standardise=True)
    want, _ = np_dkd(np_standardise(t), np_standardise(s), y, 1.0, 8.0, 2.0)
    assert float(got) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("temperature,beta,gamma",
                         [(1.0, 1.0, 1.0), (4.0, 2.0, 2.0), (2.0, 1.0, 0.0),
                          (2.0, 0.0, 1.0)])
def test_dist_loss_matches_numpy(temperature, beta, gamma):
    t, s = logits(4)
    want, rows = np_dist(t, s, temperature, beta, gamma)
    got = losses.dist_loss(t, s, temperature, beta, gamma)
    assert float(got) == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(
        losses.dist_loss(t, s, temperature, beta, gamma, reduction="none"),
        rows, rtol=1e-6)


def test_dist_loss_is_zero_for_equal_logits_and_positive_otherwise():
    t, s = logits(5)
    assert float(losses.dist_loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.dist_loss(t, s)) > 0.1


def test_dist_loss_pools_positions_before_the_class_axis():
    t, s = logits(6, n=12)
    flat = float(losses.dist_loss(t, s, 2.0))
    shaped = losses.dist_loss(t.reshape(3, 4, 5), s.reshape(3, 4, 5), 2.0,
                              reduction="none")
    assert tuple(np.shape(shaped)) == (3, 4)
    assert float(np.mean(shaped)) == pytest.approx(flat, rel=1e-6)


def test_dist_loss_on_an_empty_batch_is_zero():
    empty = np.zeros((0, 5), "float32")
    assert float(losses.dist_loss(empty, empty)) == 0.0


@pytest.mark.parametrize("kwargs,name", [({"beta": -1.0}, "beta"),
                                         ({"gamma": float("nan")}, "gamma"),
                                         ({"temperature": 0.0}, "temperature")])
def test_dist_loss_bad_arguments_name_them(kwargs, name):
    t, s = logits()
    with pytest.raises(ValueError, match=f"`{name}`"):
        losses.dist_loss(t, s, **kwargs)


def test_standardise_must_be_a_bool():
    t, s = logits()
    with pytest.raises(TypeError, match="`standardise`"):
        losses.kd_loss(t, s, standardise="yes")


def test_dist_term_and_standardised_kd_term_by_name():
    t, s = logits(7)
    dist = terms.get("dist", beta=2.0, gamma=2.0, temperature=4.0)
    assert float(keras.ops.mean(dist.per_sample(t, s))) == pytest.approx(
        np_dist(t, s, 4.0, 2.0, 2.0)[0], rel=1e-6)
    kd = terms.get("kd", temperature=2.0, standardise=True)
    np.testing.assert_allclose(
        kd.per_sample(t, s), np_kd(np_standardise(t), np_standardise(s), 2.0),
        rtol=1e-6)
    dkd = terms.DKD(beta=2.0, standardise=True)
    y = np.arange(8) % 5
    assert float(keras.ops.mean(dkd.per_sample(t, s, y, temperature=2.0))) \
        == pytest.approx(np_dkd(np_standardise(t), np_standardise(s), y,
                                1.0, 2.0, 2.0)[0], rel=1e-6)


def test_terms_round_trip_through_config():
    for term in (terms.DIST(beta=2.0, gamma=1.0, temperature=4.0),
                 terms.KD(temperature=2.0, standardise=True),
                 terms.DKD(beta=4.0, standardise=True)):
        again = terms.Term.from_config(term.get_config())
        assert again.get_config() == term.get_config()


def test_dist_term_works_inside_keras_distillation():
    assert isinstance(terms.DIST(), keras.distillation.DistillationLoss)


def _cases():
    t, s = logits(9)
    t, s = t.astype("float32"), s.astype("float32")
    return {
        "dist": lambda a, b: losses.dist_loss(a, b, 4.0, 2.0, 2.0),
        "kd_standardised": lambda a, b: losses.kd_loss(a, b, 2.0,
                                                       standardise=True),
    }, (t, s)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX backend only")
@pytest.mark.parametrize("name", ["dist", "kd_standardised"])
def test_new_losses_run_in_jax_jit(name):
    cases, args = _cases()
    check_jax_jit(cases[name], args)


@pytest.mark.tensorflow
@pytest.mark.parametrize("name", ["dist", "kd_standardised"])
@pytest.mark.parametrize("jit_compile", [False, True])
def test_new_losses_run_in_tf_function(name, jit_compile):
    cases, args = _cases()
    check_tf_function(cases[name], args, jit_compile=jit_compile)


def test_dist_with_both_weights_zero_raises():
    with pytest.raises(ValueError, match="`beta`=0 and `gamma`=0"):
        terms.DIST(beta=0, gamma=0)
