"""Feature distillation: taps on named layers, adapters, feature distillers.

A *tap* makes a network return some of its intermediate outputs beside its
own output, in the same single forward pass: `tap_model` builds, once, a
multi-output model that shares the user's layers (and so their weights) and
returns ``[output, *features]``. Layers are named as in ``model.get_layer``;
a layer inside a nested Functional or Sequential sub-model is named by its
path, ``"backbone/conv3"``.

`FeatureDistiller` adds feature terms to the logits distillation of
`keras_distill.Distiller`, one per `FeaturePair` (or `FSPPair`)::

    loss = alpha · student_loss + (1 − alpha) · logits_weight · T² · KL
           + Σ_pairs weight · feature_loss + sum(student.losses)

where each feature loss compares a teacher layer's output with a student
layer's output (FitNets hints, attention transfer, FSP matrices, relational
KD, or any function). When the widths differ, a learned *adapter* (a 1x1
convolution or a Dense layer, FitNets' regressor) maps the student's
features to the teacher's width; it trains with the student and is not part
of ``distiller.student``. `L2Distiller`, `FSPDistiller`,
`AttentionDistiller` and `RKDDistiller` are short forms, and
`MultiTeacherDistiller` distils the weighted average of several teachers'
logits.

Everything works for Keras 3 (``keras``) and Keras 2 (``tf_keras``)
students: the distiller, its tap models and its adapters take the
student's flavour; the teacher may be of either.
"""

import dataclasses
import difflib
import functools
import re

import keras
import numpy as np
import tensorflow as tf

from keras_distill import _compat
from keras_distill import losses as kd_losses
from keras_distill.losses import _check_weight
from keras_distill.distiller import (
    _DistillerLogic,
    _average,
    _check_class_axis,
    _check_output_kind,
    _check_shapes,
    _resolve_output_kind,
    _single_tensor,
    distiller_class,
)

_NAMED_LOSSES = ("l2", "at", "rkd")
_LOSS_KWARGS = {
    "l2": (),
    "at": ("p",),
    "rkd": ("distance_weight", "angle_weight"),
}
_ADAPTER_KINDS = ("auto", "conv1x1", "dense")
_RESERVED_NAMES = ("loss", "student_loss", "distillation_loss")


# --------------------------------------------------------------------- checks
def _check_layer_name(value, argument):
    if not isinstance(value, str) or not value or value.strip("/") != value:
        raise TypeError(
            f"`{argument}` must be a layer name (a non-empty string such as "
            f"'block2_conv', or a path into a nested model such as "
            f"'backbone/conv3'), got {value!r}."
        )
    return value


def _check_adapter(value, argument="adapter"):
    if value is None or (isinstance(value, str) and value in _ADAPTER_KINDS):
        return value
    if _compat.flavour_of(value) is not None:
        return value
    raise ValueError(
        f"`{argument}` must be None, one of {_ADAPTER_KINDS} or a Keras layer, "
        f"got {value!r}. 'auto' adds a learned 1x1 convolution (feature maps) "
        "or Dense layer (vectors) when the student's width differs from the "
        "teacher's."
    )


def _check_term_name(value):
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"`name` must be a non-empty string or None, got {value!r}.")
    if value in _RESERVED_NAMES:
        raise ValueError(
            f"`name`={value!r} is already used by the distiller's own logs "
            f"{_RESERVED_NAMES}: choose another name for the feature term."
        )
    return value


def _shape(shape):
    return "(unknown)" if shape is None else str(tuple(shape))


def _static_shape(tensor):
    shape = tensor.shape
    if hasattr(shape, "as_list"):
        return None if shape.rank is None else tuple(shape.as_list())
    return tuple(shape)


def _dims_compatible(a, b):
    return len(a) == len(b) and all(
        x is None or y is None or x == y for x, y in zip(a, b)
    )


def _sanitize(text):
    return re.sub(r"[^0-9A-Za-z_]", "_", text)


# ---------------------------------------------------------------- pair specs
@dataclasses.dataclass(frozen=True)
class FeaturePair:
    r"""One feature term: a teacher layer, a student layer and a loss.

    The counterpart of PaddleSlim's ``loss(custom_fn, **pairs)``: the
    outputs of ``teacher_layer`` and ``student_layer`` (computed in the
    same forward passes as the logits) are compared by ``loss`` and the
    result, times ``weight``, is added to the distillation loss.

    Losses (``t``, ``s``: teacher and (adapted) student features):

    - ``"l2"``: :math:`\mathrm{mean}((s - t)^2)`, FitNets hints (Romero et
      al. 2015), `keras_distill.losses.l2_loss`. Shapes must be equal after
      the adapter.
    - ``"at"``: attention transfer (Zagoruyko & Komodakis 2017),
      `keras_distill.losses.at_loss` on ``(batch, H, W, C)`` maps; channel
      counts may differ, H and W may not. ``loss_kwargs={"p": 2}``.
    - ``"rkd"``: relational KD (Park et al. 2019),
      `keras_distill.losses.rkd_loss` on embeddings ``(batch, D)``; widths
      may differ. A property of the whole batch: ``sample_weight`` cannot
      weigh it. ``loss_kwargs={"distance_weight": 25, "angle_weight": 50}``.
    - a callable ``fn(teacher_feat, student_feat, **loss_kwargs)`` returning
      one value per sample (weighted by ``sample_weight``, averaged over
      the batch; extra axes are averaged) or a scalar; a Keras ``Loss``
      instance is called as ``loss(y_true=teacher, y_pred=student)``
      per sample.

    For FSP matrices, which relate two layers per network, use `FSPPair`.

    Args:
        teacher_layer: Name of the teacher's layer (``"backbone/conv3"`` for
            a layer of a nested model).
        student_layer: Name of the student's layer.
        loss: ``"l2"`` (default), ``"at"``, ``"rkd"`` or a callable.
        weight: The term's weight (>= 0) in the total loss.
        adapter: ``None`` (default), ``"auto"`` (a learned 1x1 convolution
            for 4-D maps, a Dense layer otherwise, added only when the
            student's last axis differs from the teacher's and the loss
            needs equal widths), ``"conv1x1"``, ``"dense"`` (always added),
            or a Keras layer of the student's flavour applied to the
            student's features (used as is, not copied: do not share a
            pair holding a layer between distillers).
        name: The name the term is logged under; default
            ``"<loss>_<student_layer>"``.
        loss_kwargs: Keyword arguments of the loss (see above).

    Example:
    >>> pair = FeaturePair("block2b_relu", "block2_conv", adapter="auto")
    >>> pair.loss, pair.weight
    ('l2', 1.0)
    >>> FeaturePair.from_config(pair.get_config()) == pair
    True
    """

    teacher_layer: str
    student_layer: str
    loss: object = "l2"
    weight: float = 1.0
    adapter: object = None
    name: str = None
    loss_kwargs: dict = None

    def __post_init__(self):
        _check_layer_name(self.teacher_layer, "teacher_layer")
        _check_layer_name(self.student_layer, "student_layer")
        loss = self.loss
        if isinstance(loss, str):
            if loss == "fsp":
                raise ValueError(
                    "An FSP term relates two layers of each network: use "
                    "FSPPair(teacher_first, teacher_second, student_first, "
                    "student_second) instead of FeaturePair(..., loss='fsp')."
                )
            if loss not in _NAMED_LOSSES:
                raise ValueError(
                    f"`loss` must be one of {_NAMED_LOSSES} or a callable "
                    f"fn(teacher_feat, student_feat), got {loss!r}."
                )
        elif not callable(loss):
            raise TypeError(
                "`loss` must be one of "
                f"{_NAMED_LOSSES} or a callable fn(teacher_feat, "
                f"student_feat), got {type(loss).__name__}."
            )
        object.__setattr__(self, "weight", _check_weight(self.weight, "weight"))
        _check_adapter(self.adapter)
        _check_term_name(self.name)
        kwargs = dict(self.loss_kwargs or {})
        if isinstance(loss, str):
            allowed = _LOSS_KWARGS[loss]
            unknown = sorted(set(kwargs) - set(allowed))
            if unknown:
                raise ValueError(
                    f"`loss_kwargs` has {unknown} that loss {loss!r} does not "
                    f"take; it takes {list(allowed) or 'none'}."
                )
        object.__setattr__(self, "loss_kwargs", kwargs or None)

    def __hash__(self):
        return hash((self.teacher_layer, self.student_layer, self.kind,
                     self.weight, self.name))

    @property
    def kind(self):
        """The loss's short name (used in the default term name)."""
        if isinstance(self.loss, str):
            return self.loss
        name = getattr(self.loss, "__name__", None) or type(self.loss).__name__
        name = _sanitize(name).strip("_")
        return name if name and name != "lambda" else "feature"

    def get_config(self):
        """A serialisable dict; callables and layers via Keras serialisation."""
        config = {field.name: getattr(self, field.name)
                  for field in dataclasses.fields(self)}
        config["loss"] = _serialize(self.loss)
        config["adapter"] = _serialize(self.adapter)
        config["loss_kwargs"] = dict(self.loss_kwargs) if self.loss_kwargs else None
        return {"class_name": "FeaturePair", "config": config}

    @classmethod
    def from_config(cls, config):
        """The inverse of `get_config`."""
        config = dict(config.get("config", config))
        config["loss"] = _deserialize(config.get("loss", "l2"))
        config["adapter"] = _deserialize(config.get("adapter"))
        return cls(**config)


@dataclasses.dataclass(frozen=True)
class FSPPair:
    r"""An FSP term: two teacher layers and two student layers.

    Yim, Joo, Bae & Kim, "A Gift from Knowledge Distillation" (CVPR 2017).
    The FSP ("flow of solution procedure") matrix of two maps of equal
    height and width,
    :math:`G_{i,j} = \frac{1}{HW}\sum_{h,w} F^1_{h,w,i} F^2_{h,w,j}`,
    describes how the first layer's features flow into the second's; the
    student copies the teacher's (`keras_distill.losses.fsp_loss`):

    .. math::
        L = \mathrm{mean}_{b,i,j}\,\big(G^S_{b,i,j} - G^T_{b,i,j}\big)^2

    Within each network both layers need the same H and W; the teacher's
    and student's H, W may differ, their channel counts (C1, C2) may not
    (use ``adapter="auto"`` for learned 1x1 convolutions on the student's
    maps).

    Args:
        teacher_first, teacher_second: The teacher's two layers.
        student_first, student_second: The student's two layers.
        weight: The term's weight (>= 0).
        normalize: Divide each map by its per-sample RMS first (the default;
            makes the loss finite and independent of the activations' scale,
            see `keras_distill.losses.fsp_loss`). ``False`` gives the
            paper's / PaddleSlim's numbers.
        adapter: ``None``, ``"auto"``, ``"conv1x1"`` or ``"dense"``; applied
            to each of the student's two maps (separately learned).
        name: The logged name; default ``"fsp_<student_first>_<student_second>"``.

    Example:
    >>> pair = FSPPair("block1a_relu", "block1b_relu", "block1_conv", "block1_conv")
    >>> pair.normalize
    True
    """

    teacher_first: str
    teacher_second: str
    student_first: str
    student_second: str
    weight: float = 1.0
    normalize: bool = True
    adapter: object = None
    name: str = None

    def __post_init__(self):
        for field in ("teacher_first", "teacher_second", "student_first",
                      "student_second"):
            _check_layer_name(getattr(self, field), field)
        object.__setattr__(self, "weight", _check_weight(self.weight, "weight"))
        kd_losses._check_bool(self.normalize, "normalize")
        if self.adapter is not None and not (
            isinstance(self.adapter, str) and self.adapter in _ADAPTER_KINDS
        ):
            raise ValueError(
                f"FSPPair `adapter` must be None or one of {_ADAPTER_KINDS}, "
                f"got {self.adapter!r} (each student map gets its own "
                "adapter, so a single layer instance cannot be given)."
            )
        _check_term_name(self.name)

    kind = "fsp"

    def get_config(self):
        """A serialisable dict."""
        return {"class_name": "FSPPair", "config": dataclasses.asdict(self)}

    @classmethod
    def from_config(cls, config):
        """The inverse of `get_config`."""
        return cls(**dict(config.get("config", config)))


def _serialize(obj):
    """Keras-serialises a layer or callable, remembering its Keras flavour."""
    if obj is None or isinstance(obj, str):
        return obj
    flavour = _compat.flavour_of(obj) or _compat.flavour_of_loss(obj) or _compat.KERAS3
    k = _compat.keras_module(flavour)
    return {"flavour": flavour, "object": k.saving.serialize_keras_object(obj)}


def _deserialize(obj):
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, dict) and set(obj) == {"flavour", "object"}:
        k = _compat.keras_module(obj["flavour"])
        return k.saving.deserialize_keras_object(obj["object"])
    return keras.saving.deserialize_keras_object(obj)


def _as_pair(obj, index):
    if isinstance(obj, (FeaturePair, FSPPair)):
        return obj
    if isinstance(obj, dict):
        kind = obj.get("class_name", "FeaturePair")
        return (FSPPair if kind == "FSPPair" else FeaturePair).from_config(obj)
    if isinstance(obj, (list, tuple)) and len(obj) == 2:
        t, s = obj
        if all(isinstance(v, (list, tuple)) and len(v) == 2 for v in (t, s)):
            return FSPPair(t[0], t[1], s[0], s[1])
        if isinstance(t, str) and isinstance(s, str):
            return FeaturePair(t, s)
    raise TypeError(
        f"pairs[{index}] must be a FeaturePair, an FSPPair, a "
        "(teacher_layer, student_layer) tuple or a ((teacher_first, "
        f"teacher_second), (student_first, student_second)) tuple, got {obj!r}."
    )


# ----------------------------------------------------------------------- taps
def _graph_of(model):
    """The Functional graph holding a model's layers, or ``None``."""
    if _compat.flavour_of(model) == _compat.KERAS3:
        if isinstance(model, keras.Sequential):
            return getattr(model, "_functional", None)
        if hasattr(model, "_nodes_by_depth") and hasattr(
            model, "_run_through_graph"
        ):
            return model
        return None
    if getattr(model, "_is_graph_network", False):
        return model
    return None


def _inputs_struct(model):
    graph = _graph_of(model)
    if _compat.flavour_of(model) == _compat.KERAS3:
        return graph._inputs_struct
    return graph._nested_inputs


def _outputs_struct(model):
    graph = _graph_of(model)
    if _compat.flavour_of(model) == _compat.KERAS3:
        return graph._outputs_struct
    return graph._nested_outputs


def _nodes(graph):
    by_depth = graph._nodes_by_depth
    for depth in sorted(by_depth, reverse=True):
        yield from by_depth[depth]


def _node_layer(node):
    layer = getattr(node, "operation", None)
    return layer if layer is not None else getattr(node, "layer", None)


def _is_model(layer):
    flavour = _compat.flavour_of(layer)
    if flavour is None:
        return False
    return isinstance(layer, _compat.keras_module(flavour).Model)


def _layer_paths(model, prefix=""):
    """Every tappable path of a model, nested models included."""
    paths = []
    for layer in getattr(model, "layers", []):
        path = prefix + layer.name
        paths.append(path)
        if _is_model(layer) and _graph_of(layer) is not None:
            paths.extend(_layer_paths(layer, path + "/"))
    return paths


def _require_graph(model, role, path):
    graph = _graph_of(model)
    if graph is not None:
        return graph
    where = f"The {role}" if not path else f"The {role}'s sub-model {path!r}"
    if isinstance(model, _compat.keras_module(_compat.flavour_of(model)).Sequential):
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
        "Functional model and tap the layers that produce them."
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
    flat = tf.nest.flatten(outputs)
    if len(flat) != 1:
        raise ValueError(
            f"The {role}'s layer {path!r} returns {len(flat)} tensors; tap a "
            "layer with a single output."
        )
    return flat[0]


def _output_in_graph(graph, layer, role, path):
    """The output tensor of the one call of ``layer`` in ``graph``."""
    nodes = [n for n in _nodes(graph) if _node_layer(n) is layer]
    if not nodes:
        raise ValueError(
            f"The {role}'s layer {path!r} is not used in its forward pass, "
            "so it has no output to tap."
        )
    if len(nodes) > 1:
        raise ValueError(
            f"The {role}'s layer {path!r} is called {len(nodes)} times in its "
            "forward pass (a shared layer), so which output to tap is "
            "ambiguous. Tap the layer that follows one of its calls instead."
        )
    return _single_output(nodes[0].outputs, role, path)


def _replay_keras3(graph, call):
    def operation_fn(op):
        return lambda *args, **kwargs: call(op, args, kwargs)

    outputs = graph._run_through_graph(graph.inputs, operation_fn=operation_fn)
    return tf.nest.flatten(outputs)


def _replay_tf_keras(graph, call):
    usage = graph._tensor_usage_count
    tensor_dict = {}
    for x in graph.inputs:
        key = str(id(x))
        tensor_dict[key] = [x] * max(usage.get(key, 1), 1)
    for node in _nodes(graph):
        if node.is_input:
            continue
        if any(key not in tensor_dict for key in node.flat_input_ids):
            continue
        args, kwargs = node.map_arguments(tensor_dict)
        outputs = call(node.layer, args, kwargs)
        for key, y in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
            tensor_dict[key] = [y] * max(usage.get(key, 1), 1)
    return [tensor_dict[str(id(x))].pop() for x in graph.outputs]


def _tap_tensors(model, paths, role, prefix="", top=None):
    """Symbolic ``(flat outputs, [feature per path])`` of one graph.

    Without nested paths the features are tensors of the model's own graph
    (nothing new is built). A path into a nested model replays the outer
    graph once, calling a tapped copy of the nested model (sharing its
    layers) in place of the nested model, so every tensor belongs to one
    graph computed in one pass.
    """
    top = model if top is None else top
    graph = _require_graph(model, role, prefix.rstrip("/"))
    flavour = _compat.flavour_of(model)
    direct, nested = {}, {}
    for path in paths:
        head, _, rest = path.partition("/")
        layer = _find_layer(model, head, role, prefix, top)
        if not rest:
            direct[path] = layer
            continue
        if not _is_model(layer):
            raise ValueError(
                f"The {role}'s layer {prefix + head!r} is a "
                f"{type(layer).__name__}, not a model, so there is no layer "
                f"{rest!r} inside it to tap."
            )
        nested.setdefault(head, (layer, []))[1].append(rest)
    if not nested:
        return list(graph.outputs), [
            _output_in_graph(graph, direct[p], role, prefix + p) for p in paths
        ]

    subs = {}
    for head, (sub_model, sub_paths) in nested.items():
        sub_outputs, sub_features = _tap_tensors(
            sub_model, sub_paths, role, prefix + head + "/", top
        )
        sub_k = _compat.keras_module(_compat.flavour_of(sub_model))
        sub_tap = sub_k.Model(
            _inputs_struct(sub_model), sub_outputs + sub_features,
            name=f"{sub_model.name}_taps",
        )
        subs[id(sub_model)] = (sub_model, sub_tap, len(sub_outputs))
    wanted = {id(layer) for layer in direct.values()}
    recorded = {}

    def call(op, args, kwargs):
        entry = subs.get(id(op))
        if entry is None:
            outputs = op(*args, **kwargs)
            if id(op) in wanted:
                recorded.setdefault(id(op), []).append((outputs, None))
            return outputs
        sub_model, sub_tap, count = entry
        flat = tf.nest.flatten(sub_tap(*args, **kwargs))
        outputs = tf.nest.pack_sequence_as(_outputs_struct(sub_model), flat[:count])
        recorded.setdefault(id(op), []).append((outputs, flat[count:]))
        return outputs

    replay = _replay_keras3 if flavour == _compat.KERAS3 else _replay_tf_keras
    model_outputs = replay(graph, call)
    features = []
    for path in paths:
        head, _, rest = path.partition("/")
        layer = direct[path] if not rest else nested[head][0]
        calls = recorded.get(id(layer), [])
        if len(calls) != 1:
            what = "is not used in" if not calls else f"is called {len(calls)} times in"
            raise ValueError(
                f"The {role}'s layer {prefix + head!r} {what} its forward "
                "pass, so its output cannot be tapped unambiguously."
            )
        outputs_of_call, taps_of_call = calls[0]
        if rest:
            features.append(taps_of_call[nested[head][1].index(rest)])
        else:
            features.append(_single_output(outputs_of_call, role, prefix + path))
    return model_outputs, features


def tap_model(model, layer_names):
    """A model returning a network's output and named intermediate outputs.

    Builds, once, a model of the same Keras flavour that maps the inputs
    of ``model`` to ``[*model outputs, *features]``, one feature per name
    in ``layer_names``, computed in a single forward pass. It shares the
    layers (and weights) of ``model``: training it trains ``model``.
    ``model`` must be a Functional model or a built Sequential model;
    layers of nested Functional/Sequential sub-models are named by path
    (``"backbone/conv3"``).

    Args:
        model: A ``keras.Model`` or ``tf_keras.Model``.
        layer_names: Layer names or paths.

    Returns:
        A Functional model with ``len(model.outputs) + len(layer_names)``
        outputs (a list).

    Raises:
        ValueError: an unknown name (the message lists the closest names),
            a subclassed or unbuilt model, or a layer called more than once.

    Example:
    >>> import keras, numpy as np
    >>> net = keras.Sequential([keras.Input((4,)),
    ...                         keras.layers.Dense(8, name="hidden"),
    ...                         keras.layers.Dense(2, name="out")])
    >>> tapped = tap_model(net, ["hidden"])
    >>> logits, hidden = tapped(np.zeros((3, 4), "float32"))
    >>> tuple(logits.shape), tuple(hidden.shape)
    ((3, 2), (3, 8))
    >>> tap_model(net, ["hiden"])
    Traceback (most recent call last):
    ...
    ValueError: The model ('sequential...') has no layer named 'hiden'. Did you mean 'hidden'? ...
    """
    flavour = _compat.model_flavour(model, "model")
    names = [_check_layer_name(n, "layer_names") for n in layer_names]
    outputs, features = _tap_tensors(model, names, "model")
    k = _compat.keras_module(flavour)
    return k.Model(_inputs_struct(model), list(outputs) + list(features),
                   name=f"{model.name}_taps")


class _Untracked:
    """Holds objects out of Keras's attribute tracking (and saving)."""

    def __init__(self, **values):
        self.__dict__.update(values)


class _Taps:
    """One network's tap model: ``(output, {feature key: tensor})`` per call."""

    def __init__(self, model, paths, role):
        self.paths = list(paths)
        self.keys = []
        for path in self.paths:
            key = _sanitize(path)
            while key in self.keys:
                key += "_"
            self.keys.append(key)
        self.role = role
        if not self.paths:
            self.model, self.num_outputs, self.shapes = model, None, {}
            return
        outputs, features = _tap_tensors(model, self.paths, role)
        k = _compat.keras_module(_compat.flavour_of(model))
        self.model = k.Model(_inputs_struct(model), list(outputs) + list(features),
                             name=f"{model.name}_taps")
        self.num_outputs = len(outputs)
        self.shapes = {
            path: _static_shape(f) for path, f in zip(self.paths, features)
        }

    def key(self, path):
        return self.keys[self.paths.index(path)]

    def __call__(self, x, training):
        if self.num_outputs is None:
            return _single_tensor(self.model(x, training=training), self.role), {}
        flat = tf.nest.flatten(self.model(x, training=training))
        out = _single_tensor(flat[:self.num_outputs], self.role)
        return out, dict(zip(self.keys, flat[self.num_outputs:]))


# ------------------------------------------------------------------- adapters
def _make_adapter(spec, student_shape, target, flavour, name, where):
    """Builds an adapter (or None) mapping the student's features."""
    k = _compat.keras_module(flavour)
    rank = len(student_shape)
    if isinstance(spec, str):
        if spec == "conv1x1":
            if rank != 4:
                raise ValueError(
                    f"{where}: adapter='conv1x1' needs a 4-D feature map "
                    f"(batch, H, W, C), but the student's features have shape "
                    f"{_shape(student_shape)}. Use adapter='dense'."
                )
        if target is None:
            raise ValueError(
                f"{where}: the teacher's number of channels is unknown, so "
                f"adapter={spec!r} cannot be built; give the teacher a "
                "static channel dimension or pass an adapter layer."
            )
        if spec == "conv1x1" or (spec == "auto" and rank == 4):
            layer = k.layers.Conv2D(target, 1, name=name)
        else:
            layer = k.layers.Dense(target, name=name)
    else:
        layer = spec
        if _compat.flavour_of(layer) != flavour:
            raise TypeError(
                f"{where}: the adapter is a {_compat.flavour_of(layer)} layer, "
                f"but the student is a {flavour} model. Adapters train with "
                f"the student: build it with {flavour}.layers."
            )
    symbolic = k.Input(batch_shape=tuple(student_shape))
    out = layer(symbolic)
    return layer, _static_shape(out)


class _Term:
    """One feature term, resolved against the tap models."""

    def __init__(self, name, pair, weight, compute, teacher_paths,
                 student_paths, adapters, describe):
        self.name = name
        self.pair = pair
        self.weight = weight
        self.compute = compute
        self.teacher_paths = teacher_paths
        self.student_paths = student_paths
        self.adapters = adapters  # one per student path: layer or None
        self.describe = describe


# ------------------------------------------------------------ feature logic
class _FeatureLogic(_DistillerLogic):
    """Feature terms on tapped layers, added to the logits distillation."""

    _supports_teacher_dtype = False

    def __init__(
        self,
        student,
        teacher,
        pairs=(),
        logits_weight=1.0,
        teacher_input_fn=None,
        check_numerics=False,
        teacher_outputs="auto",
        student_outputs="auto",
        name="feature_distiller",
        **kwargs,
    ):
        if isinstance(pairs, (FeaturePair, FSPPair)):
            pairs = [pairs]
        if not isinstance(pairs, (list, tuple)):
            raise TypeError(
                "`pairs` must be a list of FeaturePair / FSPPair, got "
                f"{type(pairs).__name__}."
            )
        pairs = tuple(_as_pair(p, i) for i, p in enumerate(pairs))
        logits_weight = _check_weight(logits_weight, "logits_weight")
        if teacher_input_fn is not None and not callable(teacher_input_fn):
            raise TypeError(
                "`teacher_input_fn` must be a callable x -> teacher_x (e.g. a "
                f"resize), got {type(teacher_input_fn).__name__}."
            )
        kd_losses._check_bool(check_numerics, "check_numerics")
        super().__init__(
            student, teacher, teacher_outputs=teacher_outputs,
            student_outputs=student_outputs, name=name, **kwargs,
        )
        self.pairs = pairs
        self.logits_weight = logits_weight
        self.teacher_input_fn = teacher_input_fn
        self.check_numerics = check_numerics
        self._build_terms()

    # ------------------------------------------------------------ building
    def _build_terms(self):
        teacher_paths, student_paths = [], []
        for pair in self.pairs:
            t, s = self._pair_layers(pair)
            teacher_paths += [p for p in t if p not in teacher_paths]
            student_paths += [p for p in s if p not in student_paths]
        self._taps = _Untracked(
            teacher=_Taps(self.teacher, teacher_paths, "teacher"),
            student=_Taps(self.student, student_paths, "student"),
        )
        terms, adapters, used = [], [], set(_RESERVED_NAMES)
        for index, pair in enumerate(self.pairs):
            term = self._resolve(index, pair, used)
            used.add(term.name)
            adapters += [a for a in term.adapters if a is not None]
            terms.append(term)
        self._terms = _Untracked(items=terms)
        self._adapter_layers = adapters

    @staticmethod
    def _pair_layers(pair):
        if isinstance(pair, FSPPair):
            return ((pair.teacher_first, pair.teacher_second),
                    (pair.student_first, pair.student_second))
        return (pair.teacher_layer,), (pair.student_layer,)

    def _resolve(self, index, pair, used):
        t_paths, s_paths = self._pair_layers(pair)
        if pair.name is not None:
            name = pair.name
            if name in used:
                raise ValueError(
                    f"pairs[{index}]: the term name {name!r} is used twice; "
                    "give each pair its own `name`."
                )
        else:
            base = f"{pair.kind}_" + "_".join(
                _sanitize(p) for p in dict.fromkeys(s_paths))
            name, n = base, 2
            while name in used:
                name, n = f"{base}_{n}", n + 1
        t_shapes = [self._taps.teacher.shapes[p] for p in t_paths]
        s_shapes = [self._taps.student.shapes[p] for p in s_paths]
        describe = (
            f"pairs[{index}] ({name!r}: teacher " + " & ".join(
                f"{p!r} {_shape(sh)}" for p, sh in zip(t_paths, t_shapes))
            + " vs student " + " & ".join(
                f"{p!r} {_shape(sh)}" for p, sh in zip(s_paths, s_shapes))
            + ")"
        )
        if isinstance(pair, FSPPair):
            kind = "fsp"
        elif isinstance(pair.loss, str):
            kind = pair.loss
        else:
            kind = "custom"
        for path, shape in zip(t_paths + s_paths, t_shapes + s_shapes):
            if shape is None:
                raise ValueError(f"{describe}: the rank of {path!r} is unknown.")
            if kind in ("at", "fsp") and len(shape) < 3:
                raise ValueError(
                    f"{describe}: {kind!r} needs channels-last feature maps "
                    f"(batch, H, W, C), but {path!r} has shape {_shape(shape)}."
                )
            if kind == "rkd" and len(shape) < 2:
                raise ValueError(
                    f"{describe}: 'rkd' needs embeddings (batch, D), but "
                    f"{path!r} has shape {_shape(shape)}."
                )
        # Adapters: the student map(s) to the teacher's width.
        adapters, adapted = [], []
        for slot, (s_shape, t_shape) in enumerate(zip(s_shapes, t_shapes)):
            spec = pair.adapter
            if spec == "auto":
                needs_width = kind in ("l2", "fsp", "custom")
                differ = (s_shape[-1] is not None and t_shape[-1] is not None
                          and s_shape[-1] != t_shape[-1])
                spec = "auto" if (needs_width and differ) else None
            if spec is None:
                adapters.append(None)
                adapted.append(s_shape)
                continue
            suffix = "" if len(s_shapes) == 1 else f"_{slot + 1}"
            layer, shape = _make_adapter(
                spec, s_shape, t_shape[-1], self._flavour,
                _sanitize(f"adapter_{name}{suffix}"), describe,
            )
            adapters.append(layer)
            adapted.append(shape)
        after = " after the adapter" if any(a is not None for a in adapters) else ""
        if kind == "l2":
            t_shape, s_shape = t_shapes[0], adapted[0]
            if not _dims_compatible(t_shape[1:], s_shape[1:]):
                spatial_ok = _dims_compatible(t_shape[1:-1], s_shape[1:-1])
                hint = ("Pass adapter='auto' to map the student's channels to "
                        "the teacher's with a learned 1x1 convolution / Dense "
                        "layer." if spatial_ok and not after else
                        "Pick layers of equal spatial size (an adapter only "
                        "changes the channels), or pool the larger map.")
                raise ValueError(
                    f"{describe}: 'l2' needs equal shapes, but the teacher's "
                    f"features have shape {_shape(t_shape)} and the student's "
                    f"{_shape(s_shape)}{after}. {hint}"
                )
        elif kind == "at":
            if not _dims_compatible(t_shapes[0][1:-1], adapted[0][1:-1]):
                raise ValueError(
                    f"{describe}: attention transfer needs maps of equal height "
                    f"and width (channels may differ), got teacher "
                    f"{_shape(t_shapes[0])} and student {_shape(adapted[0])}. "
                    "Pick layers of equal spatial size or pool the larger map."
                )
        elif kind == "fsp":
            for role, (a, b), (pa, pb) in (
                ("teacher", t_shapes, t_paths), ("student", adapted, s_paths)
            ):
                if not _dims_compatible(a[1:-1], b[1:-1]):
                    raise ValueError(
                        f"{describe}: an FSP matrix relates two maps of equal "
                        f"height and width, but the {role}'s {pa!r} has shape "
                        f"{_shape(a)} and {pb!r} {_shape(b)}. Pick layers of "
                        "equal spatial size, or pool the larger map first."
                    )
            for which, t_shape, s_shape in zip(("first", "second"), t_shapes, adapted):
                if not _dims_compatible(t_shape[-1:], s_shape[-1:]):
                    raise ValueError(
                        f"{describe}: the FSP matrices differ in size: the "
                        f"{which} layers have {t_shape[-1]} (teacher) and "
                        f"{s_shape[-1]} (student) channels{after}. Pass "
                        "adapter='auto' to map the student's channels to the "
                        "teacher's."
                    )
        return _Term(name, pair, pair.weight, self._loss_function(pair, kind),
                     list(t_paths), list(s_paths), adapters, describe)

    @staticmethod
    def _loss_function(pair, kind):
        """``fn(*teacher_maps, *student_maps)``: per-sample values or a scalar."""
        if kind == "fsp":
            return lambda t1, t2, s1, s2: kd_losses.fsp_loss(
                t1, t2, s1, s2, normalize=pair.normalize, reduction="none")
        kwargs = dict(pair.loss_kwargs or {})
        if kind == "l2":
            return lambda t, s: kd_losses.l2_loss(t, s, reduction="none")
        if kind == "at":
            return lambda t, s: kd_losses.at_loss(t, s, reduction="none", **kwargs)
        if kind == "rkd":
            return lambda t, s: kd_losses.rkd_loss(t, s, **kwargs)
        fn = pair.loss
        if _compat.flavour_of_loss(fn) is not None:
            return lambda t, s: _DistillerLogic._loss_values(fn, t, s)
        return lambda t, s: fn(t, s, **kwargs)

    # ------------------------------------------------------------ public
    @property
    def adapters(self):
        """``{term name: adapter layer}`` (FSP terms: a tuple of two)."""
        out = {}
        for term in self._terms.items:
            layers = [a for a in term.adapters if a is not None]
            if layers:
                out[term.name] = layers[0] if len(term.adapters) == 1 else tuple(
                    term.adapters)
        return out

    @property
    def feature_term_names(self):
        """The names the feature terms are logged under, in order."""
        return tuple(term.name for term in self._terms.items)

    # ---------------------------------------------------- extension points
    def _student_forward(self, x, training):
        return self._taps.student(x, training=training)

    def _teacher_input(self, x):
        if self.teacher_input_fn is None:
            return x
        return self.teacher_input_fn(x)

    def _teacher_forward(self, x):
        out, features = self._taps.teacher(self._teacher_input(x), training=False)
        return tf.stop_gradient(out), {
            key: tf.stop_gradient(value) for key, value in features.items()
        }

    def _teacher_predict(self, x, batch_size):
        forward = tf.function(self._teacher_forward, reduce_retracing=True)
        size = int(tf.nest.flatten(x)[0].shape[0])
        outputs, features = [], {}
        for start in range(0, size, batch_size):
            batch = tf.nest.map_structure(
                lambda a, s=start: a[s:s + batch_size], x)
            out, feats = forward(batch)
            outputs.append(out.numpy())
            for key, value in feats.items():
                features.setdefault(key, []).append(value.numpy())
        return np.concatenate(outputs), {
            key: np.concatenate(values) for key, values in features.items()
        }

    def _feature_term_names(self):
        return self.feature_term_names

    def _feature_terms(self, teacher_features, student_features, sample_weight):
        terms = {}
        teacher_taps, student_taps = self._taps.teacher, self._taps.student
        for term in self._terms.items:
            t = [teacher_features[teacher_taps.key(p)] for p in term.teacher_paths]
            s = []
            for path, adapter in zip(term.student_paths, term.adapters):
                value = student_features[student_taps.key(path)]
                s.append(value if adapter is None else adapter(value))
            values = term.compute(*t, *s)
            value = _average(values, sample_weight, "mean",
                             f"the feature loss of {term.describe}")
            if self.check_numerics:
                value = tf.debugging.check_numerics(
                    value, f"keras_distill: the feature term {term.name!r} "
                    f"({term.describe}) is NaN or infinite")
            terms[term.name] = (term.weight, value)
        return terms

    def _extra_trainable_weights(self):
        weights = []
        for layer in getattr(self, "_adapter_layers", []):
            weights += list(layer.trainable_weights)
        return weights

    def _distillation_per_sample(self, teacher_out, student_out, y=None):
        if self.logits_weight == 0.0:
            _check_shapes(teacher_out.shape, student_out.shape)
            return tf.zeros(tf.shape(student_out)[:-1], tf.float32)
        values = super()._distillation_per_sample(teacher_out, student_out, y)
        if self.logits_weight != 1.0:
            values = values * self.logits_weight
        return values

    def call(self, inputs, training=None):
        """Returns the student's output (the tap outputs are not computed)."""
        inputs, _ = self._split_cached(inputs)
        return _single_tensor(self.student(inputs, training=training), "student")

    # ------------------------------------------------------- serialisation
    def _feature_config(self):
        return {"pairs": [pair.get_config() for pair in self.pairs]}

    def get_config(self):
        config = super().get_config()
        config.update(self._feature_config())
        config["logits_weight"] = self.logits_weight
        config["check_numerics"] = self.check_numerics
        config["teacher_input_fn"] = _serialize(self.teacher_input_fn)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if config.get("teacher_input_fn") is not None:
            config["teacher_input_fn"] = _deserialize(config["teacher_input_fn"])
        return super().from_config(config, custom_objects=custom_objects)


_COMMON_ARGS = """
        logits_weight: Weight (>= 0) of the logits distillation term
            ``(1 − alpha) · T² · KL`` (``alpha`` and ``T`` come from
            ``compile``). 0 turns it off (feature distillation alone, e.g.
            FitNets' hint stage: with ``alpha=0`` no labels are needed).
            The logged ``distillation_loss`` includes this weight.
        teacher_input_fn: Optional ``fn(x) -> teacher_x`` applied to each
            batch before the teacher (online and when caching with
            ``fit(cache_teacher=True)``), for teachers that take other inputs
            than the student: a resize, other preprocessing, one input of a
            dict (PaddleSlim's ``data_name_map``). Traced inside
            ``tf.function``: use TensorFlow ops.
        check_numerics: If True, a NaN or infinite feature term stops
            training with an ``InvalidArgumentError`` naming the term (a
            cheap check on one scalar per term; not under ``jit_compile``).
            Otherwise a non-finite loss stops ``fit`` and restores the last
            good weights, and each term's log shows which one failed.
        teacher_outputs, student_outputs, name: As for `Distiller`."""

_COMMON_NOTES = """
    ``fit`` logs ``loss``, ``student_loss``, ``distillation_loss``, one entry
    per feature term (under its name) and the compiled metrics. One forward
    pass of each network per batch computes the logits and the tapped
    features together (the teacher in inference mode, without gradient;
    none with ``fit(cache_teacher=True)``, which caches the teacher's tapped
    features too). ``evaluate`` runs the student alone in inference mode
    (BatchNorm statistics stay unchanged). ``distiller.student`` is the
    user's student, without adapters (``distiller.adapters`` holds them);
    adapter weights are in ``distiller.trainable_weights`` and saved with
    the distiller's weights. Works with students of both Keras flavours
    (the adapters take the student's flavour)."""

FeatureDistiller = distiller_class(
    _FeatureLogic,
    "FeatureDistiller",
    r"""Distils logits and intermediate features (FitNets, AT, FSP, RKD, ...).

    Minimises

    ``alpha · student_loss + (1 − alpha) · logits_weight · T² · KL(t ‖ s)
    + Σ_pairs weight · feature_loss(teacher layer, adapter(student layer))
    + sum(student.losses)``

    with one term per `FeaturePair` / `FSPPair` (see those for the losses
    and their papers). Teacher and student must be Functional models or
    built Sequential models so that their layers can be tapped; layers of
    nested sub-models are named ``"submodel/layer"``. Shapes are checked at
    construction: a pair whose shapes cannot match raises a ``ValueError``
    naming the pair and both shapes.
    """ + _COMMON_NOTES + """

    Args:
        student: The model to train (``keras`` or ``tf_keras``).
        teacher: The trained model to imitate (either flavour).
        pairs: A list of `FeaturePair` / `FSPPair`; ``(teacher_layer,
            student_layer)`` tuples mean ``FeaturePair(t, s)`` (L2, no
            adapter).""" + _COMMON_ARGS + """

    Example:
    >>> import numpy as np, keras
    >>> from keras_distill import FeatureDistiller, FeaturePair
    >>> x = np.random.rand(32, 8).astype("float32")
    >>> y = np.random.randint(0, 3, 32)
    >>> teacher = keras.Sequential([keras.Input((8,)),
    ...     keras.layers.Dense(16, activation="relu", name="t_hidden"),
    ...     keras.layers.Dense(3, name="t_logits")])
    >>> student = keras.Sequential([keras.Input((8,)),
    ...     keras.layers.Dense(4, activation="relu", name="s_hidden"),
    ...     keras.layers.Dense(3, name="s_logits")])
    >>> distiller = FeatureDistiller(student, teacher, pairs=[
    ...     FeaturePair("t_hidden", "s_hidden", adapter="auto", weight=0.5)])
    >>> distiller.compile(optimizer="adam", alpha=0.1, temperature=4.0,
    ...     student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
    ...         from_logits=True))
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['distillation_loss', 'l2_s_hidden', 'loss', 'student_loss']
    >>> len(distiller.student.weights)  # the adapter is not in the student
    4
    """,
)


# ------------------------------------------------------- convenience classes
def _check_layer_pairs(layer_pairs, argument, fsp=False):
    if not isinstance(layer_pairs, (list, tuple)) or not layer_pairs:
        raise TypeError(
            f"`{argument}` must be a non-empty list of "
            + ("((teacher_first, teacher_second), (student_first, "
               "student_second))" if fsp else "(teacher_layer, student_layer)")
            + f" tuples, got {layer_pairs!r}."
        )
    out = []
    for i, item in enumerate(layer_pairs):
        ok = isinstance(item, (list, tuple)) and len(item) == 2
        if ok and fsp:
            ok = all(isinstance(v, (list, tuple)) and len(v) == 2 for v in item)
        if not ok:
            raise TypeError(
                f"`{argument}[{i}]` must be "
                + ("((teacher_first, teacher_second), (student_first, "
                   "student_second))" if fsp else "(teacher_layer, student_layer)")
                + f", got {item!r}."
            )
        out.append(tuple(tuple(v) if fsp else v for v in item))
    return out


class _L2Logic(_FeatureLogic):
    def __init__(self, student, teacher, layer_pairs=(), adapter="auto",
                 weight=1.0, name="l2_distiller", **kwargs):
        layer_pairs = _check_layer_pairs(layer_pairs, "layer_pairs")
        pairs = [FeaturePair(t, s, "l2", weight=weight, adapter=adapter)
                 for t, s in layer_pairs]
        super().__init__(student, teacher, pairs=pairs, name=name, **kwargs)
        self._own = {"layer_pairs": [list(p) for p in layer_pairs],
                     "adapter": _serialize(adapter), "weight": float(weight)}

    def _feature_config(self):
        return dict(self._own)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["adapter"] = _deserialize(config.get("adapter"))
        return super().from_config(config, custom_objects=custom_objects)


L2Distiller = distiller_class(
    _L2Logic,
    "L2Distiller",
    r"""FitNets hint distillation: L2 between named layers, plus logits KD.

    Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015). For each
    ``(teacher_layer, student_layer)``:
    :math:`w \cdot \mathrm{mean}\big((r(s) - t)^2\big)` with ``r`` a learned
    regressor (``adapter="auto"``: a 1x1 convolution or Dense layer, added
    where the widths differ). The same as `FeatureDistiller` with
    ``FeaturePair(t, s, "l2", weight, adapter)`` pairs.
    """ + _COMMON_NOTES + """

    Args:
        student, teacher: As for `FeatureDistiller`.
        layer_pairs: ``[(teacher_layer, student_layer), ...]``.
        adapter: ``"auto"`` (default), ``None``, ``"conv1x1"`` or ``"dense"``.
        weight: Weight of each L2 term.""" + _COMMON_ARGS + """

    Example:
    >>> import keras
    >>> from keras_distill import L2Distiller
    >>> from keras_distill.models import build_student, build_teacher
    >>> d = L2Distiller(build_student("cnn"), build_teacher(),
    ...                 layer_pairs=[("block2b_relu", "block2_conv")])
    >>> d.feature_term_names, type(d.adapters["l2_block2_conv"]).__name__
    (('l2_block2_conv',), 'Conv2D')
    """,
)


class _FSPLogic(_FeatureLogic):
    def __init__(self, student, teacher, pairs=(), weight=1.0, normalize=True,
                 adapter=None, name="fsp_distiller", **kwargs):
        layer_pairs = _check_layer_pairs(pairs, "pairs", fsp=True)
        specs = [FSPPair(t[0], t[1], s[0], s[1], weight=weight,
                         normalize=normalize, adapter=adapter)
                 for t, s in layer_pairs]
        super().__init__(student, teacher, pairs=specs, name=name, **kwargs)
        self._own = {"pairs": [[list(t), list(s)] for t, s in layer_pairs],
                     "weight": float(weight), "normalize": normalize,
                     "adapter": adapter}

    def _feature_config(self):
        return dict(self._own)


FSPDistiller = distiller_class(
    _FSPLogic,
    "FSPDistiller",
    r"""FSP-matrix distillation (Yim et al. 2017), plus logits KD.

    Yim, Joo, Bae & Kim, "A Gift from Knowledge Distillation: Fast
    Optimization, Network Minimization and Transfer Learning" (CVPR 2017).
    For each ``((t1, t2), (s1, s2))`` the student's FSP matrix
    :math:`G^S = \frac{1}{HW}\sum_{h,w} s_1 s_2^\top` copies the teacher's
    :math:`G^T`, with loss :math:`w \cdot \mathrm{mean}(G^S - G^T)^2`
    (`keras_distill.losses.fsp_loss`, maps RMS-normalised by default so the
    loss cannot blow up: the NaNs that made PaddleSlim disable FSP). The
    two layers of a network need equal height and width; channel counts
    must match between teacher and student (or use ``adapter="auto"``).
    """ + _COMMON_NOTES + """

    Args:
        student, teacher: As for `FeatureDistiller`.
        pairs: ``[((teacher_first, teacher_second), (student_first,
            student_second)), ...]``.
        weight: Weight of each FSP term.
        normalize: See `FSPPair`.
        adapter: ``None`` (default), ``"auto"``, ``"conv1x1"`` or
            ``"dense"``.""" + _COMMON_ARGS + """

    Example:
    >>> from keras_distill import FSPDistiller
    >>> from keras_distill.models import build_student, build_teacher
    >>> d = FSPDistiller(build_student("cnn"), build_teacher(),
    ...     pairs=[(("block1a_relu", "block1b_relu"),
    ...             ("block1_conv", "block1_conv"))], adapter="auto")
    >>> d.feature_term_names
    ('fsp_block1_conv',)
    """,
)


class _AttentionLogic(_FeatureLogic):
    def __init__(self, student, teacher, layer_pairs=(), weight=1.0, p=2,
                 name="attention_distiller", **kwargs):
        layer_pairs = _check_layer_pairs(layer_pairs, "layer_pairs")
        pairs = [FeaturePair(t, s, "at", weight=weight, loss_kwargs={"p": p})
                 for t, s in layer_pairs]
        super().__init__(student, teacher, pairs=pairs, name=name, **kwargs)
        self._own = {"layer_pairs": [list(x) for x in layer_pairs],
                     "weight": float(weight), "p": p}

    def _feature_config(self):
        return dict(self._own)


AttentionDistiller = distiller_class(
    _AttentionLogic,
    "AttentionDistiller",
    r"""Attention transfer (Zagoruyko & Komodakis 2017), plus logits KD.

    "Paying More Attention to Attention" (ICLR 2017). Each map's spatial
    attention :math:`Q = \mathrm{vec}(\sum_c |A_c|^p)`, normalised to unit
    length, is matched: :math:`w \cdot \mathrm{mean}_b \lVert \hat Q^S -
    \hat Q^T \rVert_2^2` (`keras_distill.losses.at_loss`). Channel counts
    may differ (no adapter needed); height and width must match.
    """ + _COMMON_NOTES + """

    Args:
        student, teacher: As for `FeatureDistiller`.
        layer_pairs: ``[(teacher_layer, student_layer), ...]``.
        weight: Weight of each attention term (the loss is in [0, 2]).
        p: The exponent of the attention map (2 in the paper).""" + _COMMON_ARGS + """

    Example:
    >>> from keras_distill import AttentionDistiller
    >>> from keras_distill.models import build_student, build_teacher
    >>> d = AttentionDistiller(build_student("cnn"), build_teacher(),
    ...     layer_pairs=[("block1_pool", "block1_pool"),
    ...                  ("block2_pool", "block2_pool")], weight=10.0)
    >>> d.feature_term_names
    ('at_block1_pool', 'at_block2_pool')
    """,
)


class _RKDLogic(_FeatureLogic):
    def __init__(self, student, teacher, layer_pairs=(), weight=1.0,
                 distance_weight=25.0, angle_weight=50.0,
                 name="rkd_distiller", **kwargs):
        layer_pairs = _check_layer_pairs(layer_pairs, "layer_pairs")
        options = {"distance_weight": distance_weight,
                   "angle_weight": angle_weight}
        pairs = [FeaturePair(t, s, "rkd", weight=weight, loss_kwargs=options)
                 for t, s in layer_pairs]
        super().__init__(student, teacher, pairs=pairs, name=name, **kwargs)
        self._own = {"layer_pairs": [list(x) for x in layer_pairs],
                     "weight": float(weight), **options}

    def _feature_config(self):
        return dict(self._own)


RKDDistiller = distiller_class(
    _RKDLogic,
    "RKDDistiller",
    r"""Relational knowledge distillation (Park et al. 2019), plus logits KD.

    "Relational Knowledge Distillation" (CVPR 2019): the student copies the
    distances and angles between the batch's embeddings at the named layers,
    :math:`w \cdot (w_D L_D + w_A L_A)` (`keras_distill.losses.rkd_loss`),
    so the embedding widths may differ. RKD is a property of the batch, so
    ``sample_weight`` (and ``class_weight``) cannot weigh it: ``fit``
    raises a ``ValueError`` if they are given.
    """ + _COMMON_NOTES + """

    Args:
        student, teacher: As for `FeatureDistiller`.
        layer_pairs: ``[(teacher_layer, student_layer), ...]`` of embedding
            layers (higher ranks are flattened per sample).
        weight: Weight of each RKD term.
        distance_weight, angle_weight: :math:`w_D` (25) and :math:`w_A`
            (50), the paper's.""" + _COMMON_ARGS + """

    Example:
    >>> from keras_distill import RKDDistiller
    >>> from keras_distill.models import build_student, build_teacher
    >>> d = RKDDistiller(build_student("cnn"), build_teacher(),
    ...                  layer_pairs=[("fc", "fc")])
    >>> d.feature_term_names
    ('rkd_fc',)
    """,
)


# ------------------------------------------------------------- many teachers
def _ensemble_call(teachers, weights, kinds, x):
    total = None
    for teacher, weight, kind in zip(teachers, weights, kinds):
        out = _single_tensor(teacher(x, training=False), "teacher")
        if kind == "probabilities":
            logits = kd_losses.probabilities_to_logits(out)
        else:
            logits = tf.cast(out, tf.float32)
        term = weight * logits
        total = term if total is None else total + term
    return total


def _ensemble_config(self):
    flavour = _compat.flavour_of(self.teachers[0])
    k = _compat.keras_module(flavour)
    return {
        "name": self.name,
        "teachers": [k.saving.serialize_keras_object(t) for t in self.teachers],
        "teacher_flavour": flavour,
        "weights": list(self.teacher_weights),
        "teacher_outputs": list(self.teacher_kinds),
    }


def _ensemble_from_config(cls, config, custom_objects=None):
    config = dict(config)
    k = _compat.keras_module(config.pop("teacher_flavour"))
    config["teachers"] = [
        k.saving.deserialize_keras_object(t, custom_objects=custom_objects)
        for t in config["teachers"]
    ]
    return teacher_ensemble(**config)


def _ensemble_init(self, teachers, weights, kinds):
    self.teachers = list(teachers)
    self.teacher_weights = tuple(weights)
    self.teacher_kinds = tuple(kinds)
    if all(t.built for t in teachers):
        self.built = True


@keras.saving.register_keras_serializable(package="keras_distill")
class _KerasTeacherEnsemble(keras.Model):
    """Weighted average of teachers' logits (Keras 3 teachers)."""

    def __init__(self, teachers, weights, kinds, name="teacher_ensemble", **kwargs):
        super().__init__(name=name, **kwargs)
        _ensemble_init(self, teachers, weights, kinds)

    def call(self, x, training=False):
        return _ensemble_call(self.teachers, self.teacher_weights,
                              self.teacher_kinds, x)

    get_config = _ensemble_config
    from_config = classmethod(_ensemble_from_config)


@functools.lru_cache(maxsize=None)
def _tf_keras_ensemble_class():
    import tf_keras

    @tf_keras.saving.register_keras_serializable(package="keras_distill")
    class TfKerasTeacherEnsemble(tf_keras.Model):
        """Weighted average of teachers' logits (tf_keras teachers)."""

        def __init__(self, teachers, weights, kinds, name="teacher_ensemble",
                     **kwargs):
            super().__init__(name=name, **kwargs)
            _ensemble_init(self, teachers, weights, kinds)

        def call(self, x, training=False):
            return _ensemble_call(self.teachers, self.teacher_weights,
                                  self.teacher_kinds, x)

        get_config = _ensemble_config
        from_config = classmethod(_ensemble_from_config)

    return TfKerasTeacherEnsemble


def teacher_ensemble(teachers, weights=None, teacher_outputs="auto",
                     name="teacher_ensemble"):
    r"""One teacher model whose logits are the weighted average of several.

    .. math::
        z = \sum_k w_k\, z_k, \qquad \sum_k w_k = 1

    with :math:`z_k` teacher k's logits (``log p`` for a teacher ending in a
    softmax, which softmax maps back to ``p``). Softening the average,
    :math:`\mathrm{softmax}(z/T) \propto \prod_k \mathrm{softmax}(z_k/T)^{w_k}`,
    gives a weighted geometric mean of the teachers' softened
    distributions (a product of experts). Every teacher runs in inference
    mode on the same inputs.

    Args:
        teachers: A list of Keras models of one flavour, each outputting one
            score per class for the same classes.
        weights: Non-negative weights, one per teacher (normalised to sum to
            1); default equal weights.
        teacher_outputs: ``"auto"``, ``"logits"`` or ``"probabilities"``, or
            a list of those, one per teacher.
        name: The model's name.

    Returns:
        A (subclassed) model of the teachers' flavour outputting logits.

    Example:
    >>> import keras, numpy as np
    >>> a = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> b = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> ens = teacher_ensemble([a, b], weights=[3, 1])
    >>> x = np.ones((1, 2), "float32")
    >>> want = 0.75 * a.predict(x, verbose=0) + 0.25 * b.predict(x, verbose=0)
    >>> bool(np.allclose(ens.predict(x, verbose=0), want, atol=1e-6))
    True
    """
    if not isinstance(teachers, (list, tuple)) or not teachers:
        raise TypeError(
            f"`teachers` must be a non-empty list of Keras models, got {teachers!r}."
        )
    flavours = [_compat.model_flavour(t, f"teachers[{i}]")
                for i, t in enumerate(teachers)]
    if len(set(flavours)) != 1:
        raise ValueError(
            f"`teachers` mixes Keras flavours {flavours}; give teachers of one "
            "flavour (convert them, or distil from each in turn)."
        )
    if len({id(t) for t in teachers}) != len(teachers):
        raise ValueError("`teachers` holds the same model more than once; "
                         "use `weights` to weigh a teacher more.")
    if weights is None:
        weights = [1.0] * len(teachers)
    if not isinstance(weights, (list, tuple)) or len(weights) != len(teachers):
        raise ValueError(
            f"`weights` must be a list of {len(teachers)} numbers (one per "
            f"teacher), got {weights!r}."
        )
    weights = [_check_weight(w, f"weights[{i}]") for i, w in enumerate(weights)]
    if sum(weights) <= 0:
        raise ValueError(f"`weights` must not all be 0, got {weights!r}.")
    weights = [w / sum(weights) for w in weights]
    if isinstance(teacher_outputs, str):
        teacher_outputs = [teacher_outputs] * len(teachers)
    if len(teacher_outputs) != len(teachers):
        raise ValueError(
            f"`teacher_outputs` must be one value or one per teacher "
            f"({len(teachers)}), got {teacher_outputs!r}."
        )
    kinds = [
        _resolve_output_kind(t, _check_output_kind(kind, "teacher_outputs"),
                             "teacher_outputs")
        for t, kind in zip(teachers, teacher_outputs)
    ]
    shapes = [_compat.single_output_shape(t) for t in teachers]
    for i, shape in enumerate(shapes):
        _check_class_axis(shape, f"teachers[{i}]")
        if shape is not None and shapes[0] is not None:
            try:
                _check_shapes(shapes[0], shape)
            except ValueError:
                raise ValueError(
                    f"teachers[0] and teachers[{i}] output different shapes, "
                    f"{tuple(shapes[0])} and {tuple(shape)}: all teachers must "
                    "score the same classes."
                ) from None
    if flavours[0] == _compat.KERAS3:
        cls = _KerasTeacherEnsemble
    else:
        cls = _tf_keras_ensemble_class()
    ensemble = cls(list(teachers), weights, kinds, name=name)
    ensemble._class_shape = next((s for s in shapes if s is not None), None)
    return ensemble


class _MultiTeacherLogic(_DistillerLogic):
    def __init__(self, student, teachers=(), teacher_weights=None,
                 teacher_outputs="auto", student_outputs="auto",
                 name="multi_teacher_distiller", **kwargs):
        ensemble = teacher_ensemble(teachers, teacher_weights, teacher_outputs)
        if any(t is student for t in teachers):
            raise ValueError(
                "The student is also one of the `teachers`. Build a separate "
                "student model to distil into."
            )
        shape = _compat.single_output_shape(student)
        if shape is not None and ensemble._class_shape is not None:
            _check_shapes(ensemble._class_shape, shape)
        super().__init__(student, ensemble, teacher_outputs="logits",
                         student_outputs=student_outputs, name=name, **kwargs)

    @property
    def teachers(self):
        """The teachers (``distiller.teacher`` is their ensemble)."""
        return list(self.teacher.teachers)

    def get_config(self):
        config = super().get_config()
        ensemble = config.pop("teacher")
        config.pop("teacher_flavour")
        config.pop("teacher_outputs")
        ens = ensemble.get("config", ensemble)
        config["teachers"] = ens["teachers"]
        config["teacher_flavour"] = ens["teacher_flavour"]
        config["teacher_weights"] = ens["weights"]
        config["teacher_outputs"] = ens["teacher_outputs"]
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        k = _compat.keras_module(config.pop("student_flavour"))
        config["student"] = k.saving.deserialize_keras_object(
            config["student"], custom_objects=custom_objects)
        k = _compat.keras_module(config.pop("teacher_flavour"))
        config["teachers"] = [
            k.saving.deserialize_keras_object(t, custom_objects=custom_objects)
            for t in config["teachers"]
        ]
        return cls(**config)


MultiTeacherDistiller = distiller_class(
    _MultiTeacherLogic,
    "MultiTeacherDistiller",
    r"""Distils the weighted average of several teachers' logits.

    The same loss as `Distiller` with the teacher's logits replaced by
    :math:`z = \sum_k w_k z_k` (weights normalised to sum to 1; see
    `teacher_ensemble`), e.g. an ensemble of models trained with different
    seeds or architectures. Each teacher runs once per batch in inference
    mode (or never, with ``fit(cache_teacher=True)``, which caches the
    average). ``distiller.teacher`` is the ensemble (a model: evaluate it
    like any teacher), ``distiller.teachers`` the list. Logits only: for
    feature terms distil from one teacher with `FeatureDistiller`.

    Args:
        student: The model to train (``keras`` or ``tf_keras``).
        teachers: A list of trained models of one Keras flavour.
        teacher_weights: One non-negative weight per teacher; default equal.
        teacher_outputs: ``"auto"``, ``"logits"``, ``"probabilities"`` or a
            list of those, one per teacher.
        student_outputs, name: As for `Distiller`.

    Example:
    >>> import numpy as np, keras
    >>> from keras_distill import MultiTeacherDistiller
    >>> x = np.random.rand(32, 4).astype("float32")
    >>> def net():
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> d = MultiTeacherDistiller(net(), teachers=[net(), net()],
    ...                           teacher_weights=[2.0, 1.0])
    >>> d.compile(optimizer="adam", alpha=0.0, temperature=2.0)
    >>> sorted(d.fit(x, epochs=1, verbose=0).history)
    ['distillation_loss', 'loss']
    """,
)
