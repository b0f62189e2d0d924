"""The NaN guard: a diverging ``fit`` keeps the student's last good weights.

Every distiller's ``fit`` adds it. If an epoch's loss is NaN or infinite,
or its last update left non-finite weights behind (the loss logged for an
epoch is computed before its last update), training stops and the
student's (and adapters') weights and the optimizer's state go back to the
end of the last good epoch, with a warning. Only finite states are kept.

Example:
>>> import keras
>>> from keras_distill import Distiller
>>> make = lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
>>> type(nan_guard(Distiller(make(), make()))).__name__
'NaNGuard'
"""

import warnings

import numpy as np

from keras_distill._arrays import to_numpy


def _numpy(variable):
    return np.array(to_numpy(variable), copy=True)


def with_nan_guard(distiller, callbacks):
    """``callbacks`` with the distiller's `nan_guard` among them: first, or
    right after the last ``BackupAndRestore`` (so that its snapshot is of
    the weights that callback restored, not of those it replaced).

    Example:
    >>> import keras
    >>> from keras_distill import Distiller
    >>> make = lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> backup = keras.callbacks.BackupAndRestore("/tmp/backup")
    >>> out = with_nan_guard(Distiller(make(), make()), [backup])
    >>> [type(c).__name__ for c in out]
    ['BackupAndRestore', 'NaNGuard']
    """
    restore = distiller._keras().callbacks.BackupAndRestore
    after = max((i + 1 for i, c in enumerate(callbacks)
                 if isinstance(c, restore)), default=0)
    callbacks = list(callbacks)
    return callbacks[:after] + [nan_guard(distiller)] + callbacks[after:]


def nan_guard(distiller):
    """A callback that keeps the student's last good weights.

    If an epoch's loss is NaN or infinite, or the weights are at its end,
    training stops and the student's weights and the optimizer's state are
    restored to the end of the last epoch that left them finite (or to what
    they were before ``fit``), with a warning. Non-finite weights are never
    restored.
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
            """Keeps the current state if it is finite; tells whether."""
            state = [_numpy(v) for v in self._state()]
            if not all(np.isfinite(v).all() for v in state
                       if v.dtype.kind in "fc"):
                return False
            self.good = state
            return True

        def on_train_begin(self, logs=None):
            self.good = None
            self.good_epoch = None
            self.failed = None
            optimizer = distiller.optimizer
            if not distiller.student.built:
                return  # built by Keras's first step; kept from epoch 1 on
            if not getattr(optimizer, "built", True):
                # Build it now so its slots can be restored too.
                optimizer.build(distiller.trainable_weights)
            self._snapshot()

        # Checked once an epoch, not every batch: a per-batch hook would make
        # Keras synchronise with the device after every step. The epoch's
        # mean loss is NaN/inf as soon as one batch's is; its last update is
        # seen in the weights.
        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(float(loss)):
                self.failed, self.cause = epoch, "the loss"
            elif not self._snapshot():
                self.failed, self.cause = epoch, "the student's weights"
            else:
                self.good_epoch = epoch
                return
            self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.failed is None:
                return
            if self.good is None:
                outcome = ("no finite state of the student was seen, so "
                           "nothing could be restored")
            else:
                for variable, value in zip(self._state(), self.good):
                    variable.assign(value)
                outcome = "the student's weights were restored to " + (
                    "the start of fit" if self.good_epoch is None
                    else f"the end of epoch {self.good_epoch + 1}")
            advice = ("Lower the learning rate or the temperature, or check "
                      "the data for NaNs.")
            if distiller.teacher_dtype == "float16":
                advice = ("The float16 teacher may have overflowed: use "
                          "teacher_dtype='bfloat16' or None. Or: " + advice)
            warnings.warn(
                f"keras_distill: {self.cause} became NaN or infinite in "
                f"epoch {self.failed + 1}; training stopped and {outcome}. "
                + advice,
                RuntimeWarning,
                stacklevel=2,
            )

    return NaNGuard()
