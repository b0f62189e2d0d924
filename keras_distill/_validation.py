"""Argument checks shared by the whole package.

Each check raises a ``TypeError`` or ``ValueError`` naming the offending
argument, what was wrong and how to fix it, and returns the value in its
canonical form (``float`` for numbers).

Example:
>>> check_weight(2, "weight")
2.0
>>> check_temperature(0, "temperature")
Traceback (most recent call last):
...
ValueError: `temperature` must be between 0.01 and 1000, got 0. ...
"""

import inspect
import math
import numbers
import re
import sys

# The temperatures accepted: T² and logits / T stay far inside float32's
# range (T = 1e20 overflows T², T = 1e-45 overflows logits / T, and a large
# T loses the loss in float32 rounding), and every published setting
# (T = 1 to 20, sharpening with T < 1) fits.
MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 1000.0


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def check_temperature(value, argument):
    """A softening temperature: a number in [`MIN_TEMPERATURE`,
    `MAX_TEMPERATURE`] = [0.01, 1000].

    Outside this range float32 breaks down: ``T**2`` overflows for
    T > 1.8e19, ``logits / T`` for tiny T, and for T > 1000 the softened
    distributions are so flat that the loss drowns in rounding.

    Example:
    >>> check_temperature(4, "temperature")
    4.0
    >>> check_temperature(1e20, "temperature")
    Traceback (most recent call last):
    ...
    ValueError: `temperature` must be between 0.01 and 1000, got 1e+20. ...
    """
    if not _is_number(value):
        raise TypeError(
            f"`{argument}` must be a number between {MIN_TEMPERATURE:g} and "
            f"{MAX_TEMPERATURE:g} (a Python float such as 4.0), got "
            f"{value!r} of type {type(value).__name__}."
        )
    if not (math.isfinite(value)
            and MIN_TEMPERATURE <= value <= MAX_TEMPERATURE):
        raise ValueError(
            f"`{argument}` must be between {MIN_TEMPERATURE:g} and "
            f"{MAX_TEMPERATURE:g}, got {value!r}. Outside this range float32 "
            "overflows or loses the loss in rounding; typical distillation "
            "temperatures are between 1 and 20."
        )
    return float(value)


def check_weight(value, argument):
    """A non-negative finite number (a loss weight).

    Example:
    >>> check_weight(0.5, "alpha")
    0.5
    """
    return float(_check_real(value, argument, "a non-negative finite number",
                             lambda v: v >= 0))


def check_some_weight(term, weights, paper):
    """Refuses a term whose weights are all 0 (it would always be 0).

    Args:
        term: The term's name, for the message.
        weights: ``{argument: (value, what it weighs)}``, values checked.
        paper: The paper's setting, e.g. ``"alpha=1, beta=8"``.

    Example:
    >>> check_some_weight("DIST", {"beta": (0.0, "the inter-class relation"),
    ...                            "gamma": (0.0, "the intra-class relation")},
    ...                   "beta=1, gamma=1")
    Traceback (most recent call last):
    ...
    ValueError: DIST with `beta`=0 and `gamma`=0 is always 0: ...
    """
    if any(value > 0 for value, _ in weights.values()):
        return
    zeros = " and ".join(f"`{name}`=0" for name in weights)
    options = " or ".join(f"{what} (`{name}`)"
                          for name, (_, what) in weights.items())
    raise ValueError(
        f"{term} with {zeros} is always 0: nothing would be distilled. Give "
        f"{options} a positive weight (the paper: {paper})."
    )


def _check_real(value, argument, wanted, valid, why=""):
    """``value`` if it is a finite real number (not a bool) that ``valid``
    accepts; else a ``TypeError`` / ``ValueError`` saying it must be
    ``wanted`` (and ``why``)."""
    if not _is_number(value):
        raise TypeError(
            f"`{argument}` must be {wanted}, got {value!r} of type "
            f"{type(value).__name__}."
        )
    if not (math.isfinite(value) and valid(value)):
        raise ValueError(f"`{argument}` must be {wanted}, got {value!r}{why}.")
    return value


def check_bool(value, argument):
    """``True`` or ``False``, nothing else.

    Example:
    >>> check_bool(True, "normalize")
    True
    """
    if not isinstance(value, bool):
        raise TypeError(
            f"`{argument}` must be True or False, got {value!r} of type "
            f"{type(value).__name__}."
        )
    return value


def check_alpha(alpha):
    """The Distiller's ``alpha``: the hard-label weight, in [0, 1].

    Example:
    >>> check_alpha(1)
    1.0
    """
    if not _is_number(alpha):
        raise TypeError(
            f"`alpha` must be a number in [0, 1], got {alpha!r} of type "
            f"{type(alpha).__name__}."
        )
    if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise ValueError(
            f"`alpha` must be in [0, 1], got {alpha!r}. `alpha` weighs the "
            "student (hard-label) loss and `1 - alpha` the distillation loss "
            "(keras.io semantics; MNN uses the opposite convention)."
        )
    return float(alpha)


def check_choice(value, choices, argument):
    """One of ``choices``.

    Example:
    >>> check_choice("mean", ("mean", "none"), "reduction")
    'mean'
    """
    if value not in choices:
        raise ValueError(
            f"`{argument}` must be one of {tuple(choices)}, got {value!r}."
        )
    return value


def check_layer_name(value, argument):
    """A layer name or a path into nested models (``"backbone/conv3"``).

    Example:
    >>> check_layer_name("backbone/conv3", "teacher_layer")
    'backbone/conv3'
    """
    if not isinstance(value, str) or not value or value.strip("/") != value:
        raise TypeError(
            f"`{argument}` must be a layer name (a non-empty string such as "
            f"'block2_conv', or a path into a nested model such as "
            f"'backbone/conv3'), got {value!r}."
        )
    return value


def identifier(text):
    """``text`` with every character outside ``[0-9A-Za-z_]`` made ``_``
    (names of logged terms, feature keys, adapter layers).

    Example:
    >>> identifier("backbone/conv3")
    'backbone_conv3'
    """
    return re.sub(r"[^0-9A-Za-z_]", "_", text)


def check_exponent(value, argument):
    """A finite number >= 1 (the exponent of an attention map).

    Example:
    >>> check_exponent(2, "p")
    2
    >>> check_exponent(0.5, "p")
    Traceback (most recent call last):
    ...
    ValueError: `p` must be a finite number >= 1, got 0.5 ...
    """
    return _check_real(
        value, argument, "a finite number >= 1", lambda v: v >= 1,
        " (|A|^p has an infinite gradient at 0 for p < 1; the paper uses "
        "p = 2)")


def check_callable(fn, argument, arguments, keywords=()):
    """A callable that accepts ``arguments`` positional arguments (and the
    keyword arguments ``keywords``), checked on its signature now rather
    than when the first batch calls it.

    Callables whose signature Python cannot read (some builtins) pass.

    Example:
    >>> fn = check_callable(lambda y_true, y_pred: 0.0, "student_loss_fn", 2)
    >>> check_callable(lambda y: y, "student_loss_fn", 2)
    Traceback (most recent call last):
    ...
    TypeError: `student_loss_fn` must accept 2 positional arguments, but it is <lambda>(y) ...
    """
    if not callable(fn):
        raise TypeError(
            f"`{argument}` must be callable, got {fn!r} of type "
            f"{type(fn).__name__}."
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn
    try:
        signature.bind(*([None] * arguments), **dict.fromkeys(keywords))
    except TypeError as error:
        names = ", ".join(f"{k}=..." for k in keywords)
        name = getattr(fn, "__qualname__", None) or type(fn).__name__
        raise TypeError(
            f"`{argument}` must accept {arguments} positional arguments"
            + (f" and the keyword arguments {names}" if keywords else "")
            + f", but it is {name}{signature} ({error})."
        ) from None
    return fn


def check_compile_flavour(flavour, optimizer, metrics):
    """Refuses an optimizer of the other Keras flavour, and Keras 3
    metrics for a ``tf_keras`` distiller (Keras's own errors, "Could not
    interpret optimizer identifier" or an ``AttributeError`` inside
    ``fit``, do not say why).

    Example:
    >>> import keras
    >>> check_compile_flavour("tf_keras", keras.optimizers.Adam(), None)
    Traceback (most recent call last):
    ...
    TypeError: `optimizer` is a Keras 3 optimizer, but the student is a tf_keras model...
    """
    from keras_distill import _compat

    names = {"keras": "Keras 3", "tf_keras": "tf_keras"}
    found = _compat.flavour_of_instance(optimizer, "optimizers", "Optimizer")
    if found is None and "tf_keras" in sys.modules:
        legacy = sys.modules["tf_keras"].optimizers.legacy.Optimizer
        found = _compat.TF_KERAS if isinstance(optimizer, legacy) else None
    if found is not None and found != flavour:
        raise TypeError(
            f"`optimizer` is a {names[found]} optimizer, but the student is a "
            f"{names[flavour]} model, and the distiller trains it with an "
            f"optimizer of its flavour: pass e.g. "
            f"{flavour}.optimizers.{type(optimizer).__name__}(...) "
            "or a name such as 'adam'."
        )
    if flavour != _compat.TF_KERAS:
        return
    pending = [metrics]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending += list(item.values())
        elif isinstance(item, (list, tuple)):
            pending += list(item)
        elif _compat.flavour_of_instance(item, "metrics", "Metric") == (
                _compat.KERAS3):
            raise TypeError(
                f"`metrics` holds the Keras 3 metric {item.name!r}, but the "
                "student is a tf_keras model: pass "
                f"tf_keras.metrics.{type(item).__name__}(...) or a name such "
                "as 'accuracy'."
            )


def check_teacher_not_trained(student, teacher):
    """Refuses a teacher whose weights are trainable weights of the student
    (a teacher used as a layer of the student): distilling would train the
    teacher along with the student, with no error.

    Example:
    >>> import keras
    >>> teacher = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> student = keras.Sequential([keras.Input((3,)), teacher])
    >>> check_teacher_not_trained(student, teacher)
    Traceback (most recent call last):
    ...
    ValueError: The teacher ... is a part of the student ...
    """
    if not (student.built and teacher.built):
        return  # an unbuilt tf_keras model has no weights to share yet
    trainable = {id(w) for w in student.trainable_weights}
    shared = [w for w in teacher.weights if id(w) in trainable]
    if shared:
        name = getattr(shared[0], "path", None) or shared[0].name
        raise ValueError(
            f"The teacher {teacher.name!r} is a part of the student "
            f"{student.name!r} and would be trained with it ({len(shared)} of "
            f"its weights, e.g. {name!r}, are trainable weights of the "
            "student). Freeze it inside the student (set `trainable = False` "
            "on that layer before compiling) or distil from a separate copy "
            "(keras.models.clone_model and set_weights)."
        )


def resolve_loss(keras_module, fn, argument):
    """A loss argument as a callable: ``None`` stays ``None``, a name is
    looked up in ``keras_module.losses``, anything else must be callable.

    Example:
    >>> import keras
    >>> type(resolve_loss(keras, "mse", "student_loss_fn")).__name__
    'function'
    >>> resolve_loss(keras, "no_such_loss", "student_loss_fn")
    Traceback (most recent call last):
    ...
    ValueError: `student_loss_fn`='no_such_loss' is not a Keras loss name. ...
    """
    if fn is None:
        return None
    if isinstance(fn, str):
        try:
            return keras_module.losses.get(fn)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"`{argument}`={fn!r} is not a Keras loss name. Pass a "
                "loss instance such as keras.losses."
                "SparseCategoricalCrossentropy(from_logits=True)."
            ) from error
    if not callable(fn):
        raise TypeError(
            f"`{argument}` must be a callable `fn(y_true, y_pred)` or a "
            f"Keras loss, got {type(fn).__name__}."
        )
    return fn
