"""Feature terms: intermediate features of teacher and student compared.

Example:
>>> feature_term("at", p=1)
AT(p=1)
"""

import re

from keras_distill import losses as kd_losses
from keras_distill._validation import (
    check_bool,
    check_callable,
    check_exponent,
    check_some_weight,
    check_weight,
)
from keras_distill.terms.base import (
    _REGISTRY,
    Term,
    _deserialize,
    _serialize,
    is_loss_object,
    per_sample_loss,
    register,
)


def _shape(shape):
    return "(unknown)" if shape is None else str(tuple(shape))


def _dims_compatible(a, b):
    return len(a) == len(b) and all(
        x is None or y is None or x == y for x, y in zip(a, b)
    )


class FeatureTerm(Term):
    """A term on intermediate features of the teacher and the student.

    ``per_sample(*teacher_maps, *student_maps)`` returns one value per
    sample, or a scalar for a property of the whole batch (then
    ``sample_weight`` cannot weigh it). ``arity`` is the number of maps per
    network (2 for FSP). ``check_shapes`` raises a ``ValueError`` naming the
    pair when the shapes cannot match; ``needs_equal_width`` says whether an
    ``adapter="auto"`` must map the student's channels to the teacher's.

    Example:
    >>> AT().min_rank, L2().needs_equal_width
    (3, True)
    """

    kind = "features"
    arity = 1
    min_rank = 2
    needs_equal_width = True
    batch_level = False

    def check_shapes(self, teacher_shapes, student_shapes, describe, after,
                     paths=None):
        """Raises a ``ValueError`` if these (adapted) shapes cannot work.

        ``paths``: ``(teacher paths, student paths)``, for the message.
        """

    def check_ranks(self, paths, shapes, describe):
        """Raises a ``ValueError`` for features of too low a rank."""
        for path, shape in zip(paths, shapes):
            if shape is None:
                raise ValueError(f"{describe}: the rank of {path!r} is unknown.")
            if len(shape) < self.min_rank:
                raise ValueError(
                    f"{describe}: {self.registry_name!r} needs "
                    + ("channels-last feature maps (batch, H, W, C)"
                       if self.min_rank >= 3 else "embeddings (batch, D)")
                    + f", but {path!r} has shape {_shape(shape)}."
                )

    def per_sample(self, *maps):
        raise NotImplementedError


@register("l2")
class L2(FeatureTerm):
    r"""FitNets hint: ``mean((s − t)²)`` (Romero et al., ICLR 2015).

    `keras_distill.losses.l2_loss`; shapes must be equal (after an adapter
    mapping the student's channels to the teacher's).

    Example:
    >>> import numpy as np
    >>> float(L2().per_sample(np.ones((1, 2)), np.zeros((1, 2)))[0])
    1.0
    """

    min_rank = 1

    def per_sample(self, teacher, student):
        return kd_losses.l2_loss(teacher, student, reduction="none")

    def check_shapes(self, teacher_shapes, student_shapes, describe, after,
                     paths=None):
        t_shape, s_shape = teacher_shapes[0], student_shapes[0]
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


@register("at")
class AT(FeatureTerm):
    r"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017).

    Each map's spatial attention ``Q = vec(Σ_c |A_c|^p)``, normalised to
    unit length, is matched: ``mean_b ‖Q̂_S − Q̂_T‖²``
    (`keras_distill.losses.at_loss`). Channel counts may differ; height and
    width may not.

    Args:
        p: The exponent of the attention map (2 in the paper).

    Example:
    >>> AT(p=2)
    AT(p=2)
    """

    min_rank = 3
    needs_equal_width = False
    _options = ("p",)

    def __init__(self, p=2):
        # at_loss's own check, now rather than on the first batch.
        self.p = check_exponent(p, "p")

    def per_sample(self, teacher, student):
        return kd_losses.at_loss(teacher, student, p=self.p, reduction="none")

    def check_shapes(self, teacher_shapes, student_shapes, describe, after,
                     paths=None):
        if not _dims_compatible(teacher_shapes[0][1:-1], student_shapes[0][1:-1]):
            raise ValueError(
                f"{describe}: attention transfer needs maps of equal height "
                f"and width (channels may differ), got teacher "
                f"{_shape(teacher_shapes[0])} and student "
                f"{_shape(student_shapes[0])}. Pick layers of equal spatial "
                "size or pool the larger map."
            )


@register("rkd")
class RKD(FeatureTerm):
    r"""Relational knowledge distillation (Park et al., CVPR 2019).

    The student copies the distances and angles between the batch's
    embeddings: ``w_D · L_D + w_A · L_A`` (`keras_distill.losses.rkd_loss`),
    so widths may differ. A property of the whole batch: ``sample_weight``
    cannot weigh it.

    Args:
        distance_weight: ``w_D`` (25 in the paper).
        angle_weight: ``w_A`` (50 in the paper).

    Example:
    >>> RKD().batch_level
    True
    """

    min_rank = 2
    needs_equal_width = False
    batch_level = True
    _options = ("distance_weight", "angle_weight")

    def __init__(self, distance_weight=25.0, angle_weight=50.0):
        self.distance_weight = check_weight(distance_weight, "distance_weight")
        self.angle_weight = check_weight(angle_weight, "angle_weight")
        check_some_weight(
            "RKD", {"distance_weight": (self.distance_weight, "the distances"),
                    "angle_weight": (self.angle_weight, "the angles")},
            "distance_weight=25, angle_weight=50")

    def per_sample(self, teacher, student):
        return kd_losses.rkd_loss(
            teacher, student, distance_weight=self.distance_weight,
            angle_weight=self.angle_weight,
        )


@register("fsp")
class FSP(FeatureTerm):
    r"""FSP matrices (Yim et al., CVPR 2017): two layers per network.

    ``G = (1/HW) Σ_{h,w} F¹ F²ᵀ`` relates two maps of equal height and
    width; the student's copies the teacher's, ``mean (G_S − G_T)²``
    (`keras_distill.losses.fsp_loss`). Channel counts must match between
    teacher and student (or use an adapter).

    Args:
        normalize: Divide each map by its per-sample RMS first (default,
            finite whatever the activations' scale); ``False`` gives the
            paper's / PaddleSlim's numbers.

    Example:
    >>> FSP().arity
    2
    """

    arity = 2
    min_rank = 3
    _options = ("normalize",)

    def __init__(self, normalize=True):
        self.normalize = check_bool(normalize, "normalize")

    def per_sample(self, teacher_first, teacher_second, student_first,
                   student_second):
        return kd_losses.fsp_loss(
            teacher_first, teacher_second, student_first, student_second,
            normalize=self.normalize, reduction="none",
        )

    def check_shapes(self, teacher_shapes, student_shapes, describe, after,
                     paths=None):
        t_paths, s_paths = paths or (("first", "second"), ("first", "second"))
        for role, (a, b), (pa, pb) in (
            ("teacher", teacher_shapes, t_paths),
            ("student", student_shapes, s_paths),
        ):
            if not _dims_compatible(a[1:-1], b[1:-1]):
                raise ValueError(
                    f"{describe}: an FSP matrix relates two maps of equal "
                    f"height and width, but the {role}'s {pa!r} has shape "
                    f"{_shape(a)} and {pb!r} {_shape(b)}. Pick layers of "
                    "equal spatial size, or pool the larger map first."
                )
        for which, t_shape, s_shape in zip(("first", "second"), teacher_shapes,
                                           student_shapes):
            if not _dims_compatible(t_shape[-1:], s_shape[-1:]):
                raise ValueError(
                    f"{describe}: the FSP matrices differ in size: the "
                    f"{which} layers have {t_shape[-1]} (teacher) and "
                    f"{s_shape[-1]} (student) channels{after}. Pass "
                    "adapter='auto' to map the student's channels to the "
                    "teacher's."
                )


class FeatureLoss(FeatureTerm):
    """A user's feature loss: ``fn(teacher_feat, student_feat, **kwargs)``.

    ``fn`` returns one value per sample (extra axes are averaged) or a
    scalar; a Keras ``Loss`` object is called as ``loss(y_true=teacher,
    y_pred=student)`` per sample.

    Args:
        fn: The callable or Keras loss.
        **kwargs: Keyword arguments passed to ``fn``.

    Example:
    >>> import numpy as np
    >>> term = FeatureLoss(lambda t, s: ((t - s) ** 2).sum(axis=-1))
    >>> float(term.per_sample(np.ones((1, 2)), np.zeros((1, 2)))[0])
    2.0
    """

    min_rank = 1

    def __init__(self, fn, **kwargs):
        if not callable(fn):
            raise TypeError(
                "A feature loss must be one of "
                f"{['l2', 'at', 'rkd']} or a callable fn(teacher_feat, "
                f"student_feat), got {type(fn).__name__}."
            )
        if not is_loss_object(fn):
            # Called as fn(teacher, student, **kwargs) on the first batch:
            # a wrong signature or an unknown keyword is refused now.
            check_callable(fn, "loss", 2, tuple(kwargs))
        self.fn = fn
        self.kwargs = dict(kwargs)

    @property
    def short_name(self):
        """The callable's name, for the default log name."""
        name = getattr(self.fn, "__name__", None) or type(self.fn).__name__
        name = re.sub(r"[^0-9A-Za-z_]", "_", name).strip("_")
        return name if name and name != "lambda" else "feature"

    def per_sample(self, teacher, student):
        if is_loss_object(self.fn):
            return per_sample_loss(self.fn, teacher, student)
        return self.fn(teacher, student, **self.kwargs)

    def __repr__(self):
        return f"FeatureLoss({self.short_name})"

    def get_config(self):
        return {"class_name": "FeatureLoss",
                "config": {"fn": _serialize(self.fn), **self.kwargs}}

    @classmethod
    def from_options(cls, options):
        options = dict(options)
        return cls(_deserialize(options.pop("fn")), **options)


def feature_term(obj, **kwargs):
    """The feature term a ``FeaturePair(loss=...)`` names.

    A `FeatureTerm` (as is), a registered name with its options
    (``"at"``, ``p=2``), or a callable / Keras loss (`FeatureLoss`).

    Example:
    >>> feature_term("rkd", angle_weight=0.0)
    RKD(distance_weight=25.0, angle_weight=0.0)
    """
    if isinstance(obj, FeatureTerm):
        if kwargs:
            raise ValueError(
                f"`loss_kwargs` {sorted(kwargs)} were given with a term object "
                f"{obj!r}: set them when building the term."
            )
        return obj
    if isinstance(obj, Term):
        raise TypeError(
            f"`loss`={obj!r} is a logit term; a FeaturePair needs a feature "
            "term ('l2', 'at', 'rkd', a callable, ...)."
        )
    if isinstance(obj, str):
        cls = _REGISTRY.get(obj.lower())
        if cls is FSP:
            raise ValueError(
                "An FSP term relates two layers of each network: use "
                "FSPPair(teacher_first, teacher_second, student_first, "
                "student_second) instead of FeaturePair(..., loss='fsp')."
            )
        if cls is None or not issubclass(cls, FeatureTerm):
            known = sorted(n for n, c in _REGISTRY.items()
                           if issubclass(c, FeatureTerm) and c is not FSP)
            raise ValueError(
                f"`loss` must be one of {known}, a feature term or a callable "
                f"fn(teacher_feat, student_feat), got {obj!r}."
            )
        allowed = cls._options
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise ValueError(
                f"`loss_kwargs` has {unknown} that loss {obj!r} does not "
                f"take; it takes {list(allowed) or 'none'}."
            )
        return cls(**kwargs)
    return FeatureLoss(obj, **kwargs)

