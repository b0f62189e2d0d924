"""The view cache (FKD, Shen & Xing 2022) and ``fit(augmentation=...)``.

`build_view_cache` runs the teacher once on K recorded views of every
sample (`keras_distill.views.Views.record`, each view drawn from a seed);
`ViewCache.pack` puts the outputs and the views' parameters beside the
inputs, so they travel with their samples through Keras's shuffling, and
`select`, in the training step, rebuilds one stored view per sample and
gives its teacher outputs: consistent views at about the cost of training
the student alone. `prepare_fit`, `training_batch` and `training_labels` are
what a distiller's ``fit`` and training step call (online views too).

Example:
>>> import numpy as np, keras
>>> from keras_distill.views import Views
>>> views = Views(keras.layers.RandomFlip("horizontal"))
>>> x = np.random.rand(4, 4, 4, 1).astype("float32")
>>> c = build_view_cache(lambda v: np.asarray(v).reshape(4, -1)[:, :2],
...                      x, views, num_views=2, verbose=0)
>>> c.describe()
'cached teacher outputs for 2 views of 4 samples (0.0 MiB, float16)'
"""

import copy

import keras
import numpy as np

from keras_distill import cache
from keras_distill.views import Views, one_hot_labels, soft_label_loss

# ------------------------------------------------------------- the cache
VIEW_OUTPUTS_KEY = "keras_distill_view_outputs"
VIEW_INDEX_KEY = "keras_distill_view_classes"
VIEW_RECORD_KEY = "keras_distill_view_record"
# Dropped classes sit this far below the smallest kept logit (the view
# cache's and `keras_distill.disk_cache`'s top-k outputs).
TOPK_FILL = 1e4


def view_seed(seed, view, batch):
    """The integer seed of one batch of one view (stable across runs).

    Example:
    >>> view_seed(0, 1, 2) == view_seed(0, 1, 2) != view_seed(0, 2, 1)
    True
    """
    return (int(seed) * 1_000_003 + int(view) * 10_007 + int(batch)) % (2**31 - 1)


class ViewCache:
    """The teacher's outputs for K replayable views of every sample (FKD).

    Built by `build_view_cache`. ``pack(x)`` puts the outputs and the views'
    parameters beside the inputs, so that they travel with their samples
    through Keras's shuffling; in the training step `select` picks one
    stored view per sample at random, the student gets that view rebuilt
    (`Views.replay`) and the loss the teacher's outputs for it.

    Args:
        views: The `Views` the cache was recorded with.
        outputs: ``(samples, K, classes)`` teacher outputs, or with
            ``top_k``, ``(samples, K, k)`` of the largest ones.
        record: Per layer, ``{entry: (samples, K, ...)}`` view parameters.
        seed: The seed the views were drawn from.
        classes: Indices of the kept outputs (``top_k`` only).
        num_classes: Number of classes of the full output.
        dtype: ``"float32"`` or ``"float16"``.

    Example:
    >>> import numpy as np, keras
    >>> views = Views(keras.layers.RandomFlip("horizontal"))
    >>> x = np.random.rand(8, 4, 4, 1).astype("float32")
    >>> c = build_view_cache(lambda v: np.asarray(v).reshape(len(v), -1)[:, :3],
    ...                      x, views, num_views=2, verbose=0)
    >>> c.info["shape"], c.info["views"]
    ((8, 2, 3), 2)
    """

    def __init__(self, views, outputs, record, seed=0, classes=None,
                 num_classes=None, dtype="float16"):
        self.views = views
        self.outputs = outputs
        self.record = record
        self.seed = seed
        self.classes = classes
        self.num_classes = int(num_classes or outputs.shape[-1])
        self.top_k = None if classes is None else int(outputs.shape[-1])
        nbytes = _record_bytes(record) + outputs.nbytes + (
            0 if classes is None else classes.nbytes)
        self.info = {"samples": int(outputs.shape[0]),
                     "views": int(outputs.shape[1]),
                     "shape": tuple(outputs.shape), "dtype": dtype,
                     "top_k": self.top_k, "seed": seed, "bytes": int(nbytes)}

    def describe(self):
        """One line for the log.

        Example:
        >>> import numpy as np, keras
        >>> views = Views(keras.layers.RandomFlip("horizontal"))
        >>> ViewCache(views, np.zeros((4, 2, 3), "float16"), [{}]).describe()
        'cached teacher outputs for 2 views of 4 samples (0.0 MiB, float16)'
        """
        top = f", top {self.top_k} classes" if self.top_k else ""
        return (f"cached teacher outputs for {self.info['views']} views of "
                f"{self.info['samples']} samples "
                f"({self.info['bytes'] / 2**20:.1f} MiB, {self.info['dtype']}"
                f"{top})")

    def pack(self, x):
        """The inputs with the cached views beside them (for ``fit``)."""
        packed = {cache.INPUTS_KEY: x, VIEW_OUTPUTS_KEY: self.outputs,
                  VIEW_RECORD_KEY: _flat_record(self.record)}
        if self.classes is not None:
            packed[VIEW_INDEX_KEY] = self.classes
        return packed


def estimate_view_cache_bytes(samples, num_views, num_classes, dtype="float16",
                              top_k=None):
    """Bytes of the teacher outputs of a view cache (the views' parameters
    add a few numbers per view and layer).

    Example:
    >>> estimate_view_cache_bytes(60000, 10, 10, "float16")
    12000000
    """
    width = top_k or num_classes
    per_view = width * np.dtype(dtype).itemsize + (4 * width if top_k else 0)
    return int(samples) * int(num_views) * per_view


def _flat_record(record):
    return {f"{i}/{key}": value for i, layer in enumerate(record)
            for key, value in layer.items()}


def _unflat_record(flat, num_layers):
    record = [{} for _ in range(num_layers)]
    for name, value in flat.items():
        index, key = name.split("/", 1)
        record[int(index)][key] = value
    return record


def _record_bytes(record):
    return sum(v.nbytes for layer in record for v in layer.values())


def is_packed(x):
    """Whether ``x`` is a batch packed by `ViewCache.pack`.

    Example:
    >>> is_packed({"a": 1})
    False
    """
    return isinstance(x, dict) and VIEW_OUTPUTS_KEY in x


def select(views, packed, seed, num_classes):
    """In the training step: one stored view per sample, picked at random.

    Args:
        views: The cache's `Views`.
        packed: The batch of `ViewCache.pack`'s dict.
        seed: A ``keras.random.SeedGenerator`` (or an integer).
        num_classes: Width of the teacher's full output.

    Returns:
        ``(view images, teacher outputs as float32)``.

    Example:
    >>> import numpy as np, keras
    >>> views = Views(keras.layers.RandomFlip("horizontal"))
    >>> x = np.random.rand(4, 4, 4, 1).astype("float32")
    >>> c = build_view_cache(lambda v: np.asarray(v).reshape(4, -1)[:, :2],
    ...                      x, views, num_views=3, verbose=0)
    >>> images, outputs = select(views, c.pack(x), 0, 2)
    >>> tuple(images.shape), tuple(outputs.shape)
    ((4, 4, 4, 1), (4, 2))
    """
    ops = keras.ops
    x = packed[cache.INPUTS_KEY]
    stored = packed[VIEW_OUTPUTS_KEY]
    batch, num_views = ops.shape(stored)[0], ops.shape(stored)[1]
    pick = keras.random.randint((batch,), 0, num_views, seed=seed)
    onehot = ops.one_hot(pick, num_views)  # (batch, K)

    def choose(value):
        rank = len(ops.shape(value))
        weights = ops.reshape(onehot, ops.shape(onehot) + (1,) * (rank - 2))
        chosen = ops.sum(ops.cast(value, "float32") * weights, axis=1)
        return ops.cast(chosen, value.dtype) if value.dtype != "bool" \
            else ops.greater(chosen, 0.5)

    record = _unflat_record(
        {name: choose(value)
         for name, value in packed[VIEW_RECORD_KEY].items()},
        len(views.layers))
    images = views.replay(x, record)
    outputs = choose(stored)
    outputs = ops.cast(outputs, "float32")
    if VIEW_INDEX_KEY in packed:
        classes = ops.cast(choose(packed[VIEW_INDEX_KEY]), "int32")
        outputs = _expand_top_k(outputs, classes, num_classes)
    return images, outputs


def _expand_top_k(values, classes, num_classes):
    ops = keras.ops
    onehot = ops.one_hot(classes, num_classes)  # (batch, k, classes)
    kept = ops.sum(onehot, axis=1)
    full = ops.sum(onehot * values[..., None], axis=1)
    fill = ops.min(values, axis=-1, keepdims=True) - TOPK_FILL
    return full + (1.0 - kept) * fill


def top_k_rows(outputs, top_k):
    """The ``top_k`` largest outputs along the last axis, largest first,
    and their class ids (int32); refuses a ``top_k`` not below the number
    of outputs.

    Example:
    >>> values, classes = top_k_rows(np.array([[0.1, 3.0, 2.0]]), 2)
    >>> values.tolist(), classes.tolist()
    ([[3.0, 2.0]], [[1, 2]])
    """
    width = outputs.shape[-1]
    if not 1 <= top_k < width:
        raise ValueError(
            f"`top_k` must be between 1 and {width - 1} (the teacher has "
            f"{width} outputs), got {top_k!r}; leave it None to keep them "
            "all.")
    classes = np.argsort(-outputs, axis=-1)[..., :top_k]
    return np.take_along_axis(outputs, classes, axis=-1), classes.astype("int32")


def record_views(teacher_fn, x, views, num_views, seed, batch):
    """The teacher's outputs on ``num_views`` recorded views of one batch.

    View ``k`` is drawn from `view_seed` ``(seed, k, batch)``.

    Returns:
        ``(outputs, record)``: float32 outputs of shape ``(samples,
        num_views, classes)``, and per flat record entry (``"layer/key"``)
        the views' parameters, ``(samples, num_views, ...)``.

    Example:
    >>> import numpy as np, keras
    >>> views = Views(keras.layers.RandomFlip("horizontal"))
    >>> x = np.random.rand(4, 4, 4, 1).astype("float32")
    >>> out, rec = record_views(lambda v: np.asarray(v).reshape(4, -1)[:, :2],
    ...                         x, views, 3, seed=0, batch=0)
    >>> out.shape
    (4, 3, 2)
    """
    outs, records = [], []
    for k in range(num_views):
        view, rec = views.record(x, view_seed(seed, k, batch))
        out = np.asarray(teacher_fn(view), dtype="float32")
        if not np.all(np.isfinite(out)):
            raise ValueError(
                "The teacher produced non-finite outputs (NaN or inf) on "
                "augmented views: check the teacher and the augmentation's "
                "value range.")
        outs.append(out)
        records.append(_flat_record(rec))
    return np.stack(outs, axis=1), {
        name: np.stack([r[name] for r in records], axis=1)
        for name in records[0]}


def build_view_cache(teacher_fn, x, views, num_views, seed=0, batch_size=256,
                     dtype="float16", top_k=None, verbose="auto"):
    """Runs the teacher once on ``num_views`` recorded views of every sample.

    View ``k`` of batch ``j`` is drawn from `view_seed` ``(seed, k, j)``, so
    a rebuilt cache holds the same views. With ``top_k`` only the ``top_k``
    largest teacher logits of each view are kept (with their class ids);
    the other classes are rebuilt 10,000 below the smallest kept logit, so
    at any temperature the teacher's distribution is renormalised over its
    ``top_k`` classes (as FKD stores it).

    Args:
        teacher_fn: ``images -> outputs`` (the teacher in inference mode).
        x: The training images (an in-memory array).
        views: A replayable `Views`.
        num_views: K, the views stored per sample.
        seed: Seed of the views.
        batch_size: Teacher batch size.
        dtype: ``"float16"`` (default) or ``"float32"``.
        top_k: Keep only the ``top_k`` largest outputs per view.
        verbose: ``0`` silences the progress bar.

    Returns:
        A `ViewCache`.

    Example:
    >>> import numpy as np, keras
    >>> views = Views(keras.layers.RandomTranslation(0.1, 0.1))
    >>> x = np.random.rand(10, 8, 8, 1).astype("float32")
    >>> c = build_view_cache(lambda v: np.asarray(v).reshape(10, -1)[:, :5],
    ...                      x, views, num_views=2, top_k=2, verbose=0)
    >>> c.info["shape"], c.classes.shape
    ((10, 2, 2), (10, 2, 2))
    """
    views.check_replayable()
    if isinstance(num_views, bool) or not isinstance(num_views, int) \
            or num_views < 1:
        raise ValueError(f"`views` must be a positive integer (the views "
                         f"cached per sample), got {num_views!r}.")
    if dtype not in cache.DTYPES:
        raise ValueError(f"`cache_dtype` must be one of {cache.DTYPES}, got "
                         f"{dtype!r}.")
    n = len(x)
    batches = -(-n // batch_size)
    progress = None if verbose == 0 else keras.utils.Progbar(
        num_views * batches, unit_name="batch")
    outputs = classes = record = None
    for j in range(batches):
        rows = slice(j * batch_size, min(n, (j + 1) * batch_size))
        out, rec = record_views(teacher_fn, x[rows], views, num_views, seed, j)
        if outputs is None:
            num_classes = out.shape[-1]
        if top_k is not None:
            out, kept = top_k_rows(out, top_k)
        if outputs is None:
            outputs = np.zeros((n,) + out.shape[1:], dtype)
            if top_k is not None:
                classes = np.zeros((n,) + kept.shape[1:], "int32")
            record = {name: np.zeros((n,) + v.shape[1:], v.dtype)
                      for name, v in rec.items()}
        outputs[rows] = out.astype(dtype)
        if top_k is not None:
            classes[rows] = kept
        for name, value in rec.items():
            record[name][rows] = value
        if progress is not None:
            progress.add(num_views)
    if not np.all(np.isfinite(outputs)):
        raise ValueError("The teacher's outputs overflow float16 on some "
                         "views; use cache_dtype='float32'.")
    record = _unflat_record(record, len(views.layers))
    return ViewCache(views, outputs, record, seed=seed, classes=classes,
                     num_classes=num_classes, dtype=dtype)


# ----------------------------------------------------- the distiller's side
def prepare_fit(distiller, x, augmentation, num_views, top_k, cache_teacher,
                cache_dtype, cache_budget, batch_size, verbose):
    """Sets up ``fit(augmentation=...)``; returns the ``x`` to train on.

    Online (``cache_teacher=False``): each training batch gets one random
    view, which the teacher and the student both see. Cached
    (``cache_teacher=True``): `build_view_cache` runs the teacher on
    ``num_views`` recorded views of every sample (size printed and checked
    against ``cache_budget`` first), and ``x`` comes back packed with them.
    """
    state = distiller._views
    previous = state.value
    state.value = None if augmentation is None else Views(augmentation)
    state.objective = None
    if previous is not None or state.value is not None:
        # The compiled step depends on it: trace it again.
        distiller.train_function = None
    views = state.value
    if views is None:
        if num_views is not None or top_k is not None:
            raise ValueError("`views` and `top_k` describe a cache of "
                             "augmented views: pass `augmentation` too.")
        return x
    num_classes = distiller._num_classes()
    if views.mixes_labels:
        objective = copy.copy(distiller._objective)
        if objective.student_loss_fn is not None:
            objective.student_loss_fn = soft_label_loss(
                objective.student_loss_fn, distiller._keras())
        state.objective = objective
    if not cache_teacher:
        return x
    if distiller._has_student_features():
        raise ValueError(
            "A view cache stores the teacher's logits only, not its tapped "
            "features: with a FeatureDistiller use online views "
            "(cache_teacher=False).")
    num_views = 8 if num_views is None else num_views
    cache.check_arrays(x)
    estimate = estimate_view_cache_bytes(len(x), num_views, num_classes,
                                         cache_dtype, top_k)
    if verbose:
        print(f"keras_distill: caching the teacher's outputs for {num_views} "
              f"views of {len(x)} samples: about {estimate / 2**20:.1f} MiB "
              f"({cache_dtype}{f', top {top_k}' if top_k else ''})")
    if cache_budget is not None and estimate > cache_budget:
        raise ValueError(
            f"The view cache would take about {estimate / 2**20:.0f} MiB, above "
            f"`cache_budget`={cache_budget / 2**20:.0f} MiB. Lower `views` "
            f"(K={num_views}), use cache_dtype='float16' or `top_k`, raise "
            "`cache_budget`, or train online (cache_teacher=False).")
    teacher = distiller._inference_teacher.model

    def teacher_fn(images):
        return teacher(images, training=False)

    built = build_view_cache(teacher_fn, x, views, num_views,
                             seed=int(np.random.randint(0, 2**31 - 1)),
                             batch_size=batch_size or 256, dtype=cache_dtype,
                             top_k=top_k, verbose=0 if not verbose else "auto")
    distiller.teacher_cache_info = built.info
    if verbose:
        print(f"keras_distill: {built.describe()}")
    return built.pack(x)


def training_batch(distiller, inputs):
    """The batch both models see in a training step, with views active:
    ``(x, cached, transformations)``; ``cached`` is ``(teacher outputs,
    {})`` for a view cache, else what `keras_distill.cache.split` gives."""
    views = distiller._views.value
    if views is None:
        x, cached = cache.split(inputs)
        return x, cached, None
    seed = distiller._view_seed_generator()
    if is_packed(inputs):
        x, outputs = select(views, inputs, seed, distiller._num_classes())
        return x, (outputs, {}), None
    x, cached = cache.split(inputs)
    view, transformations = views.random_view(x, seed=seed)
    return view, cached, transformations


def training_labels(distiller, y, transformations):
    """The labels of the view: mixed as its images were (MixUp/CutMix)."""
    views = distiller._views.value
    if views is None or not views.mixes_labels or y is None \
            or transformations is None:
        return y
    return views.mix_labels(one_hot_labels(y, distiller._num_classes()),
                            transformations)
