"""The feature-distillation names at their 0.1 location, for existing code.

Everything here now lives in `keras_distill.feature_distiller`,
`keras_distill.pairs`, `keras_distill.taps` and `keras_distill.ensemble`
(and at the top level, ``from keras_distill import FeatureDistiller``);
``from keras_distill.features import ...`` keeps working.

Example:
>>> from keras_distill.features import FeatureDistiller
>>> import keras_distill
>>> FeatureDistiller is keras_distill.FeatureDistiller
True
"""

from keras_distill.ensemble import MultiTeacherDistiller, teacher_ensemble
from keras_distill.feature_distiller import (
    AttentionDistiller,
    FeatureDistiller,
    FSPDistiller,
    L2Distiller,
    RKDDistiller,
)
from keras_distill.pairs import FeaturePair, FSPPair
from keras_distill.taps import tap_model

__all__ = [
    "AttentionDistiller", "FeatureDistiller", "FeaturePair", "FSPDistiller",
    "FSPPair", "L2Distiller", "MultiTeacherDistiller", "RKDDistiller",
    "tap_model", "teacher_ensemble",
]
