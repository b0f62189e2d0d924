"""Distillation terms: one small class per method, and a registry.

A *term* turns the teacher's and the student's outputs (logits) or
features into a loss. It validates its options when it is built, knows how
to serialise itself (``get_config`` / ``from_config``) and takes its math
from the pure functions of `keras_distill.losses`, written in
``keras.ops`` (so every term runs on every Keras 3 backend).

- **Logit terms** compare logits: `KD` (Hinton et al. 2015), `SoftLabel`
  (PaddleSlim), `DKD` (Zhao et al. 2022, needs labels) and `SoftenedLoss`
  (any Keras loss on the temperature-softened distributions, the keras.io
  example's semantics). The label-free ones also subclass
  ``keras.distillation.DistillationLoss``, so they work inside Keras's own
  ``keras.distillation.Distiller`` too.
- **Feature terms** compare intermediate features: `L2` (FitNets hints),
  `AT` (attention transfer), `RKD` (relational KD), `FSP` (two layers per
  network) and `FeatureLoss` (any callable).

``get(name, **options)`` looks a term up by name (``"kd"``, ``"dkd"``,
``"soft_label"``, ``"l2"``, ``"at"``, ``"rkd"``, ``"fsp"``); a new term
class registers itself with `register`.

Example:
>>> from keras_distill import terms
>>> terms.get("kd", temperature=4)
KD(temperature=4.0)
>>> terms.get("dkd", beta=2.0)
DKD(alpha=1.0, beta=2.0, temperature=None)
>>> sorted(terms.names())
['at', 'dkd', 'fsp', 'kd', 'l2', 'rkd', 'soft_label']
"""

import re

import keras

from keras_distill import losses as kd_losses
from keras_distill._validation import (
    check_bool,
    check_temperature,
    check_weight,
)

_REGISTRY = {}

# Every way Keras lets a user name the KL divergence: all mean exact `KD`.
_KL_NAMES = {"kldivergence", "kld", "kl", "kullbackleiblerdivergence"}


def _normalise_name(name):
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


def register(name):
    """Class decorator: makes a term available as ``get(name)``.

    Args:
        name: The registry name (lower case).

    Returns:
        The decorator.

    Example:
    >>> @register("my_l2")
    ... class MyL2(L2):
    ...     pass
    >>> type(get("my_l2")).__name__
    'MyL2'
    >>> _ = _REGISTRY.pop("my_l2")
    """
    def decorate(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(
                f"A term named {name!r} is already registered "
                f"({_REGISTRY[name].__name__}); choose another name."
            )
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return decorate


def names():
    """The names `get` knows.

    Example:
    >>> "kd" in names()
    True
    """
    return tuple(_REGISTRY)


def get(identifier, **options):
    """Looks a term up by name, or passes a term through.

    Args:
        identifier: A registered name (``"kd"``, ``"dkd"``, ...; Keras's
            names of the KL divergence such as ``"kl_divergence"`` mean
            ``"kd"``), a ``{"class_name": ..., "config": ...}`` dict from
            `Term.get_config`, or a `Term` (returned as is; ``options``
            must then be empty).
        **options: The term's constructor arguments.

    Returns:
        A `Term`.

    Example:
    >>> get("kl_divergence")
    KD(temperature=None)
    >>> get("l3")
    Traceback (most recent call last):
    ...
    ValueError: Unknown distillation term 'l3'. Known: ...
    """
    if isinstance(identifier, Term):
        if options:
            raise ValueError(
                f"Options {sorted(options)} were given with a term object "
                f"{identifier!r}: set them when building the term."
            )
        return identifier
    if isinstance(identifier, dict) and "class_name" in identifier:
        return Term.from_config(identifier)
    if not isinstance(identifier, str):
        raise TypeError(
            "A distillation term must be a name such as 'kd', a "
            "keras_distill.terms.Term or a term config dict, got "
            f"{type(identifier).__name__}."
        )
    key = identifier.lower()
    if _normalise_name(key) in _KL_NAMES:
        key = "kd"
    cls = _REGISTRY.get(key)
    if cls is None:
        raise ValueError(
            f"Unknown distillation term {identifier!r}. Known: "
            f"{sorted(_REGISTRY)}."
        )
    try:
        return cls(**options)
    except TypeError as error:
        raise TypeError(f"Term {identifier!r}: {error}") from None


def _fmt(value):
    return repr(value)


class Term:
    """Base class of every distillation term.

    Subclasses set the class attribute ``kind`` (``"logits"`` or
    ``"features"``), implement ``per_sample`` and list their options in
    ``_options`` (constructor argument names, used by `get_config` and
    ``repr``).

    Example:
    >>> isinstance(get("l2"), Term)
    True
    """

    kind = None
    registry_name = None
    _options = ()

    def get_config(self):
        """``{"class_name": ..., "config": {option: value}}``.

        Example:
        >>> KD(temperature=2).get_config()
        {'class_name': 'KD', 'config': {'temperature': 2.0}}
        """
        return {
            "class_name": type(self).__name__,
            "config": {name: getattr(self, name) for name in self._options},
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds a term from `get_config`'s dict.

        Example:
        >>> Term.from_config(KD(temperature=2).get_config())
        KD(temperature=2.0)
        """
        name = config.get("class_name")
        options = dict(config.get("config", {}))
        for term_cls in _REGISTRY.values():
            if term_cls.__name__ == name:
                return term_cls(**options)
        for term_cls in (SoftenedLoss, FeatureLoss):
            if term_cls.__name__ == name:
                return term_cls.from_options(options)
        raise ValueError(f"Unknown term class {name!r} in config {config!r}.")

    def __repr__(self):
        options = ", ".join(
            f"{name}={_fmt(getattr(self, name))}" for name in self._options
        )
        return f"{type(self).__name__}({options})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(repr(self))


# ---------------------------------------------------------------- logit terms
class LogitTerm(Term):
    """A term on the teacher's and student's logits.

    ``per_sample(teacher_logits, student_logits, labels=None,
    temperature=None)`` returns one value per sample. ``temperature`` is
    the distiller's (``compile(temperature=...)``); a term built with its
    own ``temperature`` uses that instead.

    Example:
    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0]])
    >>> float(KD().per_sample(t, t, temperature=2.0)[0])
    0.0
    """

    kind = "logits"
    needs_labels = False
    temperature = None

    def _temperature(self, temperature):
        if self.temperature is not None:
            return self.temperature
        return 1.0 if temperature is None else temperature

    def per_sample(self, teacher_logits, student_logits, labels=None,
                   temperature=None):
        raise NotImplementedError


class _KerasDistillationLoss(keras.distillation.DistillationLoss):
    """Makes a label-free logit term usable in ``keras.distillation``.

    ``compute_loss`` is the batch mean of `per_sample` at the term's own
    temperature (1 when it has none).
    """

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """The batch-mean loss (``keras.distillation.DistillationLoss`` API).

        Example:
        >>> import numpy as np
        >>> t = np.array([[1.0, 0.0]])
        >>> float(KD(temperature=2).compute_loss(t, t))
        0.0
        """
        return keras.ops.mean(self.per_sample(teacher_outputs, student_outputs))

    def validate_outputs(self, teacher_outputs, student_outputs):
        keras.tree.assert_same_structure(teacher_outputs, student_outputs)


@register("kd")
class KD(LogitTerm, _KerasDistillationLoss):
    r"""Hinton knowledge distillation: ``T² · KL(softmax(t/T) ‖ softmax(s/T))``.

    Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network"
    (2015); `keras_distill.losses.kd_loss`, computed exactly from
    log-softmax (finite for logits of any size). The distiller's default.

    Args:
        temperature: T > 0, or ``None`` (default) to use the distiller's
            ``compile(temperature=...)`` (1 inside ``keras.distillation``).

    Example:
    >>> import numpy as np
    >>> t = np.array([[10.0, 0.0, -10.0]])
    >>> round(float(KD(temperature=4).compute_loss(t, np.zeros((1, 3)))), 4)
    12.7056
    """

    _options = ("temperature",)

    def __init__(self, temperature=None):
        self.temperature = (None if temperature is None
                            else check_temperature(temperature, "temperature"))

    def per_sample(self, teacher_logits, student_logits, labels=None,
                   temperature=None):
        return kd_losses.kd_loss(
            teacher_logits, student_logits, self._temperature(temperature),
            reduction="none",
        )


@register("soft_label")
class SoftLabel(LogitTerm, _KerasDistillationLoss):
    r"""Soft-label cross-entropy with two temperatures, no T² (PaddleSlim).

    ``mean_b −Σ_c softmax(t/T_t)_c · log_softmax(s/T_s)_c``
    (`keras_distill.losses.soft_label_loss`).

    Args:
        teacher_temperature: T_t > 0 (default 1).
        student_temperature: T_s > 0 (default 1).

    Example:
    >>> import numpy as np
    >>> t = np.array([[0.0, 0.0]])
    >>> round(float(SoftLabel().compute_loss(t, t)), 6)
    0.693147
    """

    _options = ("teacher_temperature", "student_temperature")

    def __init__(self, teacher_temperature=1.0, student_temperature=1.0):
        self.teacher_temperature = check_temperature(
            teacher_temperature, "teacher_temperature")
        self.student_temperature = check_temperature(
            student_temperature, "student_temperature")

    def per_sample(self, teacher_logits, student_logits, labels=None,
                   temperature=None):
        return kd_losses.soft_label_loss(
            teacher_logits, student_logits, self.teacher_temperature,
            self.student_temperature, reduction="none",
        )


@register("dkd")
class DKD(LogitTerm):
    r"""Decoupled knowledge distillation (Zhao et al., CVPR 2022).

    ``alpha · TCKD + beta · NCKD``, both T²-scaled
    (`keras_distill.losses.dkd_loss`): the target-class term (binary
    target/rest distributions) and the non-target term (the distribution
    over the other classes) weighed separately. It needs the labels, so
    ``fit`` must get ``(x, y)``; the Distiller's own ``alpha`` still weighs
    the hard-label loss against it.

    Args:
        alpha: Weight of TCKD (>= 0).
        beta: Weight of NCKD (>= 0); the paper uses 8 on CIFAR-100.
        temperature: T > 0, or ``None`` for the distiller's.

    Example:
    >>> DKD(beta=4.0)
    DKD(alpha=1.0, beta=4.0, temperature=None)
    """

    needs_labels = True
    _options = ("alpha", "beta", "temperature")

    def __init__(self, alpha=1.0, beta=8.0, temperature=None):
        self.alpha = check_weight(alpha, "alpha")
        self.beta = check_weight(beta, "beta")
        self.temperature = (None if temperature is None
                            else check_temperature(temperature, "temperature"))

    def per_sample(self, teacher_logits, student_logits, labels=None,
                   temperature=None):
        if labels is None:
            raise ValueError(
                "DKD needs the labels (its target-class term uses them): "
                "pass `(x, y)` to fit/evaluate, or use the default 'kd' term "
                "to distil unlabelled data."
            )
        return kd_losses.dkd_loss(
            teacher_logits, student_logits, labels, alpha=self.alpha,
            beta=self.beta, temperature=self._temperature(temperature),
            reduction="none",
        )


def _keras_module_of(obj):
    module = type(obj).__module__ or ""
    return module.split(".")[0]


def per_sample_loss(fn, y_true, y_pred):
    """Per-sample values of a loss: a Keras ``Loss`` object is not reduced.

    A Keras 3 or tf_keras ``Loss`` instance is evaluated through its
    public ``call`` (after the dtype cast ``Loss.__call__`` would do); any
    other callable is called as ``fn(y_true, y_pred)``.

    Example:
    >>> import numpy as np, keras
    >>> values = per_sample_loss(keras.losses.MeanSquaredError(),
    ...                          np.zeros((2, 3)), np.ones((2, 3)))
    >>> tuple(values.shape)
    (2,)
    """
    if isinstance(fn, keras.losses.Loss):
        dtype = getattr(fn, "dtype", None) or "float32"
        y_true = keras.tree.map_structure(
            lambda v: keras.ops.cast(v, dtype), y_true)
        return fn.call(y_true, keras.ops.cast(y_pred, dtype))
    if _keras_module_of(fn) == "tf_keras" and hasattr(fn, "call"):
        return fn.call(y_true, y_pred)
    return fn(y_true, y_pred)


class SoftenedLoss(LogitTerm, _KerasDistillationLoss):
    """Any loss on the softened distributions, times T² (keras.io semantics).

    ``T² · fn(softmax(t/T), softmax(s/T))``, per sample, as the keras.io
    ``Distiller`` example computes its distillation loss. Use `KD` for the
    KL divergence: it is exact where ``keras.losses.KLDivergence`` clips
    probabilities.

    Args:
        fn: A Keras loss (object or name) or a callable
            ``fn(y_true, y_pred)`` returning one value per sample.
        temperature: T > 0, or ``None`` for the distiller's.

    Example:
    >>> import numpy as np, keras
    >>> term = SoftenedLoss(keras.losses.MeanSquaredError(), temperature=2)
    >>> t = np.array([[1.0, 0.0]])
    >>> float(term.compute_loss(t, t))
    0.0
    """

    _options = ("fn", "temperature")

    def __init__(self, fn, temperature=None):
        if isinstance(fn, str):
            try:
                fn = keras.losses.get(fn)
            except (ValueError, TypeError) as error:
                raise ValueError(
                    f"`distillation_loss_fn`={fn!r} is not a Keras loss name. "
                    "Pass 'kl_divergence', a term such as "
                    "keras_distill.terms.DKD(), or a loss object."
                ) from error
        if not callable(fn):
            raise TypeError(
                "`distillation_loss_fn` must be a term name, a "
                "keras_distill.terms.Term, a Keras loss or a callable "
                f"fn(y_true, y_pred), got {type(fn).__name__}."
            )
        self.fn = fn
        self.temperature = (None if temperature is None
                            else check_temperature(temperature, "temperature"))

    def per_sample(self, teacher_logits, student_logits, labels=None,
                   temperature=None):
        temperature = self._temperature(temperature)
        t = keras.ops.softmax(
            keras.ops.cast(teacher_logits, "float32") / temperature, axis=-1)
        s = keras.ops.softmax(
            keras.ops.cast(student_logits, "float32") / temperature, axis=-1)
        return per_sample_loss(self.fn, t, s) * (temperature**2)

    def get_config(self):
        return {"class_name": "SoftenedLoss",
                "config": {"fn": _serialize(self.fn),
                           "temperature": self.temperature}}

    @classmethod
    def from_options(cls, options):
        return cls(_deserialize(options["fn"]), options.get("temperature"))


def _is_kl_divergence(fn):
    """True for every way Keras lets a user name the KL divergence loss."""
    if isinstance(fn, str):
        return _normalise_name(fn) in _KL_NAMES
    module = _keras_module_of(fn)
    if module not in ("keras", "tf_keras"):
        module = (getattr(fn, "__module__", "") or "").split(".")[0]
    if module not in ("keras", "tf_keras"):
        return False
    name = (type(fn).__name__ if not hasattr(fn, "__name__")
            else fn.__name__)
    return _normalise_name(name) in _KL_NAMES


def logit_term(obj):
    """The logit term a distiller's ``distillation_loss_fn`` names.

    - a `LogitTerm`: itself;
    - Keras's KL divergence in any form (``"kl_divergence"``, ``"kld"``,
      ``keras.losses.KLDivergence()``, ``keras.losses.kl_divergence``, the
      tf_keras equivalents): exact `KD`;
    - another registered logit-term name (``"dkd"``, ``"soft_label"``);
    - any other Keras loss or callable: `SoftenedLoss` (keras.io semantics).

    Example:
    >>> import keras
    >>> logit_term(keras.losses.KLDivergence())
    KD(temperature=None)
    >>> type(logit_term(keras.losses.MeanSquaredError())).__name__
    'SoftenedLoss'
    """
    if obj is None:
        raise ValueError(
            "`distillation_loss_fn` must not be None: use the default "
            "'kl_divergence' (exact KD), a term such as "
            "keras_distill.terms.DKD(), or a Keras loss."
        )
    if isinstance(obj, LogitTerm):
        return obj
    if isinstance(obj, Term):
        raise TypeError(
            f"`distillation_loss_fn`={obj!r} is a feature term; it compares "
            "intermediate features, not logits. Use it in a FeaturePair."
        )
    if _is_kl_divergence(obj):
        reduction = getattr(obj, "reduction", None)
        if reduction not in (None, "auto", "sum_over_batch_size", "mean"):
            raise ValueError(
                f"`distillation_loss_fn` has reduction={reduction!r}; the KL "
                "term is averaged over the batch. Use the default reduction."
            )
        return KD()
    if isinstance(obj, str) and obj.lower() in _REGISTRY:
        term = get(obj)
        if isinstance(term, LogitTerm):
            return term
        raise TypeError(
            f"`distillation_loss_fn`={obj!r} names a feature term; use it in "
            "a FeaturePair."
        )
    return SoftenedLoss(obj)


# -------------------------------------------------------------- feature terms
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
    >>> get("at").min_rank, get("l2").needs_equal_width
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
        if isinstance(p, bool) or not isinstance(p, (int, float)) or p <= 0:
            raise ValueError(f"`p` must be a positive number, got {p!r}.")
        self.p = p

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
        self.fn = fn
        self.kwargs = dict(kwargs)

    @property
    def short_name(self):
        """The callable's name, for the default log name."""
        name = getattr(self.fn, "__name__", None) or type(self.fn).__name__
        name = re.sub(r"[^0-9A-Za-z_]", "_", name).strip("_")
        return name if name and name != "lambda" else "feature"

    def per_sample(self, teacher, student):
        if isinstance(self.fn, keras.losses.Loss) or (
            _keras_module_of(self.fn) == "tf_keras" and hasattr(self.fn, "call")
        ):
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


# -------------------------------------------------------------- serialisation
def _serialize(obj):
    """Keras-serialises a callable or layer, remembering its Keras flavour."""
    if obj is None or isinstance(obj, str):
        return obj
    flavour = _keras_module_of(obj)
    if flavour != "tf_keras":
        flavour = "keras"
    if flavour == "tf_keras":
        import tf_keras as k
    else:
        k = keras
    return {"flavour": flavour, "object": k.saving.serialize_keras_object(obj)}


def _deserialize(obj):
    """The inverse of `_serialize`."""
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, dict) and set(obj) == {"flavour", "object"}:
        if obj["flavour"] == "tf_keras":
            import tf_keras as k
        else:
            k = keras
        return k.saving.deserialize_keras_object(obj["object"])
    return keras.saving.deserialize_keras_object(obj)
