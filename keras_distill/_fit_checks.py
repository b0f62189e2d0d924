"""The checks ``fit`` and ``evaluate`` make before Keras runs a step.

A bad input found inside the compiled step surfaces as a deep TensorFlow
trace, or (on JAX) as a NaN or a silently wrong number. So the distillers
look at the data first, eagerly, outside any compiled function (safe under
``jax.jit`` and XLA), once per call:

- the arguments: ``batch_size``, ``epochs`` (and ``initial_epoch``);
- the data: ``x`` missing or without samples, ``x``/``y``/
  ``sample_weight`` of different lengths, NaN or inf in ``x`` or ``y``;
- the first batch (up to `PROBE_ROWS` samples, of ``x`` and of
  ``validation_data``) through both models, which builds unbuilt ones: an
  input shape that fits neither (named, with ``teacher_input_fn``), a
  teacher whose outputs are not finite (a ``teacher_dtype`` overflow is
  named), outputs that are not of the kind ``teacher_outputs`` /
  ``student_outputs`` say (``"auto"`` turns into ``"probabilities"`` for
  rows that are probabilities, with a warning), class labels outside the
  student's classes, labels ``student_loss_fn`` cannot compare with the
  student's outputs (one-hot rows for a sparse loss);
- before training: a student with no trainable or non-finite weights.

Each raises a ``ValueError``/``TypeError`` naming the argument, what is
wrong and how to fix it. The probes leave no trace in the models (their
non-trainable variables are put back).

Example:
>>> import numpy as np
>>> x, y, _ = first_batch(np.zeros((40, 3)), np.arange(40), rows=4)
>>> x.shape, y.tolist()
((4, 3), [0, 1, 2, 3])
"""

import contextlib
import numbers
import re
import sys
import types
import warnings

import keras
import numpy as np

from keras_distill import _compat

PROBE_ROWS = 16
# Rows of probabilities sum to 1 up to the rounding of a 16-bit model.
_SUM_TOLERANCE = 2e-2


# --------------------------------------------------------------- arrays
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
    if isinstance(value, (dict, list, tuple)) and _in_memory(value):
        value = leaves(value)[0]
    return _samples(value)


def _samples(value):
    shape = getattr(value, "shape", None)
    if shape is None:
        return len(value)
    return int(shape[0]) if len(shape) else 1


def _in_memory(value):
    """``value`` as arrays (nested), or ``None`` when it is not arrays."""
    found = leaves(value)
    if not found:
        return None
    if all(is_array(v) or isinstance(v, (list, tuple)) for v in found):
        return found
    return None


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
    if _in_memory(x) is not None:
        if _samples(leaves(x)[0]) == 0:
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
    found = _in_memory(x)
    if found is None:
        return
    n = _samples(found[0])
    for value, name in zip((x, y, sample_weight), names):
        for leaf in _in_memory(value) or []:
            if _samples(leaf) != n:
                raise ValueError(
                    f"`{name}` has {_samples(leaf)} samples but `{names[0]}` "
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
    for leaf in _in_memory(value) or []:
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


# ------------------------------------------------------- output kinds
def probability_rows(outputs):
    """Whether every row of ``outputs`` is in [0, 1] and sums to 1.

    Example:
    >>> probability_rows(np.array([[0.2, 0.8]])), probability_rows(np.ones((1, 2)))
    (True, False)
    """
    outputs = np.asarray(outputs, np.float64)
    if outputs.ndim < 2 or outputs.shape[-1] < 2 or outputs.size == 0:
        return None
    if not np.isfinite(outputs).all():
        return False
    sums = outputs.sum(axis=-1)
    return bool(outputs.min() >= -1e-6 and outputs.max() <= 1 + 1e-6
                and np.abs(sums - 1).max() <= _SUM_TOLERANCE)


def check_output_kind(outputs, kind, role, requested):
    """The kind to use for a model's outputs, checked on real outputs.

    ``"probabilities"`` on rows that are not probabilities raises (the
    softening would be of ``log`` of numbers that are no probabilities);
    ``"logits"`` on rows that are probabilities warns, and a ``requested``
    ``"auto"`` switches to ``"probabilities"``.

    Returns:
        ``"logits"`` or ``"probabilities"``.

    Example:
    >>> check_output_kind(np.array([[3.0, -1.0]]), "probabilities",
    ...                   "teacher", "probabilities")
    Traceback (most recent call last):
    ...
    ValueError: `teacher_outputs`='probabilities', but the teacher's outputs ...
    """
    is_probability = probability_rows(outputs)
    if is_probability is None:
        return kind
    argument = f"{role}_outputs"
    if kind == "probabilities" and not is_probability:
        outputs = np.asarray(outputs, np.float64)
        said = ("'auto' (a final softmax was seen)" if requested == "auto"
                else "'probabilities'")
        raise ValueError(
            f"`{argument}`={said}, but the {role}'s outputs on the "
            "first batch are not probabilities (rows in [0, 1] summing to 1): "
            f"values from {outputs.min():.3g} to {outputs.max():.3g}, row sums "
            f"up to {np.abs(outputs.sum(-1)).max():.3g}. Pass "
            f"{argument}='logits' for a model without a final softmax (or "
            "'auto')."
        )
    if kind == "logits" and is_probability:
        switch = requested == "auto"
        warnings.warn(
            f"keras_distill: the {role}'s outputs on the first batch are "
            "probabilities (every row in [0, 1] and summing to 1), so the "
            f"{role} seems to end in a softmax that was not recognised. "
            + ("They are now taken as probabilities. " if switch else
               f"They are taken as logits because `{argument}`='logits' was "
               "given, which softens probabilities as if they were logits. ")
            + f"Pass {argument}='probabilities' to say so"
            + (" and silence this warning." if switch else ".")
            + (" The student loss receives the raw outputs: use a loss with "
               "from_logits=False." if role == "student" else ""),
            UserWarning,
            stacklevel=4,
        )
        if switch:
            return "probabilities"
    return kind


# ------------------------------------------------------------ models
def input_shape(model):
    """The static shape of a model's single input, or ``None``.

    Example:
    >>> import keras
    >>> input_shape(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    (None, 3)
    """
    try:
        (tensor,) = model.inputs
    except (AttributeError, TypeError, ValueError):  # unbuilt, several inputs
        return None
    shape = tensor.shape
    return tuple(shape.as_list()) if hasattr(shape, "as_list") else tuple(shape)


def shapes(value):
    """The shapes of a nested structure's arrays, for messages.

    Example:
    >>> shapes({"a": np.zeros((2, 3))})
    "{'a': (2, 3)}"
    """
    return str(map_arrays(lambda a: tuple(np.shape(a)), value))


def short(error):
    """The informative lines of a Keras error, without its frame.

    Example:
    >>> short(ValueError("Exception encountered when calling X.\\n\\nbad input"
    ...                  "\\n\\nArguments received by X.call():\\n  x"))
    'bad input.'
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    text = text.split("Arguments received", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()
             and not line.strip().startswith("Exception encountered")]
    text = " ".join(lines)[:400] or type(error).__name__
    return text if text.endswith(".") else text + "."


def call_failed(model, role, x, argument, error, via=False):
    """The ``ValueError`` for a model that cannot be called on the data.

    Example:
    >>> import keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> call_failed(m, "student", np.zeros((1, 4)), "x", ValueError("bad"))
    ValueError("The student cannot be called on the first batch of `x` ...
    """
    given = (f"`teacher_input_fn`'s output for the first batch of "
             f"`{argument}`" if via else f"the first batch of `{argument}`")
    fix = (f"Give `{argument}` the {role}'s input shape"
           + (", or make `teacher_input_fn` return it." if via else "."))
    if role == "teacher" and not via and argument == "x":
        fix += (" A teacher that takes other inputs than the student needs "
                "FeatureDistiller's `teacher_input_fn`.")
    return ValueError(
        f"The {role} cannot be called on {given} (shape {shapes(x)}): "
        f"{short(error)} The {role} expects inputs of shape "
        f"{input_shape(model) or 'unknown'}. {fix}"
    )


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


def build_symbolically(model, x):
    """Builds an unbuilt model for inputs like ``x`` without running it
    (a real call would also run its state updates).

    Example:
    >>> import keras
    >>> net = keras.Sequential([keras.layers.Dense(2)])
    >>> build_symbolically(net, np.zeros((4, 3)))
    >>> net.built
    True
    """
    if model.built:
        return
    shape = lambda a: (None,) + tuple(np.shape(a)[1:])  # noqa: E731
    try:
        if _compat.flavour_of(model) == _compat.KERAS3:
            model(map_arrays(lambda a: keras.KerasTensor(
                shape(a), dtype=str(np.asarray(a).dtype)), x))
        else:
            model.build(map_arrays(shape, x))
    except Exception:  # noqa: BLE001 - the real call builds it and reports
        pass


@contextlib.contextmanager
def unchanged(x, *models):
    """Puts the models' non-trainable variables (counters, statistics)
    back as they were: a probe on ``x`` leaves no trace in the models
    (an unbuilt model is first built symbolically).

    Example:
    >>> import keras
    >>> bn = keras.Sequential([keras.Input((2,)), keras.layers.BatchNormalization()])
    >>> with unchanged(np.ones((4, 2)), bn):
    ...     _ = bn(np.ones((4, 2)), training=True)
    >>> to_numpy(bn.layers[0].moving_mean).tolist()
    [0.0, 0.0]
    """
    kept, seen = [], set()
    for model in models:
        if model is None:
            continue
        build_symbolically(model, x)
        if not model.built:
            continue
        for variable in model.non_trainable_weights:
            if id(variable) not in seen:
                seen.add(id(variable))
                kept.append((variable, to_numpy(variable).copy()))
    try:
        yield
    finally:
        for variable, value in kept:
            variable.assign(value)


def probe_student(distiller, x, argument):
    """The student's outputs on a batch, as numpy (building it on the batch
    if it was not built).

    Example:
    >>> import keras
    >>> from keras_distill import Distiller
    >>> net = lambda: keras.Sequential([keras.layers.Dense(2)])  # unbuilt
    >>> d = Distiller(net(), net())
    >>> probe_student(d, np.zeros((1, 3), "float32"), "x").shape, d.student.built
    ((1, 2), True)
    """
    with unchanged(x, distiller.student):
        try:
            out, _ = distiller._student_forward(x, training=False)
        except Exception as error:  # noqa: BLE001 - named in the message
            raise call_failed(distiller.student, "student", x, argument,
                              error) from error
    return to_numpy(out)


def probe_teacher(distiller, x, argument):
    """The teacher's ``(outputs, features)`` on a batch, as numpy; its
    input mapping named when it fails; non-finite outputs refused.

    Example:
    >>> import keras
    >>> from keras_distill import Distiller
    >>> net = lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> out, features = probe_teacher(Distiller(net(), net()), np.zeros((1, 3)), "x")
    >>> out.shape, features
    ((1, 2), {})
    """
    fn = getattr(distiller, "teacher_input_fn", None)
    teacher_x = x
    if fn is not None:
        try:
            teacher_x = fn(x)
        except Exception as error:  # noqa: BLE001 - named in the message
            raise ValueError(
                f"`teacher_input_fn` failed on the first batch of "
                f"`{argument}` (shape {shapes(x)}): {short(error)}"
            ) from error
    with unchanged(teacher_x, distiller.teacher,
                   distiller._inference_teacher.model):
        try:
            out, features = distiller._teacher_forward(x)
        except Exception as error:  # noqa: BLE001 - named in the message
            raise call_failed(distiller.teacher, "teacher", teacher_x,
                              argument, error, via=fn is not None) from error
    out = to_numpy(out)
    if not np.isfinite(out).all():
        _non_finite_teacher(distiller, x, argument)
    return out, {key: to_numpy(value) for key, value in features.items()}


def _non_finite_teacher(distiller, x, argument):
    dtype = distiller.teacher_dtype
    if dtype is not None:
        with unchanged(x, distiller.teacher):
            full = to_numpy(leaves(distiller.teacher(x, training=False))[0])
        if np.isfinite(full).all():
            raise ValueError(
                f"`teacher_dtype`={dtype!r}: the teacher's outputs overflow "
                f"{dtype} on the first batch of `{argument}` (NaN or inf, "
                f"where in float32 they reach {np.abs(full).max():.3g}; "
                "float16 holds up to 65504). Use teacher_dtype='bfloat16' "
                "(float32's range) or None (float32)."
            )
    raise ValueError(
        f"The teacher's outputs on the first batch of `{argument}` are NaN "
        "or infinite: the teacher is broken (NaN weights?) or overflows on "
        "these inputs. Check the `teacher` on its own (teacher.predict) "
        "before distilling from it."
    )


def _check_kind(distiller, role, outputs):
    """`check_output_kind` on a model's outputs; ``auto`` may switch."""
    if not np.isfinite(outputs).all():
        return
    kind = getattr(distiller, f"{role}_outputs")
    checked = check_output_kind(
        outputs, kind, role, getattr(distiller._requested_outputs, role))
    if checked != kind:
        setattr(distiller, f"{role}_outputs", checked)
        setattr(distiller._objective, f"{role}_kind", checked)


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
        _check_kind(distiller, "teacher", teacher)
    _check_kind(distiller, "student", student)
    if not labelled:
        return
    in_memory = _in_memory(y) is not None
    check_label_range(
        sparse_labels(y if in_memory else first_y, student), student.shape[-1],
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
