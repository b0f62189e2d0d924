"""keras-distill: distil, prune, quantize and export small Keras models.

The public API. Importing this package imports nothing heavy: the names below
are loaded on first use (PEP 562), all of them at once, so ``keras-distill``
can set up its signal handlers before TensorFlow starts. TensorFlow Model
Optimization and tf_keras are loaded only by the code that needs them.

Example:
>>> import keras_distill
>>> "Distiller" in keras_distill.__all__
True
"""

import importlib

__version__ = "0.2.0"

# The submodules and the names of the public API, in the order they load.
_SUBMODULES = ("convert", "export", "losses", "pruning", "quantization", "terms")
_NAMES = {
    "to_tf_keras": "convert",
    "DecoupledKD": "distiller",
    "DiskCache": "disk_cache",
    "Distiller": "distiller",
    "MultiTeacherDistiller": "ensemble",
    "teacher_ensemble": "ensemble",
    "AttentionDistiller": "feature_distiller",
    "FeatureDistiller": "feature_distiller",
    "FSPDistiller": "feature_distiller",
    "L2Distiller": "feature_distiller",
    "RKDDistiller": "feature_distiller",
    "FeaturePair": "pairs",
    "FSPPair": "pairs",
    "tap_model": "taps",
}

__all__ = [
    "Distiller",
    "DecoupledKD",
    "DiskCache",
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


def _load_all():
    """Imports the whole public API, as a plain ``import keras_distill`` once
    did (so e.g. pruning's ``fit`` callback is registered before any fit)."""
    for name in _SUBMODULES:
        importlib.import_module(f"{__name__}.{name}")
    for name, module in _NAMES.items():
        globals()[name] = getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __getattr__(name):
    if name in _SUBMODULES:  # no full load: the package's own modules import these
        return importlib.import_module(f"{__name__}.{name}")
    if name in _NAMES:
        _load_all()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
