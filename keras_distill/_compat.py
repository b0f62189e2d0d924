"""The one place that knows Keras 3 (``keras``) from Keras 2 (``tf_keras``).

TensorFlow 2.21 ships Keras 3 as ``tf.keras``; TensorFlow Model Optimization
(TFMOT) only accepts Keras 2 models, which live in the separate ``tf_keras``
package. Users have models of both flavours, so everything in keras_distill
that needs to know which one it holds asks this module.

``tf_keras`` is never imported here unless the user already imported it (a
``tf_keras`` model cannot exist otherwise) or explicitly asks for that flavour,
so importing keras_distill does not load Keras 2 or TFMOT.
"""

import builtins
import dis
import functools
import os
import sys
import types

KERAS3 = "keras"
TF_KERAS = "tf_keras"
FLAVOURS = (KERAS3, TF_KERAS)


def keras_module(flavour):
    """Returns the Keras package of a flavour.

    Args:
        flavour: ``"keras"`` (Keras 3) or ``"tf_keras"`` (Keras 2).

    Returns:
        The imported package, ``keras`` or ``tf_keras``.

    Example:
    >>> keras_module("keras").__name__
    'keras'
    """
    if flavour == KERAS3:
        import keras

        return keras
    if flavour == TF_KERAS:
        import tf_keras

        return tf_keras
    raise ValueError(
        f"Unknown Keras flavour {flavour!r}: expected one of {FLAVOURS}."
    )


def flavour_of(obj):
    """Tells which Keras flavour a model or layer belongs to.

    Args:
        obj: Any object.

    Returns:
        ``"keras"`` for a Keras 3 layer/model, ``"tf_keras"`` for a Keras 2
        (``tf_keras``) one, ``None`` for anything else.

    Example:
    >>> import keras
    >>> flavour_of(keras.Sequential([keras.layers.Dense(2)]))
    'keras'
    >>> flavour_of("not a model") is None
    True
    """
    return _flavour_of_instance(obj, lambda k: k.layers.Layer)


def _flavour_of_instance(obj, base_class):
    """The flavour whose ``base_class(module)`` ``obj`` is an instance of.

    tf_keras is consulted only if already imported: no tf_keras object can
    exist otherwise.
    """
    import keras

    if isinstance(obj, base_class(keras)):
        return KERAS3
    tf_keras = sys.modules.get("tf_keras")
    if tf_keras is not None and isinstance(obj, base_class(tf_keras)):
        return TF_KERAS
    return None


def flavour_of_instance(obj, module, name):
    """Which flavour's ``<module>.<name>`` class ``obj`` is an instance of.

    Args:
        obj: Any object.
        module: The Keras submodule, e.g. ``"optimizers"``.
        name: The class in it, e.g. ``"Optimizer"``.

    Returns:
        ``"keras"``, ``"tf_keras"`` or ``None``.

    Example:
    >>> import keras
    >>> flavour_of_instance(keras.optimizers.Adam(), "optimizers", "Optimizer")
    'keras'
    >>> flavour_of_instance("adam", "optimizers", "Optimizer") is None
    True
    """
    return _flavour_of_instance(
        obj, lambda k: getattr(getattr(k, module), name))


def flavour_of_loss(obj):
    """Tells which flavour's ``Loss`` class an object is an instance of.

    Args:
        obj: Any object.

    Returns:
        ``"keras"``, ``"tf_keras"``, or ``None`` (a plain function, say).

    Example:
    >>> import keras
    >>> flavour_of_loss(keras.losses.KLDivergence())
    'keras'
    >>> flavour_of_loss(keras.losses.kl_divergence) is None
    True
    """
    return _flavour_of_instance(obj, lambda k: k.losses.Loss)


def model_flavour(model, argument):
    """Returns the flavour of a Keras model or raises a clear ``TypeError``.

    Args:
        model: The object that should be a Keras model.
        argument: The name of the user's argument, for the error message.

    Returns:
        ``"keras"`` or ``"tf_keras"``.

    Example:
    >>> import keras
    >>> model_flavour(keras.Sequential([keras.layers.Dense(2)]), "student")
    'keras'
    """
    flavour = flavour_of(model)
    if flavour == KERAS3:
        import keras

        ok = isinstance(model, keras.Model)
    elif flavour == TF_KERAS:
        ok = isinstance(model, sys.modules["tf_keras"].Model)
    else:
        ok = False
    if not ok:
        raise TypeError(
            f"`{argument}` must be a Keras model (a `keras.Model` or a "
            f"`tf_keras.Model`), got {type(model).__module__}."
            f"{type(model).__qualname__}. Wrap layers or functions in a "
            "model first, e.g. `keras.Sequential([...])`."
        )
    return flavour


def output_layer(model):
    """Returns the layer producing a model's (single) output, or ``None``.

    Works for Sequential and Functional models of both flavours; subclassed
    models have no static graph, so ``None`` is returned for them.

    Args:
        model: A Keras model of either flavour.

    Returns:
        The last layer, or ``None`` when it cannot be known without calling
        the model.

    Example:
    >>> import keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> output_layer(m).__class__.__name__
    'Dense'
    """
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    layers = getattr(model, "layers", None)
    if outputs and len(outputs) == 1 and isinstance(layers, list):
        for layer in reversed(layers):
            if any(output is outputs[0] for output in _outputs_of(layer)):
                return layer
        # Keras 3 shows only a layer's first call (`layer.output`); a layer
        # called again to give the output is named in the model's config.
        layer = _config_output_layer(model)
        if layer is not None:
            return layer
    if type(model).__name__ == "Sequential" and layers:
        return layers[-1]
    return None


def _config_output_layer(model):
    """The layer ``model.get_config()["output_layers"]`` names, or ``None``."""
    try:
        entry = model.get_config()["output_layers"]
        if entry and isinstance(entry[0], (list, tuple)):
            (entry,) = entry
        return model.get_layer(entry[0])
    except Exception:  # noqa: BLE001 - not serialisable, several outputs, ...
        return None


def _outputs_of(layer):
    """The output tensors of ``layer``'s calls in graphs, by public API.

    Keras 3: ``layer.output`` (its first call). tf_keras: ``get_output_at(i)``
    for every call (a nested tf_keras model's first "call" is the model
    itself, so its call in the outer graph is the second).
    """
    found = []

    def add(output):
        if isinstance(output, dict):
            output = list(output.values())
        if isinstance(output, (list, tuple)):
            found.extend(output)
        else:
            found.append(output)

    get_output_at = getattr(layer, "get_output_at", None)  # tf_keras only
    if get_output_at is None:
        try:
            add(layer.output)
        except (AttributeError, ValueError, RuntimeError):
            pass
        return found
    index = 0
    while True:
        try:
            add(get_output_at(index))
        except (AttributeError, ValueError, RuntimeError, IndexError):
            return found
        index += 1


def ends_in_softmax(model):
    """Tells whether a model's last layer applies a softmax.

    The function object is inspected, never its name: a ``Softmax`` layer,
    an ``Activation`` layer or any layer (``Dense``, ``Conv2D``, ...) whose
    activation is a softmax (``"softmax"``, ``keras.activations.softmax``,
    ``keras.ops.softmax``, ``tf.nn.softmax``, ``tf_keras``'s, ``jax.nn``'s),
    a ``Lambda`` of one of these, and a ``Lambda`` or activation function
    (``lambda z: tf.nn.softmax(z)``, a ``def``) whose returned value is such
    a call, in either Keras flavour. Nested models are followed into their
    last layer; in a ``Sequential`` model, layers that are the identity at
    inference (``Dropout``, ``GaussianNoise``, ``Activation("linear")``,
    ...) after the softmax are looked through. A function that computes a
    softmax by hand (``exp(z) / sum(exp(z))``) is not recognised: the
    distillers also check the teacher's first batch numerically.

    Args:
        model: A Keras model of either flavour.

    Returns:
        ``True``, ``False``, or ``None`` when the model is subclassed and its
        last operation cannot be seen.

    Example:
    >>> import keras
    >>> m = keras.Sequential([keras.Input((3,)),
    ...                       keras.layers.Dense(2, activation="softmax")])
    >>> ends_in_softmax(m)
    True
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
    ...                       keras.layers.Lambda(lambda z: keras.ops.softmax(z))])
    >>> ends_in_softmax(m)
    True
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
    ...                       keras.layers.Activation(keras.ops.log_softmax)])
    >>> ends_in_softmax(m)
    False
    """
    layer = output_layer(model)
    if layer is None:
        return None
    layers = getattr(model, "layers", None)
    if type(model).__name__ == "Sequential" and isinstance(layers, list):
        index = next((i for i, l in enumerate(layers) if l is layer), None)
        while index and _is_identity_at_inference(layers[index]):
            index -= 1
            layer = layers[index]
    if flavour_of(layer) is not None and hasattr(layer, "layers") and (
        layer is not model
    ):
        return ends_in_softmax(layer)
    return _layer_applies_softmax(layer)


def _layer_classes(*names):
    """The layer classes ``names`` of every loaded Keras flavour."""
    import keras

    found = []
    for module in (keras, sys.modules.get("tf_keras")):
        if module is not None:
            found += [getattr(module.layers, n) for n in names
                      if hasattr(module.layers, n)]
    return tuple(found)


def _is_identity_at_inference(layer):
    """Dropout, noise and regularisation layers, ``Activation("linear")``."""
    if isinstance(layer, _layer_classes(
        "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
        "GaussianNoise", "GaussianDropout", "AlphaDropout",
        "ActivityRegularization", "Identity",
    )):
        return True
    if isinstance(layer, _layer_classes("Activation")):
        import keras

        activation = layer.activation
        linear = [None, keras.activations.linear]
        if "tf_keras" in sys.modules:
            linear.append(sys.modules["tf_keras"].activations.linear)
        return activation == "linear" or any(activation is f for f in linear)
    return False


def _layer_applies_softmax(layer):
    if isinstance(layer, _layer_classes("Softmax")):
        return True
    if isinstance(layer, _layer_classes("Lambda")):
        return is_softmax_function(getattr(layer, "function", None))
    inner = getattr(layer, "layer", None)  # TimeDistributed, Bidirectional
    if flavour_of(inner) is not None:
        return _layer_applies_softmax(inner)
    return is_softmax_function(getattr(layer, "activation", None))


def _softmax_functions():
    """Every softmax function of the loaded libraries (and what they wrap)."""
    import keras

    found = [keras.activations.softmax, keras.ops.softmax, keras.ops.nn.softmax]
    paths = {
        "tensorflow": ("nn.softmax", "math.softmax", "compat.v1.nn.softmax",
                       "compat.v1.math.softmax"),
        "tf_keras": ("activations.softmax", "backend.softmax"),
        "jax": ("nn.softmax",),
        "torch": ("softmax", "nn.functional.softmax"),
    }
    for module_name, names in paths.items():
        module = sys.modules.get(module_name)
        for path in names if module is not None else ():
            obj = module
            for part in path.split("."):
                obj = getattr(obj, part, None)
            if obj is not None:
                found.append(obj)
    for fn in list(found):
        while getattr(fn, "__wrapped__", None) is not None:
            fn = fn.__wrapped__
            found.append(fn)
    return found


def is_softmax_function(fn, _depth=0):
    """Whether ``fn`` is (or returns the result of) a known softmax function.

    Known: the softmax of ``keras.activations``, ``keras.ops``, ``tf.nn``,
    ``tf.math``, ``tf_keras``, ``jax.nn`` (and ``torch``), by identity, also
    inside ``functools.partial``; the string ``"softmax"``; and a Python
    function (a ``lambda`` or a ``def``) whose returned value is a call of
    one of these (read from its bytecode, following calls of other Python
    functions three levels deep). Anything else, e.g. ``log_softmax`` or a
    softmax computed by hand, is ``False``.

    Args:
        fn: An activation, a ``Lambda``'s function, a string or ``None``.

    Returns:
        ``True`` or ``False``.

    Example:
    >>> import keras
    >>> is_softmax_function(keras.ops.softmax), is_softmax_function("relu")
    (True, False)
    >>> is_softmax_function(lambda z: keras.activations.softmax(z, axis=-1))
    True
    >>> is_softmax_function(lambda z: keras.ops.log(keras.ops.softmax(z)))
    False
    """
    if fn is None:
        return False
    if isinstance(fn, str):
        return fn.lower() == "softmax"
    while isinstance(fn, functools.partial):
        fn = fn.func
    candidates = [fn]
    while getattr(candidates[-1], "__wrapped__", None) is not None:
        candidates.append(candidates[-1].__wrapped__)
    known = _softmax_functions()
    if any(c is k for c in candidates for k in known):
        return True
    if _depth >= 3 or not isinstance(fn, types.FunctionType):
        return False
    callee = _returned_call(fn)
    return callee is not None and is_softmax_function(callee, _depth + 1)


_UNKNOWN = object()  # a value the bytecode walk cannot know
_NULL = object()
_CALLS = ("CALL", "CALL_FUNCTION", "CALL_METHOD", "CALL_FUNCTION_KW", "CALL_KW")
_NO_EFFECT = ("RESUME", "NOP", "PRECALL", "KW_NAMES", "CACHE", "EXTENDED_ARG",
              "COPY_FREE_VARS", "MAKE_CELL", "PUSH_EXC_INFO", "NOT_TAKEN")


class _Result:
    """The value a call of ``callee`` returned."""

    def __init__(self, callee):
        self.callee = callee


def _returned_call(fn):
    """The function whose call ``fn`` returns, read from its bytecode, or
    ``None`` (branches, unknown operations, anything not a plain call)."""
    code = fn.__code__
    closure = dict(zip(code.co_freevars, [
        _cell_value(c) for c in (fn.__closure__ or ())]))
    stack, local = [], {}
    jumps = set(dis.hasjrel) | set(dis.hasjabs)
    try:
        for ins in dis.get_instructions(code):
            op = ins.opname
            if ins.opcode in jumps or op.startswith(("JUMP", "POP_JUMP")):
                return None
            if op == "RETURN_VALUE":
                top = stack[-1]
                return top.callee if isinstance(top, _Result) else None
            if op in _NO_EFFECT:
                continue
            if op in ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF"):
                value = _resolve(fn, ins.argval, closure, op)
                effect = dis.stack_effect(ins.opcode, ins.arg)
                stack += [_NULL] * (effect - 1) + [value]
            elif op in ("LOAD_ATTR", "LOAD_METHOD"):
                owner = stack.pop()
                value = _UNKNOWN
                if owner is not _UNKNOWN and owner is not _NULL and (
                    not isinstance(owner, _Result)):
                    value = getattr(owner, ins.argval, _UNKNOWN)
                effect = dis.stack_effect(ins.opcode, ins.arg)
                stack += [value] + [_UNKNOWN] * effect
            elif op == "PUSH_NULL":
                stack.append(_NULL)
            elif op in ("LOAD_FAST", "LOAD_FAST_CHECK"):
                stack.append(local.get(ins.argval, _UNKNOWN))
            elif op == "STORE_FAST":
                local[ins.argval] = stack.pop()
            elif op in _CALLS:
                count = ins.arg + 2 + (op == "CALL_KW")
                items = stack[-count:]
                if len(items) != count:
                    return None
                del stack[-count:]
                callee = items[1] if items[0] is _NULL else items[0]
                known = callee is not _UNKNOWN and callee is not _NULL
                stack.append(_Result(callee) if known else _UNKNOWN)
            else:
                effect = dis.stack_effect(
                    ins.opcode, ins.arg if ins.opcode >= dis.HAVE_ARGUMENT
                    else None)
                if effect < 0:
                    del stack[effect:]
                if effect <= 0 and stack:
                    stack[-1] = _UNKNOWN
                stack += [_UNKNOWN] * max(effect, 0)
    except (IndexError, ValueError, TypeError):
        return None
    return None


def _cell_value(cell):
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return _UNKNOWN


def _resolve(fn, name, closure, op):
    if op == "LOAD_DEREF":
        return closure.get(name, _UNKNOWN)
    if name in fn.__globals__:
        return fn.__globals__[name]
    return getattr(builtins, name, _UNKNOWN)


def single_output_shape(model):
    """Returns the static shape of a model's single output, or ``None``.

    Args:
        model: A Keras model of either flavour.

    Returns:
        A tuple (``None`` for unknown dimensions), or ``None`` when the model
        is not built with a known output.

    Example:
    >>> import keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> single_output_shape(m)
    (None, 2)
    """
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs or len(outputs) != 1:
        return None
    return tuple(outputs[0].shape)


def import_tfmot():
    """Imports TensorFlow Model Optimization without switching ``tf.keras``.

    TFMOT's import sets ``os.environ["TF_USE_LEGACY_KERAS"] = "1"``. If
    ``tf.keras`` had not been touched yet, that turns ``tf.keras`` into
    ``tf_keras`` for the rest of the process, and child processes inherit
    the variable. This function resolves ``tf.keras`` first (to what it
    would have been without TFMOT), imports TFMOT (which then uses
    ``tf_keras`` internally, as always), and puts ``TF_USE_LEGACY_KERAS``
    back as it was. TFMOT reads the variable only at import, so it works
    the same.

    Returns:
        The ``tensorflow_model_optimization`` module.

    Example:
    >>> import os
    >>> before = os.environ.get("TF_USE_LEGACY_KERAS")
    >>> tfmot = import_tfmot()
    >>> tfmot.__name__, os.environ.get("TF_USE_LEGACY_KERAS") == before
    ('tensorflow_model_optimization', True)
    """
    module = sys.modules.get("tensorflow_model_optimization")
    if module is not None and hasattr(module, "sparsity"):
        return module
    import tensorflow as tf

    getattr(tf.keras, "version", None)  # resolve the lazy tf.keras now
    saved = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization as tfmot
    finally:
        if saved is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = saved
    return tfmot
