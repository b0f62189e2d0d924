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

from keras_distill import _compat, _keras_private

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


def to_tf_keras(model):
    """Rebuilds a Keras 3 model as a ``tf_keras`` model with the same weights.

    TFMOT pruning and quantization-aware training need ``tf_keras`` models.
    This rebuilds a ``keras.Sequential`` or Functional ``keras.Model`` layer
    by layer with the ``tf_keras`` class of the same name and configuration
    (layer names kept), then copies every weight, so the result computes the
    same outputs (up to float rounding). Nested Sequential/Functional models
    are converted recursively; layers called several times stay shared.

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
            ``rms_scaling``...). The message names the layer and its class.

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
    flavour = _compat.model_flavour(model, "model")
    if flavour == _compat.TF_KERAS:
        return model
    return _Converter().model(model)


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
                config[key] = self._activation(value, where)
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

    def _activation(self, value, where):
        if isinstance(value, str):
            try:
                self.tf_keras.activations.get(value)
            except Exception as error:  # noqa: BLE001
                raise ValueError(
                    f"Cannot convert {where}: activation {value!r} does not "
                    "exist in tf_keras. Use another activation, or an "
                    "Activation layer tf_keras has."
                ) from error
            return value
        raise ValueError(
            f"Cannot convert {where}: its activation {value!r} is not a "
            "built-in Keras activation name. Use a built-in activation."
        )

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
