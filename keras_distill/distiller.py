"""`Distiller`: knowledge distillation inside ``model.fit()``.

One implementation of the training logic (`_DistillerLogic`) is mixed into a
Keras 3 ``keras.Model`` (`Distiller`) and, when the student is a Keras 2
``tf_keras`` model (as TFMOT pruning and quantization need), into a
``tf_keras.Model``. ``Distiller(student, teacher)`` picks the flavour of the
student by itself, so the same code serves both.
"""

import functools
import math
import numbers
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_distill import _compat
from keras_distill import losses as kd_losses

_OUTPUT_KINDS = ("auto", "logits", "probabilities")
_KL_NAMES = {"kldivergence", "kld", "kl", "kullbackleiblerdivergence"}
_MEAN_REDUCTIONS = ("auto", "sum_over_batch_size", "mean")
_NO_REDUCTION_ATTRIBUTE = object()
# Keys of the input dict that carries cached teacher outputs through `fit`.
_INPUTS_KEY = "keras_distill_inputs"
_CACHE_KEY = "keras_distill_teacher_outputs"
_CACHE_FEATURES_KEY = "keras_distill_teacher_features"
_CACHE_DTYPES = ("float32", "float16")
_TEACHER_DTYPES = (None, "float16", "bfloat16")


class _Untracked:
    """Holds a model out of Keras's attribute tracking (and saving)."""

    def __init__(self, model):
        self.model = model


def _low_precision_copy(model, dtype):
    """A copy of a Sequential/Functional model computing in ``dtype``.

    Every layer gets the ``mixed_<dtype>`` policy (float32 variables,
    16-bit computation) and the original's weights; the original is not
    touched.
    """
    k = _compat.keras_module(_compat.flavour_of(model))
    policy = f"mixed_{dtype}"

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = policy
        return layer.__class__.from_config(config)

    try:
        copy = k.models.clone_model(model, clone_function=clone)
    except Exception as error:  # noqa: BLE001 - any reason clone_model refuses
        raise ValueError(
            f"`teacher_dtype`={dtype!r} needs a Sequential or Functional "
            f"teacher that Keras can clone; cloning {model.name!r} failed "
            f"({type(error).__name__}: {error}). Leave teacher_dtype=None, or "
            "build the teacher with a mixed precision policy yourself."
        ) from error
    copy.set_weights(model.get_weights())
    return copy


class DecoupledKD:
    """Selects decoupled knowledge distillation as the distillation loss.

    ``distiller.compile(distillation_loss_fn=DecoupledKD(alpha=1.0,
    beta=8.0), temperature=4.0, ...)`` replaces the KL term by
    `keras_distill.losses.dkd_loss` (Zhao et al., "Decoupled Knowledge
    Distillation", CVPR 2022): ``alpha`` weighs the target-class term
    (TCKD), ``beta`` the non-target term (NCKD), both T²-scaled. It needs
    the labels, so ``fit`` must get ``(x, y)``; the Distiller's own
    ``alpha`` still weighs the hard-label loss against it.

    Args:
        alpha: Weight of TCKD (>= 0).
        beta: Weight of NCKD (>= 0); the paper uses 8 on CIFAR-100.

    Example:
    >>> DecoupledKD(beta=4.0)
    DecoupledKD(alpha=1.0, beta=4.0)
    """

    def __init__(self, alpha=1.0, beta=8.0):
        self.alpha = kd_losses._check_weight(alpha, "alpha")
        self.beta = kd_losses._check_weight(beta, "beta")

    def __repr__(self):
        return f"DecoupledKD(alpha={self.alpha}, beta={self.beta})"


def _normalise_name(name):
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


def _is_kl_divergence(fn):
    """True for every way Keras lets a user name the KL divergence loss."""
    if isinstance(fn, str):
        return _normalise_name(fn) in _KL_NAMES
    if type(fn).__name__ == "KLDivergence":
        module = type(fn).__module__
        return module.startswith("keras") or module.startswith("tf_keras")
    name = getattr(fn, "__name__", None)
    module = getattr(fn, "__module__", "") or ""
    return (
        name is not None
        and _normalise_name(name) in _KL_NAMES
        and (module.startswith("keras") or module.startswith("tf_keras"))
    )


def _check_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(
            f"`alpha` must be a number in [0, 1], got {alpha!r} of type "
            f"{type(alpha).__name__}."
        )
    if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise ValueError(
            f"`alpha` must be in [0, 1], got {alpha!r}. `alpha` weighs the "
            "student (hard-label) loss and `1 - alpha` the distillation loss "
            "(keras.io semantics; MNN uses the opposite convention)."
        )
    return float(alpha)


def _check_output_kind(value, argument):
    if value not in _OUTPUT_KINDS:
        raise ValueError(
            f"`{argument}` must be one of {_OUTPUT_KINDS}, got {value!r}. "
            "Use 'probabilities' for a model that ends in a softmax, "
            "'logits' otherwise, or 'auto' to detect it."
        )
    return value


def _resolve_output_kind(model, value, argument):
    if value != "auto":
        return value
    return "probabilities" if _compat.ends_in_softmax(model) else "logits"


def _check_class_axis(shape, argument):
    if shape is None or len(shape) == 0:
        return
    if shape[-1] == 1:
        raise ValueError(
            f"The {argument}'s output has a single unit (shape "
            f"{tuple(shape)}): a softmax over one unit is always 1, so there "
            "is nothing to distil. Give the model one output unit per class "
            "(e.g. 2 logits for a binary task)."
        )


def _check_shapes(teacher_shape, student_shape):
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


def _single_tensor(value, argument):
    if isinstance(value, dict) or isinstance(value, (list, tuple)):
        flat = tf.nest.flatten(value)
        if len(flat) != 1:
            raise ValueError(
                f"The {argument} returned {len(flat)} outputs; Distiller "
                "distils single-output models. Build a model that returns "
                "only the class scores to distil."
            )
        return flat[0]
    return value


def _loss_reduction(fn, argument):
    reduction = getattr(fn, "reduction", _NO_REDUCTION_ATTRIBUTE)
    if reduction is _NO_REDUCTION_ATTRIBUTE or reduction in _MEAN_REDUCTIONS:
        return "mean"
    if reduction == "sum":
        return "sum"
    raise ValueError(
        f"`{argument}` has reduction={reduction!r}; Distiller needs a loss "
        "that reduces to a scalar: use the default reduction "
        "('sum_over_batch_size') or 'sum'."
    )


def _average(values, sample_weight, reduction, argument):
    """Reduces per-sample losses to this replica's share of the batch loss.

    Under a `tf.distribute` strategy the result is divided by the number of
    replicas (the global batch size is used), so that the gradients the
    optimizer sums across replicas are those of the global batch mean.
    """
    values = tf.convert_to_tensor(values)
    if values.dtype != tf.float64:
        values = tf.cast(values, tf.float32)
    if values.shape.rank == 0:
        if sample_weight is not None:
            raise ValueError(
                f"`{argument}` returned a scalar, so `sample_weight` cannot "
                "be applied to it. Return one loss per sample (e.g. "
                "`keras.losses.sparse_categorical_crossentropy`) or pass a "
                "`keras.losses.Loss` instance."
            )
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return values / tf.cast(replicas, values.dtype)
    if sample_weight is not None:
        weights = tf.cast(tf.convert_to_tensor(sample_weight), values.dtype)
        while (
            weights.shape.rank is not None
            and weights.shape.rank > max(values.shape.rank, 1)
            and weights.shape[-1] == 1
        ):
            weights = tf.squeeze(weights, axis=-1)
        while weights.shape.rank < values.shape.rank:
            weights = tf.expand_dims(weights, axis=-1)
        values = values * weights
    if values.shape.rank > 1:
        values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
    if reduction == "sum":
        return tf.reduce_sum(values)
    return tf.nn.compute_average_loss(values)


def _replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def _nan_guard(distiller):
    """A callback that keeps the student's last good weights.

    If an epoch's loss is NaN or infinite, training stops and the student's
    weights and the optimizer's state are restored to the end of the last
    epoch whose loss was finite (or to what they were before ``fit``), with
    a warning.
    """
    k = _compat.keras_module(distiller._flavour)

    class NaNGuard(k.callbacks.Callback):
        def _state(self):
            variables = distiller.optimizer.variables
            variables = variables() if callable(variables) else variables
            return (list(distiller.student.weights)
                    + list(distiller._extra_trainable_weights())
                    + list(variables))

        def _snapshot(self):
            self.good = [np.array(v.numpy(), copy=True) for v in self._state()]

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


class _DistillerLogic:
    """The distillation logic shared by the Keras 3 and tf_keras models."""

    _flavour = None  # "keras" or "tf_keras", set by each concrete class.
    _model_init = None  # That flavour's Model.__init__.

    _supports_teacher_dtype = True  # feature distillers tap the float teacher

    def __init__(
        self,
        student,
        teacher,
        teacher_outputs="auto",
        student_outputs="auto",
        name="distiller",
        teacher_dtype=None,
        **kwargs,
    ):
        self._model_init(name=name, **kwargs)
        self._setup(student, teacher, teacher_outputs, student_outputs)
        self._set_teacher_dtype(teacher_dtype)

    def _set_teacher_dtype(self, teacher_dtype):
        if teacher_dtype not in _TEACHER_DTYPES:
            raise ValueError(
                f"`teacher_dtype` must be one of {_TEACHER_DTYPES}, got "
                f"{teacher_dtype!r}."
            )
        if teacher_dtype is not None and not self._supports_teacher_dtype:
            raise ValueError(
                f"{type(self).__name__} does not support `teacher_dtype` yet "
                "(its taps read the float teacher). Leave it None."
            )
        self.teacher_dtype = teacher_dtype
        self._inference_teacher = _Untracked(
            self.teacher if teacher_dtype is None
            else _low_precision_copy(self.teacher, teacher_dtype)
        )

    # ------------------------------------------------------------------ setup
    def _setup(self, student, teacher, teacher_outputs, student_outputs):
        _compat.model_flavour(student, "student")
        _compat.model_flavour(teacher, "teacher")
        if student is teacher:
            raise ValueError(
                "`student` and `teacher` are the same model object. Build "
                "a separate (usually smaller) student model to distil into."
            )
        self.teacher_outputs = _resolve_output_kind(
            teacher, _check_output_kind(teacher_outputs, "teacher_outputs"),
            "teacher_outputs",
        )
        self.student_outputs = _resolve_output_kind(
            student, _check_output_kind(student_outputs, "student_outputs"),
            "student_outputs",
        )
        teacher_shape = _compat.single_output_shape(teacher)
        student_shape = _compat.single_output_shape(student)
        _check_class_axis(teacher_shape, "teacher")
        _check_class_axis(student_shape, "student")
        _check_shapes(teacher_shape, student_shape)
        self.student = student
        self.teacher = teacher
        if student.built and teacher.built:
            # So that weights can be loaded before the first call.
            self.built = True
        k = _compat.keras_module(self._flavour)
        self._total_tracker = k.metrics.Mean(name="loss")
        self._student_tracker = k.metrics.Mean(name="student_loss")
        self._distill_tracker = k.metrics.Mean(name="distillation_loss")
        self.alpha = None
        self.temperature = None
        self._student_loss_fn = None
        self._distillation_loss_fn = None

    # ---------------------------------------------------------------- compile
    def compile(
        self,
        optimizer="adam",
        metrics=None,
        student_loss_fn=None,
        distillation_loss_fn="kl_divergence",
        alpha=0.1,
        temperature=3.0,
        **kwargs,
    ):
        """Configures the distiller for training.

        The optimised loss is
        ``alpha * student_loss + (1 - alpha) * distillation_loss
        + sum(student.losses)`` with
        ``distillation_loss = T² · D(teacher, student)``.

        Args:
            optimizer: Optimizer instance or name, of the student's Keras
                flavour.
            metrics: Metrics of the student's predictions against the labels
                (e.g. ``[keras.metrics.SparseCategoricalAccuracy()]``).
            student_loss_fn: Loss between labels and the student's output,
                e.g. ``keras.losses.SparseCategoricalCrossentropy(
                from_logits=True)``. May be omitted only when ``alpha == 0``.
            distillation_loss_fn: ``"kl_divergence"`` (default; also a
                ``keras.losses.KLDivergence()`` instance or any Keras name for
                it): computed exactly from log-softmax of ``logits / T``. Any
                other loss receives ``(softmax(t / T), softmax(s / T))`` as
                ``(y_true, y_pred)``, as in the keras.io example.
            alpha: Weight of the student (hard-label) loss in [0, 1]; the
                distillation loss gets ``1 - alpha``.
            temperature: Softening temperature T > 0.
            **kwargs: Passed on to ``Model.compile`` (``jit_compile``,
                ``steps_per_execution``, ``run_eagerly``, ...).

        Example:
        >>> import keras
        >>> make = lambda: keras.Sequential([keras.Input((8,)),
        ...                                  keras.layers.Dense(3)])
        >>> d = Distiller(student=make(), teacher=make())
        >>> d.compile(optimizer="adam", alpha=0.5, temperature=2.0,
        ...           student_loss_fn="sparse_categorical_crossentropy")
        >>> d.alpha, d.temperature
        (0.5, 2.0)
        """
        if "loss" in kwargs:
            raise ValueError(
                "Distiller.compile() takes `student_loss_fn` and "
                "`distillation_loss_fn`, not `loss`. Pass your loss as "
                "`student_loss_fn=...`."
            )
        self.alpha = _check_alpha(alpha)
        self.temperature = kd_losses._check_temperature(
            temperature, "temperature"
        )
        self._student_loss_fn = self._resolve_loss(
            student_loss_fn, "student_loss_fn"
        )
        if self._student_loss_fn is None and self.alpha > 0:
            raise ValueError(
                f"`student_loss_fn` is required when alpha > 0 (alpha="
                f"{self.alpha}). Pass e.g. keras.losses."
                "SparseCategoricalCrossentropy(from_logits=True), or set "
                "alpha=0 to train on the distillation loss alone."
            )
        if distillation_loss_fn is None:
            raise ValueError(
                "`distillation_loss_fn` must not be None: use the default "
                "'kl_divergence' or a Keras loss."
            )
        if isinstance(distillation_loss_fn, DecoupledKD):
            self._distillation_loss_fn = distillation_loss_fn
            self._distillation_reduction = "mean"
        elif _is_kl_divergence(distillation_loss_fn):
            self._distillation_reduction = _loss_reduction(
                distillation_loss_fn, "distillation_loss_fn"
            )
            self._distillation_loss_fn = "kl_divergence"
        else:
            self._distillation_loss_fn = self._resolve_loss(
                distillation_loss_fn, "distillation_loss_fn"
            )
            self._distillation_reduction = _loss_reduction(
                self._distillation_loss_fn, "distillation_loss_fn"
            )
        if self._student_loss_fn is not None:
            self._student_reduction = _loss_reduction(
                self._student_loss_fn, "student_loss_fn"
            )
        k = _compat.keras_module(self._flavour)
        self._feature_trackers = {
            name: k.metrics.Mean(name=name)
            for name in self._feature_term_names()
        }
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def _resolve_loss(self, fn, argument):
        if fn is None:
            return None
        if isinstance(fn, str):
            k = _compat.keras_module(self._flavour)
            try:
                return k.losses.get(fn)
            except (ValueError, TypeError) as error:
                raise ValueError(
                    f"`{argument}`={fn!r} is not a Keras loss name. Pass a "
                    "loss instance such as keras.losses."
                    "SparseCategoricalCrossentropy(from_logits=True)."
                ) from error
        if not callable(fn):
            raise TypeError(
                f"`{argument}` must be a callable `fn(y_true, y_pred)` or a "
                f"Keras loss, got {type(fn).__name__}."
            )
        return fn

    # ------------------------------------------------------------- weights
    @property
    def trainable_weights(self):
        """Only the student's trainable weights: the teacher never trains."""
        return list(self.student.trainable_weights) + list(
            self._extra_trainable_weights()
        )

    @property
    def non_trainable_weights(self):
        seen = {id(w) for w in self.trainable_weights}
        out = []
        for w in list(self.student.non_trainable_weights) + list(
            self.teacher.weights
        ):
            if id(w) not in seen:
                seen.add(id(w))
                out.append(w)
        return out

    # ---------------------------------------------------------------- metrics
    @property
    def metrics(self):
        return (
            [self._total_tracker, self._student_tracker, self._distill_tracker]
            + list(getattr(self, "_feature_trackers", {}).values())
            + self._user_metric_objects()
        )

    # ------------------------------------------------------------ the maths
    def call(self, inputs, training=None):
        """Returns the student's output (``predict`` gives the student's)."""
        inputs, _ = self._split_cached(inputs)
        return self._student_forward(inputs, training=training)[0]

    # ------------------------------------------------- teacher-output cache
    @staticmethod
    def _split_cached(x):
        """Separates inputs from cached teacher outputs packed by `fit`.

        Returns ``(x, None)`` or ``(x, (outputs, features))``.
        """
        if isinstance(x, dict) and _CACHE_KEY in x:
            return x[_INPUTS_KEY], (
                x[_CACHE_KEY], x.get(_CACHE_FEATURES_KEY, {})
            )
        return x, None

    def fit(self, x=None, y=None, *args, cache_teacher=False,
            cache_dtype="float32", **kwargs):
        """``Model.fit``, optionally with the teacher run only once.

        With ``cache_teacher=True`` the teacher's outputs for every training
        sample are computed once, in inference mode, before the first epoch
        and kept in memory (``cache_dtype="float16"`` halves it); every epoch
        then trains the student without running the teacher. The outputs
        travel with their inputs through Keras's shuffling and
        ``validation_split``, so they stay aligned. Only in-memory arrays
        are accepted: a ``tf.data`` pipeline or a generator may change its
        inputs from epoch to epoch (random augmentation), which would make
        cached targets wrong. ``distiller.teacher_cache_info`` tells the
        cache's size.

        Args:
            x, y: As for ``Model.fit``.
            cache_teacher: Run the teacher once and cache its outputs.
            cache_dtype: ``"float32"`` or ``"float16"``.
            *args, **kwargs: As for ``Model.fit``.

        Returns:
            The ``History`` of ``Model.fit``.

        Example:
        >>> import numpy as np, keras
        >>> x = np.random.rand(64, 8).astype("float32")
        >>> y = np.random.randint(0, 3, 64)
        >>> make = lambda: keras.Sequential([keras.Input((8,)),
        ...                                  keras.layers.Dense(3)])
        >>> d = Distiller(student=make(), teacher=make())
        >>> d.compile(optimizer="adam", student_loss_fn=keras.losses.
        ...           SparseCategoricalCrossentropy(from_logits=True))
        >>> _ = d.fit(x, y, epochs=2, verbose=0, cache_teacher=True)
        >>> d.teacher_cache_info["bytes"]  # 64 samples x 3 logits x 4 bytes
        768
        """
        if cache_teacher:
            x = self._with_teacher_cache(
                x, cache_dtype, kwargs.get("batch_size"),
                kwargs.get("verbose", "auto"),
            )
        if args:
            # Positional batch_size, epochs, verbose, callbacks: as keywords.
            names = ("batch_size", "epochs", "verbose", "callbacks")
            for name, value in zip(names, args):
                if name in kwargs:
                    raise TypeError(f"fit() got multiple values for `{name}`")
                kwargs[name] = value
            args = args[len(names):]
        guard = _nan_guard(self)
        callbacks = list(kwargs.get("callbacks") or [])
        if self._flavour == _compat.TF_KERAS:
            # A TFMOT-pruned student needs its pruning step advanced once per
            # batch: add the callback unless the user passed one.
            from keras_distill import pruning  # imports neither TFMOT nor tf_keras

            if pruning.pruning_wrappers(self.student) and not any(
                type(c).__name__ == "UpdatePruningStep" for c in callbacks
            ):
                callbacks += pruning.pruning_callbacks(self.student)
        kwargs["callbacks"] = [guard] + callbacks
        return super().fit(x, y, *args, **kwargs)

    def _with_teacher_cache(self, x, cache_dtype, batch_size, verbose):
        if cache_dtype not in _CACHE_DTYPES:
            raise ValueError(
                f"`cache_dtype` must be one of {_CACHE_DTYPES}, got "
                f"{cache_dtype!r}."
            )
        leaves = tf.nest.flatten(x) if x is not None else []
        if not leaves or not all(
            isinstance(v, (np.ndarray, tf.Tensor)) for v in leaves
        ):
            raise ValueError(
                "`cache_teacher=True` needs the training inputs `x` as "
                "in-memory arrays (numpy arrays or tensors), got "
                f"{type(x).__name__}. A tf.data pipeline, generator or "
                "PyDataset may yield different inputs every epoch (random "
                "augmentation, shuffled crops), and teacher outputs cached "
                "from one epoch would then be wrong for the next. Pass "
                "arrays, or leave cache_teacher=False to run the teacher on "
                "every batch."
            )
        outputs, features = self._teacher_predict(x, batch_size or 256)
        outputs = np.asarray(outputs).astype(cache_dtype)
        features = {
            name: np.asarray(value).astype(cache_dtype)
            for name, value in features.items()
        }
        if not all(np.all(np.isfinite(v)) for v in [outputs, *features.values()]):
            raise ValueError(
                "The teacher produced non-finite outputs (NaN or inf) for "
                "some training samples"
                + (" in float16; use cache_dtype='float32'."
                   if cache_dtype == "float16" else
                   ": check the teacher and the inputs.")
            )
        nbytes = outputs.nbytes + sum(v.nbytes for v in features.values())
        self.teacher_cache_info = {
            "samples": int(outputs.shape[0]),
            "shape": tuple(outputs.shape),
            "dtype": cache_dtype,
            "bytes": int(nbytes),
        }
        if features:
            self.teacher_cache_info["features"] = {
                name: tuple(v.shape) for name, v in features.items()
            }
        if verbose != 0:
            print(
                f"keras_distill: cached teacher outputs for "
                f"{outputs.shape[0]} samples ({nbytes / 2**20:.1f} MiB, "
                f"{cache_dtype})"
            )
        packed = {_INPUTS_KEY: x, _CACHE_KEY: outputs}
        if features:
            packed[_CACHE_FEATURES_KEY] = features
        return packed

    def _logits(self, outputs, kind):
        outputs = tf.convert_to_tensor(outputs)
        if kind == "probabilities":
            return kd_losses.probabilities_to_logits(outputs)
        if outputs.dtype != tf.float64:
            outputs = tf.cast(outputs, tf.float32)
        return outputs

    # ------------------------------------------------------ extension points
    # Feature distillers override these; the defaults distil logits alone.
    def _student_forward(self, x, training):
        """One student forward pass: ``(outputs, {feature name: tensor})``."""
        return _single_tensor(self.student(x, training=training), "student"), {}

    def _teacher_forward(self, x):
        """One teacher forward pass in inference mode, without gradient:
        ``(outputs, {feature name: tensor})``."""
        teacher = self._inference_teacher.model
        out = _single_tensor(teacher(x, training=False), "teacher")
        return tf.stop_gradient(out), {}

    def _teacher_predict(self, x, batch_size):
        """The teacher over a whole array (for the cache), as numpy:
        ``(outputs, {feature name: array})``."""
        teacher = self._inference_teacher.model
        out = teacher.predict(x, batch_size=batch_size, verbose=0)
        return _single_tensor(out, "teacher"), {}

    def _feature_term_names(self):
        """Names of the extra loss terms `_feature_terms` returns (logged)."""
        return ()

    def _feature_terms(self, teacher_features, student_features,
                       sample_weight):
        """Extra loss terms: ``{name: (weight, this replica's loss)}``.

        Reduce per-sample values with ``_average`` so that ``sample_weight``
        and ``tf.distribute`` are handled like the logits terms.
        """
        return {}

    def _extra_trainable_weights(self):
        """Weights that train with the student but are not part of it
        (e.g. adapters)."""
        return []

    # -----------------------------------------------------------------------
    def _teacher_outputs(self, x, cached):
        """The teacher's ``(outputs, features)``: from the cache, or one
        forward pass."""
        if cached is None:
            return self._teacher_forward(x)
        outputs, features = cached
        return tf.cast(outputs, tf.float32), {
            name: tf.cast(value, tf.float32) for name, value in features.items()
        }

    def _distillation_per_sample(self, teacher_out, student_out, y=None):
        _check_shapes(teacher_out.shape, student_out.shape)
        _check_class_axis(teacher_out.shape, "teacher")
        t = self._logits(teacher_out, self.teacher_outputs)
        s = self._logits(student_out, self.student_outputs)
        temperature = self.temperature
        if isinstance(self._distillation_loss_fn, DecoupledKD):
            if y is None:
                raise ValueError(
                    "DecoupledKD needs the labels (its target-class term uses "
                    "them): pass `(x, y)` to fit/evaluate, or use the default "
                    "KL divergence to distil unlabelled data."
                )
            dkd = self._distillation_loss_fn
            return kd_losses.dkd_loss(
                t, s, y, alpha=dkd.alpha, beta=dkd.beta,
                temperature=temperature, reduction="none",
            )
        if self._distillation_loss_fn == "kl_divergence":
            return kd_losses.kd_loss(t, s, temperature, reduction="none")
        t_soft = tf.nn.softmax(t / temperature, axis=-1)
        s_soft = tf.nn.softmax(s / temperature, axis=-1)
        return self._loss_values(
            self._distillation_loss_fn, t_soft, s_soft
        ) * (temperature**2)

    @staticmethod
    def _loss_values(fn, y_true, y_pred):
        """Per-sample values of a loss (a Keras ``Loss`` is not reduced)."""
        flavour = _compat.flavour_of_loss(fn)
        if flavour is None:
            return fn(y_true, y_pred)
        if flavour == _compat.KERAS3:
            # What keras.losses.Loss.__call__ does before `call`.
            dtype = getattr(fn, "dtype", None) or "float32"
            y_true = tf.nest.map_structure(
                lambda v: tf.cast(v, dtype), y_true
            )
            y_pred = tf.cast(y_pred, dtype)
        return fn.call(y_true, y_pred)

    def _student_term(self, y, student_out, sample_weight):
        values = self._loss_values(self._student_loss_fn, y, student_out)
        return _average(
            values, sample_weight, self._student_reduction, "student_loss_fn"
        )

    def _regularisation(self):
        losses = list(self.student.losses)
        if not losses:
            return None
        total = tf.add_n([tf.cast(v, tf.float32) for v in losses])
        return tf.nn.scale_regularization_loss(total)

    def _unpack(self, data):
        k = _compat.keras_module(self._flavour)
        return k.utils.unpack_x_y_sample_weight(data)

    def _require_compiled(self):
        if self.temperature is None:
            raise RuntimeError(
                "Call `distiller.compile(...)` before `fit`/`evaluate`."
            )

    def train_step(self, data):
        """One optimisation step: one teacher and one student forward pass."""
        self._require_compiled()
        x, y, sample_weight = self._unpack(data)
        use_student_loss = self._student_loss_fn is not None and self.alpha > 0
        if use_student_loss and y is None:
            raise ValueError(
                f"alpha={self.alpha} weighs a student loss on labels, but the "
                "data has no labels. Pass `(x, y)`, or set alpha=0 to distil "
                "on unlabelled data."
            )
        x, cached = self._split_cached(x)
        teacher_out, teacher_features = self._teacher_outputs(x, cached)
        replicas = _replicas()
        with tf.GradientTape() as tape:
            student_out, student_features = self._student_forward(
                x, training=True
            )
            distill = _average(
                self._distillation_per_sample(teacher_out, student_out, y),
                sample_weight,
                self._distillation_reduction,
                "distillation_loss_fn",
            )
            total = (1.0 - self.alpha) * distill
            student_term = None
            if use_student_loss:
                student_term = self._student_term(y, student_out, sample_weight)
                total = total + self.alpha * student_term
            feature_terms = self._feature_terms(
                teacher_features, student_features, sample_weight
            )
            for weight, value in feature_terms.values():
                total = total + weight * value
            regularisation = self._regularisation()
            if regularisation is not None:
                total = total + regularisation
        self._apply_gradients(tape, total)

        logs = {}
        self._total_tracker.update_state(total * replicas)
        logs["loss"] = self._total_tracker.result()
        if student_term is not None:
            self._student_tracker.update_state(student_term * replicas)
            logs["student_loss"] = self._student_tracker.result()
        self._distill_tracker.update_state(distill * replicas)
        logs["distillation_loss"] = self._distill_tracker.result()
        for name, (_, value) in feature_terms.items():
            tracker = self._feature_trackers[name]
            tracker.update_state(value * replicas)
            logs[name] = tracker.result()
        if y is not None:
            self._update_user_metrics(y, student_out, sample_weight)
            logs.update(self._user_metric_results())
        return logs

    def test_step(self, data):
        """Evaluates the student in inference mode.

        With labels (and a ``student_loss_fn``): ``loss`` is the student loss
        plus the student's regularisation losses (what ``student.evaluate``
        would report) and the teacher is not run. Otherwise ``loss`` is the
        distillation loss against the teacher.
        """
        self._require_compiled()
        x, y, sample_weight = self._unpack(data)
        x, cached = self._split_cached(x)
        student_out, _ = self._student_forward(x, training=False)
        replicas = _replicas()
        logs = {}
        if y is not None and self._student_loss_fn is not None:
            student_term = self._student_term(y, student_out, sample_weight)
            total = student_term
            regularisation = self._regularisation()
            if regularisation is not None:
                total = total + regularisation
            self._total_tracker.update_state(total * replicas)
            self._student_tracker.update_state(student_term * replicas)
            logs["loss"] = self._total_tracker.result()
            logs["student_loss"] = self._student_tracker.result()
        else:
            teacher_out, _ = self._teacher_outputs(x, cached)
            distill = _average(
                self._distillation_per_sample(teacher_out, student_out, y),
                sample_weight,
                self._distillation_reduction,
                "distillation_loss_fn",
            )
            self._total_tracker.update_state(distill * replicas)
            self._distill_tracker.update_state(distill * replicas)
            logs["loss"] = self._total_tracker.result()
            logs["distillation_loss"] = self._distill_tracker.result()
        if y is not None:
            self._update_user_metrics(y, student_out, sample_weight)
            logs.update(self._user_metric_results())
        return logs

    # -------------------------------------------------------- serialisation
    def get_config(self):
        config = {
            "name": self.name,
            "teacher_outputs": self.teacher_outputs,
            "student_outputs": self.student_outputs,
            "teacher_dtype": self.teacher_dtype,
        }
        for role in ("student", "teacher"):
            model = getattr(self, role)
            flavour = _compat.flavour_of(model)
            k = _compat.keras_module(flavour)
            config[role] = k.saving.serialize_keras_object(model)
            config[f"{role}_flavour"] = flavour
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for role in ("student", "teacher"):
            k = _compat.keras_module(config.pop(f"{role}_flavour"))
            config[role] = k.saving.deserialize_keras_object(
                config[role], custom_objects=custom_objects
            )
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_distill")
class Distiller(_DistillerLogic, keras.Model):
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

    The student and teacher may be Keras 3 (``keras``) or Keras 2
    (``tf_keras``) models, in any combination. ``Distiller(...)`` returns a
    model of the *student's* flavour: a ``keras.Model`` for a Keras 3
    student (an instance of this class), a ``tf_keras.Model`` for a
    ``tf_keras`` student (needed for TFMOT pruning/quantization). Compile it
    with optimizers, losses and metrics of that same flavour.

    Logs: ``fit`` reports ``loss`` (the optimised total), ``student_loss``,
    ``distillation_loss`` (T² included) and the compiled metrics.
    ``evaluate`` runs the student alone in inference mode (BatchNorm
    statistics are left unchanged) and reports ``loss`` (student loss plus
    regularisation), ``student_loss`` and the metrics; given no labels it
    reports the distillation loss against the teacher instead.

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

    _model_init = keras.Model.__init__

    def __new__(cls, student=None, teacher=None, *args, **kwargs):
        if _compat.flavour_of(student) == _compat.TF_KERAS:
            return _tf_keras_variant(cls)(student, teacher, *args, **kwargs)
        return super().__new__(cls, student, teacher, *args, **kwargs)

    # Keras 3 specifics ------------------------------------------------------
    def _apply_gradients(self, tape, loss):
        variables = self.trainable_weights
        scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))

    def _user_metric_objects(self):
        compiled = getattr(self, "_compile_metrics", None)
        return [compiled] if compiled is not None else []

    def _update_user_metrics(self, y, y_pred, sample_weight):
        compiled = getattr(self, "_compile_metrics", None)
        if compiled is not None:
            compiled.update_state(y, y_pred, sample_weight)

    def _user_metric_results(self):
        compiled = getattr(self, "_compile_metrics", None)
        return dict(compiled.result()) if compiled is not None else {}


def distiller_class(logic, name, doc):
    """Makes a public distiller class from a logic mixin.

    ``logic`` subclasses ``_DistillerLogic`` and holds all the behaviour
    (its ``__init__`` calls ``super().__init__(student, teacher, ...)``).
    The returned class is a Keras 3 model; constructed with a ``tf_keras``
    student it returns an instance of the same logic on ``tf_keras.Model``.

    Args:
        logic: The mixin class.
        name: The public class name.
        doc: Its docstring.

    Returns:
        A subclass of `Distiller`.

    Example:
    >>> class _Quiet(_DistillerLogic):
    ...     pass
    >>> Quiet = distiller_class(_Quiet, "Quiet", "A distiller.")
    >>> issubclass(Quiet, Distiller)
    True
    """
    cls = type(name, (logic, Distiller), {"__doc__": doc,
                                           "__module__": logic.__module__})
    return keras.saving.register_keras_serializable(package="keras_distill")(cls)


@functools.lru_cache(maxsize=None)
def _tf_keras_variant(cls):
    """The tf_keras class with the same logic as the Keras 3 class ``cls``."""
    base = _tf_keras_distiller_class()
    if cls is Distiller:
        return base
    mixins = tuple(
        b for b in cls.__mro__
        if issubclass(b, _DistillerLogic) and not issubclass(b, keras.Model)
        and b is not _DistillerLogic
    )
    import tf_keras

    variant = type(f"TfKeras{cls.__name__}", mixins + (base,),
                   {"__doc__": cls.__doc__, "__module__": cls.__module__})
    return tf_keras.saving.register_keras_serializable(
        package="keras_distill")(variant)


@functools.lru_cache(maxsize=None)
def _tf_keras_distiller_class():
    """Builds the tf_keras flavour of Distiller (imports tf_keras lazily)."""
    import tf_keras

    @tf_keras.saving.register_keras_serializable(package="keras_distill")
    class TfKerasDistiller(_DistillerLogic, tf_keras.Model):
        """`Distiller` for a ``tf_keras`` (Keras 2) student.

        Created by ``Distiller(student, teacher)`` when ``student`` is a
        ``tf_keras`` model; see `keras_distill.Distiller` for everything.

        Example:
        >>> import numpy as np, tf_keras
        >>> from keras_distill import Distiller
        >>> teacher = tf_keras.Sequential([tf_keras.layers.Dense(3,
        ...                                input_shape=(8,))])
        >>> student = tf_keras.Sequential([tf_keras.layers.Dense(3,
        ...                                input_shape=(8,))])
        >>> d = Distiller(student=student, teacher=teacher)
        >>> isinstance(d, tf_keras.Model)
        True
        """

        _flavour = _compat.TF_KERAS
        _model_init = tf_keras.Model.__init__

        def _apply_gradients(self, tape, loss):
            self.optimizer.minimize(loss, self.trainable_weights, tape=tape)

        def _user_metric_objects(self):
            compiled = getattr(self, "compiled_metrics", None)
            return list(compiled.metrics) if compiled is not None else []

        def _update_user_metrics(self, y, y_pred, sample_weight):
            compiled = getattr(self, "compiled_metrics", None)
            if compiled is not None:
                compiled.update_state(y, y_pred, sample_weight)

        def _user_metric_results(self):
            return {m.name: m.result() for m in self._user_metric_objects()}

    TfKerasDistiller.__name__ = "TfKerasDistiller"
    TfKerasDistiller.__qualname__ = "TfKerasDistiller"
    return TfKerasDistiller
