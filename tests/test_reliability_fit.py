"""The fit path refuses bad inputs clearly and never trains on a wrong number.

Issue #12 (group C): every bad input to ``fit``/``evaluate`` of a distiller
gets a ``ValueError``/``TypeError`` naming the argument, found on the data
or the first batch, eagerly (so also under JAX's jit); the NaN guard keeps
only finite states. Both Keras flavours; the ``keras`` cases also run under
``KERAS_BACKEND=jax``.
"""

import warnings

import os

import numpy as np
import pytest

from keras_distill import Distiller, FeatureDistiller, FeaturePair
from helpers import counter, data, keras_module, mlp

FLAVOURS = ["keras", "tf_keras"]


def distiller(flavour, alpha=0.5, lr=1e-3, student=None, teacher=None,
              metrics=True, **kwargs):
    k = keras_module(flavour)
    d = Distiller(student=student or mlp(flavour, (4,)),
                  teacher=teacher or mlp(flavour, (16,)), **kwargs)
    d.compile(optimizer=k.optimizers.SGD(lr), alpha=alpha, temperature=2.0,
              student_loss_fn=k.losses.SparseCategoricalCrossentropy(
                  from_logits=True),
              metrics=[k.metrics.SparseCategoricalAccuracy()] if metrics else None)
    return d


def wrapped(flavour, inner, softmax=False):
    """``inner`` in a subclassed model, which no layer inspection sees into,
    behind a layer counting its calls in-graph (`calls`), and followed by a
    softmax if asked."""
    k = keras_module(flavour)
    count = counter(k, "count")

    class Wrapped(k.Model):
        def call(self, x, training=False):
            out = self.inner(self.count(x), training=training)
            return k.activations.softmax(out) if softmax else out

    model = Wrapped()
    model.inner, model.count = inner, count
    return model


def calls(model):
    return int(np.asarray(model.count.calls)) if model.built else 0


def unbuilt(flavour, kind):
    k = keras_module(flavour)
    if kind == "sequential":
        return k.Sequential([k.layers.Dense(4, activation="relu"),
                             k.layers.Dense(3)])

    class Net(k.Model):
        def __init__(self):
            super().__init__()
            self.hidden = k.layers.Dense(4, activation="relu")
            self.out = k.layers.Dense(3)

        def call(self, x, training=False):
            return self.out(self.hidden(x))

    return Net()


# ------------------------------------------------------------ item 1
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_probabilities_declared_for_a_logits_teacher_raises_naming_teacher_outputs(
        flavour):
    d = distiller(flavour, teacher_outputs="probabilities")
    with pytest.raises(ValueError, match="`teacher_outputs`='probabilities'.*not "
                       "probabilities"):
        d.fit(*data(16), epochs=1, verbose=0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_probabilities_declared_for_a_logits_student_raises_naming_student_outputs(
        flavour):
    k = keras_module(flavour)
    x, _ = data(16)
    d = Distiller(student=mlp(flavour, (4,)), teacher=mlp(flavour, (16,)),
                  student_outputs="probabilities")
    d.compile(optimizer=k.optimizers.SGD(0.0), alpha=0.0)
    with pytest.raises(ValueError, match="`student_outputs`='probabilities'"):
        d.fit(x, epochs=1, verbose=0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_undetected_softmax_teacher_is_distilled_from_its_probabilities(flavour):
    x, y = data(32)
    inner = mlp(flavour, (16,))
    student = mlp(flavour, (4,), seed=3)
    d = distiller(flavour, alpha=0.0, lr=0.0, student=student,
                  teacher=wrapped(flavour, inner, softmax=True))
    assert d.teacher_outputs == "logits"  # a subclassed model: not inspectable
    with pytest.warns(UserWarning, match="teacher_outputs='probabilities'"):
        auto = d.fit(x, batch_size=32, epochs=1, verbose=0).history
    assert d.teacher_outputs == "probabilities"
    # The same loss as distilling from the logits under the softmax.
    ref = distiller(flavour, alpha=0.0, lr=0.0, student=student, teacher=inner)
    expected = ref.fit(x, batch_size=32, epochs=1, verbose=0).history
    np.testing.assert_allclose(auto["distillation_loss"],
                               expected["distillation_loss"], rtol=1e-4)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_explicit_logits_on_probability_outputs_warns_naming_teacher_outputs(
        flavour):
    x, y = data(16)
    d = distiller(flavour, teacher=mlp(flavour, (16,), softmax=True),
                  teacher_outputs="logits")
    with pytest.warns(UserWarning, match="seems to end in a softmax.*"
                      "teacher_outputs='probabilities'"):
        d.fit(x, y, epochs=1, verbose=0)
    assert d.teacher_outputs == "logits"  # what the user said


# ------------------------------------------------------------ item 2
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_blow_up_on_the_last_update_restores_the_last_finite_weights(flavour):
    x, y = data(16)
    student = mlp(flavour, (4,))
    d = distiller(flavour, alpha=1.0, lr=1e6, student=student)
    before = [w.copy() for w in student.get_weights()]
    # Batch 1 weighs nothing (no update); batch 2's loss is finite (~1e37)
    # but its update overflows the weights: the epoch's logged loss, taken
    # before that update, is finite.
    weights = np.r_[np.zeros(8), np.full(8, 1e37)].astype("float32")
    with pytest.warns(RuntimeWarning, match="weights became NaN or infinite in "
                      "epoch 1.*restored to the start of fit"):
        history = d.fit(x, y, sample_weight=weights, batch_size=8, epochs=1,
                        shuffle=False, verbose=0).history
    assert np.isfinite(history["loss"][0])
    for a, b in zip(before, student.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_nan_guard_restores_the_weights_backup_and_restore_resumed_from(
        flavour, tmp_path):
    k = keras_module(flavour)
    x, y = data(64)
    student = mlp(flavour, (4,))
    d = distiller(flavour, lr=0.1, student=student)

    class Interrupt(k.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        d.fit(x, y, batch_size=16, epochs=3, verbose=0,
              callbacks=[k.callbacks.BackupAndRestore(backup), Interrupt()])
    saved = [w.copy() for w in student.get_weights()]  # the backup's
    student.set_weights([np.full_like(w, 0.5) for w in saved])
    weights = np.ones(64)
    weights[20] = np.nan  # the resumed epoch's loss is NaN
    with pytest.warns(RuntimeWarning, match="restored to the start of fit"):
        d.fit(x, y, sample_weight=weights, batch_size=16, epochs=3,
              shuffle=False, verbose=0,
              callbacks=[k.callbacks.BackupAndRestore(backup)])
    for a, b in zip(saved, student.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_student_with_non_finite_weights_raises_naming_student(flavour):
    x, y = data(16)
    student = mlp(flavour, (4,))
    weights = student.get_weights()
    weights[0][0, 0] = np.nan
    student.set_weights(weights)
    with pytest.raises(ValueError, match="`student` has NaN or infinite weights"):
        distiller(flavour, student=student).fit(x, y, epochs=1, verbose=0)


# ------------------------------------------------------------ item 3
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_evaluate_with_a_partial_last_batch_equals_student_evaluate(flavour):
    k = keras_module(flavour)
    x, y = data(10)
    d = distiller(flavour, alpha=1.0, metrics=False)
    ours = d.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)["loss"]
    d.student.compile(loss=k.losses.SparseCategoricalCrossentropy(from_logits=True))
    theirs = d.student.evaluate(x, y, batch_size=4, verbose=0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


# ------------------------------------------------------------ item 6
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_teacher_dtype_computes_nested_models_in_that_dtype(flavour):
    k = keras_module(flavour)
    x, _ = data(32)
    inner = mlp(flavour, (16,))
    if flavour == "keras":
        teacher = k.Sequential([k.Input((8,)), inner])
    else:
        teacher = k.Sequential([inner])
    d = Distiller(student=mlp(flavour, (4,)), teacher=teacher,
                  teacher_dtype="bfloat16")
    low = d.teacher_cache(x).outputs
    full = teacher.predict(x, verbose=0)
    assert not np.array_equal(low, full)  # bfloat16 rounding, not float32
    np.testing.assert_allclose(low, full, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("cache_teacher", [False, True])
def test_float16_teacher_that_overflows_raises_naming_teacher_dtype(
        flavour, cache_teacher):
    x, y = data(16)
    teacher = mlp(flavour, (16,))
    weights = teacher.get_weights()
    weights[-2] = weights[-2] * 1e5  # logits beyond float16's 65504
    teacher.set_weights(weights)
    assert np.isfinite(teacher.predict(x, verbose=0)).all()
    d = distiller(flavour, teacher=teacher, teacher_dtype="float16")
    with pytest.raises(ValueError, match="`teacher_dtype`='float16'.*overflow.*"
                       "bfloat16"):
        d.fit(x, y, epochs=1, verbose=0, cache_teacher=cache_teacher)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_teacher_with_non_finite_outputs_raises_naming_teacher(flavour):
    x, y = data(16)
    teacher = mlp(flavour, (16,))
    weights = teacher.get_weights()
    weights[-1] = weights[-1] * np.nan
    teacher.set_weights(weights)
    with pytest.raises(ValueError, match="teacher's outputs .* are NaN or "
                       "infinite.*`teacher`"):
        distiller(flavour, teacher=teacher).fit(x, y, epochs=1, verbose=0)


# ------------------------------------------------------------ item 8
@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("cache_teacher", [False, True])
def test_fit_on_empty_data_raises_naming_x(flavour, cache_teacher):
    x, y = data(16)
    with pytest.raises(ValueError, match="`x` has no samples"):
        distiller(flavour).fit(x[:0], y[:0], epochs=1, verbose=0,
                               cache_teacher=cache_teacher)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_evaluate_on_empty_data_raises_naming_x(flavour):
    x, y = data(16)
    with pytest.raises(ValueError, match="`x` has no samples"):
        distiller(flavour).evaluate(x[:0], y[:0], verbose=0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_fit_on_an_empty_dataset_raises_naming_x(flavour):
    import tensorflow as tf

    x, y = data(16)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).take(0)
    with pytest.raises(ValueError, match="`x` has no samples"):
        distiller(flavour).fit(dataset, epochs=1, verbose=0)


# ------------------------------------------------------------ item 9
@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("how", ["model", "layers"])
def test_frozen_student_raises_naming_student(flavour, how):
    x, y = data(16)
    student = mlp(flavour, (4,))
    if how == "model":
        student.trainable = False
    else:
        for layer in student.layers:
            layer.trainable = False
    d = distiller(flavour, student=student)
    with pytest.raises(ValueError, match="`student` has no trainable weights.*"
                       "trainable = True"):
        d.fit(x, y, epochs=1, verbose=0)


# ------------------------------------------------------------ item 10
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_teacher_and_student_of_different_input_widths_raise_at_construction(
        flavour):
    with pytest.raises(ValueError, match="teacher takes inputs of shape "
                       r"\(None, 8\) and the student \(None, 5\)"):
        Distiller(student=mlp(flavour, (4,), features=5),
                  teacher=mlp(flavour, (16,)))


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("role", ["student", "teacher"])
def test_inputs_that_fit_neither_model_raise_naming_the_model_and_x(flavour,
                                                                    role):
    k = keras_module(flavour)
    x, y = data(16, features=6)
    # The other model takes any width: only `role` cannot take x.
    other = k.Sequential([k.layers.Dense(3)])
    models = {role: mlp(flavour, (4,)),
              ("teacher" if role == "student" else "student"): other}
    d = distiller(flavour, **models)
    with pytest.raises(ValueError, match=f"The {role} cannot be called on the "
                       rf"first batch of `x` \(shape \(16, 6\)\).*expects inputs "
                       r"of shape \(None, 8\)"):
        d.fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_teacher_input_fn_output_that_does_not_fit_the_teacher_is_named(flavour):
    x, y = data(16)
    d = FeatureDistiller(mlp(flavour, (4,)), mlp(flavour, (16,)),
                         teacher_input_fn=lambda v: v[:, :5])
    k = keras_module(flavour)
    d.compile(optimizer=k.optimizers.SGD(0.0), alpha=0.0)
    with pytest.raises(ValueError, match="teacher cannot be called on "
                       "`teacher_input_fn`'s output.*make `teacher_input_fn` "
                       "return it"):
        d.fit(x, epochs=1, verbose=0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_validation_data_of_the_wrong_width_raises_before_training(flavour):
    x, y = data(16)
    d = distiller(flavour)
    epochs = []
    k = keras_module(flavour)
    seen = k.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: epochs.append(e))
    with pytest.raises(ValueError, match="first batch of `validation_data`"):
        d.fit(x, y, epochs=1, verbose=0, callbacks=[seen],
              validation_data=(x[:, :6], y))
    assert epochs == []


# ------------------------------------------------------------ item 15
@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("kind", ["sequential", "subclassed"])
def test_unbuilt_student_and_teacher_are_built_from_the_first_batch(flavour, kind):
    x, y = data(32)
    student, teacher = unbuilt(flavour, kind), unbuilt(flavour, kind)
    d = distiller(flavour, lr=0.1, student=student, teacher=teacher)
    history = d.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert history["loss"][-1] != history["loss"][0]  # the student trained
    assert student.built and teacher.built


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_unbuilt_models_train_on_a_generator(flavour):
    x, y = data(32)

    def batches():
        while True:
            for i in range(4):
                yield x[8 * i:8 * i + 8], y[8 * i:8 * i + 8]

    d = distiller(flavour, lr=0.1, student=unbuilt(flavour, "sequential"),
                  teacher=unbuilt(flavour, "sequential"))
    history = d.fit(batches(), steps_per_epoch=4, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_generator_is_checked_on_its_first_batch_which_still_trains(flavour):
    k = keras_module(flavour)
    x, y = data(32)

    def batches(labels):
        for i in range(4):
            yield x[8 * i:8 * i + 8], labels[8 * i:8 * i + 8]

    with pytest.raises(ValueError, match="`y` holds class indices from 1 to 3"):
        distiller(flavour).fit(batches(y + 1), steps_per_epoch=4, epochs=1,
                               verbose=0)
    steps = []
    count = k.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: steps.append(batch))
    distiller(flavour).fit(batches(y), steps_per_epoch=4, epochs=1, verbose=0,
                           callbacks=[count])
    assert len(steps) == 4  # the batch the check took is trained on too


# ------------------------------------------------------------ item 16
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_evaluate_without_labels_with_metrics_reports_the_distillation_loss(
        flavour):
    x, _ = data(16)
    d = distiller(flavour, alpha=0.0)
    results = d.evaluate(x, verbose=0, return_dict=True)
    assert set(results) == {"loss", "distillation_loss"}
    assert np.isfinite(results["loss"]) and results["loss"] > 0


# ------------------------------------------------------------ item 18
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_cache_above_its_budget_is_refused_before_the_teacher_runs(flavour):
    k = keras_module(flavour)
    x, y = data(64)
    teacher = wrapped(flavour, mlp(flavour, (16,)))
    d = Distiller(student=mlp(flavour, (4,)), teacher=teacher)
    d.compile(optimizer=k.optimizers.SGD(0.0), alpha=0.0)
    # 64 samples x 3 logits x 4 bytes = 768 bytes.
    with pytest.raises(ValueError, match=r"would take 768 bytes.*above "
                       r"`cache_budget`=700 bytes.*cache_budget=769"):
        d.fit(x, epochs=1, verbose=0, cache_teacher=True, cache_budget=700)
    assert calls(teacher) == 0
    d.fit(x, epochs=1, verbose=0, cache_teacher=True, cache_budget=768)
    assert d.teacher_cache_info["bytes"] == 768


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_feature_cache_above_its_budget_is_refused(flavour):
    k = keras_module(flavour)
    x, _ = data(64)

    def net(width):
        layers = [k.layers.Dense(width, activation="relu", name="hidden"),
                  k.layers.Dense(3, name="logits")]
        if flavour == "keras":
            return k.Sequential([k.Input((8,))] + layers)
        return k.Sequential([k.layers.InputLayer((8,))] + layers)

    d = FeatureDistiller(net(4), net(16), pairs=[FeaturePair(
        "hidden", "hidden", adapter="auto")])
    d.compile(optimizer=k.optimizers.SGD(0.0), alpha=0.0)
    # 64 x (3 logits + 16 features) x 2 bytes in float16 = 2432 bytes.
    with pytest.raises(ValueError, match="would take 2432 bytes"):
        d.fit(x, epochs=1, verbose=0, cache_teacher=True, cache_dtype="float16",
              cache_budget=2000)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_cache_size_is_printed_before_the_cache_is_built(flavour, capsys):
    x, y = data(64)
    d = distiller(flavour)
    with pytest.raises(ValueError, match="cache_budget"):
        d.fit(x, y, epochs=1, cache_teacher=True, cache_budget=10)
    assert ("caching the teacher's outputs for 64 samples: 0.0 MiB (float32)"
            in capsys.readouterr().out)


@pytest.mark.parametrize("budget, error", [("2GB", TypeError), (0, ValueError),
                                           (True, TypeError)])
def test_bad_cache_budget_raises_naming_it(budget, error):
    x, y = data(16)
    with pytest.raises(error, match="`cache_budget`"):
        distiller("keras").fit(x, y, epochs=1, verbose=0, cache_teacher=True,
                               cache_budget=budget)


# --------------------------------------------------- more of the same kinds
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_labels_outside_the_class_range_raise_naming_y(flavour):
    x, y = data(16)
    y = y.copy()
    y[5] = 3  # the student has 3 outputs: classes 0, 1, 2
    with pytest.raises(ValueError, match="`y` holds class indices from 0 to 3, "
                       "but the student has 3 outputs"):
        distiller(flavour).fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_labels_outside_the_class_range_in_evaluate_raise_naming_y(flavour):
    x, y = data(16)
    with pytest.raises(ValueError, match="`y` holds class indices"):
        distiller(flavour).evaluate(x, y - 1, verbose=0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_one_hot_labels_with_a_sparse_loss_raise_naming_y(flavour):
    x, y = data(16)
    with pytest.raises(ValueError, match="`student_loss_fn` cannot compare the "
                       r"labels of `y` \(shape \(16, 3\)\).*CategoricalCrossentropy"):
        distiller(flavour).fit(x, np.eye(3)[y], epochs=1, verbose=0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_non_finite_inputs_raise_naming_x(flavour):
    x, y = data(16)
    x = x.copy()
    x[7, 2] = np.inf
    with pytest.raises(ValueError, match="`x` contains NaN or infinite values "
                       r"\(the first in sample 7\)"):
        distiller(flavour).fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("argument", ["y", "sample_weight"])
def test_data_of_other_lengths_raise_before_the_teacher_runs(flavour, argument):
    x, y = data(16)
    teacher = wrapped(flavour, mlp(flavour, (16,)))
    d = distiller(flavour, teacher=teacher)
    kwargs = {"y": y, "sample_weight": None}
    kwargs[argument] = np.ones(12) if argument == "sample_weight" else y[:12]
    with pytest.raises(ValueError, match=f"`{argument}` has 12 samples but `x` "
                       "has 16"):
        d.fit(x, epochs=1, verbose=0, cache_teacher=True, **kwargs)
    assert calls(teacher) == 0


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_x_none_raises_naming_x(flavour):
    _, y = data(16)
    with pytest.raises(ValueError, match="`x` is None"):
        distiller(flavour).fit(None, y, epochs=1, verbose=0)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("argument, value, error", [
    ("epochs", 0, ValueError), ("epochs", 2.5, TypeError),
    ("batch_size", 0, ValueError), ("batch_size", "8", TypeError)])
def test_bad_epochs_and_batch_size_raise_naming_them(flavour, argument, value,
                                                      error):
    x, y = data(16)
    kwargs = {"epochs": 1, argument: value}
    with pytest.raises(error, match=f"`{argument}` must be a positive integer"):
        distiller(flavour).fit(x, y, verbose=0, **kwargs)


def test_epochs_not_above_initial_epoch_raise_naming_both():
    x, y = data(16)
    with pytest.raises(ValueError, match="`epochs`=2 is not above "
                       "`initial_epoch`=2"):
        distiller("keras").fit(x, y, epochs=2, initial_epoch=2, verbose=0)


def test_cache_teacher_must_be_true_or_false():
    x, y = data(16)
    with pytest.raises(TypeError, match="`cache_teacher` must be True/False"):
        distiller("keras").fit(x, y, epochs=1, verbose=0, cache_teacher=1)
    # A string is a directory for a disk cache, which streams tf.data only.
    with pytest.raises(TypeError, match="disk cache .* streams a tf.data.Dataset"):
        distiller("keras").fit(x, y, epochs=1, verbose=0, cache_teacher="yes")
    assert not os.path.exists("yes")


def test_unknown_cache_dtype_raises_naming_it():
    x, y = data(16)
    with pytest.raises(ValueError, match="`cache_dtype` must be one of"):
        distiller("keras").fit(x, y, epochs=1, verbose=0, cache_teacher=True,
                               cache_dtype="int8")


def test_cache_teacher_refuses_a_generator_naming_x():
    x, y = data(16)

    def batches():
        while True:
            yield x[:8], y[:8]

    with pytest.raises(ValueError, match="needs the training inputs `x` as "
                       "in-memory arrays"):
        distiller("keras").fit(batches(), steps_per_epoch=2, epochs=1, verbose=0,
                               cache_teacher=True)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_checks_leave_no_trace_in_the_models(flavour):
    """The first-batch probe runs both models once: counters and statistics
    are put back, so a fit with the cache runs the teacher once a batch."""
    x, y = data(32)
    teacher = wrapped(flavour, mlp(flavour, (16,)))
    d = distiller(flavour, teacher=teacher)
    d.fit(x, y, batch_size=8, epochs=1, verbose=0, cache_teacher=True)
    assert calls(teacher) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning on good data
        d.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert calls(teacher) == 8
