"""fit(dataset, cache_teacher=DiskCache(...)): teacher outputs on disk, streamed."""

import os
import stat

import numpy as np
import pytest
import tensorflow as tf

from keras_distill import Distiller, DiskCache, L2Distiller
from keras_distill import cache as cache_module
from keras_distill import disk_cache
from helpers import data, keras_module, mlp


def make(flavour="keras", seed=2):
    k = keras_module(flavour)
    d = Distiller(student=mlp(flavour, (4,), seed=seed),
                  teacher=mlp(flavour, (16,)))
    d.compile(optimizer=k.optimizers.SGD(0.1), alpha=0.3, temperature=3.0,
              student_loss_fn=k.losses.SparseCategoricalCrossentropy(
                  from_logits=True))
    return d


def dataset(n=64, batch=16, seed=0):
    x, y = data(n, seed=seed)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def count_teacher_calls(d):
    """Counts the batches the teacher's pass computes (on the instance)."""
    calls = []
    original = d._teacher_predict

    def counted(x, batch_size):
        calls.append(len(x))
        return original(x, batch_size)

    d._teacher_predict = counted
    return calls


def history(d, x, **kwargs):
    return d.fit(x, epochs=2, verbose=0, **kwargs).history


@pytest.mark.parametrize("flavour", ["keras", "tf_keras"])
def test_disk_cache_trains_as_the_in_memory_cache(flavour, tmp_path):
    x, y = data(64)
    memory = history(make(flavour), x, y=y, batch_size=16, shuffle=False,
                     cache_teacher=True)
    disk = history(make(flavour), dataset(), shuffle=False,
                   cache_teacher=DiskCache(tmp_path / "c", dtype="float32",
                                           shard_size=24))
    for key in ("loss", "distillation_loss", "student_loss"):
        np.testing.assert_allclose(disk[key], memory[key], rtol=1e-5)


def test_shards_samples_and_file_modes(tmp_path):
    d = make()
    d.fit(dataset(), epochs=1, verbose=0, cache_teacher=str(tmp_path / "c"),
          cache_dtype="float16")
    info = d.teacher_cache_info
    # shard_size 8192 > 64 samples: one shard; float16 logits + int64 id.
    assert (info["samples"], info["shards"], info["dtype"]) == (64, 1, "float16")
    assert info["bytes"] == 64 * (3 * 2 + 8)
    names = sorted(os.listdir(tmp_path / "c"))
    assert names == ["manifest.json", "shard-00000.example"]
    for name in names:
        mode = stat.S_IMODE(os.stat(tmp_path / "c" / name).st_mode)
        assert mode == 0o666 & ~disk_cache._io.current_umask()


def test_stream_keeps_outputs_with_their_inputs_when_shuffled(tmp_path):
    # A teacher whose outputs are its inputs' first 3 features: after the
    # shuffle every packed row must still carry its own sample's outputs.
    import keras

    teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(
        3, use_bias=False, kernel_initializer=keras.initializers.Identity())])
    d = Distiller(mlp("keras", (4,)), teacher)
    c = DiskCache(tmp_path / "c", dtype="float32", shard_size=10,
                  shuffle_buffer=64).build(d, dataset(), verbose=0)
    seen = []
    for packed, labels in c.stream(dataset(), seed=1):
        inputs = packed[cache_module.INPUTS_KEY].numpy()
        np.testing.assert_allclose(packed[cache_module.OUTPUTS_KEY], inputs[:, :3],
                                   rtol=1e-6)
        seen.append(inputs[:, 0])
    order = np.concatenate(seen)
    x, _ = data(64)
    assert sorted(order) == sorted(x[:, 0]) and not np.array_equal(order, x[:, 0])


def test_top_k_rebuilds_the_logits_below_the_kept_ones(tmp_path):
    d = make()
    d.student.build((None, 8))
    c = DiskCache(tmp_path / "c", dtype="float32", top_k=2).build(
        d, dataset(), verbose=0)
    packed = next(iter(c.stream(dataset(), shuffle=False)))[0]
    x, _ = data(64)
    full = d.teacher.predict(x[:16], verbose=0)
    got = packed[cache_module.OUTPUTS_KEY].numpy()
    top = np.argsort(-full, axis=-1)[:, :2]
    np.testing.assert_allclose(np.take_along_axis(got, top, -1),
                               np.take_along_axis(full, top, -1), rtol=1e-6)
    rest = np.argsort(-full, axis=-1)[:, 2]
    np.testing.assert_allclose(got[np.arange(16), rest],
                               full[np.arange(16), top[:, 1]] - 1e4, rtol=1e-6)


def test_a_killed_pass_resumes_at_its_first_missing_shard(tmp_path):
    d = make()
    calls = count_teacher_calls(d)
    original = d._teacher_predict

    def dies_on_the_third_batch(x, batch_size):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return original(x, batch_size)

    d._teacher_predict = dies_on_the_third_batch
    path = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        DiskCache(path, shard_size=16).build(d, dataset(), verbose=0)
    # Batches 1 and 2 made two shards; the third never reached the disk.
    assert sorted(os.listdir(path)) == [
        "manifest.json", "shard-00000.example", "shard-00001.example"]
    d._teacher_predict = original
    calls = count_teacher_calls(d)
    resumed = DiskCache(path, shard_size=16).build(d, dataset(), verbose=0)
    assert calls == [16, 16] and resumed.info["samples"] == 64
    fresh = DiskCache(tmp_path / "fresh", shard_size=16).build(
        d, dataset(), verbose=0)
    for shard, other in zip(resumed.manifest["shards"], fresh.manifest["shards"]):
        assert shard["sha256"] == other["sha256"]


def test_a_complete_cache_is_reused_and_its_damage_refused(tmp_path):
    d = make()
    path = tmp_path / "c"
    history(d, dataset(), cache_teacher=str(path))
    calls = count_teacher_calls(d)
    history(d, dataset(), cache_teacher=str(path))
    assert calls == []
    with open(path / "shard-00000.example", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(ValueError, match="damaged .*shard-00000"):
        history(d, dataset(), cache_teacher=str(path))


def test_another_teachers_cache_and_foreign_directories_are_refused(tmp_path):
    path = tmp_path / "c"
    history(make(), dataset(), cache_teacher=str(path))
    other = make()
    other.teacher.set_weights([w + 1 for w in other.teacher.get_weights()])
    with pytest.raises(ValueError, match="another teacher.*teacher differ"):
        history(other, dataset(), cache_teacher=str(path))
    with pytest.raises(ValueError, match="dtype differ"):
        history(make(), dataset(), cache_teacher=DiskCache(path, dtype="float16"))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"not empty .*\(nothing in it is overwritten\)"):
        history(make(), dataset(), cache_teacher=str(foreign))
    assert os.listdir(foreign) == ["notes.txt"]


def test_a_dataset_in_another_order_is_refused_before_training(tmp_path):
    d = make()
    shuffled = dataset().unbatch().shuffle(64, seed=None).batch(16)
    with pytest.raises(ValueError, match="other samples or another order"):
        history(d, shuffled, cache_teacher=str(tmp_path / "c"))
    assert d.optimizer.iterations.numpy() == 0


def test_a_sample_that_changes_later_stops_training(tmp_path):
    path = str(tmp_path / "c")
    d = make()
    history(d, dataset(), cache_teacher=path)
    x, y = data(64)
    x[40] += 1.0  # same first batch, another 3rd batch
    changed = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with pytest.raises(Exception, match="other samples or another order"):
        history(d, changed, cache_teacher=path)


@pytest.mark.parametrize("make_input, error, match", [
    (lambda: data(64), TypeError, "streams a tf.data.Dataset"),
    (lambda: (dataset().repeat(), None), ValueError, "endless"),
    (lambda: (dataset(), data(64)[1]), ValueError, "`y` must be None"),
])
def test_what_a_disk_cache_cannot_stream_is_refused(make_input, error, match,
                                                     tmp_path):
    x, y = make_input()
    with pytest.raises(error, match=match):
        make().fit(x, y, verbose=0, cache_teacher=str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()


def test_disk_cache_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="`shard_size` must be a positive"):
        DiskCache(tmp_path, shard_size=0)
    with pytest.raises(TypeError, match="`directory` must be a path"):
        DiskCache(3)
    with pytest.raises(TypeError, match="`cache_teacher` must be True/False"):
        make().fit(dataset(), cache_teacher=3, verbose=0)
    with pytest.raises(ValueError, match="`views` must be a positive"):
        make().fit(dataset(), cache_teacher=str(tmp_path / "v"), views=0,
                   verbose=0)
    with pytest.raises(ValueError, match="replay"):  # a callable: no record
        make().fit(dataset(), cache_teacher=str(tmp_path / "c"), verbose=0,
                   augmentation=lambda v: v)
    with pytest.raises(ValueError, match="`top_k` must be between 1 and 2"):
        make().fit(dataset(), cache_teacher=str(tmp_path / "k"), top_k=3,
                   verbose=0)


def test_a_feature_distiller_streams_its_tapped_features(tmp_path):
    import keras

    def net(width, name):
        inputs = keras.Input((8,))
        hidden = keras.layers.Dense(width, activation="relu", name=name)(inputs)
        return keras.Model(inputs, keras.layers.Dense(3)(hidden))

    def make_l2():
        keras.utils.set_random_seed(0)
        d = L2Distiller(net(4, "s"), net(16, "t"), layer_pairs=[("t", "s")])
        d.compile(optimizer=keras.optimizers.SGD(0.1), alpha=0.5,
                  student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
        return d

    x, y = data(64)
    memory = history(make_l2(), x, y=y, batch_size=16, shuffle=False,
                     cache_teacher=True)
    d = make_l2()
    disk = history(d, dataset(), shuffle=False,
                   cache_teacher=DiskCache(tmp_path / "c", dtype="float32"))
    assert "features" in "".join(d.teacher_cache_info["shapes"])
    np.testing.assert_allclose(disk["loss"], memory["loss"], rtol=1e-5)


@pytest.mark.parametrize("top_k", [None, 2])
def test_cached_views_on_disk_replay_the_teachers_view(top_k, tmp_path):
    import keras
    from keras_distill import view_cache

    x = np.random.default_rng(0).random((24, 6, 6, 1)).astype("float32")
    y = np.arange(24) % 3

    def net(width):
        return keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(width, activation="relu"),
                                 keras.layers.Dense(3)])

    d = Distiller(net(4), net(16))
    d.compile(optimizer="adam", alpha=0.5,
              student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
                  from_logits=True))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    flip = keras.layers.RandomTranslation(0.3, 0.3)
    d.fit(ds, epochs=2, verbose=0, augmentation=flip, views=3, top_k=top_k,
          cache_teacher=DiskCache(tmp_path / "c", dtype="float32", top_k=top_k,
                                  shard_size=8))
    info = d.teacher_cache_info
    assert (info["samples"], info["views"], info["shards"]) == (24, 3, 3)
    assert info["shapes"]["outputs"] == [3, top_k or 3]
    # Every stored view, rebuilt from its record, gives the stored outputs.
    c = DiskCache(tmp_path / "c", dtype="float32", top_k=top_k, shard_size=8,
                  views=3)
    c.build(d, ds, verbose=0)  # reused: the same settings
    views = d._views.value
    for packed, _ in c.stream(ds, shuffle=False):
        images, outputs = view_cache.select(views, packed, 0, 3)
        expected = keras.ops.convert_to_numpy(d.teacher(images, training=False))
        if top_k:
            top = np.argsort(-expected, -1)[:, :top_k]
            expected = np.take_along_axis(expected, top, -1)
            outputs = np.take_along_axis(np.asarray(outputs), top, -1)
        np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-5)


def test_local_forward_is_compiled_once_until_the_weights_change():
    # What a disk cache's pass calls once a batch under a multi-process
    # keras.distribution (`_distribute.local_predict`): on JAX its jitted
    # forward and weight copies are reused, and rebuilt when weights change.
    import keras
    from keras_distill import _distribute

    if keras.backend.backend() != "jax":
        pytest.skip("the jitted local forward is JAX's")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    x = np.random.default_rng(0).random((6, 4)).astype("float32")
    first = _distribute.local_predict(model, x, 4)
    run = _distribute._LOCAL_FORWARD[model][2]
    np.testing.assert_allclose(_distribute.local_predict(model, x, 4), first)
    assert _distribute._LOCAL_FORWARD[model][2] is run
    model.set_weights([w + 1 for w in model.get_weights()])
    np.testing.assert_allclose(_distribute.local_predict(model, x, 4),
                               model.predict(x, verbose=0), rtol=1e-5)
    assert _distribute._LOCAL_FORWARD[model][2] is not run
