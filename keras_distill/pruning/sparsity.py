"""Sparsity: `strip` the pruning wrappers, count the zeros (`sparsity_report`).

Counted weights are the kernels (``kernel``, ``depthwise_kernel``,
``pointwise_kernel``) and embeddings of each layer, through pruning and
quantize wrappers (the weights a layer computes with: kernel times mask).
`kernel_layers` lists them; `keras_distill.pruning.sensitivity` prunes them.
"""

import numpy as np

from keras_distill import _introspect
from keras_distill._compat import import_tfmot
from keras_distill.pruning import _checks
from keras_distill.pruning.callbacks import pruning_wrappers

_KERNEL_NAMES = frozenset({"kernel", "depthwise_kernel", "pointwise_kernel",
                           "embeddings"})


def strip(model):
    """Removes pruning wrappers: a plain ``tf_keras`` model, zeros baked in.

    Every wrapper's mask is applied to its weights first, so the pruned
    weights are exact zeros in the result (what TFLite export and gzip
    benefit from). The result is a new model with its own weights (the
    pruned model is not changed), with the original layer names. A model
    without pruning wrappers is returned unchanged.

    Args:
        model: A Sequential or Functional ``tf_keras`` model from `prune`.

    Returns:
        A ``tf_keras`` model of the same architecture without wrappers.

    Raises:
        TypeError: ``model`` is not a Keras model, or is a distiller (pass
            ``distiller.student``).
        ValueError: The wrappers are nested where TFMOT's ``strip_pruning``
            cannot reach (custom layers, subclassed models).

    Example:
    >>> import keras
    >>> from keras_distill.pruning import prune
    >>> student = keras.Sequential([keras.Input((8,)),
    ...                             keras.layers.Dense(2, name="logits")])
    >>> stripped = strip(prune(student, 0.5, schedule="constant"))
    >>> [layer.name for layer in stripped.layers]
    ['logits']
    """
    _introspect.check_model(model, "model", "strip")
    wrappers = pruning_wrappers(model)
    if not wrappers:
        return model
    tfmot = import_tfmot()
    for wrapper in wrappers:
        wrapper.pruning_obj.weight_mask_op()
    reachable = {id(w) for w in _reachable_wrappers(model)}
    hidden = [w.name for w in wrappers if id(w) not in reachable]
    if hidden or not _introspect.is_graph_model(model):
        raise ValueError(
            f"Cannot strip model {model.name!r}: "
            + (f"pruning wrappers {hidden} are inside custom layers, where "
               if hidden else "it is a subclassed model, which ")
            + "TFMOT's strip_pruning cannot reach. Build the student as a "
            "Sequential or Functional model of standard layers and prune it "
            "with keras_distill.pruning.prune."
        )
    try:
        stripped = tfmot.sparsity.keras.strip_pruning(model)
    except (ValueError, NotImplementedError) as error:
        raise ValueError(f"Cannot strip model {model.name!r}: {error}") from error
    return _checks.copy_tf_keras(stripped)


def _reachable_wrappers(model):
    """Wrappers TFMOT's strip_pruning reaches: layers of (nested) models."""
    return [layer for layer in _introspect.iter_layers(
                model, nested=_introspect.is_graph_model)
            if type(layer).__name__ == _introspect.PRUNING_WRAPPER]


def sparsity_report(model):
    """Fraction of exact zeros in each layer's kernel weights.

    Counted weights: kernels (``kernel``, ``depthwise_kernel``,
    ``pointwise_kernel``) and embeddings, not biases or BatchNorm
    parameters. For a layer inside a pruning wrapper, the weights the layer
    computes with (kernel times mask) are counted; inside a QAT wrapper,
    the float kernel. Layers are named as in the original model (wrapper
    prefixes removed), so reports before and after `strip` or QAT compare.

    Args:
        model: A Keras model of either flavour (not a distiller, whose
            teacher would be counted too: pass ``distiller.student``).

    Returns:
        ``{layer name: sparsity}`` in layer order.

    Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)),
    ...                           keras.layers.Dense(2, name="logits")])
    >>> _ = model.layers[0].kernel.assign(np.array([[0., 1.], [0., 2.]]))
    >>> sparsity_report(model)
    {'logits': 0.5}
    """
    return {name: (zeros / size if size else 0.0)
            for name, zeros, size in _zero_counts(model)}


def total_sparsity(model):
    """Fraction of exact zeros over all kernel weights (see `sparsity_report`).

    Args:
        model: A Keras model of either flavour (not a distiller).

    Returns:
        A float in ``[0, 1]`` (0 for a model without kernels).

    Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> _ = model.layers[0].kernel.assign(np.array([[0., 1.], [0., 2.]]))
    >>> total_sparsity(model)
    0.5
    """
    counts = _zero_counts(model)
    size = sum(c[2] for c in counts)
    return sum(c[1] for c in counts) / size if size else 0.0


def _zero_counts(model):
    _introspect.check_model(model, "model", "count the zeros of")
    rows = []
    for name, wrapper, _, kernels in kernel_layers(model):
        masks = _masks(wrapper)
        zeros = size = 0
        for weight in kernels:
            value = np.asarray(weight.numpy())
            mask = masks.get(id(weight))
            if mask is not None and hasattr(mask, "numpy"):
                value = value * np.asarray(mask.numpy())
            zeros += int(np.count_nonzero(value == 0))
            size += int(value.size)
        rows.append((name, zeros, size))
    return rows


def _masks(wrapper):
    """``{id(weight): mask}`` a wrapper multiplies weights by (pruning, or
    prune-preserving QAT), so reports count the weights actually used."""
    masks = {}
    if wrapper is None:
        return masks
    if type(wrapper).__name__ == _introspect.PRUNING_WRAPPER:
        for weight, mask, _ in getattr(wrapper, "pruning_vars", []):
            masks[id(weight)] = mask
    for entry in getattr(wrapper, "_weight_vars", []):
        if len(entry) == 3 and isinstance(entry[2], dict) and "sparsity_mask" in entry[2]:
            masks[id(entry[0])] = entry[2]["sparsity_mask"]
    return masks


def _short_name(variable):
    return variable.name.split("/")[-1].split(":")[0]


def _kernels(layer):
    """The layer's own kernel-like weights (not those of its sublayers)."""
    inner = {id(w) for child in _introspect.iter_layers(layer, nested=False)
             for w in child.weights}
    return [w for w in layer.weights
            if id(w) not in inner and _short_name(w) in _KERNEL_NAMES]


def _wrapped_kernels(wrapper, inner):
    """Kernels of a wrapped layer. QAT wrappers take the float kernel out of
    the inner layer's weights (and swap its attribute for the quantized
    tensor in each call): their kernels are in ``_weight_vars``."""
    weight_vars = getattr(wrapper, "_weight_vars", None)
    if weight_vars:
        return [entry[0] for entry in weight_vars
                if _short_name(entry[0]) in _KERNEL_NAMES]
    return _kernels(inner)


def kernel_layers(model):
    """``(name, wrapper or None, layer, kernels)`` per layer owning kernels.

    Depth first through nested models, wrappers (the wrapped layer's kernels,
    named as the wrapped layer) and custom layers; a layer with kernels of its
    own is not searched further.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Flatten(),
    ...                           keras.layers.Dense(2, name="logits")])
    >>> [(name, len(kernels)) for name, _, _, kernels in kernel_layers(model)]
    [('logits', 1)]
    """
    def is_wrapper(layer):
        return type(layer).__name__ in _introspect.WRAPPERS and hasattr(layer, "layer")

    found, leaves = [], set()  # leaves: layers not to search further
    for layer in _introspect.iter_layers(model, nested=lambda l: id(l) not in leaves):
        if is_wrapper(layer):
            leaves.add(id(layer))
            inner = layer.layer
            while is_wrapper(inner):
                inner = inner.layer
            kernels = _wrapped_kernels(layer, inner)
            if kernels:
                found.append((inner.name, layer, inner, kernels))
            continue
        kernels = _kernels(layer)
        if kernels:
            leaves.add(id(layer))
            found.append((layer.name, None, layer, kernels))
    return found
