"""Tests of the export-path additions: Flex detection, XNNPACK on/off, batch timing.

(bench/export_paths.py compares the export paths; docs/export_paths.md says
why int8 files are slow with XNNPACK on CPUs with AMX.)
"""

import os

import keras
import numpy as np
import pytest

from keras_distill import export, litert
from keras_distill.export import benchmark_tflite, evaluate_tflite, flex_ops, to_tflite

L = keras.layers


def det_model():
    """A model whose determinant has no TFLite builtin: it needs Flex ops."""
    import tensorflow as tf

    return keras.Sequential([keras.Input((4,)), L.Reshape((2, 2)),
                             L.Lambda(lambda t: tf.linalg.det(t)[:, None])])


@pytest.fixture(scope="module")
def flex_content():
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(det_model())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    return converter.convert()


@pytest.fixture(scope="module")
def dense_file(tmp_path_factory):
    model = keras.Sequential([keras.Input((8,)), L.Dense(16, activation="relu"),
                              L.Dense(3)])
    path = tmp_path_factory.mktemp("dense") / "dense.tflite"
    to_tflite(model, path)
    return model, str(path)


# -- flex_ops ----------------------------------------------------------------------


def test_flex_ops_names_the_ops_from_a_path_or_bytes(flex_content, dense_file, tmp_path):
    path = tmp_path / "flex.tflite"
    path.write_bytes(flex_content)
    assert flex_ops(flex_content) == ("FlexMatrixDeterminant",)
    assert flex_ops(path) == flex_ops(str(path)) == ("FlexMatrixDeterminant",)
    assert flex_ops(dense_file[1]) == ()
    assert litert.flex_ops is flex_ops and "flex_ops" in export.__all__


def test_flex_ops_refuses_what_is_not_a_tflite_model(tmp_path):
    text = tmp_path / "notes.tflite"
    text.write_text("not a model at all")
    with pytest.raises(ValueError, match="not a TFLite model"):
        flex_ops(text)
    with pytest.raises(FileNotFoundError, match="no such file"):
        flex_ops(tmp_path / "missing.tflite")
    with pytest.raises(TypeError, match="path .* or its content as bytes"):
        flex_ops(3)


def test_to_tflite_names_flex_ops_from_the_file_and_writes_nothing(
        tmp_path, monkeypatch):
    import tensorflow as tf

    make_converter = export._converter

    def with_flex(*args):  # as if the converter had fallen back to Flex ops
        converter = make_converter(*args)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                               tf.lite.OpsSet.SELECT_TF_OPS]
        return converter

    def not_reached(*args):
        raise AssertionError("the Flex ops are read from the file, not the runtime")

    monkeypatch.setattr(export, "_converter", with_flex)
    monkeypatch.setattr(export, "_prepared", not_reached)
    with pytest.raises(ValueError, match=r"nothing was written.*\(\"Flex\"\) ops "
                                         r"FlexMatrixDeterminant.*standalone LiteRT"):
        to_tflite(det_model(), tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == []


@pytest.mark.tensorflow  # Keras's LiteRT export needs the TensorFlow backend
def test_a_keras_export_needing_flex_is_refused_before_running(tmp_path):
    # Keras 3's model.export(format="litert") allows SELECT_TF_OPS by default.
    path = str(tmp_path / "keras_export.tflite")
    det_model().export(path, format="litert", verbose=False)
    assert flex_ops(path) == ("FlexMatrixDeterminant",)
    for run in (lambda: evaluate_tflite(path, np.ones((2, 4), "float32")),
                lambda: benchmark_tflite(path, runs=1, warmup=0, xnnpack=False)):
        with pytest.raises(ValueError, match=r"FlexMatrixDeterminant, which standalone "
                                             r"LiteRT cannot run.*model\.export"):
            run()


# -- xnnpack=False and batch_size ----------------------------------------------------


def test_xnnpack_false_runs_the_builtin_kernels(dense_file):
    _, path = dense_file
    with_delegate = litert._interpreter(path, 1, xnnpack=True)._get_ops_details()
    builtin = litert._interpreter(path, 1, xnnpack=False)._get_ops_details()
    assert "DELEGATE" in {op["op_name"] for op in with_delegate}
    assert "DELEGATE" not in {op["op_name"] for op in builtin}


def test_evaluate_with_and_without_xnnpack_agree_on_float32(dense_file):
    model, path = dense_file
    x = np.random.default_rng(0).normal(size=(40, 8)).astype("float32")
    on = evaluate_tflite(path, x, reference_model=model)
    off = evaluate_tflite(path, x, reference_model=model, xnnpack=False)
    assert on.agreement == off.agreement == 1.0
    np.testing.assert_allclose(on.outputs, off.outputs, atol=1e-5)


def test_benchmark_records_batch_size_and_kernels(dense_file):
    _, path = dense_file
    b = benchmark_tflite(path, runs=5, warmup=1, batch_size=16, xnnpack=False)
    assert (b.batch_size, b.xnnpack, b.num_threads) == (16, False, 1)
    assert 0 < b.median_us <= b.p90_us
    default = benchmark_tflite(path, runs=5, warmup=1)
    assert (default.batch_size, default.xnnpack) == (1, True)


def test_benchmark_refuses_bad_batch_size_and_xnnpack(dense_file, tmp_path):
    _, path = dense_file
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
            benchmark_tflite(path, runs=1, batch_size=bad)
    with pytest.raises(TypeError, match="`xnnpack` must be True or False"):
        benchmark_tflite(path, runs=1, xnnpack="no")
    with pytest.raises(TypeError, match="`xnnpack` must be True or False"):
        evaluate_tflite(path, np.ones((2, 8), "float32"), xnnpack=None)
    fixed = keras.Sequential([keras.Input((8,), batch_size=4), L.Dense(3)])
    fixed_path = tmp_path / "fixed.tflite"
    to_tflite(fixed, fixed_path)
    assert benchmark_tflite(fixed_path, runs=2, warmup=0).batch_size == 4
    assert benchmark_tflite(fixed_path, runs=2, warmup=0, batch_size=4).batch_size == 4
    with pytest.raises(ValueError, match="fixed batch dimension of 4"):
        benchmark_tflite(fixed_path, runs=1, batch_size=8)
