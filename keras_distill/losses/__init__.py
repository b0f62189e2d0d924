"""Distillation losses: pure functions on tensors.

Every function here is written in ``keras.ops``, so it runs on every Keras 3
backend. It takes tensors (or anything ``keras.ops.convert_to_tensor``
accepts: numpy arrays, lists, the backend's own tensors; on the TensorFlow
backend also ``tf.Tensor``s from ``tf_keras`` models), returns a tensor of
the active backend, keeps no state and works in eager mode and when traced:
inside ``tf.function`` and under XLA on TensorFlow, inside ``jax.jit`` on
JAX. They are computed in float32 (float64 inputs stay float64; on JAX that
needs ``jax_enable_x64``) from log-softmax, so logits of any magnitude give
exact, finite results.

Conventions (see also docs in README):

- ``*_logits`` are unnormalised scores; the class axis is the last one.
- ``reduction="mean"`` (default) averages over every position but the class
  axis (the batch, and e.g. the pixels of a segmentation map);
  ``reduction="none"`` returns one value per position (shape ``logits.shape[:-1]``).

Modules: `logits` (`kd_loss`, `soft_label_loss`, `probabilities_to_logits`,
`dkd_loss`, `dist_loss`, `standardise_logits`) and `features` (`l2_loss`, `fsp_matrix`, `fsp_loss`, `at_loss`,
`rkd_loss`); `_common` holds the helpers they share. Every function is
importable from here: ``keras_distill.losses.kd_loss``.
"""

from keras_distill._validation import check_bool, check_temperature, check_weight
from keras_distill.losses.features import (
    at_loss,
    fsp_loss,
    fsp_matrix,
    l2_loss,
    rkd_loss,
)
from keras_distill.losses.logits import (
    dist_loss,
    dkd_loss,
    kd_loss,
    probabilities_to_logits,
    soft_label_loss,
    standardise_logits,
)

# Old names, still imported by other modules.
_check_temperature = check_temperature
_check_weight = check_weight
_check_bool = check_bool

__all__ = [
    "at_loss",
    "dist_loss",
    "dkd_loss",
    "fsp_loss",
    "fsp_matrix",
    "kd_loss",
    "l2_loss",
    "probabilities_to_logits",
    "rkd_loss",
    "soft_label_loss",
    "standardise_logits",
]
