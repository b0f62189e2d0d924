"""Walking a model's layers, and the names TFMOT's wrappers go by.

Two walkers serve the whole package:

- `iter_layers`: the layer tree, depth first: a model's ``layers``, the
  layers of nested models, the layer a wrapper holds (TFMOT's
  ``PruneLowMagnitude`` and quantize wrappers, ``Bidirectional``, ...) and
  the sublayers a custom layer tracks. The caller may stop the descent at
  chosen layers.
- `iter_submodules`: a model and everything nested in it, however deep
  (attributes of custom layers and of subclassed models such as a
  `keras_distill.Distiller` included): for "does it hold a layer of class
  X?" questions (see `holds`).

TFMOT wrappers are recognised by class name, so nothing here imports TFMOT
or ``tf_keras``.

Example:
>>> import keras
>>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="a")],
...                          name="inner")
>>> model = keras.Sequential([keras.Input((3,)), inner,
...                           keras.layers.Dense(2, name="b")])
>>> [layer.name for layer in iter_layers(model)]
['inner', 'a', 'b']
"""

import sys

from keras_distill import _compat, _keras_private

PRUNING_WRAPPER = "PruneLowMagnitude"
"""Class name of TFMOT's pruning wrapper."""

QAT_LAYERS = frozenset({"QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer"})
"""Class names of the layers TFMOT's ``quantize_apply`` puts in a QAT model."""

QAT_CLASSES = QAT_LAYERS | {"QuantizeAnnotate"}
"""`QAT_LAYERS` and TFMOT's annotation wrapper (a model on its way to QAT)."""

WRAPPERS = frozenset({PRUNING_WRAPPER, "QuantizeWrapper", "QuantizeWrapperV2",
                      "QuantizeAnnotate"})
"""Class names of the TFMOT wrappers that hold one layer as ``.layer``."""


def iter_layers(model, nested=True):
    """Yields the layers inside ``model``, depth first, each once.

    The children of a layer are its ``layers`` when it has a list of them
    (Sequential, Functional and subclassed models), else the sublayers it
    tracks (the layer a wrapper holds, those a custom layer keeps as
    attributes). ``model`` itself is not yielded.

    Args:
        model: A Keras model or layer of either flavour.
        nested: ``True`` to descend into every layer, ``False`` for the
            direct children of ``model`` only, or a predicate
            ``nested(layer) -> bool`` telling, for each layer yielded,
            whether to descend into it.

    Yields:
        Layers, parents before their children.

    Example:
    >>> import keras
    >>> body = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="a")],
    ...                         name="body")
    >>> model = keras.Sequential([keras.Input((3,)), body,
    ...                           keras.layers.Dense(2, name="b")])
    >>> [layer.name for layer in iter_layers(model, nested=False)]
    ['body', 'b']
    >>> [layer.name for layer in iter_layers(model, nested=lambda l: l.name != "body")]
    ['body', 'b']
    """
    seen = {id(model)}
    stack = list(reversed(_children(model)))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        if nested is True or (callable(nested) and nested(layer)):
            stack.extend(reversed(_children(layer)))


def iter_submodules(model):
    """Yields ``model``, then every layer (or ``tf.Module``) nested in it.

    ``tf_keras`` layers are ``tf.Module`` objects: their public
    ``submodules`` finds everything, attributes of custom layers included.
    Keras 3 layers are not: `iter_layers` walks them.

    Args:
        model: Any Keras model or layer (either flavour).

    Yields:
        ``model`` first, then what it holds, each once.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> [type(m).__name__ for m in iter_submodules(model)]
    ['Sequential', 'Dense']
    """
    yield model
    submodules = tuple(getattr(model, "submodules", ()) or ())
    if not submodules:
        yield from iter_layers(model)
        return
    seen = {id(model)}
    for module in submodules:
        if id(module) not in seen:
            seen.add(id(module))
            yield module


def holds(model, class_names):
    """Whether ``model`` or anything nested in it is of one of these classes.

    Args:
        model: Any Keras model or layer (either flavour).
        class_names: Class names (e.g. `QAT_LAYERS`).

    Returns:
        ``True`` or ``False``.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> holds(model, {"Dense"}), holds(model, {PRUNING_WRAPPER})
    (True, False)
    """
    names = frozenset(class_names)
    return any(type(m).__name__ in names for m in iter_submodules(model))


def is_graph_model(model):
    """Whether a model is a static graph of layers: Sequential or Functional.

    Subclassed models (a `keras_distill.Distiller` among them) have no
    ``inputs`` they were built from; Functional ones do.

    Args:
        model: Any object.

    Returns:
        ``True`` for Sequential and Functional models of either flavour.

    Example:
    >>> import keras
    >>> inputs = keras.Input((3,))
    >>> is_graph_model(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
    True
    >>> is_graph_model(keras.layers.Dense(2))
    False
    """
    if type(model).__name__ == "Sequential":
        return True
    if not isinstance(getattr(model, "layers", None), list):
        return False
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return False
    return bool(inputs)


def check_model(model, argument, action):
    """Returns the flavour of a Keras model; refuses anything else, distillers too.

    A `keras_distill.Distiller` (or any distiller: feature, multi-teacher,
    either flavour) is a Keras model, but the training wrapper around its
    student, not a model to export, prune, quantize or inspect: the message
    says to pass ``distiller.student``.

    Args:
        model: The user's argument.
        argument: Its name, for the message (``"model"``, ``"student"``).
        action: What the function does with it (``"export"``, ``"prune"``).

    Returns:
        ``"keras"`` or ``"tf_keras"``.

    Raises:
        TypeError: ``model`` is not a Keras model, or is a distiller.

    Example:
    >>> import keras
    >>> from keras_distill import Distiller
    >>> student = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> teacher = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> check_model(student, "model", "export")
    'keras'
    >>> check_model(Distiller(student, teacher), "model", "export")
    Traceback (most recent call last):
    ...
    TypeError: `model` is a Distiller ('distiller'), ...
    """
    flavour = _compat.model_flavour(model, argument)
    core = sys.modules.get("keras_distill.core")  # no distiller exists without it
    if core is not None and isinstance(model, core.DistillerCore):
        raise TypeError(
            f"`{argument}` is a {type(model).__name__} ({model.name!r}), the "
            f"training wrapper, not a model to {action}: pass "
            f"`distiller.student` (the model it trains) instead."
        )
    return flavour


def _children(layer):
    """The layers directly inside ``layer``."""
    layers = getattr(layer, "layers", None)
    if isinstance(layers, list):
        return list(layers)
    # No public route lists the sublayers a plain layer tracks (a wrapper's
    # layer, a custom layer's attributes): see `_keras_private`.
    return _keras_private.tracked_sublayers(layer)
