"""Models under ``tf.distribute`` and ``keras.distribution``: where their
variables live, and what each process may be given.

Under ``tf.distribute`` (e.g. ``MirroredStrategy``) a model must be built
inside ``strategy.scope()``; Keras's own errors for one that is not come
late (at ``fit``, an empty ``AssertionError`` on Keras 3) or run to
thousands of characters listing every weight (``tf_keras``, at
``compile``) and never name the model. ``Distiller.compile`` asks this
module instead: the student must be built in the scope (one line saying
so), the teacher is cloned into it when Keras can clone it (the user's
teacher untouched, its weights copied).

Under a multi-process ``keras.distribution`` (JAX: ``DataParallel`` over
the processes of ``keras.distribution.initialize``) the same holds for
``keras.distribution.set_distribution(...)``: a model built before it keeps
its variables on this process's device, and Keras fails at the first step
naming neither model. ``compile`` checks that as well (`prepare`); `check_data`
refuses data Keras cannot shard before the teacher runs; and
`local_predict` runs the teacher over this process's own arrays for
``fit(cache_teacher=True)`` (Keras's ``predict`` cannot fetch outputs that
span processes).

TensorFlow is imported only when it is loaded already (a strategy cannot
exist otherwise), and JAX only when it is Keras's backend, so nothing here
costs anything on the other backends.

Example:
>>> current_strategy() is None  # no strategy scope is open
True
>>> multi_process()  # no multi-process keras.distribution is set
False
"""

import sys
import weakref

import keras
import numpy as np

from keras_distill import _compat, _keras_private
from keras_distill._arrays import in_memory
from keras_distill._probes import short

_CREATE_INSIDE = (
    "create the {role} inside `with strategy.scope():` (build the model, "
    "then the distiller, and compile it there)"
)


def current_strategy():
    """The ``tf.distribute`` strategy whose scope is open, or ``None``.

    Example:
    >>> current_strategy() is None
    True
    """
    tf = sys.modules.get("tensorflow")
    if tf is None or not tf.distribute.has_strategy():
        return None
    return tf.distribute.get_strategy()


def outside_scope(model, strategy):
    """The names of ``model``'s variables not created in ``strategy``'s scope.

    Example:
    >>> import keras, tensorflow as tf
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> outside_scope(model, tf.distribute.get_strategy())
    []
    """
    tf = sys.modules["tensorflow"]
    found = []
    for variable in model.weights:
        # A Keras 3 variable holds the TensorFlow one in `value`.
        inner = variable if isinstance(variable, tf.Variable) else getattr(
            variable, "value", variable)
        if not isinstance(inner, tf.Variable):  # another backend's array
            continue
        if not strategy.extended.variable_created_in_scope(inner):
            found.append(getattr(variable, "path", None) or variable.name)
    return found


def check_student(student, strategy):
    """Raises a one-line ``ValueError`` if the student was built outside
    ``strategy``'s scope (it trains: it cannot be swapped for a copy).

    Example:
    >>> import keras, tensorflow as tf
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> check_student(model, tf.distribute.get_strategy())
    """
    missed = outside_scope(student, strategy)
    if missed:
        raise ValueError(
            f"The student {student.name!r} was built outside the open "
            f"`{type(strategy).__name__}.scope()` (its variables, e.g. "
            f"{missed[0]!r}, are not distributed): "
            + _CREATE_INSIDE.format(role="student") + "."
        )


def teacher_in_scope(teacher, strategy, can_clone=True):
    """``teacher``, or a copy of it built in ``strategy``'s scope.

    A teacher whose variables all live in the scope is returned as is.
    Otherwise a Sequential or Functional teacher (or a teacher ensemble of
    them) is cloned inside the scope and given the teacher's weights; the
    user's teacher is not touched. A teacher Keras cannot clone (a
    subclassed model), or one the distiller cannot swap (``can_clone``
    false: feature distillers tap the teacher they were built with), raises
    a one-line ``ValueError``.

    Example:
    >>> import keras, tensorflow as tf
    >>> teacher = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> teacher_in_scope(teacher, tf.distribute.get_strategy()) is teacher
    True
    """
    if not outside_scope(teacher, strategy):
        return teacher
    return _copy_teacher(
        lambda: _clone(teacher, strategy),
        f"The teacher {teacher.name!r} was built outside the open "
        f"`{type(strategy).__name__}.scope()`", "into the scope",
        _CREATE_INSIDE.format(role="teacher"), can_clone)


def _copy_teacher(copy, where, into, advice, can_clone):
    """``copy()``: a teacher copied where it must live (a strategy's scope,
    a distribution's devices), or a one-line ``ValueError`` saying
    ``where`` it was built and ``advice``, when the distiller cannot swap
    it (``can_clone`` false) or Keras cannot copy it."""
    if not can_clone:
        raise ValueError(
            f"{where}, and this distiller reads its layers directly: "
            f"{advice}.")
    try:
        return copy()
    except Exception as error:  # noqa: BLE001 - any reason Keras refuses
        raise ValueError(
            f"{where} and Keras cannot copy it {into} "
            f"({type(error).__name__}: {short(error).split('. ')[0][:160]}): "
            f"{advice}.") from None


def _clone(model, strategy):
    map_teachers = getattr(model, "map_teachers", None)
    if map_teachers is not None:  # a teacher ensemble: each teacher
        with strategy.scope():
            return map_teachers(lambda t: teacher_in_scope(t, strategy))
    k = _compat.keras_module(_compat.flavour_of(model))
    with strategy.scope():
        copy = k.models.clone_model(model)
        copy.set_weights(model.get_weights())
    return copy


def prepare(distiller):
    """What ``compile`` does under an open strategy scope or a
    multi-process ``keras.distribution``: refuses a student built outside
    it (outside the scope, or before ``set_distribution``), and puts a copy
    of a teacher built outside it in its place (``distiller.teacher`` is
    then that copy; the user's teacher is not touched). Under a strategy
    scope only a ``tf_keras`` distiller's teacher is copied: a Keras 3
    distiller reads such a teacher from its device, as it is. Nothing
    happens without either.

    Example:
    >>> prepare(None)  # no strategy scope, no multi-process distribution
    """
    strategy = current_strategy()
    if strategy is not None:
        check_student(distiller.student, strategy)
        if distiller._flavour != _compat.TF_KERAS:
            return
        teacher = teacher_in_scope(
            distiller.teacher, strategy,
            # Feature distillers tap the float teacher they were built with.
            can_clone=distiller._supports_teacher_dtype)
    else:
        distribution = keras_distribution()
        if distribution is None or distiller._flavour == _compat.TF_KERAS:
            return
        check_student_devices(distiller.student, distribution)
        teacher = teacher_on_devices(distiller.teacher, distribution,
                                     can_clone=distiller._supports_teacher_dtype)
    if teacher is not distiller.teacher:
        old = distiller.teacher
        del distiller.teacher  # tf_keras untracks it (and its weights)
        if distiller._flavour != _compat.TF_KERAS:
            _keras_private.untrack(distiller, old)
        distiller.teacher = teacher
        distiller._set_teacher_dtype(distiller.teacher_dtype)


# ------------------------------------------------------ keras.distribution
_BUILD_AFTER = (
    "build the {role} after `keras.distribution.set_distribution(...)` "
    "(then the distiller, and compile it)"
)


def keras_distribution():
    """The ``keras.distribution`` that is set, if it spans more than one
    process (``keras.distribution.initialize`` on JAX), else ``None``.

    Example:
    >>> keras_distribution() is None
    True
    """
    distribution = keras.distribution.distribution()
    if distribution is None or getattr(distribution, "num_processes", 1) < 2:
        return None
    return distribution


def multi_process():
    """Whether a ``keras.distribution`` over more than one process is set.

    Example:
    >>> multi_process()
    False
    """
    return keras_distribution() is not None


def _device_name(device):
    if hasattr(device, "platform"):  # a jax.Device
        return f"{device.platform}:{device.id}".lower()
    return str(device).lower()


def off_devices(model, distribution):
    """The names of ``model``'s variables that do not span
    ``distribution``'s devices (built before ``set_distribution``: they
    live on one device of this process).

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> off_devices(model, keras.distribution.DataParallel())
    []
    """
    wanted = {_device_name(d) for d in np.ravel(distribution.device_mesh.devices)}
    found = []
    for variable in model.weights:
        sharding = getattr(getattr(variable, "value", None), "sharding", None)
        if sharding is None:  # not a JAX array (another backend)
            continue
        if {_device_name(d) for d in sharding.device_set} != wanted:
            found.append(getattr(variable, "path", None) or variable.name)
    return found


def check_student_devices(student, distribution):
    """Raises a one-line ``ValueError`` if the student's variables do not
    span ``distribution``'s devices (it trains: it cannot be swapped for a
    copy).

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> check_student_devices(model, keras.distribution.DataParallel())
    """
    missed = off_devices(student, distribution)
    if missed:
        raise ValueError(
            f"The student {student.name!r} was built before the "
            f"`{type(distribution).__name__}` distribution was set (its "
            f"variables, e.g. {missed[0]!r}, live on one device of this "
            "process, not on the distribution's devices): "
            + _BUILD_AFTER.format(role="student") + "."
        )


def teacher_on_devices(teacher, distribution, can_clone=True):
    """``teacher``, or a copy of it built under ``distribution``.

    The counterpart of `teacher_in_scope` for ``keras.distribution``: a
    teacher whose variables span the distribution's devices is returned as
    is; otherwise ``keras.models.clone_model`` copies it (built now, so laid
    out by the distribution) and ``set_weights`` gives it the teacher's
    weights; the user's teacher is not touched. A teacher Keras cannot
    clone, or one the distiller cannot swap (``can_clone`` false), raises a
    one-line ``ValueError``.

    Example:
    >>> import keras
    >>> teacher = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> distribution = keras.distribution.DataParallel()
    >>> teacher_on_devices(teacher, distribution) is teacher
    True
    """
    if not off_devices(teacher, distribution):
        return teacher
    where = (f"The teacher {teacher.name!r} was built before the "
             f"`{type(distribution).__name__}` distribution was set")
    advice = _BUILD_AFTER.format(role="teacher")
    map_teachers = getattr(teacher, "map_teachers", None)
    if map_teachers is not None and can_clone:  # an ensemble: each teacher
        return map_teachers(lambda t: teacher_on_devices(t, distribution))

    def clone():
        copy = keras.models.clone_model(teacher)
        copy.set_weights(teacher.get_weights())
        return copy

    return _copy_teacher(clone, where, "under the distribution", advice,
                         can_clone)


def _is_tf_dataset(x):
    # As Keras decides what it may shard (a tf.data or distributed dataset).
    return any(c.__module__.startswith("tensorflow")
               and c.__name__ in ("DatasetV2", "DistributedDataset")
               for c in type(x).__mro__)


def check_data(x, argument="x"):
    """Under a multi-process ``keras.distribution`` that shards the data
    (``auto_shard_dataset=True``, the default), refuses anything but a
    ``tf.data.Dataset`` with a ``ValueError`` saying what to pass instead
    (Keras would refuse it too, but only after the first-batch checks and
    the teacher cache). Nothing happens otherwise.

    Example:
    >>> import numpy as np
    >>> check_data(np.zeros((4, 2)))  # no multi-process distribution
    """
    distribution = keras_distribution()
    if (distribution is None or x is None or _is_tf_dataset(x)
            or not getattr(distribution, "auto_shard_dataset", False)):
        return
    n = distribution.num_processes
    what = ("in-memory arrays" if in_memory(x) is not None
            else f"a {type(x).__name__}")
    raise ValueError(
        f"`{argument}` is {what}, but under a multi-process keras.distribution "
        f"({n} processes) with `auto_shard_dataset=True` Keras shards only a "
        "tf.data.Dataset: pass `tf.data.Dataset.from_tensor_slices((x, y))."
        "batch(global_batch_size)` (batched by the global batch; each process "
        "gets its share), or set `auto_shard_dataset=False` on the "
        "distribution and give each process its share of every global batch, "
        "`keras_distill.datasets.process_slice((x, y), global_batch_size)`, "
        f"fitting it with `batch_size=global_batch_size // {n}`."
    )


def predict(model, x, batch_size):
    """``model.predict(x)`` as numpy; under a multi-process
    ``keras.distribution``, `local_predict` (this process's arrays only).

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> predict(model, np.ones((5, 4), "float32"), batch_size=2).shape
    (5, 2)
    """
    if multi_process():
        return local_predict(model, x, batch_size)
    return model.predict(x, batch_size=batch_size, verbose=0)


def local_predict(model, x, batch_size, forward=None):
    """``forward`` (default: ``model(batch, training=False)``) over in-memory
    ``x``, batch by batch, on this process's own device, as numpy.

    What ``fit(cache_teacher=True)`` runs under a multi-process
    ``keras.distribution``, where Keras's ``predict`` cannot fetch a
    batch-sharded output that spans processes. On JAX the model's
    variables are copied to this process's first device (the local replica
    of each) and a jitted ``forward`` runs there with the copies, so no
    array spanning processes is involved; on other backends it is an eager
    loop. The result covers this process's ``x`` only: under data
    parallelism, where each process fits on its own slice, the teacher
    cache is per process, of that slice.

    Args:
        model: The Keras 3 model whose variables ``forward`` reads.
        x: Arrays (or a dict/list/tuple of them) of one length.
        batch_size: The batch size of the forward passes.
        forward: ``fn(batch) -> outputs`` (any structure of tensors).

    Raises:
        ValueError: A variable is sharded across devices (``ModelParallel``):
            no process holds it whole.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> local_predict(model, np.ones((5, 4), "float32"), batch_size=2).shape
    (5, 2)
    """
    key = forward  # a bound method compares equal to itself next time
    if forward is None:
        key = "call"

        def forward(batch):
            return model(batch, training=False)
    size = int(np.shape(keras.tree.flatten(x)[0])[0])
    batches = [keras.tree.map_structure(
        lambda a, s=start: np.asarray(a[s:s + batch_size]), x)
        for start in range(0, size, batch_size)]
    if keras.backend.backend() == "jax":
        forward = _on_local_device(model, forward, key)
    outs = [keras.tree.map_structure(keras.ops.convert_to_numpy,
                                     forward(batch)) for batch in batches]
    return keras.tree.map_structure(lambda *parts: np.concatenate(parts),
                                    *outs)


# model -> (key, its variables' values, the jitted forward): a disk cache
# calls `local_predict` once a batch; compile and copy the weights once.
_LOCAL_FORWARD = weakref.WeakKeyDictionary()


def _on_local_device(model, forward, key):
    """``forward`` jitted on this process's first device, reading local
    copies of ``model``'s variables; reused while ``key`` and the variables'
    values (immutable JAX arrays: an assignment makes a new one) stay."""
    import jax

    current = [variable.value for variable in model.variables]
    cached = _LOCAL_FORWARD.get(model)
    if cached is not None and cached[0] == key and len(cached[1]) == len(
            current) and all(a is b for a, b in zip(cached[1], current)):
        return cached[2]

    device = jax.local_devices()[0]
    variables = list(model.variables)
    values = []
    for variable in variables:
        value = variable.value
        if not getattr(value, "is_fully_replicated", True):
            raise ValueError(
                f"The teacher's variable {variable.path!r} is sharded across "
                "devices, so no process holds it whole to run the teacher "
                "over its own data: pass `cache_teacher=False` to fit (the "
                "teacher then runs inside each training step)."
            )
        if hasattr(value, "addressable_data"):  # this process's replica
            value = value.addressable_data(0)
        values.append(jax.device_put(np.asarray(value), device))

    def call(values, batch):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return forward(batch)

    jitted = jax.jit(call)

    def run(batch):
        return jitted(values, jax.device_put(batch, device))

    _LOCAL_FORWARD[model] = (key, current, run)
    return run
