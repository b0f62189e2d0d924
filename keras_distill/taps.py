"""Feature taps: a network's output and named intermediate outputs, one pass.

A *tap* makes a network return some of its intermediate outputs beside its
own output, computed in the same single forward pass. `tap_model` builds,
once, a Functional model that shares the user's layers (and so their
weights) and returns ``[*outputs, *features]``; `Taps` wraps that model (or a
user's ``features_fn`` for subclassed models) for the distillers.

Layers are named as in ``model.get_layer``; a layer inside a nested
Functional or Sequential sub-model is named by its path,
``"backbone/conv3"`` (any depth).

Only public Keras API is used. The model's graph is *re-traced* with its
own layer objects (so the weights are shared), recording the calls of the
wanted layers; ``view`` below is ``Model(model.input, model.output)``
(``model.inputs``/``model.outputs`` for a Sequential), a plain Functional
model over the same graph. A nested model holding wanted layers is first
tapped on its own, recursively, into ``Model(inputs, [*outputs,
*features])`` (sharing its layers), and that copy is called in its place
in the outer re-trace: the nested layers run once per forward pass and
their features are outputs of that call, in the outer graph.

- Keras 3 (``keras``): ``keras.models.clone_model(view,
  clone_function=lambda layer: layer, call_function=...)``; the
  ``call_function`` records each call of a wanted layer and calls the
  tapped copy instead of a nested model, returning only its outputs.
- Keras 2 (``tf_keras``): ``tf_keras.models.clone_model`` has no
  ``call_function``, so ``clone_function`` returns the tapped copy for a
  nested model (and the layer itself otherwise): tf_keras connects a
  layer's consumers to its outputs by position in the flattened outputs,
  and the copy's own outputs come first, so the features ride along. The
  outputs of the wanted layers in the re-traced graph are read with
  ``layer.get_output_at(index)`` for the nodes the re-trace added to them
  (counted with ``len(layer.inbound_nodes)``).

In both flavours the re-trace also counts the calls of each wanted layer,
so a shared layer (called more than once) is refused instead of tapping an
arbitrary call.
"""

import difflib
import re

import numpy as np

from keras_distill import _compat


# ------------------------------------------------------------------ helpers
def _check_layer_name(value, argument):
    if not isinstance(value, str) or not value or value.strip("/") != value:
        raise TypeError(
            f"`{argument}` must be a layer name (a non-empty string such as "
            f"'block2_conv', or a path into a nested model such as "
            f"'backbone/conv3'), got {value!r}."
        )
    return value


def _sanitize(text):
    return re.sub(r"[^0-9A-Za-z_]", "_", text)


def _static_shape(tensor):
    shape = tensor.shape
    if hasattr(shape, "as_list"):
        return None if shape.rank is None else tuple(shape.as_list())
    return tuple(shape)


def _flatten(structure):
    import keras

    return keras.tree.flatten(structure)


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


def _unlist(values):
    values = list(values)
    return values[0] if len(values) == 1 else values


def _keras_of(model):
    return _compat.keras_module(_compat.flavour_of(model))


def _is_model(layer):
    flavour = _compat.flavour_of(layer)
    return flavour is not None and isinstance(
        layer, _compat.keras_module(flavour).Model
    )


def _graph_io(model):
    """``(inputs, outputs)`` lists of a built graph model, else ``None``."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        return None
    if not inputs or not outputs:
        return None
    return list(inputs), list(outputs)


def _view(model):
    """A plain Functional model over the graph of ``model`` (same layers).

    Re-tracing a view rather than the model itself never instantiates a
    user's Functional subclass or copies its compile state, and turns a
    Sequential model into a Functional one (``call_function`` and
    multi-output replacements need one).
    """
    k = _keras_of(model)
    if isinstance(model, k.Sequential):
        inputs, outputs = _graph_io(model)
        return k.Model(_unlist(inputs), _unlist(outputs), name=model.name)
    return k.Model(model.input, model.output, name=model.name)


def _layer_paths(model, prefix=""):
    """Every tappable path of a model, nested models included."""
    paths = []
    for layer in getattr(model, "layers", []):
        path = prefix + layer.name
        paths.append(path)
        if _is_model(layer) and _graph_io(layer) is not None:
            paths.extend(_layer_paths(layer, path + "/"))
    return paths


def _require_graph(model, role, path):
    if _graph_io(model) is not None:
        return
    where = f"The {role}" if not path else f"The {role}'s sub-model {path!r}"
    if isinstance(model, _keras_of(model).Sequential):
        raise ValueError(
            f"{where} ({model.name!r}) is a Sequential model that is not built "
            "yet, so its layers have no outputs to tap. Start it with an "
            "Input (`keras.Sequential([keras.Input(shape), ...])`) or call it "
            "on a batch first."
        )
    raise ValueError(
        f"{where} ({type(model).__name__} {model.name!r}) is a subclassed "
        "model: its `call` is Python code, so the outputs of its layers "
        "cannot be tapped by name. Build it with the Functional API "
        "(`keras.Model(inputs, outputs)`) or as a Sequential with an Input "
        "(nested Functional/Sequential sub-models can be tapped as "
        "'submodel/layer'), or expose the features as outputs of a "
        "Functional model and tap the layers that produce them, or pass "
        "`features_fn` to `Taps`."
    )


def _find_layer(model, name, role, prefix, top):
    matches = [layer for layer in getattr(model, "layers", []) if layer.name == name]
    if len(matches) == 1:
        return matches[0]
    wanted = prefix + name
    if len(matches) > 1:
        raise ValueError(
            f"The {role} has {len(matches)} layers named {wanted!r}; rename "
            "them so that the tap is unambiguous."
        )
    # Suggestions are searched over the whole (nested) model.
    candidates = _layer_paths(top)
    close = difflib.get_close_matches(wanted, candidates, n=5, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(
            wanted.split("/")[-1], candidates, n=5, cutoff=0.5
        )
    hint = (f" Did you mean {', '.join(repr(c) for c in close)}?"
            if close else "")
    listing = ", ".join(repr(c) for c in candidates[:40])
    if len(candidates) > 40:
        listing += ", ..."
    raise ValueError(
        f"The {role} ({top.name!r}) has no layer named {wanted!r}.{hint} "
        f"Its layers: {listing}."
    )


def _single_output(outputs, role, path):
    flat = _flatten(outputs)
    if len(flat) != 1:
        raise ValueError(
            f"The {role}'s layer {path!r} returns {len(flat)} tensors; tap a "
            "layer with a single output."
        )
    return flat[0]


def _select_call(calls, role, path):
    """The one call of a tapped layer in the re-traced graph."""
    if not calls:
        raise ValueError(
            f"The {role}'s layer {path!r} is not used in its forward pass, "
            "so it has no output to tap."
        )
    if len(calls) > 1:
        raise ValueError(
            f"The {role}'s layer {path!r} is called {len(calls)} times in its "
            "forward pass (a shared layer), so which output to tap is "
            "ambiguous. Tap the layer that follows one of its calls instead."
        )
    return calls[0]


class _Plan:
    """The layers a list of paths names in one (sub-)model."""

    def __init__(self, model, paths, role, prefix, top):
        _require_graph(model, role, prefix.rstrip("/"))
        self.model, self.paths, self.role = model, paths, role
        self.prefix, self.top = prefix, top
        self.view = _view(model)
        k = _keras_of(model)
        self.layer_of = {}  # path -> the layer its head names
        self.nested = {}  # id(sub-model) -> (sub-model, [rest paths])
        for path in paths:
            head, _, rest = path.partition("/")
            layer = _find_layer(model, head, role, prefix, top)
            self.layer_of[path] = layer
            if not rest:
                continue
            if not _is_model(layer):
                raise ValueError(
                    f"The {role}'s layer {prefix + head!r} is a "
                    f"{type(layer).__name__}, not a model, so there is no layer "
                    f"{rest!r} inside it to tap."
                )
            _require_graph(layer, role, prefix + head)
            entry = self.nested.setdefault(id(layer), (layer, []))
            if rest not in entry[1]:
                entry[1].append(rest)
        self.inputs = {  # ids of tapped InputLayers: no call to record
            id(layer) for layer in self.layer_of.values()
            if isinstance(layer, k.layers.InputLayer)
        }

    def input_tensor(self, layer, traced_inputs):
        """The traced tensor standing for an ``InputLayer``'s output."""
        originals = _flatten(self.view.input)
        for original, traced in zip(originals, _flatten(traced_inputs)):
            if original is layer.output:
                return traced
        raise ValueError(  # pragma: no cover - an Input outside the graph
            f"The {self.role}'s input layer {self.prefix + layer.name!r} is "
            "not an input of its model."
        )

    def features(self, calls_of, traced_inputs):
        """One feature per path, from the recorded calls of each layer.

        ``calls_of(layer)`` lists ``(outputs, nested features or None)``
        per call of the layer in the re-traced graph.
        """
        features = []
        for path in self.paths:
            head, _, rest = path.partition("/")
            layer = self.layer_of[path]
            if id(layer) in self.inputs:
                features.append(self.input_tensor(layer, traced_inputs))
                continue
            outputs, taps = _select_call(
                calls_of(layer), self.role, self.prefix + head
            )
            if rest:
                features.append(taps[self.nested[id(layer)][1].index(rest)])
            else:
                features.append(
                    _single_output(outputs, self.role, self.prefix + path)
                )
        return features


# ------------------------------------------------------------------ tracing
def _output_struct(model):
    """The structure of what calling ``model`` returns."""
    if isinstance(model, _keras_of(model).Sequential):
        return _unlist(model.outputs)
    return model.output


def _tapped_submodels(plan, trace):
    """``{id(nested model): (tapped copy, number of outputs, structure)}``.

    Each nested model holding wanted layers is tapped on its own (new
    ``Input`` tensors, same layers) into ``Model(inputs, [*outputs,
    *features])``; the outer re-trace calls that copy in its place, once
    per call of the nested model, so its layers run once per forward pass.
    """
    k = _keras_of(plan.model)
    replacement = {}
    for sub, rest in plan.nested.values():
        inputs, outputs, features = trace(
            sub, rest, plan.role, f"{plan.prefix}{sub.name}/", plan.top,
            fresh_inputs=True,
        )
        flat = _flatten(outputs)
        tapped = k.Model(inputs, list(flat) + list(features), name=sub.name)
        replacement[id(sub)] = (tapped, len(flat), _output_struct(sub))
    return replacement


def _trace_keras3(model, paths, role, prefix, top, fresh_inputs=False):
    """``(inputs, outputs, features)`` of one re-trace of a Keras 3 model.

    The re-trace starts from the model's own ``Input`` tensors, or from new
    ones when ``fresh_inputs`` (a nested model, tapped on its own).
    """
    import keras

    plan = _Plan(model, paths, role, prefix, top)
    replacement = _tapped_submodels(plan, _trace_keras3)
    watched = {id(layer) for layer in plan.layer_of.values()}
    calls = {}

    def call_function(layer, *args, **kwargs):
        entry = replacement.get(id(layer))
        if entry is None:
            outputs = layer(*args, **kwargs)
            taps = None
        else:
            tapped, count, struct = entry
            flat = keras.tree.flatten(tapped(*args, **kwargs))
            outputs = keras.tree.pack_sequence_as(struct, flat[:count])
            taps = flat[count:]
        if id(layer) in watched:
            calls.setdefault(id(layer), []).append((outputs, taps))
        return outputs

    clone = keras.models.clone_model(
        plan.view,
        input_tensors=None if fresh_inputs else plan.view.input,
        clone_function=lambda layer: layer,
        call_function=call_function,
    )
    features = plan.features(lambda layer: calls.get(id(layer), []), clone.input)
    return clone.input, clone.output, features


def _trace_tf_keras(model, paths, role, prefix, top, fresh_inputs=False):
    """``(inputs, outputs, features)`` of one re-trace of a tf_keras model.

    Like `_trace_keras3`, but tf_keras's ``clone_model`` has no
    ``call_function``: ``clone_function`` swaps each nested model for its
    tapped copy (tf_keras feeds consumers by position in the flattened
    outputs, and the copy's own outputs come first), and the calls of the
    wanted layers are the nodes the re-trace added to them, read with
    ``get_output_at``.
    """
    import tensorflow as tf

    k = _keras_of(model)
    plan = _Plan(model, paths, role, prefix, top)
    replacement = _tapped_submodels(plan, _trace_tf_keras)

    def traced_layer(layer):
        entry = replacement.get(id(layer))
        return layer if entry is None else entry[0]

    watched = {}
    for layer in plan.layer_of.values():
        if id(layer) not in plan.inputs:
            traced = traced_layer(layer)
            watched[id(layer)] = (traced, len(traced.inbound_nodes))
    clone = k.models.clone_model(
        plan.view,
        input_tensors=None if fresh_inputs else plan.view.inputs,
        clone_function=traced_layer,
    )

    def calls_of(layer):
        traced, before = watched[id(layer)]
        entry = replacement.get(id(layer))
        calls = []
        for index in range(before, len(traced.inbound_nodes)):
            outputs = traced.get_output_at(index)
            if entry is None:
                calls.append((outputs, None))
            else:
                flat = tf.nest.flatten(outputs)
                calls.append((flat[:entry[1]], flat[entry[1]:]))
        return calls

    features = plan.features(calls_of, clone.input)
    return clone.input, clone.outputs, features


# --------------------------------------------------------------- public API
def _build(model, paths, role):
    """``(tap model, number of model outputs, features)``."""
    flavour = _compat.flavour_of(model)
    k = _compat.keras_module(flavour)
    if flavour == _compat.KERAS3:
        inputs, outputs, features = _trace_keras3(model, paths, role, "", model)
    else:
        inputs, outputs, features = _trace_tf_keras(model, paths, role, "", model)
    outputs = _flatten(outputs)
    tapped = k.Model(inputs, list(outputs) + list(features),
                     name=f"{model.name}_taps")
    return tapped, len(outputs), features


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
    names = [_check_layer_name(n, "layer_names") for n in layer_names]
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
        self.paths = [_check_layer_name(p, "paths") for p in paths]
        self.keys = []
        for path in self.paths:
            key = _sanitize(path)
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
