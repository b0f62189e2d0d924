"""Consistent views: the teacher and the student see the same augmented image.

*Function matching* (Beyer et al., "Knowledge distillation: A good teacher
is patient and consistent", CVPR 2022): distillation pays when the teacher
is asked about exactly the (augmented, possibly mixed) image the student
sees, not about the clean image. *FKD* (Shen & Xing, ECCV 2022) makes this
cheap: the teacher's outputs are stored per augmented view together with
what is needed to rebuild the view, and replayed.

`Views` wraps an augmentation given as Keras image preprocessing layers
(``keras.layers.RandomFlip``, ``RandomTranslation``, ``RandomZoom``,
``RandAugment``, ``MixUp``, ``CutMix``, ..., alone, in a list or a
``keras.Sequential``) or as a callable ``images -> images``:

- ``random_view(images)`` draws one random view of a batch (online
  distillation: the distiller gives it to the teacher *and* the student)
  and returns the drawn transformations, with which ``mix_labels`` mixes
  the labels the same way (``MixUp``/``CutMix``).
- ``record(images, seed)`` draws a view from an integer seed (stateless:
  the same seed gives the same view) and returns, beside the view, its
  per-sample parameters; ``replay(images, record)`` rebuilds exactly that
  view from them, whatever order the samples come back in. `ViewCache`
  stores K recorded views per sample with the teacher's outputs for each.

Example:
>>> import numpy as np, keras
>>> views = Views([keras.layers.RandomFlip("horizontal"),
...                keras.layers.RandomTranslation(0.1, 0.1)])
>>> x = np.random.rand(6, 8, 8, 1).astype("float32")
>>> view, record = views.record(x, seed=3)
>>> order = np.array([5, 0, 3, 1, 4, 2])
>>> again = views.replay(x[order], gather(record, order))
>>> bool(np.allclose(again, np.asarray(view)[order], atol=1e-6))
True
"""

import keras
import numpy as np

from keras_distill import cache

# Layers whose transformation is per sample (no batch-level choice), so a
# view can be rebuilt from its sample's parameters alone. Tested one by one
# in tests/test_views.py.
_REPLAYABLE = (
    "RandomFlip", "RandomTranslation", "RandomRotation", "RandomZoom",
    "RandomContrast", "RandomBrightness", "RandomShear",
)
_MIXING = ("MixUp", "CutMix")
# Transformation entries that describe the batch, not a sample: rebuilt
# from the batch being replayed.
_BATCH_ENTRIES = ("input_shape", "batch_size")


def _layer_list(augmentation):
    if isinstance(augmentation, keras.Sequential):
        return list(augmentation.layers)
    if isinstance(augmentation, (list, tuple)):
        return list(augmentation)
    return [augmentation]


def _is_image_layer(layer):
    return isinstance(layer, keras.layers.Layer) and hasattr(
        layer, "get_random_transformation") and hasattr(
        layer, "transform_images")


class Views:
    """An augmentation that gives teacher and student the same view.

    Args:
        augmentation: Keras 3 image preprocessing layers (one, a list or a
            ``keras.Sequential`` of them), or a callable taking a batch of
            images and returning one of the same shape (online only: a
            callable cannot be replayed).

    Raises:
        TypeError: anything else (e.g. a ``tf_keras`` layer, or a layer
            that is not an image preprocessing layer).

    Example:
    >>> import keras
    >>> Views(keras.layers.MixUp()).mixes_labels
    True
    >>> Views(lambda images: images).replayable
    False
    """

    def __init__(self, augmentation):
        if isinstance(augmentation, Views):
            augmentation = augmentation.augmentation
        self.augmentation = augmentation
        items = _layer_list(augmentation)
        if items and all(_is_image_layer(layer) for layer in items):
            self.layers = items
            self.fn = None
        elif callable(augmentation) and not isinstance(
                augmentation, (keras.layers.Layer, list, tuple)):
            self.layers = None
            self.fn = augmentation
        else:
            bad = [type(layer).__name__ for layer in items
                   if not _is_image_layer(layer)]
            raise TypeError(
                "`augmentation` must be Keras 3 image preprocessing layers "
                "(e.g. keras.layers.RandomFlip, RandomTranslation, MixUp; one, "
                "a list or a keras.Sequential of them) or a callable "
                f"images -> images; got {type(augmentation).__name__}"
                + (f" with {', '.join(bad)}" if bad else "") + "."
            )
        names = [type(layer).__name__ for layer in self.layers or []]
        self.mixes_labels = any(name in _MIXING for name in names)
        self.not_replayable = [name for name in names
                               if name not in _REPLAYABLE]
        self.replayable = self.layers is not None and not self.not_replayable

    def __repr__(self):
        if self.layers is None:
            return f"Views({getattr(self.fn, '__name__', 'callable')})"
        return "Views([{}])".format(
            ", ".join(type(layer).__name__ for layer in self.layers))

    # ------------------------------------------------------------ online
    def random_view(self, images, seed=None):
        """One random view of a batch and the transformations drawn.

        Args:
            images: A batch of images.
            seed: A ``keras.random.SeedGenerator`` (what the distiller
                passes, so that the draw is part of its state on every
                backend), or ``None`` for the layers' own generators.

        Returns:
            ``(view, transformations)``: one entry per layer (``None`` for
            a callable).

        Example:
        >>> import numpy as np, keras
        >>> views = Views(keras.layers.RandomFlip("horizontal"))
        >>> view, _ = views.random_view(np.ones((2, 4, 4, 1), "float32"))
        >>> tuple(view.shape)
        (2, 4, 4, 1)
        """
        if self.layers is None:
            return self.fn(images), None
        transformations = []
        for layer in self.layers:
            transformation = layer.get_random_transformation(
                images, training=True, seed=seed)
            images = layer.transform_images(images, transformation,
                                            training=True)
            transformations.append(transformation)
        return images, transformations

    def mix_labels(self, labels, transformations):
        """Labels (one-hot or soft) mixed as the images of the view were.

        Example:
        >>> import numpy as np, keras
        >>> views = Views(keras.layers.MixUp(alpha=0.4, seed=1))
        >>> x = np.random.rand(4, 4, 4, 1).astype("float32")
        >>> _, t = views.random_view(x)
        >>> mixed = views.mix_labels(np.eye(3, dtype="float32")[[0, 1, 2, 0]], t)
        >>> bool(np.allclose(np.sum(np.asarray(mixed), -1), 1.0))
        True
        """
        if not self.mixes_labels or transformations is None:
            return labels
        for layer, transformation in zip(self.layers, transformations):
            if type(layer).__name__ in _MIXING:
                labels = layer.transform_labels(labels, transformation,
                                                training=True)
        return labels

    # ------------------------------------------------------ record/replay
    def check_replayable(self):
        """Raises a ValueError saying why these views cannot be cached.

        Example:
        >>> import keras
        >>> Views(keras.layers.MixUp()).check_replayable()
        Traceback (most recent call last):
        ...
        ValueError: Cached views (cache_teacher=True with an augmentation) ...
        """
        if self.replayable:
            return
        what = ("a callable" if self.layers is None
                else ", ".join(self.not_replayable))
        raise ValueError(
            "Cached views (cache_teacher=True with an augmentation) need "
            "layers whose random draw is per sample, so that each stored view "
            f"can be rebuilt: {', '.join(_REPLAYABLE)}. {what} cannot be "
            "replayed (a callable is opaque; MixUp/CutMix pair samples of a "
            "batch; RandAugment picks its operations per batch). Use those "
            "layers online (cache_teacher=False), or cache views of the "
            "per-sample layers only."
        )

    def record(self, images, seed):
        """A view drawn from an integer seed, and its per-sample parameters.

        The same ``seed`` gives the same view (a fresh
        ``keras.random.SeedGenerator(seed)`` drives the draw).

        Args:
            images: A batch of images.
            seed: An integer.

        Returns:
            ``(view, record)``: ``record`` holds, per layer, the
            transformation's per-sample entries as numpy arrays (first axis:
            the sample); `gather` picks samples from it and `replay`
            rebuilds their views.

        Example:
        >>> import numpy as np, keras
        >>> views = Views(keras.layers.RandomTranslation(0.2, 0.2))
        >>> x = np.random.rand(3, 8, 8, 1).astype("float32")
        >>> a, _ = views.record(x, 7); b, _ = views.record(x, 7)
        >>> bool(np.array_equal(np.asarray(a), np.asarray(b)))
        True
        """
        self.check_replayable()
        generator = keras.random.SeedGenerator(int(seed))
        batch = int(keras.ops.shape(images)[0])
        record = []
        for layer in self.layers:
            transformation = layer.get_random_transformation(
                images, training=True, seed=generator)
            images = layer.transform_images(images, transformation,
                                            training=True)
            record.append({
                key: keras.ops.convert_to_numpy(value)
                for key, value in transformation.items()
                if key not in _BATCH_ENTRIES and _per_sample(value, batch)
            })
        return images, record

    def replay(self, images, record):
        """Rebuilds the views whose parameters ``record`` holds (in keras.ops,
        so it also runs inside a compiled training step).

        Args:
            images: The clean images, one per row of ``record``.
            record: Per layer, the per-sample parameters (`record`'s, picked
                with `gather`, or a batch of them inside ``fit``).

        Returns:
            The views.

        Example:
        >>> import numpy as np, keras
        >>> views = Views(keras.layers.RandomFlip("horizontal"))
        >>> x = np.random.rand(2, 4, 4, 1).astype("float32")
        >>> view, record = views.record(x, 0)
        >>> bool(np.allclose(views.replay(x, record), view))
        True
        """
        shape = keras.ops.shape(images)
        for layer, entries in zip(self.layers, record):
            transformation = dict(entries)
            if type(layer).__name__ == "RandomRotation":
                transformation.update(image_height=shape[1],
                                      image_width=shape[2],
                                      batch_size=shape[0])
            else:
                transformation["input_shape"] = shape
            images = layer.transform_images(images, transformation,
                                            training=True)
        return images


def _per_sample(value, batch):
    shape = getattr(value, "shape", None)
    return shape is not None and len(shape) >= 1 and shape[0] == batch


def gather(record, index, axis=0):
    """The rows ``index`` of a record (numpy or keras.ops tensors).

    Example:
    >>> import numpy as np
    >>> gather([{"flips": np.array([1, 2, 3])}], [2, 0])[0]["flips"].tolist()
    [3, 1]
    """
    take = np.take if isinstance(index, (list, np.ndarray)) else keras.ops.take
    return [{key: take(value, index, axis=axis) for key, value in layer.items()}
            for layer in record]


# ------------------------------------------------------------- the cache
VIEW_OUTPUTS_KEY = "keras_distill_view_outputs"
VIEW_INDEX_KEY = "keras_distill_view_classes"
VIEW_RECORD_KEY = "keras_distill_view_record"
_TOPK_FILL = 1e4  # dropped classes sit this far below the smallest kept logit


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
    fill = ops.min(values, axis=-1, keepdims=True) - _TOPK_FILL
    return full + (1.0 - kept) * fill


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
    outputs = classes = None
    record = None
    for k in range(num_views):
        for j in range(batches):
            rows = slice(j * batch_size, min(n, (j + 1) * batch_size))
            view, rec = views.record(x[rows], view_seed(seed, k, j))
            out = np.asarray(teacher_fn(view), dtype="float32")
            if not np.all(np.isfinite(out)):
                raise ValueError(
                    "The teacher produced non-finite outputs (NaN or inf) on "
                    "augmented views: check the teacher and the augmentation's "
                    "value range.")
            if outputs is None:
                width = top_k or out.shape[-1]
                if top_k is not None and not 1 <= top_k < out.shape[-1]:
                    raise ValueError(
                        f"`top_k` must be between 1 and {out.shape[-1] - 1} "
                        f"(the teacher has {out.shape[-1]} outputs), got "
                        f"{top_k!r}; leave it None to keep them all.")
                num_classes = out.shape[-1]
                outputs = np.zeros((n, num_views, width), dtype)
                if top_k is not None:
                    classes = np.zeros((n, num_views, top_k), "int32")
                record = [{key: np.zeros((n, num_views) + v.shape[1:], v.dtype)
                           for key, v in layer.items()} for layer in rec]
            if top_k is not None:
                idx = np.argsort(-out, axis=-1)[:, :top_k]
                classes[rows, k] = idx
                out = np.take_along_axis(out, idx, axis=-1)
            outputs[rows, k] = out.astype(dtype)
            for stored, layer in zip(record, rec):
                for key, value in layer.items():
                    stored[key][rows, k] = value
            if progress is not None:
                progress.add(1)
    if not np.all(np.isfinite(outputs)):
        raise ValueError("The teacher's outputs overflow float16 on some "
                         "views; use cache_dtype='float32'.")
    return ViewCache(views, outputs, record, seed=seed, classes=classes,
                     num_classes=num_classes, dtype=dtype)
