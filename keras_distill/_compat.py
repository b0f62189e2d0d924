"""The one place that knows Keras 3 (``keras``) from Keras 2 (``tf_keras``).

TensorFlow 2.21 ships Keras 3 as ``tf.keras``; TensorFlow Model Optimization
(TFMOT) only accepts Keras 2 models, which live in the separate ``tf_keras``
package. Users have models of both flavours, so everything in keras_distill
that needs to know which one it holds asks this module.

``tf_keras`` is never imported here unless the user already imported it (a
``tf_keras`` model cannot exist otherwise) or explicitly asks for that flavour,
so importing keras_distill does not load Keras 2 or TFMOT.
"""

import os
import sys

KERAS3 = "keras"
TF_KERAS = "tf_keras"
FLAVOURS = (KERAS3, TF_KERAS)


def keras_module(flavour):
    """Returns the Keras package of a flavour.

    Args:
        flavour: ``"keras"`` (Keras 3) or ``"tf_keras"`` (Keras 2).

    Returns:
        The imported package, ``keras`` or ``tf_keras``.

    Example:
    >>> keras_module("keras").__name__
    'keras'
    """
    if flavour == KERAS3:
        import keras

        return keras
    if flavour == TF_KERAS:
        import tf_keras

        return tf_keras
    raise ValueError(
        f"Unknown Keras flavour {flavour!r}: expected one of {FLAVOURS}."
    )


def flavour_of(obj):
    """Tells which Keras flavour a model or layer belongs to.

    Args:
        obj: Any object.

    Returns:
        ``"keras"`` for a Keras 3 layer/model, ``"tf_keras"`` for a Keras 2
        (``tf_keras``) one, ``None`` for anything else.

    Example:
    >>> import keras
    >>> flavour_of(keras.Sequential([keras.layers.Dense(2)]))
    'keras'
    >>> flavour_of("not a model") is None
    True
    """
    return _flavour_of_instance(obj, lambda k: k.layers.Layer)


def _flavour_of_instance(obj, base_class):
    """The flavour whose ``base_class(module)`` ``obj`` is an instance of.

    tf_keras is consulted only if already imported: no tf_keras object can
    exist otherwise.
    """
    import keras

    if isinstance(obj, base_class(keras)):
        return KERAS3
    tf_keras = sys.modules.get("tf_keras")
    if tf_keras is not None and isinstance(obj, base_class(tf_keras)):
        return TF_KERAS
    return None


def flavour_of_loss(obj):
    """Tells which flavour's ``Loss`` class an object is an instance of.

    Args:
        obj: Any object.

    Returns:
        ``"keras"``, ``"tf_keras"``, or ``None`` (a plain function, say).

    Example:
    >>> import keras
    >>> flavour_of_loss(keras.losses.KLDivergence())
    'keras'
    >>> flavour_of_loss(keras.losses.kl_divergence) is None
    True
    """
    return _flavour_of_instance(obj, lambda k: k.losses.Loss)


def model_flavour(model, argument):
    """Returns the flavour of a Keras model or raises a clear ``TypeError``.

    Args:
        model: The object that should be a Keras model.
        argument: The name of the user's argument, for the error message.

    Returns:
        ``"keras"`` or ``"tf_keras"``.

    Example:
    >>> import keras
    >>> model_flavour(keras.Sequential([keras.layers.Dense(2)]), "student")
    'keras'
    """
    flavour = flavour_of(model)
    if flavour == KERAS3:
        import keras

        ok = isinstance(model, keras.Model)
    elif flavour == TF_KERAS:
        ok = isinstance(model, sys.modules["tf_keras"].Model)
    else:
        ok = False
    if not ok:
        raise TypeError(
            f"`{argument}` must be a Keras model (a `keras.Model` or a "
            f"`tf_keras.Model`), got {type(model).__module__}."
            f"{type(model).__qualname__}. Wrap layers or functions in a "
            "model first, e.g. `keras.Sequential([...])`."
        )
    return flavour


def output_layer(model):
    """Returns the layer producing a model's (single) output, or ``None``.

    Works for Sequential and Functional models of both flavours; subclassed
    models have no static graph, so ``None`` is returned for them.

    Args:
        model: A Keras model of either flavour.

    Returns:
        The last layer, or ``None`` when it cannot be known without calling
        the model.

    Example:
    >>> import keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> output_layer(m).__class__.__name__
    'Dense'
    """
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    layers = getattr(model, "layers", None)
    if outputs and len(outputs) == 1 and isinstance(layers, list):
        for layer in reversed(layers):
            if any(output is outputs[0] for output in _outputs_of(layer)):
                return layer
        # Keras 3 shows only a layer's first call (`layer.output`); a layer
        # called again to give the output is named in the model's config.
        layer = _config_output_layer(model)
        if layer is not None:
            return layer
    if type(model).__name__ == "Sequential" and layers:
        return layers[-1]
    return None


def _config_output_layer(model):
    """The layer ``model.get_config()["output_layers"]`` names, or ``None``."""
    try:
        entry = model.get_config()["output_layers"]
        if entry and isinstance(entry[0], (list, tuple)):
            (entry,) = entry
        return model.get_layer(entry[0])
    except Exception:  # noqa: BLE001 - not serialisable, several outputs, ...
        return None


def _outputs_of(layer):
    """The output tensors of ``layer``'s calls in graphs, by public API.

    Keras 3: ``layer.output`` (its first call). tf_keras: ``get_output_at(i)``
    for every call (a nested tf_keras model's first "call" is the model
    itself, so its call in the outer graph is the second).
    """
    found = []

    def add(output):
        if isinstance(output, dict):
            output = list(output.values())
        if isinstance(output, (list, tuple)):
            found.extend(output)
        else:
            found.append(output)

    get_output_at = getattr(layer, "get_output_at", None)  # tf_keras only
    if get_output_at is None:
        try:
            add(layer.output)
        except (AttributeError, ValueError, RuntimeError):
            pass
        return found
    index = 0
    while True:
        try:
            add(get_output_at(index))
        except (AttributeError, ValueError, RuntimeError, IndexError):
            return found
        index += 1


def ends_in_softmax(model):
    """Tells whether a model's last layer applies a softmax.

    Detected: a ``Softmax`` layer, an ``Activation("softmax")`` layer, or any
    layer (``Dense``, ``Conv2D``, ...) built with ``activation="softmax"``, in
    either Keras flavour. Nested models are followed into their last layer.

    Args:
        model: A Keras model of either flavour.

    Returns:
        ``True``, ``False``, or ``None`` when the model is subclassed and its
        last operation cannot be seen.

    Example:
    >>> import keras
    >>> m = keras.Sequential([keras.Input((3,)),
    ...                       keras.layers.Dense(2, activation="softmax")])
    >>> ends_in_softmax(m)
    True
    """
    layer = output_layer(model)
    if layer is None:
        return None
    if flavour_of(layer) is not None and hasattr(layer, "layers") and (
        layer is not model
    ):
        return ends_in_softmax(layer)
    if type(layer).__name__ == "Softmax":
        return True
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    if name is None and isinstance(activation, str):
        name = activation
    return name == "softmax"


def single_output_shape(model):
    """Returns the static shape of a model's single output, or ``None``.

    Args:
        model: A Keras model of either flavour.

    Returns:
        A tuple (``None`` for unknown dimensions), or ``None`` when the model
        is not built with a known output.

    Example:
    >>> import keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> single_output_shape(m)
    (None, 2)
    """
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs or len(outputs) != 1:
        return None
    return tuple(outputs[0].shape)


def import_tfmot():
    """Imports TensorFlow Model Optimization without switching ``tf.keras``.

    TFMOT's import sets ``os.environ["TF_USE_LEGACY_KERAS"] = "1"``. If
    ``tf.keras`` had not been touched yet, that turns ``tf.keras`` into
    ``tf_keras`` for the rest of the process, and child processes inherit
    the variable. This function resolves ``tf.keras`` first (to what it
    would have been without TFMOT), imports TFMOT (which then uses
    ``tf_keras`` internally, as always), and puts ``TF_USE_LEGACY_KERAS``
    back as it was. TFMOT reads the variable only at import, so it works
    the same.

    Returns:
        The ``tensorflow_model_optimization`` module.

    Example:
    >>> import os
    >>> before = os.environ.get("TF_USE_LEGACY_KERAS")
    >>> tfmot = import_tfmot()
    >>> tfmot.__name__, os.environ.get("TF_USE_LEGACY_KERAS") == before
    ('tensorflow_model_optimization', True)
    """
    module = sys.modules.get("tensorflow_model_optimization")
    if module is not None and hasattr(module, "sparsity"):
        return module
    import tensorflow as tf

    getattr(tf.keras, "version", None)  # resolve the lazy tf.keras now
    saved = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization as tfmot
    finally:
        if saved is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = saved
    return tfmot
