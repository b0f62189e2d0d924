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

Conversion lives here; running a file (`evaluate_tflite`,
`benchmark_tflite`, `TFLiteEvaluation`, `TFLiteBenchmark`) and `flex_ops`
live in `keras_distill.litert` and are re-exported here.

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
import warnings

import numpy as np

from keras_distill import _compat, _introspect, _io, _validation
from keras_distill.pruning import _checks
from keras_distill.litert import (  # noqa: F401 - re-exported
    TFLiteBenchmark,
    TFLiteEvaluation,
    _check_array,
    _check_finite,
    _flex_message,
    _prepared,
    _scale_zero_point,
    _shape,
    benchmark_tflite,
    evaluate_tflite,
    flex_ops,
)

__all__ = [
    "QUANTIZATIONS",
    "TFLiteBenchmark",
    "TFLiteEvaluation",
    "TFLiteExport",
    "benchmark_tflite",
    "evaluate_tflite",
    "flex_ops",
    "to_tflite",
]

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



def to_tflite(model, path, quantization="float32", representative_data=None,
              num_representative=300, int8_io=True):
    """Converts a Keras model to a TFLite file, written atomically.

    The model is converted in memory with
    ``tf.lite.TFLiteConverter.from_keras_model`` (Keras 3 and ``tf_keras``),
    checked to run in the LiteRT interpreter (on one input), then
    written to a temporary file beside ``path`` and moved onto it: a failed
    conversion leaves an existing file at ``path`` untouched. Whether
    ``path``'s folder exists and can be written is checked before
    converting; a model with non-finite (NaN or infinite) weights is
    refused.

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
        path: The file to write; its directory must exist and be writable.
        quantization: One of ``"float32"``, ``"float16"``, ``"dynamic"``,
            ``"int8"``.
        representative_data: For ``"int8"``: a numpy array of model inputs
            (shape ``(n,) + input_shape``, floating point for a float model,
            finite, at least one batch for a fixed batch size) from the
            training data. Ignored by the other modes.
        num_representative: How many samples of ``representative_data`` to
            calibrate with, drawn without replacement with a fixed seed (all
            of them when there are fewer).
        int8_io: For ``"int8"``: int8 input and output tensors (quantize
            inputs yourself with ``input_quantization``); ``False`` keeps
            float32 input/output around the int8 graph.

    Returns:
        A `TFLiteExport`.

    Raises:
        TypeError: ``model`` is not a Keras model (or is a distiller: pass
            ``distiller.student``), ``path`` is not a path, or ``int8_io``
            is not a bool.
        ValueError: Unknown ``quantization``; ``"int8"`` without
            ``representative_data`` for a model that is not QAT;
            ``representative_data`` not matching the model input, not
            finite, or smaller than the model's fixed batch; ``path`` in a
            missing or read-only directory; the model is not built or has
            non-finite weights; the converter rejects the model (the message
            names the op and layer when the converter reveals them); the
            file would not run in LiteRT (e.g. it needs TensorFlow "Flex"
            ops).

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
    _introspect.check_model(model, "model", "export")
    _check_quantization(quantization)
    _validation.check_bool(int8_io, "int8_io")
    path = _check_output_path(path)
    if not getattr(model, "built", True):
        raise ValueError(
            "`model` is not built, so its input shape is unknown: call it once "
            "on a batch or call `model.build(input_shape)` before exporting."
        )
    _check_finite_weights(model)
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
    _check_runs(content, quantization)
    _io.atomic_write(path, content)
    return _summarize(content, path, quantization, qat, stripped)



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
    # The file is written beside `path`, then moved: try that folder now.
    return _checks.check_writable(path, "path")


def _check_finite_weights(model):
    bad = []
    for weight in model.weights:
        value = np.asarray(weight)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad.append(getattr(weight, "path", None) or weight.name)
    if bad:
        raise ValueError(
            f"`model` has NaN or infinite weights ({', '.join(bad[:5])}"
            f"{', ...' if len(bad) > 5 else ''}): its file would compute NaN. "
            "Export the model from before training diverged (e.g. restore a "
            "checkpoint) or retrain with a lower learning rate."
        )


def _check_runs(content, quantization):
    """Refuses a converted model the LiteRT interpreter cannot run, trying it
    on one input (unknown dimensions: see `litert._prepared`)."""
    from ai_edge_litert.interpreter import Interpreter

    prefix = (f"to_tflite (quantization={quantization!r}) produced a model that "
              "LiteRT cannot run, so nothing was written: ")
    flex = flex_ops(content)
    if flex:  # read from the file: not left to the runtime's error text
        raise ValueError(prefix + _flex_message("the converted model", flex))
    try:
        _prepared(Interpreter(model_content=content), "the converted model")
    except ValueError as error:
        raise ValueError(prefix + str(error)) from error


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


def _representative_dataset(model, data, num_representative):
    if not isinstance(data, np.ndarray):
        raise TypeError(
            f"`representative_data` must be a numpy array of model inputs, got "
            f"{type(data).__name__}."
        )
    if isinstance(num_representative, bool) or not isinstance(
            num_representative, int) or num_representative < 1:
        raise ValueError(
            "`num_representative` must be a positive integer, got "
            f"{num_representative!r}."
        )
    spec = _input_spec(model)
    if spec is not None:
        _check_array("representative_data", data, *spec)
        data = data.astype(spec[1], copy=False)
    _check_finite("representative_data", data)
    rng = np.random.default_rng(0)
    count = min(num_representative, len(data))
    samples = data[np.sort(rng.choice(len(data), size=count, replace=False))]
    step = spec[0][0] if spec is not None and spec[0][0] else 1
    if count < step:
        raise ValueError(
            f"`representative_data` gives {count} sample(s) but the model's "
            f"input has a fixed batch size of {step}: calibration runs whole "
            f"batches, so pass at least {step} samples (and "
            f"num_representative >= {step})."
        )

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
