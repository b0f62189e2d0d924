"""`prune`: wrap a student's prunable layers with TFMOT's ``PruneLowMagnitude``.

Also the schedules (`SCHEDULES`: TFMOT ``PolynomialDecay`` and
``ConstantSparsity``, with steps counted in training batches) and which
layers TFMOT can prune. TFMOT is imported inside the functions only.
"""

import numbers
import warnings

from keras_distill import _compat, _introspect, _validation
from keras_distill._compat import import_tfmot
from keras_distill.convert import to_tf_keras
from keras_distill.pruning import _checks
from keras_distill.pruning.callbacks import pruning_wrappers
from keras_distill.pruning.sparsity import kernel_layers

SCHEDULES = ("polynomial", "constant")
"""The pruning schedules `prune` knows."""


def prune(student, target_sparsity=0.5, *, schedule="polynomial", begin_step=0,
          end_step=None, epochs=None, steps_per_epoch=None, frequency=None,
          initial_sparsity=0.0, power=3, sparsity_m_by_n=None, block_size=(1, 1),
          layers=None):
    """Returns a copy of ``student`` whose layers are magnitude-pruned in training.

    Each prunable layer (Dense, Conv1D/2D/3D and their transposes, the
    pointwise kernel of SeparableConv1D/2D, Embedding, ...) is wrapped with
    TFMOT's ``PruneLowMagnitude``: while the model trains, the
    smallest-magnitude weights of its kernel are masked to zero following a
    schedule, so the student learns to do without them. Train the result in
    a `keras_distill.Distiller` (or alone) with
    ``callbacks=pruning_callbacks(model)``, then `strip` it.

    TFMOT cannot prune ``DepthwiseConv2D`` kernels, nor the depthwise kernel
    of ``SeparableConv*``: they stay dense, and a warning names them with the
    sparsity the model's kernels (as `sparsity_report` counts them) will
    actually reach overall, below the target.

    Schedules (steps count training batches, starting from the first batch
    this model trains on):

    - ``"polynomial"`` (Zhu & Gupta 2017, TFMOT ``PolynomialDecay``): the
      sparsity rises from ``initial_sparsity`` (at most the target) to
      ``target_sparsity`` as
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
        TypeError: ``student`` is not a Keras model, or is a distiller
            (pass ``distiller.student``).
        ValueError: The student cannot be converted or wrapped (subclassed,
            custom layers), is not built, is already pruned or
            quantization-aware, has nothing prunable, ``layers`` names an
            unknown or unprunable layer, or an argument is out of range
            (the message names it).

    Warns:
        UserWarning: Some kernels cannot be pruned (``DepthwiseConv2D``...):
            the layers, and the overall sparsity reached.

    Example:
    >>> import keras
    >>> student = keras.Sequential([keras.Input((8,)),
    ...                             keras.layers.Dense(4, name="hidden"),
    ...                             keras.layers.Dense(2, name="logits")])
    >>> pruned = prune(student, 0.5, epochs=2, steps_per_epoch=10)
    >>> [layer.name for layer in pruned.layers]
    ['prune_low_magnitude_hidden', 'prune_low_magnitude_logits']
    """
    _introspect.check_model(student, "student", "prune")
    targets = _checks.check_targets(target_sparsity, layers)
    _validation.check_choice(schedule, SCHEDULES, "schedule")
    m_by_n = _checks.check_m_by_n(sparsity_m_by_n, target_sparsity)
    _checks.check_int(begin_step, "begin_step", 0)
    for name, value in (("end_step", end_step), ("epochs", epochs),
                        ("steps_per_epoch", steps_per_epoch), ("frequency", frequency)):
        if value is not None:
            _checks.check_int(value, name, 1)
    _checks.check_fraction(initial_sparsity, "initial_sparsity")
    lowest = min(targets.values()) if isinstance(targets, dict) else targets
    if schedule == "polynomial" and m_by_n is None and initial_sparsity > lowest:
        raise ValueError(
            f"`initial_sparsity`={initial_sparsity} is above the target "
            f"sparsity {lowest}: the polynomial schedule only raises the "
            "sparsity. Lower `initial_sparsity` (default 0) or raise "
            "`target_sparsity`."
        )
    if not (isinstance(power, numbers.Real) and power > 0):
        raise ValueError(f"`power` must be a positive number, got {power!r}.")
    block_size = _checks.check_block_size(block_size)
    _checks.check_built(student, "student", "prune")
    _checks.reject_wrapped(student, "prune")

    tfmot = import_tfmot()
    if _compat.flavour_of(student) == _compat.KERAS3:
        model = to_tf_keras(student)
    else:
        _checks.graph_model_or_raise(student, "prune")
        model = _checks.copy_tf_keras(student)

    prunable = _prunable_layers(model)
    selected = _select(targets, layers, prunable, model)
    if not selected:
        raise ValueError(
            f"Model {model.name!r} has no layer TFMOT can prune (prunable: "
            "layers with kernels such as Dense, Conv1D/2D, SeparableConv2D, "
            "Embedding; not DepthwiseConv2D). Nothing to do."
        )
    _warn_dense_kernels(tfmot, model, selected, layers is None and not isinstance(
        targets, dict), m_by_n, target_sparsity)
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



def _warn_dense_kernels(tfmot, model, selected, all_layers, m_by_n, target):
    """Warns when kernels the user meant to prune stay dense (TFMOT has no
    prunable weights for DepthwiseConv2D, nor for SeparableConv's depthwise
    kernel), with the sparsity the model's kernels reach overall."""
    total = zeros = 0
    dense = []
    for name, _, layer, kernels in kernel_layers(model):
        pruned = _prunable_weight_ids(tfmot, layer) if name in selected else set()
        left = [k for k in kernels if id(k) not in pruned]
        sparsity = m_by_n[0] / m_by_n[1] if m_by_n else selected.get(name, 0.0)
        total += sum(int(k.shape.num_elements()) for k in kernels)
        zeros += sparsity * sum(int(k.shape.num_elements()) for k in kernels
                                if id(k) in pruned)
        if left and (all_layers or name in selected):
            what = ", ".join(k.name.split("/")[-1].split(":")[0] for k in left)
            dense.append(f"{name!r} ({type(layer).__name__}: {what})")
    if not dense or not total:
        return
    asked = "" if isinstance(target, dict) else (
        f", not the {(m_by_n[0] / m_by_n[1] if m_by_n else target):.1%} asked")
    warnings.warn(
        f"prune: TFMOT cannot prune the kernels of {', '.join(dense)}: they "
        f"stay dense, so the model's kernels will be {zeros / total:.1%} zeros "
        f"overall once the schedule ends{asked} (the pruned layers reach "
        "their target; check with keras_distill.pruning.sparsity_report).",
        UserWarning, stacklevel=3)


def _prunable_weight_ids(tfmot, layer):
    """``id``s of the weights TFMOT prunes in ``layer``."""
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    if hasattr(layer, "get_prunable_weights"):  # a PrunableLayer
        return {id(w) for w in layer.get_prunable_weights()}
    try:
        names = prune_registry.PruneRegistry._weight_names(layer)
    except (KeyError, AttributeError):  # RNN layers: pruned through their cells
        return {id(w) for w in layer.weights}
    return {id(getattr(layer, name)) for name in names}


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

    def is_model(layer):
        return isinstance(layer, keras2.Model)

    found = {}
    for layer in _introspect.iter_layers(model, nested=is_model):
        if is_model(layer):
            _checks.graph_model_or_raise(layer, "prune")
        elif _supports_pruning(tfmot, layer):
            found[layer.name] = layer
    return found


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
    names = {layer.name for layer in _introspect.iter_layers(
        model, nested=lambda layer: hasattr(layer, "layers"))}
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
