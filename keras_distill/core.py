"""What every distiller shares, whatever its Keras flavour and backend.

`DistillerCore` holds the models, ``compile``'s arguments (turned into a
`keras_distill.objective.Objective`), the teacher's forward pass and its
cache (`keras_distill.cache`), ``fit`` (cache, NaN guard, callbacks other
modules ask for through `keras_distill._fit_hooks`) and serialisation. The
shells mix it into a Model: `keras_distill.Distiller` (Keras 3, every
backend) and `keras_distill.tf_keras.Distiller` (Keras 2, TFMOT's world).

Example:
>>> from keras_distill import Distiller
>>> issubclass(Distiller, DistillerCore)
True
"""

import keras

from keras_distill import _compat, _fit_checks, _fit_hooks, cache, disk_cache, terms
from keras_distill import view_cache as views_module
from keras_distill.nan_guard import with_nan_guard
from keras_distill import _distribute
from keras_distill._model_io import (  # noqa: F401 - re-exported
    _low_precision_copy,
    resolve_output_kind,
    single_tensor,
)
from keras_distill._validation import check_alpha, check_bool, check_temperature
from keras_distill._validation import (
    resolve_loss,
    check_callable,
    check_compile_flavour,
    check_teacher_not_trained,
)
from keras_distill.objective import (
    Objective,
    check_from_logits,
    check_class_axis,
    check_shapes,
    loss_reduction,
)

_TEACHER_DTYPES = (None, "float16", "bfloat16")
_LOG_NAMES = ("student_loss", "distillation_loss")


# ------------------------------------------------------------------ helpers
class Holder:
    """Holds objects out of Keras's attribute tracking (and saving): the
    inference teacher, the per-term metrics (the shells list them in
    ``metrics`` themselves, once), taps and resolved terms.

    Example:
    >>> Holder(items={}).items
    {}
    """

    def __init__(self, **values):
        self.__dict__.update(values)


# --------------------------------------------------------------------- core
class DistillerCore:
    """What every distiller shares, whatever its Keras flavour.

    Mixed into `Distiller` (Keras 3) and the ``tf_keras`` shells; each
    shell sets ``_flavour`` and supplies the training step.
    """

    _flavour = None
    _supports_teacher_dtype = True  # feature distillers tap the float teacher
    _maps_teacher_inputs = False  # feature distillers: `teacher_input_fn`

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
        super().__init__(name=name, **kwargs)
        self._setup(student, teacher, teacher_outputs, student_outputs)
        self._set_teacher_dtype(teacher_dtype)
        self._views = Holder(value=None, objective=None)
        self._init_view_seed()
        if not self._maps_teacher_inputs:
            _fit_checks.check_input_widths(self.teacher, self.student)

    @classmethod
    def _keras(cls):
        return _compat.keras_module(cls._flavour)

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
        self._inference_teacher = Holder(
            model=self.teacher if teacher_dtype is None
            else _low_precision_copy(self.teacher, teacher_dtype)
        )

    def _setup(self, student, teacher, teacher_outputs, student_outputs):
        _compat.model_flavour(student, "student")
        _compat.model_flavour(teacher, "teacher")
        if student is teacher:
            raise ValueError(
                "`student` and `teacher` are the same model object. Build "
                "a separate (usually smaller) student model to distil into."
            )
        self.teacher_outputs = resolve_output_kind(
            teacher, teacher_outputs, "teacher_outputs")
        self.student_outputs = resolve_output_kind(
            student, student_outputs, "student_outputs")
        # What the user asked for: "auto" may switch on real outputs.
        self._requested_outputs = Holder(teacher=teacher_outputs,
                                         student=student_outputs)
        teacher_shape = _compat.single_output_shape(teacher)
        student_shape = _compat.single_output_shape(student)
        check_class_axis(teacher_shape, "teacher")
        check_class_axis(student_shape, "student")
        check_shapes(teacher_shape, student_shape)
        self.student = student
        self.teacher = teacher
        if student.built and teacher.built:
            # So that weights can be loaded before the first call.
            self.built = True
        self._tracker_holder = Holder(items={})
        self._add_trackers(_LOG_NAMES)
        self.alpha = None
        self.temperature = None
        self._objective = None

    @property
    def _trackers(self):
        return self._tracker_holder.items

    def _add_trackers(self, names):
        k = self._keras()
        for name in names:
            self._trackers[name] = k.metrics.Mean(name=name)

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
            distillation_loss_fn: The logits term: ``"kl_divergence"``
                (default; also a ``keras.losses.KLDivergence()`` instance or
                any Keras name for it) is exact KD from log-softmax of
                ``logits / T`` (`keras_distill.terms.KD`); a term object
                (``terms.DKD()``, ``terms.SoftLabel()``, ...) or a registered
                name (``"dkd"``); any other loss receives ``(softmax(t / T),
                softmax(s / T))`` as ``(y_true, y_pred)``, times T², as in
                the keras.io example (`keras_distill.terms.SoftenedLoss`).
            alpha: Weight of the student (hard-label) loss in [0, 1]; the
                distillation loss gets ``1 - alpha``.
            temperature: Softening temperature T, between 0.01 and 1000
                (for terms built without their own).
            **kwargs: Passed on to ``Model.compile`` (``jit_compile``,
                ``steps_per_execution``, ``run_eagerly``, ...).

        Refused here, each with a ``TypeError`` / ``ValueError`` naming the
        argument: an optimizer (or, for a ``tf_keras`` student, a metric)
        of the other Keras flavour; a loss that cannot take ``(y_true,
        y_pred)``; a cross-entropy whose ``from_logits`` contradicts the
        student's final softmax (logits taken for probabilities are refused
        on the first batch, once the outputs were looked at); a teacher
        that is a trainable part of the student. Under ``tf.distribute`` a
        student built outside ``strategy.scope()`` is refused, and a
        ``tf_keras`` distiller's teacher built outside it is replaced by a
        copy built inside (``distiller.teacher`` is the copy; yours is not
        touched).

        Example:
        >>> import keras
        >>> from keras_distill import Distiller
        >>> make = lambda: keras.Sequential([keras.Input((8,)),
        ...                                  keras.layers.Dense(3)])
        >>> d = Distiller(student=make(), teacher=make())
        >>> d.compile(optimizer="adam", alpha=0.5, temperature=2.0,
        ...           student_loss_fn=keras.losses.
        ...           SparseCategoricalCrossentropy(from_logits=True))
        >>> d.alpha, d.temperature
        (0.5, 2.0)
        """
        if "loss" in kwargs:
            raise ValueError(
                "Distiller.compile() takes `student_loss_fn` and "
                "`distillation_loss_fn`, not `loss`. Pass your loss as "
                "`student_loss_fn=...`."
            )
        alpha = check_alpha(alpha)
        temperature = check_temperature(temperature, "temperature")
        check_compile_flavour(self._flavour, optimizer, metrics)
        student_loss_fn = resolve_loss(self._keras(), student_loss_fn,
                                       "student_loss_fn")
        if student_loss_fn is not None and not terms.is_loss_object(
                student_loss_fn):
            check_callable(student_loss_fn, "student_loss_fn", 2)
        check_from_logits(student_loss_fn, self.student_outputs, final=False)
        check_teacher_not_trained(self.student, self.teacher)
        _distribute.prepare(self)
        if student_loss_fn is None and alpha > 0:
            raise ValueError(
                f"`student_loss_fn` is required when alpha > 0 (alpha="
                f"{alpha}). Pass e.g. keras.losses."
                "SparseCategoricalCrossentropy(from_logits=True), or set "
                "alpha=0 to train on the distillation loss alone."
            )
        logit_term = terms.logit_term(distillation_loss_fn)
        # A Keras loss object may ask for a sum over the batch.
        distillation_reduction = (
            "mean" if isinstance(distillation_loss_fn, (str, terms.Term))
            else loss_reduction(distillation_loss_fn, "distillation_loss_fn"))
        self.alpha = alpha
        self.temperature = temperature
        self.distillation_term = logit_term
        self._objective = Objective(
            alpha=alpha,
            temperature=temperature,
            student_loss_fn=student_loss_fn,
            logit_term=logit_term,
            student_reduction=(
                loss_reduction(student_loss_fn, "student_loss_fn")
                if student_loss_fn is not None else "mean"),
            teacher_kind=self.teacher_outputs,
            student_kind=self.student_outputs,
            distillation_reduction=distillation_reduction,
            **self._objective_options(),
        )
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def _objective_options(self):
        """Extra `Objective` arguments (feature distillers add theirs)."""
        return {}

    def _require_compiled(self):
        if self._objective is None:
            raise RuntimeError(
                "Call `distiller.compile(...)` before `fit`/`evaluate`."
            )

    # ------------------------------------------------------------- weights
    @property
    def trainable_weights(self):
        """Only the student's trainable weights: the teacher never trains."""
        return list(self.student.trainable_weights) + list(
            self._extra_trainable_weights()
        )

    @property
    def non_trainable_weights(self):
        """Everything else: the student's statistics and the teacher."""
        seen = {id(w) for w in self.trainable_weights}
        out = []
        for w in list(self.student.non_trainable_weights) + list(
            self.teacher.weights
        ):
            if id(w) not in seen:
                seen.add(id(w))
                out.append(w)
        return out

    # ------------------------------------------------------ extension points
    # Feature distillers override these; the defaults distil logits alone.
    def _student_forward(self, x, training):
        """One student forward pass: ``(outputs, {feature key: tensor})``."""
        return single_tensor(self.student(x, training=training), "student"), {}

    def _teacher_forward(self, x):
        """One teacher forward pass in inference mode, without gradient:
        ``(outputs, {feature key: tensor})``."""
        teacher = self._inference_teacher.model
        out = single_tensor(teacher(x, training=False), "teacher")
        return keras.ops.stop_gradient(out), {}

    def _teacher_predict(self, x, batch_size):
        """The teacher over a whole array (for the cache), as numpy: ``(outputs, {feature key:
        array})``; per process (its own ``x``) under a multi-process keras.distribution."""
        out = _distribute.predict(self._inference_teacher.model, x, batch_size)
        return single_tensor(out, "teacher"), {}

    def _extra_trainable_weights(self):
        """Weights that train with the student but are not part of it
        (the adapters')."""
        return [w for layer in self._adapter_layer_list()
                for w in layer.trainable_weights]

    def _has_student_features(self):
        return False

    # ---------------------------------------------------------- views
    def _init_view_seed(self):
        """The seed generator of the augmented views (see
        `keras_distill.views`); the Keras 3 shell tracks it as state."""
        self._view_seed_holder = Holder(generator=None)

    def _view_seed_generator(self):
        holder = self._view_seed_holder
        if holder.generator is None:
            holder.generator = keras.random.SeedGenerator()
        return holder.generator

    def _num_classes(self):
        return int(_compat.single_output_shape(self.teacher)[-1])

    def _training_objective(self):
        """The objective of a training step (mixed labels: soft-label
        student loss)."""
        return self._views.objective or self._objective

    def _adapter_layer_list(self):
        """Layers that train with the student but are not part of it."""
        return []

    def _regularisation_losses(self):
        """The student's (and adapters') regularisation losses, never the
        teacher's."""
        losses = list(self.student.losses)
        for layer in self._adapter_layer_list():
            losses += list(layer.losses)
        return losses

    def _regularisation(self, scale):
        """Their sum, scaled for the distribution, or ``None``."""
        losses = self._regularisation_losses()
        if not losses:
            return None
        return scale(keras.ops.sum(keras.ops.stack(
            [keras.ops.cast(v, "float32") for v in losses])))

    # -------------------------------------------------------------- teacher
    def _teacher_outputs(self, x, cached):
        """The teacher's ``(outputs, features)``: from the cache, or one
        forward pass."""
        if cached is None:
            return self._teacher_forward(x)
        outputs, features = cached
        cast = keras.ops.cast
        return cast(outputs, "float32"), {
            key: cast(value, "float32") for key, value in features.items()
        }

    # ---------------------------------------------------------------- fit
    def fit(self, x=None, y=None, *args, cache_teacher=False,
            cache_dtype="float32", cache_budget=cache.DEFAULT_BUDGET,
            augmentation=None, views=None, top_k=None, **kwargs):
        """``Model.fit``, optionally with the teacher run only once.

        The data and its first batch are checked first, eagerly (see
        `keras_distill._fit_checks`: each bad input is a ``ValueError``
        naming it); unbuilt models are built on that batch.

        With ``cache_teacher=True`` the teacher's outputs for every training
        sample are computed once, in inference mode, before the first epoch
        and kept in memory (``cache_dtype="float16"`` halves it); every epoch
        then trains the student without running the teacher. The outputs
        travel with their inputs through Keras's shuffling and
        ``validation_split``. Only in-memory arrays are accepted (a
        ``tf.data`` pipeline may change its inputs every epoch; use
        ``augmentation`` for random views). The cache's size is printed
        before it is built and checked against ``cache_budget``;
        ``distiller.teacher_cache_info`` tells it afterwards. Data larger
        than memory: ``cache_teacher=directory`` (or a
        `keras_distill.disk_cache.DiskCache`) writes the outputs for a
        ``tf.data.Dataset`` in a fixed order to disk once and streams them
        back every epoch, shuffled with their inputs in a bounded buffer.

        Args:
            x, y: As for ``Model.fit``.
            cache_teacher: Run the teacher once and cache its outputs:
                ``True`` in memory, a directory or ``DiskCache`` on disk.
            cache_dtype: ``"float32"`` or ``"float16"``.
            cache_budget: The most bytes the cache may take (default
                ``cache.DEFAULT_BUDGET``, 2 GiB); a larger cache is refused
                before the teacher runs. ``None`` for no limit.
            augmentation: Consistent views (`keras_distill.views`; Beyer et
                al. 2022): Keras image preprocessing layers (one, a list or
                a ``keras.Sequential``: ``RandomFlip``, ``RandomTranslation``,
                ``MixUp``, ...) or a callable. Each training batch is
                augmented once and the teacher and the student see the same
                view; ``MixUp``/``CutMix`` mix the labels of the hard-label
                loss too (a sparse cross-entropy becomes the categorical
                one). With ``cache_teacher=True`` the teacher's outputs are
                cached for ``views`` recorded views per sample (FKD, Shen &
                Xing 2022) and every step replays one of them.
            views: K, the views cached per sample (default 8).
            top_k: Cache only the ``top_k`` largest teacher logits per view
                (see `keras_distill.views.build_view_cache`) or, on disk,
                per sample.
            *args, **kwargs: As for ``Model.fit``.

        Returns:
            The ``History`` of ``Model.fit``.

        Example:
        >>> import numpy as np, keras
        >>> from keras_distill import Distiller
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
        kwargs = _fit_checks.bind(args, kwargs, "fit")
        self._require_compiled()
        disk = disk_cache.resolve(cache_teacher, cache_dtype, top_k, views)
        cache.check_dtype(cache_dtype)
        cache.check_budget(cache_budget)
        if disk is not None:
            disk_cache.check_dataset(x, y)
            # The disk cache's, not the in-memory view cache's.
            cache_teacher, top_k, views = False, None, None
        elif cache_teacher:
            cache.check_arrays(cache.inputs_of(x))
        _fit_checks.check_fit_arguments(kwargs)
        inputs = cache.inputs_of(x)
        checked = _fit_checks.check_data(
            self, inputs, y, kwargs.get("sample_weight"), training=True)
        x = checked if inputs is x else x  # a generator: its first batch back
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = _fit_checks.check_validation(
                self, kwargs["validation_data"])
        _fit_checks.check_student(self.student)
        verbose = kwargs.get("verbose", "auto") != 0
        x = views_module.prepare_fit(
            self, x, augmentation, views, top_k, cache_teacher, cache_dtype,
            cache_budget, kwargs.get("batch_size"), verbose)
        if disk is not None:
            x = disk_cache.prepare_fit(self, x, disk,
                                       kwargs.get("shuffle", True), verbose)
            kwargs["shuffle"] = False  # the stream shuffles itself
        elif cache_teacher and augmentation is None:
            teacher_cache = self.teacher_cache(
                x, cache_dtype, kwargs.get("batch_size") or 256,
                cache_budget=cache_budget, verbose=verbose)
            self.teacher_cache_info = teacher_cache.info
            x = teacher_cache.pack(x)
        callbacks = list(kwargs.get("callbacks") or [])
        callbacks += _fit_hooks.callbacks_for(self.student, callbacks)
        kwargs["callbacks"] = with_nan_guard(self, callbacks)
        return super().fit(x, y, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """``Model.evaluate``, the data and first batch checked first.

        See `fit` for the checks (the student's trainability excepted).

        Example:
        >>> import numpy as np, keras
        >>> from keras_distill import Distiller
        >>> student, teacher = [keras.Sequential(
        ...     [keras.Input((4,)), keras.layers.Dense(2)]) for _ in "st"]
        >>> d = Distiller(student, teacher)
        >>> d.compile(alpha=0.0)
        >>> d.evaluate(np.zeros((0, 4)), verbose=0)
        Traceback (most recent call last):
        ...
        ValueError: `x` has no samples: ...
        """
        if kwargs.get("_use_cached_eval_dataset"):
            # Keras's own validation inside fit: checked there, once.
            return super().evaluate(x, y, *args, **kwargs)
        kwargs = _fit_checks.bind(args, kwargs, "evaluate")
        self._require_compiled()
        _fit_checks.check_positive_int(kwargs.get("batch_size"), "batch_size")
        inputs = cache.inputs_of(x)
        checked = _fit_checks.check_data(
            self, inputs, y, kwargs.get("sample_weight"), training=False)
        x = checked if inputs is x else x  # a generator: its first batch back
        return super().evaluate(x, y, **kwargs)

    def teacher_cache(self, x, cache_dtype="float32", batch_size=256,
                      cache_budget=cache.DEFAULT_BUDGET, verbose=False):
        """Runs the teacher once over in-memory arrays: a `TeacherCache`.

        What ``fit(cache_teacher=True)`` builds; ``cache.pack(x)`` gives
        the input ``fit`` then trains on. Its size is estimated from the
        teacher's outputs for the first sample before the teacher runs over
        ``x``, and refused above ``cache_budget``.

        Args:
            x: The training inputs (numpy arrays or tensors).
            cache_dtype: ``"float32"`` or ``"float16"``.
            batch_size: The teacher's batch size.
            cache_budget: The most bytes the cache may take; ``None`` for no
                limit.
            verbose: Print the size before building.

        Returns:
            A `keras_distill.cache.TeacherCache`.

        Example:
        >>> import numpy as np, keras
        >>> from keras_distill import Distiller
        >>> make = lambda: keras.Sequential([keras.Input((8,)),
        ...                                  keras.layers.Dense(3)])
        >>> d = Distiller(student=make(), teacher=make())
        >>> d.teacher_cache(np.zeros((10, 8), "float32")).info["shape"]
        (10, 3)
        >>> d.teacher_cache(np.zeros((10, 8), "float32"), cache_budget=100)
        Traceback (most recent call last):
        ...
        ValueError: The teacher cache would take 120 bytes (0.0 MiB: 10 samples...
        """
        cache.check_dtype(cache_dtype)
        cache.check_budget(cache_budget)
        cache.check_arrays(x)
        first, _, _ = _fit_checks.first_batch(x, rows=1)
        cache.check_size(_fit_checks.probe_teacher(self, first, "x"),
                         _fit_checks.samples(x), cache_dtype, cache_budget,
                         verbose)
        outputs, features = self._teacher_predict(x, batch_size)
        return cache.TeacherCache(outputs, features, cache_dtype,
                                  teacher_dtype=self.teacher_dtype)

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

    # ------------------------------------------------------------- logging
    def _track(self, logs, batch_size, unscale):
        """Updates the per-term trackers; returns the names logged."""
        for name, value in logs.items():
            self._trackers[name].update_state(
                unscale(value), sample_weight=batch_size)
        return set(logs)

    def _tracker_results(self, names):
        return {name: self._trackers[name].result() for name in names}


def _batch_size(x):
    first = next(v for v in keras.tree.flatten(x) if v is not None)
    return keras.ops.shape(first)[0]


