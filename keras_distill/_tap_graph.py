"""Rebuilding a network's graph with taps: the machinery behind `keras_distill.taps`.

`build(model, paths, role)` returns ``(tap model, number of model outputs,
features)``: a Functional model over the layers of ``model`` returning
``[*outputs, *features]``, one feature per path (``"backbone/conv3"`` names
a layer of a nested model). `keras_distill.taps` (`tap_model`, `Taps`) is
its only user; the checks, error messages and suggestions for unknown
names live here, next to the re-trace that needs them.

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

from keras_distill import _compat


def flatten(structure):
    """The leaves of a nested structure of tensors, in order."""
    import keras

    return keras.tree.flatten(structure)


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
    flat = flatten(outputs)
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
        originals = flatten(self.view.input)
        for original, traced in zip(originals, flatten(traced_inputs)):
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
        flat = flatten(outputs)
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


# ------------------------------------------------------------------ entry
def build(model, paths, role):
    """``(tap model, number of model outputs, features)``."""
    flavour = _compat.flavour_of(model)
    k = _compat.keras_module(flavour)
    if flavour == _compat.KERAS3:
        inputs, outputs, features = _trace_keras3(model, paths, role, "", model)
    else:
        inputs, outputs, features = _trace_tf_keras(model, paths, role, "", model)
    outputs = flatten(outputs)
    tapped = k.Model(inputs, list(outputs) + list(features),
                     name=f"{model.name}_taps")
    return tapped, len(outputs), features
