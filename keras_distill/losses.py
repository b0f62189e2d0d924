"""Distillation losses: pure functions on tensors.

Every function here takes tensors (or anything ``tf.convert_to_tensor``
accepts), returns a ``tf.Tensor``, keeps no state and works the same for
Keras 3 and ``tf_keras`` models, in eager mode, inside ``tf.function`` and
under XLA. They are computed in float32 (float64 inputs stay float64) from
log-softmax, so logits of any magnitude give exact, finite results.

Conventions (see also docs in README):

- ``*_logits`` are unnormalised scores; the class axis is the last one.
- ``reduction="mean"`` (default) averages over every position but the class
  axis (the batch, and e.g. the pixels of a segmentation map);
  ``reduction="none"`` returns one value per position (shape ``logits.shape[:-1]``).
"""

import math
import numbers

import tensorflow as tf

_REDUCTIONS = ("mean", "none")


def _check_temperature(value, argument):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{argument}` must be a positive finite number, got {value!r} "
            f"of type {type(value).__name__}."
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"`{argument}` must be a positive finite number, got {value!r}. "
            "Typical distillation temperatures are between 1 and 20."
        )
    return float(value)


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}."
        )


def _float_pair(teacher_logits, student_logits):
    t = tf.convert_to_tensor(teacher_logits)
    s = tf.convert_to_tensor(student_logits)
    dtype = tf.float64 if tf.float64 in (t.dtype, s.dtype) else tf.float32
    t = tf.cast(t, dtype)
    s = tf.cast(s, dtype)
    if t.shape.rank is not None and s.shape.rank is not None:
        if not t.shape.is_compatible_with(s.shape):
            raise ValueError(
                "`teacher_logits` and `student_logits` must have the same "
                f"shape, got teacher {tuple(t.shape)} and student "
                f"{tuple(s.shape)}. The student must predict the same "
                "classes as the teacher."
            )
        if t.shape.rank == 0:
            raise ValueError(
                "`teacher_logits` and `student_logits` need a class axis "
                "(rank >= 1), got scalars."
            )
    return t, s


def _reduce(values, reduction):
    if reduction == "none":
        return values
    return tf.reduce_mean(values)


def kd_loss(teacher_logits, student_logits, temperature=1.0, reduction="mean"):
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
    temperature = _check_temperature(temperature, "temperature")
    _check_reduction(reduction)
    t, s = _float_pair(teacher_logits, student_logits)
    log_p = tf.nn.log_softmax(t / temperature, axis=-1)
    log_q = tf.nn.log_softmax(s / temperature, axis=-1)
    kl = tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)
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
    teacher_temperature = _check_temperature(
        teacher_temperature, "teacher_temperature"
    )
    student_temperature = _check_temperature(
        student_temperature, "student_temperature"
    )
    _check_reduction(reduction)
    t, s = _float_pair(teacher_logits, student_logits)
    p = tf.nn.softmax(t / teacher_temperature, axis=-1)
    log_q = tf.nn.log_softmax(s / student_temperature, axis=-1)
    ce = -tf.reduce_sum(p * log_q, axis=-1)
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
    >>> bool(np.isfinite(logits.numpy()).all())
    True
    """
    p = tf.convert_to_tensor(probabilities)
    if not p.dtype.is_floating:
        p = tf.cast(p, tf.float32)
    if p.dtype in (tf.float16, tf.bfloat16):
        p = tf.cast(p, tf.float32)
    tiny = p.dtype.as_numpy_dtype(
        1.1754944e-38 if p.dtype == tf.float32 else 2.2250738585072014e-308
    )
    return tf.math.log(tf.maximum(p, tiny))
