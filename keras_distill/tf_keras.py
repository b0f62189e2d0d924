"""The ``tf_keras`` (Keras 2) distillers: TFMOT's world.

TensorFlow Model Optimization prunes and quantizes only ``tf_keras``
models, so every distiller has a ``tf_keras`` twin here: the same core
(`keras_distill.distiller.DistillerCore`, the feature and ensemble cores)
and the same objective (`keras_distill.objective`), in a ``tf_keras.Model``
whose ``train_step`` / ``test_step`` run the forward passes under a
``tf.GradientTape``. You rarely name these classes: ``keras_distill.
Distiller(student, teacher)`` with a ``tf_keras`` student builds
`Distiller` from here, and ``isinstance(d, keras_distill.Distiller)``
holds. Importing this module imports ``tf_keras`` (never TFMOT); it needs
Keras 3's TensorFlow backend, the only one that shares tensors with
``tf_keras``.

Example:
>>> import numpy as np, tf_keras
>>> import keras_distill
>>> def net():
...     return tf_keras.Sequential([tf_keras.layers.Dense(3, input_shape=(8,))])
>>> d = keras_distill.Distiller(student=net(), teacher=net())
>>> type(d).__module__, isinstance(d, keras_distill.Distiller)
('keras_distill.tf_keras', True)
>>> isinstance(d, tf_keras.Model)
True
"""

import keras
import tensorflow as tf
import tf_keras

from keras_distill import cache
from keras_distill import view_cache as views
from keras_distill import distiller as _keras3
from keras_distill import ensemble as _ensemble
from keras_distill import feature_distiller as _features
from keras_distill.core import DistillerCore, _batch_size, single_tensor
from keras_distill.distiller import register_twin
from keras_distill.ensemble import EnsembleCore, MultiTeacherCore
from keras_distill.feature_distiller import FeatureCore


def _replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


@tf_keras.saving.register_keras_serializable(package="keras_distill")
class Distiller(DistillerCore, tf_keras.Model):
    """`keras_distill.Distiller` for a ``tf_keras`` (Keras 2) student.

    Built by ``keras_distill.Distiller(student, teacher)`` when ``student``
    is a ``tf_keras`` model; see `keras_distill.Distiller` for everything.
    Compile it with ``tf_keras`` optimizers, losses and metrics.

    Example:
    >>> import tf_keras
    >>> from keras_distill import Distiller
    >>> teacher = tf_keras.Sequential([tf_keras.layers.Dense(3,
    ...                                input_shape=(8,))])
    >>> student = tf_keras.Sequential([tf_keras.layers.Dense(3,
    ...                                input_shape=(8,))])
    >>> d = Distiller(student=student, teacher=teacher)
    >>> isinstance(d, tf_keras.Model)
    True
    """

    _flavour = "tf_keras"

    def __init__(self, student, teacher, *args, **kwargs):
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                "A tf_keras student needs Keras 3's TensorFlow backend "
                f"(KERAS_BACKEND=tensorflow), but the backend is "
                f"{keras.backend.backend()!r}. Use a Keras 3 student on "
                "this backend, or set KERAS_BACKEND=tensorflow before "
                "importing keras."
            )
        super().__init__(student, teacher, *args, **kwargs)
        self._total_tracker = tf_keras.metrics.Mean(name="loss")

    # --------------------------------------------------------- forward pass
    def call(self, inputs, training=None):
        """The student's output (``predict`` gives the student's)."""
        x, _ = cache.split(inputs)
        return single_tensor(self.student(x, training=training), "student")

    # --------------------------------------------------------------- steps
    def train_step(self, data):
        """One optimisation step: one teacher and one student forward pass."""
        self._require_compiled()
        x, y, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
        labels = y
        x, cached, transformations = views.training_batch(self, x)
        y = views.training_labels(self, y, transformations)
        replicas = _replicas()
        teacher_out, teacher_features = self._teacher_outputs(x, cached)
        with tf.GradientTape() as tape:
            student_out, student_features = self._student_forward(
                x, training=True)
            total, logs = self._training_objective().training_loss(
                y=y, sample_weight=sample_weight, student_out=student_out,
                teacher_out=teacher_out, student_features=student_features,
                teacher_features=teacher_features,
                regularisation=self._regularisation(lambda v: v / replicas),
                scale=lambda v: v / replicas,
            )
        self.optimizer.minimize(total, self.trainable_weights, tape=tape)
        return self._logs(total, logs, x, labels, student_out, sample_weight,
                          replicas)

    def test_step(self, data):
        """Evaluates the student in inference mode (see `Distiller`)."""
        self._require_compiled()
        x, y, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
        x, cached = cache.split(x)
        replicas = _replicas()
        student_out, _ = self._student_forward(x, training=False)
        total, logs = self._objective.evaluation_loss(
            y=y, sample_weight=sample_weight, student_out=student_out,
            teacher_out_fn=lambda: self._teacher_outputs(x, cached)[0],
            regularisation=self._regularisation(lambda v: v / replicas),
            scale=lambda v: v / replicas,
        )
        return self._logs(total, logs, x, y, student_out, sample_weight,
                          replicas)

    def _logs(self, total, logs, x, y, student_out, sample_weight, replicas):
        batch = _batch_size(x)
        self._total_tracker.update_state(total * replicas, sample_weight=batch)
        logged = self._track(logs, batch, lambda v: v * replicas)
        out = {"loss": self._total_tracker.result()}
        out.update(self._tracker_results(
            [n for n in self._trackers if n in logged]))
        if y is not None and self.compiled_metrics is not None:
            self.compiled_metrics.update_state(y, student_out, sample_weight)
            out.update({m.name: m.result()
                        for m in self.compiled_metrics.metrics})
        return out

    @property
    def metrics(self):
        compiled = getattr(self, "compiled_metrics", None)
        user = list(compiled.metrics) if compiled is not None else []
        return ([self._total_tracker] + list(self._trackers.values()) + user)


@tf_keras.saving.register_keras_serializable(package="keras_distill")
class FeatureDistiller(FeatureCore, Distiller):
    """`keras_distill.FeatureDistiller` for a ``tf_keras`` student.

    Example:
    >>> import tf_keras
    >>> import keras_distill
    >>> def net(width):
    ...     return tf_keras.Sequential([
    ...         tf_keras.layers.Dense(width, input_shape=(8,), name="hidden"),
    ...         tf_keras.layers.Dense(3, name="logits")])
    >>> d = keras_distill.FeatureDistiller(
    ...     net(4), net(16), pairs=[keras_distill.FeaturePair(
    ...         "hidden", "hidden", adapter="auto")])
    >>> isinstance(d, keras_distill.FeatureDistiller), type(d).__name__
    (True, 'FeatureDistiller')
    """


@tf_keras.saving.register_keras_serializable(package="keras_distill")
class L2Distiller(_features._L2Args, FeatureDistiller):
    """`keras_distill.L2Distiller` for a ``tf_keras`` student.

    Example:
    >>> issubclass(L2Distiller, FeatureDistiller)
    True
    """


@tf_keras.saving.register_keras_serializable(package="keras_distill")
class FSPDistiller(_features._FSPArgs, FeatureDistiller):
    """`keras_distill.FSPDistiller` for a ``tf_keras`` student.

    Example:
    >>> issubclass(FSPDistiller, FeatureDistiller)
    True
    """


@tf_keras.saving.register_keras_serializable(package="keras_distill")
class AttentionDistiller(_features._AttentionArgs, FeatureDistiller):
    """`keras_distill.AttentionDistiller` for a ``tf_keras`` student.

    Example:
    >>> issubclass(AttentionDistiller, FeatureDistiller)
    True
    """


@tf_keras.saving.register_keras_serializable(package="keras_distill")
class RKDDistiller(_features._RKDArgs, FeatureDistiller):
    """`keras_distill.RKDDistiller` for a ``tf_keras`` student.

    Example:
    >>> issubclass(RKDDistiller, FeatureDistiller)
    True
    """


@tf_keras.saving.register_keras_serializable(package="keras_distill")
class MultiTeacherDistiller(MultiTeacherCore, Distiller):
    """`keras_distill.MultiTeacherDistiller` for a ``tf_keras`` student.

    Example:
    >>> issubclass(MultiTeacherDistiller, Distiller)
    True
    """


@tf_keras.saving.register_keras_serializable(package="keras_distill")
class TeacherEnsemble(EnsembleCore, tf_keras.Model):
    """`keras_distill.ensemble.TeacherEnsemble` of ``tf_keras`` teachers.

    Example:
    >>> issubclass(TeacherEnsemble, tf_keras.Model)
    True
    """


for _keras_cls, _tf_keras_cls in (
    (_keras3.Distiller, Distiller),
    (_features.FeatureDistiller, FeatureDistiller),
    (_features.L2Distiller, L2Distiller),
    (_features.FSPDistiller, FSPDistiller),
    (_features.AttentionDistiller, AttentionDistiller),
    (_features.RKDDistiller, RKDDistiller),
    (_ensemble.MultiTeacherDistiller, MultiTeacherDistiller),
):
    register_twin(_keras_cls, _tf_keras_cls)
