"""Shared helpers of the loss functions: validation, shapes, dtypes, means.

Backend-neutral (``keras.ops`` only): TensorFlow is imported lazily, and only
when the backend is TensorFlow (i.e. when it is loaded anyway).
"""

import math

import keras
from keras import ops

from keras_distill._validation import check_choice

_REDUCTIONS = ("mean", "none")


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



def _as_float(*tensors):
    """Converts to one float dtype: float64 if any input is, else float32."""
    tensors = [ops.convert_to_tensor(x) for x in tensors]
    dtype = "float64" if any(_dtype(x) == "float64" for x in tensors) else "float32"
    return [ops.cast(x, dtype) for x in tensors]



def _mean(x, axis=None, keepdims=False):
    """``keras.ops.mean`` that keeps float64 precise on every backend and
    gives 0, not NaN, over no elements (an empty batch).

    On backends other than TensorFlow, Keras's type promotion maps float64
    to float32, so ``keras.ops.mean`` of a float64 tensor is computed in
    float32 (and cast back). A sum divided by the count is exact float64.
    A count known only at run time (``tf.function`` with an unknown batch
    size) is divided with ``divide_no_nan``, so XLA compiles it too.

    Example:
    >>> import numpy as np
    >>> float(_mean(ops.zeros((0, 3)))), float(_mean(np.ones((2, 3))))
    (0.0, 1.0)
    """
    shape = _static_shape(x)
    rank = None if shape is None else len(shape)
    if rank is None:  # only in TensorFlow graphs
        total = ops.sum(x, axis=axis, keepdims=keepdims)
        count = ops.cast(ops.size(x), total.dtype) / ops.cast(
            ops.size(total), total.dtype)
        return ops.divide_no_nan(total, count)
    axes = range(rank) if axis is None else (
        (axis,) if isinstance(axis, int) else axis)
    dims = [shape[a] for a in axes]
    if None not in dims and math.prod(dims) == 0:
        return ops.sum(x, axis=axis, keepdims=keepdims)  # zeros
    if None in dims:
        total = ops.sum(x, axis=axis, keepdims=keepdims)
        count = math.prod(d for d in dims if d is not None)
        for a, d in zip(axes, dims):
            if d is None:
                count = count * ops.cast(_dim(x, a), total.dtype)
        return ops.divide_no_nan(total, ops.cast(count, total.dtype))
    if _dtype(x) != "float64" or keras.backend.backend() == "tensorflow":
        return ops.mean(x, axis=axis, keepdims=keepdims)
    return ops.sum(x, axis=axis, keepdims=keepdims) / math.prod(dims)


def _reduce(values, reduction):
    if reduction == "none":
        return values
    return _mean(values)
