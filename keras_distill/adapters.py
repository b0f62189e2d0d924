"""Adapters: learned maps from the student's features to the teacher's width.

FitNets' regressor: when a feature term needs equal widths and the
student's channels differ from the teacher's, a 1x1 convolution (feature
maps) or a Dense layer (vectors) of the student's Keras flavour maps the
student's features first. It trains with the student and is not part of it.

Example:
>>> layer, shape = make_adapter("auto", (None, 4), 16, "keras", "adapter", "pair")
>>> type(layer).__name__, shape
('Dense', (None, 16))
"""

from keras_distill import _compat
from keras_distill._probes import short
from keras_distill.pairs import _shape, _static_shape


def make_adapter(spec, student_shape, target, flavour, name, where):
    """Builds an adapter layer and returns it with its output shape.

    Args:
        spec: ``"auto"``, ``"conv1x1"``, ``"dense"`` or a layer.
        student_shape: The student's feature shape (batch first).
        target: The teacher's width (channels).
        flavour: The student's Keras flavour.
        name: The layer's name.
        where: The pair, for error messages.

    Returns:
        ``(layer, output shape)``.

    Example:
    >>> make_adapter("conv1x1", (None, 8, 8, 4), 6, "keras", "a", "p")[1]
    (None, 8, 8, 6)
    """
    k = _compat.keras_module(flavour)
    rank = len(student_shape)
    if isinstance(spec, str):
        if spec == "conv1x1":
            if rank != 4:
                raise ValueError(
                    f"{where}: adapter='conv1x1' needs a 4-D feature map "
                    f"(batch, H, W, C), but the student's features have shape "
                    f"{_shape(student_shape)}. Use adapter='dense'."
                )
        if target is None:
            raise ValueError(
                f"{where}: the teacher's number of channels is unknown, so "
                f"adapter={spec!r} cannot be built; give the teacher a "
                "static channel dimension or pass an adapter layer."
            )
        if spec == "conv1x1" or (spec == "auto" and rank == 4):
            layer = k.layers.Conv2D(target, 1, name=name)
        else:
            layer = k.layers.Dense(target, name=name)
    else:
        layer = spec
        if _compat.flavour_of(layer) != flavour:
            raise TypeError(
                f"{where}: the adapter is a {_compat.flavour_of(layer)} layer, "
                f"but the student is a {flavour} model. Adapters train with "
                f"the student: build it with {flavour}.layers."
            )
    symbolic = k.Input(batch_shape=tuple(student_shape))
    try:
        out = layer(symbolic)
    except Exception as error:  # noqa: BLE001 - Keras's reason, in short
        raise ValueError(
            f"{where}: the adapter {layer.name!r} cannot take the student's "
            f"features of shape {_shape(student_shape)}: {short(error)} Pass a "
            f"new layer that maps them to {target} channels (it is built on "
            "them), or adapter='auto'."
        ) from None
    return layer, _static_shape(out)
