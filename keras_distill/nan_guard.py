"""The NaN guard: a diverging ``fit`` keeps the student's last good weights.

Every distiller's ``fit`` adds it. If an epoch's loss is NaN or infinite,
training stops and the student's (and adapters') weights and the
optimizer's state go back to the end of the last good epoch, with a
warning.

Example:
>>> import keras
>>> from keras_distill import Distiller
>>> make = lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
>>> type(nan_guard(Distiller(make(), make()))).__name__
'NaNGuard'
"""

import warnings

import keras
import numpy as np


def _numpy(variable):
    if hasattr(variable, "numpy"):  # TensorFlow / tf_keras (also mirrored)
        return np.array(variable.numpy(), copy=True)
    return np.array(keras.ops.convert_to_numpy(variable), copy=True)


def nan_guard(distiller):
    """A callback that keeps the student's last good weights.

    If an epoch's loss is NaN or infinite, training stops and the student's
    weights and the optimizer's state are restored to the end of the last
    epoch whose loss was finite (or to what they were before ``fit``), with
    a warning.
    """
    k = distiller._keras()

    class NaNGuard(k.callbacks.Callback):
        def _state(self):
            variables = distiller.optimizer.variables
            variables = variables() if callable(variables) else variables
            return (list(distiller.student.weights)
                    + list(distiller._extra_trainable_weights())
                    + list(variables))

        def _snapshot(self):
            self.good = [_numpy(v) for v in self._state()]

        def on_train_begin(self, logs=None):
            optimizer = distiller.optimizer
            if not getattr(optimizer, "built", True):
                # Build it now so its slots can be restored too.
                optimizer.build(distiller.trainable_weights)
            self._snapshot()
            self.good_epoch = None
            self.failed = None

        # Checked once an epoch, not every batch: a per-batch hook would make
        # Keras synchronise with the device after every step. The epoch's
        # mean loss is NaN/inf as soon as one batch's is.
        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(float(loss)):
                self.failed = epoch
                self.model.stop_training = True
            else:
                self._snapshot()
                self.good_epoch = epoch

        def on_train_end(self, logs=None):
            if self.failed is not None:
                for variable, value in zip(self._state(), self.good):
                    variable.assign(value)
                since = ("the start of fit" if self.good_epoch is None
                         else f"the end of epoch {self.good_epoch + 1}")
                warnings.warn(
                    f"keras_distill: the loss became NaN or infinite in epoch "
                    f"{self.failed + 1}; "
                    f"training stopped and the student's weights were "
                    f"restored to {since}. Lower the learning rate or the "
                    "temperature, or check the data for NaNs.",
                    RuntimeWarning,
                    stacklevel=2,
                )

    return NaNGuard()
