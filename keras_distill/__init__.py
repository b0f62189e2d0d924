"""keras-distill: distil, prune, quantize and export small Keras models.

The public API. Importing this package does not import TensorFlow Model
Optimization or tf_keras (they are loaded only by the code that needs them).

Example:
>>> import keras_distill
>>> "Distiller" in keras_distill.__all__
True
"""

from keras_distill import convert, export, losses, pruning, quantization, terms
from keras_distill.convert import to_tf_keras
from keras_distill.distiller import DecoupledKD, Distiller
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

__version__ = "0.2.0"

__all__ = [
    "Distiller",
    "DecoupledKD",
    "losses",
    "terms",
    "convert",
    "export",
    "pruning",
    "quantization",
    "to_tf_keras",
    "__version__",
    "AttentionDistiller",
    "FeatureDistiller",
    "FeaturePair",
    "FSPDistiller",
    "FSPPair",
    "L2Distiller",
    "MultiTeacherDistiller",
    "RKDDistiller",
    "tap_model",
    "teacher_ensemble",
]
