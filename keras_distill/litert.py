"""Running a TFLite file with LiteRT: check it on data, time it.

The second half of the path from a trained Keras model to a file you can
ship (`keras_distill.export.to_tflite` writes the file):

- `evaluate_tflite` runs the file with the LiteRT interpreter
  (``ai_edge_litert``) on real data: accuracy, and agreement with the Keras
  model it came from;
- `benchmark_tflite` measures single-input latency;
- `flex_ops` lists the TensorFlow ("Flex") ops a file needs, which
  standalone LiteRT cannot run.

Both run functions use LiteRT's default XNNPACK delegate unless given
``xnnpack=False`` (TFLite's builtin kernels): on x86 CPUs with AMX,
XNNPACK runs every int8 convolution with 16x64-tile AMX kernels, which are
slower than float32 for small convolutions (docs/export_paths.md).

int8 tensors are quantized and dequantized here with their scale and zero
point, so callers feed and read what the Keras model takes and returns.
Both functions, and the dataclasses they return, are also importable from
`keras_distill.export`.
"""

import dataclasses
import numbers
import os
import re
import time

import numpy as np

from keras_distill import _introspect, _validation


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
    """What `benchmark_tflite` measured, in microseconds per ``invoke()``.

    Attributes:
        median_us: Median latency of one ``invoke()`` (on ``batch_size``
            inputs; batch of 1 by default).
        p90_us: 90th percentile latency.
        runs: Number of timed runs.
        warmup: Number of untimed runs before them.
        num_threads: Interpreter threads.
        batch_size: Inputs per ``invoke()``.
        xnnpack: Whether LiteRT's default XNNPACK delegate ran the model
            (``False``: TFLite's builtin kernels).
    """

    median_us: float
    p90_us: float
    runs: int
    warmup: int
    num_threads: int
    batch_size: int = 1
    xnnpack: bool = True


def evaluate_tflite(path, x, y=None, reference_model=None, batch_size=256,
                    num_threads=None, xnnpack=True):
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
        xnnpack: Run with LiteRT's default XNNPACK delegate; ``False`` runs
            TFLite's builtin kernels (int8 results may differ slightly).

    Returns:
        A `TFLiteEvaluation`.

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: ``path`` is not a TFLite model with one input and one
            output, or one LiteRT cannot run (TensorFlow "Flex" ops, custom
            ops); ``x`` does not match it or holds NaN/inf; ``y`` is not one
            label in ``[0, classes)`` per input (or one-hot of the output's
            width); the reference outputs do not match; a bad
            ``batch_size`` or ``num_threads``.
        TypeError: ``path`` is not a path; ``reference_model`` is not a
            Keras model (or is a distiller: pass ``distiller.student``);
            ``xnnpack`` is not a bool.

    Example:
    >>> import keras, numpy as np, tempfile
    >>> from keras_distill.export import to_tflite
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> path = os.path.join(tempfile.mkdtemp(), "model.tflite")
    >>> _ = to_tflite(model, path)
    >>> x = np.random.default_rng(0).normal(size=(10, 4)).astype("float32")
    >>> result = evaluate_tflite(path, x, y=np.zeros(10), reference_model=model)
    >>> result.agreement, result.max_abs_diff < 1e-5
    (1.0, True)
    """
    if reference_model is not None:
        _introspect.check_model(reference_model, "reference_model", "compare with")
    _check_count(batch_size, "batch_size", 1)
    interpreter = _interpreter(path, num_threads, xnnpack)
    x = np.asarray(x)
    detail = interpreter.get_input_details()[0]
    _check_array("x", x, _shape(detail), _logical_dtype(detail))
    _check_finite("x", x)
    outputs = _run(interpreter, x, batch_size)
    accuracy = agreement = max_abs_diff = None
    predictions = np.argmax(outputs, axis=-1)
    if y is not None:
        accuracy = float(np.mean(predictions == _labels(y, len(x), outputs.shape[-1])))
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


def benchmark_tflite(path, num_threads=1, runs=200, warmup=20, batch_size=1,
                     xnnpack=True):
    """Measures the latency of one ``invoke()`` (batch of 1) with LiteRT.

    Only ``invoke()`` is timed (not setting the input), after ``warmup``
    untimed runs, on a fixed random input of the model's dtype.

    Args:
        path: A ``.tflite`` file.
        num_threads: Interpreter threads.
        runs: Number of timed runs.
        warmup: Number of untimed runs first.
        batch_size: Inputs per ``invoke()`` for a file with a dynamic batch
            dimension (divide the times by it for the time per input); a
            file with a fixed batch is timed at that size.
        xnnpack: Run with LiteRT's default XNNPACK delegate; ``False`` runs
            TFLite's builtin kernels
            (``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``). On x86
            CPUs with AMX, XNNPACK's int8 convolution kernels are slow for
            small layers (docs/export_paths.md): time both.

    Returns:
        A `TFLiteBenchmark` (microseconds per ``invoke()``).

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: A non-positive ``num_threads``, ``runs`` or
            ``batch_size``, a negative ``warmup``, a ``batch_size`` above 1
            other than the file's fixed batch; ``path`` is not a TFLite
            model, one LiteRT cannot run (TensorFlow "Flex" ops), or one
            whose input has unknown dimensions besides the batch (no single
            input to time).
        TypeError: ``xnnpack`` is not a bool.

    Example:
    >>> import keras, tempfile
    >>> from keras_distill.export import to_tflite
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> path = os.path.join(tempfile.mkdtemp(), "model.tflite")
    >>> _ = to_tflite(model, path)
    >>> b = benchmark_tflite(path, runs=20, warmup=2)
    >>> 0 < b.median_us <= b.p90_us
    True
    >>> benchmark_tflite(path, runs=20, batch_size=8, xnnpack=False).xnnpack
    False
    """
    for name, value, low in (("num_threads", num_threads, 1), ("runs", runs, 1),
                             ("warmup", warmup, 0), ("batch_size", batch_size, 1)):
        _check_count(value, name, low)
    interpreter = _interpreter(path, num_threads, xnnpack)
    detail = interpreter.get_input_details()[0]
    if None in _shape(detail)[1:]:
        raise ValueError(
            f"`path`={os.fspath(path)!r} takes inputs of shape {_shape(detail)}: "
            "dimensions besides the batch are unknown, so there is no single "
            "input to time. Export the model with a fixed input shape (e.g. "
            "`keras.Input((224, 224, 3))`) to benchmark it."
        )
    fixed = _shape(detail)[0]
    if fixed is not None and batch_size not in (1, fixed):
        raise ValueError(
            f"`batch_size`={batch_size}, but `path`={os.fspath(path)!r} has a "
            f"fixed batch dimension of {fixed}: time it at batch_size={fixed}, "
            "or export the model with a dynamic batch (`keras.Input(shape)` "
            "without `batch_size`)."
        )
    shape = [batch_size if d is None else d for d in _shape(detail)]
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
                           runs, warmup, num_threads, shape[0], xnnpack)


# -- checks and interpreter helpers (also used by `export`) ---------------


def _check_count(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")


def _check_finite(name, array):
    """Raises a ValueError when a floating ``array`` holds NaN or infinity."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(
            f"`{name}` holds {bad} NaN or infinite value(s): the model would "
            "compute NaN (or calibrate on it) and give meaningless numbers. "
            "Clean the data first (e.g. `np.nan_to_num`, or drop those samples)."
        )


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



def flex_ops(model):
    """The TensorFlow ("Flex") ops a TFLite model needs, read from the file.

    Such a file comes from a converter allowed ``SELECT_TF_OPS`` (as Keras 3's
    ``model.export(path, format="litert")`` is by default): standalone
    LiteRT cannot run it without the Flex delegate, a large extra library.
    `evaluate_tflite`, `benchmark_tflite` and
    `keras_distill.export.to_tflite` refuse such files, naming these ops.

    Args:
        model: A ``.tflite`` file path, or its content as bytes.

    Returns:
        A sorted tuple of op names such as ``("FlexMatrixDeterminant",)``;
        empty when the model uses TFLite builtin (and non-Flex custom) ops
        only.

    Raises:
        FileNotFoundError: No file at ``model``.
        TypeError: ``model`` is neither a path nor bytes.
        ValueError: ``model`` is not a TFLite flatbuffer.

    Example:
    >>> import keras, tempfile
    >>> from keras_distill.export import to_tflite
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> path = os.path.join(tempfile.mkdtemp(), "model.tflite")
    >>> _ = to_tflite(model, path)
    >>> flex_ops(path)
    ()
    """
    from ai_edge_litert import schema_py_generated as schema

    content = _content(model)
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ValueError("`model` is not a TFLite model (no 'TFL3' flatbuffer "
                         "identifier): pass a .tflite file or its bytes.")
    try:
        parsed = schema.Model.GetRootAs(content, 0)
        codes = [parsed.OperatorCodes(i).CustomCode()
                 for i in range(parsed.OperatorCodesLength())]
    except Exception as error:  # noqa: BLE001 - flatbuffers raises several kinds
        raise ValueError(f"`model` is not a readable TFLite model: {error!r}") from None
    names = {code.decode("utf-8", "replace") for code in codes if code}
    return tuple(sorted(name for name in names if name.startswith("Flex")))


def _content(model):
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    try:
        path = os.fspath(model)
    except TypeError:
        raise TypeError(
            "`model` must be a .tflite file path (str or os.PathLike) or its "
            f"content as bytes, got {type(model).__name__}."
        ) from None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`model`={path!r}: no such file.")
    with open(path, "rb") as handle:
        return handle.read()


def _flex_message(what, ops):
    return (
        f"{what} uses TensorFlow (\"Flex\") ops "
        f"{', '.join(ops) or '(SELECT_TF_OPS)'}, which standalone "
        "LiteRT cannot run (they need the Flex delegate, a large extra "
        "library). Export with TFLite builtin ops only: replace the "
        "layers using them (keras_distill.export.to_tflite never adds "
        "Flex ops; Keras's model.export(format=\"litert\") allows them "
        "unless given target_spec={\"supported_ops\": "
        "[tf.lite.OpsSet.TFLITE_BUILTINS]})."
    )


def _interpreter(path, num_threads, xnnpack=True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(
            f"`path` must be the path of a .tflite file (str or os.PathLike), "
            f"got {type(path).__name__}."
        ) from None
    if num_threads is not None:
        _check_count(num_threads, "num_threads", 1)
    _validation.check_bool(xnnpack, "xnnpack")
    if os.path.isdir(path):
        raise ValueError(f"`path`={path!r} is a directory: give the .tflite file.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`path`={path!r}: no such file. Export one "
                                "with `to_tflite(model, path)` first.")
    resolver = (OpResolverType.AUTO if xnnpack
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    try:
        interpreter = Interpreter(model_path=path, num_threads=num_threads,
                                  experimental_op_resolver_type=resolver)
    except ValueError as error:
        raise ValueError(f"`path`={path!r} is not a TFLite model: {error}") from error
    flex = flex_ops(path)
    if flex:
        raise ValueError(_flex_message(f"`path`={path!r}", flex))
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"`path`={path!r} has {len(inputs)} inputs and {len(outputs)} "
            "outputs; only single-input, single-output models are supported."
        )
    return _prepared(interpreter, f"`path`={path!r}")


_FLEX_OP = re.compile(r"\((Flex\w+)\)")


def _prepared(interpreter, what):
    """``interpreter``, allocated and run once (unknown dimensions: batch 1,
    others 32), or a ValueError saying why LiteRT cannot run the model
    (TensorFlow "Flex" ops, custom ops). With unknown dimensions other than
    the batch, a failure that is not about ops is left to the real inputs."""
    inputs = interpreter.get_input_details()
    dynamic = any(None in _shape(detail)[1:] for detail in inputs)
    for detail in inputs:
        shape = [d or (32 if i else 1) for i, d in enumerate(_shape(detail))]
        interpreter.resize_tensor_input(detail["index"], shape)
    try:
        interpreter.allocate_tensors()
        interpreter.invoke()  # some kernels (Flex) fail only here
    except RuntimeError as error:
        message = str(error)
        flex = sorted(set(_FLEX_OP.findall(message)))
        if flex or "Select TensorFlow op" in message:
            raise ValueError(_flex_message(what, flex)) from None
        if not dynamic:
            raise ValueError(
                f"{what} cannot run in the LiteRT interpreter: "
                f"{message.strip().splitlines()[0][:300] if message.strip() else error!r}"
            ) from None
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


def _labels(y, n, classes):
    y = np.asarray(y)
    expected = (f"`y` must hold one label per input ({n}), as class ids in "
                f"[0, {classes}) of shape ({n},) or one-hot of shape ({n}, "
                f"{classes}) (the model has {classes} outputs)")
    if y.ndim == 2 and y.shape[-1] != classes:
        raise ValueError(f"{expected}; got one-hot rows of width {y.shape[-1]}.")
    if y.ndim == 2:
        y = np.argmax(y, axis=-1)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{expected}; got shape {y.shape}.")
    if y.dtype.kind not in "iuf" or (
            y.dtype.kind == "f" and not np.array_equal(y, np.round(y))):
        raise ValueError(f"{expected}; got {y.dtype} values that are not "
                         "whole numbers.")
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"{expected}; got labels from {y.min()} to {y.max()}.")
    return y


def _random_input(shape, dtype):
    rng = np.random.default_rng(0)
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.random(size=shape).astype(dtype)
