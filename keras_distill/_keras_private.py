"""The only place keras_distill touches private attributes of Keras objects.

Each function below wraps one private attribute for which neither Keras 3
nor ``tf_keras`` offers a public route. Keeping them here means a Keras
upgrade has one small module to check; the rest of the package calls these
functions, never the private attributes. (TFMOT and LiteRT privates, in
`keras_distill.pruning` and `keras_distill.export`, are a separate matter.)

- `tracked_sublayers(layer)` uses ``layer._flatten_layers(include_self=False,
  recursive=False)`` (Keras 3 ``keras.src.layers.layer.Layer``, and
  ``tf_keras``'s ``base_layer.Layer``, which takes the same keywords).

  Why private: a *plain* layer (not a model) tracks the layers it holds,
  such as the layer inside a wrapper (TFMOT's ``PruneLowMagnitude``,
  ``Bidirectional``) or those a custom layer keeps as attributes, but lists
  them publicly nowhere: ``layers`` exists on models only; Keras 3 layers
  have no ``submodules``; ``tf_keras``'s ``submodules`` is recursive and
  includes non-layer ``tf.Module`` objects, so it cannot give the direct
  children. Used by `keras_distill._introspect.iter_layers`.

  On a Keras upgrade check: that ``Layer._flatten_layers`` still exists and
  accepts ``include_self`` and ``recursive`` (if it is gone or its signature
  changes this returns ``[]``: wrappers and custom layers would then look
  empty, which the doctest below and ``tests/test_convert.py``
  (``test_tracked_sublayers``, both flavours) catch); or whether Keras now
  has a public listing of a layer's direct sublayers, to use instead.

- `run_through_graph(model, inputs, operation_fn, call_fn)` uses
  ``model._run_through_graph(inputs, operation_fn=..., call_fn=...)``
  (Keras 3 ``keras.src.ops.function.Function``, the base of Functional
  models).

  Why private: Keras 3 replays a Functional graph node by node, letting the
  caller substitute each operation, only through this method. The public
  ``keras.models.clone_model(..., clone_function=..., call_function=...)``
  replays the graph too, but then builds a *Keras 3* model of the results,
  which fails when the substituted operations are ``tf_keras`` layers and
  the tensors ``tf_keras`` tensors (what `keras_distill.convert.to_tf_keras`
  needs). Used by `keras_distill.convert`.

  On a Keras upgrade check: that ``Function._run_through_graph`` still takes
  ``inputs`` (flattened internally, matched to ``model.inputs`` by
  position), ``operation_fn(operation) -> callable`` and ``call_fn(op,
  *args, **kwargs)``, calls ``call_fn`` for every non-input node in
  topological order and returns the outputs packed like ``model.outputs``;
  ``tests/test_convert.py`` covers residual, nested and shared graphs.

- `untrack(owner, layer)` uses ``owner._tracker.untrack(layer)`` (Keras 3
  ``keras.src.utils.tracking.Tracker``).

  Why private: ``del owner.attribute`` on a Keras 3 layer does not drop the
  layer it held from ``owner.variables``, where the JAX trainer takes its
  state from; no public method untracks. Used by
  `keras_distill._distribute.prepare` when a teacher is swapped for its copy
  under a ``keras.distribution`` (the old teacher's variables would still
  be part of the training state).

  On a Keras upgrade check: that ``Layer._tracker`` still exists with
  ``untrack``; ``tests/test_multiprocess_jax.py`` (a teacher built before
  ``set_distribution``) fails at the first step otherwise.

Example:
>>> import keras
>>> inner = keras.layers.Dense(2, name="inner")
>>> wrapper = keras.layers.TimeDistributed(inner)
>>> [layer.name for layer in tracked_sublayers(wrapper)]
['inner']
>>> tracked_sublayers(object())
[]
"""


def tracked_sublayers(layer):
    """The layers a layer tracks directly (not recursively), by
    ``layer._flatten_layers``; ``[]`` when it has no such method.

    Args:
        layer: A Keras 3 or ``tf_keras`` layer (anything else gives ``[]``).

    Returns:
        A list of layers, in tracking order, ``layer`` itself excluded.
    """
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return []
    try:
        return list(flatten(include_self=False, recursive=False))
    except TypeError:
        return []


def run_through_graph(model, inputs, operation_fn, call_fn):
    """Replays a Keras 3 Functional graph, by ``model._run_through_graph``.

    Each node's operation ``op`` is replaced by ``operation_fn(op)`` and
    called as ``call_fn(operation_fn(op), *args, **kwargs)`` on the values
    computed so far, starting from ``inputs``; nothing is built from the
    results, so they may be tensors of another framework (``tf_keras``).

    Args:
        model: A built Keras 3 Functional model.
        inputs: One value per ``model.inputs`` (in a structure that flattens
            to them, in order).
        operation_fn: ``fn(operation) -> callable``.
        call_fn: ``fn(callable, *args, **kwargs) -> outputs``.

    Returns:
        The outputs of the replayed graph, structured as ``model.outputs``.

    Example:
    >>> import keras
    >>> x = keras.Input((2,))
    >>> model = keras.Model(x, keras.layers.Dense(3, name="d")(x))
    >>> seen = []
    >>> def call(op, *args, **kwargs):
    ...     seen.append(op.name)
    ...     return op(*args, **kwargs)
    >>> y = run_through_graph(model, [keras.Input((2,))], lambda op: op, call)
    >>> seen, tuple(y.shape)
    (['d'], (None, 3))
    """
    return model._run_through_graph(
        inputs, operation_fn=operation_fn, call_fn=call_fn
    )


def untrack(owner, layer):
    """Drops ``layer`` from what the Keras 3 layer ``owner`` tracks, by
    ``owner._tracker.untrack``; nothing for owners without a tracker.

    Example:
    >>> import keras
    >>> owner = keras.layers.Layer()
    >>> owner.inner = keras.layers.Dense(1)
    >>> owner.inner.build((None, 2))
    >>> old = owner.inner
    >>> del owner.inner
    >>> untrack(owner, old)
    >>> len(owner.variables)
    0
    """
    tracker = getattr(owner, "_tracker", None)
    if tracker is not None and hasattr(tracker, "untrack"):
        tracker.untrack(layer)
