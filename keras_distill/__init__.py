"""keras-distill: distil, prune, quantize and export small Keras models.

The public API. Importing this package does not import TensorFlow Model
Optimization or tf_keras (they are loaded only by the code that needs them).

Example:
>>> import keras_distill
>>> "Distiller" in keras_distill.__all__
True
"""

from keras_distill import losses
from keras_distill.distiller import Distiller

__version__ = "0.1.0"

__all__ = ["Distiller", "losses", "__version__"]
