"""Tests of keras_distill.export: TFLite conversion, LiteRT runs, benchmark."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from keras_distill import datasets, export
from keras_distill.export import (
    QUANTIZATIONS,
    benchmark_tflite,
    evaluate_tflite,
    to_tflite,
)
from tests.helpers import keras_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAVOURS = ("keras", "tf_keras")


def small_cnn(flavour, batch_size=None):
    """Conv + BatchNorm + Dense on 8x8x1 inputs, fixed weights."""
    k = keras_module(flavour)
    init = k.initializers.GlorotUniform
    layers = [
        k.layers.Conv2D(4, 3, activation="relu", kernel_initializer=init(1)),
        k.layers.BatchNormalization(),
        k.layers.Flatten(),
        k.layers.Dense(5, kernel_initializer=init(2)),
    ]
    return k.Sequential([k.Input((8, 8, 1), batch_size=batch_size)] + layers)


def images(n=64, seed=0):
    return np.random.default_rng(seed).random((n, 8, 8, 1)).astype("float32")


def tensor_dtypes(path):
    interpreter = Interpreter(model_path=str(path))
    return {np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}


@pytest.fixture(scope="module")
def models():
    return {flavour: small_cnn(flavour) for flavour in FLAVOURS}


# -- every mode, both flavours ---------------------------------------------------


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_each_quantization_converts_and_runs(models, flavour, quantization, tmp_path):
    model, x = models[flavour], images()
    path = tmp_path / f"{quantization}.tflite"
    result = to_tflite(model, path, quantization, representative_data=x)

    assert result.path == str(path) and result.quantization == quantization
    assert result.size_bytes == os.path.getsize(path) > 0
    assert 0 < result.gzip_size_bytes
    assert result.input_shape == (None, 8, 8, 1)
    assert result.output_shape == (None, 5)
    assert not result.qat and not result.stripped_pruning
    evaluation = evaluate_tflite(path, x, y=np.zeros(len(x)), reference_model=model,
                                 batch_size=24)
    assert evaluation.num_samples == len(x) and evaluation.outputs.shape == (64, 5)
    assert 0 <= evaluation.accuracy <= 1
    spread = float(np.ptp(model.predict(x, verbose=0)))
    tolerance = {"float32": 1e-5, "float16": 1e-2, "dynamic": 0.1, "int8": 0.1}
    assert evaluation.max_abs_diff <= tolerance[quantization] * max(spread, 1)
    assert evaluation.agreement >= (1.0 if quantization == "float32" else 0.85)


def test_sizes_shrink_with_quantization(tmp_path):
    import keras

    # Dynamic-range quantization skips weight tensors under 1024 values.
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(256), keras.layers.Dense(5)])
    size = {q: to_tflite(model, tmp_path / f"{q}.tflite", q,
                         representative_data=images()).size_bytes
            for q in QUANTIZATIONS}
    assert size["float16"] < 0.6 * size["float32"]
    assert size["dynamic"] < 0.35 * size["float32"]
    assert size["int8"] < 0.35 * size["float32"]


# -- int8 -------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_int8_has_int8_input_output_and_weights(models, flavour, tmp_path):
    path = tmp_path / "int8.tflite"
    result = to_tflite(models[flavour], path, "int8", representative_data=images())

    assert (result.input_dtype, result.output_dtype) == ("int8", "int8")
    scale, zero_point = result.input_quantization
    assert scale == pytest.approx(1 / 255, rel=0.05) and zero_point == -128  # [0, 1]
    assert result.output_quantization[0] > 0
    assert result.float_ops == ()
    assert tensor_dtypes(path) <= {"int8", "int32"}  # int32: biases, shapes
    ops = Interpreter(model_path=str(path))._get_ops_details()
    weighted = [op for op in ops if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(weighted) == 2
    for op in weighted:  # input, weights are int8
        assert [np.dtype(t).name for t in op["operand_types"][:2]] == ["int8", "int8"]


def test_int8_with_float_io(models, tmp_path):
    path = tmp_path / "int8.tflite"
    result = to_tflite(models["keras"], path, "int8", representative_data=images(),
                       int8_io=False)
    assert (result.input_dtype, result.output_dtype) == ("float32", "float32")
    assert result.input_quantization == (0.0, 0) and result.float_ops == ()
    evaluation = evaluate_tflite(path, images(), reference_model=models["keras"])
    assert evaluation.agreement >= 0.85


def test_int8_reports_ops_left_in_float(tmp_path):
    import keras

    class Sine(keras.layers.Layer):
        def call(self, x):
            return tf.sin(x)

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), Sine(),
                              keras.layers.Dense(2)])
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    result = to_tflite(model, tmp_path / "m.tflite", "int8", representative_data=x)
    assert result.float_ops == ("SIN",)


def test_representative_sampling_is_deterministic(models, tmp_path):
    x = images(500)
    first = to_tflite(models["keras"], tmp_path / "a.tflite", "int8",
                      representative_data=x, num_representative=50)
    second = to_tflite(models["keras"], tmp_path / "b.tflite", "int8",
                       representative_data=x, num_representative=50)
    assert (tmp_path / "a.tflite").read_bytes() == (tmp_path / "b.tflite").read_bytes()
    assert first.input_quantization == second.input_quantization
    batches = list(export._representative_dataset(models["keras"], x, 50)())
    assert len(batches) == 50 and batches[0][0].shape == (1, 8, 8, 1)
    assert len(list(export._representative_dataset(models["keras"], x[:7], 50)())) == 7


def test_representative_data_may_be_float64(models, tmp_path):
    result = to_tflite(models["keras"], tmp_path / "m.tflite", "int8",
                       representative_data=images().astype("float64"))
    assert result.input_dtype == "int8"


# -- real data --------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_student():
    if datasets.find_fashion_mnist() is None:
        pytest.skip("Fashion-MNIST is not on this machine")
    import keras

    from keras_distill.models import build_student

    (x, y), (xt, yt) = datasets.load_fashion_mnist(allow_download=False)
    x = (x[:4000, ..., None] / np.float32(255)).astype("float32")
    xt = (xt[..., None] / np.float32(255)).astype("float32")
    keras.utils.set_random_seed(0)
    student = build_student("cnn")
    student.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    student.fit(x, y[:4000], batch_size=64, epochs=3, verbose=0)
    return student, x, xt, yt


def test_int8_accuracy_on_real_data_close_to_keras(fashion_student, tmp_path):
    student, x, xt, yt = fashion_student
    keras_accuracy = float(np.mean(
        np.argmax(student.predict(xt, batch_size=1000, verbose=0), -1) == yt))
    assert keras_accuracy > 0.7  # the student did learn

    path = tmp_path / "student.tflite"
    to_tflite(student, path, "int8", representative_data=x)
    result = evaluate_tflite(path, xt, yt, reference_model=student, batch_size=1000)

    assert result.num_samples == 10_000
    assert abs(result.accuracy - keras_accuracy) <= 0.01
    assert result.agreement >= 0.97


# -- running files ------------------------------------------------------------------


def test_evaluate_fixed_batch_one_model_runs_per_sample(tmp_path):
    model = small_cnn("keras", batch_size=1)
    path = tmp_path / "m.tflite"
    result = to_tflite(model, path)
    assert result.input_shape == (1, 8, 8, 1)
    x = images(5)
    evaluation = evaluate_tflite(path, x, reference_model=model)
    assert evaluation.max_abs_diff < 1e-5 and evaluation.outputs.shape == (5, 5)


def test_evaluate_accepts_one_hot_labels(models, tmp_path):
    path = tmp_path / "m.tflite"
    to_tflite(models["keras"], path)
    x = images(10)
    predictions = np.argmax(models["keras"].predict(x, verbose=0), -1)
    assert evaluate_tflite(path, x, np.eye(5)[predictions]).accuracy == 1.0


def test_benchmark(models, tmp_path):
    path = tmp_path / "m.tflite"
    to_tflite(models["keras"], path, "int8", representative_data=images())
    result = benchmark_tflite(path, num_threads=2, runs=30, warmup=3)
    assert 0 < result.median_us <= result.p90_us
    assert (result.runs, result.warmup, result.num_threads) == (30, 3, 2)


# -- atomic writes -----------------------------------------------------------------


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != "model.tflite")


def test_failed_conversion_leaves_existing_file_intact(models, tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous export")

    def broken_convert(self):
        raise RuntimeError("simulated converter crash")

    converter_class = type(tf.lite.TFLiteConverter.from_keras_model(models["keras"]))
    monkeypatch.setattr(converter_class, "convert", broken_convert)
    with pytest.raises(ValueError, match="simulated converter crash") as info:
        to_tflite(models["keras"], path)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert path.read_bytes() == b"previous export"
    assert leftovers(tmp_path) == []


def test_failed_write_leaves_existing_file_intact(models, tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous export")

    def broken_replace(src, dst):
        raise OSError("simulated disk failure")

    monkeypatch.setattr(export.os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated disk failure"):
        to_tflite(models["keras"], path)
    assert path.read_bytes() == b"previous export"
    assert leftovers(tmp_path) == []


def test_export_replaces_existing_file(models, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous export")
    result = to_tflite(models["keras"], path)
    assert path.read_bytes()[4:8] == b"TFL3" and result.size_bytes > 100
    assert leftovers(tmp_path) == []


# -- errors --------------------------------------------------------------------------


def test_unknown_quantization(models, tmp_path):
    with pytest.raises(ValueError, match=r"`quantization`.*'int4'"):
        to_tflite(models["keras"], tmp_path / "m.tflite", "int4")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_int8_needs_representative_data(models, flavour, tmp_path):
    with pytest.raises(ValueError, match="representative_data"):
        to_tflite(models[flavour], tmp_path / "m.tflite", "int8")
    assert not (tmp_path / "m.tflite").exists()


def test_representative_data_of_wrong_shape(models, tmp_path):
    bad = np.zeros((20, 28, 28, 1), "float32")
    with pytest.raises(ValueError) as info:
        to_tflite(models["keras"], tmp_path / "m.tflite", "int8", representative_data=bad)
    message = str(info.value)
    assert "`representative_data`" in message
    assert "(20, 28, 28, 1)" in message and "(None, 8, 8, 1)" in message


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_representative_data_of_wrong_dtype(models, flavour, tmp_path):
    raw = (images() * 255).astype("uint8")  # forgot to scale
    with pytest.raises(ValueError) as info:
        to_tflite(models[flavour], tmp_path / "m.tflite", "int8", representative_data=raw)
    message = str(info.value)
    assert "`representative_data`" in message
    assert "uint8" in message and "float32" in message


def test_representative_data_not_an_array(models, tmp_path):
    with pytest.raises(TypeError, match="representative_data"):
        to_tflite(models["keras"], tmp_path / "m.tflite", "int8",
                  representative_data=[[0.0] * 64])


def test_num_representative_must_be_positive(models, tmp_path):
    with pytest.raises(ValueError, match="num_representative"):
        to_tflite(models["keras"], tmp_path / "m.tflite", "int8",
                  representative_data=images(), num_representative=0)


def test_path_in_missing_directory(models, tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "m.tflite"
    with pytest.raises(ValueError, match=r"`path`.*does not exist"):
        to_tflite(models["keras"], path)


def test_path_is_a_directory(models, tmp_path):
    with pytest.raises(ValueError, match=r"`path`.*is a directory"):
        to_tflite(models["keras"], tmp_path)


@pytest.mark.parametrize("not_a_model", [None, "model.keras", lambda x: x])
def test_not_a_keras_model(not_a_model, tmp_path):
    with pytest.raises(TypeError, match="`model` must be a Keras model"):
        to_tflite(not_a_model, tmp_path / "m.tflite")


def test_unbuilt_model(tmp_path):
    import keras

    with pytest.raises(ValueError, match="not built"):
        to_tflite(keras.Sequential([keras.layers.Dense(2)]), tmp_path / "m.tflite")


def test_converter_rejection_names_op_and_layer(tmp_path):
    import keras

    class Determinant(keras.layers.Layer):
        def call(self, x):
            return tf.linalg.det(tf.reshape(x, (-1, 2, 2)))[:, None] + x

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4),
                              Determinant(name="odd_layer"), keras.layers.Dense(2)])
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError) as info:
        to_tflite(model, path)
    message = str(info.value)
    assert "`model`" in message
    assert "MatrixDeterminant" in message and "odd_layer" in message
    assert info.value.__cause__ is not None
    assert not path.exists()


def test_evaluate_errors(models, tmp_path):
    path = tmp_path / "m.tflite"
    with pytest.raises(FileNotFoundError, match="`path`"):
        evaluate_tflite(path, images())
    to_tflite(models["keras"], path)
    with pytest.raises(ValueError, match=r"`x`.*\(3, 28, 28, 1\).*\(None, 8, 8, 1\)"):
        evaluate_tflite(path, np.zeros((3, 28, 28, 1), "float32"))
    with pytest.raises(ValueError, match=r"`x`.*uint8"):
        evaluate_tflite(path, np.zeros((3, 8, 8, 1), "uint8"))
    with pytest.raises(ValueError, match="`y`"):
        evaluate_tflite(path, images(4), y=np.zeros(3))
    with pytest.raises(TypeError, match="`reference_model`"):
        evaluate_tflite(path, images(4), reference_model="model")
    with pytest.raises(ValueError, match="`batch_size`"):
        evaluate_tflite(path, images(4), batch_size=0)
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ValueError, match="not a TFLite model"):
        evaluate_tflite(tmp_path / "junk.tflite", images(4))


def test_benchmark_errors(models, tmp_path):
    path = tmp_path / "m.tflite"
    to_tflite(models["keras"], path)
    for kwargs in ({"num_threads": 0}, {"runs": 0}, {"warmup": -1}):
        with pytest.raises(ValueError, match=f"`{next(iter(kwargs))}`"):
            benchmark_tflite(path, **kwargs)


# -- TFMOT (own process: importing TFMOT switches tf.keras to tf_keras) -----------

TFMOT_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tf_keras
    from keras_distill.export import evaluate_tflite, to_tflite

    def model():
        init = tf_keras.initializers.GlorotUniform
        return tf_keras.Sequential([
            tf_keras.layers.Conv2D(8, 3, activation="relu", input_shape=(8, 8, 1),
                                   kernel_initializer=init(1)),
            tf_keras.layers.Flatten(),
            tf_keras.layers.Dense(32, activation="relu", kernel_initializer=init(2)),
            tf_keras.layers.Dense(4, kernel_initializer=init(3)),
        ])

    rng = np.random.default_rng(0)
    x = rng.random((256, 8, 8, 1)).astype("float32")
    y = (x[:, :4, :4].mean(axis=(1, 2, 3)) * 8).astype(int) % 4
    out = {}
    dense = model()
    dense_export = to_tflite(dense, sys.argv[1] + "/dense.tflite")
    out["tfmot_imported_for_plain_model"] = "tensorflow_model_optimization" in sys.modules

    import tensorflow_model_optimization as tfmot
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        model(), pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.8, 0, frequency=1))
    pruned.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, epochs=2, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    result = to_tflite(pruned, sys.argv[1] + "/pruned.tflite")
    check = evaluate_tflite(result.path, x, reference_model=pruned)
    out["pruned"] = dict(stripped=result.stripped_pruning, size=result.size_bytes,
                         gzip=result.gzip_size_bytes, dense_size=dense_export.size_bytes,
                         dense_gzip=dense_export.gzip_size_bytes,
                         still_wrapped=any(type(m).__name__ == "PruneLowMagnitude"
                                           for m in pruned.submodules),
                         agreement=check.agreement, max_abs_diff=check.max_abs_diff)

    qat = tfmot.quantization.keras.quantize_model(model())
    qat.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, epochs=2, verbose=0)
    for name, data in (("qat", None), ("qat_calibrated", x)):
        result = to_tflite(qat, sys.argv[1] + f"/{name}.tflite", "int8",
                           representative_data=data)
        check = evaluate_tflite(result.path, x, reference_model=qat)
        out[name] = dict(qat=result.qat, input_dtype=result.input_dtype,
                         output_dtype=result.output_dtype, float_ops=result.float_ops,
                         input_quantization=result.input_quantization,
                         agreement=check.agreement)
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def tfmot_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfmot")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run([sys.executable, "-c", TFMOT_SCRIPT, str(folder)],
                         capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_tfmot_is_not_imported_for_plain_models(tfmot_results):
    assert tfmot_results["tfmot_imported_for_plain_model"] is False


def test_pruned_tf_keras_model_is_stripped_and_exports(tfmot_results):
    pruned = tfmot_results["pruned"]
    assert pruned["stripped"] and pruned["still_wrapped"]  # the user's model kept
    assert pruned["size"] == pytest.approx(pruned["dense_size"], rel=0.05)
    assert pruned["gzip"] < 0.6 * pruned["dense_gzip"]  # 80% zeros compress
    assert pruned["agreement"] == 1.0 and pruned["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("name", ["qat", "qat_calibrated"])
def test_qat_model_exports_full_int8_with_learned_ranges(tfmot_results, name):
    qat = tfmot_results[name]
    assert qat["qat"] and (qat["input_dtype"], qat["output_dtype"]) == ("int8", "int8")
    assert qat["float_ops"] == []
    assert qat["agreement"] >= 0.95
    # The ranges learned in training, whatever the calibration data says.
    assert qat["input_quantization"] == tfmot_results["qat"]["input_quantization"]
