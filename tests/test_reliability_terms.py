"""Reliability of construction, terms, losses, ensembles and tf.distribute.

Each test is a bad input or a fault that used to give a silent wrong
number, a NaN or a deep error, and now gives the right result or a clear
``TypeError`` / ``ValueError`` naming the argument (issue 12). Run under
the TensorFlow backend and ``KERAS_BACKEND=jax`` (tests of ``tf_keras``
models and TensorFlow-only APIs are skipped there).
"""

import functools
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers import data, keras_module, mlp
from keras_distill import (
    Distiller,
    FeatureDistiller,
    FeaturePair,
    MultiTeacherDistiller,
    losses,
    terms,
)
from keras_distill._compat import ends_in_softmax
from keras_distill.ensemble import teacher_ensemble

BACKEND = keras.backend.backend()
FLAVOURS = ["keras", "tf_keras"]
tf_only = pytest.mark.tensorflow


def _sequential(flavour, layers, features=8):
    k = keras_module(flavour)
    first = k.Input((features,)) if flavour == "keras" else k.layers.InputLayer(
        (features,))
    return k.Sequential([first] + layers)


def _compiled(flavour, **options):
    k = keras_module(flavour)
    d = Distiller(student=mlp(flavour, (4,), seed=3), teacher=mlp(flavour, (16,)))
    options.setdefault("alpha", 0.5)
    options.setdefault("student_loss_fn", k.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    d.compile(optimizer=k.optimizers.SGD(0.1), **options)
    return d


# ------------------------------------------------- 1: softmax heads, static
def _probabilities(z):
    """A softmax under another name (its result is returned)."""
    out = keras.ops.softmax(z)
    return out


def _softmax_heads():
    """name -> (layers after a Dense(3), needs TensorFlow ops)."""
    import tensorflow as tf

    return {
        "dense_tf_nn_softmax": (lambda k: [k.layers.Dense(
            3, activation=tf.nn.softmax)], True),
        "activation_tf_nn_softmax": (lambda k: [
            k.layers.Dense(3), k.layers.Activation(tf.nn.softmax)], True),
        "lambda_keras_ops_softmax": (lambda k: [
            k.layers.Dense(3), k.layers.Lambda(keras.ops.softmax)], False),
        "lambda_tf_nn_softmax": (lambda k: [
            k.layers.Dense(3), k.layers.Lambda(tf.nn.softmax)], True),
        "lambda_calling_tf_nn_softmax": (lambda k: [
            k.layers.Dense(3), k.layers.Lambda(lambda z: tf.nn.softmax(z))],
            True),
        "lambda_partial_softmax": (lambda k: [
            k.layers.Dense(3), k.layers.Lambda(functools.partial(
                keras.ops.softmax, axis=-1))], False),
        "activation_def_returning_softmax": (lambda k: [
            k.layers.Dense(3), k.layers.Activation(_probabilities)], False),
        "softmax_then_dropout": (lambda k: [
            k.layers.Dense(3, activation="softmax"), k.layers.Dropout(0.5)],
            False),
    }


def _head_params():
    params = []
    for name, (_, needs_tf) in _softmax_heads().items():
        for flavour in FLAVOURS:
            marks = [tf_only] if needs_tf else []
            params.append(pytest.param(flavour, name, marks=marks,
                                       id=f"{flavour}-{name}"))
    return params


@pytest.mark.parametrize("flavour,head", _head_params())
def test_ends_in_softmax_recognises_softmax_functions_not_names(flavour, head):
    build, _ = _softmax_heads()[head]
    model = _sequential(flavour, build(keras_module(flavour)))
    assert ends_in_softmax(model) is True


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_ends_in_softmax_is_not_fooled_by_a_function_named_softmax(flavour):
    k = keras_module(flavour)

    def softmax(z):  # not a softmax, whatever its name
        return z * 2.0

    model = _sequential(flavour, [k.layers.Dense(3), k.layers.Activation(softmax)])
    assert ends_in_softmax(model) is False
    log_model = _sequential(flavour, [
        k.layers.Dense(3), k.layers.Lambda(lambda z: keras.ops.log(
            keras.ops.softmax(z)))])
    assert ends_in_softmax(log_model) is False


@tf_only
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_distiller_takes_a_tf_nn_softmax_teacher_as_probabilities(flavour):
    import tensorflow as tf

    k = keras_module(flavour)
    teacher = _sequential(flavour, [k.layers.Dense(16, activation="relu"),
                                    k.layers.Dense(3, activation=tf.nn.softmax)])
    d = Distiller(student=mlp(flavour, (4,)), teacher=teacher)
    assert d.teacher_outputs == "probabilities"


# ---------------------------------------------- 7: ensembles, teacher_dtype
def _policies(model):
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            out += _policies(layer)
        elif type(layer).__name__ != "InputLayer":
            out.append(getattr(layer.dtype_policy, "name", layer.dtype_policy))
    return out


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_multi_teacher_distiller_runs_each_teacher_in_teacher_dtype(flavour):
    x, _ = data(32)
    teachers = [mlp(flavour, (16,)), mlp(flavour, (16,), seed=5)]
    d = MultiTeacherDistiller(mlp(flavour, (4,)), teachers=teachers,
                              teacher_dtype="bfloat16")
    copies = d._inference_teacher.model.teachers
    assert all(c is not t for c, t in zip(copies, teachers))
    assert all(p == "mixed_bfloat16" for c in copies for p in _policies(c))
    assert all(p != "mixed_bfloat16" for t in teachers for p in _policies(t))
    exact = d.teacher.predict(x, verbose=0)
    low = d._inference_teacher.model.predict(x, verbose=0)
    np.testing.assert_allclose(low, exact, atol=0.05)
    d.compile(optimizer="sgd", alpha=0.0)
    loss = d.fit(x, epochs=1, verbose=0).history["loss"][0]
    assert np.isfinite(loss)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_distiller_accepts_a_teacher_ensemble_with_teacher_dtype(flavour):
    ensemble = teacher_ensemble([mlp(flavour, (16,)), mlp(flavour, (8,), seed=2)],
                                weights=[3, 1])
    d = Distiller(mlp(flavour, (4,)), teacher=ensemble, teacher_dtype="float16")
    copy = d._inference_teacher.model
    assert copy.teacher_weights == ensemble.teacher_weights
    assert all(p == "mixed_float16" for c in copy.teachers for p in _policies(c))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_ensemble_of_teachers_with_different_input_shapes_raises(flavour):
    with pytest.raises(ValueError, match=r"teachers\[1\].*\(None, 8\).*\(None, 6\)"):
        teacher_ensemble([mlp(flavour, features=8), mlp(flavour, features=6)])


def test_ensemble_teacher_outputs_of_the_wrong_type_raises_naming_it():
    with pytest.raises(ValueError, match="`teacher_outputs`"):
        teacher_ensemble([mlp("keras"), mlp("keras", seed=2)], teacher_outputs=None)


# ------------------------------------------------------ 11: temperatures
def _temperature_users():
    t, s = np.zeros((2, 3)), np.ones((2, 3))
    return {
        "kd_loss": lambda T: losses.kd_loss(t, s, temperature=T),
        "soft_label_loss_teacher": lambda T: losses.soft_label_loss(
            t, s, teacher_temperature=T),
        "soft_label_loss_student": lambda T: losses.soft_label_loss(
            t, s, student_temperature=T),
        "dkd_loss": lambda T: losses.dkd_loss(t, s, [0, 1], temperature=T),
        "KD": lambda T: terms.KD(temperature=T),
        "SoftLabel": lambda T: terms.SoftLabel(teacher_temperature=T),
        "DKD": lambda T: terms.DKD(temperature=T),
        "SoftenedLoss": lambda T: terms.SoftenedLoss("mse", temperature=T),
        "compile": lambda T: _compiled("keras", temperature=T),
    }


@pytest.mark.parametrize("temperature", [1e20, 1e-45, 5000.0, 0.001])
@pytest.mark.parametrize("user", sorted(_temperature_users()))
def test_temperature_outside_its_range_raises_saying_the_range(user, temperature):
    with pytest.raises(ValueError, match=r"temperature`? must be between 0.01 and 1000"):
        _temperature_users()[user](temperature)


# ----------------------------------------------------- 12: empty batches
def _loss_cases():
    """name -> (fn, arrays of a non-empty batch of 3)."""
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(3, 4)).astype("float32") for _ in range(2)]
    maps = [rng.normal(size=(3, 2, 2, c)).astype("float32") for c in (2, 3, 2, 3)]
    embeds = [rng.normal(size=(3, 5)).astype("float32") for _ in range(2)]
    return {
        "kd_loss": (lambda t, s: losses.kd_loss(t, s, 2.0), logits),
        "soft_label_loss": (losses.soft_label_loss, logits),
        "dkd_loss": (lambda t, s: losses.dkd_loss(
            t, s, keras.ops.cast(keras.ops.zeros_like(t[:, 0]), "int32")),
            logits),
        "l2_loss": (losses.l2_loss, embeds),
        "at_loss": (losses.at_loss, maps[:2]),
        "fsp_loss": (losses.fsp_loss, maps),
        "fsp_loss_raw": (functools.partial(losses.fsp_loss, normalize=False), maps),
        "rkd_loss": (losses.rkd_loss, embeds),
    }


def _empty(arrays):
    return [a[:0] for a in arrays]


@pytest.mark.parametrize("name", sorted(_loss_cases()))
def test_every_loss_on_an_empty_batch_is_zero_not_nan(name):
    fn, arrays = _loss_cases()[name]
    # numpy reference: the mean over no sample is taken as 0 (np.mean: NaN).
    assert float(fn(*_empty(arrays))) == 0.0
    assert np.isfinite(float(fn(*arrays)))


@tf_only
@pytest.mark.parametrize("name", sorted(_loss_cases()))
def test_every_loss_on_an_empty_batch_is_zero_under_xla_with_unknown_batch(name):
    import tensorflow as tf

    fn, arrays = _loss_cases()[name]
    spec = [tf.TensorSpec((None,) + a.shape[1:], a.dtype) for a in arrays]
    compiled = tf.function(fn, input_signature=spec, jit_compile=True)
    assert float(compiled(*_empty(arrays))) == 0.0
    np.testing.assert_allclose(float(compiled(*arrays)), float(fn(*arrays)),
                               rtol=1e-5)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX backend only")
@pytest.mark.parametrize("name", sorted(_loss_cases()))
def test_every_loss_on_an_empty_batch_is_zero_in_jax_jit(name):
    import jax

    fn, arrays = _loss_cases()[name]
    assert float(jax.jit(fn)(*_empty(arrays))) == 0.0


# ------------------------------------------------------------ terms
def test_attention_exponent_below_one_raises_when_the_term_is_built():
    with pytest.raises(ValueError, match="`p` must be a finite number >= 1"):
        terms.AT(p=0.5)
    with pytest.raises(ValueError, match="`p`"):
        terms.AT(p=float("nan"))
    with pytest.raises(TypeError, match="`p`"):
        terms.AT(p="2")


def test_terms_get_with_a_misspelt_option_names_the_right_one():
    with pytest.raises(TypeError, match="'temprature'.*did you mean 'temperature'"):
        terms.get("kd", temprature=4)


def test_dkd_with_both_weights_zero_raises():
    with pytest.raises(ValueError, match="`alpha`=0 and `beta`=0"):
        terms.DKD(alpha=0, beta=0)


def test_rkd_with_both_weights_zero_raises():
    with pytest.raises(ValueError, match="`distance_weight`=0 and `angle_weight`=0"):
        terms.RKD(distance_weight=0, angle_weight=0)


def test_feature_loss_with_an_unknown_keyword_raises_when_built():
    with pytest.raises(TypeError, match="`loss`.*bogus"):
        terms.FeatureLoss(lambda t, s: (t - s) ** 2, bogus=1)


def test_unknown_distillation_loss_name_lists_the_known_names():
    with pytest.raises(ValueError, match=r"'kld_typo'.*Known names: \['dist', 'dkd', 'kd'"):
        _compiled("keras", distillation_loss_fn="kld_typo")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_sparse_crossentropy_as_distillation_loss_raises_at_compile(flavour):
    k = keras_module(flavour)
    with pytest.raises(ValueError, match="`distillation_loss_fn` is a sparse"):
        _compiled(flavour, alpha=0.0,
                  distillation_loss_fn=k.losses.SparseCategoricalCrossentropy())


def test_crossentropy_from_logits_as_distillation_loss_raises_at_compile():
    with pytest.raises(ValueError, match="from_logits=True, but it receives"):
        _compiled("keras", alpha=0.0, distillation_loss_fn=keras.losses.
                  CategoricalCrossentropy(from_logits=True))


def test_distillation_loss_with_a_wrong_signature_raises_at_compile():
    with pytest.raises(TypeError, match="`distillation_loss_fn` must accept 2"):
        _compiled("keras", alpha=0.0, distillation_loss_fn=lambda p: p)


# ----------------------------------------------------------- compile
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_student_loss_reducing_over_the_batch_raises_naming_it(flavour):
    x, y = data(16)
    d = _compiled(flavour, student_loss_fn=lambda t, p: keras.ops.mean(p, axis=0))
    with pytest.raises(ValueError, match=r"`student_loss_fn` returned values of "
                                         r"shape \(3,\) for a batch of"):
        d.fit(x, y, batch_size=8, epochs=1, verbose=0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_student_loss_returning_integers_raises_naming_it(flavour):
    x, y = data(16)
    d = _compiled(flavour, student_loss_fn=lambda t, p: keras.ops.cast(
        keras.ops.argmax(p, axis=-1), "int32"))
    with pytest.raises((TypeError, ValueError),
                       match="`student_loss_fn` returned values of dtype int32"):
        d.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_distillation_loss_reducing_over_the_batch_raises_naming_it():
    x, y = data(16)
    d = _compiled("keras", alpha=0.0, distillation_loss_fn=lambda t, s: keras.ops.
                  sum(t - s, axis=0))
    with pytest.raises(ValueError, match=r"`distillation_loss_fn` returned values "
                                         r"of shape \(3,\) for a batch of 8"):
        d.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_student_loss_with_a_wrong_signature_raises_at_compile():
    with pytest.raises(TypeError, match="`student_loss_fn` must accept 2"):
        _compiled("keras", student_loss_fn=lambda y: y)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_from_logits_false_on_a_logits_student_raises_on_the_first_batch(flavour):
    k = keras_module(flavour)
    x, y = data(16)
    d = _compiled(flavour, student_loss_fn=k.losses.SparseCategoricalCrossentropy())
    with pytest.raises(ValueError, match="from_logits=False.*outputs logits"):
        d.fit(x, y, batch_size=8, epochs=1, verbose=0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_from_logits_true_on_a_softmax_student_raises_at_compile(flavour):
    k = keras_module(flavour)
    d = Distiller(student=mlp(flavour, (4,), softmax=True), teacher=mlp(flavour))
    with pytest.raises(ValueError, match="from_logits=True.*applied twice"):
        d.compile(optimizer="sgd", student_loss_fn=k.losses.
                  SparseCategoricalCrossentropy(from_logits=True))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_teacher_that_is_a_trainable_part_of_the_student_raises(flavour):
    k = keras_module(flavour)
    teacher = mlp(flavour)
    student = _sequential(flavour, [teacher, k.layers.Dense(3)])
    d = Distiller(student=student, teacher=teacher)
    with pytest.raises(ValueError, match="is a part of the student.*trained"):
        d.compile(optimizer="sgd", alpha=0.0)
    teacher.trainable = False  # frozen inside the student: fine
    d.compile(optimizer="sgd", alpha=0.0)


@tf_only
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_optimizer_of_the_other_flavour_raises_naming_it(flavour):
    other = keras_module("tf_keras" if flavour == "keras" else "keras")
    d = Distiller(student=mlp(flavour, (4,)), teacher=mlp(flavour))
    with pytest.raises(TypeError, match=f"`optimizer` is a .* optimizer, but the "
                                        f"student is a"):
        d.compile(optimizer=other.optimizers.Adam(), alpha=0.0)


@tf_only
def test_keras3_metric_for_a_tf_keras_student_raises_naming_metrics():
    d = Distiller(student=mlp("tf_keras", (4,)), teacher=mlp("tf_keras"))
    with pytest.raises(TypeError, match="`metrics` holds the Keras 3 metric"):
        d.compile(optimizer="adam", alpha=0.0,
                  metrics=[keras.metrics.SparseCategoricalAccuracy()])


# -------------------------------------------------- features and adapters
def _feature_net(flavour, width):
    return _sequential(flavour, [
        keras_module(flavour).layers.Dense(width, name="hidden"),
        keras_module(flavour).layers.Dense(3, name="logits")])


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_adapter_built_for_another_width_raises_naming_the_pair(flavour):
    adapter = keras_module(flavour).layers.Dense(16)
    adapter.build((None, 7))
    with pytest.raises(ValueError, match=r"pairs\[0\].*adapter.*\(None, 4\)"):
        FeatureDistiller(_feature_net(flavour, 4), _feature_net(flavour, 16),
                         pairs=[FeaturePair("hidden", "hidden", adapter=adapter)])


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_feature_loss_reducing_over_the_batch_raises_naming_the_pair(flavour):
    x, y = data(16)
    pair = FeaturePair("hidden", "hidden",
                       loss=lambda t, s: keras.ops.mean((t - s) ** 2, axis=0))
    d = FeatureDistiller(_feature_net(flavour, 16), _feature_net(flavour, 16),
                         pairs=[pair])
    d.compile(optimizer="sgd", alpha=0.0)
    with pytest.raises(ValueError, match="feature loss of .*hidden.* returned "
                                         r"values of shape \(16,\)"):
        d.fit(x, y, batch_size=8, epochs=1, verbose=0)


# ------------------------------------------------------ 17: tf.distribute
_STRATEGY_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
from helpers import data, keras_module, mlp, subclassed_tf_keras_model
from keras_distill import Distiller, MultiTeacherDistiller

flavour = sys.argv[2]
k = keras_module(flavour)
x, y = data(32)
report = {}


def one_step(strategy, student, teacher):
    with strategy.scope():
        d = Distiller(student=student, teacher=teacher)
        d.compile(optimizer=k.optimizers.SGD(0.5), alpha=0.0, temperature=2.0)
    loss = d.fit(x, y, batch_size=32, epochs=1, verbose=0,
                 shuffle=False).history["loss"][0]
    return d, loss, [np.asarray(w) for w in student.get_weights()]


def error(fn):
    try:
        fn()
    except ValueError as e:
        return str(e)
    return None


cpus = tf.config.list_logical_devices("CPU")
mirrored = tf.distribute.MirroredStrategy([c.name for c in cpus[:2]])

# A teacher built outside the scope: copied in (yours untouched).
teacher = mlp(flavour, (16,))
before = [w.copy() for w in teacher.get_weights()]
with mirrored.scope():
    student = mlp(flavour, (4,), seed=3)
d, loss_2, weights_2 = one_step(mirrored, student, teacher)
report["copied"] = d.teacher is not teacher
report["untouched"] = all(np.array_equal(a, b)
                          for a, b in zip(before, teacher.get_weights()))
_, loss_1, weights_1 = one_step(tf.distribute.get_strategy(),
                                mlp(flavour, (4,), seed=3), mlp(flavour, (16,)))
report["same_step"] = bool(np.allclose(loss_2, loss_1, rtol=1e-5) and all(
    np.allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(weights_2, weights_1)))

# Teachers of an ensemble built outside the scope.
teachers = [mlp(flavour, (16,)), mlp(flavour, (8,), seed=4)]
with mirrored.scope():
    m = MultiTeacherDistiller(mlp(flavour, (4,)), teachers=teachers)
    m.compile(optimizer=k.optimizers.SGD(0.1), alpha=0.0)
report["ensemble_loss"] = float(m.fit(x, epochs=1, verbose=0).history["loss"][0])

# A student built outside the scope: one line at compile.
outside_student = mlp(flavour, (4,))
def student_outside():
    with mirrored.scope():
        d = Distiller(student=outside_student, teacher=mlp(flavour, (16,)))
        d.compile(optimizer="sgd", alpha=0.0)
report["student_error"] = error(student_outside)

# A subclassed teacher outside the scope: tf_keras cannot copy it.
def subclassed_outside():
    subclassed = subclassed_tf_keras_model()  # 3 features, 2 classes
    with mirrored.scope():
        d = Distiller(student=mlp(flavour, (4,), classes=2, features=3),
                      teacher=subclassed, teacher_outputs="logits")
        d.compile(optimizer="sgd", alpha=0.0)
if flavour == "tf_keras":
    report["subclassed_error"] = error(subclassed_outside)
print("REPORT " + json.dumps(report))
"""

_reports = {}


def _strategy_report(flavour):
    """One child process per flavour (two MirroredStrategy objects in one
    process can clash on collective keys), its results shared by the tests."""
    if flavour not in _reports:
        tests = os.path.dirname(os.path.abspath(__file__))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow",
                   PYTHONPATH=os.pathsep.join([os.path.dirname(tests),
                                               os.environ.get("PYTHONPATH", "")]))
        result = subprocess.run(
            [sys.executable, "-c", _STRATEGY_SCRIPT, tests, flavour],
            capture_output=True, text=True, env=env, timeout=600)
        lines = [line for line in result.stdout.splitlines()
                 if line.startswith("REPORT ")]
        assert result.returncode == 0 and lines, result.stderr[-3000:]
        _reports[flavour] = json.loads(lines[-1][len("REPORT "):])
    return _reports[flavour]


@tf_only
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_strategy_teacher_built_outside_the_scope_gives_the_single_device_step(
        flavour):
    report = _strategy_report(flavour)
    assert report["untouched"] and report["same_step"]
    assert report["copied"] == (flavour == "tf_keras")  # Keras 3 reads it as is
    assert np.isfinite(report["ensemble_loss"])


@tf_only
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_strategy_student_built_outside_the_scope_raises_one_line(flavour):
    message = _strategy_report(flavour)["student_error"]
    assert message is not None and "\n" not in message and len(message) < 400
    assert "student" in message and "inside `with strategy.scope():`" in message


@tf_only
def test_strategy_subclassed_tf_keras_teacher_outside_the_scope_raises_one_line():
    message = _strategy_report("tf_keras")["subclassed_error"]
    assert message is not None and "\n" not in message and len(message) < 600
    assert "create the teacher inside `with strategy.scope():`" in message
