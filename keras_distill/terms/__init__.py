"""Distillation terms: one small class per method, and a registry.

A *term* turns the teacher's and the student's outputs (logits) or
features into a loss. It validates its options when it is built, knows how
to serialise itself (``get_config`` / ``from_config``) and takes its math
from the pure functions of `keras_distill.losses`, written in
``keras.ops`` (so every term runs on every Keras 3 backend).

- **Logit terms** compare logits: `KD` (Hinton et al. 2015), `SoftLabel`
  (PaddleSlim), `DKD` (Zhao et al. 2022, needs labels), `DIST` (Huang et
  al. 2022, class relations) and `SoftenedLoss`
  (any Keras loss on the temperature-softened distributions, the keras.io
  example's semantics). The label-free ones also subclass
  ``keras.distillation.DistillationLoss``, so they work inside Keras's own
  ``keras.distillation.Distiller`` too. `KD` and `DKD` take
  ``standardise=True`` (logit standardisation, Sun et al. 2024).
- **Feature terms** compare intermediate features: `L2` (FitNets hints),
  `AT` (attention transfer), `RKD` (relational KD), `FSP` (two layers per
  network) and `FeatureLoss` (any callable).

``get(name, **options)`` looks a term up by name (``"kd"``, ``"dkd"``, ``"dist"``,
``"soft_label"``, ``"l2"``, ``"at"``, ``"rkd"``, ``"fsp"``); a new term
class registers itself with `register`.

Example:
>>> from keras_distill import terms
>>> terms.get("kd", temperature=4)
KD(temperature=4.0, standardise=False)
>>> terms.get("dkd", beta=2.0)
DKD(alpha=1.0, beta=2.0, temperature=None, standardise=False)
>>> sorted(terms.names())
['at', 'dist', 'dkd', 'fsp', 'kd', 'l2', 'rkd', 'soft_label']
"""

from keras_distill.terms.base import (
    Term,
    _deserialize,
    _serialize,
    get,
    is_loss_object,
    names,
    per_sample_loss,
    register,
)
from keras_distill.terms.features import (
    AT,
    FSP,
    L2,
    RKD,
    FeatureLoss,
    FeatureTerm,
    feature_term,
)
from keras_distill.terms.logits import (
    DIST,
    DKD,
    KD,
    LogitTerm,
    SoftenedLoss,
    SoftLabel,
    logit_term,
)

__all__ = [
    "AT", "DIST", "DKD", "FSP", "KD", "L2", "RKD", "FeatureLoss", "FeatureTerm",
    "LogitTerm", "SoftLabel", "SoftenedLoss", "Term", "feature_term", "get",
    "is_loss_object", "logit_term", "names", "per_sample_loss", "register",
]
