"""TFLite (LiteRT) export: convert a Keras model, check the file, time it.

One function per step on the path from a trained Keras model to a file you
can ship:

- `to_tflite` converts a Keras 3 or ``tf_keras`` model (pruned and QAT
  ``tf_keras`` models included) to float32, float16, dynamic-range or full
  int8 TFLite, and writes the file atomically;
- `evaluate_tflite` runs the file with the LiteRT interpreter
  (``ai_edge_litert``) on real data: accuracy, and agreement with the Keras
  model it came from;
- `benchmark_tflite` measures single-input latency.

TensorFlow Model Optimization is imported only when a model holds pruning
wrappers to strip (importing it turns ``tf.keras`` into ``tf_keras`` for the
whole process).
"""

import contextlib
import dataclasses
import gzip
import io
import os
import re
import time
import warnings

import numpy as np

from keras_distill import _compat, _introspect, _io

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")


@dataclasses.dataclass(frozen=True)
class TFLiteExport:
    """What `to_tflite` wrote.

    Attributes:
        path: The file written.
        size_bytes: Its size.
        gzip_size_bytes: Its size after gzip (level 9): what sparsity buys.
        quantization: One of `QUANTIZATIONS`.
        input_dtype, output_dtype: Tensor dtypes, e.g. ``"float32"``, ``"int8"``.
        input_shape, output_shape: Tensor shapes, ``None`` for a dynamic
            (batch) dimension.
        input_quantization, output_quantization: ``(scale, zero_point)``;
            ``(0.0, 0)`` for a tensor that is not quantized. A real value is
            ``scale * (q - zero_point)``.
        float_ops: For ``"int8"``: the ops the converter left in float
            (it does so silently for ops without an int8 kernel); empty for a
            fully integer model.
        qat: The model was quantization-aware trained (TFMOT); its learned
            ranges were used.
        stripped_pruning: TFMOT pruning wrappers were stripped first.
    """

    path: str
    size_bytes: int
    gzip_size_bytes: int
    quantization: str
    input_dtype: str
    input_shape: tuple
    input_quantization: tuple
    output_dtype: str
    output_shape: tuple
    output_quantization: tuple
    float_ops: tuple = ()
    qat: bool = False
    stripped_pruning: bool = False


@dataclasses.dataclass(frozen=True)
class TFLiteEvaluation:
    """What `evaluate_tflite` measured.

    Attributes:
        num_samples: Number of inputs run.
        accuracy: Fraction of argmax predictions equal to the labels, or
            ``None`` without labels.
        agreement: Fraction of inputs where the TFLite and the reference
            Keras model's argmax agree, or ``None`` without a reference.
        max_abs_diff: Largest absolute difference between the TFLite outputs
            (dequantized) and the reference model's, or ``None``.
        outputs: The TFLite outputs, dequantized to float32.
    """

    num_samples: int
    accuracy: float = None
    agreement: float = None
    max_abs_diff: float = None
    outputs: np.ndarray = dataclasses.field(default=None, repr=False,
                                            compare=False)


@dataclasses.dataclass(frozen=True)
class TFLiteBenchmark:
    """What `benchmark_tflite` measured, in microseconds per single input.

    Attributes:
        median_us: Median latency of one ``invoke()`` (batch of 1).
        p90_us: 90th percentile latency.
        runs: Number of timed runs.
        warmup: Number of untimed runs before them.
        num_threads: Interpreter threads.
    """

    median_us: float
    p90_us: float
    runs: int
    warmup: int
    num_threads: int


def to_tflite(model, path, quantization="float32", representative_data=None,
              num_representative=300, int8_io=True):
    """Converts a Keras model to a TFLite file, written atomically.

    The model is converted in memory with
    ``tf.lite.TFLiteConverter.from_keras_model`` (Keras 3 and ``tf_keras``),
    then written to a temporary file beside ``path`` and moved onto it: a
    failed conversion leaves an existing file at ``path`` untouched.

    Quantization modes:

    - ``"float32"``: no quantization.
    - ``"float16"``: float16 weights, float32 compute (about half the size).
    - ``"dynamic"``: int8 weights, activations quantized on the fly.
    - ``"int8"``: full-integer quantization (``TFLITE_BUILTINS_INT8``):
      int8 weights and activations, ranges calibrated on
      ``representative_data``. For a quantization-aware trained model
      (TFMOT ``quantize_model``) the ranges it learned are used and
      ``representative_data`` is optional.

    ``tf_keras`` models holding TFMOT pruning wrappers are stripped
    (``tfmot.sparsity.keras.strip_pruning``) before conversion; ``model``
    itself is not changed.

    Args:
        model: A built Keras 3 or ``tf_keras`` model.
        path: The file to write; its directory must exist.
        quantization: One of ``"float32"``, ``"float16"``, ``"dynamic"``,
            ``"int8"``.
        representative_data: For ``"int8"``: a numpy array of model inputs
            (shape ``(n,) + input_shape``, floating point for a float model)
            from the training data. Ignored by the other modes.
        num_representative: How many samples of ``representative_data`` to
            calibrate with, drawn without replacement with a fixed seed (all
            of them when there are fewer).
        int8_io: For ``"int8"``: int8 input and output tensors (quantize
            inputs yourself with ``input_quantization``); ``False`` keeps
            float32 input/output around the int8 graph.

    Returns:
        A `TFLiteExport`.

    Raises:
        TypeError: ``model`` is not a Keras model, or ``path`` is not a path.
        ValueError: Unknown ``quantization``; ``"int8"`` without
            ``representative_data`` for a model that is not QAT;
            ``representative_data`` not matching the model input; ``path``
            in a missing directory; the model is not built; the converter
            rejects the model (the message names the op and layer when the
            converter reveals them).

    Example:
    >>> import keras, numpy as np, tempfile
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> path = os.path.join(tempfile.mkdtemp(), "model.tflite")
    >>> x = np.random.default_rng(0).normal(size=(50, 4)).astype("float32")
    >>> result = to_tflite(model, path, "int8", representative_data=x)
    >>> result.input_dtype, result.input_shape, result.output_shape
    ('int8', (None, 4), (None, 3))
    >>> os.path.getsize(path) == result.size_bytes
    True
    """
    _compat.model_flavour(model, "model")
    _check_quantization(quantization)
    path = _check_output_path(path)
    if not getattr(model, "built", True):
        raise ValueError(
            "`model` is not built, so its input shape is unknown: call it once "
            "on a batch or call `model.build(input_shape)` before exporting."
        )
    stripped = _introspect.holds(model, {_introspect.PRUNING_WRAPPER})
    if stripped:
        model = _strip_pruning(model)
    qat = _introspect.holds(model, _introspect.QAT_LAYERS)
    representative = None
    if quantization == "int8":
        if representative_data is None and not qat:
            raise ValueError(
                "quantization='int8' needs `representative_data`: a numpy array "
                "of a few hundred real model inputs (e.g. `x_train[:1000]`) to "
                "calibrate activation ranges. (Only quantization-aware trained "
                "models can do without.)"
            )
        if representative_data is not None:
            representative = _representative_dataset(
                model, representative_data, num_representative
            )
    converter = _converter(model, quantization, representative, int8_io, qat)
    content = _convert(converter, model, quantization)
    _io.atomic_write(path, content)
    return _summarize(content, path, quantization, qat, stripped)


def evaluate_tflite(path, x, y=None, reference_model=None, batch_size=256,
                    num_threads=None):
    """Runs a TFLite file on data with the LiteRT interpreter.

    int8 inputs are quantized and int8 outputs dequantized with the tensors'
    scale and zero point, so ``x`` is what the Keras model takes. Inputs run
    in batches of ``batch_size`` when the file's batch dimension is dynamic,
    else in batches of the fixed size (one at a time for batch 1).

    Args:
        path: A ``.tflite`` file with one input and one output.
        x: numpy array of inputs, shape ``(n,) + input_shape``.
        y: Optional labels: class ids ``(n,)`` or one-hot ``(n, classes)``.
        reference_model: Optional Keras model (either flavour) to compare
            with, usually the model the file was exported from.
        batch_size: Inputs per ``invoke()`` for a dynamic batch dimension.
        num_threads: Interpreter threads (``None``: the interpreter's
            default).

    Returns:
        A `TFLiteEvaluation`.

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: ``path`` is not a TFLite model with one input and one
            output; ``x``, ``y`` or the reference outputs do not match it.
        TypeError: ``reference_model`` is not a Keras model.

    Example:
    >>> import keras, numpy as np, tempfile
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> path = os.path.join(tempfile.mkdtemp(), "model.tflite")
    >>> _ = to_tflite(model, path)
    >>> x = np.random.default_rng(0).normal(size=(10, 4)).astype("float32")
    >>> result = evaluate_tflite(path, x, y=np.zeros(10), reference_model=model)
    >>> result.agreement, result.max_abs_diff < 1e-5
    (1.0, True)
    """
    if reference_model is not None:
        _compat.model_flavour(reference_model, "reference_model")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    interpreter = _interpreter(path, num_threads)
    x = np.asarray(x)
    detail = interpreter.get_input_details()[0]
    _check_array("x", x, _shape(detail), _logical_dtype(detail))
    outputs = _run(interpreter, x, batch_size)
    accuracy = agreement = max_abs_diff = None
    predictions = np.argmax(outputs, axis=-1)
    if y is not None:
        accuracy = float(np.mean(predictions == _labels(y, len(x))))
    if reference_model is not None:
        reference = np.asarray(reference_model.predict(x, batch_size=batch_size,
                                                       verbose=0))
        if reference.shape != outputs.shape:
            raise ValueError(
                f"`reference_model` outputs shape {reference.shape} but the "
                f"TFLite file {path!r} outputs {outputs.shape}: pass the model "
                "the file was exported from."
            )
        agreement = float(np.mean(np.argmax(reference, axis=-1) == predictions))
        max_abs_diff = float(np.max(np.abs(reference - outputs)))
    return TFLiteEvaluation(len(x), accuracy, agreement, max_abs_diff, outputs)


def benchmark_tflite(path, num_threads=1, runs=200, warmup=20):
    """Measures the latency of one input (batch of 1) with LiteRT.

    Only ``invoke()`` is timed (not setting the input), after ``warmup``
    untimed runs, on a fixed random input of the model's dtype.

    Args:
        path: A ``.tflite`` file.
        num_threads: Interpreter threads.
        runs: Number of timed runs.
        warmup: Number of untimed runs first.

    Returns:
        A `TFLiteBenchmark` (microseconds).

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: A non-positive ``num_threads`` or ``runs``, a negative
            ``warmup``, or ``path`` is not a TFLite model.

    Example:
    >>> import keras, tempfile
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> path = os.path.join(tempfile.mkdtemp(), "model.tflite")
    >>> _ = to_tflite(model, path)
    >>> b = benchmark_tflite(path, runs=20, warmup=2)
    >>> 0 < b.median_us <= b.p90_us
    True
    """
    for name, value, low in (("num_threads", num_threads, 1), ("runs", runs, 1),
                             ("warmup", warmup, 0)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    interpreter = _interpreter(path, num_threads)
    detail = interpreter.get_input_details()[0]
    shape = [1 if d is None else d for d in _shape(detail)]
    interpreter.resize_tensor_input(detail["index"], shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], _random_input(shape, detail["dtype"]))
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter_ns()
        interpreter.invoke()
        if i >= warmup:
            times.append((time.perf_counter_ns() - start) / 1e3)
    return TFLiteBenchmark(float(np.median(times)), float(np.percentile(times, 90)),
                           runs, warmup, num_threads)


# -- to_tflite, step by step -------------------------------------------------


def _check_quantization(quantization):
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be one of {QUANTIZATIONS}, got {quantization!r}."
        )


def _check_output_path(path):
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(
            f"`path` must be a file path (str or os.PathLike), got "
            f"{type(path).__name__}."
        ) from None
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(
            f"`path`={path!r} is in a directory that does not exist ({folder}): "
            "create it first, e.g. `os.makedirs(folder, exist_ok=True)`."
        )
    if os.path.isdir(path):
        raise ValueError(f"`path`={path!r} is a directory: give a file name, "
                         "e.g. 'model.tflite'.")
    return path


def _strip_pruning(model):
    # Only reached for a model holding TFMOT wrappers: TFMOT is already loaded.
    tfmot = _compat.import_tfmot()

    try:
        return tfmot.sparsity.keras.strip_pruning(model)
    except Exception as error:  # noqa: BLE001 - TFMOT raises several kinds
        raise ValueError(
            "`model` holds TFMOT pruning wrappers that could not be stripped "
            f"({type(error).__name__}: {error}). strip_pruning needs a "
            "Sequential or Functional model: call "
            "`tfmot.sparsity.keras.strip_pruning` on the pruned model yourself "
            "and export the result."
        ) from error


def _input_spec(model):
    """``(shape, dtype name)`` of a single-input model, or ``None``."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    if len(inputs) != 1:
        raise ValueError(
            f"`model` has {len(inputs)} inputs; int8 calibration with "
            "`representative_data` supports single-input models only."
        )
    import tensorflow as tf

    return tuple(inputs[0].shape), tf.as_dtype(inputs[0].dtype).name


def _check_array(name, array, shape, dtype):
    """Raises a ValueError when ``array`` cannot feed an input of shape/dtype.

    Shapes must agree after the batch axis (``None`` matches anything);
    dtypes must be of the same kind (floating vs integer), so raw uint8
    images are not silently fed to a float model.
    """
    array_shape = tuple(array.shape)
    shape_ok = len(array_shape) == len(shape) and all(
        d is None or d == a for d, a in zip(shape[1:], array_shape[1:])
    )
    wants_float = np.dtype(dtype).kind == "f"
    kind_ok = (array.dtype.kind == "f") == wants_float
    if not (shape_ok and kind_ok and len(array) > 0):
        raise ValueError(
            f"`{name}` has shape {array_shape} and dtype {array.dtype}, but the "
            f"model input has shape {shape} and dtype {dtype}: pass a non-empty "
            f"array of shape (n,) + {tuple(shape[1:])} with a "
            f"{'floating' if wants_float else 'integer'} dtype, preprocessed as "
            "for training (e.g. images scaled to [0, 1])."
        )


def _representative_dataset(model, data, num_representative):
    if not isinstance(data, np.ndarray):
        raise TypeError(
            f"`representative_data` must be a numpy array of model inputs, got "
            f"{type(data).__name__}."
        )
    if not isinstance(num_representative, int) or num_representative < 1:
        raise ValueError(
            "`num_representative` must be a positive integer, got "
            f"{num_representative!r}."
        )
    spec = _input_spec(model)
    if spec is not None:
        _check_array("representative_data", data, *spec)
        data = data.astype(spec[1], copy=False)
    rng = np.random.default_rng(0)
    count = min(num_representative, len(data))
    samples = data[np.sort(rng.choice(len(data), size=count, replace=False))]
    step = spec[0][0] if spec is not None and spec[0][0] else 1

    def dataset():
        for start in range(0, count - step + 1, step):
            yield [samples[start:start + step]]

    return dataset


def _converter(model, quantization, representative, int8_io, qat):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "float32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        if representative is not None:
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # else: a QAT model. TF 2.21 checks TFLITE_BUILTINS_INT8 against a
        # model it has not looked at yet and demands a representative dataset,
        # so leave supported_ops alone: the fake-quant ranges still give a
        # full-integer graph (`float_ops` reports any float leftovers).
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter


_OP_PATTERNS = (
    re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op"),
    re.compile(r"TF Select ops: ([\w, ]+)"),
)
_LOCATION = re.compile(r'fused\["[^"]*", "([^"@]+)@')


def _convert(converter, model, quantization):
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # Keras 3 export prints "Saved artifact at ..."; the converter
            # warns about input statistics it does not need here.
            warnings.filterwarnings("ignore", message="Statistics for quantized")
            return converter.convert()
    except Exception as error:  # noqa: BLE001 - ConverterError, ValueError, ...
        message = str(error)
        ops = sorted({op.strip() for p in _OP_PATTERNS
                      for found in p.findall(message) for op in found.split(",")
                      if op.strip()})
        layers = _layers_in(message, model)
        where = ""
        if ops:
            where += f" Unsupported op(s): {', '.join(ops)}."
        if layers:
            where += f" In layer(s): {', '.join(layers)}."
        first = message.strip().splitlines()[0][:300] if message.strip() else ""
        raise ValueError(
            f"The TFLite converter rejected `model` (quantization="
            f"{quantization!r}).{where} Use layers built from TFLite builtin "
            f"ops, or another quantization. Converter said: "
            f"{type(error).__name__}: {first}"
        ) from error


def _layers_in(message, model):
    """Names of ``model``'s layers seen in the converter's op locations."""
    names = {layer.name for layer in _introspect.iter_layers(model)}
    found = []
    for location in _LOCATION.findall(message):
        for part in location.split("/"):
            name = part if part in names else re.sub(r"_\d+$", "", part)
            if name in names and name != model.name and name not in found:
                found.append(name)
    return found


def _summarize(content, path, quantization, qat, stripped):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    return TFLiteExport(
        path=path,
        size_bytes=len(content),
        gzip_size_bytes=len(gzip.compress(content, compresslevel=9, mtime=0)),
        quantization=quantization,
        input_dtype=np.dtype(inp["dtype"]).name,
        input_shape=_shape(inp),
        input_quantization=_scale_zero_point(inp),
        output_dtype=np.dtype(out["dtype"]).name,
        output_shape=_shape(out),
        output_quantization=_scale_zero_point(out),
        float_ops=_float_ops(interpreter) if quantization == "int8" else (),
        qat=qat,
        stripped_pruning=stripped,
    )


def _float_ops(interpreter):
    """Ops (other than the (de)quantize at the edges) computing in float32."""
    ops = getattr(interpreter, "_get_ops_details", lambda: [])()
    found = []
    for op in ops:
        types = list(op.get("operand_types", ())) + list(op.get("result_types", ()))
        if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE") and np.float32 in types:
            found.append(op["op_name"])
    return tuple(found)


# -- running a file ------------------------------------------------------------


def _interpreter(path, num_threads):
    from ai_edge_litert.interpreter import Interpreter

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`path`={path!r}: no such file. Export one "
                                "with `to_tflite(model, path)` first.")
    try:
        interpreter = Interpreter(model_path=path, num_threads=num_threads)
    except ValueError as error:
        raise ValueError(f"`path`={path!r} is not a TFLite model: {error}") from error
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"`path`={path!r} has {len(inputs)} inputs and {len(outputs)} "
            "outputs; only single-input, single-output models are supported."
        )
    return interpreter


def _shape(detail):
    signature = detail.get("shape_signature", detail["shape"])
    return tuple(None if d < 0 else int(d) for d in signature)


def _scale_zero_point(detail):
    scale, zero_point = detail["quantization"]
    return float(scale), int(zero_point)


def _logical_dtype(detail):
    """The dtype the user feeds: float32 for a quantized int8 input."""
    scale, _ = detail["quantization"]
    return "float32" if scale else np.dtype(detail["dtype"]).name


def _quantize(x, detail):
    scale, zero_point = detail["quantization"]
    dtype = np.dtype(detail["dtype"])
    if not scale:
        return x.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    q = np.round(x.astype(np.float32) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(q, detail):
    scale, zero_point = detail["quantization"]
    if not scale:
        return q.astype(np.float32, copy=False)
    return (q.astype(np.float32) - zero_point) * np.float32(scale)


def _run(interpreter, x, batch_size):
    inp = interpreter.get_input_details()[0]
    out_index = interpreter.get_output_details()[0]["index"]
    fixed = _shape(inp)[0]
    step = fixed or batch_size
    allocated = None
    results = []
    for start in range(0, len(x), step):
        batch = x[start:start + step]
        n = len(batch)
        if fixed and n < fixed:  # pad the last batch of a fixed-batch model
            batch = np.concatenate([batch, np.repeat(batch[-1:], fixed - n, 0)])
        if len(batch) != allocated:
            interpreter.resize_tensor_input(inp["index"], list(batch.shape))
            interpreter.allocate_tensors()
            allocated = len(batch)
        interpreter.set_tensor(inp["index"], _quantize(batch, inp))
        interpreter.invoke()
        out = interpreter.get_output_details()[0]
        results.append(_dequantize(interpreter.get_tensor(out_index), out)[:n])
    return np.concatenate(results)


def _labels(y, n):
    y = np.asarray(y)
    if y.ndim == 2:
        y = np.argmax(y, axis=-1)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            f"`y` must hold one label per input ({n}), as class ids of shape "
            f"({n},) or one-hot of shape ({n}, classes); got shape {y.shape}."
        )
    return y


def _random_input(shape, dtype):
    rng = np.random.default_rng(0)
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.random(size=shape).astype(dtype)
