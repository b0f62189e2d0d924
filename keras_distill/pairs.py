"""Feature pairs: which teacher layer is compared with which student layer.

`FeaturePair` (one layer per network, a feature term) and `FSPPair` (two
layers per network, the FSP term) are frozen, validated, serialisable
specifications; `keras_distill.FeatureDistiller` turns them into terms.

Example:
>>> FeaturePair("t_hidden", "s_hidden").kind
'l2'
"""

import dataclasses

from keras_distill import _compat, terms
from keras_distill._validation import check_bool, check_layer_name, check_weight

_ADAPTER_KINDS = ("auto", "conv1x1", "dense")
_RESERVED_NAMES = ("loss", "student_loss", "distillation_loss")


# --------------------------------------------------------------------- checks
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
    - a `keras_distill.terms.FeatureTerm` object (or any registered name);
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
        check_layer_name(self.teacher_layer, "teacher_layer")
        check_layer_name(self.student_layer, "student_layer")
        kwargs = dict(self.loss_kwargs or {})
        terms.feature_term(self.loss, **kwargs)  # validates loss and kwargs
        object.__setattr__(self, "weight", check_weight(self.weight, "weight"))
        _check_adapter(self.adapter)
        _check_term_name(self.name)
        object.__setattr__(self, "loss_kwargs", kwargs or None)

    def __hash__(self):
        return hash((self.teacher_layer, self.student_layer, self.kind,
                     self.weight, self.name))

    @property
    def term(self):
        """The `keras_distill.terms.FeatureTerm` this pair computes."""
        return terms.feature_term(self.loss, **(self.loss_kwargs or {}))

    @property
    def kind(self):
        """The loss's short name (used in the default term name)."""
        term = self.term
        if isinstance(term, terms.FeatureLoss):
            return term.short_name
        return term.registry_name or type(term).__name__.lower()

    def get_config(self):
        """A serialisable dict; callables and layers via Keras serialisation."""
        config = {field.name: getattr(self, field.name)
                  for field in dataclasses.fields(self)}
        config["loss"] = terms._serialize(self.loss)
        config["adapter"] = terms._serialize(self.adapter)
        config["loss_kwargs"] = dict(self.loss_kwargs) if self.loss_kwargs else None
        return {"class_name": "FeaturePair", "config": config}

    @classmethod
    def from_config(cls, config):
        """The inverse of `get_config`."""
        config = dict(config.get("config", config))
        config["loss"] = terms._deserialize(config.get("loss", "l2"))
        config["adapter"] = terms._deserialize(config.get("adapter"))
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
            check_layer_name(getattr(self, field), field)
        object.__setattr__(self, "weight", check_weight(self.weight, "weight"))
        check_bool(self.normalize, "normalize")
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

    @property
    def term(self):
        """The `keras_distill.terms.FSP` term this pair computes."""
        return terms.FSP(normalize=self.normalize)

    def get_config(self):
        """A serialisable dict."""
        return {"class_name": "FSPPair", "config": dataclasses.asdict(self)}

    @classmethod
    def from_config(cls, config):
        """The inverse of `get_config`."""
        return cls(**dict(config.get("config", config)))


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


def check_layer_pairs(layer_pairs, argument, fsp=False):
    """``[(teacher_layer, student_layer), ...]`` (or FSP's nested pairs).

    Example:
    >>> check_layer_pairs([("t", "s")], "layer_pairs")
    [('t', 's')]
    """
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
