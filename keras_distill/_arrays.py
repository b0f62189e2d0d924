"""Fit's data read as numpy: arrays, tensors and nested structures of them.

``fit`` and ``evaluate`` take numpy arrays, tensors (TensorFlow, JAX),
pandas objects and dicts/lists/tuples of them. The checks of
`_fit_checks` and `_probes` read that data eagerly, before Keras runs a
step and outside any compiled function: there a tensor is a value numpy
can read, where inside ``tf.function`` or ``jax.jit`` it is a symbol
without values. This module is that reading, and nothing else: the
arrays of a structure, their number of samples and shapes, and any
tensor or variable as a numpy array (the cache and the NaN guard use it
too).

Example:
>>> import numpy as np
>>> samples({"a": np.zeros((5, 2))}), shapes({"a": np.zeros((5, 2))})
(5, "{'a': (5, 2)}")
"""

import numbers

import keras
import numpy as np


def to_numpy(value):
    """A tensor (TensorFlow, JAX, numpy) as a numpy array.

    Example:
    >>> to_numpy([1, 2]).tolist()
    [1, 2]
    """
    if isinstance(value, (np.ndarray, list, tuple)) or type(
            value).__module__.startswith("pandas"):
        return np.asarray(value)
    inner = getattr(value, "value", None)
    if inner is not None and not callable(inner):  # a Keras 3 variable
        value = inner
    if hasattr(value, "numpy"):  # TensorFlow eager tensors
        return np.asarray(value.numpy())
    return np.asarray(keras.ops.convert_to_numpy(value))


def leaves(value):
    """The arrays of a nested structure (dicts, lists, tuples), ``None``
    dropped.

    Example:
    >>> len(leaves({"a": [1, 2], "b": None}))
    1
    """
    if value is None:
        return []
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in leaves(v)]
    if isinstance(value, (list, tuple)) and not all(
            isinstance(v, numbers.Number) for v in value):
        return [leaf for v in value for leaf in leaves(v)]
    return [value]


def is_array(value):
    """An in-memory array (numpy, or a tensor numpy can read), not an
    iterator, dataset or generator.

    Example:
    >>> is_array(np.zeros(2)), is_array(iter([]))
    (True, False)
    """
    if isinstance(value, np.ndarray):
        return True
    # tf.Tensor, jax.Array, pandas objects: array-likes with a shape that
    # numpy can read (not iterators, datasets or generators).
    return hasattr(value, "shape") and hasattr(value, "__array__")


def map_arrays(fn, value):
    """``fn`` applied to every array of a nested structure (a list of
    numbers counts as one array).

    Example:
    >>> map_arrays(len, {"a": [1, 2], "b": None})
    {'a': 2, 'b': None}
    """
    if value is None:
        return None
    if isinstance(value, dict):
        return {key: map_arrays(fn, v) for key, v in value.items()}
    if isinstance(value, (list, tuple)) and not all(
            isinstance(v, numbers.Number) for v in value):
        return type(value)(map_arrays(fn, v) for v in value)
    return fn(value)


def samples(value):
    """The number of samples of an array or a nested structure's first one.

    Example:
    >>> samples({"a": np.zeros((5, 2))})
    5
    """
    if isinstance(value, (dict, list, tuple)) and in_memory(value):
        value = leaves(value)[0]
    return _samples(value)


def _samples(value):
    shape = getattr(value, "shape", None)
    if shape is None:
        return len(value)
    return int(shape[0]) if len(shape) else 1


def in_memory(value):
    """``value`` as arrays (nested), or ``None`` when it is not arrays."""
    found = leaves(value)
    if not found:
        return None
    if all(is_array(v) or isinstance(v, (list, tuple)) for v in found):
        return found
    return None


def shapes(value):
    """The shapes of a nested structure's arrays, for messages.

    Example:
    >>> shapes({"a": np.zeros((2, 3))})
    "{'a': (2, 3)}"
    """
    return str(map_arrays(lambda a: tuple(np.shape(a)), value))
