"""Logit terms: the teacher's and the student's class scores compared.

Example:
>>> KD(temperature=4)
KD(temperature=4.0, standardise=False)
"""

import difflib

import keras

from keras_distill import losses as kd_losses
from keras_distill._validation import (
    check_bool,
    check_callable,
    check_some_weight,
    check_temperature,
    check_weight,
)
from keras_distill.terms.base import (
    _KL_NAMES,
    _REGISTRY,
    Term,
    _deserialize,
    _keras_module_of,
    _normalise_name,
    _serialize,
    get,
    is_loss_object,
    keras_crossentropy,
    per_sample_loss,
    register,
)


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

    @staticmethod
    def _own_temperature(temperature):
        """A term's own temperature: ``None`` (the distiller's) or checked."""
        return (None if temperature is None
                else check_temperature(temperature, "temperature"))

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
        standardise: Z-score both logits before softening (logit
            standardisation, Sun et al., CVPR 2024;
            `keras_distill.losses.standardise_logits`).

    Example:
    >>> import numpy as np
    >>> t = np.array([[10.0, 0.0, -10.0]])
    >>> round(float(KD(temperature=4).compute_loss(t, np.zeros((1, 3)))), 4)
    12.7056
    >>> KD(temperature=2, standardise=True)
    KD(temperature=2.0, standardise=True)
    """

    _options = ("temperature", "standardise")

    def __init__(self, temperature=None, standardise=False):
        self.temperature = self._own_temperature(temperature)
        self.standardise = check_bool(standardise, "standardise")

    def per_sample(self, teacher_logits, student_logits, labels=None,
                   temperature=None):
        return kd_losses.kd_loss(
            teacher_logits, student_logits, self._temperature(temperature),
            reduction="none", standardise=self.standardise,
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
        standardise: Z-score both logits first (logit standardisation, Sun
            et al., CVPR 2024, who report it with DKD too).

    Example:
    >>> DKD(beta=4.0)
    DKD(alpha=1.0, beta=4.0, temperature=None, standardise=False)
    """

    needs_labels = True
    _options = ("alpha", "beta", "temperature", "standardise")

    def __init__(self, alpha=1.0, beta=8.0, temperature=None,
                 standardise=False):
        self.alpha = check_weight(alpha, "alpha")
        self.beta = check_weight(beta, "beta")
        check_some_weight("DKD", {"alpha": (self.alpha, "TCKD"),
                                  "beta": (self.beta, "NCKD")},
                          "alpha=1, beta=8")
        self.temperature = self._own_temperature(temperature)
        self.standardise = check_bool(standardise, "standardise")

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
            reduction="none", standardise=self.standardise,
        )


@register("dist")
class DIST(LogitTerm, _KerasDistillationLoss):
    r"""DIST: match the teacher's class relations (Huang et al., NeurIPS 2022).

    ``T² (beta · L_inter + gamma · L_intra)``: one minus Pearson's
    correlation of the softened student and teacher distributions, per
    sample (inter-class) and per class over the batch (intra-class)
    (`keras_distill.losses.dist_loss`). Meant for a teacher much stronger
    than its student. Label-free.

    Args:
        beta: Weight of the inter-class relation (>= 0).
        gamma: Weight of the intra-class relation (>= 0).
        temperature: T > 0, or ``None`` for the distiller's.

    Example:
    >>> import numpy as np
    >>> t = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    >>> float(DIST(temperature=1).compute_loss(t, t)) < 1e-6
    True
    """

    _options = ("beta", "gamma", "temperature")

    def __init__(self, beta=1.0, gamma=1.0, temperature=None):
        self.beta = check_weight(beta, "beta")
        self.gamma = check_weight(gamma, "gamma")
        check_some_weight(
            "DIST", {"beta": (self.beta, "the inter-class relation"),
                     "gamma": (self.gamma, "the intra-class relation")},
            "beta=1, gamma=1")
        self.temperature = self._own_temperature(temperature)

    def per_sample(self, teacher_logits, student_logits, labels=None,
                   temperature=None):
        return kd_losses.dist_loss(
            teacher_logits, student_logits, self._temperature(temperature),
            beta=self.beta, gamma=self.gamma, reduction="none",
        )




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
                raise ValueError(_unknown_name_message(fn)) from error
        if not callable(fn):
            raise TypeError(
                "`distillation_loss_fn` must be a term name, a "
                "keras_distill.terms.Term, a Keras loss or a callable "
                f"fn(y_true, y_pred), got {type(fn).__name__}."
            )
        _check_softened_loss(fn)
        self.fn = fn
        self.temperature = self._own_temperature(temperature)

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


def _unknown_name_message(name):
    """The error for a ``distillation_loss_fn`` name nothing knows."""
    terms = sorted(n for n, c in _REGISTRY.items() if issubclass(c, LogitTerm))
    known = terms + ["kl_divergence", "mean_squared_error", "...any Keras loss"]
    close = difflib.get_close_matches(
        name.lower(), terms + sorted(_KL_NAMES) + ["kl_divergence"], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (f"`distillation_loss_fn`={name!r} is neither a distillation term "
            f"nor a Keras loss name.{hint} Known names: {known}; or pass a "
            "term such as keras_distill.terms.DKD() or a loss object.")


def _check_softened_loss(fn):
    """Refuses losses that cannot compare two softened distributions."""
    found = keras_crossentropy(fn)
    given = f"keras.losses.{found[0]}" if found else None
    if found is not None and found[0].startswith("Sparse"):
        raise ValueError(
            f"`distillation_loss_fn` is a sparse cross-entropy ({given}): it "
            "needs integer class ids, but it would receive the teacher's "
            "softened probabilities. Use 'kl_divergence' (exact KD, the "
            "default) or keras.losses.CategoricalCrossentropy()."
        )
    if found is not None and found[1]:
        raise ValueError(
            f"`distillation_loss_fn` ({given}) has from_logits=True, but it "
            "receives the softened probabilities softmax(logits / T), not "
            "logits. Use from_logits=False, or 'kl_divergence' (exact KD)."
        )
    if not is_loss_object(fn):
        check_callable(fn, "distillation_loss_fn", 2)


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
    KD(temperature=None, standardise=False)
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

