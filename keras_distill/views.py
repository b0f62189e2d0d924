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
        return self._draw(images, seed)

    def _draw(self, images, seed):
        """Each layer draws its transformation and applies it, in order."""
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
        batch = int(keras.ops.shape(images)[0])
        images, transformations = self._draw(
            images, keras.random.SeedGenerator(int(seed)))
        return images, [{
            key: keras.ops.convert_to_numpy(value)
            for key, value in transformation.items()
            if key not in _BATCH_ENTRIES and _per_sample(value, batch)
        } for transformation in transformations]

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


def soft_label_loss(fn, k):
    """The student loss for mixed (soft) labels: a sparse cross-entropy
    becomes the categorical one with the same ``from_logits``.

    Args:
        fn: The compiled ``student_loss_fn``.
        k: The Keras module of the student's flavour.

    Example:
    >>> import keras
    >>> loss = soft_label_loss(keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True), keras)
    >>> type(loss).__name__, loss.from_logits
    ('CategoricalCrossentropy', True)
    """
    if isinstance(fn, str) and fn in ("sparse_categorical_crossentropy",
                                      "categorical_crossentropy"):
        return k.losses.CategoricalCrossentropy()
    name = type(fn).__name__
    if name == "CategoricalCrossentropy":
        return fn
    if name == "SparseCategoricalCrossentropy":
        from_logits = fn.get_config().get("from_logits", False)
        return k.losses.CategoricalCrossentropy(from_logits=from_logits)
    raise ValueError(
        "The augmentation mixes labels (MixUp/CutMix), so the hard-label "
        "loss receives soft labels: `student_loss_fn` must be a "
        "(Sparse)CategoricalCrossentropy (a sparse one is swapped for the "
        f"categorical one on mixed labels), got {name}. Pass one, or use an "
        "augmentation that does not mix labels."
    )


def one_hot_labels(y, num_classes):
    """Integer class ids (``(batch,)`` or ``(batch, 1)``) as one-hot rows;
    rows that are already ``num_classes`` wide pass through.

    Example:
    >>> import numpy as np
    >>> np.asarray(one_hot_labels(np.array([2, 0]), 3)).tolist()
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    shape = keras.ops.shape(y)
    if len(shape) == 2 and shape[-1] == num_classes and num_classes > 1:
        return keras.ops.cast(y, "float32")
    ids = keras.ops.cast(keras.ops.reshape(y, (-1,)), "int32")
    return keras.ops.one_hot(ids, num_classes)
