"""Consistent views: recorded views replay exactly, online views mix labels."""

import keras
import numpy as np
import pytest

from keras_distill import view_cache as views_module
from keras_distill.view_cache import ViewCache, build_view_cache, select
from keras_distill.views import Views, gather

L = keras.layers
REPLAYABLE = {
    "flip": lambda: L.RandomFlip("horizontal_and_vertical"),
    "translation": lambda: L.RandomTranslation(0.2, 0.2),
    "rotation": lambda: L.RandomRotation(0.2),
    "zoom": lambda: L.RandomZoom(0.2),
    "contrast": lambda: L.RandomContrast(0.3),
    "brightness": lambda: L.RandomBrightness(0.2, value_range=(0, 1)),
    "shear": lambda: L.RandomShear(0.2, 0.2),
}


def images(n=6, size=10, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 1)).astype(
        "float32")


@pytest.mark.parametrize("name", sorted(REPLAYABLE))
def test_recorded_view_replays_exactly_in_any_sample_order(name):
    views = Views(REPLAYABLE[name]())
    x = images()
    view, record = views.record(x, seed=11)
    view = np.asarray(view)
    assert not np.allclose(view, x), "the augmentation did nothing"
    order = np.array([4, 1, 5, 0, 3, 2])
    again = np.asarray(views.replay(x[order], gather(record, order)))
    np.testing.assert_allclose(again, view[order], atol=1e-5)


def test_record_is_a_function_of_the_seed():
    views = Views([L.RandomFlip("horizontal"), L.RandomTranslation(0.2, 0.2)])
    x = images()
    a, _ = views.record(x, 1)
    b, _ = views.record(x, 1)
    c, _ = views.record(x, 2)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_translation_draws_height_and_width_independently():
    # A fixed integer seed used for both draws would shift along the
    # diagonal only.
    views = Views(L.RandomTranslation(0.3, 0.3))
    _, record = views.record(images(n=32), 5)
    t = record[0]["translations"]
    assert not np.allclose(t[:, 0], t[:, 1])


@pytest.mark.parametrize("layer", ["MixUp", "CutMix", "RandAugment"])
def test_batch_level_layers_refuse_to_be_cached_naming_the_layer(layer):
    kwargs = {"value_range": (0, 1)} if layer == "RandAugment" else {}
    views = Views(getattr(L, layer)(**kwargs))
    with pytest.raises(ValueError, match=layer):
        views.record(images(), 0)


def test_callable_augmentation_is_online_only():
    views = Views(lambda batch: batch[:, ::-1])
    view, transformations = views.random_view(images())
    assert transformations is None
    np.testing.assert_array_equal(np.asarray(view), images()[:, ::-1])
    with pytest.raises(ValueError, match="callable"):
        views.record(images(), 0)


@pytest.mark.parametrize("bad", [3, "flip", [L.Dense(2)]])
def test_not_an_augmentation_raises_type_error_naming_the_argument(bad):
    with pytest.raises(TypeError, match="`augmentation`"):
        Views(bad)


@pytest.mark.parametrize("layer", ["MixUp", "CutMix"])
def test_mixing_layers_mix_labels_as_they_mixed_images(layer):
    views = Views(getattr(L, layer)(seed=3))
    x = images(n=8)
    labels = np.eye(4, dtype="float32")[[0, 1, 2, 3, 0, 1, 2, 3]]
    view, t = views.random_view(x)
    mixed = np.asarray(views.mix_labels(labels, t))
    np.testing.assert_allclose(mixed.sum(-1), 1.0, atol=1e-5)
    assert not np.allclose(mixed, labels), "labels were not mixed"
    if layer == "MixUp":
        w = np.asarray(t["mix_weight"] if isinstance(t, dict) else
                       t[0]["mix_weight"]).reshape(-1)
        order = np.asarray(t[0]["permutation_order"])
        np.testing.assert_allclose(
            np.asarray(view),
            w[:, None, None, None] * x
            + (1 - w[:, None, None, None]) * x[order], atol=1e-5)


def _teacher(v):
    v = np.asarray(v)
    return np.stack([v.mean((1, 2, 3)), v[:, :5].mean((1, 2, 3)),
                     v[:, 5:].mean((1, 2, 3))], -1) * 10


def test_view_cache_stores_the_teachers_output_for_each_replayed_view():
    views = Views([L.RandomFlip("vertical"), L.RandomTranslation(0.2, 0.2)])
    x = images(n=10)
    c = build_view_cache(_teacher, x, views, num_views=3, batch_size=4,
                         dtype="float32", verbose=0)
    packed = c.pack(x)
    # select() rebuilds one stored view per sample; the teacher's output on
    # that rebuilt view is the stored one.
    view, outputs = select(views, packed, keras.random.SeedGenerator(1), 3)
    np.testing.assert_allclose(_teacher(view), np.asarray(outputs),
                               atol=1e-4)


def test_view_cache_picks_every_view_over_draws():
    views = Views(L.RandomTranslation(0.3, 0.3))
    x = images(n=4)
    c = build_view_cache(_teacher, x, views, num_views=3, dtype="float32",
                         verbose=0)
    stored = c.outputs  # (4, 3, 3)
    seen = set()
    generator = keras.random.SeedGenerator(0)
    for _ in range(20):
        _, outputs = select(views, c.pack(x), generator, 3)
        row = np.asarray(outputs)[0]
        seen.add(int(np.argmin(np.abs(stored[0] - row).sum(-1))))
    assert seen == {0, 1, 2}


def test_top_k_cache_renormalises_over_the_kept_classes():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 6)).astype("float32")
    values = np.sort(logits, -1)[:, ::-1][:, :2]
    classes = np.argsort(-logits, -1)[:, :2].astype("int32")
    full = np.asarray(views_module._expand_top_k(values, classes, 6))
    for temperature in (1.0, 4.0):
        p = np.exp(full / temperature)
        p /= p.sum(-1, keepdims=True)
        kept = np.exp(values / temperature)
        kept /= kept.sum(-1, keepdims=True)
        np.testing.assert_allclose(
            np.take_along_axis(p, classes, -1), kept, atol=1e-6)


def test_size_is_known_before_the_cache_is_built():
    views = Views(L.RandomFlip("horizontal"))
    x = images(n=12)
    c = build_view_cache(_teacher, x, views, num_views=2, verbose=0)
    assert c.info["bytes"] >= views_module.estimate_view_cache_bytes(
        12, 2, 3, "float16")
    assert "2 views of 12 samples" in c.describe()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_views_count_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="`views`"):
        build_view_cache(_teacher, images(), Views(L.RandomFlip()), bad,
                         verbose=0)


def test_top_k_out_of_range_names_top_k():
    with pytest.raises(ValueError, match="`top_k`"):
        build_view_cache(_teacher, images(), Views(L.RandomFlip()), 1,
                         top_k=3, verbose=0)


def test_view_cache_is_a_view_cache():
    c = ViewCache(Views(L.RandomFlip()), np.zeros((2, 1, 3), "float16"), [{}])
    assert c.info["views"] == 1
