"""What a distiller needs of its models' outputs and of a teacher copy.

`single_tensor` takes the one output of a single-output model;
`resolve_output_kind` says whether a model gives ``logits`` or
``probabilities`` (``"auto"`` inspects its last layers, see
`keras_distill._compat.ends_in_softmax`); `_low_precision_copy` makes the
teacher copy ``teacher_dtype`` runs (nested models included), leaving the
user's teacher untouched.

Example:
>>> single_tensor([1.0], "student")
1.0
"""

import keras

from keras_distill import _compat

_OUTPUT_KINDS = ("auto", "logits", "probabilities")


def single_tensor(value, argument):
    """The one tensor of a model's output; refuses multi-output models.

    Example:
    >>> single_tensor([1.0], "student")
    1.0
    """
    if isinstance(value, (dict, list, tuple)):
        flat = keras.tree.flatten(value)
        if len(flat) != 1:
            raise ValueError(
                f"The {argument} returned {len(flat)} outputs; Distiller "
                "distils single-output models. Build a model that returns "
                "only the class scores to distil."
            )
        return flat[0]
    return value


def check_output_kind(value, argument):
    """One of ``auto``, ``logits``, ``probabilities``."""
    if value not in _OUTPUT_KINDS:
        raise ValueError(
            f"`{argument}` must be one of {_OUTPUT_KINDS}, got {value!r}. "
            "Use 'probabilities' for a model that ends in a softmax, "
            "'logits' otherwise, or 'auto' to detect it."
        )
    return value


def resolve_output_kind(model, value, argument):
    """``logits`` or ``probabilities`` for a model (``auto`` inspects it)."""
    value = check_output_kind(value, argument)
    if value != "auto":
        return value
    return "probabilities" if _compat.ends_in_softmax(model) else "logits"


def _low_precision_copy(model, dtype):
    """A copy of a Sequential/Functional model computing in ``dtype``.

    Every layer gets the ``mixed_<dtype>`` policy (float32 variables,
    16-bit computation) and the original's weights; the original is not
    touched.
    """
    map_teachers = getattr(model, "map_teachers", None)
    if map_teachers is not None:  # a teacher ensemble: each teacher
        return map_teachers(lambda teacher: _low_precision_copy(teacher, dtype))
    k = _compat.keras_module(_compat.flavour_of(model))
    policy = f"mixed_{dtype}"

    def clone(layer):
        if isinstance(layer, k.Model):  # a nested model: its layers too
            return k.models.clone_model(layer, clone_function=clone)
        config = layer.get_config()
        config["dtype"] = policy
        return layer.__class__.from_config(config)

    try:
        copy = k.models.clone_model(model, clone_function=clone)
    except Exception as error:  # noqa: BLE001 - any reason clone_model refuses
        raise ValueError(
            f"`teacher_dtype`={dtype!r} needs a Sequential or Functional "
            f"teacher (nested models too) that Keras can clone; cloning "
            f"{model.name!r} failed ({type(error).__name__}: {error}). Leave "
            "teacher_dtype=None, or build the teacher with a mixed precision "
            "policy yourself."
        ) from error
    missed = [layer.name for layer in _all_layers(copy)
              if getattr(layer.dtype_policy, "name", policy) != policy]
    if missed:
        raise ValueError(
            f"`teacher_dtype`={dtype!r}: the layers {missed} of the teacher "
            f"could not be given the {policy!r} policy and would compute in "
            "float32. Leave teacher_dtype=None, or build the teacher with a "
            "mixed precision policy yourself."
        )
    copy.set_weights(model.get_weights())
    return copy


def _all_layers(model):
    """Every layer of a model, nested models' layers included (no inputs)."""
    out = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        out += _all_layers(layer) if hasattr(layer, "layers") else [layer]
    return out
