"""Teacher-output caches: the teacher runs once, every epoch reads its outputs.

`TeacherCache` holds the teacher's outputs (and tapped features) for every
training sample in memory. `pack` puts them beside the inputs in one dict,
so that they travel with their samples through Keras's shuffling and
``validation_split`` and stay aligned; `split` takes them apart again in
the training step.

Example:
>>> import numpy as np
>>> cache = TeacherCache(np.zeros((4, 3), "float32"))
>>> cache.info["bytes"]
48
>>> x, cached = split(cache.pack(np.ones((4, 2))))
>>> x.shape, cached[0].shape
((4, 2), (4, 3))
"""

import numbers

import numpy as np

from keras_distill._arrays import is_array as _is_array
from keras_distill._arrays import leaves as _leaves

INPUTS_KEY = "keras_distill_inputs"
OUTPUTS_KEY = "keras_distill_teacher_outputs"
FEATURES_KEY = "keras_distill_teacher_features"
DTYPES = ("float32", "float16")
# The most memory a cache may take unless ``fit(cache_budget=...)`` says
# otherwise: 2 GiB.
DEFAULT_BUDGET = 2 * 2**30


def check_dtype(dtype):
    """One of `DTYPES`.

    Example:
    >>> check_dtype("int8")
    Traceback (most recent call last):
    ...
    ValueError: `cache_dtype` must be one of ('float32', 'float16'), got 'int8'.
    """
    if dtype not in DTYPES:
        raise ValueError(
            f"`cache_dtype` must be one of {DTYPES}, got {dtype!r}."
        )
    return dtype


def check_budget(budget):
    """``None`` (no limit) or a positive number of bytes.

    Example:
    >>> check_budget("2GB")
    Traceback (most recent call last):
    ...
    TypeError: `cache_budget` must be a number of bytes ...
    """
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise TypeError(
            f"`cache_budget` must be a number of bytes (e.g. 4 * 2**30 for "
            f"4 GiB) or None for no limit, got {budget!r}."
        )
    if not budget > 0:
        raise ValueError(
            f"`cache_budget` must be a positive number of bytes or None, got "
            f"{budget!r}."
        )
    return budget


def check_size(first, samples, dtype, budget, verbose=False):
    """Refuses a cache above ``budget`` bytes before it is built (and
    prints its size if ``verbose``), from the teacher's ``(outputs,
    features)`` for the first sample(s).

    Example:
    >>> first = (np.zeros((1, 1000)), {"conv": np.zeros((1, 8, 8, 64))})
    >>> check_size(first, 10**5, "float16", DEFAULT_BUDGET, verbose=True)
    keras_distill: caching the teacher's outputs for 100000 samples: 972.0 MiB (float16)
    >>> check_size(first, 3 * 10**5, "float16", DEFAULT_BUDGET)
    Traceback (most recent call last):
    ...
    ValueError: The teacher cache would take 3057600000 bytes (2916.0 MiB: 300000 samples...
    """
    outputs, features = first
    size = TeacherCache.estimate_bytes(
        samples, [np.shape(v)[1:] for v in [outputs, *features.values()]],
        dtype)
    if verbose:
        print(f"keras_distill: caching the teacher's outputs for {samples} "
              f"samples: {size / 2**20:.1f} MiB ({dtype})")
    if budget is None or size <= budget:
        return
    raise ValueError(
        f"The teacher cache would take {size} bytes ({size / 2**20:.1f} MiB: "
        f"{samples} samples), above `cache_budget`={budget} bytes "
        f"({budget / 2**20:.1f} MiB). Raise it (fit(..., cache_budget="
        f"{int(size) + 1}) or None for no limit), halve the cache with "
        "cache_dtype='float16', cache fewer samples or layers, or train "
        "with cache_teacher=False (the teacher runs on every batch)."
    )


def split(x):
    """Separates inputs from cached teacher outputs packed by `TeacherCache.pack`.

    Returns:
        ``(x, None)``, or ``(x, (outputs, {feature key: array}))``.

    Example:
    >>> split([1, 2])
    ([1, 2], None)
    """
    if isinstance(x, dict) and OUTPUTS_KEY in x:
        return x[INPUTS_KEY], (x[OUTPUTS_KEY], x.get(FEATURES_KEY, {}))
    if isinstance(x, dict) and INPUTS_KEY in x:
        # Packed with a view cache (`keras_distill.views`): outside the
        # training step the clean inputs, and the teacher runs online.
        return x[INPUTS_KEY], None
    return x, None


def inputs_of(x):
    """The inputs of ``x``, packed with cached outputs or not.

    Example:
    >>> inputs_of({INPUTS_KEY: 1, OUTPUTS_KEY: 2}), inputs_of(3)
    (1, 3)
    """
    if isinstance(x, dict) and INPUTS_KEY in x:
        return x[INPUTS_KEY]
    return x


def check_arrays(x):
    """Refuses inputs a cache cannot stay aligned with.

    Example:
    >>> check_arrays(iter([]))
    Traceback (most recent call last):
    ...
    ValueError: `cache_teacher=True` needs the training inputs `x` as in-memory arrays ...
    """
    leaves = _leaves(x)
    if not leaves or not all(_is_array(v) for v in leaves):
        raise ValueError(
            "`cache_teacher=True` needs the training inputs `x` as "
            "in-memory arrays (numpy arrays or tensors), got "
            f"{type(x).__name__}. A tf.data pipeline, generator or "
            "PyDataset may yield different inputs every epoch (random "
            "augmentation, shuffled crops), and teacher outputs cached "
            "from one epoch would then be wrong for the next. Pass "
            "arrays, or leave cache_teacher=False to run the teacher on "
            "every batch."
        )


def check_finite_outputs(arrays, teacher_dtype=None):
    """Refuses teacher outputs with NaN or inf before they are cached,
    naming ``teacher_dtype`` when a low-precision teacher overflowed.

    Example:
    >>> check_finite_outputs([np.array([1.0, np.inf])], "float16")
    Traceback (most recent call last):
    ...
    ValueError: The teacher produced non-finite outputs (NaN or inf) ... teacher_dtype='float16' overflowed; ...
    """
    if not all(np.all(np.isfinite(v)) for v in arrays):
        raise ValueError(
            "The teacher produced non-finite outputs (NaN or inf) for "
            "some training samples: "
            + (f"its teacher_dtype={teacher_dtype!r} overflowed; use "
               "teacher_dtype='bfloat16' or None (float32)."
               if teacher_dtype is not None else
               "check the teacher and the inputs.")
        )


def check_stored_range(arrays):
    """Refuses outputs that became inf when cast to the cache's dtype.

    Example:
    >>> check_stored_range([np.array([np.inf], "float16")])  # 70000 cast to float16
    Traceback (most recent call last):
    ...
    ValueError: The teacher's outputs exceed float16's range (65504); use cache_dtype='float32'.
    """
    if not all(np.all(np.isfinite(v)) for v in arrays):
        raise ValueError(
            "The teacher's outputs exceed float16's range (65504); use "
            "cache_dtype='float32'."
        )


class TeacherCache:
    """The teacher's outputs (and tapped features) for every sample.

    Args:
        outputs: The teacher's outputs, one row per sample.
        features: ``{feature key: array}``, one row per sample.
        dtype: ``"float32"`` or ``"float16"`` (halves the memory).
        teacher_dtype: The distiller's ``teacher_dtype``, named when the
            teacher's outputs are not finite.

    Raises:
        ValueError: an unknown dtype, or non-finite outputs (a float16 cache
            of logits beyond its range, a low-precision teacher that
            overflowed, or a broken teacher).

    Example:
    >>> import numpy as np
    >>> TeacherCache(np.ones((2, 3)), dtype="float16").info["dtype"]
    'float16'
    """

    def __init__(self, outputs, features=None, dtype="float32",
                 teacher_dtype=None):
        check_dtype(dtype)
        raw = [np.asarray(outputs),
               *(np.asarray(v) for v in (features or {}).values())]
        check_finite_outputs(raw, teacher_dtype)
        self.outputs = raw[0].astype(dtype)
        self.features = {
            key: np.asarray(value).astype(dtype)
            for key, value in (features or {}).items()
        }
        check_stored_range([self.outputs, *self.features.values()])
        nbytes = self.outputs.nbytes + sum(
            v.nbytes for v in self.features.values())
        self.info = {
            "samples": int(self.outputs.shape[0]),
            "shape": tuple(self.outputs.shape),
            "dtype": dtype,
            "bytes": int(nbytes),
        }
        if self.features:
            self.info["features"] = {
                key: tuple(v.shape) for key, v in self.features.items()
            }

    @staticmethod
    def estimate_bytes(samples, shapes, dtype="float32"):
        """Bytes a cache of ``samples`` rows of these per-sample shapes takes.

        Example:
        >>> TeacherCache.estimate_bytes(100, [(10,)], "float16")
        2000
        """
        per_sample = sum(int(np.prod([d for d in shape if d is not None]))
                         for shape in shapes)
        return int(samples) * per_sample * np.dtype(dtype).itemsize

    def describe(self):
        """One line for the log.

        Example:
        >>> import numpy as np
        >>> TeacherCache(np.zeros((8, 2))).describe()
        'cached teacher outputs for 8 samples (0.0 MiB, float32)'
        """
        return (f"cached teacher outputs for {self.info['samples']} samples "
                f"({self.info['bytes'] / 2**20:.1f} MiB, {self.info['dtype']})")

    def pack(self, x):
        """The inputs with the cached outputs beside them (for ``fit``)."""
        packed = {INPUTS_KEY: x, OUTPUTS_KEY: self.outputs}
        if self.features:
            packed[FEATURES_KEY] = self.features
        return packed
