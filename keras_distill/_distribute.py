"""Models and ``tf.distribute``: which variables live in a strategy's scope.

Under ``tf.distribute`` (e.g. ``MirroredStrategy``) a model must be built
inside ``strategy.scope()``; Keras's own errors for one that is not come
late (at ``fit``, an empty ``AssertionError`` on Keras 3) or run to
thousands of characters listing every weight (``tf_keras``, at
``compile``) and never name the model. ``Distiller.compile`` asks this
module instead: the student must be built in the scope (one line saying
so), the teacher is cloned into it when Keras can clone it (the user's
teacher untouched, its weights copied).

TensorFlow is imported only when it is loaded already (a strategy cannot
exist otherwise), so nothing here costs anything on JAX.

Example:
>>> current_strategy() is None  # no strategy scope is open
True
"""

import sys

from keras_distill import _compat
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
    where = (f"The teacher {teacher.name!r} was built outside the open "
             f"`{type(strategy).__name__}.scope()`")
    if not can_clone:
        raise ValueError(
            f"{where}, and this distiller reads its layers directly: "
            + _CREATE_INSIDE.format(role="teacher") + "."
        )
    try:
        return _clone(teacher, strategy)
    except Exception as error:  # noqa: BLE001 - any reason Keras refuses
        raise ValueError(
            f"{where} and Keras cannot copy it into the scope "
            f"({type(error).__name__}: {short(error).split('. ')[0][:160]}): "
            + _CREATE_INSIDE.format(role="teacher") + "."
        ) from None


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
    """What ``compile`` does under an open strategy scope: refuses a
    student built outside it, and puts a copy of a ``tf_keras``
    distiller's teacher built outside it into the scope (``distiller.
    teacher`` is then that copy). A Keras 3 distiller reads such a teacher
    from its device, as it is. Nothing happens without a strategy scope.

    Example:
    >>> prepare(None)  # no strategy scope is open
    """
    strategy = current_strategy()
    if strategy is None:
        return
    check_student(distiller.student, strategy)
    if distiller._flavour != _compat.TF_KERAS:
        return
    teacher = teacher_in_scope(
        distiller.teacher, strategy,
        # Feature distillers tap the float teacher they were built with.
        can_clone=distiller._supports_teacher_dtype)
    if teacher is not distiller.teacher:
        del distiller.teacher  # tf_keras untracks it (and its weights)
        distiller.teacher = teacher
        distiller._set_teacher_dtype(distiller.teacher_dtype)
