"""Quantization-aware training (QAT) while distilling, with TFMOT.

`quantize` turns a float student into a TFMOT QAT student (``tf_keras``;
a Keras 3 student is converted with `keras_distill.convert.to_tf_keras`):
fake-quantization of weights and activations is inserted so training learns
int8-friendly weights and the activation ranges. Train it inside a
`keras_distill.Distiller` against the *float* teacher (`qat_distiller`
builds that distiller and refuses a quantized teacher, see
`check_float_teacher`), then export a full-int8 TFLite file with
`keras_distill.export.to_tflite(model, path, "int8")`, which uses the
learned ranges.

A pruned student keeps its sparsity: `quantize` strips the pruning wrappers
itself and uses TFMOT's prune-preserving scheme
(``Default8BitPrunePreserveQuantizeScheme``), which keeps the zero weights at
zero while training; plain QAT would let them grow back.

TensorFlow Model Optimization is imported only inside these functions,
through `keras_distill._compat.import_tfmot` (``tf.keras`` is left as it
was).
"""

import re
import warnings

from keras_distill import _compat, _introspect
from keras_distill._compat import import_tfmot
from keras_distill.convert import to_tf_keras
from keras_distill.pruning import pruning_wrappers, sparsity_report, strip
from keras_distill.pruning._checks import check_built, graph_model_or_raise

_PRESERVE = ("auto", True, False)
_QUANTIZED_CLASSES = _introspect.QAT_CLASSES
# Kernels with at least this fraction of exact zeros count as pruned.
_SPARSE_THRESHOLD = 0.01
# TFMOT's RuntimeError for a layer without a QuantizeConfig.
_UNSUPPORTED = re.compile(r"Layer (\S+?):<class '([\w.]+)'> is not supported")
# The activations TFMOT 0.8.1's default 8-bit scheme quantizes (its
# QuantizeAwareActivation; Activation layers also take relu6); used only to
# name the layers once TFMOT has refused an activation without naming it.
_QAT_ACTIVATIONS = frozenset({"linear", "relu", "swish", "gelu", "softmax",
                              "sigmoid", "tanh"})


def quantize(student, layers=None, preserve_sparsity="auto"):
    """Returns a quantization-aware (TFMOT QAT) copy of a float student.

    Whole-model mode (``layers=None``) quantizes every layer, like TFMOT's
    ``quantize_model``; with ``layers`` only the named layers are annotated
    (``quantize_annotate_layer``) before ``quantize_apply``, the others stay
    float (and the int8 TFLite export then keeps float ops around them).

    Pruned students: a model still holding pruning wrappers is stripped
    first (`keras_distill.pruning.strip`; TFMOT's ``quantize_model`` fails on
    it), and prune-preserving QAT is used so its zeros stay zeros.

    ``preserve_sparsity``:

    - ``"auto"`` (default): prune-preserving QAT when the student holds
      pruning wrappers or at least one kernel is 1% or more exact zeros
      (it was pruned and stripped), plain 8-bit QAT otherwise;
    - ``True``: always prune-preserving (a dense model simply has no zeros
      to keep);
    - ``False``: plain 8-bit QAT; on a sparse model this warns, as training
      then destroys the sparsity.

    The given ``student`` is never modified.

    Args:
        student: A built, float, Sequential or Functional model, Keras 3 or
            ``tf_keras`` (possibly pruned).
        layers: ``None`` for the whole model, or a list of layer names (or
            layers) to quantize.
        preserve_sparsity: ``"auto"``, ``True`` or ``False``.

    Returns:
        A ``tf_keras`` QAT model (layers wrapped as ``quant_<name>``).

    Raises:
        TypeError: ``student`` is not a Keras model, or is a distiller (pass
            ``distiller.student``).
        ValueError: The student cannot be converted or quantized: not
            built, subclassed or nested models, a layer (or a layer's
            activation) TFMOT cannot quantize (named, with what to do), an
            already quantization-aware model, unknown ``layers``, or a bad
            ``preserve_sparsity``.

    Example:
    >>> import keras
    >>> student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4),
    ...                             keras.layers.ReLU(), keras.layers.Dense(2)])
    >>> qat = quantize(student)
    >>> [type(layer).__name__ for layer in qat.layers]
    ['QuantizeLayer', 'QuantizeWrapperV2', 'QuantizeWrapperV2', 'QuantizeWrapperV2']
    """
    _introspect.check_model(student, "student", "quantize")
    if preserve_sparsity not in _PRESERVE or isinstance(preserve_sparsity, int) and \
            not isinstance(preserve_sparsity, bool):
        raise ValueError(
            f"`preserve_sparsity` must be 'auto', True or False, got "
            f"{preserve_sparsity!r}."
        )
    if _introspect.holds(student, _QUANTIZED_CLASSES):
        raise ValueError(
            f"Model {student.name!r} is already quantization-aware (it holds "
            "TFMOT quantize wrappers): train it as it is, or quantize the float "
            "model."
        )
    check_built(student, "student", "quantize")
    tfmot = import_tfmot()
    model = to_tf_keras(student)
    graph_model_or_raise(model, "quantize")
    _reject_nested(model)
    was_pruned = bool(pruning_wrappers(model))
    if was_pruned:
        model = strip(model)
    sparse = was_pruned or any(
        value >= _SPARSE_THRESHOLD for value in sparsity_report(model).values())
    if preserve_sparsity == "auto":
        preserve = sparse
    else:
        preserve = bool(preserve_sparsity)
        if sparse and not preserve:
            warnings.warn(
                "quantize(preserve_sparsity=False) on a pruned model: plain QAT "
                "lets the pruned weights grow back, destroying the sparsity. "
                "Use preserve_sparsity='auto' or True to keep it.", stacklevel=2)
    keras2 = _compat.keras_module(_compat.TF_KERAS)
    qk = tfmot.quantization.keras
    selected = _selected(model, layers)
    if selected is None:
        annotated = qk.quantize_annotate_model(model)
    else:
        def annotate(layer):
            if layer.name in selected:
                return qk.quantize_annotate_layer(layer)
            return layer

        annotated = keras2.models.clone_model(model, clone_function=annotate)
    if preserve:
        scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    else:
        scheme = qk.default_8bit.Default8BitQuantizeScheme()
    try:
        with qk.quantize_scope():
            return qk.quantize_apply(annotated, scheme)
    except RuntimeError as error:
        match = _UNSUPPORTED.search(str(error))
        if match is None:
            raise ValueError(
                f"TFMOT could not quantize model {model.name!r}: {error}"
            ) from error
        name, cls = match.group(1), match.group(2).rsplit(".", 1)[-1]
        others = [layer.name for layer in model.layers if layer.name != name]
        raise ValueError(
            f"TFMOT cannot quantize layer {name!r} ({cls}) of model "
            f"{model.name!r}: it has no 8-bit QuantizeConfig for it. Quantize "
            f"the other layers only, with `layers=[...]` (e.g. from {others}), "
            "or annotate this one yourself with "
            "tfmot.quantization.keras.quantize_annotate_layer and a "
            "QuantizeConfig."
        ) from error
    except (ValueError, TypeError) as error:
        unsupported = _unsupported_activations(model, selected) if \
            "ctivation" in str(error) else []
        if unsupported:
            raise ValueError(
                f"TFMOT cannot quantize the activation of layer(s) "
                f"{', '.join(unsupported)} of model {model.name!r}: its 8-bit "
                f"QAT supports {', '.join(sorted(_QAT_ACTIVATIONS))} only. Use "
                "one of those activations, or quantize the other layers only "
                "with `layers=[...]`."
            ) from error
        raise ValueError(
            f"TFMOT could not quantize model {model.name!r}: {error}"
        ) from error


def check_float_teacher(teacher):
    """Returns ``teacher`` if it is a float model; raises if it is quantized.

    QAT students should learn from the float teacher: a quantized teacher
    (TFMOT QAT wrappers, or a Keras 3 model quantized with
    ``model.quantize(...)``) gives coarser targets and its fake-quant ops
    slow every batch down. Used by `qat_distiller`.

    Args:
        teacher: A Keras model of either flavour.

    Returns:
        ``teacher``, unchanged.

    Raises:
        TypeError: ``teacher`` is not a Keras model, or is a distiller (pass
            ``distiller.student``).
        ValueError: It holds quantize wrappers or quantized layers (named).

    Example:
    >>> import keras
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> check_float_teacher(teacher) is teacher
    True
    """
    _introspect.check_model(teacher, "teacher", "distil from")
    modules = list(_introspect.iter_submodules(teacher))
    quantized = [m.name for m in modules if type(m).__name__ in _QUANTIZED_CLASSES]
    quantized += [m.name for m in modules
                  if getattr(m, "quantization_mode", None)
                  and type(m).__name__ not in _QUANTIZED_CLASSES]
    if quantized:
        raise ValueError(
            f"The teacher {teacher.name!r} is quantized (layers "
            f"{quantized[:5]}{'...' if len(quantized) > 5 else ''}); a QAT "
            "student should be distilled from the float teacher. Pass the "
            "teacher as it was before quantization."
        )
    return teacher


def qat_distiller(student, teacher, *, layers=None, preserve_sparsity="auto",
                  **distiller_kwargs):
    """A `keras_distill.Distiller` that trains a QAT student from a float teacher.

    ``student`` is made quantization-aware with `quantize` (a student that is
    already QAT is used as it is), ``teacher`` is checked with
    `check_float_teacher`. The QAT student is ``distiller.student``; export
    it with ``keras_distill.export.to_tflite(distiller.student, path,
    "int8")``. The distiller is a ``tf_keras`` model: compile it with
    ``tf_keras`` optimizers and losses.

    Args:
        student: The float (possibly pruned) student, or a QAT student.
        teacher: The float teacher, of either flavour.
        layers, preserve_sparsity: As for `quantize`.
        **distiller_kwargs: Passed to ``Distiller`` (``teacher_outputs``,
            ``student_outputs``, ``name``).

    Returns:
        A compiled-ready ``Distiller`` (``tf_keras`` flavour).

    Raises:
        ValueError: As `quantize` and `check_float_teacher`.

    Example:
    >>> import keras
    >>> teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> distiller = qat_distiller(student, teacher)
    >>> type(distiller.student.layers[-1]).__name__
    'QuantizeWrapperV2'
    """
    from keras_distill.distiller import Distiller

    check_float_teacher(teacher)
    _introspect.check_model(student, "student", "quantize")
    if not _introspect.holds(student, _QUANTIZED_CLASSES):
        student = quantize(student, layers=layers, preserve_sparsity=preserve_sparsity)
    elif _compat.flavour_of(student) != _compat.TF_KERAS:
        raise ValueError("A quantization-aware student must be a tf_keras model.")
    return Distiller(student=student, teacher=teacher, **distiller_kwargs)


def _unsupported_activations(model, selected):
    """``"'name' (activation)"`` for the layers whose activation TFMOT's
    8-bit scheme does not quantize."""
    found = []
    for layer in model.layers:
        name = getattr(getattr(layer, "activation", None), "__name__", None)
        extra = {"relu6"} if type(layer).__name__ == "Activation" else set()
        if name and name not in _QAT_ACTIVATIONS | extra and (
                selected is None or layer.name in selected):
            found.append(f"{layer.name!r} ({name})")
    return found


def _reject_nested(model):
    for layer in _introspect.iter_layers(model, nested=False):
        if isinstance(getattr(layer, "layers", None), list):
            raise ValueError(
                f"Model {model.name!r} holds the model {layer.name!r} as a "
                "layer; TFMOT cannot quantize a model nested in another. "
                "Rebuild it flat (the nested model's layers directly in the "
                "outer model)."
            )


def _selected(model, layers):
    if layers is None:
        return None
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise ValueError(f"`layers` must be a list of layer names, got {layers!r}.")
    names = [getattr(item, "name", item) for item in layers]
    if not names:
        raise ValueError("`layers` is empty: nothing to quantize.")
    known = [layer.name for layer in model.layers]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"Unknown layer(s) {unknown} in model {model.name!r}; its layers "
            f"are {known}."
        )
    return set(names)
