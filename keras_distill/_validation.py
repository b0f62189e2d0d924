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
ValueError: `temperature` must be a positive finite number, got 0. ...
"""

import math
import numbers
import re


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def check_temperature(value, argument):
    """A positive finite number (a softening temperature).

    Example:
    >>> check_temperature(4, "temperature")
    4.0
    """
    if not _is_number(value):
        raise TypeError(
            f"`{argument}` must be a positive finite number, got {value!r} "
            f"of type {type(value).__name__}."
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"`{argument}` must be a positive finite number, got {value!r}. "
            "Typical distillation temperatures are between 1 and 20."
        )
    return float(value)


def check_weight(value, argument):
    """A non-negative finite number (a loss weight).

    Example:
    >>> check_weight(0.5, "alpha")
    0.5
    """
    if not _is_number(value):
        raise TypeError(
            f"`{argument}` must be a non-negative finite number, got "
            f"{value!r} of type {type(value).__name__}."
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"`{argument}` must be a non-negative finite number, got {value!r}."
        )
    return float(value)


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
