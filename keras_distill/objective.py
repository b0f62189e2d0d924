"""The math of one distillation step, the same for every Keras and backend.

`Objective` combines, in ``keras.ops``::

    total = alpha · student_loss(y, s)
          + (1 − alpha) · logits_weight · logit_term(t, s)
          + Σ_terms weight · feature_term(teacher features, student features)
          + regularisation

where ``t`` and ``s`` are the teacher's and student's logits (a softmax
head's probabilities ``p`` are turned into logits ``log p`` first). Every
per-sample value is weighted by ``sample_weight`` and summed over the batch
divided by its size (Keras's ``sum_over_batch_size``); ``scale`` then turns
this replica's batch mean into its share of the global one (under
``tf.distribute``, one over the number of replicas, as Keras scales its own
losses), so a 2-replica step equals the single-device step.

The shells (`keras_distill.Distiller` on Keras 3, `keras_distill.tf_keras`
for Keras 2) only run the forward passes and apply the gradients.

Example:
>>> import numpy as np, keras
>>> from keras_distill import terms
>>> objective = Objective(alpha=0.5, temperature=2.0,
...     student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
...         from_logits=True), logit_term=terms.KD())
>>> t = np.array([[2.0, 0.0]], "float32"); y = np.array([0])
>>> total, logs = objective.training_loss(y=y, student_out=t, teacher_out=t)
>>> sorted(logs), round(float(logs["distillation_loss"]), 6)
(['distillation_loss', 'student_loss'], 0.0)
"""

import dataclasses

import keras

from keras_distill import losses as kd_losses
from keras_distill.terms.base import crossentropy_from_logits

ops = keras.ops

_MEAN_REDUCTIONS = ("auto", "sum_over_batch_size", "mean")
_NO_ATTRIBUTE = object()


def loss_reduction(fn, argument):
    """``"mean"`` or ``"sum"``: how a user's loss reduces over the batch.

    Example:
    >>> import keras
    >>> loss_reduction(keras.losses.MeanSquaredError(reduction="sum"), "x")
    'sum'
    """
    reduction = getattr(fn, "reduction", _NO_ATTRIBUTE)
    if reduction is _NO_ATTRIBUTE or reduction in _MEAN_REDUCTIONS:
        return "mean"
    if reduction == "sum":
        return "sum"
    raise ValueError(
        f"`{argument}` has reduction={reduction!r}; Distiller needs a loss "
        "that reduces to a scalar: use the default reduction "
        "('sum_over_batch_size') or 'sum'."
    )


def to_logits(outputs, kind):
    """float32 logits from a model's outputs (``kind``: logits/probabilities).

    Example:
    >>> import numpy as np
    >>> z = to_logits(np.array([[0.5, 0.5]]), "probabilities")
    >>> [round(float(v), 4) for v in np.asarray(z)[0]]
    [-0.6931, -0.6931]
    """
    if kind == "probabilities":
        return kd_losses.probabilities_to_logits(outputs)
    outputs = ops.convert_to_tensor(outputs)
    if _dtype(outputs) != "float64":
        outputs = ops.cast(outputs, "float32")
    return outputs


def check_class_axis(shape, argument):
    """Refuses outputs with a single unit (nothing to distil).

    Example:
    >>> check_class_axis((None, 1), "teacher")
    Traceback (most recent call last):
    ...
    ValueError: The teacher's output has a single unit ...
    """
    if shape is None or len(shape) == 0:
        return
    if shape[-1] == 1:
        raise ValueError(
            f"The {argument}'s output has a single unit (shape "
            f"{tuple(shape)}): a softmax over one unit is always 1, so there "
            "is nothing to distil. Give the model one output unit per class "
            "(e.g. 2 logits for a binary task)."
        )


def check_shapes(teacher_shape, student_shape):
    """Refuses teacher and student outputs that cannot be compared.

    Example:
    >>> check_shapes((None, 3), (None, 4))
    Traceback (most recent call last):
    ...
    ValueError: The teacher and student outputs cannot be compared: ...
    """
    if teacher_shape is None or student_shape is None:
        return
    t, s = tuple(teacher_shape), tuple(student_shape)
    if len(t) != len(s) or any(
        a is not None and b is not None and a != b for a, b in zip(t, s)
    ):
        raise ValueError(
            "The teacher and student outputs cannot be compared: teacher "
            f"output shape {t}, student output shape {s}. Both models must "
            "output one score per class for the same classes."
        )


def _one(x):
    return x


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


def check_per_sample(values, batch, argument):
    """Refuses a loss's values that cannot be one loss per sample: ``None``,
    integers or booleans (no gradient), a first axis that is not the batch.

    ``batch`` is the static batch size (``None`` when unknown: then only
    the dtype is checked). A scalar passes (a property of the whole batch).

    Example:
    >>> import numpy as np
    >>> check_per_sample(np.zeros(3), 4, "`student_loss_fn`")
    Traceback (most recent call last):
    ...
    ValueError: `student_loss_fn` returned values of shape (3,) for a batch of 4 samples: ...
    """
    if values is None:
        raise TypeError(
            f"{argument} returned None. It must return a float tensor: one "
            "loss per sample (shape (batch,)) or a scalar."
        )
    values = ops.convert_to_tensor(values)
    dtype = _dtype(values)
    if not keras.backend.is_float_dtype(dtype):
        raise TypeError(
            f"{argument} returned values of dtype {dtype}; a loss must be a "
            "float tensor (integer or boolean values have no gradient). "
            "Return e.g. keras.ops.cast(..., 'float32') of a differentiable "
            "expression."
        )
    shape = tuple(values.shape)
    if shape and batch is not None and shape[0] is not None and (
            shape[0] != batch):
        raise ValueError(
            f"{argument} returned values of shape {shape} for a batch of "
            f"{batch} samples: it must return one loss per sample (shape "
            f"({batch},), extra axes are averaged) or a scalar. Did it "
            "reduce over the batch axis (axis=0) instead of the class axis "
            "(axis=-1)?"
        )
    return values


def _static_batch(x):
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) == 0 or shape[0] is None:
        return None
    return int(shape[0])


def check_from_logits(fn, kind, final, argument="student_loss_fn"):
    """Refuses a categorical cross-entropy whose ``from_logits`` contradicts
    the student's outputs (``kind``): a softmax applied twice, or logits
    taken for probabilities, both train on a wrong loss without an error.

    ``final``: the kind is settled (after the first batch was looked at);
    before, only probabilities with ``from_logits=True`` are refused (a
    softmax the static inspection missed may still turn logits into
    probabilities).

    Example:
    >>> import keras
    >>> check_from_logits(keras.losses.SparseCategoricalCrossentropy(),
    ...                   "logits", final=True)
    Traceback (most recent call last):
    ...
    ValueError: `student_loss_fn` has from_logits=False ...
    """
    from_logits = crossentropy_from_logits(fn)
    if from_logits is True and kind == "probabilities":
        raise ValueError(
            f"`{argument}` has from_logits=True, but the student ends in a "
            "softmax (its outputs are probabilities), so the softmax would be "
            "applied twice. Use from_logits=False, or remove the student's "
            "final softmax."
        )
    if from_logits is False and kind == "logits" and final:
        raise ValueError(
            f"`{argument}` has from_logits=False (the default of Keras's "
            "cross-entropies and of their names such as "
            "'sparse_categorical_crossentropy'), but the student outputs "
            "logits (no final softmax), which it would take for "
            "probabilities. Use e.g. keras.losses."
            "SparseCategoricalCrossentropy(from_logits=True); if the student "
            "does end in a softmax, pass student_outputs='probabilities'."
        )


def weighted_mean(values, sample_weight=None, reduction="mean", scale=_one,
                  argument="loss"):
    """This replica's share of the batch loss of per-sample ``values``.

    ``sample_weight`` multiplies each value (per sample, or per position
    when it has more axes), extra axes are averaged per sample, and the sum
    is divided by the batch size (``reduction="mean"``, then ``scale``
    applies the distribution scaling) or not (``"sum"``, not scaled, as
    Keras does). A scalar (a property of the whole batch) is only scaled,
    and refuses ``sample_weight``.

    Example:
    >>> import numpy as np
    >>> float(weighted_mean(np.array([1.0, 3.0]), np.array([1.0, 0.0])))
    0.5
    >>> float(weighted_mean(np.array([[1.0, 3.0]]), np.array([[1.0, 0.0]])))
    0.5
    """
    values = ops.convert_to_tensor(values)
    if _dtype(values) != "float64":
        values = ops.cast(values, "float32")
    if len(values.shape) == 0:
        if sample_weight is not None:
            raise ValueError(
                f"{argument} returned a scalar (a property of the whole "
                "batch), so `sample_weight` cannot be applied to it. Return "
                "one loss per sample, or train without sample_weight / "
                "class_weight."
            )
        return scale(values)
    if sample_weight is not None:
        # Keras's broadcasting: (batch,) weights per sample, (batch, T)
        # weights per time step, trailing unit axes dropped.
        weights = ops.cast(ops.convert_to_tensor(sample_weight), values.dtype)
        while (len(weights.shape) > max(len(values.shape), 1)
               and weights.shape[-1] == 1):
            weights = ops.squeeze(weights, axis=-1)
        while len(weights.shape) < len(values.shape):
            weights = ops.expand_dims(weights, axis=-1)
        values = values * weights
    if len(values.shape) > 1:
        values = ops.mean(values, axis=tuple(range(1, len(values.shape))))
    total = ops.sum(values)
    if reduction == "sum":
        # As Keras: a summed loss is not scaled by the replicas (their
        # gradients add up to the global sum's).
        return total
    size = ops.cast(ops.shape(values)[0], values.dtype)
    return scale(ops.divide_no_nan(total, size))


@dataclasses.dataclass(frozen=True)
class FeatureTermSpec:
    """One feature term of an `Objective`, resolved against the taps.

    Attributes:
        name: The logged name.
        weight: Its weight in the total.
        term: A `keras_distill.terms.FeatureTerm`.
        teacher_keys, student_keys: The tapped features it reads.
        adapters: One callable (or ``None``) per student key.
        describe: The pair and its shapes, for error messages.

    Example:
    >>> from keras_distill import terms
    >>> FeatureTermSpec("l2_h", 1.0, terms.L2(), ("h",), ("h",), (None,), "h").name
    'l2_h'
    """

    name: str
    weight: float
    term: object
    teacher_keys: tuple
    student_keys: tuple
    adapters: tuple
    describe: str


class Objective:
    """The distillation loss of one batch, flavour- and backend-free.

    Args:
        alpha: Weight of the student (hard-label) loss in [0, 1]; the
            logits term gets ``1 - alpha``.
        temperature: The distiller's T, used by logit terms without their
            own.
        student_loss_fn: ``fn(y, student_output)`` per sample (a Keras
            ``Loss`` object is not reduced), or ``None`` when ``alpha == 0``.
        logit_term: A `keras_distill.terms.LogitTerm`.
        logits_weight: Extra weight (>= 0) of the logits term; 0 turns it off.
        feature_terms: `FeatureTermSpec` objects, each a
            `keras_distill.terms.FeatureTerm` over named tapped features.
        teacher_kind, student_kind: ``"logits"`` or ``"probabilities"``.
        student_reduction, distillation_reduction: ``"mean"`` or ``"sum"``
            (see `loss_reduction`): how the student loss and the logits term
            reduce over the batch.
        check_numerics: Wrap each feature term in a NaN/inf check (needs the
            TensorFlow backend).

    Example:
    >>> import keras
    >>> from keras_distill import terms
    >>> Objective(alpha=0.0, temperature=1.0, student_loss_fn=None,
    ...           logit_term=terms.KD()).log_names()
    ('distillation_loss',)
    """

    def __init__(self, *, alpha, temperature, student_loss_fn, logit_term,
                 logits_weight=1.0, feature_terms=(), teacher_kind="logits",
                 student_kind="logits", student_reduction="mean",
                 distillation_reduction="mean", check_numerics=False):
        self.alpha = alpha
        self.temperature = temperature
        self.student_loss_fn = student_loss_fn
        self.logit_term = logit_term
        self.logits_weight = logits_weight
        self.feature_terms = list(feature_terms)
        self.teacher_kind = teacher_kind
        self.student_kind = student_kind
        self.student_reduction = student_reduction
        self.distillation_reduction = distillation_reduction
        self.check_numerics = check_numerics

    @property
    def uses_student_loss(self):
        return self.student_loss_fn is not None and self.alpha > 0

    def log_names(self, labelled=True):
        """Names of the values `training_loss` logs besides ``loss``."""
        names = []
        if labelled and self.uses_student_loss:
            names.append("student_loss")
        names.append("distillation_loss")
        names += [spec.name for spec in self.feature_terms]
        return tuple(names)

    # ------------------------------------------------------------ pieces
    def student_term(self, y, student_out, sample_weight=None, scale=_one):
        """The student loss against the labels (this replica's share)."""
        from keras_distill.terms import per_sample_loss

        check_from_logits(self.student_loss_fn, self.student_kind, True)
        values = check_per_sample(
            per_sample_loss(self.student_loss_fn, y, student_out),
            _static_batch(student_out), "`student_loss_fn`")
        return weighted_mean(values, sample_weight, self.student_reduction,
                             scale, "`student_loss_fn`")

    def distillation_term(self, teacher_out, student_out, y=None,
                          sample_weight=None, scale=_one):
        """``logits_weight · logit_term(t, s)`` (this replica's share)."""
        check_shapes(teacher_out.shape, student_out.shape)
        check_class_axis(teacher_out.shape, "teacher")
        if self.logits_weight == 0.0:
            return ops.zeros((), "float32")
        if self.logit_term.needs_labels and y is None:
            raise ValueError(
                f"The distillation term {self.logit_term!r} needs the labels: "
                "pass `(x, y)` to fit/evaluate, or use the default 'kd' term "
                "to distil unlabelled data."
            )
        t = to_logits(teacher_out, self.teacher_kind)
        s = to_logits(student_out, self.student_kind)
        values = check_per_sample(
            self.logit_term.per_sample(t, s, labels=y,
                                       temperature=self.temperature),
            _static_batch(student_out), "`distillation_loss_fn`")
        value = weighted_mean(values, sample_weight,
                              self.distillation_reduction, scale,
                              "`distillation_loss_fn`")
        if self.logits_weight != 1.0:
            value = value * self.logits_weight
        return value

    def feature_values(self, teacher_features, student_features,
                       sample_weight=None, scale=_one):
        """``{name: (weight, this replica's share)}`` of every feature term."""
        out = {}
        for spec in self.feature_terms:
            t = [teacher_features[k] for k in spec.teacher_keys]
            s = []
            for key, adapter in zip(spec.student_keys, spec.adapters):
                value = student_features[key]
                s.append(value if adapter is None else adapter(value))
            where = f"The feature loss of {spec.describe}"
            values = check_per_sample(spec.term.per_sample(*t, *s),
                                      _static_batch(t[0]), where)
            value = weighted_mean(values, sample_weight, "mean", scale, where)
            if self.check_numerics:
                import tensorflow as tf

                value = tf.debugging.check_numerics(
                    value, f"keras_distill: the feature term {spec.name!r} "
                    f"({spec.describe}) is NaN or infinite")
            out[spec.name] = (spec.weight, value)
        return out

    # ------------------------------------------------------------ steps
    def training_loss(self, *, y=None, sample_weight=None, student_out,
                      teacher_out, student_features=None,
                      teacher_features=None, regularisation=None, scale=_one):
        """The loss to minimise and the values to log (unscaled).

        Returns:
            ``(total, logs)``: ``total`` is this replica's share (what the
            gradient is taken of); ``logs`` maps ``student_loss``,
            ``distillation_loss`` and each feature term's name to its
            value, without the distribution scaling.
        """
        logs = {}
        distill = self.distillation_term(teacher_out, student_out, y,
                                         sample_weight, scale)
        total = (1.0 - self.alpha) * distill
        if self.uses_student_loss:
            if y is None:
                raise ValueError(
                    f"alpha={self.alpha} weighs a student loss on labels, but "
                    "the data has no labels. Pass `(x, y)`, or set alpha=0 "
                    "to distil on unlabelled data."
                )
            student = self.student_term(y, student_out, sample_weight, scale)
            total = total + self.alpha * student
            logs["student_loss"] = student
        logs["distillation_loss"] = distill
        features = self.feature_values(teacher_features or {},
                                       student_features or {},
                                       sample_weight, scale)
        for name, (weight, value) in features.items():
            total = total + weight * value
            logs[name] = value
        if regularisation is not None:
            total = total + regularisation
        return total, logs

    def evaluation_loss(self, *, y=None, sample_weight=None, student_out,
                        teacher_out_fn, regularisation=None, scale=_one):
        """What ``evaluate`` reports: the student alone when labelled.

        With labels and a student loss: ``loss`` is the student loss plus
        regularisation (what ``student.evaluate`` would give) and the
        teacher is not run. Otherwise the distillation loss against the
        teacher (``teacher_out_fn()`` runs it).

        Returns:
            ``(total, logs)`` as `training_loss`.
        """
        if y is not None and self.student_loss_fn is not None:
            student = self.student_term(y, student_out, sample_weight, scale)
            total = student
            if regularisation is not None:
                total = total + regularisation
            return total, {"student_loss": student}
        distill = self.distillation_term(teacher_out_fn(), student_out, y,
                                         sample_weight, scale)
        return distill, {"distillation_loss": distill}
