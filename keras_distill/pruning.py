"""Magnitude pruning while distilling (TFMOT), strip, reports, sensitivity.

The path: `prune` wraps a student's prunable layers with TFMOT's
``PruneLowMagnitude`` (converting a Keras 3 student to ``tf_keras`` first);
the pruned student trains inside a `keras_distill.Distiller` like any
student, with `pruning_callbacks` passed to ``fit``; `strip` removes the
wrappers and leaves a plain ``tf_keras`` model whose pruned weights are exact
zeros; `sparsity_report` counts them.

Steps are counted in training batches: the student runs once per batch in
training mode and every pruning wrapper's step advances by one per batch
(``pruning_step == number of batches trained``).

`sensitivity` measures, layer by layer, how much accuracy is lost when that
layer alone is pruned to each ratio (PaddleSlim's ``sensitivity``), saving
after every measurement so an interrupted run resumes; `ratios_by_loss`
turns the measurements into per-layer sparsities for an allowed loss, which
`prune` accepts as ``target_sparsity``; `plot_sensitivity` draws them.

TensorFlow Model Optimization is imported only inside the functions that need
it (through `keras_distill._compat.import_tfmot`, which keeps ``tf.keras``
as it was); the sensitivity analysis and the reports do not need it.
"""

import json
import math
import numbers
import os
import warnings

import numpy as np

from keras_distill import _compat, _io
from keras_distill._compat import import_tfmot
from keras_distill.convert import to_tf_keras

SCHEDULES = ("polynomial", "constant")
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
_PRUNING_WRAPPER = "PruneLowMagnitude"
_QAT_CLASSES = frozenset({"QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer",
                          "QuantizeAnnotate"})
_WRAPPER_CLASSES = frozenset({_PRUNING_WRAPPER, "QuantizeWrapper",
                              "QuantizeWrapperV2", "QuantizeAnnotate"})
_KERNEL_NAMES = frozenset({"kernel", "depthwise_kernel", "pointwise_kernel",
                           "embeddings"})
_SENSITIVITY_VERSION = 1


# -- pruning -------------------------------------------------------------------


def prune(student, target_sparsity=0.5, *, schedule="polynomial", begin_step=0,
          end_step=None, epochs=None, steps_per_epoch=None, frequency=None,
          initial_sparsity=0.0, power=3, sparsity_m_by_n=None, block_size=(1, 1),
          layers=None):
    """Returns a copy of ``student`` whose layers are magnitude-pruned in training.

    Each prunable layer (Dense, Conv*, DepthwiseConv2D, SeparableConv*,
    Embedding, ...) is wrapped with TFMOT's ``PruneLowMagnitude``: while the
    model trains, the smallest-magnitude weights of its kernel are masked to
    zero following a schedule, so the student learns to do without them.
    Train the result in a `keras_distill.Distiller` (or alone) with
    ``callbacks=pruning_callbacks(model)``, then `strip` it.

    Schedules (steps count training batches, starting from the first batch
    this model trains on):

    - ``"polynomial"`` (Zhu & Gupta 2017, TFMOT ``PolynomialDecay``): the
      sparsity rises from ``initial_sparsity`` to ``target_sparsity`` as
      ``target + (initial - target) * (1 - p) ** power`` with ``p`` going
      from 0 at ``begin_step`` to 1 at ``end_step``, re-computing the mask
      every ``frequency`` batches; from ``end_step`` on the mask is fixed.
      ``end_step`` defaults to ``epochs * steps_per_epoch`` (the whole run),
      ``frequency`` to a tenth of the ramp (TFMOT's default of 100 batches
      never reaches the target in a short run). If ``frequency`` does not
      divide the ramp, the ramp starts a little later (fewer than
      ``frequency`` batches) so that the last update lands on ``end_step``
      with exactly the target.
    - ``"constant"`` (TFMOT ``ConstantSparsity``): the target sparsity from
      the first batch after ``begin_step`` on, re-computing the mask every
      ``frequency`` batches (default 100) until ``end_step`` (default:
      never stop).

    ``sparsity_m_by_n=(2, 4)`` prunes 2 of every 4 consecutive weights along
    the input-channel axis (structured 2:4 sparsity, which some accelerators
    run faster), fixed on the first batch; the schedule is then not used.

    Keras 3 students are converted with `keras_distill.convert.to_tf_keras`;
    a ``tf_keras`` student is copied first. The given ``student`` is never
    modified.

    Args:
        student: A built Sequential or Functional model, Keras 3 or
            ``tf_keras``, of layers TFMOT can prune (others are left dense).
        target_sparsity: Fraction of zeros to reach in each pruned kernel,
            in ``[0, 1)``; or a dict ``{layer name: sparsity}`` (e.g. from
            `ratios_by_loss`) pruning only those layers, each to its own.
        schedule: ``"polynomial"`` or ``"constant"``.
        begin_step: Batches to train dense before pruning starts.
        end_step: Batch at which the polynomial ramp reaches the target (the
            constant schedule stops updating its mask there).
        epochs, steps_per_epoch: The planned training length, from which
            ``end_step`` defaults to ``epochs * steps_per_epoch``
            (``steps_per_epoch = ceil(samples / batch_size)``).
        frequency: Batches between mask updates.
        initial_sparsity: Polynomial schedule: the sparsity at ``begin_step``.
        power: Polynomial schedule: the exponent (3 in Zhu & Gupta).
        sparsity_m_by_n: ``None``, or ``(m, n)``: ``m`` zeros in every ``n``
            consecutive weights, e.g. ``(2, 4)``.
        block_size: ``(height, width)`` of the blocks pruned together in
            rank-2 kernels (Dense); ``(1, 1)`` prunes single weights.
        layers: ``None`` to prune every prunable layer, or a list of layer
            names (or layers) to prune only those.

    Returns:
        A ``tf_keras`` model holding ``PruneLowMagnitude`` wrappers (named
        ``prune_low_magnitude_<layer>``), with the same weights as
        ``student`` and every wrapper's step at 0.

    Raises:
        TypeError: ``student`` is not a Keras model.
        ValueError: The student cannot be converted or wrapped (subclassed,
            custom layers, a Distiller), is already pruned or
            quantization-aware, has nothing prunable, ``layers`` names an
            unknown or unprunable layer, or an argument is out of range
            (the message names it).

    Example:
    >>> import keras
    >>> student = keras.Sequential([keras.Input((8,)),
    ...                             keras.layers.Dense(4, name="hidden"),
    ...                             keras.layers.Dense(2, name="logits")])
    >>> pruned = prune(student, 0.5, epochs=2, steps_per_epoch=10)
    >>> [layer.name for layer in pruned.layers]
    ['prune_low_magnitude_hidden', 'prune_low_magnitude_logits']
    """
    _compat.model_flavour(student, "student")
    targets = _check_targets(target_sparsity, layers)
    _check_choice(schedule, SCHEDULES, "schedule")
    m_by_n = _check_m_by_n(sparsity_m_by_n, target_sparsity)
    _check_int(begin_step, "begin_step", 0)
    for name, value in (("end_step", end_step), ("epochs", epochs),
                        ("steps_per_epoch", steps_per_epoch), ("frequency", frequency)):
        if value is not None:
            _check_int(value, name, 1)
    _check_fraction(initial_sparsity, "initial_sparsity")
    if not (isinstance(power, numbers.Real) and power > 0):
        raise ValueError(f"`power` must be a positive number, got {power!r}.")
    block_size = _check_block_size(block_size)
    _reject_wrapped(student, "prune")

    tfmot = import_tfmot()
    if _compat.flavour_of(student) == _compat.KERAS3:
        model = to_tf_keras(student)
    else:
        _graph_model_or_raise(student, "prune")
        model = _copy_tf_keras(student)

    prunable = _prunable_layers(model)
    selected = _select(targets, layers, prunable, model)
    if not selected:
        raise ValueError(
            f"Model {model.name!r} has no layer TFMOT can prune (prunable: "
            "layers with kernels such as Dense, Conv1D/2D, DepthwiseConv2D, "
            "SeparableConv2D, Embedding). Nothing to do."
        )
    if m_by_n is not None and begin_step != 0:
        raise ValueError(
            "TFMOT fixes the sparsity_m_by_n mask on the first batch: "
            f"begin_step must be 0, got {begin_step}."
        )
    schedules = {}
    for name, sparsity in selected.items():
        if m_by_n is not None:  # the schedule is not used (mask set at step 1)
            schedules[name] = tfmot.sparsity.keras.ConstantSparsity(
                m_by_n[0] / m_by_n[1], begin_step=1, frequency=1)
            continue
        schedules[name] = _make_schedule(
            tfmot, schedule, sparsity, initial_sparsity, power, begin_step,
            end_step, epochs, steps_per_epoch, frequency)

    keras2 = _compat.keras_module(_compat.TF_KERAS)
    wrap_layer = tfmot.sparsity.keras.prune_low_magnitude

    def wrap(layer):
        if isinstance(layer, keras2.Model):
            return keras2.models.clone_model(layer, clone_function=wrap)
        if layer.name not in selected:
            return layer
        kwargs = dict(pruning_schedule=schedules[layer.name], block_size=block_size)
        if m_by_n is not None:
            kwargs["sparsity_m_by_n"] = m_by_n
        return wrap_layer(layer, **kwargs)

    try:
        pruned = keras2.models.clone_model(model, clone_function=wrap)
    except ValueError as error:
        raise ValueError(
            f"TFMOT could not wrap model {model.name!r} for pruning: {error}"
        ) from error
    for wrapper in pruning_wrappers(pruned):
        wrapper.pruning_step.assign(0)
    return pruned


def _make_schedule(tfmot, schedule, sparsity, initial, power, begin, end, epochs,
                   steps_per_epoch, frequency):
    """The TFMOT schedule object. TFMOT's step of the first batch is 1."""
    sched = tfmot.sparsity.keras
    first = begin + 1  # the first batch pruning may update the mask at
    if end is None and epochs is not None and steps_per_epoch is not None:
        end = epochs * steps_per_epoch
    if schedule == "constant":
        if end is not None and end < first:
            raise ValueError(
                f"`end_step`={end} is before the first pruned batch "
                f"({first} = begin_step + 1): nothing would be pruned."
            )
        return sched.ConstantSparsity(
            float(sparsity), begin_step=first,
            end_step=-1 if end is None else int(end),
            frequency=int(frequency or 100))
    if end is None:
        raise ValueError(
            "schedule='polynomial' needs to know where the ramp ends: pass "
            "`end_step`, or `epochs` and `steps_per_epoch` (then end_step = "
            "epochs * steps_per_epoch), or use schedule='constant'."
        )
    span = end - first
    if span < 1:
        raise ValueError(
            f"`end_step`={end} must be at least begin_step + 2 = {begin + 2} "
            "for a polynomial ramp (or use schedule='constant')."
        )
    if frequency is None:
        frequency = max(1, span // 10)
    frequency = min(int(frequency), span)
    start = end - frequency * (span // frequency)  # the last update lands on end
    return sched.PolynomialDecay(
        initial_sparsity=float(initial), final_sparsity=float(sparsity),
        begin_step=int(start), end_step=int(end), power=float(power),
        frequency=frequency)


def pruning_wrappers(model):
    """All TFMOT ``PruneLowMagnitude`` wrappers in a model, however nested.

    Unlike TFMOT's own search (``model.layers``, recursively into models), it
    scans every sub-module, so it also finds wrappers inside custom layers,
    subclassed models and a `keras_distill.Distiller`.

    Args:
        model: Any Keras model or layer (either flavour).

    Returns:
        A list of the wrappers, each once.

    Example:
    >>> import keras
    >>> pruning_wrappers(keras.Sequential([keras.layers.Dense(2)]))
    []
    """
    found, seen = [], set()
    for module in _modules(model):
        if type(module).__name__ == _PRUNING_WRAPPER and id(module) not in seen:
            seen.add(id(module))
            found.append(module)
    return found


def pruning_callbacks(model=None):
    """The callbacks a pruned model needs in ``fit``: pass them to ``fit``.

    Returns ``[UpdatePruningStep]``, a callback doing TFMOT's
    ``UpdatePruningStep`` job for every pruning wrapper it finds in the
    model being trained, however deeply nested (TFMOT's own callback misses
    wrappers inside custom layers): it starts each wrapper's step at 0 if it
    was never trained, and at the end of each epoch and of training it
    applies the masks to the weights, so the weights are exactly sparse when
    ``fit`` returns (training overwrites pruned weights with small values
    until the next forward pass masks them again). Each wrapper's step
    advances by one per training batch by itself.

    Use it with a Distiller (``distiller.fit(..., callbacks=
    pruning_callbacks(distiller))``) or with the pruned model alone.

    Args:
        model: Optional: the model (or Distiller) that will be trained, to
            check now that it holds pruning wrappers.

    Returns:
        A list with one ``tf_keras`` callback.

    Raises:
        ValueError: ``model`` is given and holds no pruning wrapper.

    Example:
    >>> [type(c).__name__ for c in pruning_callbacks()]
    ['UpdatePruningStep']
    """
    if model is not None and not pruning_wrappers(model):
        raise ValueError(
            f"{type(model).__name__} {getattr(model, 'name', '')!r} holds no "
            "pruning wrapper: prune the student with "
            "keras_distill.pruning.prune(student) and train that model."
        )
    return [_callback_class()()]


def _modules(model):
    """``model`` and everything nested in it: ``submodules`` for tf_keras
    (attributes of custom layers included), ``_flatten_layers`` for Keras 3
    (whose layers are not ``tf.Module`` objects)."""
    modules = list(getattr(model, "submodules", ()) or ())
    if not modules and hasattr(model, "_flatten_layers"):
        modules = list(model._flatten_layers(include_self=False, recursive=True))
    return [model] + modules


def _callback_class():
    cached = globals().get("_CALLBACK_CLASS")
    if cached is not None:
        return cached
    keras2 = _compat.keras_module(_compat.TF_KERAS)

    class UpdatePruningStep(keras2.callbacks.Callback):
        """Starts and re-masks every pruning wrapper in the trained model."""

        def on_train_begin(self, logs=None):
            self.wrappers = pruning_wrappers(self.model)
            if not self.wrappers:
                warnings.warn(
                    "pruning_callbacks: the model being trained holds no "
                    "pruning wrapper; nothing is pruned.", stacklevel=2)
            for wrapper in self.wrappers:
                if int(wrapper.pruning_step.numpy()) < 0:
                    wrapper.pruning_step.assign(0)

        def _mask(self):
            for wrapper in self.wrappers:
                wrapper.pruning_obj.weight_mask_op()

        def on_epoch_end(self, epoch, logs=None):
            self._mask()

        def on_train_end(self, logs=None):
            self._mask()

    globals()["_CALLBACK_CLASS"] = UpdatePruningStep
    return UpdatePruningStep


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
        TypeError: ``model`` is not a Keras model.
        ValueError: The wrappers are nested where TFMOT's ``strip_pruning``
            cannot reach (custom layers, subclassed models).

    Example:
    >>> import keras
    >>> student = keras.Sequential([keras.Input((8,)),
    ...                             keras.layers.Dense(2, name="logits")])
    >>> stripped = strip(prune(student, 0.5, schedule="constant"))
    >>> [layer.name for layer in stripped.layers]
    ['logits']
    """
    _compat.model_flavour(model, "model")
    wrappers = pruning_wrappers(model)
    if not wrappers:
        return model
    tfmot = import_tfmot()
    for wrapper in wrappers:
        wrapper.pruning_obj.weight_mask_op()
    reachable = {id(w) for w in _reachable_wrappers(model)}
    hidden = [w.name for w in wrappers if id(w) not in reachable]
    if hidden or not _is_graph_model(model):
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
    return _copy_tf_keras(stripped)


def _reachable_wrappers(model):
    """Wrappers TFMOT's strip_pruning reaches: layers of (nested) models."""
    found = []
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ == _PRUNING_WRAPPER:
            found.append(layer)
        elif _is_graph_model(layer):
            found.extend(_reachable_wrappers(layer))
    return found


# -- reports --------------------------------------------------------------------


def sparsity_report(model):
    """Fraction of exact zeros in each layer's kernel weights.

    Counted weights: kernels (``kernel``, ``depthwise_kernel``,
    ``pointwise_kernel``) and embeddings, not biases or BatchNorm
    parameters. For a layer inside a pruning wrapper, the weights the layer
    computes with (kernel times mask) are counted; inside a QAT wrapper,
    the float kernel. Layers are named as in the original model (wrapper
    prefixes removed), so reports before and after `strip` or QAT compare.

    Args:
        model: A Keras model of either flavour.

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
        model: A Keras model of either flavour.

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
    rows = []
    for name, wrapper, _, kernels in _kernel_layers(model):
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
    if type(wrapper).__name__ == _PRUNING_WRAPPER:
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
    for own, other in (("_trainable_weights", "_non_trainable_weights"),
                       ("_trainable_variables", "_non_trainable_variables")):
        if isinstance(getattr(layer, own, None), list):
            weights = list(getattr(layer, own)) + list(getattr(layer, other, []))
            break
    else:
        weights = list(layer.weights)
    return [w for w in weights if _short_name(w) in _KERNEL_NAMES]


def _children(layer):
    if hasattr(layer, "layers") and isinstance(getattr(layer, "layers"), list):
        return list(layer.layers)
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        try:
            return list(flatten(include_self=False, recursive=False))
        except TypeError:
            return []
    return []


def _wrapped_kernels(wrapper, inner):
    """Kernels of a wrapped layer. QAT wrappers take the float kernel out of
    the inner layer's weights (and swap its attribute for the quantized
    tensor in each call): their kernels are in ``_weight_vars``."""
    weight_vars = getattr(wrapper, "_weight_vars", None)
    if weight_vars:
        return [entry[0] for entry in weight_vars
                if _short_name(entry[0]) in _KERNEL_NAMES]
    return _kernels(inner)


def _kernel_layers(model):
    """``(name, wrapper or None, layer, kernels)`` per layer owning kernels."""
    found, seen = [], set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if type(layer).__name__ in _WRAPPER_CLASSES and hasattr(layer, "layer"):
            inner = layer.layer
            while type(inner).__name__ in _WRAPPER_CLASSES and hasattr(inner, "layer"):
                inner = inner.layer
            kernels = _wrapped_kernels(layer, inner)
            if kernels:
                found.append((inner.name, layer, inner, kernels))
            return
        kernels = _kernels(layer) if layer is not model else []
        if kernels:
            found.append((layer.name, None, layer, kernels))
            return
        for child in _children(layer):
            visit(child)

    visit(model)
    return found


# -- sensitivity analysis -----------------------------------------------------


def sensitivity(model, eval_fn, layers=None, ratios=DEFAULT_RATIOS,
                path="sens.json"):
    """Measures how much accuracy each layer loses when pruned alone.

    For every layer and ratio, the ``ratio`` fraction of the layer's kernel
    weights with the smallest magnitude is set to zero, every other layer
    left intact, and ``eval_fn(model)`` measures the accuracy; the loss is
    ``baseline - accuracy`` (absolute, in the units of ``eval_fn``; PaddleSlim's
    ``sensitivity`` records the loss relative to the baseline instead). The
    model's weights are restored after each measurement, also when
    ``eval_fn`` raises. This is PaddleSlim's ``sensitivity`` with unstructured
    magnitude pruning (what `prune` does).

    After every measurement the results are merged into the JSON file at
    ``path``, written atomically (a temporary file moved onto it), so an
    interrupted analysis loses at most the measurement in progress: calling
    again with the same ``path`` skips what is already there. The file
    records a fingerprint of the model's kernels: resuming with another
    model (or other weights) raises instead of mixing results.

    Args:
        model: A built Keras model of either flavour (no TFMOT needed).
        eval_fn: ``eval_fn(model) -> float``, e.g. the test accuracy.
        layers: ``None`` for every layer with a kernel, or a list of layer
            names.
        ratios: Pruning ratios in ``(0, 1)``.
        path: The JSON file to write (and resume from); ``None`` to keep the
            results in memory only.

    Returns:
        The results: ``{"baseline": float, "layers": {name: {ratio string:
        {"accuracy": float, "loss": float}}}, ...}``, the same as saved.

    Raises:
        ValueError: Unknown layer names, bad ratios, ``eval_fn`` returned
            something that is not a finite number, or ``path`` holds results
            for another model.

    Example:
    >>> import keras, numpy as np, os, tempfile
    >>> model = keras.Sequential([keras.Input((4,)),
    ...                           keras.layers.Dense(2, name="logits")])
    >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    >>> y = np.argmax(model.predict(x, verbose=0), axis=-1)
    >>> def accuracy(m):
    ...     return float(np.mean(np.argmax(m.predict(x, verbose=0), -1) == y))
    >>> path = os.path.join(tempfile.mkdtemp(), "sens.json")
    >>> results = sensitivity(model, accuracy, ratios=(0.5, 0.9), path=path)
    >>> results["baseline"], sorted(results["layers"]["logits"])
    (1.0, ['0.5', '0.9'])
    """
    _compat.model_flavour(model, "model")
    if not callable(eval_fn):
        raise TypeError(f"`eval_fn` must be callable, got {type(eval_fn).__name__}.")
    ratios = _check_ratios(ratios)
    candidates = {name: kernels for name, _, _, kernels in _kernel_layers(model)}
    if layers is None:
        names = list(candidates)
    else:
        names = [getattr(item, "name", item) for item in layers]
        unknown = [n for n in names if n not in candidates]
        if unknown:
            raise ValueError(
                f"`layers` names {unknown}, which are not layers with kernels "
                f"of model {model.name!r}; choose from {list(candidates)}."
            )
    if not names:
        raise ValueError(f"Model {model.name!r} has no layer with a kernel to prune.")
    fingerprint = _fingerprint(model, candidates)
    results = _load_results(path, fingerprint)
    if results is None:
        results = {"version": _SENSITIVITY_VERSION, "fingerprint": fingerprint,
                   "metric": "eval_fn", "loss": "baseline - accuracy",
                   "baseline": None, "layers": {}}
    if results["baseline"] is None:
        results["baseline"] = _evaluate(eval_fn, model)
        _save_results(results, path)
    baseline = results["baseline"]
    for name in names:
        kernels = candidates[name]
        done = results["layers"].setdefault(name, {})
        for ratio in ratios:
            key = _ratio_key(ratio)
            if key in done:
                continue
            saved = [np.array(k.numpy(), copy=True) for k in kernels]
            try:
                _prune_by_magnitude(kernels, saved, ratio)
                accuracy = _evaluate(eval_fn, model)
            finally:
                for kernel, value in zip(kernels, saved):
                    kernel.assign(value)
            done[key] = {"accuracy": accuracy, "loss": baseline - accuracy}
            _save_results(results, path)
    return results


def ratios_by_loss(results, max_loss):
    """Per-layer pruning ratios that keep each layer's loss within ``max_loss``.

    For each layer, the largest ratio whose measured loss does not exceed
    ``max_loss``, interpolated linearly between the two measurements around
    the crossing (from ratio 0 with loss 0 before the first); a layer whose
    loss stays within ``max_loss`` at every ratio gets the largest ratio
    measured (PaddleSlim's ``get_ratios_by_loss``). Losses are absolute, in
    the units of the ``eval_fn`` given to `sensitivity`; layers are judged
    one at a time, so pruning all of them together loses more than
    ``max_loss``: fine-tune (or prune while distilling) afterwards.

    Args:
        results: What `sensitivity` returned, or the path of its JSON file.
        max_loss: The accuracy loss allowed per layer (e.g. ``0.01``).

    Returns:
        ``{layer name: ratio}``, usable as ``prune(target_sparsity=...)``
        (layers that cannot be pruned at all within the loss get 0 and are
        left out).

    Example:
    >>> results = {"baseline": 0.9, "layers": {
    ...     "a": {"0.2": {"loss": 0.0}, "0.4": {"loss": 0.02}},
    ...     "b": {"0.2": {"loss": 0.0}, "0.4": {"loss": 0.0}}}}
    >>> ratios_by_loss(results, 0.01)
    {'a': 0.3, 'b': 0.4}
    """
    results = _results(results)
    if not (isinstance(max_loss, numbers.Real) and math.isfinite(max_loss)
            and max_loss >= 0):
        raise ValueError(f"`max_loss` must be a number >= 0, got {max_loss!r}.")
    ratios = {}
    for name, measured in results["layers"].items():
        points = sorted((float(r), float(v["loss"])) for r, v in measured.items())
        if not points:
            continue
        chosen = points[-1][0]
        previous = (0.0, 0.0)
        for ratio, loss in points:
            if loss > max_loss:
                r0, l0 = previous
                chosen = r0 if loss == l0 else r0 + (ratio - r0) * (max_loss - l0) / (loss - l0)
                chosen = min(max(chosen, r0), ratio)
                break
            previous = (ratio, loss)
        chosen = round(chosen, 6)
        if chosen > 0:
            ratios[name] = chosen
    return ratios


def plot_sensitivity(results, png_path):
    """Draws accuracy loss against pruning ratio, one curve per layer, to PNG.

    Uses Matplotlib's Agg canvas directly (no pyplot, no change to the
    process's Matplotlib backend); the file is written atomically.

    Args:
        results: What `sensitivity` returned, or the path of its JSON file.
        png_path: The image to write.

    Returns:
        ``png_path``.

    Example:
    >>> import os, tempfile
    >>> results = {"baseline": 0.9, "layers": {"a": {"0.5": {"loss": 0.01}}}}
    >>> path = plot_sensitivity(results, os.path.join(tempfile.mkdtemp(), "s.png"))
    >>> os.path.getsize(path) > 0
    True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = _results(results)
    figure = Figure(figsize=(6.4, 4.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for name, measured in results["layers"].items():
        points = sorted((float(r), float(v["loss"])) for r, v in measured.items())
        if points:
            axes.plot([0.0] + [p[0] for p in points], [0.0] + [p[1] for p in points],
                      marker="o", label=name)
    axes.axhline(0.0, color="grey", linewidth=0.5)
    axes.set_xlabel("pruning ratio (fraction of the layer's weights set to zero)")
    axes.set_ylabel("accuracy loss (baseline - accuracy)")
    baseline = results.get("baseline")
    axes.set_title("Sensitivity of each layer to pruning"
                   + (f" (baseline {baseline:.4f})" if baseline is not None else ""))
    if results["layers"]:
        axes.legend(fontsize="small")
    figure.tight_layout()
    with _io.atomic_path(png_path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png")
    return png_path


def _prune_by_magnitude(kernels, values, ratio):
    """Zeros the ``ratio`` smallest-magnitude weights over all ``kernels``."""
    flat = np.concatenate([np.abs(v).ravel() for v in values])
    count = int(round(ratio * flat.size))
    if count == 0:
        return
    order = np.argsort(flat, kind="stable")
    keep = np.ones(flat.size, dtype=bool)
    keep[order[:count]] = False
    start = 0
    for kernel, value in zip(kernels, values):
        mask = keep[start:start + value.size].reshape(value.shape)
        start += value.size
        kernel.assign(np.where(mask, value, 0).astype(value.dtype))


def _evaluate(eval_fn, model):
    value = eval_fn(model)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`eval_fn` must return a number (e.g. the accuracy), got {value!r}."
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"`eval_fn` returned {value}; it must be finite.")
    return value


def _ratio_key(ratio):
    return f"{ratio:.6g}"


def _fingerprint(model, candidates):
    import hashlib

    digest = hashlib.sha256()
    for name, kernels in candidates.items():
        digest.update(name.encode())
        for kernel in kernels:
            value = np.ascontiguousarray(kernel.numpy())
            digest.update(str(value.shape).encode())
            digest.update(value.tobytes())
    return digest.hexdigest()[:16]


def _load_results(path, fingerprint):
    if path is None or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as file:
            results = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"`path`={path!r} exists but is not a sensitivity results file "
            f"({error}); delete it or choose another path."
        ) from error
    if not isinstance(results, dict) or "layers" not in results:
        raise ValueError(f"`path`={path!r} is not a sensitivity results file.")
    if results.get("fingerprint") != fingerprint:
        raise ValueError(
            f"`path`={path!r} holds sensitivity results for another model (or "
            "other weights): delete it or choose another path to start over."
        )
    return results


def _save_results(results, path):
    if path is None:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _io.atomic_write(path, json.dumps(results, indent=1, sort_keys=True))


def _results(results):
    if isinstance(results, (str, os.PathLike)):
        with open(results, encoding="utf-8") as file:
            results = json.load(file)
    if not isinstance(results, dict) or not isinstance(results.get("layers"), dict):
        raise ValueError(
            "`results` must be what `sensitivity` returned (a dict with "
            "'layers') or the path of its JSON file."
        )
    return results


# -- checks and helpers ------------------------------------------------------------


def _check_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")


def _check_fraction(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            0.0 <= value < 1.0):
        raise ValueError(f"`{name}` must be a number in [0, 1), got {value!r}.")


def _check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def _check_targets(target_sparsity, layers):
    if isinstance(target_sparsity, dict):
        if layers is not None:
            raise ValueError(
                "Pass either `layers` or a dict `target_sparsity` (which names "
                "the layers itself), not both."
            )
        if not target_sparsity:
            raise ValueError("`target_sparsity` is an empty dict: nothing to prune.")
        for name, value in target_sparsity.items():
            _check_fraction(value, f"target_sparsity[{name!r}]")
        return dict(target_sparsity)
    _check_fraction(target_sparsity, "target_sparsity")
    return float(target_sparsity)


def _check_m_by_n(m_by_n, target_sparsity):
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


def _check_block_size(block_size):
    if (not isinstance(block_size, (tuple, list)) or len(block_size) != 2
            or not all(isinstance(v, numbers.Integral) and v >= 1 for v in block_size)):
        raise ValueError(
            f"`block_size` must be a pair of positive integers, got {block_size!r}."
        )
    return tuple(int(v) for v in block_size)


def _check_ratios(ratios):
    try:
        ratios = [float(r) for r in ratios]
    except (TypeError, ValueError):
        raise ValueError(f"`ratios` must be numbers in (0, 1), got {ratios!r}.") from None
    if not ratios or not all(0.0 < r < 1.0 for r in ratios):
        raise ValueError(f"`ratios` must be numbers in (0, 1), got {ratios!r}.")
    return sorted(set(ratios))


def _reject_wrapped(model, action):
    classes = {type(m).__name__ for m in _modules(model)}
    if _PRUNING_WRAPPER in classes:
        raise ValueError(
            f"Model {model.name!r} is already pruned (it holds PruneLowMagnitude "
            "wrappers): train it, or `strip` it first and prune the result."
        )
    if classes & _QAT_CLASSES:
        raise ValueError(
            f"Model {model.name!r} is quantization-aware (it holds TFMOT "
            f"quantize wrappers): cannot {action} it. Prune the float model "
            "first, then quantize with keras_distill.quantization.quantize, "
            "which preserves the sparsity."
        )


def _is_graph_model(model):
    return type(model).__name__ == "Sequential" or bool(
        getattr(model, "_is_graph_network", False))


def _graph_model_or_raise(model, action):
    if _is_graph_model(model):
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


def _copy_tf_keras(model):
    """An independent copy (new layers, same weights) of a tf_keras model."""
    keras2 = _compat.keras_module(_compat.TF_KERAS)
    copy = keras2.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _supports_pruning(tfmot, layer):
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    if isinstance(layer, tfmot.sparsity.keras.PrunableLayer) or hasattr(
            layer, "get_prunable_weights"):
        return True
    registry = prune_registry.PruneRegistry
    if not registry.supports(layer):
        return False
    try:
        return bool(registry._weight_names(layer))
    except (KeyError, AttributeError):  # RNN layers: pruned through their cells
        return True


def _prunable_layers(model):
    """``{name: layer}`` of the layers TFMOT can prune, nested models included."""
    tfmot = import_tfmot()
    keras2 = _compat.keras_module(_compat.TF_KERAS)
    found = {}

    def visit(container):
        for layer in container.layers:
            if isinstance(layer, keras2.Model):
                _graph_model_or_raise(layer, "prune")
                visit(layer)
            elif _supports_pruning(tfmot, layer):
                found[layer.name] = layer
    visit(model)
    return found


def _all_layer_names(model):
    names = []
    for layer in getattr(model, "layers", []):
        names.append(layer.name)
        if hasattr(layer, "layers"):
            names.extend(_all_layer_names(layer))
    return names


def _select(targets, layers, prunable, model):
    """``{layer name: sparsity}`` of the layers to wrap."""
    if isinstance(targets, dict):
        wanted = targets
    elif layers is None:
        return {name: targets for name in prunable}
    else:
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise ValueError(
                f"`layers` must be a list of layer names, got {layers!r}."
            )
        wanted = {getattr(item, "name", item): targets for item in layers}
        if not wanted:
            raise ValueError("`layers` is empty: nothing to prune.")
    names = set(_all_layer_names(model))
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise ValueError(
            f"Unknown layer(s) {unknown} in model {model.name!r}; its prunable "
            f"layers are {list(prunable)}."
        )
    unprunable = [n for n in wanted if n not in prunable]
    if unprunable:
        raise ValueError(
            f"Layer(s) {unprunable} of model {model.name!r} cannot be pruned by "
            f"TFMOT (no prunable kernel); prunable layers: {list(prunable)}."
        )
    return {n: float(v) for n, v in wanted.items() if v > 0}
