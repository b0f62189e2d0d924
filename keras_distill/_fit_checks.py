"""The checks ``fit`` and ``evaluate`` make before Keras runs a step.

A bad input found inside the compiled step surfaces as a deep TensorFlow
trace, or (on JAX) as a NaN or a silently wrong number. So the distillers
look at the arguments and the data first, eagerly, outside any compiled
function (safe under ``jax.jit`` and XLA), once per call. This module is
where they start (`check_data`, `check_validation`, and the argument
checks ``fit`` calls) and holds the checks of what was passed:

- the arguments: ``batch_size``, ``epochs`` (and ``initial_epoch``);
- the kind of data: under a multi-process ``keras.distribution`` that
  shards the data, a ``tf.data.Dataset`` (`_distribute.check_data`);
- the data: ``x`` missing or without samples, ``x``/``y``/
  ``sample_weight`` of different lengths, NaN or inf in ``x`` or ``y``;
- the labels of the first batch (up to `PROBE_ROWS` samples, of ``x`` and
  of ``validation_data``): class labels outside the student's classes,
  labels ``student_loss_fn`` cannot compare with the student's outputs
  (one-hot rows for a sparse loss);
- the models as given: teacher and student input widths no ``x`` fits
  (at construction), a student with no trainable or non-finite weights
  (before training).

Running the first batch through the models (which builds unbuilt ones,
checks input shapes, finite teacher outputs and output kinds) is
`_probes`; reading the data as numpy is `_arrays`.

Each raises a ``ValueError``/``TypeError`` naming the argument, what is
wrong and how to fix it.

Example:
>>> import numpy as np
>>> x, y, _ = first_batch(np.zeros((40, 3)), np.arange(40), rows=4)
>>> x.shape, y.tolist()
((4, 3), [0, 1, 2, 3])
"""

import numbers
import sys
import types

import keras
import numpy as np

from keras_distill import _distribute
from keras_distill._arrays import (in_memory, leaves, map_arrays, samples,
                                   shapes, to_numpy)
from keras_distill._probes import (input_shape, probe_student, probe_teacher,
                                   settle_output_kind, short)

PROBE_ROWS = 16


# ---------------------------------------------------------- arguments
# Keras's positional order after (x, y).
_POSITIONAL = {
    "fit": ("batch_size", "epochs", "verbose", "callbacks",
            "validation_split", "validation_data", "shuffle", "class_weight",
            "sample_weight", "initial_epoch", "steps_per_epoch",
            "validation_steps", "validation_batch_size", "validation_freq"),
    "evaluate": ("batch_size", "verbose", "sample_weight", "steps",
                 "callbacks"),
}


def bind(args, kwargs, method):
    """Keras's positional arguments of ``method`` after ``(x, y)`` as
    keywords.

    Example:
    >>> bind((32, 3), {"verbose": 0}, "fit")
    {'verbose': 0, 'batch_size': 32, 'epochs': 3}
    """
    names = _POSITIONAL[method]
    if len(args) > len(names):
        raise TypeError(f"{method}() takes at most {len(names) + 2} "
                        f"positional arguments, got {len(args) + 2}")
    kwargs = dict(kwargs)
    for name, value in zip(names, args):
        if name in kwargs:
            raise TypeError(f"{method}() got multiple values for `{name}`")
        kwargs[name] = value
    return kwargs


def check_positive_int(value, argument, allow_none=True):
    """A positive int (or ``None``), for ``batch_size``, ``epochs``.

    Example:
    >>> check_positive_int(0, "batch_size")
    Traceback (most recent call last):
    ...
    ValueError: `batch_size` must be a positive integer, got 0.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{argument}` must be a positive integer, got {value!r} of type "
            f"{type(value).__name__}."
        )
    if value < 1:
        raise ValueError(f"`{argument}` must be a positive integer, got {value}.")
    return int(value)


def check_fit_arguments(kwargs):
    """``batch_size`` and ``epochs`` of a ``fit`` call (Keras 3 silently
    trains nothing with ``epochs=0`` and takes ``batch_size=0``).

    Example:
    >>> check_fit_arguments({"epochs": 2, "initial_epoch": 2})
    Traceback (most recent call last):
    ...
    ValueError: `epochs`=2 is not above `initial_epoch`=2, ...
    """
    check_positive_int(kwargs.get("batch_size"), "batch_size")
    epochs = check_positive_int(kwargs.get("epochs", 1), "epochs", False)
    initial = kwargs.get("initial_epoch", 0) or 0
    if epochs <= initial:
        raise ValueError(
            f"`epochs`={epochs} is not above `initial_epoch`={initial}, so "
            "fit would train nothing: `epochs` is the index of the last "
            "epoch, not a count after initial_epoch. Pass epochs="
            f"{initial + 1} or more."
        )


# ----------------------------------------------------------------- data
def _unpack(batch):
    if isinstance(batch, (list, tuple)) and 1 <= len(batch) <= 3:
        return tuple(batch) + (None,) * (3 - len(batch))
    return batch, None, None


def _empty(argument):
    return ValueError(
        f"`{argument}` has no samples: there is nothing to train on or "
        "evaluate. Check how the data was loaded or split (an empty "
        "array, a filter that kept nothing, a split of 0)."
    )


def first_batch(x, y=None, sample_weight=None, argument="x",
                rows=PROBE_ROWS):
    """The first ``rows`` samples of the data as numpy ``(x, y, weights)``.

    Arrays are sliced; a ``tf.data.Dataset`` gives its first element and a
    ``PyDataset`` / ``Sequence`` its first batch. Anything else (an
    iterator; `check_data` peeks at generators itself): ``None``.

    Raises:
        ValueError: ``x`` is ``None`` or has no samples.

    Example:
    >>> first_batch(np.zeros((0, 3)))
    Traceback (most recent call last):
    ...
    ValueError: `x` has no samples: ...
    """
    if x is None:
        raise ValueError(
            f"`{argument}` is None: pass the inputs (arrays, a tf.data "
            "dataset or a PyDataset)."
        )
    if in_memory(x) is not None:
        if samples(leaves(x)[0]) == 0:
            raise _empty(argument)

        def head(array):
            if isinstance(array, (list, tuple)):
                array = np.asarray(array)
            return to_numpy(array[:rows])  # slice first: no full copy

        return tuple(map_arrays(head, v) for v in (x, y, sample_weight))
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(x, tf.data.Dataset):
        for element in x.take(1):
            return _as_numpy(_unpack(element))
        raise _empty(argument)
    tf_keras = sys.modules.get("tf_keras")
    if isinstance(x, keras.utils.PyDataset) or (
            tf_keras is not None and isinstance(x, tf_keras.utils.Sequence)):
        if len(x) == 0:
            raise _empty(argument)
        return _as_numpy(_unpack(x[0]))
    return None


def _as_numpy(batch):
    return tuple(map_arrays(to_numpy, v) for v in batch)


def check_lengths(x, y, sample_weight, names=("x", "y", "sample_weight")):
    """In-memory ``x``, ``y`` and ``sample_weight`` of one length (checked
    before the teacher runs over ``x`` for a cache).

    Example:
    >>> check_lengths(np.zeros((4, 2)), np.zeros(3), None)
    Traceback (most recent call last):
    ...
    ValueError: `y` has 3 samples but `x` has 4: ...
    """
    found = in_memory(x)
    if found is None:
        return
    n = samples(found[0])
    for value, name in zip((x, y, sample_weight), names):
        for leaf in in_memory(value) or []:
            if samples(leaf) != n:
                raise ValueError(
                    f"`{name}` has {samples(leaf)} samples but `{names[0]}` "
                    f"has {n}: give one entry per input sample (in the same "
                    "order)."
                )


def check_finite(value, argument):
    """No NaN or infinity in in-memory float data (a NaN input gives a NaN
    loss on JAX and a silently wrong one through a ReLU on TensorFlow).

    Example:
    >>> check_finite(np.array([[1.0, np.nan]]), "x")
    Traceback (most recent call last):
    ...
    ValueError: `x` contains NaN or infinite values (the first in sample 0). ...
    """
    for leaf in in_memory(value) or []:
        array = np.asarray(leaf)
        if not np.issubdtype(array.dtype, np.floating):
            continue
        bad = ~np.isfinite(array)
        if bad.any():
            first = int(np.argmax(bad.reshape(len(bad), -1).any(axis=1))
                        ) if array.ndim else 0
            raise ValueError(
                f"`{argument}` contains NaN or infinite values (the first in "
                f"sample {first}). Clean the data (drop those samples, or "
                "np.nan_to_num) before fit/evaluate."
            )


def sparse_labels(y, outputs):
    """``y`` as class indices when it has that form against ``outputs``
    (one class axis fewer, or a trailing 1), else ``None``.

    Example:
    >>> sparse_labels(np.array([0, 2]), np.zeros((2, 3))).tolist()
    [0, 2]
    >>> sparse_labels(np.eye(3), np.zeros((3, 3))) is None
    True
    """
    if y is None or len(leaves(y)) != 1:
        return None
    labels = np.asarray(leaves(y)[0])
    if labels.ndim == outputs.ndim and labels.shape[-1:] == (1,):
        labels = labels[..., 0]
    if labels.ndim != outputs.ndim - 1 or labels.dtype.kind not in "iuf":
        return None
    if labels.dtype.kind == "f" and not np.array_equal(labels,
                                                       np.round(labels)):
        return None
    return labels


def check_label_range(labels, classes, ignore=None, argument="y"):
    """Class indices in ``[0, classes)`` (on JAX an index outside gives a
    silently wrong loss; on TensorFlow a deep InvalidArgumentError).

    Example:
    >>> check_label_range(np.array([0, 3]), 3)
    Traceback (most recent call last):
    ...
    ValueError: `y` holds class indices from 0 to 3, but the student has 3 outputs ...
    """
    if labels is None or labels.size == 0:
        return
    values = labels if ignore is None else labels[labels != ignore]
    if values.size and (values.min() < 0 or values.max() >= classes):
        raise ValueError(
            f"`y` holds class indices from {values.min():g} to "
            f"{values.max():g}, but the student has {classes} outputs "
            f"(classes 0 to {classes - 1}). Check that the labels and the "
            "model's output units describe the same classes (labels counted "
            "from 0)."
        )


# ------------------------------------------------------- models as given
def check_input_widths(teacher, student):
    """At construction: teacher and student can take the same ``x``.

    Example:
    >>> import keras
    >>> net = lambda n: keras.Sequential([keras.Input((n,)), keras.layers.Dense(2)])
    >>> check_input_widths(net(8), net(5))
    Traceback (most recent call last):
    ...
    ValueError: The teacher takes inputs of shape (None, 8) and the student (None, 5): ...
    """
    t, s = input_shape(teacher), input_shape(student)
    if (t is None or s is None or len(t) != len(s) or t[-1] is None
            or s[-1] is None or t[-1] == s[-1]):
        return
    raise ValueError(
        f"The teacher takes inputs of shape {t} and the student {s}: both "
        "are called on the same `x`, so no input fits both. Build them for "
        "the same input shape, or use FeatureDistiller's `teacher_input_fn` "
        "to map x to the teacher's input."
    )


def check_student(student):
    """Before training: a student that can train, with finite weights.

    Example:
    >>> import keras
    >>> net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> net.trainable = False
    >>> check_student(net)
    Traceback (most recent call last):
    ...
    ValueError: `student` has no trainable weights ...
    """
    if not student.built:
        return
    if not student.trainable or not student.trainable_weights:
        raise ValueError(
            "`student` has no trainable weights (student.trainable is False, "
            "or every layer is frozen), so fit would not change it. Set "
            "`student.trainable = True` (or unfreeze the layers to train) "
            "before fit."
        )
    bad = [w.name for w in student.weights
           if not np.isfinite(to_numpy(w)).all()]
    if bad:
        raise ValueError(
            f"`student` has NaN or infinite weights before training "
            f"({', '.join(bad[:3])}): training cannot recover them. "
            "Re-initialise the student or load good weights."
        )


# -------------------------------------------------- the first batch
def _replay(first, rest):
    yield first
    yield from rest


def check_data(distiller, x, y, sample_weight, training, argument="x"):
    """The data checks, then the first batch through the models: their
    input shapes, output kinds, the labels against the student's classes
    and ``student_loss_fn``.

    Returns:
        ``x``; a generator's first batch is taken for the checks, so a
        generator is returned in its place that yields it first, then the
        rest.

    Example:
    >>> import keras
    >>> from keras_distill import Distiller
    >>> net = lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> d = Distiller(net(), net())
    >>> d.compile(alpha=1.0, student_loss_fn="sparse_categorical_crossentropy")
    >>> check_data(d, np.zeros((4, 3)), np.array([0, 1, 2, 1]), None, True)
    Traceback (most recent call last):
    ...
    ValueError: `y` holds class indices from 0 to 2, but the student has 2 outputs ...
    """
    names = ((argument, "y", "sample_weight") if argument == "x"
             else (argument,) * 3)
    _distribute.check_data(x, argument)
    check_lengths(x, y, sample_weight, names)
    check_finite(x, names[0])
    check_finite(y, names[1])
    if isinstance(x, types.GeneratorType):
        try:
            first = next(x)
        except StopIteration:
            raise _empty(argument) from None
        x = _replay(first, x)
        batch = _as_numpy(_unpack(first))
    else:
        batch = first_batch(x, y, sample_weight, argument)
    if batch is not None:  # None: an iterator (Keras's own errors)
        _check_batch(distiller, *batch[:2], y, training, argument, names)
    return x


def _check_batch(distiller, first_x, first_y, y, training, argument, names):
    check_finite(first_x, names[0])
    check_finite(first_y, names[1])
    student = probe_student(distiller, first_x, argument)
    if not distiller.built and distiller.student.built and (
            distiller.teacher.built):
        distiller.built = True
    objective = distiller._objective
    labelled = first_y is not None
    if training or not labelled or objective.student_loss_fn is None:
        teacher, _ = probe_teacher(distiller, first_x, argument)
        settle_output_kind(distiller, "teacher", teacher)
    settle_output_kind(distiller, "student", student)
    if not labelled:
        return
    whole = in_memory(y) is not None
    check_label_range(
        sparse_labels(y if whole else first_y, student), student.shape[-1],
        getattr(objective.student_loss_fn, "ignore_class", None), names[1])
    if objective.uses_student_loss:
        try:
            objective.student_term(first_y, student)
        except Exception as error:  # noqa: BLE001 - named in the message
            if "`student_loss_fn`" in str(error):
                raise  # already says what is wrong with it
            raise ValueError(
                f"`student_loss_fn` cannot compare the labels of "
                f"`{names[1]}` (shape {shapes(first_y)}) with the student's "
                f"outputs (shape {student.shape}) on the first batch: "
                f"{short(error)} Integer class labels need a sparse loss "
                "(keras.losses.SparseCategoricalCrossentropy), one-hot rows "
                "a categorical one (keras.losses.CategoricalCrossentropy)."
            ) from error


def check_validation(distiller, validation_data):
    """``fit``'s ``validation_data``, checked as ``evaluate``'s data
    before the first epoch (not after it); returned as `check_data` returns
    its ``x``.

    Example:
    >>> check_validation(None, None)
    """
    if validation_data is None:
        return None
    parts = validation_data
    if not isinstance(parts, (list, tuple)):
        parts = (parts,)
    if not 1 <= len(parts) <= 3:
        raise ValueError(
            "`validation_data` must be (x_val, y_val), (x_val, y_val, "
            "sample_weight_val) or a dataset, got a "
            f"{type(validation_data).__name__} of {len(parts)} items."
        )
    x, y, weights = tuple(parts) + (None,) * (3 - len(parts))
    checked = check_data(distiller, x, y, weights, training=False,
                         argument="validation_data")
    if checked is x:
        return validation_data
    return checked if len(parts) == 1 else (checked,) + tuple(parts[1:])
