"""Checks shared by the pruning modules: arguments, and models TFMOT can take."""

import numbers
import os
import warnings

from keras_distill import _compat, _introspect, _io


def check_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")


def check_fraction(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            0.0 <= value < 1.0):
        raise ValueError(f"`{name}` must be a number in [0, 1), got {value!r}.")


def check_targets(target_sparsity, layers):
    if isinstance(target_sparsity, dict):
        if layers is not None:
            raise ValueError(
                "Pass either `layers` or a dict `target_sparsity` (which names "
                "the layers itself), not both."
            )
        if not target_sparsity:
            raise ValueError("`target_sparsity` is an empty dict: nothing to prune.")
        for name, value in target_sparsity.items():
            check_fraction(value, f"target_sparsity[{name!r}]")
        return dict(target_sparsity)
    check_fraction(target_sparsity, "target_sparsity")
    return float(target_sparsity)


def check_m_by_n(m_by_n, target_sparsity):
    if m_by_n is None:
        return None
    if (not isinstance(m_by_n, (tuple, list)) or len(m_by_n) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                       for v in m_by_n)
            or not 0 < m_by_n[0] < m_by_n[1]):
        raise ValueError(
            "`sparsity_m_by_n` must be a pair (m, n) of integers with "
            f"0 < m < n, e.g. (2, 4), got {m_by_n!r}."
        )
    implied = m_by_n[0] / m_by_n[1]
    if not isinstance(target_sparsity, dict) and abs(target_sparsity - implied) > 1e-9 \
            and target_sparsity != 0.5:
        warnings.warn(
            f"sparsity_m_by_n={tuple(m_by_n)} sets the sparsity to "
            f"{implied:g}; target_sparsity={target_sparsity} is not used.",
            stacklevel=3)
    return tuple(int(v) for v in m_by_n)


def check_block_size(block_size):
    if (not isinstance(block_size, (tuple, list)) or len(block_size) != 2
            or not all(isinstance(v, numbers.Integral) and v >= 1 for v in block_size)):
        raise ValueError(
            f"`block_size` must be a pair of positive integers, got {block_size!r}."
        )
    return tuple(int(v) for v in block_size)


def check_ratios(ratios):
    try:
        ratios = [float(r) for r in ratios]
    except (TypeError, ValueError):
        raise ValueError(f"`ratios` must be numbers in (0, 1), got {ratios!r}.") from None
    if not ratios or not all(0.0 < r < 1.0 for r in ratios):
        raise ValueError(f"`ratios` must be numbers in (0, 1), got {ratios!r}.")
    return sorted(set(ratios))


def check_writable(path, argument):
    """Returns ``path`` (a str) if a file can be written there, else raises.

    The folder is created if missing; a file is created and removed in it
    to be sure (permissions, read-only disks), so a long computation does
    not end in a failed write.

    Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> check_writable(os.path.join(folder, "a", "s.json"), "path").endswith("s.json")
    True
    """
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"`{argument}` must be a file path (str or os.PathLike), "
                        f"got {type(path).__name__}.") from None
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"`{argument}`={path!r} is a directory: give a file name.")
    try:
        _io.probe_folder(folder)
    except OSError as error:
        raise ValueError(
            f"`{argument}`={path!r} cannot be written: its folder {folder} does "
            f"not accept new files ({error.strerror or error}). Choose a folder "
            "you can write to, or fix its permissions."
        ) from None
    return path


def check_built(model, argument, action):
    """Raises unless ``model`` is built (its weights exist).

    Example:
    >>> import keras
    >>> check_built(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]),
    ...             "student", "prune")
    """
    if not model.built:
        raise ValueError(
            f"`{argument}` ({model.name!r}) is not built, so it has no weights "
            f"to {action}: start it with an Input layer (`keras.Input(shape)`, "
            "or `input_shape=` on the first tf_keras layer), or call "
            "`model.build(input_shape)` (or the model on a batch) first."
        )


def reject_wrapped(model, action):
    """Raises if ``model`` already holds pruning or quantize wrappers."""
    classes = {type(m).__name__ for m in _introspect.iter_submodules(model)}
    if _introspect.PRUNING_WRAPPER in classes:
        raise ValueError(
            f"Model {model.name!r} is already pruned (it holds PruneLowMagnitude "
            "wrappers): train it, or `strip` it first and prune the result."
        )
    if classes & _introspect.QAT_CLASSES:
        raise ValueError(
            f"Model {model.name!r} is quantization-aware (it holds TFMOT "
            f"quantize wrappers): cannot {action} it. Prune the float model "
            "first, then quantize with keras_distill.quantization.quantize, "
            "which preserves the sparsity."
        )


def graph_model_or_raise(model, action):
    """Raises unless ``model`` is Sequential or Functional (what TFMOT wraps).

    Args:
        model: A Keras model.
        action: The verb for the message (``"prune"``, ``"quantize"``).

    Example:
    >>> import keras
    >>> graph_model_or_raise(keras.Sequential([keras.layers.Dense(2)]), "prune")
    """
    if _introspect.is_graph_model(model):
        return
    hint = ""
    if hasattr(model, "student") and hasattr(model, "teacher"):
        hint = (" It looks like a Distiller: pass its student "
                "(`distiller.student`), not the distiller.")
    raise ValueError(
        f"Cannot {action} model {model.name!r} ({type(model).__qualname__}): TFMOT "
        "only wraps Sequential and Functional models, not subclassed ones." + hint
        + " Build the student as a Sequential or Functional model of standard "
        "layers."
    )


def copy_tf_keras(model):
    """An independent copy (new layers, same weights) of a tf_keras model."""
    keras2 = _compat.keras_module(_compat.TF_KERAS)
    copy = keras2.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
