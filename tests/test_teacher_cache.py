"""fit(..., cache_teacher=True): the teacher runs once, targets stay aligned."""

import keras
import numpy as np
import pytest

from keras_distill import Distiller
from helpers import counter, data, keras_module, mlp


def counting_teacher(flavour):
    """A teacher that counts how many batches it has computed, in-graph
    (``teacher.count.calls``, a non-trainable weight: counted under jit too)."""
    k = keras_module(flavour)
    inner = mlp(flavour, (16,))

    class Counting(k.Model):
        def __init__(self):
            super().__init__()
            self.inner = inner
            self.count = counter(k, "count")

        def call(self, x, training=False):
            return self.inner(self.count(x), training=training)

    return Counting(), inner


def compile_(d, k, lr=0.0):
    d.compile(optimizer=k.optimizers.SGD(lr), alpha=0.3, temperature=3.0,
              student_loss_fn=k.losses.SparseCategoricalCrossentropy(from_logits=True))


@pytest.mark.parametrize("flavour", ["keras", "tf_keras"])
def test_teacher_runs_once_with_the_cache(flavour):
    k = keras_module(flavour)
    x, y = data(64)
    teacher, _ = counting_teacher(flavour)
    d = Distiller(student=mlp(flavour, (4,)), teacher=teacher)
    compile_(d, k, lr=0.1)
    d.fit(x, y, batch_size=8, epochs=3, verbose=0, cache_teacher=True)
    assert int(np.asarray(teacher.count.calls)) == 8  # one pass: 64 samples, batches of 8
    assert d.teacher_cache_info == {"samples": 64, "shape": (64, 3),
                                    "dtype": "float32", "bytes": 64 * 3 * 4}
    teacher.count.calls.assign(0.0)
    d.fit(x, y, batch_size=8, epochs=3, verbose=0)  # online: every batch
    assert int(np.asarray(teacher.count.calls)) == 3 * 8


@pytest.mark.parametrize("flavour", ["keras", "tf_keras"])
@pytest.mark.parametrize("cache_dtype", ["float32", "float16"])
def test_cached_and_online_losses_are_equal_under_shuffle(flavour, cache_dtype):
    k = keras_module(flavour)
    x, y = data(64)
    teacher = mlp(flavour, (16,))

    def epoch_logs(**fit_kwargs):
        d = Distiller(student=mlp(flavour, (4,), seed=2), teacher=teacher)
        compile_(d, k)  # learning rate 0: every epoch sees the same weights
        h = d.fit(x, y, batch_size=8, epochs=2, shuffle=True, verbose=0, **fit_kwargs)
        return h.history

    online = epoch_logs()
    cached = epoch_logs(cache_teacher=True, cache_dtype=cache_dtype)
    rtol = 1e-5 if cache_dtype == "float32" else 2e-3
    np.testing.assert_allclose(cached["distillation_loss"], online["distillation_loss"],
                               rtol=rtol)
    np.testing.assert_allclose(cached["loss"], online["loss"], rtol=rtol)


def test_a_misaligned_cache_would_be_detected_by_the_alignment_test():
    """The test above can fail: shuffled targets give another loss."""
    import keras

    x, y = data(64)
    teacher = mlp("keras", (16,))
    d = Distiller(student=mlp("keras", (4,), seed=2), teacher=teacher)
    compile_(d, keras)
    right = d.teacher_cache(x).pack(x)
    wrong = dict(right)
    wrong["keras_distill_teacher_outputs"] = right["keras_distill_teacher_outputs"][::-1]
    losses = []
    for packed in (right, wrong):
        h = d.fit(packed, y, batch_size=8, epochs=1, shuffle=True, verbose=0)
        losses.append(h.history["distillation_loss"][0])
    assert abs(losses[0] - losses[1]) > 1e-3 * losses[0]


def test_first_epoch_matches_online_training_with_the_same_seed():
    import keras

    x, y = data(128)
    teacher = mlp("keras", (16,))
    histories = []
    for cache in (False, True):
        keras.utils.set_random_seed(0)
        d = Distiller(student=mlp("keras", (4,), seed=2), teacher=teacher)
        compile_(d, keras, lr=0.05)
        histories.append(d.fit(x, y, batch_size=16, epochs=2, shuffle=True,
                               verbose=0, cache_teacher=cache).history)
    np.testing.assert_allclose(histories[0]["loss"], histories[1]["loss"], rtol=1e-5)


def test_validation_split_and_validation_data_work_with_the_cache():
    import keras

    x, y = data(64)
    d = Distiller(student=mlp("keras", (4,)), teacher=mlp("keras", (16,)))
    compile_(d, keras, lr=0.01)
    h = d.fit(x, y, validation_split=0.25, epochs=1, verbose=0, cache_teacher=True)
    assert "val_loss" in h.history
    h = d.fit(x, y, validation_data=data(16, seed=3), epochs=1, verbose=0,
              cache_teacher=True)
    assert "val_student_loss" in h.history


def test_cache_refuses_pipelines_that_may_change_between_epochs():
    import keras

    x, y = data(32)
    d = Distiller(student=mlp("keras", (4,)), teacher=mlp("keras", (16,)))
    compile_(d, keras)
    import tensorflow as tf  # tf.data is an input pipeline on every backend

    augmenting = tf.data.Dataset.from_tensor_slices((x, y)).map(
        lambda a, b: (a + tf.random.normal(tf.shape(a)), b)).batch(8)
    with pytest.raises(ValueError, match="random augmentation"):
        d.fit(augmenting, epochs=1, verbose=0, cache_teacher=True)

    def generator():
        yield x[:8], y[:8]

    with pytest.raises(ValueError, match="in-memory arrays"):
        d.fit(generator(), epochs=1, verbose=0, cache_teacher=True)
    with pytest.raises(ValueError, match="cache_dtype"):
        d.fit(x, y, epochs=1, verbose=0, cache_teacher=True, cache_dtype="int8")


def test_cache_with_jit_compile():
    import keras

    x, y = data(64)
    d = Distiller(student=mlp("keras", (4,)), teacher=mlp("keras", (16,)))
    d.compile(optimizer=keras.optimizers.Adam(0.05), alpha=0.3, temperature=3.0,
              student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              jit_compile=True)
    h = d.fit(x, y, batch_size=16, epochs=4, verbose=0, cache_teacher=True)
    assert h.history["loss"][-1] < h.history["loss"][0]


@pytest.mark.parametrize("flavour", ["keras", "tf_keras"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_teacher(flavour, dtype):
    k = keras_module(flavour)
    x, y = data(64)
    teacher = mlp(flavour, (16,), batchnorm=True)
    before = [w.copy() for w in teacher.get_weights()]
    policies = [layer.dtype_policy.name for layer in teacher.layers]
    d = Distiller(student=mlp(flavour, (4,)), teacher=teacher, teacher_dtype=dtype)
    low, _ = d._teacher_forward(x)
    assert keras.backend.standardize_dtype(low.dtype) in ("bfloat16", "float16")
    want = keras.ops.convert_to_numpy(teacher(x, training=False))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(low).astype("float32"), want,
                               rtol=0.05, atol=0.05)
    compile_(d, k, lr=0.05)
    for cache in (False, True):
        h = d.fit(x, y, batch_size=16, epochs=3, verbose=0, cache_teacher=cache)
        assert np.all(np.isfinite(h.history["loss"]))
        assert h.history["loss"][-1] < h.history["loss"][0]
    # The user's teacher is untouched: same weights, same float32 policy.
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [layer.dtype_policy.name for layer in teacher.layers] == policies


def test_reduced_precision_teacher_errors():
    import keras

    from keras_distill import FeatureDistiller

    with pytest.raises(ValueError, match="teacher_dtype"):
        Distiller(student=mlp("keras", (4,)), teacher=mlp("keras"), teacher_dtype="int8")

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    sub = Sub()
    sub(np.zeros((1, 8), "float32"))
    with pytest.raises(ValueError, match="Sequential or Functional teacher"):
        Distiller(student=mlp("keras", (4,)), teacher=sub, teacher_dtype="bfloat16")
    with pytest.raises(ValueError, match="does not support `teacher_dtype`"):
        FeatureDistiller(mlp("keras", (4,)), mlp("keras"), teacher_dtype="bfloat16")
