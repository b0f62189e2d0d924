"""The first batch through the models, before ``fit``/``evaluate`` trains.

`_fit_checks.check_data` takes the first batch (up to
`_fit_checks.PROBE_ROWS` samples) of ``x`` and of ``validation_data``;
this module runs it through the student and the teacher, once per call,
eagerly and outside the compiled step. An input the models cannot take,
or outputs that are not what the distiller was told, found inside
``tf.function`` or ``jax.jit`` would surface as a deep trace or (on JAX)
as a NaN or a silently wrong number; here each is a ``ValueError`` naming
the model, the argument, the shapes and the fix:

- an unbuilt model is built for the batch (`build_symbolically`, then
  the call itself);
- a call that fails names the input shapes (`call_failed`), and
  ``teacher_input_fn`` when it is the one at fault;
- a teacher whose outputs are not finite is refused (a ``teacher_dtype``
  overflow is named);
- the outputs are checked against ``teacher_outputs`` /
  ``student_outputs`` (`check_output_kind`: ``"auto"`` turns into
  ``"probabilities"`` for rows that are probabilities, with a warning).

The probes leave no trace in the models: `unchanged` puts their
non-trainable variables (counters, BatchNorm statistics) back.

Example:
>>> import numpy as np
>>> probability_rows(np.array([[0.2, 0.8]])), probability_rows(np.ones((1, 2)))
(True, False)
"""

import contextlib
import re
import warnings

import keras
import numpy as np

from keras_distill import _compat
from keras_distill._arrays import leaves, map_arrays, shapes, to_numpy

# Rows of probabilities sum to 1 up to the rounding of a 16-bit model.
_SUM_TOLERANCE = 2e-2


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


def settle_output_kind(distiller, role, outputs):
    """`check_output_kind` on a model's first outputs; a requested
    ``"auto"`` may switch the distiller (and its objective) to
    ``"probabilities"``.

    Example:
    >>> import keras
    >>> from keras_distill import Distiller
    >>> net = lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> d = Distiller(net(), net())
    >>> d.compile(alpha=0.0)
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:  # "seems to end in a softmax"
    ...     warnings.simplefilter("always")
    ...     settle_output_kind(d, "teacher", np.array([[0.2, 0.8]]))
    >>> d.teacher_outputs, len(caught)
    ('probabilities', 1)
    """
    if not np.isfinite(outputs).all():
        return
    kind = getattr(distiller, f"{role}_outputs")
    checked = check_output_kind(
        outputs, kind, role, getattr(distiller._requested_outputs, role))
    if checked != kind:
        setattr(distiller, f"{role}_outputs", checked)
        setattr(distiller._objective, f"{role}_kind", checked)
