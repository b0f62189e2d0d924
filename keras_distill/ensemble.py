"""Several teachers: their weighted logits as one teacher.

`teacher_ensemble` builds one teacher model from several (a weighted
average of their logits, a product of experts after softening);
`MultiTeacherDistiller` distils it. Both exist for Keras 3 and, in
`keras_distill.tf_keras`, for ``tf_keras``.
"""

import keras

from keras_distill import _compat
from keras_distill._probes import input_shape
from keras_distill._validation import check_weight
from keras_distill.core import DistillerCore, resolve_output_kind, single_tensor
from keras_distill.distiller import Distiller
from keras_distill.objective import check_class_axis, check_shapes, to_logits


def _with_teachers(config, custom_objects):
    """A config whose serialised ``teachers`` are models again."""
    config = dict(config)
    k = _compat.keras_module(config.pop("teacher_flavour"))
    config["teachers"] = [
        k.saving.deserialize_keras_object(t, custom_objects=custom_objects)
        for t in config["teachers"]
    ]
    return config


class EnsembleCore:
    """The weighted average of teachers' logits; mixed into a Model of the
    teachers' flavour (`TeacherEnsemble`, or its ``tf_keras`` twin)."""

    def __init__(self, teachers, weights, kinds, name="teacher_ensemble",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.teachers = list(teachers)
        self.teacher_weights = tuple(weights)
        self.teacher_kinds = tuple(kinds)
        if all(t.built for t in teachers):
            self.built = True

    def map_teachers(self, fn):
        """A new ensemble of ``fn(teacher)`` for every teacher, with the
        same weights and output kinds (a low-precision or distributed copy
        of each teacher; this ensemble and its teachers are not touched).

        Example:
        >>> import keras
        >>> a = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
        >>> b = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
        >>> ens = teacher_ensemble([a, b], weights=[3, 1])
        >>> copy = ens.map_teachers(keras.models.clone_model)
        >>> copy.teacher_weights, copy.teachers[0] is a
        ((0.75, 0.25), False)
        """
        copy = type(self)([fn(t) for t in self.teachers], self.teacher_weights,
                          self.teacher_kinds, name=self.name)
        copy._class_shape = getattr(self, "_class_shape", None)
        return copy

    def call(self, x, training=False):
        total = None
        for teacher, weight, kind in zip(self.teachers, self.teacher_weights,
                                         self.teacher_kinds):
            out = single_tensor(teacher(x, training=False), "teacher")
            term = weight * to_logits(out, kind)
            total = term if total is None else total + term
        return total

    def get_config(self):
        flavour = _compat.flavour_of(self.teachers[0])
        k = _compat.keras_module(flavour)
        return {
            "name": self.name,
            "teachers": [k.saving.serialize_keras_object(t)
                         for t in self.teachers],
            "teacher_flavour": flavour,
            "weights": list(self.teacher_weights),
            "teacher_outputs": list(self.teacher_kinds),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return teacher_ensemble(**_with_teachers(config, custom_objects))


@keras.saving.register_keras_serializable(package="keras_distill")
class TeacherEnsemble(EnsembleCore, keras.Model):
    """Weighted average of Keras 3 teachers' logits (see `teacher_ensemble`).

    Example:
    >>> import keras
    >>> a = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> b = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> isinstance(teacher_ensemble([a, b]), TeacherEnsemble)
    True
    """


def teacher_ensemble(teachers, weights=None, teacher_outputs="auto",
                     name="teacher_ensemble"):
    r"""One teacher model whose logits are the weighted average of several.

    .. math::
        z = \sum_k w_k\, z_k, \qquad \sum_k w_k = 1

    with :math:`z_k` teacher k's logits (``log p`` for a teacher ending in a
    softmax, which softmax maps back to ``p``). Softening the average,
    :math:`\mathrm{softmax}(z/T) \propto \prod_k \mathrm{softmax}(z_k/T)^{w_k}`,
    gives a weighted geometric mean of the teachers' softened
    distributions (a product of experts). Every teacher runs in inference
    mode on the same inputs.

    Args:
        teachers: A list of Keras models of one flavour, each taking inputs
            of the same shape and outputting one score per class for the
            same classes.
        weights: Non-negative weights, one per teacher (normalised to sum to
            1); default equal weights.
        teacher_outputs: ``"auto"``, ``"logits"`` or ``"probabilities"``, or
            a list of those, one per teacher.
        name: The model's name.

    Returns:
        A (subclassed) model of the teachers' flavour outputting logits.

    Example:
    >>> import keras, numpy as np
    >>> a = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> b = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> ens = teacher_ensemble([a, b], weights=[3, 1])
    >>> x = np.ones((1, 2), "float32")
    >>> want = 0.75 * a.predict(x, verbose=0) + 0.25 * b.predict(x, verbose=0)
    >>> bool(np.allclose(ens.predict(x, verbose=0), want, atol=1e-6))
    True
    """
    if not isinstance(teachers, (list, tuple)) or not teachers:
        raise TypeError(
            f"`teachers` must be a non-empty list of Keras models, got {teachers!r}."
        )
    flavours = [_compat.model_flavour(t, f"teachers[{i}]")
                for i, t in enumerate(teachers)]
    if len(set(flavours)) != 1:
        raise ValueError(
            f"`teachers` mixes Keras flavours {flavours}; give teachers of one "
            "flavour (convert them, or distil from each in turn)."
        )
    if len({id(t) for t in teachers}) != len(teachers):
        raise ValueError("`teachers` holds the same model more than once; "
                         "use `weights` to weigh a teacher more.")
    if weights is None:
        weights = [1.0] * len(teachers)
    if not isinstance(weights, (list, tuple)) or len(weights) != len(teachers):
        raise ValueError(
            f"`weights` must be a list of {len(teachers)} numbers (one per "
            f"teacher), got {weights!r}."
        )
    weights = [check_weight(w, f"weights[{i}]") for i, w in enumerate(weights)]
    if sum(weights) <= 0:
        raise ValueError(f"`weights` must not all be 0, got {weights!r}.")
    weights = [w / sum(weights) for w in weights]
    if isinstance(teacher_outputs, str):
        teacher_outputs = [teacher_outputs] * len(teachers)
    if not isinstance(teacher_outputs, (list, tuple)) or len(
            teacher_outputs) != len(teachers):
        raise ValueError(
            f"`teacher_outputs` must be one value or one per teacher "
            f"({len(teachers)}), got {teacher_outputs!r}."
        )
    kinds = [resolve_output_kind(t, kind, "teacher_outputs")
             for t, kind in zip(teachers, teacher_outputs)]
    shapes = [_compat.single_output_shape(t) for t in teachers]
    for i, shape in enumerate(shapes):
        check_class_axis(shape, f"teachers[{i}]")
        if shape is not None and shapes[0] is not None:
            try:
                check_shapes(shapes[0], shape)
            except ValueError:
                raise ValueError(
                    f"teachers[0] and teachers[{i}] output different shapes, "
                    f"{tuple(shapes[0])} and {tuple(shape)}: all teachers must "
                    "score the same classes."
                ) from None
    _check_input_shapes(teachers)
    if flavours[0] == _compat.KERAS3:
        cls = TeacherEnsemble
    else:
        from keras_distill.tf_keras import TeacherEnsemble as cls
    ensemble = cls(list(teachers), weights, kinds, name=name)
    ensemble._class_shape = next((s for s in shapes if s is not None), None)
    return ensemble


def _check_input_shapes(teachers):
    """Every teacher runs on the same inputs: their input shapes must agree."""
    shapes = [input_shape(t) for t in teachers]
    for i, shape in enumerate(shapes):
        if shape is None or shapes[0] is None:
            continue
        if len(shape) != len(shapes[0]) or any(
            a is not None and b is not None and a != b
            for a, b in zip(shapes[0], shape)
        ):
            raise ValueError(
                f"teachers[0] and teachers[{i}] take inputs of different "
                f"shapes, {shapes[0]} and {shape}: every teacher of an "
                "ensemble runs on the same inputs. Give them the same input "
                "shape (e.g. resize inside the model)."
            )


class MultiTeacherCore(DistillerCore):
    """Several teachers' weighted logits as the teacher; mixed into
    `MultiTeacherDistiller` and its ``tf_keras`` twin."""

    def __init__(self, student, teachers=(), teacher_weights=None,
                 teacher_outputs="auto", student_outputs="auto",
                 name="multi_teacher_distiller", **kwargs):
        ensemble = teacher_ensemble(teachers, teacher_weights, teacher_outputs)
        if any(t is student for t in teachers):
            raise ValueError(
                "The student is also one of the `teachers`. Build a separate "
                "student model to distil into."
            )
        shape = _compat.single_output_shape(student)
        if shape is not None and ensemble._class_shape is not None:
            check_shapes(ensemble._class_shape, shape)
        super().__init__(student, ensemble, teacher_outputs="logits",
                         student_outputs=student_outputs, name=name, **kwargs)

    @property
    def teachers(self):
        """The teachers (``distiller.teacher`` is their ensemble)."""
        return list(self.teacher.teachers)

    def get_config(self):
        config = super().get_config()
        ensemble = config.pop("teacher")
        config.pop("teacher_flavour")
        config.pop("teacher_outputs")
        ens = ensemble.get("config", ensemble)
        config["teachers"] = ens["teachers"]
        config["teacher_flavour"] = ens["teacher_flavour"]
        config["teacher_weights"] = ens["weights"]
        config["teacher_outputs"] = ens["teacher_outputs"]
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        k = _compat.keras_module(config.pop("student_flavour"))
        config["student"] = k.saving.deserialize_keras_object(
            config["student"], custom_objects=custom_objects)
        return cls(**_with_teachers(config, custom_objects))


@keras.saving.register_keras_serializable(package="keras_distill")
class MultiTeacherDistiller(MultiTeacherCore, Distiller):
    __doc__ = r"""Distils the weighted average of several teachers' logits.

    The same loss as `Distiller` with the teacher's logits replaced by
    :math:`z = \sum_k w_k z_k` (weights normalised to sum to 1; see
    `teacher_ensemble`), e.g. an ensemble of models trained with different
    seeds or architectures. Each teacher runs once per batch in inference
    mode (or never, with ``fit(cache_teacher=True)``, which caches the
    average). ``distiller.teacher`` is the ensemble (a model: evaluate it
    like any teacher), ``distiller.teachers`` the list. Logits only: for
    feature terms distil from one teacher with `FeatureDistiller`.

    Args:
        student: The model to train (``keras`` or ``tf_keras``).
        teachers: A list of trained models of one Keras flavour.
        teacher_weights: One non-negative weight per teacher; default equal.
        teacher_outputs: ``"auto"``, ``"logits"``, ``"probabilities"`` or a
            list of those, one per teacher.
        student_outputs, name: As for `Distiller`.
        teacher_dtype: As for `Distiller`: ``"bfloat16"`` or ``"float16"``
            runs every teacher in that precision (a private copy of each;
            yours are not touched).

    Example:
    >>> import numpy as np, keras
    >>> from keras_distill import MultiTeacherDistiller
    >>> x = np.random.rand(32, 4).astype("float32")
    >>> def net():
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> d = MultiTeacherDistiller(net(), teachers=[net(), net()],
    ...                           teacher_weights=[2.0, 1.0])
    >>> d.compile(optimizer="adam", alpha=0.0, temperature=2.0)
    >>> sorted(d.fit(x, epochs=1, verbose=0).history)
    ['distillation_loss', 'loss']
    """
