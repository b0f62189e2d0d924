"""Issue #12, conversion, export, pruning and quantization: every bad input
gets a clear error at the point of misuse, no silently wrong number, no
half-written or mis-placed file."""

import os
import subprocess

import keras
import numpy as np
import pytest

from helpers import data, keras_module, mlp
from keras_distill import Distiller, FeatureDistiller, FeaturePair, convert, export
from keras_distill import pruning, quantization
from keras_distill.convert import to_tf_keras
from keras_distill.export import benchmark_tflite, evaluate_tflite, to_tflite

FLAVOURS = ["keras", "tf_keras"]
L = keras.layers


def named_mlp(flavour, width=8, seed=0):
    """A Sequential MLP of the flavour with layers named hidden1 and logits."""
    k = keras_module(flavour)
    init = k.initializers.GlorotUniform
    return k.Sequential([
        k.Input((8,)),
        k.layers.Dense(width, activation="relu", name="hidden1",
                       kernel_initializer=init(seed)),
        k.layers.Dense(3, name="logits", kernel_initializer=init(seed + 1)),
    ])


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder no file can be created in, even by root (``chattr +i``)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    try:
        (folder / "probe").write_bytes(b"")
    except OSError:
        pass
    else:  # root ignores permissions: make the folder immutable instead
        (folder / "probe").unlink()
        immutable = subprocess.run(["chattr", "+i", str(folder)],
                                   capture_output=True).returncode == 0
        if not immutable:
            pytest.skip("cannot make a folder read-only here")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def flex_file(path):
    """A .tflite file needing TensorFlow ("Flex") ops: MatrixDeterminant."""
    import tensorflow as tf

    model = keras.Sequential([keras.Input((4,)), L.Reshape((2, 2)),
                              L.Lambda(lambda t: tf.linalg.det(t)[:, None])])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    path.write_bytes(converter.convert())
    return str(path)


# -- #4: to_tf_keras computes what the Keras 3 model computes ------------------


def dense_then(activation):
    return keras.Sequential([
        keras.Input((4,)),
        L.Dense(6, activation=activation, name="dense",
                kernel_initializer=keras.initializers.GlorotUniform(0)),
        L.Activation(activation, name="act"),
    ])


def assert_converts_to_same_values(model):
    x = np.random.default_rng(0).normal(0, 3, (32, 4)).astype("float32")
    converted = to_tf_keras(model)
    np.testing.assert_allclose(converted.predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    return converted


@pytest.mark.tensorflow
def test_to_tf_keras_hard_sigmoid_keeps_the_keras3_formula():
    # Keras 3: relu6(x + 3) / 6; tf_keras: clip(0.2 x + 0.5, 0, 1).
    assert_converts_to_same_values(dense_then("hard_sigmoid"))


@pytest.mark.tensorflow
@pytest.mark.parametrize("activation", ["hard_silu", "hard_swish", "hard_tanh",
                                        "log_sigmoid", "tanh_shrink", "celu",
                                        "squareplus", "soft_shrink", "hard_shrink"])
def test_to_tf_keras_converts_activations_tf_keras_lacks(activation):
    assert_converts_to_same_values(dense_then(activation))


@pytest.mark.tensorflow
def test_to_tf_keras_converts_a_tf_nn_softmax_activation():
    import tensorflow as tf

    assert_converts_to_same_values(dense_then(tf.nn.softmax))


@pytest.mark.tensorflow
def test_to_tf_keras_refuses_a_result_whose_outputs_differ(monkeypatch):
    # A conversion gone wrong (here: weights not copied) must never be returned.
    model = dense_then("relu")
    kernel, bias = model.get_layer("dense").get_weights()
    model.get_layer("dense").set_weights([kernel + 0.5, bias + 0.5])  # not the init
    monkeypatch.setattr(convert._Converter, "_copy_weights",
                        staticmethod(lambda source, target: None))
    with pytest.raises(ValueError, match=r"refused its result.*other values than "
                                         r"'sequential"):
        to_tf_keras(model)


@pytest.mark.tensorflow
def test_hard_sigmoid_student_prunes_strips_and_exports_with_keras3_values(tmp_path):
    model = dense_then("hard_sigmoid")
    stripped = pruning.strip(pruning.prune(model, 0.5, schedule="constant"))
    x = np.random.default_rng(1).normal(0, 3, (16, 4)).astype("float32")
    np.testing.assert_allclose(stripped.predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    path = tmp_path / "m.tflite"
    to_tflite(stripped, path)
    assert evaluate_tflite(path, x, reference_model=model).max_abs_diff < 1e-5


# -- #5: pruning says what it cannot prune ----------------------------------------


def mobile_like():
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        L.Conv2D(8, 3, name="conv"),                  # 3*3*3*8 = 216 prunable
        L.DepthwiseConv2D(3, name="dw"),              # 3*3*8 = 72 dense
        L.SeparableConv2D(8, 3, name="sep"),          # 72 dense + 8*8 = 64 prunable
        L.Flatten(),
        L.Dense(4, name="fc"),                        # 2*2*8*4 = 128 prunable
    ])


def test_prune_warns_naming_depthwise_layers_and_the_sparsity_reached():
    expected = 0.5 * (216 + 64 + 128) / (216 + 72 + 72 + 64 + 128)
    with pytest.warns(UserWarning) as record:
        pruned = pruning.prune(mobile_like(), 0.5, schedule="constant", frequency=1)
    message = " ".join(str(w.message) for w in record)
    assert "'dw' (DepthwiseConv2D: depthwise_kernel)" in message
    assert "'sep' (SeparableConv2D: depthwise_kernel)" in message
    assert f"{expected:.1%} zeros overall" in message and "not the 50.0% asked" in message
    # ... and that is what training reaches.
    x = np.random.default_rng(0).random((8, 8, 8, 3)).astype("float32")
    y = np.random.default_rng(0).integers(0, 4, 8)
    pruned.compile("sgd", keras_module("tf_keras").losses.SparseCategoricalCrossentropy(
        from_logits=True))
    pruned.fit(x, y, epochs=1, batch_size=4, verbose=0,
               callbacks=pruning.pruning_callbacks(pruned))
    assert pruning.total_sparsity(pruning.strip(pruned)) == pytest.approx(expected, abs=0.01)


# -- #13: the destination is checked before any work --------------------------------


@pytest.mark.tensorflow
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_to_tflite_into_read_only_folder_names_it_before_converting(
        flavour, read_only_dir, monkeypatch):
    def must_not_convert(*args):
        raise AssertionError("converted before checking the destination")

    monkeypatch.setattr(export, "_convert", must_not_convert)
    with pytest.raises(ValueError, match=rf"`path`=.*cannot be written: its folder "
                                         rf"{read_only_dir}"):
        to_tflite(mlp(flavour), read_only_dir / "m.tflite")
    assert os.listdir(read_only_dir) == []


def test_sensitivity_into_read_only_folder_refuses_before_measuring(read_only_dir):
    calls = []

    def accuracy(model):
        calls.append(1)
        return 1.0

    with pytest.raises(ValueError, match=rf"`path`=.*cannot be written: its folder "
                                         rf"{read_only_dir}"):
        pruning.sensitivity(mlp("keras"), accuracy, path=read_only_dir / "s.json")
    assert calls == []


def test_plot_sensitivity_into_read_only_folder_names_it(read_only_dir):
    results = {"baseline": 1.0, "layers": {"a": {"0.5": {"loss": 0.1}}}}
    with pytest.raises(ValueError, match=rf"`png_path`=.*its folder {read_only_dir}"):
        pruning.plot_sensitivity(results, read_only_dir / "s.png")


def test_plot_sensitivity_into_missing_folder_creates_it(tmp_path):
    results = {"baseline": 1.0, "layers": {"a": {"0.5": {"loss": 0.1}}}}
    path = tmp_path / "new" / "s.png"
    pruning.plot_sensitivity(results, path)
    assert path.stat().st_size > 0


# -- #14: a distiller where a model is expected ----------------------------------------


def make_distiller(kind, flavour):
    student, teacher = named_mlp(flavour), named_mlp(flavour, width=16, seed=5)
    if kind == "Distiller":
        return Distiller(student, teacher)
    return FeatureDistiller(student, teacher,
                            pairs=[FeaturePair("hidden1", "hidden1", adapter="dense")])


CALLS = {
    "to_tflite": lambda d, tmp: to_tflite(d, tmp / "m.tflite"),
    "to_tf_keras": lambda d, tmp: to_tf_keras(d),
    "prune": lambda d, tmp: pruning.prune(d, 0.5, schedule="constant"),
    "strip": lambda d, tmp: pruning.strip(d),
    "sparsity_report": lambda d, tmp: pruning.sparsity_report(d),
    "total_sparsity": lambda d, tmp: pruning.total_sparsity(d),
    "sensitivity": lambda d, tmp: pruning.sensitivity(d, lambda m: 1.0, path=None),
    "quantize": lambda d, tmp: quantization.quantize(d),
    "check_float_teacher": lambda d, tmp: quantization.check_float_teacher(d),
    "qat_distiller": lambda d, tmp: quantization.qat_distiller(d, named_mlp("keras")),
    "evaluate_tflite": lambda d, tmp: evaluate_tflite(tmp / "unused.tflite", data()[0],
                                                      reference_model=d),
}


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("kind", ["Distiller", "FeatureDistiller"])
@pytest.mark.parametrize("function", sorted(CALLS))
def test_a_distiller_passed_as_model_says_pass_distiller_student(
        function, kind, flavour, tmp_path):
    distiller = make_distiller(kind, flavour)
    with pytest.raises(TypeError, match=rf"is a {kind} .*pass `distiller\.student`"):
        CALLS[function](distiller, tmp_path)


# -- more bad inputs: to_tflite ------------------------------------------------------


@pytest.mark.tensorflow
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_to_tflite_refuses_nan_weights_naming_them(flavour, tmp_path):
    model = mlp(flavour)
    weights = model.layers[-1].get_weights()
    weights[0][0, 0] = np.nan
    model.layers[-1].set_weights(weights)
    with pytest.raises(ValueError, match=r"NaN or infinite weights \(.*kernel"):
        to_tflite(model, tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.tensorflow
def test_to_tflite_refuses_representative_data_with_nan(tmp_path):
    x, _ = data()
    x[3, 2] = np.inf
    with pytest.raises(ValueError, match=r"`representative_data` holds 1 NaN or infinite"):
        to_tflite(mlp("keras"), tmp_path / "m.tflite", "int8", representative_data=x)


@pytest.mark.tensorflow
def test_to_tflite_refuses_fewer_representative_samples_than_the_fixed_batch(tmp_path):
    # Before: calibration saw no batch and int8 silently came out with float I/O.
    model = keras.Sequential([keras.Input((8,), batch_size=16), L.Dense(3)])
    with pytest.raises(ValueError, match=r"gives 5 sample\(s\).*fixed batch size of 16"):
        to_tflite(model, tmp_path / "m.tflite", "int8",
                  representative_data=data()[0][:5])


@pytest.mark.tensorflow
def test_to_tflite_int8_io_must_be_a_bool(tmp_path):
    with pytest.raises(TypeError, match="`int8_io` must be True or False"):
        to_tflite(mlp("keras"), tmp_path / "m.tflite", "int8",
                  representative_data=data()[0], int8_io="no")


@pytest.mark.tensorflow
def test_to_tflite_num_representative_true_is_refused(tmp_path):
    with pytest.raises(ValueError, match="`num_representative` must be a positive"):
        to_tflite(mlp("keras"), tmp_path / "m.tflite", "int8",
                  representative_data=data()[0], num_representative=True)


@pytest.mark.tensorflow
def test_to_tflite_refuses_a_file_litert_cannot_run_and_writes_nothing(
        tmp_path, monkeypatch):
    import tensorflow as tf

    make_converter = export._converter

    def with_flex(*args):  # as if the converter had fallen back to Flex ops
        converter = make_converter(*args)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                               tf.lite.OpsSet.SELECT_TF_OPS]
        return converter

    monkeypatch.setattr(export, "_converter", with_flex)
    model = keras.Sequential([keras.Input((4,)), L.Reshape((2, 2)),
                              L.Lambda(lambda t: tf.linalg.det(t)[:, None])])
    with pytest.raises(ValueError, match=r"LiteRT cannot run, so nothing was written.*"
                                         r"Flex.*FlexMatrixDeterminant"):
        to_tflite(model, tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == []


# -- more bad inputs: running a .tflite file -------------------------------------------


@pytest.mark.tensorflow
@pytest.mark.parametrize("run", ["evaluate_tflite", "benchmark_tflite"])
def test_a_flex_file_is_refused_with_a_clear_message(run, tmp_path):
    path = flex_file(tmp_path / "flex.tflite")
    with pytest.raises(ValueError, match=r"uses TensorFlow \(\"Flex\"\) ops "
                                         r"FlexMatrixDeterminant.*standalone LiteRT"):
        if run == "evaluate_tflite":
            evaluate_tflite(path, np.ones((2, 4), "float32"))
        else:
            benchmark_tflite(path, runs=1, warmup=0)


@pytest.mark.tensorflow
def test_dynamic_input_shape_exports_evaluates_and_benchmark_says_why_not(tmp_path):
    model = keras.Sequential([keras.Input((None, None, 3)), L.Conv2D(4, 3),
                              L.GlobalAveragePooling2D(), L.Dense(2)])
    path = tmp_path / "m.tflite"
    assert to_tflite(model, path).input_shape == (None, None, None, 3)
    x = np.random.default_rng(0).random((3, 10, 12, 3)).astype("float32")
    assert evaluate_tflite(path, x, reference_model=model).max_abs_diff < 1e-4
    with pytest.raises(ValueError, match=r"dimensions besides the batch are unknown"):
        benchmark_tflite(path, runs=1, warmup=0)


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    model = mlp("keras")
    path = tmp_path_factory.mktemp("tflite") / "m.tflite"
    to_tflite(model, path)
    return str(path)


@pytest.mark.tensorflow
def test_evaluate_tflite_refuses_nan_inputs(small_file):
    x, y = data()
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"`x` holds 1 NaN or infinite"):
        evaluate_tflite(small_file, x, y)


@pytest.mark.tensorflow
@pytest.mark.parametrize("labels, found", [
    (lambda y: y + 5, r"got labels from 5 to 7"),
    (lambda y: np.eye(5)[y], r"one-hot rows of width 5"),
    (lambda y: y + 0.5, r"not whole numbers"),
], ids=["out_of_range", "one_hot_width", "fractional"])
def test_evaluate_tflite_refuses_labels_that_do_not_fit_the_outputs(
        small_file, labels, found):
    x, y = data()
    with pytest.raises(ValueError, match=rf"`y` must hold .*\[0, 3\).*{found}"):
        evaluate_tflite(small_file, x, labels(y))


@pytest.mark.tensorflow
@pytest.mark.parametrize("kwargs, error, found", [
    ({"num_threads": 0}, ValueError, r"`num_threads` must be an integer >= 1, got 0"),
    ({"num_threads": "2"}, ValueError, r"`num_threads` must be an integer >= 1"),
    ({"batch_size": True}, ValueError, r"`batch_size` must be an integer >= 1"),
    ({"path": None}, TypeError, r"`path` must be the path of a .tflite file"),
], ids=["threads_zero", "threads_str", "batch_bool", "path_none"])
def test_evaluate_tflite_bad_arguments_are_named(small_file, kwargs, error, found):
    arguments = {"path": small_file, **kwargs}
    with pytest.raises(error, match=found):
        evaluate_tflite(arguments.pop("path"), data()[0], **arguments)


# -- more bad inputs: prune, quantize, sensitivity -------------------------------------


def test_prune_refuses_initial_sparsity_above_the_target():
    with pytest.raises(ValueError, match=r"`initial_sparsity`=0.8 is above the target"):
        pruning.prune(mlp("keras"), 0.3, initial_sparsity=0.8, end_step=10)


@pytest.mark.parametrize("action", ["prune", "quantize"])
def test_an_unbuilt_tf_keras_student_is_refused_naming_it(action):
    import tf_keras

    student = tf_keras.Sequential([tf_keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=rf"`student` .* is not built, so it has no "
                                         rf"weights to {action}"):
        if action == "prune":
            pruning.prune(student, 0.5, schedule="constant")
        else:
            quantization.quantize(student)


@pytest.mark.parametrize("where", ["dense", "activation_layer"])
def test_quantize_names_the_layer_whose_activation_tfmot_cannot_quantize(where):
    if where == "dense":
        body = [L.Dense(4, activation="elu", name="odd")]
    else:
        body = [L.Dense(4, name="d"), L.Activation("elu", name="odd")]
    model = keras.Sequential([keras.Input((8,))] + body + [L.Dense(2)])
    with pytest.raises(ValueError, match=r"activation of layer\(s\) 'odd' \(elu\)"):
        quantization.quantize(model)


def test_sensitivity_layers_as_a_string_is_refused():
    # Before: the string was read as a list of one-letter layer names.
    with pytest.raises(TypeError, match=r"`layers` must be a list of layer names, "
                                        r"got 'logits'"):
        pruning.sensitivity(named_mlp("keras"), lambda m: 1.0, layers="logits",
                            path=None)


@pytest.mark.parametrize("content, found", [
    ("{", r"is not valid JSON"),
    (None, r"cannot be read \(No such file"),
    ('{"layers": {"a": {"x": {"loss": 1}}}}', r"must be what `sensitivity` returned"),
], ids=["damaged", "missing", "bad_ratio"])
def test_ratios_by_loss_bad_results_file_is_named(tmp_path, content, found):
    path = tmp_path / "sens.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=rf"`results`=.*sens.json.*{found}"):
        pruning.ratios_by_loss(path, 0.01)
