"""Feature and relational losses: FitNets L2, FSP, attention transfer, RKD.

Shared conventions: feature maps are channels-last, ``(batch, *spatial,
channels)`` (NHWC for images); ``reduction="none"`` returns one value per
sample (shape ``(batch,)``). Where a loss is invariant to the scale of its
input (FSP with ``normalize=True``, attention maps, RKD), each sample is
first divided by its largest absolute value (a constant for the gradient,
which is exact because the loss does not depend on that scale): no
intermediate can overflow, whatever the activations' magnitude.
"""

import math
import numbers

from keras import ops

from keras_distill._validation import check_bool, check_weight
from keras_distill.losses._common import (
    _as_float,
    _check_reduction,
    _compatible,
    _dim,
    _dtype,
    _fully_defined,
    _mean,
    _rank,
    _reduce,
    _shape,
    _static_shape,
    _with_runtime_check,
)

# Added to squared norms before an inverse square root, and the squared norm
# below which a difference vector counts as zero (RKD). Inputs are rescaled
# to a largest absolute value of 1 first, so it is relative to the data.
_EPSILON = 1e-12


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
    return ops.reshape(x, (_dim(x, 0), _size(x, slice(1, -1)), _dim(x, -1)))


def _size(x, axes):
    """The static number of elements over ``axes`` (a slice), or -1 to let
    ``reshape`` infer it (it cannot for an empty batch, hence static first)."""
    shape = _static_shape(x)
    dims = None if shape is None else shape[axes]
    return -1 if dims is None or None in dims else math.prod(dims)


def _unit_max_scale(x, axis):
    """``x`` divided by its largest |value| over ``axis`` (constant for the
    gradient); all-zero slices stay zero."""
    # initial=0: an empty batch has a scale of 0 (not an error or -inf).
    scale = ops.stop_gradient(
        ops.max(ops.abs(x), axis=axis, keepdims=True, initial=0.0))
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
    # divide_no_nan: maps without positions (H·W = 0) give 0, not NaN.
    return ops.divide_no_nan(gram, ops.cast(_dim(a, 1), gram.dtype))


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




def _flatten_embeddings(x, argument):
    rank = _rank(x)
    if rank is not None and rank < 2:
        raise ValueError(
            f"`{argument}` must be a batch of embeddings of shape "
            f"(batch, features), got shape {_shape(x)}."
        )
    if rank == 2:
        return x
    return ops.reshape(x, (_dim(x, 0), _size(x, slice(1, None))))


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
