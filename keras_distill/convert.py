"""Keras 3 -> ``tf_keras``: rebuild a model so TFMOT can prune or quantize it.

TensorFlow Model Optimization (TFMOT) 0.8.1 accepts only Keras 2 models
(the ``tf_keras`` package); on a Keras 3 model ``prune_low_magnitude`` and
``quantize_model`` raise and ``cluster_weights`` silently returns ``None``.
`to_tf_keras` rebuilds a Sequential or Functional Keras 3 model made of
standard layers as the equivalent ``tf_keras`` model, with the same layer
names and identical weights, so it computes the same outputs.

`keras_distill._compat.import_tfmot` imports TFMOT without its side effect:
importing ``tensorflow_model_optimization`` sets ``TF_USE_LEGACY_KERAS=1``,
which (if ``tf.keras`` was not used yet) turns ``tf.keras`` into ``tf_keras``
for the whole process and every child process. keras_distill always goes
through `import_tfmot`.
"""

import inspect

import numpy as np

from keras_distill import _compat, _introspect, _keras_private

# Keras 3 layer class name -> what to do with its config.
#   rename: {Keras 3 key: tf_keras key}
#   drop:   {Keras 3-only key: the only value tf_keras can honour}; any
#           other value cannot be converted.
_PLAIN = {"rename": {}, "drop": {}}
_SUPPORTED_LAYERS = {
    "Dense": {"rename": {}, "drop": {"lora_rank": None, "lora_alpha": None,
                                     "quantization_config": None}},
    "EinsumDense": {"rename": {}, "drop": {"lora_rank": None, "lora_alpha": None,
                                           "quantization_config": None,
                                           "gptq_unpacked_column_size": None}},
    "Embedding": {"rename": {}, "drop": {"lora_rank": None, "lora_alpha": None,
                                         "quantization_config": None,
                                         "weights": None}},
    "Conv1D": _PLAIN,
    "Conv2D": _PLAIN,
    "Conv1DTranspose": _PLAIN,
    "Conv2DTranspose": _PLAIN,
    "DepthwiseConv2D": _PLAIN,
    "SeparableConv1D": _PLAIN,
    "SeparableConv2D": _PLAIN,
    "BatchNormalization": {"rename": {}, "drop": {"renorm": False,
                                                  "renorm_clipping": None,
                                                  "renorm_momentum": 0.99}},
    "LayerNormalization": {"rename": {}, "drop": {"rms_scaling": False}},
    "Activation": _PLAIN,
    "ReLU": _PLAIN,
    "Softmax": _PLAIN,
    "LeakyReLU": {"rename": {"negative_slope": "alpha"}, "drop": {}},
    "ELU": _PLAIN,
    "PReLU": _PLAIN,
    "MaxPooling1D": _PLAIN,
    "MaxPooling2D": _PLAIN,
    "AveragePooling1D": _PLAIN,
    "AveragePooling2D": _PLAIN,
    "GlobalAveragePooling1D": _PLAIN,
    "GlobalAveragePooling2D": _PLAIN,
    "GlobalMaxPooling1D": _PLAIN,
    "GlobalMaxPooling2D": _PLAIN,
    "Flatten": _PLAIN,
    "Reshape": _PLAIN,
    "Permute": _PLAIN,
    "RepeatVector": _PLAIN,
    "Dropout": _PLAIN,
    "SpatialDropout1D": _PLAIN,
    "SpatialDropout2D": _PLAIN,
    "GaussianNoise": _PLAIN,
    "GaussianDropout": _PLAIN,
    "Add": _PLAIN,
    "Subtract": _PLAIN,
    "Multiply": _PLAIN,
    "Average": _PLAIN,
    "Maximum": _PLAIN,
    "Minimum": _PLAIN,
    "Concatenate": _PLAIN,
    "ZeroPadding1D": {"rename": {}, "drop": {"data_format": "channels_last"}},
    "ZeroPadding2D": _PLAIN,
    "Cropping1D": _PLAIN,
    "Cropping2D": _PLAIN,
    "UpSampling1D": _PLAIN,
    "UpSampling2D": _PLAIN,
    "Rescaling": _PLAIN,
    "Identity": {"rename": {}, "drop": {"dtype": "float32", "name": None,
                                        "trainable": True}},
}
SUPPORTED_LAYERS = tuple(sorted(_SUPPORTED_LAYERS))
"""Names of the Keras 3 layer classes `to_tf_keras` converts."""

_KERAS3_ONLY_INITIALIZER_KEYS = ("input_axes", "output_axes")

# Keras 3 activations that tf_keras lacks or computes differently (Keras 3's
# hard_sigmoid is relu6(x + 3) / 6, tf_keras's clip(0.2 x + 0.5, 0, 1)): Keras
# 3's formula written in TensorFlow, registered with tf_keras as
# "keras_distill>name" so converted models clone and save. Each is checked
# against Keras 3's function before use (`_Converter._activation`).
_KERAS3_FORMULAS = {
    "hard_sigmoid": lambda tf, x: tf.nn.relu6(x + 3.0) / 6.0,
    "hard_silu": lambda tf, x: x * tf.nn.relu6(x + 3.0) / 6.0,
    "hard_tanh": lambda tf, x: tf.clip_by_value(x, -1.0, 1.0),
    "log_sigmoid": lambda tf, x: tf.math.log_sigmoid(x),
    "tanh_shrink": lambda tf, x: x - tf.tanh(x),
    "celu": lambda tf, x: tf.maximum(x, 0.0) + tf.math.expm1(tf.minimum(x, 0.0)),
    "squareplus": lambda tf, x: (x + tf.sqrt(tf.square(x) + 4.0)) / 2.0,
    "soft_shrink": lambda tf, x: tf.where(
        x > 0.5, x - 0.5, tf.where(x < -0.5, x + 0.5, tf.zeros_like(x))),
    "hard_shrink": lambda tf, x: tf.where(tf.abs(x) > 0.5, x, tf.zeros_like(x)),
}
# Functions Keras 3 serializes by reference whose tf_keras name differs.
_TF_FUNCTION_NAMES = {"softmax_v2": "softmax"}
_REGISTERED = {}  # name -> the tf_keras-serializable function
_SAME_AS_KERAS3 = {}  # (Keras 3 function, tf_keras name) -> bool, checked once


def to_tf_keras(model):
    """Rebuilds a Keras 3 model as a ``tf_keras`` model with the same weights.

    TFMOT pruning and quantization-aware training need ``tf_keras`` models.
    This rebuilds a ``keras.Sequential`` or Functional ``keras.Model`` layer
    by layer with the ``tf_keras`` class of the same name and configuration
    (layer names kept), then copies every weight, so the result computes the
    same outputs (up to float rounding). Nested Sequential/Functional models
    are converted recursively; layers called several times stay shared.

    Every activation becomes the same function: one tf_keras has under the
    same name only if it computes the same values (checked), else Keras 3's
    formula (``hard_sigmoid``, ``hard_silu``, ... differ or are missing in
    tf_keras), else the conversion is refused. Finally the converted model
    is run on random inputs beside the original: outputs differing beyond
    float rounding are refused too, never returned.

    Supported layers: see `SUPPORTED_LAYERS` (Dense, Conv1D/2D and their
    transposes, DepthwiseConv2D, SeparableConv1D/2D, BatchNormalization,
    LayerNormalization, Activation/ReLU/Softmax/LeakyReLU/ELU/PReLU,
    pooling, Flatten, Reshape, Dropout, Add/Concatenate and the other merge
    layers, padding, cropping, up-sampling, Rescaling, Embedding, ...).
    Regularizers and constraints are converted (training behaves the same);
    initializers are converted when ``tf_keras`` has them, else left at the
    ``tf_keras`` default (they no longer matter: the weights are copied).
    The result is not compiled.

    Args:
        model: A built Keras 3 ``Sequential`` or Functional model, or a
            ``tf_keras`` model (returned unchanged, the same object).

    Returns:
        A ``tf_keras.Sequential`` for a Sequential model, else a
        ``tf_keras.Model`` (Functional), with the same name.

    Raises:
        TypeError: ``model`` is not a Keras model.
        ValueError: The model cannot be converted: it is subclassed, not
            built, or holds a custom layer, a layer type not in
            `SUPPORTED_LAYERS`, a ``keras.ops`` call (not a layer), or a
            setting ``tf_keras`` lacks (LoRA, Keras 3 quantization,
            ``rms_scaling``...), an activation tf_keras cannot compute the
            same way, or the converted model's outputs differ from the
            original's. The message names the layer and its class.

    Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)),
    ...                           keras.layers.Dense(3, activation="relu")])
    >>> converted = to_tf_keras(model)
    >>> type(converted).__module__.startswith("tf_keras")
    True
    >>> x = np.ones((2, 4), "float32")
    >>> bool(np.allclose(model(x), converted(x)))
    True
    >>> to_tf_keras(converted) is converted
    True
    """
    flavour = _introspect.check_model(model, "model", "convert")
    if flavour == _compat.TF_KERAS:
        return model
    converted = _Converter().model(model)
    _check_same_outputs(model, converted)
    return converted


class _Converter:
    """One conversion: keeps the converted layers so shared ones stay shared."""

    def __init__(self):
        import tf_keras

        self.tf_keras = tf_keras
        self.converted = {}  # id(Keras 3 layer) -> tf_keras layer
        self.pairs = []  # (Keras 3 layer, tf_keras layer) for weight copy

    # -- models ----------------------------------------------------------------
    def model(self, model):
        kind = _model_kind(model)
        if not model.built or not _safe_inputs(model):
            raise ValueError(
                f"Model {model.name!r} is not built, so its input shape is "
                "unknown: start it with `keras.Input(shape)` or call "
                "`model.build(input_shape)` (or the model on a batch) first."
            )
        if kind == "sequential":
            converted = self._sequential(model)
        else:
            converted = self._functional(model)
        converted.trainable = model.trainable
        for source, target in self.pairs:
            self._copy_weights(source, target)
        self.pairs = []
        return converted

    def _inputs(self, model):
        k = self.tf_keras
        inputs = []
        for tensor, name in zip(model.inputs, _input_names(model)):
            if getattr(tensor, "sparse", False) or getattr(tensor, "ragged", False):
                raise ValueError(
                    f"Input {name!r} of model {model.name!r} is sparse or "
                    "ragged; to_tf_keras converts dense inputs only."
                )
            shape = tuple(tensor.shape)
            inputs.append(k.Input(shape=shape[1:], batch_size=shape[0],
                                  dtype=_dtype_name(tensor.dtype), name=name))
        return inputs

    def _sequential(self, model):
        k = self.tf_keras
        layers = [self.layer(layer, model) for layer in model.layers]
        return k.Sequential(self._inputs(model) + layers, name=model.name)

    def _functional(self, model):
        import keras

        inputs = self._inputs(model)
        packed = keras.tree.pack_sequence_as(model.input, inputs)

        def call(operation, *args, **kwargs):
            return operation(*args, **kwargs)

        # No public route replays a Keras 3 Functional graph with tf_keras
        # layers and tensors: see `_keras_private`.
        outputs = _keras_private.run_through_graph(
            model, packed, operation_fn=lambda op: self.layer(op, model),
            call_fn=call,
        )
        return self.tf_keras.Model(packed, outputs, name=model.name)

    # -- layers ----------------------------------------------------------------
    def layer(self, layer, model):
        import keras

        key = id(layer)
        if key in self.converted:
            return self.converted[key]
        if isinstance(layer, keras.Model):
            converted = self._child().model(layer)
        else:
            converted = self._plain_layer(layer, model)
            self.pairs.append((layer, converted))
        self.converted[key] = converted
        return converted

    def _child(self):
        child = _Converter.__new__(_Converter)
        child.tf_keras = self.tf_keras
        child.converted = self.converted
        child.pairs = []
        return child

    def _plain_layer(self, layer, model):
        import keras

        cls = type(layer)
        name = cls.__name__
        where = (f"layer {getattr(layer, 'name', '?')!r} ({cls.__module__}."
                 f"{cls.__qualname__}) of model {model.name!r}")
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                f"Cannot convert {where}: it is a `keras.ops` call, not a "
                "layer, so tf_keras has no equivalent. Use the matching layer "
                "instead (e.g. `keras.layers.Add()([a, b])` rather than "
                "`keras.ops.add(a, b)` or `a + b`), or build the model with "
                "tf_keras directly."
            )
        builtin = getattr(keras.layers, name, None)
        if builtin is None or cls is not builtin:
            raise ValueError(
                f"Cannot convert {where}: it is a custom layer. to_tf_keras "
                "rebuilds standard Keras layers only (see "
                "keras_distill.convert.SUPPORTED_LAYERS); write the layer for "
                "tf_keras and build the model with tf_keras directly."
            )
        if name not in _SUPPORTED_LAYERS:
            raise ValueError(
                f"Cannot convert {where}: {name} is not supported by "
                "to_tf_keras (supported: "
                f"{', '.join(SUPPORTED_LAYERS)}). Build the model with "
                "tf_keras directly, or replace the layer."
            )
        quantization = getattr(layer, "quantization_mode", None)
        if quantization:
            raise ValueError(
                f"Cannot convert {where}: it was quantized by Keras 3 "
                f"(quantization_mode={quantization!r}); tf_keras has no such "
                "layer. Convert the float model, then use "
                "keras_distill.quantization.quantize for TFMOT QAT."
            )
        config = self._config(layer, name, where)
        target = getattr(self.tf_keras.layers, name)
        try:
            return target.from_config(config)
        except Exception as error:  # noqa: BLE001 - TypeError, ValueError, ...
            raise ValueError(
                f"Cannot convert {where}: tf_keras.layers.{name} rejected its "
                f"configuration ({type(error).__name__}: {error}). Build the "
                "model with tf_keras directly."
            ) from error

    def _config(self, layer, name, where):
        spec = _SUPPORTED_LAYERS[name]
        config = dict(layer.get_config())
        for key, allowed in spec["drop"].items():
            if key not in config:
                continue
            value = config.pop(key)
            if key == "dtype":
                value = _dtype_name(value)
            if value != allowed:
                raise ValueError(
                    f"Cannot convert {where}: {key}={value!r} has no tf_keras "
                    f"equivalent (only {key}={allowed!r} can be converted)."
                )
        for old, new in spec["rename"].items():
            if old in config:
                config[new] = config.pop(old)
        if "dtype" in config:
            config["dtype"] = _dtype_name(config["dtype"])
        accepted = _accepted_keys(getattr(self.tf_keras.layers, name))
        for key in list(config):
            value = config[key]
            if key.endswith("_initializer"):
                config[key] = self._initializer(value)
                if config[key] is None:
                    del config[key]
            elif key.endswith("_regularizer") or key.endswith("_constraint"):
                config[key] = self._regularizer_or_constraint(key, value, where)
            elif key == "activation":
                config[key] = self._activation(value, layer, where)
            elif accepted is not None and key not in accepted and value is None:
                del config[key]  # a Keras 3-only option left unset
        return config

    def _initializer(self, value):
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, dict) or "class_name" not in value:
            return None
        inner = {k: v for k, v in (value.get("config") or {}).items()
                 if k not in _KERAS3_ONLY_INITIALIZER_KEYS or v is not None}
        try:
            return self.tf_keras.initializers.serialize(
                self.tf_keras.initializers.get(
                    {"class_name": value["class_name"], "config": inner}
                )
            )
        except Exception:  # noqa: BLE001 - irrelevant once weights are copied
            return None

    def _regularizer_or_constraint(self, key, value, where):
        if value is None:
            return None
        module = (self.tf_keras.regularizers if key.endswith("_regularizer")
                  else self.tf_keras.constraints)
        try:
            if isinstance(value, str):
                obj = module.get(value)
            else:
                obj = module.get({"class_name": value["class_name"],
                                  "config": value.get("config") or {}})
            return module.serialize(obj)
        except Exception as error:  # noqa: BLE001
            raise ValueError(
                f"Cannot convert {where}: its {key} {value!r} has no tf_keras "
                f"equivalent ({type(error).__name__}: {error}). Use a built-in "
                "regularizer/constraint (e.g. keras.regularizers.L2)."
            ) from error

    def _activation(self, value, layer, where):
        """The tf_keras activation computing what the Keras 3 one does."""
        import keras

        function = getattr(layer, "activation", None)
        if isinstance(value, str):
            name = value
            function = keras.activations.get(value)
        else:  # a function serialized by reference, e.g. tf.nn.softmax
            name = getattr(function, "__name__", None)
            name = _TF_FUNCTION_NAMES.get(name, name)
            if not callable(function) or not name:
                raise ValueError(
                    f"Cannot convert {where}: its activation {value!r} is not "
                    "a built-in Keras activation. Use a built-in activation."
                )
        candidates = [name]
        if name in _KERAS3_FORMULAS:
            candidates.append(_register_formula(self.tf_keras, name))
        for candidate in candidates:
            if self._same_as(function, candidate):
                return candidate
        raise ValueError(
            f"Cannot convert {where}: its activation {name!r} has no tf_keras "
            "twin computing the same values (tf_keras lacks it or uses another "
            "formula). Use another built-in activation, or build the model "
            "with tf_keras directly."
        )

    def _same_as(self, function, candidate):
        """Whether tf_keras's ``candidate`` computes Keras 3's ``function``."""
        key = (function, candidate)
        if key not in _SAME_AS_KERAS3:
            import keras
            import tensorflow as tf

            x = np.linspace(-8.0, 8.0, 96, dtype="float32").reshape(4, 24)
            try:
                theirs = self.tf_keras.activations.get(candidate)
                expected = np.asarray(function(keras.ops.convert_to_tensor(x)))
                got = np.asarray(theirs(tf.constant(x)))
                same = expected.shape == got.shape and np.allclose(
                    got, expected, rtol=1e-5, atol=1e-6)
            except Exception:  # noqa: BLE001 - missing in tf_keras, shape errors
                same = False
            _SAME_AS_KERAS3[key] = same
        return _SAME_AS_KERAS3[key]

    @staticmethod
    def _copy_weights(source, target):
        weights = source.get_weights()
        if not target.built:
            raise ValueError(
                f"Cannot convert layer {source.name!r}: its tf_keras twin was "
                "not built (the layer was never called in the model)."
            )
        try:
            target.set_weights(weights)
        except ValueError as error:
            raise ValueError(
                f"Cannot convert layer {source.name!r} "
                f"({type(source).__name__}): its weights do not fit the "
                f"tf_keras layer ({error})."
            ) from error


def _register_formula(tf_keras, name):
    """Registers Keras 3's formula for ``name`` with tf_keras; its name there."""
    if name not in _REGISTERED:
        import tensorflow as tf

        formula = _KERAS3_FORMULAS[name]

        def activation(x):
            return formula(tf, x)

        activation.__name__ = name
        _REGISTERED[name] = tf_keras.saving.register_keras_serializable(
            package="keras_distill", name=name)(activation)
    return f"keras_distill>{name}"


def _check_same_outputs(model, converted):
    """Refuses a conversion whose outputs differ from the original's on random
    inputs (float rounding allowed: 1e-4, or 2e-2 for 16-bit outputs,
    relative to the largest output)."""
    import keras

    inputs = _random_inputs(model)
    try:
        expected = [np.asarray(t) for t in keras.tree.flatten(model(inputs, training=False))]
    except Exception:  # noqa: BLE001 - e.g. unknown dims too small for the model
        return  # the original itself cannot run on a random probe
    got = [np.asarray(t) for t in keras.tree.flatten(converted(inputs, training=False))]
    for index, (a, b) in enumerate(zip(expected, got)):
        tolerance = 2e-2 if a.dtype.itemsize <= 2 else 1e-4
        a, b = a.astype("float64"), b.astype("float64")
        finite = np.isfinite(a)
        scale = max(1.0, float(np.max(np.abs(a[finite]), initial=0.0)))
        same_shape = a.shape == b.shape
        if same_shape and np.array_equal(finite, np.isfinite(b)) and np.allclose(
                a[finite], b[finite], rtol=0, atol=tolerance * scale):
            continue
        difference = (float(np.max(np.abs(a - b), initial=0.0)) if same_shape
                      else f"shape {b.shape} instead of {a.shape}")
        raise ValueError(
            f"to_tf_keras refused its result: the converted model computes "
            f"other values than {model.name!r} on random inputs (output "
            f"{index}: largest difference {difference}, allowed "
            f"{tolerance * scale:.3g}). A layer behaves differently in "
            "tf_keras; build the model with tf_keras directly (and please "
            "report the model to keras-distill)."
        )


def _random_inputs(model):
    """A small random batch for ``model``'s inputs (8 for unknown dims;
    integer inputs below the smallest ``Embedding`` input_dim)."""
    import keras

    rng = np.random.default_rng(0)
    limits = [layer.input_dim for layer in _introspect.iter_layers(model)
              if type(layer).__name__ == "Embedding"]
    arrays = []
    for tensor in model.inputs:
        shape = tuple(tensor.shape)
        shape = (shape[0] or 2,) + tuple(d or 8 for d in shape[1:])
        dtype = np.dtype(_dtype_name(tensor.dtype))
        if dtype.kind in "iu":
            arrays.append(rng.integers(0, min(limits, default=2), size=shape).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(rng.random(shape) < 0.5)
        else:
            arrays.append(rng.normal(size=shape).astype(dtype))
    if len(arrays) == 1:
        return arrays[0]
    return keras.tree.pack_sequence_as(model.input, arrays)


def _model_kind(model):
    """``"sequential"`` or ``"functional"``; raises for subclassed models."""
    import keras

    if isinstance(model, keras.Sequential) and type(model).call is keras.Sequential.call:
        return "sequential"
    # keras.Model(inputs, outputs) makes a Functional, a class Keras does not
    # export: found by name among the model's classes.
    functional = next((c for c in type(model).__mro__ if c.__name__ == "Functional"
                       and c.__module__.startswith("keras.")), None)
    if functional is not None and not isinstance(model, keras.Sequential) \
            and type(model).call is functional.call:
        return "functional"
    cls = type(model)
    raise ValueError(
        f"Cannot convert model {model.name!r} ({cls.__module__}."
        f"{cls.__qualname__}): it is a subclassed model, whose computation is "
        "Python code in `call` that cannot be rebuilt layer by layer. Build "
        "it as a keras.Sequential or a Functional model "
        "(`keras.Model(inputs, outputs)`) of standard layers, or write it "
        "with tf_keras directly, to prune or quantize it with TFMOT."
    )


def _input_names(model):
    """The names of the input layers of ``model.inputs``, by public API.

    A Functional model lists its ``InputLayer`` objects in ``layers``; a
    Sequential model hides its own, but names it in its config.
    """
    by_tensor = {id(layer.output): layer.name for layer in model.layers
                 if type(layer).__name__ == "InputLayer"}
    names = [by_tensor.get(id(tensor)) for tensor in model.inputs]
    if None in names and len(names) == 1:
        try:
            first = model.get_config()["layers"][0]
            if first["class_name"] == "InputLayer":
                names = [first["config"]["name"]]
        except Exception:  # noqa: BLE001 - e.g. a layer without get_config
            pass
    return [name or tensor.name for name, tensor in zip(names, model.inputs)]


def _safe_inputs(model):
    try:
        return model.inputs
    except (AttributeError, ValueError):
        return None


def _dtype_name(dtype):
    if isinstance(dtype, dict):
        return (dtype.get("config") or {}).get("name", "float32")
    name = getattr(dtype, "name", dtype)
    return str(name)


def _accepted_keys(cls):
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None  # **kwargs: let from_config decide
    return set(params)
