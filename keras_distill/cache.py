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

import numpy as np

INPUTS_KEY = "keras_distill_inputs"
OUTPUTS_KEY = "keras_distill_teacher_outputs"
FEATURES_KEY = "keras_distill_teacher_features"
DTYPES = ("float32", "float16")


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
    return x, None


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


def _leaves(x):
    if x is None:
        return []
    if isinstance(x, dict):
        return [leaf for value in x.values() for leaf in _leaves(value)]
    if isinstance(x, (list, tuple)):
        return [leaf for value in x for leaf in _leaves(value)]
    return [x]


def _is_array(value):
    if isinstance(value, np.ndarray):
        return True
    # tf.Tensor, jax.Array, torch.Tensor: array-likes with a shape and dtype
    # that numpy can read (not iterators, datasets or generators).
    return hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(
        value, "__array__")


class TeacherCache:
    """The teacher's outputs (and tapped features) for every sample.

    Args:
        outputs: The teacher's outputs, one row per sample.
        features: ``{feature key: array}``, one row per sample.
        dtype: ``"float32"`` or ``"float16"`` (halves the memory).

    Raises:
        ValueError: an unknown dtype, or non-finite outputs (a float16 cache
            of logits beyond its range, or a broken teacher).

    Example:
    >>> import numpy as np
    >>> TeacherCache(np.ones((2, 3)), dtype="float16").info["dtype"]
    'float16'
    """

    def __init__(self, outputs, features=None, dtype="float32"):
        if dtype not in DTYPES:
            raise ValueError(
                f"`cache_dtype` must be one of {DTYPES}, got {dtype!r}."
            )
        self.outputs = np.asarray(outputs).astype(dtype)
        self.features = {
            key: np.asarray(value).astype(dtype)
            for key, value in (features or {}).items()
        }
        if not all(np.all(np.isfinite(v))
                   for v in [self.outputs, *self.features.values()]):
            raise ValueError(
                "The teacher produced non-finite outputs (NaN or inf) for "
                "some training samples"
                + (" in float16; use cache_dtype='float32'."
                   if dtype == "float16" else
                   ": check the teacher and the inputs.")
            )
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
