"""`Distiller`: knowledge distillation inside ``model.fit()``.

The math of a step lives once, in `keras_distill.objective` (``keras.ops``,
every backend); what every distiller shares is `keras_distill.core`. This
module is the Keras 3 shell, `Distiller`, which plugs the objective into
Keras's own training loop through the public ``compute_loss`` /
``compute_metrics`` hooks, so the same code runs on the TensorFlow and JAX
backends (tested; PyTorch is untested). `keras_distill.tf_keras` holds the
Keras 2 (``tf_keras``) shells that TFMOT needs, over the same core, and
`FlavourDispatch` (here) picks between them.

``Distiller(student, teacher)`` with a ``tf_keras`` student returns the
``tf_keras`` twin (`keras_distill.tf_keras.Distiller`); ``isinstance(d,
keras_distill.Distiller)`` holds for both.
"""

import keras

from keras_distill import _compat, cache, terms
from keras_distill import view_cache as views_module
from keras_distill.core import DistillerCore, Holder, _batch_size, single_tensor


# Deprecated spelling kept for existing code: the DKD term.
DecoupledKD = terms.DKD


# --------------------------------------------------------- flavour dispatch
class FlavourDispatch(type):
    """Metaclass of the Keras 3 distillers: one public class per method.

    ``Cls(student, ...)`` with a ``tf_keras`` student builds ``Cls``'s
    ``tf_keras`` twin (registered with `register_twin`), and ``isinstance``
    / ``issubclass`` count the twin (and its subclasses) as ``Cls``.
    """

    _twins = {}

    def __call__(cls, *args, **kwargs):
        student = kwargs.get("student", args[0] if args else None)
        if _compat.flavour_of(student) == _compat.TF_KERAS:
            return _twin(cls)(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def __instancecheck__(cls, obj):
        return cls.__subclasscheck__(type(obj))

    def __subclasscheck__(cls, subclass):
        if type.__subclasscheck__(cls, subclass):
            return True
        return any(
            type.__subclasscheck__(twin, subclass)
            for keras_cls, twin in FlavourDispatch._twins.items()
            if type.__subclasscheck__(cls, keras_cls)
        )


def register_twin(keras_cls, tf_keras_cls):
    """Declares ``tf_keras_cls`` the ``tf_keras`` twin of ``keras_cls``.

    Example:
    >>> import tf_keras
    >>> from keras_distill import tf_keras as tk
    >>> class Mine(Distiller):
    ...     pass
    >>> class TfKerasMine(tk.Distiller):
    ...     pass
    >>> register_twin(Mine, TfKerasMine)
    >>> issubclass(TfKerasMine, Mine), issubclass(TfKerasMine, tf_keras.Model)
    (True, True)
    """
    FlavourDispatch._twins[keras_cls] = tf_keras_cls


def _twin(cls):
    from keras_distill import tf_keras  # noqa: F401 - registers the twins

    twin = FlavourDispatch._twins.get(cls)
    if twin is None:
        base = next((b for b in cls.__mro__[1:] if b in FlavourDispatch._twins),
                    None)
        hint = (f"write its tf_keras version as a subclass of "
                f"keras_distill.tf_keras.{base.__name__} and declare it with "
                f"keras_distill.distiller.register_twin({cls.__name__}, ...)"
                if base is not None else "")
        raise TypeError(
            f"{cls.__name__} has no tf_keras version, but the student is a "
            f"tf_keras model. Build the student with Keras 3"
            + (f", or {hint}." if hint else ".")
        )
    return twin


def _replicas():
    """Replicas of the current ``tf.distribute`` strategy (1 off TF)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


# ------------------------------------------------------------------ Keras 3
@keras.saving.register_keras_serializable(package="keras_distill")
class Distiller(DistillerCore, keras.Model, metaclass=FlavourDispatch):
    """Trains a student model to imitate a teacher (knowledge distillation).

    A drop-in for the keras.io ``Distiller`` example: ``compile(optimizer,
    metrics, student_loss_fn, distillation_loss_fn, alpha, temperature)``
    then ``fit``/``evaluate``/``predict`` like any model, minimising

    ``alpha · student_loss(y, s) + (1 − alpha) · T² · KL(softmax(t/T) ‖
    softmax(s/T)) + sum(student.losses)``

    where ``t`` and ``s`` are the teacher's and student's logits (Hinton et
    al. 2015). Unlike the keras.io example and ``keras.distillation``, the
    KL term is computed exactly from log-softmax (finite for logits of any
    size), ``sample_weight`` and the student's regularisation losses are
    honoured, and the user's teacher is never modified: it runs once per
    batch in inference mode and receives no gradient.

    Runs on every Keras 3 backend (TensorFlow, JAX): the step's math is
    `keras_distill.objective` in ``keras.ops``, plugged into Keras's own
    training loop through ``compute_loss``. Only the student's (and
    adapters') variables are ``trainable_variables``; the teacher's are
    non-trainable state of the distiller, so no optimizer (AdamW's weight
    decay included) touches them.

    The student and teacher may be Keras 3 (``keras``) or Keras 2
    (``tf_keras``) models, in any combination on the TensorFlow backend.
    ``Distiller(...)`` returns a model of the *student's* flavour: this
    class for a Keras 3 student, `keras_distill.tf_keras.Distiller` (a
    ``tf_keras.Model``, needed for TFMOT pruning/quantization) for a
    ``tf_keras`` student; ``isinstance(d, Distiller)`` holds for both.
    Compile it with optimizers, losses and metrics of that same flavour.

    Logs: ``fit`` reports ``loss`` (the optimised total), ``student_loss``,
    ``distillation_loss`` (T² included) and the compiled metrics.
    ``evaluate`` runs the student alone in inference mode (BatchNorm
    statistics are left unchanged) and reports ``loss`` (student loss plus
    regularisation), ``student_loss`` and the metrics; given no labels it
    reports the distillation loss against the teacher instead. Every value
    is averaged over samples.

    Args:
        student: The model to train, a ``keras.Model`` or ``tf_keras.Model``.
        teacher: The trained model to imitate (either flavour). It is only
            called, never changed.
        teacher_outputs: ``"auto"`` (default), ``"logits"`` or
            ``"probabilities"``. With ``"auto"`` a model whose last layer
            applies a softmax is detected and its probabilities ``p`` are
            turned back into logits ``log(p)`` (exact:
            ``softmax(log(p)/T)`` is the softened ``p``), never softened as
            if they were logits. Subclassed models cannot be inspected and
            count as ``"logits"``: say ``"probabilities"`` for them if they
            end in a softmax.
        student_outputs: The same for the student. The student loss always
            receives the student's raw output, so pair a softmax student
            with ``from_logits=False`` losses.
        name: The model's name.
        teacher_dtype: ``None`` (default: the teacher as it is),
            ``"bfloat16"`` or ``"float16"``: the teacher's forward pass runs
            in that precision (a private ``mixed_<dtype>`` copy of a
            Sequential/Functional teacher; yours is not touched) while the
            student trains in float32. Its logits are cast to float32.

    Example:
    >>> import numpy as np, keras
    >>> from keras_distill import Distiller
    >>> x = np.random.rand(64, 8).astype("float32")
    >>> y = np.random.randint(0, 3, 64)
    >>> teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> distiller = Distiller(student=student, teacher=teacher)
    >>> distiller.compile(
    ...     optimizer=keras.optimizers.Adam(),
    ...     metrics=[keras.metrics.SparseCategoricalAccuracy()],
    ...     student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
    ...         from_logits=True),
    ...     distillation_loss_fn=keras.losses.KLDivergence(),
    ...     alpha=0.1, temperature=10)
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['distillation_loss', 'loss', 'sparse_categorical_accuracy', 'student_loss']
    """

    _flavour = _compat.KERAS3

    # -------------------------------------------------------- variables
    @property
    def trainable_variables(self):
        """The student's (and adapters') trainable variables only."""
        return self.trainable_weights

    @property
    def non_trainable_variables(self):
        """Every other variable: the teacher's, the student's statistics."""
        train = {id(v) for v in self.trainable_weights}
        return [v for v in self.variables if id(v) not in train]

    @property
    def non_trainable_weights(self):
        train = {id(v) for v in self.trainable_weights}
        return [v for v in self.weights if id(v) not in train]

    # ------------------------------------------------------ forward pass
    def call(self, inputs, training=None):
        """The student's output (``predict`` gives the student's).

        While training a feature distiller it also returns the student's
        tapped features (``{"output": ..., "features": {...}}``), so that
        one forward pass serves the loss. With ``fit(augmentation=...)``
        the student sees the batch's view, which the loss gives the teacher.
        """
        if training and self._views.value is not None:
            x, cached, transformations = views_module.training_batch(
                self, inputs)
            self._step_view.value = (x, cached, transformations)
            out, features = self._student_forward(x, training=True)
            return {"output": out, "features": features}
        x, _ = cache.split(inputs)
        if training and self._has_student_features():
            out, features = self._student_forward(x, training=True)
            return {"output": out, "features": features}
        return single_tensor(self.student(x, training=training), "student")

    def _init_view_seed(self):
        # Tracked state: the JAX trainer threads it through its steps.
        self._view_seed = keras.random.SeedGenerator()
        self._step_view = Holder(value=None)

    def _view_seed_generator(self):
        return self._view_seed

    @staticmethod
    def _prediction(y_pred):
        if isinstance(y_pred, dict) and "features" in y_pred:
            return y_pred["output"], y_pred["features"]
        return y_pred, {}

    def _regularisation_losses(self):
        if keras.backend.backend() == "jax":
            # The JAX trainer hands the forward pass's losses to the model
            # (the student's and the adapters': the teacher is not called
            # in `call`), weight regularisation of the trainable (student)
            # variables included.
            return list(self.losses)
        return super()._regularisation_losses()

    @property
    def metrics(self):
        """Keras's (``loss``, compiled metrics) and one per logged term."""
        base = list(super().metrics)
        return base + [m for m in self._trackers.values()
                       if not any(m is b for b in base)]

    # ------------------------------------------------------------ loss
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        """The distillation objective of one batch (Keras's loss hook).

        Training: the teacher runs once (or its cached outputs are read)
        and `keras_distill.objective.Objective.training_loss` combines the
        terms. Evaluation: the student alone against the labels, or the
        distillation loss when there are none.
        """
        self._require_compiled()
        objective = self._objective
        if y_pred is None:
            y_pred = self(x, training=training)
        # fit(augmentation=...): the view the student saw in `call`.
        step_view, self._step_view.value = self._step_view.value, None
        if training and step_view is not None:
            x, cached, transformations = step_view
            y = views_module.training_labels(self, y, transformations)
            objective = self._training_objective()
        else:
            x, cached = cache.split(x)
        student_out, student_features = self._prediction(y_pred)
        replicas = _replicas()

        def scale(value):
            return value if replicas == 1 else value / replicas

        def unscale(value):
            return value if replicas == 1 else value * replicas

        regularisation = self._regularisation(scale)
        if training:
            teacher_out, teacher_features = self._teacher_outputs(x, cached)
            total, logs = objective.training_loss(
                y=y, sample_weight=sample_weight, student_out=student_out,
                teacher_out=teacher_out, student_features=student_features,
                teacher_features=teacher_features,
                regularisation=regularisation, scale=scale,
            )
        else:
            total, logs = self._objective.evaluation_loss(
                y=y, sample_weight=sample_weight, student_out=student_out,
                teacher_out_fn=lambda: self._teacher_outputs(x, cached)[0],
                regularisation=regularisation, scale=scale,
            )
        self._logged = self._track(logs, _batch_size(x), unscale)
        return total

    def get_metrics_result(self):
        """Every metric's value, leaving out compiled metrics that were
        never updated (fit/evaluate without labels has none to update)."""
        logs = {}
        for metric in self.metrics:
            if getattr(metric, "built", True) is False:
                continue
            result = metric.result()
            if isinstance(result, dict):
                logs.update(result)
            else:
                logs[metric.name] = result
        return logs

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """``loss``, the terms logged this step and the compiled metrics."""
        student_out, _ = self._prediction(y_pred)
        logged = getattr(self, "_logged", set())
        if y is not None:
            logs = super().compute_metrics(x, y, student_out, sample_weight)
        else:
            # No labels: the compiled metrics cannot be updated (nor read).
            logs = {m.name: m.result() for m in self.metrics
                    if m.name == "loss"}
        for name in self._trackers:
            logs.pop(name, None)
        logs.update(self._tracker_results(
            [n for n in self._trackers if n in logged]))
        return logs
