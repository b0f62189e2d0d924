"""Quantization-aware training while distilling (TFMOT), incl. prune-preserving QAT.

TFMOT is imported in this process through keras_distill._compat.import_tfmot
(tf.keras and TF_USE_LEGACY_KERAS are left as they were).
"""

import warnings

import keras
import numpy as np
import pytest

from keras_distill import Distiller, pruning, quantization
from keras_distill.export import evaluate_tflite, to_tflite

L = keras.layers


def small_cnn(name="student"):
    init = keras.initializers.GlorotUniform
    return keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        L.Conv2D(8, 3, kernel_initializer=init(1), name="conv"),
        L.BatchNormalization(name="bn"),
        L.ReLU(name="relu"),
        L.MaxPooling2D(name="pool"),
        L.Flatten(name="flatten"),
        L.Dense(16, activation="relu", kernel_initializer=init(2), name="fc"),
        L.Dense(4, kernel_initializer=init(3), name="logits"),
    ], name=name)


from helpers import image_data as data  # noqa: E402
from helpers import subclassed_tf_keras_model  # noqa: E402
from helpers import image_teacher as teacher_model  # noqa: E402


def compile_distiller(distiller):
    import tf_keras

    distiller.compile(
        optimizer=tf_keras.optimizers.Adam(1e-3),
        metrics=[tf_keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        alpha=0.5, temperature=2.0)


def pruned_student(x, y, sparsity=0.5):
    pruned = pruning.prune(small_cnn(), sparsity, schedule="constant")
    distiller = Distiller(pruned, teacher_model())
    compile_distiller(distiller)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0,
                  callbacks=pruning.pruning_callbacks(distiller))
    return pruned


def tflite_kernel_sparsity(path):
    """Fraction of zeros in the int8 weights of conv, fc and logits in a file."""
    from ai_edge_litert.interpreter import Interpreter

    # TFLite layouts: conv (out, h, w, in), fully connected (out, in).
    shapes = {(8, 3, 3, 1): "conv", (16, 72): "fc", (4, 16): "logits"}
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    found = {}
    for detail in interpreter.get_tensor_details():
        name = shapes.get(tuple(detail["shape"]))
        if name is not None and detail["dtype"] == np.int8:
            found[name] = float(np.mean(interpreter.get_tensor(detail["index"]) == 0))
    return found


def test_qat_student_distils_and_exports_full_int8(tmp_path):
    x, y = data(96)
    distiller = quantization.qat_distiller(small_cnn(), teacher_model())
    student = distiller.student
    assert type(student.layers[0]).__name__ == "QuantizeLayer"
    compile_distiller(distiller)
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0, cache_teacher=True)
    assert np.isfinite(history.history["loss"]).all()
    result = to_tflite(student, str(tmp_path / "qat.tflite"), "int8")
    assert result.qat and (result.input_dtype, result.output_dtype) == ("int8", "int8")
    assert result.float_ops == ()
    check = evaluate_tflite(result.path, x, y, reference_model=student)
    assert check.agreement >= 0.95


def test_pruned_student_keeps_sparsity_through_qat_and_into_tflite(tmp_path):
    x, y = data(96)
    pruned = pruned_student(x, y)  # still wrapped: quantize strips it itself
    assert set(pruning.sparsity_report(pruned).values()) == {0.5}
    distiller = quantization.qat_distiller(pruned, teacher_model())
    compile_distiller(distiller)
    distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
    report = pruning.sparsity_report(distiller.student)
    assert report == {"conv": 0.5, "fc": 0.5, "logits": 0.5}
    result = to_tflite(distiller.student, str(tmp_path / "sparse.tflite"), "int8")
    sparsities = tflite_kernel_sparsity(result.path)
    assert set(sparsities) == {"conv", "fc", "logits"}
    assert all(s >= 0.5 for s in sparsities.values()), sparsities


def test_plain_qat_destroys_sparsity_and_warns():
    x, y = data(96)
    stripped = pruning.strip(pruned_student(x, y))
    with pytest.warns(UserWarning, match="destroying the sparsity"):
        qat = quantization.quantize(stripped, preserve_sparsity=False)
    distiller = Distiller(qat, teacher_model())
    compile_distiller(distiller)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(v < 0.4 for v in pruning.sparsity_report(qat).values())


def test_auto_detects_a_stripped_sparse_model():
    x, y = data(32)
    stripped = pruning.strip(pruned_student(x, y))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qat = quantization.quantize(stripped)  # "auto": prune-preserving
    assert pruning.sparsity_report(qat) == {"conv": 0.5, "fc": 0.5, "logits": 0.5}


def test_quantize_chosen_layers_only():
    qat = quantization.quantize(small_cnn(), layers=["fc", "logits"])
    wrapped = {l.name for l in qat.layers if type(l).__name__ == "QuantizeWrapperV2"}
    assert {"quant_fc", "quant_logits"} <= wrapped
    assert "conv" in [l.name for l in qat.layers]  # left float


def test_quantize_does_not_modify_the_student():
    import tf_keras

    from keras_distill.convert import to_tf_keras

    student = to_tf_keras(small_cnn())
    before = [w.numpy().copy() for w in student.weights]
    qat = quantization.quantize(student)
    distiller = Distiller(qat, teacher_model())
    compile_distiller(distiller)
    distiller.fit(*data(32), batch_size=16, epochs=1, verbose=0)
    for w, b in zip(student.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)
    assert isinstance(qat, tf_keras.Model)


# -- float teacher -----------------------------------------------------------------


def test_quantized_teachers_are_refused():
    qat_teacher = quantization.quantize(teacher_model())
    with pytest.raises(ValueError, match="teacher.*is quantized.*float teacher"):
        quantization.check_float_teacher(qat_teacher)
    with pytest.raises(ValueError, match="is quantized"):
        quantization.qat_distiller(small_cnn(), qat_teacher)
    keras3_int8 = teacher_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keras3_int8.quantize("int8")
    with pytest.raises(ValueError, match="is quantized"):
        quantization.check_float_teacher(keras3_int8)
    float_teacher = teacher_model()
    assert quantization.check_float_teacher(float_teacher) is float_teacher
    with pytest.raises(TypeError, match="teacher"):
        quantization.check_float_teacher("teacher")


def test_qat_distiller_accepts_a_qat_student():
    qat = quantization.quantize(small_cnn())
    assert quantization.qat_distiller(qat, teacher_model()).student is qat


# -- errors --------------------------------------------------------------------------


def test_unsupported_layers_are_all_named():
    model = keras.Sequential([keras.Input((8,)), L.Dense(4, name="d"),
                              L.LayerNormalization(name="norm"), L.Dense(2)])
    with pytest.raises(ValueError, match=r"layer .norm. \(LayerNormalization\).*layers=\["):
        quantization.quantize(model)
    # Quantizing only the supported layers works.
    quantization.quantize(model, layers=["d"])


def test_subclassed_and_nested_models_are_refused():
    student = subclassed_tf_keras_model()
    with pytest.raises(ValueError, match="subclassed"):
        quantization.quantize(student)
    inner = keras.Sequential([keras.Input((4,)), L.Dense(4)], name="inner")
    nested = keras.Sequential([keras.Input((4,)), inner, L.Dense(2)])
    with pytest.raises(ValueError, match="'inner'.*nested"):
        quantization.quantize(nested)


def test_other_errors():
    qat = quantization.quantize(small_cnn())
    with pytest.raises(ValueError, match="already quantization-aware"):
        quantization.quantize(qat)
    with pytest.raises(ValueError, match="quantization-aware"):
        pruning.prune(qat, schedule="constant")
    with pytest.raises(ValueError, match="`preserve_sparsity`"):
        quantization.quantize(small_cnn(), preserve_sparsity="yes")
    with pytest.raises(ValueError, match=r"Unknown layer\(s\) \['nope'\]"):
        quantization.quantize(small_cnn(), layers=["nope"])
    with pytest.raises(TypeError, match="Keras model"):
        quantization.quantize(None)
