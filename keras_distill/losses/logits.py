"""Losses on logits: Hinton KD, soft-label cross-entropy, DKD.

The conventions of `keras_distill.losses` hold: ``*_logits`` are
unnormalised scores with the class axis last; ``reduction="mean"`` averages
over every position but the class axis, ``reduction="none"`` returns one
value per position (shape ``logits.shape[:-1]``).
"""

import keras
import numpy as np
from keras import ops

from keras_distill._validation import check_temperature, check_weight
from keras_distill.losses._common import (
    _as_float,
    _check_reduction,
    _compatible,
    _dim,
    _mean,
    _dtype,
    _numpy_if_concrete,
    _reduce,
    _shape,
    _static_shape,
    _with_runtime_check,
)


def _float_pair(teacher_logits, student_logits):
    t, s = _as_float(teacher_logits, student_logits)
    t_shape, s_shape = _static_shape(t), _static_shape(s)
    if t_shape is not None and s_shape is not None:
        if not _compatible(t_shape, s_shape):
            raise ValueError(
                "`teacher_logits` and `student_logits` must have the same "
                f"shape, got teacher {t_shape} and student "
                f"{s_shape}. The student must predict the same "
                "classes as the teacher."
            )
        if len(t_shape) == 0:
            raise ValueError(
                "`teacher_logits` and `student_logits` need a class axis "
                "(rank >= 1), got scalars."
            )
    return t, s



def standardise_logits(logits, eps=1e-7):
    r"""Logits z-scored over the class axis (Sun et al., CVPR 2024).

    Sun, Ren, Li, Wang & Cao, "Logit Standardization in Knowledge
    Distillation" (CVPR 2024), eq. 6:

    .. math::
        \mathcal{Z}(z) = \frac{z - \bar z}{\sigma(z) + \epsilon}, \qquad
        \bar z = \tfrac1C \sum_c z_c, \quad
        \sigma(z) = \sqrt{\tfrac1C \sum_c (z_c - \bar z)^2}

    Softening ``Z(z) / T`` gives each sample its own effective temperature
    ``T · σ(z)``, so a small student need not match the teacher's logit
    *range*, only their relations. (The paper's code uses the unbiased
    standard deviation, i.e. ``σ · sqrt(C / (C - 1))``: the same up to a
    constant rescaling of T.)

    Args:
        logits: Shape ``(..., classes)``.
        eps: Added to σ (constant logits give 0, not NaN).

    Returns:
        The standardised logits, same shape, float32 (float64 stays).

    Example:
    >>> import numpy as np
    >>> z = standardise_logits(np.array([[1.0, 2.0, 3.0]]))
    >>> [round(float(v), 4) for v in np.asarray(z)[0]]
    [-1.2247, 0.0, 1.2247]
    """
    (z,) = _as_float(logits)
    centred = z - ops.mean(z, axis=-1, keepdims=True)
    std = ops.sqrt(ops.mean(ops.square(centred), axis=-1, keepdims=True))
    return centred / (std + eps)


def _maybe_standardised(teacher_logits, student_logits, standardise):
    if not isinstance(standardise, bool):
        raise TypeError(f"`standardise` must be True or False, got "
                        f"{standardise!r}.")
    t, s = _float_pair(teacher_logits, student_logits)
    if standardise:
        return standardise_logits(t), standardise_logits(s)
    return t, s


def kd_loss(teacher_logits, student_logits, temperature=1.0, reduction="mean",
            standardise=False):
    r"""Hinton knowledge-distillation loss, T²-scaled, from logits.

    Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network"
    (2015):

    .. math::
        L = T^2 \cdot \mathrm{mean}_b\;
            \mathrm{KL}\big(\mathrm{softmax}(t_b/T)\,\|\,
                            \mathrm{softmax}(s_b/T)\big)
          = T^2 \cdot \mathrm{mean}_b \sum_c p_{bc}
            \big(\log p_{bc} - \log q_{bc}\big)

    with :math:`\log p = \mathrm{log\_softmax}(t/T)` and
    :math:`\log q = \mathrm{log\_softmax}(s/T)`. The T² factor keeps the
    gradient magnitude independent of T (the soft-target gradients scale as
    1/T²). Computed from log-softmax, never from clipped probabilities, so it
    is exact for logits of any size (e.g. 1e4) and is exactly 0 when the
    student's logits equal the teacher's.

    Args:
        teacher_logits: Teacher logits, shape ``(batch, ..., classes)``.
        student_logits: Student logits, same shape.
        temperature: Softening temperature T > 0.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (one value per sample,
            T² included).
        standardise: Z-score both logits first (`standardise_logits`; Sun
            et al., CVPR 2024): the student matches the teacher's logit
            *relations*, not their scale.

    Returns:
        A scalar tensor, or a tensor of shape ``logits.shape[:-1]``.

    Example:
    >>> import numpy as np
    >>> t = np.array([[10.0, 0.0, -10.0]])
    >>> float(kd_loss(t, t, temperature=4.0))
    0.0
    >>> round(float(kd_loss(t, np.zeros((1, 3)), temperature=4.0)), 4)
    12.7056
    """
    temperature = check_temperature(temperature, "temperature")
    _check_reduction(reduction)
    t, s = _maybe_standardised(teacher_logits, student_logits, standardise)
    log_p = ops.log_softmax(t / temperature, axis=-1)
    log_q = ops.log_softmax(s / temperature, axis=-1)
    kl = ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)
    return _reduce(kl * (temperature**2), reduction)


def soft_label_loss(
    teacher_logits,
    student_logits,
    teacher_temperature=1.0,
    student_temperature=1.0,
    reduction="mean",
):
    r"""Soft-label cross-entropy with separate temperatures (PaddleSlim).

    The semantics of PaddleSlim's ``soft_label_loss``: the cross-entropy of
    the student's softened distribution against the teacher's, with no T²
    factor:

    .. math::
        L = \mathrm{mean}_b \; -\sum_c \mathrm{softmax}(t_b/T_t)_c\;
            \mathrm{log\_softmax}(s_b/T_s)_c

    It differs from :func:`kd_loss` (at equal temperatures and without T²)
    by the teacher's entropy, a constant for the student, so both give the
    same gradients up to the T² factor.

    Args:
        teacher_logits: Teacher logits, shape ``(batch, ..., classes)``.
        student_logits: Student logits, same shape.
        teacher_temperature: T_t > 0, softens the teacher.
        student_temperature: T_s > 0, softens the student.
        reduction: ``"mean"`` or ``"none"``.

    Returns:
        A scalar tensor, or a tensor of shape ``logits.shape[:-1]``.

    Example:
    >>> import numpy as np
    >>> t = np.array([[0.0, 0.0]])
    >>> round(float(soft_label_loss(t, t)), 6)  # log(2): entropy of [.5, .5]
    0.693147
    """
    teacher_temperature = check_temperature(
        teacher_temperature, "teacher_temperature"
    )
    student_temperature = check_temperature(
        student_temperature, "student_temperature"
    )
    _check_reduction(reduction)
    t, s = _float_pair(teacher_logits, student_logits)
    p = ops.softmax(t / teacher_temperature, axis=-1)
    log_q = ops.log_softmax(s / student_temperature, axis=-1)
    ce = -ops.sum(p * log_q, axis=-1)
    return _reduce(ce, reduction)


def probabilities_to_logits(probabilities):
    """Turns probabilities (the output of a softmax) into logits.

    ``log(p)`` is a set of logits for ``p``: ``softmax(log(p)) == p``, and
    ``softmax(log(p) / T)`` is exactly the temperature-softened distribution
    ``p**(1/T) / sum(p**(1/T))``. Probabilities that underflowed to 0 are
    clamped to the smallest normal float, so the result is always finite.

    Args:
        probabilities: A tensor whose last axis sums to 1.

    Returns:
        A float tensor of the same shape.

    Example:
    >>> import numpy as np
    >>> logits = probabilities_to_logits(np.array([[0.5, 0.5, 0.0]]))
    >>> bool(np.isfinite(np.asarray(logits)).all())
    True
    """
    p = ops.convert_to_tensor(probabilities)
    if _dtype(p) != "float64":  # ints, float16 and bfloat16 too
        p = ops.cast(p, "float32")
    # The smallest normal float, as a tensor of p's dtype (a Python float
    # would round 2.2e-308 to 0 on its way through float32).
    tiny = ops.convert_to_tensor(np.finfo(_dtype(p)).tiny, dtype=_dtype(p))
    return ops.log(ops.maximum(p, tiny))



def _class_ids(labels, logits):
    """Integer class ids of shape ``logits.shape[:-1]``, validated."""
    labels = ops.convert_to_tensor(labels)
    dtype = _dtype(labels)
    if not (keras.backend.is_int_dtype(dtype) or keras.backend.is_float_dtype(dtype)):
        raise TypeError(
            "`labels` must be integer class ids, got a tensor of dtype "
            f"{dtype}."
        )
    logits_shape, labels_shape = _static_shape(logits), _static_shape(labels)
    if labels_shape is not None and logits_shape is not None:
        lead = logits_shape[:-1]
        if len(labels_shape) == len(lead) + 1 and labels_shape[-1] == 1:
            labels = ops.squeeze(labels, axis=-1)
            labels_shape = labels_shape[:-1]
        if not _compatible(labels_shape, lead):
            hint = ""
            if len(labels_shape) == len(lead) + 1:
                hint = (" They look one-hot: pass keras.ops.argmax(labels, "
                        "axis=-1) instead.")
            raise ValueError(
                "`labels` must hold one integer class id per sample, of "
                f"shape {lead} or {lead + (1,)}, got "
                f"{labels_shape} for logits of shape {logits_shape}."
                + hint
            )
    classes = _dim(logits, -1)
    values = _numpy_if_concrete(labels)
    if values is not None:
        if keras.backend.is_float_dtype(dtype) and (values != values.round()).any():
            raise ValueError(
                "`labels` must be integer class ids, got non-integer values."
            )
        if values.size and (values.min() < 0 or values.max() >= classes):
            raise ValueError(
                f"`labels` must be class ids in [0, {classes}), got values "
                f"from {values.min()} to {values.max()}."
            )
        return ops.cast(labels, "int32")
    # Traced: the values are checked at run time on TensorFlow (not under
    # XLA); inside jax.jit they cannot be checked.
    labels = ops.cast(labels, "int32")
    message = "dkd_loss: `labels` must be class ids in [0, classes)"
    labels = _with_runtime_check(labels, lambda tf: (
        tf.debugging.assert_non_negative(labels, message=message)))
    return _with_runtime_check(labels, lambda tf: tf.debugging.assert_less(
        labels, tf.cast(classes, tf.int32), message=message))


def _decoupled_log_probs(logits, target, temperature):
    """log [p_t, 1 - p_t] and log p̂ (non-target softmax, 0 at the target)."""
    z = logits / temperature
    lowest = ops.convert_to_tensor(np.finfo(_dtype(z)).min, dtype=_dtype(z))
    zeros = ops.zeros_like(z)
    z_target = ops.sum(ops.where(target, z, zeros), axis=-1)
    z_others = ops.where(target, lowest, z)
    lse_others = ops.logsumexp(z_others, axis=-1)
    log_binary = ops.log_softmax(ops.stack([z_target, lse_others], axis=-1), axis=-1)
    # Masked *before* any exp(), so neither the value nor the gradient of
    # the target entry can overflow.
    log_others = ops.where(target, zeros, z - ops.expand_dims(lse_others, -1))
    return log_binary, log_others


def dkd_loss(
    teacher_logits,
    student_logits,
    labels,
    alpha=1.0,
    beta=8.0,
    temperature=4.0,
    reduction="mean",
    standardise=False,
):
    r"""Decoupled knowledge distillation (Zhao et al. 2022).

    Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation" (CVPR
    2022). With :math:`p = \mathrm{softmax}(z/T)` and the ground-truth class
    t, the binary distribution :math:`b = [p_t, 1 - p_t]` and the
    distribution among the other classes :math:`\hat p_i = p_i / (1 - p_t)`
    (i ≠ t):

    .. math::
        \mathrm{TCKD} = \mathrm{KL}(b^T \,\|\, b^S), \qquad
        \mathrm{NCKD} = \mathrm{KL}(\hat p^T \,\|\, \hat p^S)

    .. math::
        L = T^2 \cdot \mathrm{mean}_b\,\big(\alpha\,\mathrm{TCKD}
            + \beta\,\mathrm{NCKD}\big)

    Classical KD is the special case (paper eq. 5)
    :math:`\mathrm{KD} = \mathrm{TCKD} + (1 - p^T_t)\,\mathrm{NCKD}`: DKD
    frees NCKD from the teacher's-confidence weight :math:`1 - p^T_t`.
    Defaults are the paper's CIFAR-100 settings (α = 1, β = 8, T = 4; the
    paper raises β for ImageNet and warms the loss up over the first
    epochs, which is the caller's business). The official code multiplies
    by T² like here.

    Computed in log-space: :math:`\log p_t = z_t/T -
    \mathrm{LSE}(z/T)`, :math:`\log(1 - p_t) = \mathrm{LSE}_{i \ne t}(z_i/T)
    - \mathrm{LSE}(z/T)` and :math:`\log \hat p_i = z_i/T -
    \mathrm{LSE}_{j \ne t}(z_j/T)`; the target class is masked out exactly
    (not with the official code's ``- 1000`` offset, which fails for
    logits/T above 1000), so logits of 1e4 give exact, finite values and
    gradients.

    Args:
        teacher_logits: Teacher logits, shape ``(batch, classes)`` (or
            ``(batch, ..., classes)``), classes >= 2.
        student_logits: Student logits, same shape.
        labels: Integer ground-truth class ids, shape ``(batch,)`` or
            ``(batch, 1)`` (float tensors holding integers are accepted).
            Ids are range-checked eagerly and in ``tf.function`` (not under
            XLA, where assertions compile to nothing, nor inside
            ``jax.jit``, where their values are unknown).
        alpha: Weight of TCKD, >= 0.
        beta: Weight of NCKD, >= 0. ``alpha=1, beta=0`` gives T²·TCKD and
            ``alpha=0, beta=1`` gives T²·NCKD alone.
        temperature: T > 0.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (one value per
            sample, T² and the weights included).
        standardise: Z-score both logits first (`standardise_logits`, Sun et
            al. 2024, who report it with DKD too).

    Returns:
        A scalar tensor, or a tensor of shape ``logits.shape[:-1]``.

    Example:
    >>> import numpy as np
    >>> t = np.array([[5.0, 1.0, 0.0]])
    >>> float(dkd_loss(t, t, labels=[0]))
    0.0
    >>> # The student agrees on the target's share, not on the others:
    >>> s = np.array([[5.0, 0.0, 1.0]])
    >>> round(float(dkd_loss(t, s, [0], alpha=1.0, beta=0.0)), 6)  # T²·TCKD
    0.0
    >>> round(float(dkd_loss(t, s, [0], alpha=0.0, beta=1.0)), 4)  # T²·NCKD
    0.4974
    """
    alpha = check_weight(alpha, "alpha")
    beta = check_weight(beta, "beta")
    temperature = check_temperature(temperature, "temperature")
    _check_reduction(reduction)
    t, s = _maybe_standardised(teacher_logits, student_logits, standardise)
    t_shape = _static_shape(t)
    if t_shape is not None and t_shape[-1] is not None and t_shape[-1] < 2:
        raise ValueError(
            "`teacher_logits` and `student_logits` need at least 2 classes "
            f"for DKD, got shape {_shape(t)}."
        )
    labels = _class_ids(labels, t)
    target = ops.equal(
        ops.expand_dims(labels, -1), ops.arange(_dim(t, -1), dtype="int32")
    )
    log_bt, log_pt = _decoupled_log_probs(t, target, temperature)
    log_bs, log_ps = _decoupled_log_probs(s, target, temperature)
    tckd = ops.sum(ops.exp(log_bt) * (log_bt - log_bs), axis=-1)
    nckd = ops.sum(ops.exp(log_pt) * (log_pt - log_ps), axis=-1)
    # At the target entry both logs are 0: it adds exp(0) * 0 = 0 to NCKD.
    per_sample = (alpha * tckd + beta * nckd) * (temperature**2)
    return _reduce(per_sample, reduction)


def _pearson(a, b, axis, eps=1e-8):
    a = a - ops.mean(a, axis=axis, keepdims=True)
    b = b - ops.mean(b, axis=axis, keepdims=True)
    norms = ops.sqrt(ops.sum(a * a, axis=axis)) * ops.sqrt(
        ops.sum(b * b, axis=axis))
    return ops.sum(a * b, axis=axis) / (norms + eps)


def dist_loss(teacher_logits, student_logits, temperature=1.0, beta=1.0,
              gamma=1.0, reduction="mean"):
    r"""DIST: the teacher's inter- and intra-class relations (Huang et al. 2022).

    Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger
    Teacher" (NeurIPS 2022). With :math:`Y^S = \mathrm{softmax}(s/T)`,
    :math:`Y^T = \mathrm{softmax}(t/T)` over a batch of B samples and C
    classes and Pearson's correlation :math:`\rho`:

    .. math::
        L_{inter} = 1 - \tfrac1B \sum_i \rho(Y^S_{i,:}, Y^T_{i,:}), \qquad
        L_{intra} = 1 - \tfrac1C \sum_j \rho(Y^S_{:,j}, Y^T_{:,j})

    .. math::
        L = T^2 \,(\beta\, L_{inter} + \gamma\, L_{intra})

    Matching correlations rather than the exact probabilities relaxes KD for
    a teacher much stronger than its student. :math:`\rho` is computed as
    the official code does: the cosine of the centred vectors with 1e-8
    added to the product of their norms. Paper settings: β = γ = 1, T = 1
    (ImageNet); β = γ = 2, T = 4 (CIFAR-100).

    Args:
        teacher_logits: Teacher logits ``(batch, ..., classes)``; positions
            before the class axis are pooled as samples.
        student_logits: Student logits, same shape.
        temperature: T > 0.
        beta: Weight of the inter-class (per-sample) relation, >= 0.
        gamma: Weight of the intra-class (per-class, over the batch)
            relation, >= 0.
        reduction: ``"mean"`` (a scalar) or ``"none"``: one value per sample
            (its inter-class term plus the batch's intra-class term, so that
            their mean is the loss).

    Returns:
        A scalar tensor, or a tensor of shape ``logits.shape[:-1]``.

    Example:
    >>> import numpy as np
    >>> t = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    >>> round(float(dist_loss(t, t)), 6)
    0.0
    >>> round(float(dist_loss(t, t[:, ::-1])), 4)
    2.2178
    """
    temperature = check_temperature(temperature, "temperature")
    beta = check_weight(beta, "beta")
    gamma = check_weight(gamma, "gamma")
    _check_reduction(reduction)
    t, s = _float_pair(teacher_logits, student_logits)
    shape = ops.shape(t)
    classes = _dim(t, -1)
    y_t = ops.reshape(ops.softmax(t / temperature, axis=-1), (-1, classes))
    y_s = ops.reshape(ops.softmax(s / temperature, axis=-1), (-1, classes))
    inter = 1.0 - _pearson(y_s, y_t, axis=1)
    intra = 1.0 - _mean(_pearson(y_s, y_t, axis=0))
    per_sample = (beta * inter + gamma * intra) * (temperature**2)
    return _reduce(ops.reshape(per_sample, shape[:-1]), reduction)
