"""Feature taps: a network's output and named intermediate outputs, one pass.

A *tap* makes a network return some of its intermediate outputs beside its
own output, computed in the same single forward pass. `tap_model` builds,
once, a Functional model that shares the user's layers (and so their
weights) and returns ``[*outputs, *features]``; `Taps` wraps that model (or a
user's ``features_fn`` for subclassed models) for the distillers.

Layers are named as in ``model.get_layer``; a layer inside a nested
Functional or Sequential sub-model is named by its path,
``"backbone/conv3"`` (any depth).

The re-trace that builds the tap model (public Keras API only: a
``clone_model`` of the model's own graph with its own layers, recording
the calls of the wanted layers, in both Keras flavours) lives in
`keras_distill._tap_graph`.
"""


import numpy as np

from keras_distill import _compat
from keras_distill._validation import check_layer_name, identifier
from keras_distill._tap_graph import build as _build
from keras_distill._tap_graph import flatten as _flatten


# ------------------------------------------------------------------ helpers
def _static_shape(tensor):
    shape = tensor.shape
    if hasattr(shape, "as_list"):
        return None if shape.rank is None else tuple(shape.as_list())
    return tuple(shape)


def _single_tensor(value, role):
    if isinstance(value, (dict, list, tuple)):
        flat = _flatten(value)
        if len(flat) != 1:
            raise ValueError(
                f"The {role} returned {len(flat)} outputs; Distiller "
                "distils single-output models. Build a model that returns "
                "only the class scores to distil."
            )
        return flat[0]
    return value



# --------------------------------------------------------------- public API
def tap_model(model, layer_names):
    """A model returning a network's outputs and named intermediate outputs.

    Builds, once, a Functional model of the same Keras flavour that maps the
    inputs of ``model`` to ``[*model.outputs, *features]``, one feature per
    name in ``layer_names``, all computed in a single forward pass. It
    shares the layers (and weights) of ``model``: training it trains
    ``model``. ``model`` must be a Functional model or a built Sequential
    model; layers of nested Functional/Sequential sub-models are named by
    path (``"backbone/conv3"``, any depth). Subclassed models cannot be
    tapped by name: see `Taps` and its ``features_fn``.

    Args:
        model: A ``keras.Model`` or ``tf_keras.Model``.
        layer_names: Layer names (as in ``model.get_layer``) or paths.

    Returns:
        A Functional model with ``len(model.outputs) + len(layer_names)``
        outputs (a list).

    Raises:
        TypeError: ``model`` is not a Keras model, or a name is not a
            non-empty string.
        ValueError: an unknown name (the message lists the closest names),
            a subclassed or unbuilt model, a path into a layer that is not
            a model, a layer called more than once (or not at all) in the
            forward pass, or a layer with several outputs.

    Example:
    >>> import keras, numpy as np
    >>> backbone = keras.Sequential([keras.Input((4,)),
    ...                              keras.layers.Dense(8, name="hidden")],
    ...                             name="backbone")
    >>> x = keras.Input((4,))
    >>> net = keras.Model(x, keras.layers.Dense(2, name="out")(backbone(x)))
    >>> tapped = tap_model(net, ["backbone/hidden", "out"])
    >>> logits, hidden, out = tapped(np.zeros((3, 4), "float32"))
    >>> tuple(logits.shape), tuple(hidden.shape), tuple(out.shape)
    ((3, 2), (3, 8), (3, 2))
    >>> tap_model(net, ["backbone/hiden"])
    Traceback (most recent call last):
    ...
    ValueError: The model ('functional...') has no layer named 'backbone/hiden'. Did you mean 'backbone/hidden'...
    """
    _compat.model_flavour(model, "model")
    names = [check_layer_name(n, "layer_names") for n in layer_names]
    return _build(model, names, "model")[0]


def _probe_shapes(taps, model, input_shape):
    """Feature shapes from one call of ``features_fn`` on zeros."""
    if input_shape is None:
        try:
            input_shape = tuple(model.input_shape)[1:]
        except (AttributeError, ValueError, TypeError):
            input_shape = None
    if input_shape is None:
        raise ValueError(
            f"The {taps.role} ({model.name!r}) has no known input shape, "
            "so the shapes of the features of `features_fn` cannot be "
            "found. Pass `input_shape=` (the shape of one example, "
            "without the batch dimension)."
        )
    input_shape = tuple(input_shape)
    if any(d is None for d in input_shape):
        raise ValueError(
            f"`input_shape` must be fully known to probe `features_fn`, "
            f"got {input_shape}. Pass `input_shape=` with every dimension."
        )
    zeros = np.zeros((2,) + input_shape, "float32")
    if _compat.flavour_of(model) == _compat.KERAS3:
        import keras

        zeros = keras.ops.convert_to_tensor(zeros)
    else:
        import tensorflow as tf

        zeros = tf.convert_to_tensor(zeros)
    _, features = _call_features_fn(taps, zeros, False)
    shapes = {}
    for path, key in zip(taps.paths, taps.keys):
        shape = _static_shape(features[key])
        shapes[path] = None if shape is None else (None,) + tuple(shape[1:])
    return shapes


def _call_features_fn(taps, x, training):
    """``(output, {key: feature})`` from the user's ``features_fn``."""
    result = taps.features_fn(x, training)
    if not (isinstance(result, (tuple, list)) and len(result) == 2
            and isinstance(result[1], dict)):
        raise ValueError(
            f"The {taps.role}'s `features_fn` must return `(output, "
            f"{{path: tensor}})`, got {type(result).__name__}."
        )
    output, by_path = result
    missing = [p for p in taps.paths if p not in by_path]
    if missing:
        raise ValueError(
            f"The {taps.role}'s `features_fn` returned no feature for "
            f"{missing}; it returned {list(by_path)}."
        )
    return (_single_tensor(output, taps.role),
            {key: by_path[path] for path, key in zip(taps.paths, taps.keys)})


class Taps:
    """One network's taps: ``(output, {feature key: tensor})`` per call.

    For a Functional or built Sequential model (either flavour), the
    features are tapped by name with `tap_model` (one forward pass, shared
    layers). A subclassed model's layers cannot be found by name; pass
    ``features_fn(x, training) -> (output, {path: tensor})`` instead, which
    computes the output and every path's feature in one pass (any string
    serves as a path then). The feature shapes are found by calling it
    once, with ``training=False``, on zeros of shape ``(2, *input_shape)``
    (float32); the batch dimension is reported as ``None``.

    Args:
        model: A ``keras.Model`` or ``tf_keras.Model``.
        paths: Layer names or paths (``"backbone/conv3"``) to tap.
        role: What the model is (``"teacher"``, ``"student"``...), for
            error messages.
        features_fn: Optional ``fn(x, training)`` returning ``(output,
            {path: tensor})``; required for subclassed models.
        input_shape: With ``features_fn``: the shape of one input example,
            without the batch dimension (as in ``keras.Input(shape)``).
            Defaults to ``model.input_shape`` without its batch dimension.

    Attributes:
        paths: The paths, in order.
        keys: One unique key per path: the path with every character
            other than ``[0-9A-Za-z_]`` replaced by ``_`` (and ``_``
            appended while it collides with an earlier key).
        shapes: ``{path: static shape tuple}``, ``None`` for unknown
            dimensions.
        model: The tap model (or ``model`` itself without paths or with
            ``features_fn``).

    Example:
    >>> import keras, numpy as np
    >>> net = keras.Sequential([keras.Input((4,)),
    ...                         keras.layers.Dense(8, name="hidden"),
    ...                         keras.layers.Dense(2, name="out")])
    >>> taps = Taps(net, ["hidden"], "student")
    >>> taps.keys, taps.shapes
    (['hidden'], {'hidden': (None, 8)})
    >>> out, features = taps(np.zeros((3, 4), "float32"), training=False)
    >>> tuple(out.shape), tuple(features["hidden"].shape)
    ((3, 2), (3, 8))

    A subclassed model, with ``features_fn``:

    >>> class Net(keras.Model):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.hidden = keras.layers.Dense(8)
    ...         self.out = keras.layers.Dense(2)
    ...     def call(self, x, training=False):
    ...         return self.out(self.hidden(x))
    >>> sub = Net()
    >>> def features_fn(x, training):
    ...     h = sub.hidden(x)
    ...     return sub.out(h), {"hidden": h}
    >>> taps = Taps(sub, ["hidden"], "teacher", features_fn=features_fn,
    ...             input_shape=(4,))
    >>> taps.shapes
    {'hidden': (None, 8)}
    """

    def __init__(self, model, paths, role="model", features_fn=None,
                 input_shape=None):
        _compat.model_flavour(model, role)
        self.paths = [check_layer_name(p, "paths") for p in paths]
        self.keys = []
        for path in self.paths:
            key = identifier(path)
            while key in self.keys:
                key += "_"
            self.keys.append(key)
        self.role = role
        self.features_fn = features_fn
        self.num_outputs = None
        if features_fn is not None and not callable(features_fn):
            raise TypeError(
                "`features_fn` must be a callable `fn(x, training)` returning "
                f"`(output, {{path: tensor}})`, got {features_fn!r}."
            )
        if not self.paths:
            self.model, self.shapes = model, {}
            return
        if features_fn is not None:
            self.model = model
            self.shapes = _probe_shapes(self, model, input_shape)
            return
        self.model, self.num_outputs, features = _build(model, self.paths, role)
        self.shapes = {
            path: _static_shape(f) for path, f in zip(self.paths, features)
        }

    def key(self, path):
        """The feature key of a path.

        Example:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((4,)),
        ...                         keras.layers.Dense(2, name="out")])
        >>> Taps(net, ["out"], "student").key("out")
        'out'
        """
        return self.keys[self.paths.index(path)]

    def __call__(self, x, training):
        """``(output, {key: feature})`` of one forward pass on ``x``.

        Example:
        >>> import keras, numpy as np
        >>> net = keras.Sequential([keras.Input((4,)),
        ...                         keras.layers.Dense(2, name="out")])
        >>> out, features = Taps(net, [], "student")(np.zeros((1, 4)), False)
        >>> tuple(out.shape), features
        ((1, 2), {})
        """
        if not self.paths:
            return _single_tensor(self.model(x, training=training), self.role), {}
        if self.features_fn is not None:
            return _call_features_fn(self, x, training)
        flat = _flatten(self.model(x, training=training))
        out = _single_tensor(flat[:self.num_outputs], self.role)
        return out, dict(zip(self.keys, flat[self.num_outputs:]))
