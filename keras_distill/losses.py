"""Distillation losses: pure functions on tensors.

Every function here is written in ``keras.ops``, so it runs on every Keras 3
backend. It takes tensors (or anything ``keras.ops.convert_to_tensor``
accepts: numpy arrays, lists, the backend's own tensors; on the TensorFlow
backend also ``tf.Tensor``s from ``tf_keras`` models), returns a tensor of
the active backend, keeps no state and works in eager mode and when traced:
inside ``tf.function`` and under XLA on TensorFlow, inside ``jax.jit`` on
JAX. They are computed in float32 (float64 inputs stay float64; on JAX that
needs ``jax_enable_x64``) from log-softmax, so logits of any magnitude give
exact, finite results.

Conventions (see also docs in README):

- ``*_logits`` are unnormalised scores; the class axis is the last one.
- ``reduction="mean"`` (default) averages over every position but the class
  axis (the batch, and e.g. the pixels of a segmentation map);
  ``reduction="none"`` returns one value per position (shape ``logits.shape[:-1]``).
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_distill._validation import (
    check_bool,
    check_choice,
    check_temperature,
    check_weight,
)

_REDUCTIONS = ("mean", "none")

# Old names, still imported by other modules.
_check_temperature = check_temperature
_check_weight = check_weight
_check_bool = check_bool


def _check_reduction(reduction):
    check_choice(reduction, _REDUCTIONS, "reduction")


# ---------------------------------------------------------------------------
# Backend-neutral helpers.


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


def _static_shape(x):
    """The static shape as a tuple (``None`` for unknown dimensions), or
    ``None`` if even the rank is unknown (only in TensorFlow graphs)."""
    shape = x.shape
    if getattr(shape, "rank", 0) is None:
        return None
    return tuple(None if d is None else int(d) for d in shape)


def _rank(x):
    shape = _static_shape(x)
    return None if shape is None else len(shape)


def _compatible(a, b):
    """Whether two static shapes (tuples or ``None``) can be equal."""
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(
        x is None or y is None or x == y for x, y in zip(a, b)
    )


def _fully_defined(shape):
    return shape is not None and all(d is not None for d in shape)


def _shape(x):
    shape = _static_shape(x)
    return shape if shape is not None else "(unknown rank)"


def _dim(x, axis):
    """A static dimension if known, else a dynamic one (TensorFlow graphs)."""
    shape = _static_shape(x)
    if shape is not None and shape[axis] is not None:
        return shape[axis]
    if shape is None and keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # Only reached with a tf tensor in hand.

        return tf.shape(x)[axis]
    return ops.shape(x)[axis]


def _with_runtime_check(x, make_check):
    """Runs the assertion ``make_check(tf)`` before ``x``, on TensorFlow only.

    Static shapes are checked in Python; this catches dimensions only known
    at run time inside ``tf.function``. XLA compiles assertions to no-ops.
    Other backends trace with static shapes (the static checks cover them),
    so there it returns ``x`` unchanged. TensorFlow is imported lazily: only
    when the backend is TensorFlow, i.e. when it is loaded anyway.
    """
    if keras.backend.backend() != "tensorflow":
        return x
    import tensorflow as tf

    with tf.control_dependencies([make_check(tf)]):
        return tf.identity(x)


def _numpy_if_concrete(x):
    """``x`` as a numpy array if its value is known now, else ``None``
    (inside ``tf.function`` or ``jax.jit``)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            return None
    elif backend == "jax":
        import jax

        if isinstance(x, jax.core.Tracer):
            return None
    return ops.convert_to_numpy(x)


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


def _mean(x, axis=None, keepdims=False):
    """``keras.ops.mean`` that keeps float64 precise on every backend.

    On backends other than TensorFlow, Keras's type promotion maps float64
    to float32, so ``keras.ops.mean`` of a float64 tensor is computed in
    float32 (and cast back). A sum divided by the count is exact float64.
    """
    if _dtype(x) != "float64" or keras.backend.backend() == "tensorflow":
        return ops.mean(x, axis=axis, keepdims=keepdims)
    shape = _static_shape(x)  # Static outside TensorFlow.
    axes = range(len(shape)) if axis is None else (
        (axis,) if isinstance(axis, int) else axis)
    count = math.prod(shape[a] for a in axes)
    return ops.sum(x, axis=axis, keepdims=keepdims) / count


def _reduce(values, reduction):
    if reduction == "none":
        return values
    return _mean(values)


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
    temperature = check_temperature(temperature, "temperature")
    _check_reduction(reduction)
    t, s = _float_pair(teacher_logits, student_logits)
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


# ---------------------------------------------------------------------------
# Feature and relational losses.
#
# Shared conventions: feature maps are channels-last, ``(batch, *spatial,
# channels)`` (NHWC for images); ``reduction="none"`` returns one value per
# sample (shape ``(batch,)``). Where a loss is invariant to the scale of its
# input (FSP with ``normalize=True``, attention maps, RKD), each sample is
# first divided by its largest absolute value (a constant for the gradient,
# which is exact because the loss does not depend on that scale): no
# intermediate can overflow, whatever the activations' magnitude.

# Added to squared norms before an inverse square root, and the squared norm
# below which a difference vector counts as zero (RKD). Inputs are rescaled
# to a largest absolute value of 1 first, so it is relative to the data.
_EPSILON = 1e-12


def _as_float(*tensors):
    """Converts to one float dtype: float64 if any input is, else float32."""
    tensors = [ops.convert_to_tensor(x) for x in tensors]
    dtype = "float64" if any(_dtype(x) == "float64" for x in tensors) else "float32"
    return [ops.cast(x, dtype) for x in tensors]


def _check_feature_map(x, argument):
    rank = _rank(x)
    if rank is not None and rank < 3:
        raise ValueError(
            f"`{argument}` must be a channels-last feature map of shape "
            f"(batch, height, width, channels), got shape {_shape(x)}."
        )


def _flatten_spatial(x):
    """(batch, *spatial, channels) -> (batch, positions, channels)."""
    if _rank(x) == 3:
        return x
    return ops.reshape(x, (_dim(x, 0), -1, _dim(x, -1)))


def _unit_max_scale(x, axis):
    """``x`` divided by its largest |value| over ``axis`` (constant for the
    gradient); all-zero slices stay zero."""
    scale = ops.stop_gradient(ops.max(ops.abs(x), axis=axis, keepdims=True))
    return x / ops.where(ops.greater(scale, 0), scale, ops.ones_like(scale))


def _per_sample_mean(values):
    """Mean over every axis but the first (identity for rank <= 1)."""
    rank = _rank(values)
    if rank is not None:
        axes = tuple(range(1, rank))
        return _mean(values, axis=axes) if axes else values
    return _mean(ops.reshape(values, (_dim(values, 0), -1)), axis=1)


def l2_loss(teacher_feat, student_feat, reduction="mean"):
    r"""Mean squared difference of features (FitNets hint, PaddleSlim ``l2_loss``).

    Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015); the
    semantics of PaddleSlim's ``l2_loss``:

    .. math::
        L = \frac{1}{N} \sum_{n} \big(s_n - t_n\big)^2

    over all N elements (batch included). FitNets writes the hint loss as
    :math:`\tfrac12 \lVert t - r(s) \rVert^2` (a sum); the mean used here
    does not grow with the size of the feature map, so one weight fits
    layers of any size. The shapes must match exactly: map the student's
    features to the teacher's shape with an adapter (FitNets' regressor
    ``r``, e.g. a 1x1 convolution or a Dense layer) first. float16 inputs are
    computed in float32, so activations of 1e4 do not overflow.

    Args:
        teacher_feat: Teacher features, any shape ``(batch, ...)``.
        student_feat: Student features, the same shape.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (the mean over each
            sample, shape ``(batch,)``).

    Returns:
        A scalar tensor, or a tensor of shape ``(batch,)``.

    Example:
    >>> import numpy as np
    >>> t = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> float(l2_loss(t, t + 2.0))
    4.0
    >>> np.asarray(l2_loss(t, np.array([[1.0, 2.0], [3.0, 6.0]]),
    ...                    reduction="none")).tolist()
    [0.0, 2.0]
    """
    _check_reduction(reduction)
    t, s = _as_float(teacher_feat, student_feat)
    if not _compatible(_static_shape(t), _static_shape(s)):
        raise ValueError(
            "`teacher_feat` and `student_feat` must have the same shape, got "
            f"teacher {_shape(t)} and student {_shape(s)}. Map the student's "
            "features to the teacher's shape with an adapter (e.g. a 1x1 "
            "convolution or a Dense layer) first."
        )
    if not (_fully_defined(_static_shape(t)) and _fully_defined(_static_shape(s))):
        s = _with_runtime_check(s, lambda tf: tf.debugging.assert_equal(
            tf.shape(t), tf.shape(s),
            message="l2_loss: `teacher_feat` and `student_feat` must have "
                    "the same shape"))
    squared = ops.square(s - t)
    if reduction == "none":
        return _per_sample_mean(squared)
    return _mean(squared)


def _fsp(first, second, first_name, second_name, normalize):
    _check_feature_map(first, first_name)
    _check_feature_map(second, second_name)
    first_shape, second_shape = _static_shape(first), _static_shape(second)
    if first_shape is not None and second_shape is not None and not _compatible(
        first_shape[:-1], second_shape[:-1]
    ):
        raise ValueError(
            f"`{first_name}` and `{second_name}` must have the same batch "
            f"size and spatial size (height, width), got {first_name} "
            f"{_shape(first)} and {second_name} {_shape(second)}. An FSP "
            "matrix relates two layers of equal spatial size: pick layers "
            "with the same height and width, or pool the larger map (e.g. "
            "with AveragePooling2D) first."
        )
    if not (_fully_defined(first_shape) and _fully_defined(second_shape)):
        second = _with_runtime_check(second, lambda tf: tf.debugging.assert_equal(
            tf.shape(first)[:-1], tf.shape(second)[:-1],
            message=f"FSP: `{first_name}` and `{second_name}` must have the "
                    "same batch and spatial size"))
    a = _flatten_spatial(first)
    b = _flatten_spatial(second)
    if normalize:
        a = _rms_normalize(a)
        b = _rms_normalize(b)
    gram = ops.matmul(ops.transpose(a, (0, 2, 1)), b)
    return gram / ops.cast(_dim(a, 1), gram.dtype)


def _rms_normalize(x):
    """Divides each sample of ``(batch, positions, channels)`` by its RMS."""
    x = _unit_max_scale(x, axis=(1, 2))
    mean_square = _mean(ops.square(x), axis=(1, 2), keepdims=True)
    return x * ops.rsqrt(mean_square + _EPSILON)


def fsp_matrix(f1, f2):
    r"""The FSP ("flow of solution procedure") matrix of two feature maps.

    Yim, Joo, Bae & Kim, "A Gift from Knowledge Distillation: Fast
    Optimization, Network Minimization and Transfer Learning" (CVPR 2017):

    .. math::
        G_{b,i,j} = \frac{1}{H W} \sum_{h=1}^{H} \sum_{w=1}^{W}
                    F^1_{b,h,w,i}\, F^2_{b,h,w,j}

    for channels-last maps of equal batch size, height and width (any number
    of spatial axes works: their product replaces H·W). The channel counts
    may differ. Computed in float32 (float64 inputs stay float64; float16
    inputs are promoted), so it is finite while |G| < 3e38.

    Args:
        f1: The first feature map, shape ``(batch, H, W, C1)``.
        f2: The second feature map, shape ``(batch, H, W, C2)``.

    Returns:
        A tensor of shape ``(batch, C1, C2)``.

    Example:
    >>> import numpy as np
    >>> f1 = np.ones((1, 2, 2, 1))
    >>> f2 = np.arange(8.0).reshape(1, 2, 2, 2)  # channels [0,2,4,6], [1,3,5,7]
    >>> np.asarray(fsp_matrix(f1, f2)).tolist()
    [[[3.0, 4.0]]]
    """
    f1, f2 = _as_float(f1, f2)
    return _fsp(f1, f2, "f1", "f2", normalize=False)


def fsp_loss(
    teacher_first,
    teacher_second,
    student_first,
    student_second,
    normalize=True,
    reduction="mean",
):
    r"""FSP-matrix distillation loss (Yim et al. 2017; PaddleSlim semantics).

    The mean squared difference between the teacher's and the student's FSP
    matrices (see :func:`fsp_matrix`):

    .. math::
        L = \frac{1}{B\,C_1 C_2} \sum_{b,i,j}
            \big(G^S_{b,i,j} - G^T_{b,i,j}\big)^2

    as PaddleSlim's ``fsp_loss`` (the paper sums over i, j: that is this
    loss times C1·C2). With ``normalize=True`` (the default) each feature
    map is first divided by its per-sample root mean square over
    (H, W, C), :math:`\hat F = F / \sqrt{\mathrm{mean}_{h,w,c} F^2 +
    \epsilon}`, so every FSP entry is bounded by :math:`\sqrt{C_1 C_2}`.

    Why normalise by default: the raw FSP loss grows with the fourth power
    of the activations' scale, and teacher and student activations need not
    have the same scale (different depth, BatchNorm or not). A teacher with
    activations of 100 already gives losses near 1e8 that swamp every other
    term and blow up the gradients: the NaNs that made PaddleSlim disable
    its FSP distillation. The normalised loss is finite for any finite
    input, invariant to each map's scale and still compares the direction
    of the flow between layers, which is what FSP transfers. Use
    ``normalize=False`` for the exact paper / PaddleSlim numbers (finite
    while the FSP entries stay below about 1e19, i.e. activations below
    about 1e9 in float32).

    Args:
        teacher_first: Teacher map, shape ``(batch, H1, W1, C1)``.
        teacher_second: Teacher map, shape ``(batch, H1, W1, C2)``.
        student_first: Student map, shape ``(batch, H2, W2, C1)``.
        student_second: Student map, shape ``(batch, H2, W2, C2)``. The
            student's spatial size may differ from the teacher's, but its
            FSP matrices must have the same (C1, C2): otherwise map its
            features to the teacher's channel counts with an adapter.
        normalize: Divide each map by its per-sample RMS first (see above).
        reduction: ``"mean"`` (a scalar) or ``"none"`` (the mean over each
            sample's C1·C2 entries, shape ``(batch,)``).

    Returns:
        A scalar tensor, or a tensor of shape ``(batch,)``.

    Example:
    >>> import numpy as np
    >>> t1, t2 = np.ones((1, 2, 2, 1)), np.full((1, 2, 2, 2), 2.0)
    >>> float(fsp_loss(t1, t2, t1, t2))
    0.0
    >>> float(fsp_loss(t1, t2, t1, 3 * t2, normalize=False))  # (6 - 2)**2
    16.0
    >>> float(fsp_loss(t1, t2, t1, 3 * t2))  # normalised: scale-invariant
    0.0
    """
    normalize = check_bool(normalize, "normalize")
    _check_reduction(reduction)
    t1, t2, s1, s2 = _as_float(
        teacher_first, teacher_second, student_first, student_second
    )
    g_t = _fsp(t1, t2, "teacher_first", "teacher_second", normalize)
    g_s = _fsp(s1, s2, "student_first", "student_second", normalize)
    gt_shape, gs_shape = _static_shape(g_t), _static_shape(g_s)
    if not _compatible(gt_shape[1:], gs_shape[1:]):
        raise ValueError(
            "The teacher's and the student's FSP matrices must have the same "
            f"shape (C1, C2), got teacher {gt_shape[1:]} (from "
            f"teacher_first {_shape(t1)} and teacher_second {_shape(t2)}) "
            f"and student {gs_shape[1:]} (from student_first "
            f"{_shape(s1)} and student_second {_shape(s2)}). An adapter is "
            "needed: map the student's features to the teacher's channel "
            "counts (e.g. with a 1x1 convolution) first."
        )
    if not _compatible(gt_shape[:1], gs_shape[:1]):
        raise ValueError(
            "The teacher's and the student's feature maps must have the same "
            f"batch size, got teacher_first {_shape(t1)} and student_first "
            f"{_shape(s1)}."
        )
    if not (_fully_defined(gt_shape) and _fully_defined(gs_shape)):
        g_s = _with_runtime_check(g_s, lambda tf: tf.debugging.assert_equal(
            tf.shape(g_t), tf.shape(g_s),
            message="fsp_loss: the teacher's and the student's FSP matrices "
                    "must have the same shape (batch, C1, C2)"))
    squared = ops.square(g_s - g_t)
    if reduction == "none":
        return _mean(squared, axis=(1, 2))
    return _mean(squared)


def _attention_map(feat, p):
    """Q = sum_c |A_c|^p per position, flattened and L2-normalised."""
    a = _unit_max_scale(_flatten_spatial(feat), axis=(1, 2))
    if p == 2.0:
        powered = ops.square(a)
    elif p == 1.0:
        powered = ops.abs(a)
    else:
        powered = ops.power(ops.abs(a), p)
    q = ops.sum(powered, axis=-1)
    # tf.math.l2_normalize's formula: q / sqrt(max(sum(q**2), epsilon)).
    square_sum = ops.sum(ops.square(q), axis=-1, keepdims=True)
    return q * ops.rsqrt(ops.maximum(square_sum, _EPSILON))


def at_loss(teacher_feat, student_feat, p=2, reduction="mean"):
    r"""Attention-transfer loss (Zagoruyko & Komodakis 2017).

    "Paying More Attention to Attention: Improving the Performance of
    Convolutional Neural Networks via Attention Transfer" (ICLR 2017). The
    attention map of a channels-last activation A is

    .. math::
        Q_b = \mathrm{vec}\Big(\sum_{c} |A_{b,:,:,c}|^p\Big),
        \qquad \hat Q_b = Q_b / \max(\lVert Q_b \rVert_2, \epsilon)

    and the loss is the batch mean of the squared L2 distance between the
    normalised maps:

    .. math::
        L = \mathrm{mean}_b\; \big\lVert \hat Q^S_b - \hat Q^T_b
            \big\rVert_2^2 \;\in [0, 2]

    Variant: the paper's eq. 2 uses the (unsquared) p-norm of the difference
    with a weight β/2, and the authors' code (also torchdistill) uses
    ``(Q̂_s - Q̂_t).pow(2).mean()``, which is this loss divided by H·W (the
    number of positions), so its scale depends on the layer's size and
    needs β = 1000. The squared L2 distance used here is smooth at 0, has
    the same gradient direction as the authors' code, and is bounded in
    [0, 2] whatever the layer size. Multiply by H·W to get the authors'
    numbers.

    Channels may differ between teacher and student (each map is summed
    over its own channels); batch and spatial size must match. All-zero
    maps give a zero attention map (no NaN in the value or the gradient).

    Args:
        teacher_feat: Teacher activations, ``(batch, H, W, C_t)``.
        student_feat: Student activations, ``(batch, H, W, C_s)``.
        p: The exponent p >= 1 of the attention map (the paper uses 2).
        reduction: ``"mean"`` (a scalar) or ``"none"`` (shape ``(batch,)``).

    Returns:
        A scalar tensor, or a tensor of shape ``(batch,)``.

    Example:
    >>> import numpy as np
    >>> t = np.zeros((1, 2, 1, 3)); t[0, 0] = 1.0   # attends to position 0
    >>> s = np.zeros((1, 2, 1, 5)); s[0, 1] = 7.0   # attends to position 1
    >>> round(float(at_loss(t, s)), 6)  # orthogonal unit maps: 1 + 1
    2.0
    >>> float(at_loss(t, 10 * t))
    0.0
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(
            f"`p` must be a number >= 1, got {p!r} of type {type(p).__name__}."
        )
    if not math.isfinite(p) or p < 1:
        raise ValueError(
            f"`p` must be a finite number >= 1, got {p!r} (|A|^p has an "
            "infinite gradient at 0 for p < 1; the paper uses p = 2)."
        )
    p = float(p)
    _check_reduction(reduction)
    t, s = _as_float(teacher_feat, student_feat)
    _check_feature_map(t, "teacher_feat")
    _check_feature_map(s, "student_feat")
    t_shape, s_shape = _static_shape(t), _static_shape(s)
    if t_shape is not None and s_shape is not None and not _compatible(
        t_shape[:-1], s_shape[:-1]
    ):
        raise ValueError(
            "`teacher_feat` and `student_feat` must have the same batch and "
            f"spatial size (channels may differ), got teacher {_shape(t)} and "
            f"student {_shape(s)}. Pick layers of equal spatial size, or "
            "pool / resize the larger map first."
        )
    if not (_fully_defined(t_shape) and _fully_defined(s_shape)):
        s = _with_runtime_check(s, lambda tf: tf.debugging.assert_equal(
            tf.shape(t)[:-1], tf.shape(s)[:-1],
            message="at_loss: `teacher_feat` and `student_feat` must have "
                    "the same batch and spatial size"))
    diff = _attention_map(s, p) - _attention_map(t, p)
    per_sample = ops.sum(ops.square(diff), axis=-1)
    return _reduce(per_sample, reduction)


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
    t, s = _float_pair(teacher_logits, student_logits)
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


def _flatten_embeddings(x, argument):
    rank = _rank(x)
    if rank is not None and rank < 2:
        raise ValueError(
            f"`{argument}` must be a batch of embeddings of shape "
            f"(batch, features), got shape {_shape(x)}."
        )
    if rank == 2:
        return x
    return ops.reshape(x, (_dim(x, 0), -1))


def _relations(x, distances, angles):
    """The normalised distance matrix (N, N) and the angle tensor (N, N, N)."""
    x = _unit_max_scale(x, axis=None)
    # diff[j, i] = x_i - x_j
    diff = ops.expand_dims(x, 0) - ops.expand_dims(x, 1)
    squared = ops.sum(ops.square(diff), axis=-1)
    nonzero = ops.greater(squared, _EPSILON)
    safe = ops.where(nonzero, squared, ops.ones_like(squared))
    zeros = ops.zeros_like(squared)
    relations = {}
    if distances:
        dist = ops.where(nonzero, ops.sqrt(safe), zeros)
        count = ops.sum(ops.cast(nonzero, dist.dtype))
        mean = ops.sum(dist) / ops.maximum(count, 1.0)
        relations["distance"] = dist / ops.where(
            ops.greater(mean, 0), mean, ops.ones_like(mean)
        )
    if angles:
        inverse = ops.where(nonzero, ops.rsqrt(safe), zeros)
        # unit[j, i] = e_ij, 0 for duplicates
        unit = diff * ops.expand_dims(inverse, -1)
        # angle[j, i, k] = <e_ij, e_kj>: the cosine of the angle at vertex x_j.
        relations["angle"] = ops.matmul(unit, ops.transpose(unit, (0, 2, 1)))
    return relations


def _huber(x):
    """Smooth L1 (Huber with delta 1), elementwise."""
    a = ops.abs(x)
    quadratic = ops.minimum(a, 1.0)
    return 0.5 * ops.square(quadratic) + (a - quadratic)


def rkd_loss(teacher_embed, student_embed, distance_weight=25.0, angle_weight=50.0):
    r"""Relational knowledge distillation (Park et al. 2019).

    Park, Kim, Lu & Cho, "Relational Knowledge Distillation" (CVPR 2019).
    The student copies the *relations* between the batch's embeddings, not
    the embeddings, so teacher and student widths may differ. With
    :math:`d_{ij} = \lVert x_i - x_j \rVert_2 / \mu`, μ the mean of the
    non-zero distances, and :math:`e_{ij} = (x_i - x_j) / \lVert x_i - x_j
    \rVert_2`:

    .. math::
        L_D = \frac{1}{N^2} \sum_{i,j} \ell_\delta\big(d^S_{ij} - d^T_{ij}\big),
        \qquad
        L_A = \frac{1}{N^3} \sum_{i,j,k}
              \ell_\delta\big(\langle e^S_{ij}, e^S_{kj}\rangle
                              - \langle e^T_{ij}, e^T_{kj}\rangle\big)

    .. math::
        L = w_D\, L_D + w_A\, L_A

    with :math:`\ell_\delta` the Huber (smooth L1) loss, δ = 1, and the
    paper's weights :math:`w_D = 25`, :math:`w_A = 50`. As in the authors'
    code the means run over all N² pairs and N³ triplets, degenerate ones
    (i = j, duplicates) included; their distance, direction and cosine are
    0. Pairs closer than 1e-6 times the batch's largest absolute value
    count as duplicates: they get no direction and no gradient (the authors'
    ``F.normalize`` gives them gradients of about 1e12), so duplicated rows
    never give NaN or huge gradients. Both terms are invariant to the
    embeddings' scale and are computed on rescaled copies, so any finite
    input gives a finite loss. Memory: O(N²·D + N³).

    Args:
        teacher_embed: Teacher embeddings, ``(batch, D_t)``; higher ranks
            are flattened per sample.
        student_embed: Student embeddings, ``(batch, D_s)``.
        distance_weight: w_D >= 0 (0 skips the distance term).
        angle_weight: w_A >= 0 (0 skips the angle term).

    Returns:
        A scalar tensor (RKD is a property of the whole batch: no
        per-sample reduction).

    Example:
    >>> import numpy as np
    >>> t = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> float(rkd_loss(t, 3.0 * t))  # same shape, other scale: no loss
    0.0
    >>> s = np.array([[0.0], [1.0], [2.0]])  # 1-D: other distances, angles
    >>> round(float(rkd_loss(t, s)), 4)
    8.274
    """
    distance_weight = check_weight(distance_weight, "distance_weight")
    angle_weight = check_weight(angle_weight, "angle_weight")
    t, s = _as_float(teacher_embed, student_embed)
    t = _flatten_embeddings(t, "teacher_embed")
    s = _flatten_embeddings(s, "student_embed")
    t_batch, s_batch = _static_shape(t)[:1], _static_shape(s)[:1]
    if not _compatible(t_batch, s_batch):
        raise ValueError(
            "`teacher_embed` and `student_embed` must have the same batch "
            f"size, got teacher {_shape(t)} and student {_shape(s)}."
        )
    if not (_fully_defined(t_batch) and _fully_defined(s_batch)):
        s = _with_runtime_check(s, lambda tf: tf.debugging.assert_equal(
            tf.shape(t)[0], tf.shape(s)[0],
            message="rkd_loss: `teacher_embed` and `student_embed` must have "
                    "the same batch size"))
    use_d, use_a = distance_weight > 0, angle_weight > 0
    rel_t = _relations(t, use_d, use_a)
    rel_s = _relations(s, use_d, use_a)
    loss = ops.zeros((), dtype=_dtype(t))
    if use_d:
        loss += distance_weight * _mean(
            _huber(rel_s["distance"] - rel_t["distance"]))
    if use_a:
        loss += angle_weight * _mean(
            _huber(rel_s["angle"] - rel_t["angle"]))
    return loss
