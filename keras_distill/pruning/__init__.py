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

Modules: `wrap` (`prune`, the schedules), `callbacks` (`pruning_callbacks`,
`pruning_wrappers`, and `fit_callbacks`, which ``Distiller.fit`` reaches
through `keras_distill._fit_hooks`), `sparsity` (`strip`,
`sparsity_report`, `total_sparsity`) and `sensitivity` (`sensitivity`,
`ratios_by_loss`, `plot_sensitivity`).
"""

from keras_distill import _fit_hooks
from keras_distill.pruning.callbacks import (
    fit_callbacks,
    pruning_callbacks,
    pruning_wrappers,
)
from keras_distill.pruning.sensitivity import (
    DEFAULT_RATIOS,
    plot_sensitivity,
    ratios_by_loss,
    sensitivity,
)
from keras_distill.pruning.sparsity import sparsity_report, strip, total_sparsity
from keras_distill.pruning.wrap import SCHEDULES, prune

__all__ = [
    "DEFAULT_RATIOS",
    "SCHEDULES",
    "fit_callbacks",
    "plot_sensitivity",
    "prune",
    "pruning_callbacks",
    "pruning_wrappers",
    "ratios_by_loss",
    "sensitivity",
    "sparsity_report",
    "strip",
    "total_sparsity",
]

_fit_hooks.register(fit_callbacks)
