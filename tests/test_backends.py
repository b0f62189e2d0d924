"""The same distiller on every Keras 3 backend (run under TF and under JAX).

These tests run in both CI passes: the default TensorFlow one and the
``KERAS_BACKEND=jax`` one. The cross-backend test starts one subprocess per
backend and compares their numbers.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_distill import Distiller, FeatureDistiller, FeaturePair, terms
from helpers import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mlp(seed, width=16, name=None):
    init = keras.initializers.GlorotUniform
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(width, activation="relu", name="hidden",
                           kernel_initializer=init(seed)),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dense(3, name="logits", kernel_initializer=init(seed + 1)),
    ], name=name)


def weights(model):
    return [np.array(keras.ops.convert_to_numpy(w), copy=True) for w in model.weights]


@pytest.mark.parametrize("feature", [False, True])
def test_only_the_student_trains_even_under_adamw_weight_decay(feature):
    """fit/evaluate/predict train and use the student; the teacher (and its
    BatchNorm statistics) stays bit-identical although AdamW decays every
    variable it is given."""
    x, y = data(64)
    teacher, student = mlp(0, 32, "teacher"), mlp(5, 16, "student")
    before_teacher, before_student = weights(teacher), weights(student)
    if feature:
        d = FeatureDistiller(student, teacher, pairs=[
            FeaturePair("hidden", "hidden", adapter="auto")])
    else:
        d = Distiller(student, teacher)
    assert not any(id(v) in {id(w) for w in teacher.weights}
                   for v in d.trainable_variables)
    d.compile(optimizer=keras.optimizers.AdamW(0.05, weight_decay=0.5),
              student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
                  from_logits=True),
              metrics=[keras.metrics.SparseCategoricalAccuracy()],
              alpha=0.5, temperature=2.0)
    history = d.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    for a, b in zip(before_teacher, weights(teacher)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b)
               for a, b in zip(before_student, weights(student)))
    logs = d.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "student_loss", "sparse_categorical_accuracy"}
    np.testing.assert_allclose(d.predict(x, verbose=0),
                               student.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    for a, b in zip(before_teacher, weights(teacher)):
        np.testing.assert_array_equal(a, b)


def test_label_free_terms_work_inside_keras_distillation():
    """Our logit terms are keras.distillation.DistillationLoss objects."""
    x, y = data(32)
    teacher, student = mlp(0, 32), mlp(5, 16)
    term = terms.KD(temperature=4.0)
    assert isinstance(term, keras.distillation.DistillationLoss)
    theirs = keras.distillation.Distiller(
        teacher=teacher, student=student, distillation_losses=term,
        student_loss_weight=0.0)
    theirs.compile(optimizer=keras.optimizers.SGD(0.0),
                   loss="sparse_categorical_crossentropy")
    logs = theirs.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    t = keras.ops.convert_to_numpy(teacher(x, training=False))
    s = keras.ops.convert_to_numpy(student(x, training=False))
    from helpers import log_softmax

    log_p, log_q = log_softmax(t / 4.0), log_softmax(s / 4.0)
    want = (np.exp(log_p) * (log_p - log_q)).sum(-1).mean() * 16.0
    np.testing.assert_allclose(logs["distillation_loss"], want, rtol=1e-5)
    # A term object also trains there.
    theirs.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = theirs.fit(x, y, epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]


_SCRIPT = r"""
import json, sys
import numpy as np, keras
sys.path.insert(0, {tests!r})
from helpers import data
from test_backends import mlp
from keras_distill import Distiller
x, y = data(64)
def numpy_weights(model, seed):  # seeded Keras initializers differ by backend
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32")
                       if w.name in ("kernel", "bias", "gamma", "beta") else
                       np.abs(rng.normal(1, 0.2, w.shape)).astype("float32")
                       if w.name == "moving_variance" else
                       rng.normal(0, 0.2, w.shape).astype("float32")
                       for w in model.weights])
    return model
teacher, student = numpy_weights(mlp(0, 32), 0), numpy_weights(mlp(5, 16), 1)
d = Distiller(student, teacher)
d.compile(optimizer=keras.optimizers.SGD(0.0), alpha=0.5, temperature=2.0,
          student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
out = {{"backend": keras.backend.backend(),
        "evaluate": d.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)}}
d2 = Distiller(numpy_weights(mlp(5, 16), 1), teacher)
d2.compile(optimizer=keras.optimizers.SGD(0.0), alpha=0.0, temperature=2.0)
out["evaluate_unlabelled"] = d2.evaluate(x, batch_size=16, verbose=0, return_dict=True)
out["fit"] = {{k: v[0] for k, v in d.fit(x, y, batch_size=16, epochs=1, shuffle=False,
                                      verbose=0).history.items()}}
print("RESULT " + json.dumps(out))
"""


def _run(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    script = _SCRIPT.format(tests=os.path.join(ROOT, "tests"))
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    assert result["backend"] == backend
    return result


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                    reason="run once, from the TensorFlow pass")
def test_jax_gives_the_tensorflow_losses():
    """evaluate (labelled and not) and the first fit epoch agree within 1e-4."""
    tf_result, jax_result = _run("tensorflow"), _run("jax")
    for key in ("evaluate", "evaluate_unlabelled", "fit"):
        assert set(tf_result[key]) == set(jax_result[key]), key
        for name, value in tf_result[key].items():
            np.testing.assert_allclose(jax_result[key][name], value, atol=1e-4,
                                       err_msg=f"{key}/{name}")
