"""The Distiller: keras.io semantics, correctness, both Keras flavours."""

import keras
import numpy as np
import pytest

from keras_distill import Distiller
from helpers import data, keras_module, log_softmax, mlp, np_distill_loss

FLAVOURS = ["keras", "tf_keras"]


def compile_like_keras_io(distiller, k, **overrides):
    kwargs = dict(
        optimizer=k.optimizers.Adam(),
        metrics=[k.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=k.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=k.losses.KLDivergence(),
        alpha=0.1,
        temperature=10,
    )
    kwargs.update(overrides)
    distiller.compile(**kwargs)


def one_batch_logs(distiller, x, y, sample_weight=None):
    """Loss logs of one full-batch step with a learning rate of 0."""
    history = distiller.fit(x, y, sample_weight=sample_weight, batch_size=len(x),
                            epochs=1, verbose=0, shuffle=False)
    return {k: v[0] for k, v in history.history.items()}


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_keras_io_usage_verbatim(flavour):
    keras = keras_module(flavour)
    x_train, y_train = data(256)
    x_test, y_test = data(64, seed=1)
    teacher, student = mlp(flavour, (32,)), mlp(flavour, (4,), seed=5)
    distiller = Distiller(student=student, teacher=teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=0.1,
        temperature=10,
    )
    history = distiller.fit(x_train, y_train, epochs=3, verbose=0)
    results = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)
    assert isinstance(distiller, keras.Model)
    assert {"loss", "student_loss", "distillation_loss",
            "sparse_categorical_accuracy"} <= set(history.history)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert set(results) == {"loss", "student_loss", "sparse_categorical_accuracy"}
    np.testing.assert_allclose(distiller.predict(x_test, verbose=0),
                               student.predict(x_test, verbose=0), rtol=1e-6)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("kl", ["instance", "kl_divergence", "kld"])
def test_total_loss_matches_numpy(flavour, kl):
    k = keras_module(flavour)
    x, y = data(32)
    teacher, student = mlp(flavour, (16,)), mlp(flavour, (4,), seed=3)
    t_logits = teacher.predict(x, verbose=0)
    s_logits = student.predict(x, verbose=0)
    distiller = Distiller(student=student, teacher=teacher)
    compile_like_keras_io(
        distiller, k, optimizer=k.optimizers.SGD(learning_rate=0.0), alpha=0.3,
        temperature=4.0,
        distillation_loss_fn=k.losses.KLDivergence() if kl == "instance" else kl)
    logs = one_batch_logs(distiller, x, y)
    total, student_loss, distill = np_distill_loss(t_logits, s_logits, y, 0.3, 4.0)
    np.testing.assert_allclose(logs["loss"], total, rtol=1e-5)
    np.testing.assert_allclose(logs["student_loss"], student_loss, rtol=1e-5)
    np.testing.assert_allclose(logs["distillation_loss"], distill, rtol=1e-5)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_other_distillation_losses_get_softened_probabilities(flavour):
    k = keras_module(flavour)
    x, y = data(16)
    teacher, student = mlp(flavour), mlp(flavour, (4,), seed=2)
    t = teacher.predict(x, verbose=0)
    s = student.predict(x, verbose=0)
    seen = {}

    def mse(y_true, y_pred):
        seen["sums"] = keras.ops.sum(y_true, axis=-1)
        return keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)

    distiller = Distiller(student=student, teacher=teacher)
    compile_like_keras_io(distiller, k, optimizer=k.optimizers.SGD(0.0),
                          distillation_loss_fn=mse, temperature=2.0,
                          run_eagerly=True)
    logs = one_batch_logs(distiller, x, y)
    p = np.exp(log_softmax(t / 2.0))
    q = np.exp(log_softmax(s / 2.0))
    want = ((p - q) ** 2).mean(-1).mean() * 4.0
    np.testing.assert_allclose(logs["distillation_loss"], want, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(seen["sums"]), 1.0, rtol=1e-6)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_teacher_is_untouched(flavour):
    k = keras_module(flavour)
    x, y = data(64)
    teacher, student = mlp(flavour, (16,), batchnorm=True), mlp(flavour, (4,))
    before = [w.copy() for w in teacher.get_weights()]
    trainable = [layer.trainable for layer in teacher.layers] + [teacher.trainable]
    distiller = Distiller(student=student, teacher=teacher)
    compile_like_keras_io(distiller, k, optimizer=k.optimizers.Adam(0.1))
    s_before = [w.copy() for w in student.get_weights()]
    distiller.fit(x, y, epochs=2, batch_size=16, verbose=0)
    distiller.evaluate(x, y, verbose=0)
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)  # incl. BatchNorm moving stats
    assert [layer.trainable for layer in teacher.layers] + [teacher.trainable] == trainable
    assert any(not np.array_equal(a, b)
               for a, b in zip(s_before, student.get_weights()))
    assert {id(v) for v in distiller.trainable_weights} == {
        id(v) for v in student.trainable_weights}


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_evaluate_leaves_batchnorm_statistics_unchanged(flavour):
    k = keras_module(flavour)
    x, y = data(64)
    student = mlp(flavour, (8,), batchnorm=True, seed=4)
    distiller = Distiller(student=student, teacher=mlp(flavour))
    compile_like_keras_io(distiller, k)
    before = [w.copy() for w in student.get_weights()]
    distiller.evaluate(x * 10 + 3, y, verbose=0)
    distiller.evaluate(x * 10 + 3, verbose=0)  # no labels: distillation loss
    distiller.predict(x * 10 + 3, verbose=0)
    for a, b in zip(before, student.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_zero_sample_weights_give_zero_loss_and_no_update(flavour):
    k = keras_module(flavour)
    x, y = data(32)
    student = mlp(flavour, (4,))
    distiller = Distiller(student=student, teacher=mlp(flavour))
    compile_like_keras_io(distiller, k, optimizer=k.optimizers.SGD(1.0))
    before = [w.copy() for w in student.get_weights()]
    logs = one_batch_logs(distiller, x, y, sample_weight=np.zeros(32))
    assert logs["loss"] == 0.0
    assert logs["distillation_loss"] == 0.0
    assert logs["student_loss"] == 0.0
    for a, b in zip(before, student.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_sample_weights_weigh_both_terms(flavour):
    k = keras_module(flavour)
    x, y = data(32)
    teacher, student = mlp(flavour), mlp(flavour, (4,), seed=9)
    t = teacher.predict(x, verbose=0)
    s = student.predict(x, verbose=0)
    w = np.random.default_rng(0).uniform(0, 2, size=32)
    distiller = Distiller(student=student, teacher=teacher)
    compile_like_keras_io(distiller, k, optimizer=k.optimizers.SGD(0.0), alpha=0.5,
                          temperature=3.0)
    logs = one_batch_logs(distiller, x, y, sample_weight=w)
    total, _, _ = np_distill_loss(t, s, y, 0.5, 3.0, weights=w)
    np.testing.assert_allclose(logs["loss"], total, rtol=1e-5)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_student_regularisation_is_optimised(flavour):
    k = keras_module(flavour)
    x, y = data(32)
    teacher = mlp(flavour)
    student = mlp(flavour, (4,), regularizer=k.regularizers.L2(0.5))
    t = teacher.predict(x, verbose=0)
    s = student.predict(x, verbose=0)
    kernel = [layer for layer in student.layers if layer.kernel_regularizer][0].kernel
    reg = 0.5 * float(np.sum(np.asarray(kernel) ** 2))
    distiller = Distiller(student=student, teacher=teacher)
    compile_like_keras_io(distiller, k, optimizer=k.optimizers.SGD(0.0))
    logs = one_batch_logs(distiller, x, y)
    total, student_loss, _ = np_distill_loss(t, s, y, 0.1, 10)
    np.testing.assert_allclose(logs["loss"], total + reg, rtol=1e-5)
    results = distiller.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(results["loss"], student_loss + reg, rtol=1e-5)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_softmax_teacher_and_student_are_distilled_from_their_logits(flavour):
    k = keras_module(flavour)
    x, y = data(32)
    t_logits_model = mlp(flavour, (16,), seed=1)
    t_softmax_model = mlp(flavour, (16,), seed=1, softmax=True)
    s_logits_model = mlp(flavour, (4,), seed=7)
    s_softmax_model = mlp(flavour, (4,), seed=7, softmax=True)
    t = t_logits_model.predict(x, verbose=0)
    s = s_logits_model.predict(x, verbose=0)
    _, _, want = np_distill_loss(t, s, y, 0.1, 5.0)

    d = Distiller(student=s_softmax_model, teacher=t_softmax_model)
    assert (d.teacher_outputs, d.student_outputs) == ("probabilities", "probabilities")
    compile_like_keras_io(
        d, k, optimizer=k.optimizers.SGD(0.0), temperature=5.0,
        student_loss_fn=k.losses.SparseCategoricalCrossentropy())
    logs = one_batch_logs(d, x, y)
    np.testing.assert_allclose(logs["distillation_loss"], want, rtol=1e-4)
    # Saying it explicitly works the same, and softening raw probabilities as if
    # they were logits would give a clearly different value.
    d2 = Distiller(student=s_logits_model, teacher=t_softmax_model,
                   teacher_outputs="probabilities", student_outputs="logits")
    compile_like_keras_io(d2, k, optimizer=k.optimizers.SGD(0.0), temperature=5.0)
    np.testing.assert_allclose(one_batch_logs(d2, x, y)["distillation_loss"], want,
                               rtol=1e-4)
    p = np.exp(log_softmax(t))
    _, _, wrong = np_distill_loss(p, s, y, 0.1, 5.0)
    assert abs(wrong - want) > 0.05 * want


@pytest.mark.tensorflow  # tf_keras and Keras 3 models together
def test_mixed_flavours():
    import keras
    import tf_keras

    x, y = data(64)
    for student_flavour, teacher_flavour, k in (("keras", "tf_keras", keras),
                                                ("tf_keras", "keras", tf_keras)):
        teacher = mlp(teacher_flavour, (16,))
        student = mlp(student_flavour, (4,))
        t = teacher.predict(x, verbose=0)
        s = student.predict(x, verbose=0)
        d = Distiller(student=student, teacher=teacher)
        assert isinstance(d, k.Model)
        compile_like_keras_io(d, k, optimizer=k.optimizers.SGD(0.0))
        logs = one_batch_logs(d, x, y)
        np.testing.assert_allclose(logs["loss"], np_distill_loss(t, s, y, 0.1, 10)[0],
                                   rtol=1e-5)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_jit_compile(flavour):
    k = keras_module(flavour)
    x, y = data(64)
    teacher, student = mlp(flavour, (16,)), mlp(flavour, (4,))
    t = teacher.predict(x, verbose=0)
    s = student.predict(x, verbose=0)
    d = Distiller(student=student, teacher=teacher)
    compile_like_keras_io(d, k, optimizer=k.optimizers.SGD(0.0), jit_compile=True)
    logs = one_batch_logs(d, x, y)
    np.testing.assert_allclose(logs["loss"], np_distill_loss(t, s, y, 0.1, 10)[0],
                               rtol=1e-5)


@pytest.mark.tensorflow  # tf.distribute
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_mirrored_strategy_step_equals_single_device_step(flavour, reduction):
    """Mean-reduced terms are scaled by the replicas as Keras scales its
    losses; summed ones are not (their gradients add up to the global sum)."""
    import tensorflow as tf

    k = keras_module(flavour)
    cpus = tf.config.list_logical_devices("CPU")
    assert len(cpus) >= 2, "conftest should have created 2 logical CPUs"
    x, y = data(32)
    w = np.random.default_rng(1).uniform(0.5, 1.5, size=32)

    def one_step(strategy):
        with strategy.scope():
            teacher = mlp(flavour, (16,))
            student = mlp(flavour, (4,), seed=3,
                          regularizer=k.regularizers.L2(0.01))
            d = Distiller(student=student, teacher=teacher)
            compile_like_keras_io(
                d, k, optimizer=k.optimizers.SGD(0.5 if reduction != "sum" else 0.02),
                alpha=0.4, temperature=3.0,
                student_loss_fn=k.losses.SparseCategoricalCrossentropy(
                    from_logits=True, reduction=reduction),
                distillation_loss_fn=k.losses.KLDivergence(reduction=reduction))
        logs = one_batch_logs(d, x, y, sample_weight=w)
        return logs, [v.numpy() for v in student.trainable_weights]

    mirrored = tf.distribute.MirroredStrategy([c.name for c in cpus[:2]])
    assert mirrored.num_replicas_in_sync == 2
    logs_2, weights_2 = one_step(mirrored)
    logs_1, weights_1 = one_step(tf.distribute.get_strategy())
    np.testing.assert_allclose(logs_2["loss"], logs_1["loss"], rtol=1e-5)
    for a, b in zip(weights_2, weights_1):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_standard_callbacks(flavour, tmp_path):
    k = keras_module(flavour)
    x, y = data(128)
    student = mlp(flavour, (4,))
    d = Distiller(student=student, teacher=mlp(flavour, (16,)))
    # A large learning rate on random labels overfits within a few epochs on
    # every backend, so EarlyStopping has something to stop.
    compile_like_keras_io(d, k, optimizer=k.optimizers.Adam(0.05))
    weights_file = str(tmp_path / ("best.weights.h5" if flavour == "keras"
                                   else "best.h5"))
    history = d.fit(
        x, y, validation_data=data(32, seed=2), epochs=20, verbose=0,
        callbacks=[
            k.callbacks.ModelCheckpoint(weights_file, save_weights_only=True,
                                        monitor="val_loss", save_best_only=True),
            k.callbacks.EarlyStopping(monitor="val_loss", patience=0),
            k.callbacks.TensorBoard(str(tmp_path / "logs")),
        ],
    )
    assert "val_loss" in history.history
    assert "val_sparse_categorical_accuracy" in history.history
    assert len(history.history["loss"]) < 20  # EarlyStopping stopped it
    assert (tmp_path / weights_file).exists()
    assert any((tmp_path / "logs").iterdir())
    # The checkpoint restores the student into a fresh distiller.
    fresh_student = mlp(flavour, (4,), seed=42)
    fresh = Distiller(student=fresh_student, teacher=mlp(flavour, (16,)))
    fresh.load_weights(weights_file)
    assert not np.allclose(fresh_student.get_weights()[0], mlp(flavour, (4,),
                                                               seed=42).get_weights()[0])


def test_keras3_distiller_saves_and_loads(tmp_path):
    import keras

    x, y = data(32)
    student, teacher = mlp("keras", (4,)), mlp("keras", (16,))
    d = Distiller(student=student, teacher=teacher, name="kd")
    compile_like_keras_io(d, keras)
    d.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "distiller.keras")
    d.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert type(loaded) is Distiller
    np.testing.assert_allclose(loaded.predict(x, verbose=0), d.predict(x, verbose=0),
                               rtol=1e-6)
    np.testing.assert_allclose(loaded.teacher.predict(x, verbose=0),
                               teacher.predict(x, verbose=0), rtol=1e-6)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_alpha_zero_distils_unlabelled_data(flavour):
    k = keras_module(flavour)
    x, _ = data(64)
    student = mlp(flavour, (4,))
    d = Distiller(student=student, teacher=mlp(flavour, (16,)))
    d.compile(optimizer=k.optimizers.Adam(0.05), alpha=0.0, temperature=2.0)
    history = d.fit(x, epochs=5, verbose=0)
    assert set(history.history) == {"loss", "distillation_loss"}
    assert history.history["loss"][-1] < history.history["loss"][0]


# ----------------------------------------------------------------- bad input
def _distiller(flavour="keras", **kwargs):
    return Distiller(student=mlp(flavour, (4,)), teacher=mlp(flavour), **kwargs)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_outside_unit_interval(alpha):
    import keras
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\]"):
        compile_like_keras_io(_distiller(), keras, alpha=alpha)


@pytest.mark.parametrize("temperature", [0, -2.0, float("inf"), float("nan")])
def test_bad_temperature(temperature):
    import keras
    with pytest.raises(ValueError, match="`temperature` must be between 0.01 and 1000"):
        compile_like_keras_io(_distiller(), keras, temperature=temperature)


def test_non_numeric_hyperparameters():
    import keras
    with pytest.raises(TypeError, match="alpha"):
        compile_like_keras_io(_distiller(), keras, alpha="0.1")
    with pytest.raises(TypeError, match="temperature"):
        compile_like_keras_io(_distiller(), keras, temperature=None)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_incomparable_output_shapes_name_both(flavour):
    with pytest.raises(ValueError, match=r"teacher output shape \(None, 3\), "
                                         r"student output shape \(None, 5\)"):
        Distiller(student=mlp(flavour, (4,), classes=5), teacher=mlp(flavour))


def test_incomparable_shapes_of_subclassed_models_found_at_first_step():
    import keras

    class Sub(keras.Model):
        def __init__(self, classes):
            super().__init__()
            self.dense = keras.layers.Dense(classes)

        def call(self, x):
            return self.dense(x)

    x, y = data(16)
    d = Distiller(student=Sub(5), teacher=Sub(3))
    compile_like_keras_io(d, keras)
    with pytest.raises(ValueError, match=r"\(16, 3\).*\(16, 5\)"):
        d.fit(x, y, epochs=1, verbose=0, batch_size=16)


@pytest.mark.parametrize("bad", [object(), "model", None, lambda x: x])
def test_not_a_model(bad):
    with pytest.raises(TypeError, match="`teacher` must be a Keras model"):
        Distiller(student=mlp("keras"), teacher=bad)
    with pytest.raises(TypeError, match="`student` must be a Keras model"):
        Distiller(student=bad, teacher=mlp("keras"))


def test_a_layer_is_not_a_model():
    import keras
    with pytest.raises(TypeError, match="`student` must be a Keras model"):
        Distiller(student=keras.layers.Dense(3), teacher=mlp("keras"))


def test_single_unit_output_is_refused():
    with pytest.raises(ValueError, match="single unit"):
        Distiller(student=mlp("keras", classes=1), teacher=mlp("keras", classes=1))


def test_compile_errors():
    import keras
    d = _distiller()
    with pytest.raises(ValueError, match="student_loss_fn"):
        d.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="`student_loss_fn` is required"):
        d.compile(optimizer="adam", alpha=0.5)
    with pytest.raises(ValueError, match="not a Keras loss name"):
        d.compile(optimizer="adam", student_loss_fn="no_such_loss")
    with pytest.raises(TypeError, match="student_loss_fn"):
        d.compile(optimizer="adam", student_loss_fn=3)
    with pytest.raises(ValueError, match="reduction"):
        d.compile(optimizer="adam", student_loss_fn=keras.losses.
                  SparseCategoricalCrossentropy(reduction=None))
    with pytest.raises(ValueError, match="teacher_outputs"):
        _distiller(teacher_outputs="softmax")


def test_fit_before_compile_and_labels_missing():
    import keras
    x, y = data(16)
    d = _distiller()
    with pytest.raises((RuntimeError, ValueError), match="compile"):
        d.fit(x, y, epochs=1, verbose=0)
    compile_like_keras_io(d, keras)
    with pytest.raises(ValueError, match="no labels"):
        d.fit(x, epochs=1, verbose=0)


def test_same_model_twice():
    m = mlp("keras")
    with pytest.raises(ValueError, match="same model"):
        Distiller(student=m, teacher=m)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_evaluate_without_student_loss_reports_distillation(flavour):
    k = keras_module(flavour)
    x, y = data(32)
    d = Distiller(student=mlp(flavour, (4,)), teacher=mlp(flavour, (16,)))
    d.compile(optimizer=k.optimizers.Adam(), alpha=0.0,
              metrics=[k.metrics.SparseCategoricalAccuracy()])
    results = d.evaluate(x, y, verbose=0, return_dict=True)
    assert set(results) == {"loss", "distillation_loss", "sparse_categorical_accuracy"}
    assert results["loss"] == results["distillation_loss"] > 0
    # Unlabelled data with compiled metrics: nothing to update them with,
    # so they are left out (no "metric has not yet been built").
    history = d.fit(x, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "distillation_loss"}
    results = d.evaluate(x, verbose=0, return_dict=True)
    assert set(results) == {"loss", "distillation_loss"}


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_plain_function_losses(flavour):
    k = keras_module(flavour)
    x, y = data(32)
    teacher, student = mlp(flavour), mlp(flavour, (4,), seed=8)
    t = teacher.predict(x, verbose=0)
    s = student.predict(x, verbose=0)
    d = Distiller(student=student, teacher=teacher)
    d.compile(optimizer=k.optimizers.SGD(0.0), alpha=0.5, temperature=2.0,
              student_loss_fn=lambda yt, yp: k.losses.sparse_categorical_crossentropy(
                  yt, yp, from_logits=True),
              distillation_loss_fn=k.losses.kl_divergence)
    logs = one_batch_logs(d, x, y)
    np.testing.assert_allclose(logs["loss"], np_distill_loss(t, s, y, 0.5, 2.0)[0],
                               rtol=1e-5)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_diverging_run_keeps_the_last_good_student_weights(flavour):
    k = keras_module(flavour)
    x, y = data(64)
    student = mlp(flavour, (4,))
    d = Distiller(student=student, teacher=mlp(flavour, (16,)))
    compile_like_keras_io(d, k, optimizer=k.optimizers.Adam(1e-2))
    d.fit(x, y, epochs=1, batch_size=16, verbose=0)
    good = [w.copy() for w in student.get_weights()]
    # A NaN sample weight in the second batch makes the loss NaN there.
    weights = np.ones(64)
    weights[20] = np.nan
    with pytest.warns(RuntimeWarning, match="in epoch 1;.*restored to the start"):
        history = d.fit(x, y, sample_weight=weights, epochs=3, batch_size=16,
                        verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 1
    for a, b in zip(good, student.get_weights()):
        np.testing.assert_array_equal(a, b)
    # A run that fails in its second epoch keeps the first epoch's weights.
    epochs_seen = []

    class PoisonSecondEpoch(k.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            epochs_seen.append([w.copy() for w in student.get_weights()])
            if epoch == 0:
                weights = student.get_weights()
                weights[-1] = weights[-1] * np.nan  # output bias: logits NaN
                student.set_weights(weights)

    with pytest.warns(RuntimeWarning, match="restored to the end of epoch 1"):
        d.fit(x, y, epochs=3, batch_size=16, verbose=0,
              callbacks=[PoisonSecondEpoch()])
    for a, b in zip(epochs_seen[0], student.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fit_accepts_keras_positional_arguments():
    import keras
    x, y = data(32)
    d = _distiller()
    compile_like_keras_io(d, keras)
    history = d.fit(x, y, 16, 2, 0)
    assert len(history.history["loss"]) == 2


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_custom_term_classes_serve_both_flavours(flavour):
    """A term subclass is the extension point: one class, every flavour."""
    from keras_distill import losses, terms

    k = keras_module(flavour)

    class PlusOne(terms.LogitTerm):
        def __init__(self, extra=1.0):
            self.extra = extra

        def per_sample(self, teacher_logits, student_logits, labels=None,
                       temperature=None):
            kd = losses.kd_loss(teacher_logits, student_logits,
                                self._temperature(temperature), reduction="none")
            return kd + self.extra

    x, y = data(32)
    teacher, student = mlp(flavour), mlp(flavour, (4,), seed=3)
    t = teacher.predict(x, verbose=0)
    s = student.predict(x, verbose=0)
    d = Distiller(student, teacher)
    assert isinstance(d, k.Model) and isinstance(d, Distiller)
    compile_like_keras_io(d, k, optimizer=k.optimizers.SGD(0.0),
                          distillation_loss_fn=PlusOne(3.0))
    logs = one_batch_logs(d, x, y)
    total, _, distill = np_distill_loss(t, s, y, 0.1, 10)
    np.testing.assert_allclose(logs["distillation_loss"], distill + 3.0, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], total + 0.9 * 3.0, rtol=1e-5)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_decoupled_kd(flavour):
    from keras_distill import DecoupledKD, losses

    k = keras_module(flavour)
    x, y = data(32)
    teacher, student = mlp(flavour, (16,)), mlp(flavour, (4,), seed=3)
    t = teacher.predict(x, verbose=0)
    s = student.predict(x, verbose=0)
    d = Distiller(student=student, teacher=teacher)
    compile_like_keras_io(d, k, optimizer=k.optimizers.SGD(0.0), alpha=0.2,
                          temperature=4.0,
                          distillation_loss_fn=DecoupledKD(alpha=1.0, beta=2.0))
    logs = one_batch_logs(d, x, y)
    want = float(losses.dkd_loss(t, s, y, alpha=1.0, beta=2.0, temperature=4.0))
    np.testing.assert_allclose(logs["distillation_loss"], want, rtol=1e-5)
    _, student_loss, _ = np_distill_loss(t, s, y, 0.2, 4.0)
    np.testing.assert_allclose(logs["loss"], 0.2 * student_loss + 0.8 * want, rtol=1e-5)
    d.compile(optimizer=k.optimizers.SGD(0.0), alpha=0.0,
              distillation_loss_fn=DecoupledKD())
    with pytest.raises(ValueError, match="DKD.*needs the labels"):
        d.fit(x, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="beta"):
        DecoupledKD(beta=-1.0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_summed_losses_are_sums_over_the_batch(flavour):
    """A loss object with reduction="sum" sums over the batch, like Keras."""
    k = keras_module(flavour)
    x, y = data(16)
    teacher, student = mlp(flavour), mlp(flavour, (4,), seed=2)
    t = teacher.predict(x, verbose=0)
    s = student.predict(x, verbose=0)
    d = Distiller(student=student, teacher=teacher)
    compile_like_keras_io(
        d, k, optimizer=k.optimizers.SGD(0.0), alpha=0.5, temperature=2.0,
        student_loss_fn=k.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="sum"),
        distillation_loss_fn=k.losses.MeanSquaredError(reduction="sum"))
    logs = one_batch_logs(d, x, y)
    p, q = np.exp(log_softmax(t / 2.0)), np.exp(log_softmax(s / 2.0))
    want_distill = ((p - q) ** 2).mean(-1).sum() * 4.0
    want_student = -log_softmax(s)[np.arange(len(y)), y].sum()
    np.testing.assert_allclose(logs["distillation_loss"], want_distill, rtol=1e-5)
    np.testing.assert_allclose(logs["student_loss"], want_student, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], 0.5 * want_student + 0.5 * want_distill,
                               rtol=1e-5)


def test_per_timestep_sample_weights_weigh_each_position():
    """(batch, T) sample weights multiply per position before averaging."""
    from keras_distill.objective import weighted_mean

    values = np.array([[1.0, 3.0], [2.0, 4.0]])
    weights = np.array([[1.0, 0.0], [0.5, 0.5]])
    want = ((values * weights).mean(-1)).sum() / 2
    got = keras.ops.convert_to_numpy(weighted_mean(values, weights))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    got = keras.ops.convert_to_numpy(weighted_mean(values, weights[..., None]))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    got = keras.ops.convert_to_numpy(weighted_mean(values, weights, "sum",
                                                   scale=lambda v: v / 2))
    np.testing.assert_allclose(got, (values * weights).mean(-1).sum(), rtol=1e-6)


def test_a_subclass_without_a_tf_keras_twin_says_what_to_do():
    class Mine(Distiller):
        pass

    student, teacher = mlp("tf_keras", (4,)), mlp("tf_keras")
    with pytest.raises(TypeError, match=r"Mine has no tf_keras version.*"
                                        r"keras_distill\.tf_keras\.Distiller.*"
                                        r"register_twin"):
        Mine(student, teacher)
