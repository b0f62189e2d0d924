"""The callbacks a pruned model trains with, and finding its pruning wrappers.

`pruning_callbacks` gives the callback that starts and re-masks every TFMOT
pruning wrapper in the model being trained (TFMOT's own ``UpdatePruningStep``
misses wrappers nested in custom layers). `fit_callbacks` is the provider
`keras_distill._fit_hooks` calls, so that ``Distiller.fit`` adds the callback
to a pruned student by itself without knowing about pruning. Wrappers are
found by class name: nothing here imports TFMOT.
"""

import warnings

from keras_distill import _compat, _introspect

_CALLBACK_CLASS = None


def pruning_wrappers(model):
    """All TFMOT ``PruneLowMagnitude`` wrappers in a model, however nested.

    Unlike TFMOT's own search (``model.layers``, recursively into models), it
    scans every sub-module, so it also finds wrappers inside custom layers,
    subclassed models and a `keras_distill.Distiller`.

    Args:
        model: Any Keras model or layer (either flavour).

    Returns:
        A list of the wrappers, each once.

    Example:
    >>> import keras
    >>> pruning_wrappers(keras.Sequential([keras.layers.Dense(2)]))
    []
    """
    return [module for module in _introspect.iter_submodules(model)
            if type(module).__name__ == _introspect.PRUNING_WRAPPER]


def pruning_callbacks(model=None):
    """The callbacks a pruned model needs in ``fit``: pass them to ``fit``.

    Returns ``[UpdatePruningStep]``, a callback doing TFMOT's
    ``UpdatePruningStep`` job for every pruning wrapper it finds in the
    model being trained, however deeply nested (TFMOT's own callback misses
    wrappers inside custom layers): it starts each wrapper's step at 0 if it
    was never trained, and at the end of each epoch and of training it
    applies the masks to the weights, so the weights are exactly sparse when
    ``fit`` returns (training overwrites pruned weights with small values
    until the next forward pass masks them again). Each wrapper's step
    advances by one per training batch by itself.

    Use it with a Distiller (``distiller.fit(..., callbacks=
    pruning_callbacks(distiller))``) or with the pruned model alone.

    Args:
        model: Optional: the model (or Distiller) that will be trained, to
            check now that it holds pruning wrappers.

    Returns:
        A list with one ``tf_keras`` callback.

    Raises:
        ValueError: ``model`` is given and holds no pruning wrapper.

    Example:
    >>> [type(c).__name__ for c in pruning_callbacks()]
    ['UpdatePruningStep']
    """
    if model is not None and not pruning_wrappers(model):
        raise ValueError(
            f"{type(model).__name__} {getattr(model, 'name', '')!r} holds no "
            "pruning wrapper: prune the student with "
            "keras_distill.pruning.prune(student) and train that model."
        )
    return [_callback_class()()]



def fit_callbacks(student, callbacks):
    """The pruning callbacks ``fit`` must add for ``student``, if any.

    Registered with `keras_distill._fit_hooks` when `keras_distill.pruning`
    is imported: ``Distiller.fit`` then adds `pruning_callbacks` to a student
    holding pruning wrappers, unless the user passed an
    ``UpdatePruningStep`` (TFMOT's or ours, recognised by class name)
    already, so the pruning step advances exactly once per batch.

    Args:
        student: The model being trained.
        callbacks: The callbacks the user passed to ``fit``.

    Returns:
        `pruning_callbacks` for a pruned student without such a callback,
        else ``[]``.

    Example:
    >>> import keras
    >>> fit_callbacks(keras.Sequential([keras.layers.Dense(2)]), [])
    []
    """
    if not pruning_wrappers(student):
        return []
    if any(type(c).__name__ == "UpdatePruningStep" for c in callbacks or ()):
        return []
    return pruning_callbacks(student)


def _callback_class():
    """The callback class, made once: it subclasses a ``tf_keras`` class, and
    ``tf_keras`` is imported only when a pruned model needs it."""
    global _CALLBACK_CLASS
    if _CALLBACK_CLASS is not None:
        return _CALLBACK_CLASS
    keras2 = _compat.keras_module(_compat.TF_KERAS)

    class UpdatePruningStep(keras2.callbacks.Callback):
        """Starts and re-masks every pruning wrapper in the trained model."""

        def on_train_begin(self, logs=None):
            self.wrappers = pruning_wrappers(self.model)
            if not self.wrappers:
                warnings.warn(
                    "pruning_callbacks: the model being trained holds no "
                    "pruning wrapper; nothing is pruned.", stacklevel=2)
            for wrapper in self.wrappers:
                if int(wrapper.pruning_step.numpy()) < 0:
                    wrapper.pruning_step.assign(0)

        def _mask(self):
            for wrapper in self.wrappers:
                wrapper.pruning_obj.weight_mask_op()

        def on_epoch_end(self, epoch, logs=None):
            self._mask()

        def on_train_end(self, logs=None):
            self._mask()

    _CALLBACK_CLASS = UpdatePruningStep
    return UpdatePruningStep


