"""Pruning while distilling (TFMOT), strip, reports and sensitivity analysis.

TFMOT is imported in this process through keras_distill._compat.import_tfmot,
which leaves tf.keras and TF_USE_LEGACY_KERAS as they were (see
tests/test_convert.py for the fresh-process check), so these tests can share
a pytest worker with the rest of the suite.
"""

import json
import math
import os

import keras
import numpy as np
import pytest

from keras_distill import Distiller
from keras_distill import pruning
from keras_distill._compat import import_tfmot

L = keras.layers


def small_cnn(name="student", seed=0):
    init = keras.initializers.GlorotUniform
    return keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        L.Conv2D(8, 3, activation="relu", kernel_initializer=init(seed), name="conv"),
        L.MaxPooling2D(name="pool"),
        L.Flatten(name="flatten"),
        L.Dense(16, activation="relu", kernel_initializer=init(seed + 1), name="fc"),
        L.Dense(4, kernel_initializer=init(seed + 2), name="logits"),
    ], name=name)


from helpers import image_data as data  # noqa: E402
from helpers import subclassed_tf_keras_model  # noqa: E402
from helpers import image_teacher as teacher_model  # noqa: E402


def compile_tf_keras(model_or_distiller, distiller=True):
    import tf_keras

    loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if distiller:
        model_or_distiller.compile(optimizer=tf_keras.optimizers.Adam(1e-3),
                                   student_loss_fn=loss, alpha=0.5, temperature=2.0)
    else:
        model_or_distiller.compile(optimizer=tf_keras.optimizers.Adam(1e-3), loss=loss)


def steps(wrappers):
    return [int(w.pruning_step.numpy()) for w in wrappers]


# -- prune ------------------------------------------------------------------------


def test_prune_wraps_prunable_layers_of_a_keras3_student_and_keeps_it():
    import tf_keras

    student = small_cnn()
    before = [w.numpy().copy() for w in student.weights]
    pruned = pruning.prune(student, 0.5, epochs=2, steps_per_epoch=3)
    assert isinstance(pruned, tf_keras.Model)
    assert [l.name for l in pruned.layers] == [
        "prune_low_magnitude_conv", "pool", "flatten", "prune_low_magnitude_fc",
        "prune_low_magnitude_logits"]
    assert steps(pruning.pruning_wrappers(pruned)) == [0, 0, 0]
    x, _ = data(8)
    np.testing.assert_allclose(pruned.predict(x, verbose=0),
                               student.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    for w, b in zip(student.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)


def test_prune_copies_a_tf_keras_student():
    import tf_keras

    student = tf_keras.Sequential([tf_keras.layers.Dense(4, input_shape=(3,), name="d")])
    kernel = student.layers[0].kernel.numpy().copy()
    pruned = pruning.prune(student, 0.5, schedule="constant")
    compile_tf_keras(pruned, distiller=False)
    pruned.fit(np.ones((8, 3), "float32"), np.zeros(8), epochs=1, verbose=0,
               callbacks=pruning.pruning_callbacks(pruned))
    assert pruning.sparsity_report(pruned) == {"d": 0.5}
    np.testing.assert_array_equal(student.layers[0].kernel.numpy(), kernel)


def test_distilling_reaches_target_and_step_counts_batches():
    x, y = data(96)
    xv, yv = data(32, seed=1)
    epochs, batch_size = 3, 16
    steps_per_epoch = math.ceil(len(x) / batch_size)
    pruned = pruning.prune(small_cnn(), 0.5, epochs=epochs,
                           steps_per_epoch=steps_per_epoch)
    distiller = Distiller(pruned, teacher_model())
    compile_tf_keras(distiller)
    distiller.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0,
                  validation_data=(xv, yv), cache_teacher=True,
                  callbacks=pruning.pruning_callbacks(distiller))
    wrappers = pruning.pruning_wrappers(distiller)
    assert len(wrappers) == 3
    # One step per training batch; validation and caching do not count.
    assert steps(wrappers) == [epochs * steps_per_epoch] * 3
    report = pruning.sparsity_report(distiller.student)
    assert report == {"conv": 0.5, "fc": 0.5, "logits": 0.5}
    # The callback re-masks at the end: the weights themselves are sparse.
    for wrapper in wrappers:
        kernel = wrapper.layer.kernel.numpy()
        assert np.mean(kernel == 0) == 0.5


@pytest.mark.parametrize("user_callback", [False, True])
def test_distiller_adds_the_pruning_callback_by_itself(user_callback):
    x, y = data(64)
    pruned = pruning.prune(small_cnn(), 0.5, epochs=2, steps_per_epoch=4)
    distiller = Distiller(pruned, teacher_model())
    compile_tf_keras(distiller)
    callbacks = pruning.pruning_callbacks(distiller) if user_callback else None
    distiller.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=callbacks)
    # Exactly one step per batch: added once, never twice.
    assert steps(pruning.pruning_wrappers(distiller)) == [8] * 3
    assert pruning.sparsity_report(distiller.student) == {
        "conv": 0.5, "fc": 0.5, "logits": 0.5}


def test_polynomial_schedule_reaches_target_when_span_is_prime():
    # The ramp spans batches 1..24 and 1..38: 23 and 37 steps, both prime, so
    # the default frequency (2, 3) does not divide them and the ramp starts
    # at batch 2 to land on the last batch.
    for batches in (24, 38):
        x, y = data(4 * batches)
        pruned = pruning.prune(small_cnn(), 0.7, epochs=1, steps_per_epoch=batches)
        compile_tf_keras(pruned, distiller=False)
        pruned.fit(x, y, batch_size=4, epochs=1, verbose=0,
                   callbacks=pruning.pruning_callbacks(pruned))
        for value in pruning.sparsity_report(pruned).values():
            assert value == pytest.approx(0.7, abs=0.01)


def test_constant_schedule_prunes_from_the_first_batch():
    x, y = data(8)
    pruned = pruning.prune(small_cnn(), 0.6, schedule="constant")
    compile_tf_keras(pruned, distiller=False)
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0,
               callbacks=pruning.pruning_callbacks(pruned))
    for value in pruning.sparsity_report(pruned).values():
        assert value == pytest.approx(0.6, abs=0.01)


def test_begin_step_keeps_early_batches_dense():
    x, y = data(16)
    pruned = pruning.prune(small_cnn(), 0.5, schedule="constant", begin_step=2)
    compile_tf_keras(pruned, distiller=False)
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0,  # 2 batches
               callbacks=pruning.pruning_callbacks(pruned))
    assert set(pruning.sparsity_report(pruned).values()) == {0.0}
    pruned.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0,
               callbacks=pruning.pruning_callbacks(pruned))
    assert set(pruning.sparsity_report(pruned).values()) == {0.5}


def test_structured_2_by_4():
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_utils

    x, y = data(16)
    pruned = pruning.prune(small_cnn(), sparsity_m_by_n=(2, 4), layers=["fc", "logits"])
    compile_tf_keras(pruned, distiller=False)
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0,
               callbacks=pruning.pruning_callbacks(pruned))
    stripped = pruning.strip(pruned)
    for name in ("fc", "logits"):
        kernel = stripped.get_layer(name).kernel
        assert bool(pruning_utils.is_pruned_m_by_n(kernel, (2, 4)))
        assert np.mean(kernel.numpy() == 0) == 0.5
    assert pruning.sparsity_report(stripped)["conv"] == 0.0


def test_layers_selection_and_per_layer_targets():
    pruned = pruning.prune(small_cnn(), 0.5, schedule="constant", layers=["fc"])
    assert [l.name for l in pruned.layers if "prune" in l.name] == [
        "prune_low_magnitude_fc"]
    pruned = pruning.prune(small_cnn(), {"conv": 0.25, "logits": 0.75},
                           schedule="constant")
    x, y = data(8)
    compile_tf_keras(pruned, distiller=False)
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0,
               callbacks=pruning.pruning_callbacks(pruned))
    report = pruning.sparsity_report(pruned)
    assert report["conv"] == pytest.approx(0.25, abs=0.02)
    assert report["logits"] == pytest.approx(0.75, abs=0.02)
    assert report["fc"] == 0.0


# -- nested students ------------------------------------------------------------------


def test_callback_finds_wrappers_nested_in_a_custom_layer():
    import tf_keras

    tfmot = import_tfmot()
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=1, frequency=1)

    class Block(tf_keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = tfmot.sparsity.keras.prune_low_magnitude(
                tf_keras.layers.Dense(8, activation="relu"), pruning_schedule=schedule)

        def call(self, x):
            return self.dense(x)

    def student():
        return tf_keras.Sequential([tf_keras.layers.Flatten(input_shape=(8, 8, 1)),
                                    Block(), tf_keras.layers.Dense(4)])

    x, y = data(48)
    # TFMOT's own callback does not find the nested wrapper: training fails.
    stock = Distiller(student(), teacher_model())
    compile_tf_keras(stock)
    with pytest.raises(Exception, match="UpdatePruningStep"):
        stock.fit(x, y, batch_size=16, epochs=1, verbose=0,
                  callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])

    distiller = Distiller(student(), teacher_model())
    compile_tf_keras(distiller)
    distiller.fit(x, y, batch_size=16, epochs=2, verbose=0,
                  callbacks=pruning.pruning_callbacks(distiller))
    (wrapper,) = pruning.pruning_wrappers(distiller)
    assert steps([wrapper]) == [6]
    assert np.mean(wrapper.layer.kernel.numpy() == 0) == 0.5
    # strip_pruning cannot reach it: a clear error.
    with pytest.raises(ValueError, match="inside custom layers"):
        pruning.strip(distiller.student)


def test_functional_student_nested_in_sequential():
    inner = keras.Model(*(lambda i: (i, L.Dense(8, activation="relu", name="hidden")(
        L.Flatten()(i))))(keras.Input((8, 8, 1))), name="body")
    student = keras.Sequential([keras.Input((8, 8, 1)), inner,
                                L.Dense(4, name="logits")], name="nested")
    pruned = pruning.prune(student, 0.5, epochs=1, steps_per_epoch=6)
    distiller = Distiller(pruned, teacher_model())
    compile_tf_keras(distiller)
    x, y = data(48)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0,
                  callbacks=pruning.pruning_callbacks(distiller))
    assert steps(pruning.pruning_wrappers(pruned)) == [6, 6]
    stripped = pruning.strip(pruned)
    assert pruning.sparsity_report(stripped) == {"hidden": 0.5, "logits": 0.5}


# -- strip --------------------------------------------------------------------------


def test_strip_bakes_zeros_into_an_independent_plain_model():
    import tf_keras

    x, y = data(32)
    pruned = pruning.prune(small_cnn(), 0.5, schedule="constant")
    compile_tf_keras(pruned, distiller=False)
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0,
               callbacks=pruning.pruning_callbacks(pruned))
    stripped = pruning.strip(pruned)
    assert isinstance(stripped, tf_keras.Model)
    assert [l.name for l in stripped.layers] == ["conv", "pool", "flatten", "fc", "logits"]
    assert not pruning.pruning_wrappers(stripped)
    assert pruning.sparsity_report(stripped) == {"conv": 0.5, "fc": 0.5, "logits": 0.5}
    assert pruning.total_sparsity(stripped) == pytest.approx(0.5, abs=0.01)
    np.testing.assert_allclose(stripped.predict(x, verbose=0),
                               pruned.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    kernel = stripped.get_layer("fc").kernel.numpy().copy()
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0,
               callbacks=pruning.pruning_callbacks(pruned))
    np.testing.assert_array_equal(stripped.get_layer("fc").kernel.numpy(), kernel)
    assert pruning.strip(stripped) is stripped


def test_sparsity_report_of_keras3_model():
    model = small_cnn()
    model.get_layer("fc").kernel.assign(np.zeros((72, 16), "float32"))
    assert pruning.sparsity_report(model) == {"conv": 0.0, "fc": 1.0, "logits": 0.0}


# -- errors --------------------------------------------------------------------------


def test_nothing_prunable():
    model = keras.Sequential([keras.Input((4, 4, 1)), L.Flatten(), L.ReLU()], name="flat")
    with pytest.raises(ValueError, match="no layer TFMOT can prune"):
        pruning.prune(model, schedule="constant")


def test_layer_selection_errors():
    with pytest.raises(ValueError, match=r"Unknown layer\(s\) \['nope'\]"):
        pruning.prune(small_cnn(), schedule="constant", layers=["nope"])
    with pytest.raises(ValueError, match=r"\['flatten'\].*cannot be pruned"):
        pruning.prune(small_cnn(), schedule="constant", layers=["flatten"])
    with pytest.raises(ValueError, match="not both"):
        pruning.prune(small_cnn(), {"fc": 0.5}, layers=["fc"], schedule="constant")


def test_argument_errors():
    with pytest.raises(ValueError, match="`target_sparsity`"):
        pruning.prune(small_cnn(), 1.0, schedule="constant")
    with pytest.raises(ValueError, match="`schedule`"):
        pruning.prune(small_cnn(), schedule="cubic")
    with pytest.raises(ValueError, match="end_step.*epochs.*steps_per_epoch"):
        pruning.prune(small_cnn(), 0.5)
    with pytest.raises(ValueError, match="`end_step`=1"):
        pruning.prune(small_cnn(), 0.5, end_step=1)
    with pytest.raises(ValueError, match="`sparsity_m_by_n`"):
        pruning.prune(small_cnn(), sparsity_m_by_n=(4, 2))
    with pytest.raises(TypeError, match="Keras model"):
        pruning.prune("student")


def test_subclassed_student_and_distiller_are_refused():
    student = subclassed_tf_keras_model()
    with pytest.raises(ValueError, match="subclassed"):
        pruning.prune(student, schedule="constant")
    distiller = Distiller(pruning.prune(small_cnn(), schedule="constant"),
                          teacher_model())
    with pytest.raises(ValueError, match="already pruned"):
        pruning.prune(distiller.student, schedule="constant")
    plain = Distiller(pruning.strip(distiller.student), teacher_model())
    with pytest.raises(TypeError, match=r"is a Distiller .*pass `distiller\.student`"):
        pruning.prune(plain, schedule="constant")


def test_pruning_callbacks_on_a_model_without_wrappers():
    with pytest.raises(ValueError, match="holds no pruning wrapper"):
        pruning.pruning_callbacks(small_cnn())


# -- sensitivity ---------------------------------------------------------------------


class Interrupted(Exception):
    pass


def accuracy_fn(x, y, calls, fail_after=None):
    def evaluate(model):
        if fail_after is not None and len(calls) >= fail_after:
            raise Interrupted()
        calls.append(1)
        return float(np.mean(np.argmax(model(x, training=False), -1) == y))
    return evaluate


@pytest.mark.parametrize("flavour", ["keras", "tf_keras"])
def test_sensitivity_resumes_after_interruption(tmp_path, flavour):
    from keras_distill.convert import to_tf_keras

    model = small_cnn()
    if flavour == "tf_keras":
        model = to_tf_keras(model)
    x, _ = data(64)
    y = np.argmax(model(x, training=False), -1)
    before = [w.numpy().copy() for w in model.weights]
    path = str(tmp_path / "sens.json")
    ratios = (0.3, 0.6, 0.9)
    calls = []
    with pytest.raises(Interrupted):  # baseline + 4 measurements, then stop
        pruning.sensitivity(model, accuracy_fn(x, y, calls, fail_after=5),
                            ratios=ratios, path=path)
    for w, b in zip(model.weights, before):  # restored despite the exception
        np.testing.assert_array_equal(w.numpy(), b)
    saved = json.loads(open(path).read())
    assert saved["baseline"] == 1.0
    assert sum(len(v) for v in saved["layers"].values()) == 4
    assert not [f for f in os.listdir(tmp_path) if f != "sens.json"]  # atomic

    calls = []
    results = pruning.sensitivity(model, accuracy_fn(x, y, calls), ratios=ratios,
                                  path=path)
    assert len(calls) == 3 * 3 - 4  # only what was missing
    assert set(results["layers"]) == {"conv", "fc", "logits"}
    for layer in results["layers"].values():
        assert sorted(layer) == ["0.3", "0.6", "0.9"]
        for entry in layer.values():
            assert entry["loss"] == pytest.approx(1.0 - entry["accuracy"])
    assert results == json.loads(open(path).read())
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)
    # A rerun measures nothing; more ratios measure only the new ones.
    calls = []
    pruning.sensitivity(model, accuracy_fn(x, y, calls), ratios=ratios, path=path)
    assert calls == []
    pruning.sensitivity(model, accuracy_fn(x, y, calls), ratios=(0.5,),
                        layers=["fc"], path=path)
    assert len(calls) == 1


def test_sensitivity_prunes_one_layer_by_magnitude():
    model = small_cnn()
    seen = {}

    def probe(m):
        seen[len(seen)] = pruning.sparsity_report(m)
        return 1.0

    pruning.sensitivity(model, probe, layers=["fc"], ratios=(0.25,), path=None)
    assert seen[1] == {"conv": 0.0, "fc": 0.25, "logits": 0.0}
    assert pruning.sparsity_report(model)["fc"] == 0.0


def test_sensitivity_refuses_results_of_another_model(tmp_path):
    path = str(tmp_path / "sens.json")
    pruning.sensitivity(small_cnn(), lambda m: 1.0, ratios=(0.5,), path=path)
    with pytest.raises(ValueError, match="another model"):
        pruning.sensitivity(small_cnn(seed=5), lambda m: 1.0, ratios=(0.5,), path=path)


def test_sensitivity_errors(tmp_path):
    with pytest.raises(ValueError, match="not layers with kernels"):
        pruning.sensitivity(small_cnn(), lambda m: 1.0, layers=["pool"], path=None)
    with pytest.raises(ValueError, match="`ratios`"):
        pruning.sensitivity(small_cnn(), lambda m: 1.0, ratios=(0.0, 1.0), path=None)
    with pytest.raises(ValueError, match="must return a number"):
        pruning.sensitivity(small_cnn(), lambda m: "high", path=None)


def test_ratios_by_loss_interpolates():
    results = {"baseline": 0.9, "layers": {
        "a": {"0.2": {"loss": 0.0}, "0.4": {"loss": 0.01}, "0.6": {"loss": 0.05}},
        "b": {"0.2": {"loss": 0.02}, "0.4": {"loss": 0.04}},
        "c": {"0.2": {"loss": 0.0}, "0.4": {"loss": 0.0}},
        "d": {"0.2": {"loss": 0.5}}}}
    ratios = pruning.ratios_by_loss(results, 0.02)
    assert ratios["a"] == pytest.approx(0.45)
    assert ratios["b"] == pytest.approx(0.2)
    assert ratios["c"] == pytest.approx(0.4)
    assert ratios["d"] == pytest.approx(0.2 * 0.02 / 0.5)
    assert pruning.ratios_by_loss(results, 0.0) == {"a": 0.2, "c": 0.4}
    with pytest.raises(ValueError, match="`max_loss`"):
        pruning.ratios_by_loss(results, -1)


def test_ratios_feed_prune_and_plot(tmp_path):
    path = str(tmp_path / "sens.json")
    model = small_cnn()
    x, _ = data(32)
    y = np.argmax(model(x, training=False), -1)
    pruning.sensitivity(model, accuracy_fn(x, y, []), ratios=(0.2, 0.5, 0.8), path=path)
    ratios = pruning.ratios_by_loss(path, 0.1)
    assert ratios and all(0 < r <= 0.8 for r in ratios.values())
    pruned = pruning.prune(model, ratios, schedule="constant")
    assert {w.layer.name for w in pruning.pruning_wrappers(pruned)} == set(ratios)
    png = pruning.plot_sensitivity(path, str(tmp_path / "sens.png"))
    with open(png, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"


# -- fit hook and layer walking -----------------------------------------------------


def test_fit_hook_provides_the_callback_once():
    from keras_distill import _fit_hooks

    pruned = pruning.prune(small_cnn(), 0.5, schedule="constant")
    (callback,) = _fit_hooks.callbacks_for(pruned, [])
    assert type(callback).__name__ == "UpdatePruningStep"
    assert pruning.fit_callbacks(pruned, pruning.pruning_callbacks(pruned)) == []
    tfmot = import_tfmot()
    assert pruning.fit_callbacks(pruned, [tfmot.sparsity.keras.UpdatePruningStep()]) == []
    assert pruning.fit_callbacks(small_cnn(), []) == []
    assert pruning.fit_callbacks(pruning.strip(pruned), []) == []


def test_sparsity_report_looks_inside_custom_layers():
    class Block(L.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = L.Dense(4, name="inner")
            self.attention = L.MultiHeadAttention(2, 2, name="attention")

        def call(self, x):
            x = self.inner(x)
            return self.attention(x[:, None], x[:, None])[:, 0]

    model = keras.Sequential([keras.Input((3,)), Block(name="block"),
                              L.Dense(2, name="logits")])
    model.get_layer("block").inner.kernel.assign(np.zeros((3, 4), "float32"))
    report = pruning.sparsity_report(model)
    assert list(report)[:1] == ["inner"] and report["inner"] == 1.0
    # The attention layer's own sublayers are counted, each once.
    assert {"query", "key", "value", "attention_output"} <= set(report)
    assert list(report)[-1] == "logits"


def test_public_names_are_kept():
    import keras_distill.pruning as package

    for name in ("prune", "pruning_wrappers", "pruning_callbacks", "strip",
                 "sparsity_report", "total_sparsity", "sensitivity",
                 "ratios_by_loss", "plot_sensitivity", "SCHEDULES", "DEFAULT_RATIOS",
                 "fit_callbacks"):
        assert name in package.__all__ and hasattr(package, name)
    assert callable(package.prune)
