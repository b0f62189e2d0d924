"""Feature distillation: named layers of teacher and student, compared.

`FeatureDistiller` adds feature terms to the logits distillation of
`keras_distill.Distiller`, one per `FeaturePair` (or `FSPPair`)::

    loss = alpha · student_loss + (1 − alpha) · logits_weight · T² · KL
           + Σ_pairs weight · feature_loss + sum(student.losses)

where each feature loss (a `keras_distill.terms.FeatureTerm`: FitNets
hints, attention transfer, FSP matrices, relational KD, or any function)
compares a teacher layer's output with a student layer's output, both
tapped in the networks' single forward passes (`keras_distill.taps`). When
the widths differ, a learned *adapter* (a 1x1 convolution or a Dense layer,
FitNets' regressor) maps the student's features to the teacher's width; it
trains with the student and is not part of ``distiller.student``.
`L2Distiller`, `FSPDistiller`, `AttentionDistiller` and `RKDDistiller` are
short forms. Every class here has a ``tf_keras`` twin in
`keras_distill.tf_keras`, built by the same call with a ``tf_keras``
student.
"""

import keras
import numpy as np

from keras_distill import _fit_checks, terms
from keras_distill._validation import check_bool, check_weight, identifier
from keras_distill.pairs import (
    _RESERVED_NAMES,
    FeaturePair,
    check_layer_pairs,
    FSPPair,
    _as_pair,
    _shape,
)
from keras_distill.core import DistillerCore, Holder
from keras_distill.distiller import Distiller
from keras_distill.objective import FeatureTermSpec
from keras_distill.adapters import make_adapter
from keras_distill.taps import Taps

# --------------------------------------------------------------- the core
class FeatureCore(DistillerCore):
    """Feature terms on tapped layers, added to the logits distillation.

    Mixed into `FeatureDistiller` (Keras 3) and its ``tf_keras`` twin.
    """

    _supports_teacher_dtype = False
    _maps_teacher_inputs = True

    def __init__(
        self,
        student,
        teacher,
        pairs=(),
        logits_weight=1.0,
        teacher_input_fn=None,
        check_numerics=False,
        teacher_outputs="auto",
        student_outputs="auto",
        name="feature_distiller",
        student_features_fn=None,
        teacher_features_fn=None,
        student_input_shape=None,
        teacher_input_shape=None,
        **kwargs,
    ):
        if isinstance(pairs, (FeaturePair, FSPPair)):
            pairs = [pairs]
        if not isinstance(pairs, (list, tuple)):
            raise TypeError(
                "`pairs` must be a list of FeaturePair / FSPPair, got "
                f"{type(pairs).__name__}."
            )
        pairs = tuple(_as_pair(p, i) for i, p in enumerate(pairs))
        logits_weight = check_weight(logits_weight, "logits_weight")
        for fn, argument in ((teacher_input_fn, "teacher_input_fn"),
                             (student_features_fn, "student_features_fn"),
                             (teacher_features_fn, "teacher_features_fn")):
            if fn is not None and not callable(fn):
                raise TypeError(
                    f"`{argument}` must be a callable, got "
                    f"{type(fn).__name__}."
                )
        check_bool(check_numerics, "check_numerics")
        if check_numerics and keras.backend.backend() != "tensorflow":
            raise ValueError(
                "`check_numerics=True` needs the TensorFlow backend (it uses "
                "tf.debugging.check_numerics); leave it False on "
                f"{keras.backend.backend()!r}: a non-finite loss still stops "
                "fit and restores the last good weights."
            )
        super().__init__(
            student, teacher, teacher_outputs=teacher_outputs,
            student_outputs=student_outputs, name=name, **kwargs,
        )
        self.pairs = pairs
        self.logits_weight = logits_weight
        self.teacher_input_fn = teacher_input_fn
        if teacher_input_fn is None:
            _fit_checks.check_input_widths(teacher, student)
        self.check_numerics = check_numerics
        self._features_fns = Holder(
            student=student_features_fn, teacher=teacher_features_fn,
            student_input_shape=_shape_tuple(student_input_shape,
                                             "student_input_shape"),
            teacher_input_shape=_shape_tuple(teacher_input_shape,
                                             "teacher_input_shape"))
        self._build_terms()
        self._add_trackers(self.feature_term_names)

    # ------------------------------------------------------------ building
    def _build_terms(self):
        teacher_paths, student_paths = [], []
        for pair in self.pairs:
            t, s = _pair_layers(pair)
            teacher_paths += [p for p in t if p not in teacher_paths]
            student_paths += [p for p in s if p not in student_paths]
        fns = self._features_fns
        self._taps = Holder(
            teacher=Taps(self.teacher, teacher_paths, "teacher",
                         features_fn=fns.teacher,
                         input_shape=fns.teacher_input_shape),
            student=Taps(self.student, student_paths, "student",
                         features_fn=fns.student,
                         input_shape=fns.student_input_shape),
        )
        specs, adapters, used = [], [], set(_RESERVED_NAMES)
        for index, pair in enumerate(self.pairs):
            spec = self._resolve(index, pair, used)
            used.add(spec.name)
            adapters += [a for a in spec.adapters if a is not None]
            specs.append(spec)
        self._terms = Holder(items=specs)
        self._adapter_layers = adapters

    def _resolve(self, index, pair, used):
        """One feature term as a `FeatureTermSpec`, its shapes checked."""
        t_paths, s_paths = _pair_layers(pair)
        term = pair.term
        if pair.name is not None:
            name = pair.name
            if name in used:
                raise ValueError(
                    f"pairs[{index}]: the term name {name!r} is used twice; "
                    "give each pair its own `name`."
                )
        else:
            base = f"{pair.kind}_" + "_".join(
                identifier(p) for p in dict.fromkeys(s_paths))
            name, n = base, 2
            while name in used:
                name, n = f"{base}_{n}", n + 1
        t_shapes = [self._taps.teacher.shapes[p] for p in t_paths]
        s_shapes = [self._taps.student.shapes[p] for p in s_paths]
        describe = (
            f"pairs[{index}] ({name!r}: teacher " + " & ".join(
                f"{p!r} {_shape(sh)}" for p, sh in zip(t_paths, t_shapes))
            + " vs student " + " & ".join(
                f"{p!r} {_shape(sh)}" for p, sh in zip(s_paths, s_shapes))
            + ")"
        )
        term.check_ranks(t_paths + s_paths, t_shapes + s_shapes, describe)
        # Adapters: the student map(s) to the teacher's width.
        adapters, adapted = [], []
        for slot, (s_shape, t_shape) in enumerate(zip(s_shapes, t_shapes)):
            spec = pair.adapter
            if spec == "auto":
                differ = (s_shape[-1] is not None and t_shape[-1] is not None
                          and s_shape[-1] != t_shape[-1])
                spec = "auto" if (term.needs_equal_width and differ) else None
            if spec is None:
                adapters.append(None)
                adapted.append(s_shape)
                continue
            suffix = "" if len(s_shapes) == 1 else f"_{slot + 1}"
            layer, shape = make_adapter(
                spec, s_shape, t_shape[-1], self._flavour,
                identifier(f"adapter_{name}{suffix}"), describe,
            )
            adapters.append(layer)
            adapted.append(shape)
        after = " after the adapter" if any(a is not None for a in adapters) else ""
        term.check_shapes(t_shapes, adapted, describe, after,
                          paths=(t_paths, s_paths))
        return FeatureTermSpec(
            name=name, weight=pair.weight, term=term,
            teacher_keys=tuple(self._taps.teacher.key(p) for p in t_paths),
            student_keys=tuple(self._taps.student.key(p) for p in s_paths),
            adapters=tuple(adapters), describe=describe)

    def _objective_options(self):
        return {"logits_weight": self.logits_weight,
                "feature_terms": self._terms.items,
                "check_numerics": self.check_numerics}

    # ------------------------------------------------------------ public
    @property
    def adapters(self):
        """``{term name: adapter layer}`` (FSP terms: a tuple of two)."""
        out = {}
        for spec in self._terms.items:
            layers = spec.adapters
            if any(a is not None for a in layers):
                out[spec.name] = layers[0] if len(layers) == 1 else layers
        return out

    @property
    def feature_term_names(self):
        """The names the feature terms are logged under, in order."""
        return tuple(spec.name for spec in self._terms.items)

    # ---------------------------------------------------- extension points
    def _has_student_features(self):
        return bool(self._taps.student.paths)

    def _student_forward(self, x, training):
        return self._taps.student(x, training=training)

    def _teacher_input(self, x):
        if self.teacher_input_fn is None:
            return x
        return self.teacher_input_fn(x)

    def _teacher_forward(self, x):
        out, features = self._taps.teacher(self._teacher_input(x),
                                           training=False)
        stop = keras.ops.stop_gradient
        return stop(out), {key: stop(value) for key, value in features.items()}

    def _teacher_predict(self, x, batch_size):
        from keras_distill import _distribute

        if _distribute.multi_process():  # this process's own x: a per-process cache
            return _distribute.local_predict(self.teacher, x, batch_size,
                                             self._teacher_forward)
        forward = self._teacher_forward
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            forward = tf.function(forward, reduce_retracing=True)
        size = int(keras.tree.flatten(x)[0].shape[0])
        outputs, features = [], {}
        for start in range(0, size, batch_size):
            batch = keras.tree.map_structure(
                lambda a, s=start: a[s:s + batch_size], x)
            out, feats = forward(batch)
            outputs.append(keras.ops.convert_to_numpy(out))
            for key, value in feats.items():
                features.setdefault(key, []).append(
                    keras.ops.convert_to_numpy(value))
        return np.concatenate(outputs), {
            key: np.concatenate(values) for key, values in features.items()
        }

    def _adapter_layer_list(self):
        return list(getattr(self, "_adapter_layers", []))

    # ------------------------------------------------------- serialisation
    def _feature_config(self):
        return {"pairs": [pair.get_config() for pair in self.pairs]}

    def get_config(self):
        config = super().get_config()
        config.update(self._feature_config())
        config["logits_weight"] = self.logits_weight
        config["check_numerics"] = self.check_numerics
        config["teacher_input_fn"] = terms._serialize(self.teacher_input_fn)
        fns = self._features_fns
        for role in ("student", "teacher"):
            fn = getattr(fns, role)
            if fn is not None:
                config[f"{role}_features_fn"] = terms._serialize(fn)
            shape = getattr(fns, f"{role}_input_shape")
            if shape is not None:
                config[f"{role}_input_shape"] = list(shape)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("teacher_input_fn", "student_features_fn",
                    "teacher_features_fn"):
            if config.get(key) is not None:
                config[key] = terms._deserialize(config[key])
        return super().from_config(config, custom_objects=custom_objects)


def _shape_tuple(value, argument):
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value
    ):
        raise TypeError(
            f"`{argument}` must be one example's shape without the batch "
            f"axis, a tuple of positive ints such as (32, 32, 3), got "
            f"{value!r}."
        )
    return tuple(value)


def _pair_layers(pair):
    if isinstance(pair, FSPPair):
        return ((pair.teacher_first, pair.teacher_second),
                (pair.student_first, pair.student_second))
    return (pair.teacher_layer,), (pair.student_layer,)


_COMMON_ARGS = """
        logits_weight: Weight (>= 0) of the logits distillation term
            ``(1 − alpha) · T² · KL`` (``alpha`` and ``T`` come from
            ``compile``). 0 turns it off (feature distillation alone, e.g.
            FitNets' hint stage: with ``alpha=0`` no labels are needed).
            The logged ``distillation_loss`` includes this weight.
        teacher_input_fn: Optional ``fn(x) -> teacher_x`` applied to each
            batch before the teacher (online and when caching with
            ``fit(cache_teacher=True)``), for teachers that take other inputs
            than the student: a resize, other preprocessing, one input of a
            dict (PaddleSlim's ``data_name_map``). Traced inside
            ``tf.function``: use TensorFlow ops.
        check_numerics: If True, a NaN or infinite feature term stops
            training with an ``InvalidArgumentError`` naming the term (a
            cheap check on one scalar per term; not under ``jit_compile``).
            Otherwise a non-finite loss stops ``fit`` and restores the last
            good weights, and each term's log shows which one failed.
        student_features_fn, teacher_features_fn: For a subclassed model,
            whose layers cannot be tapped by name: ``fn(x, training) ->
            (output, {name: tensor})``; the pair's layer names are then
            keys of that dict (see `keras_distill.taps.Taps`).
        student_input_shape, teacher_input_shape: One example's input
            shape (no batch axis), to find the features' shapes of a
            ``features_fn`` model that does not know its input shape.
        teacher_outputs, student_outputs, name: As for `Distiller`."""

_COMMON_NOTES = """
    ``fit`` logs ``loss``, ``student_loss``, ``distillation_loss``, one entry
    per feature term (under its name) and the compiled metrics. One forward
    pass of each network per batch computes the logits and the tapped
    features together (the teacher in inference mode, without gradient;
    none with ``fit(cache_teacher=True)``, which caches the teacher's tapped
    features too). ``evaluate`` runs the student alone in inference mode
    (BatchNorm statistics stay unchanged). ``distiller.student`` is the
    user's student, without adapters (``distiller.adapters`` holds them);
    adapter weights are in ``distiller.trainable_weights`` and saved with
    the distiller's weights. Works with students of both Keras flavours
    (the adapters take the student's flavour)."""


@keras.saving.register_keras_serializable(package="keras_distill")
class FeatureDistiller(FeatureCore, Distiller):
    __doc__ = r"""Distils logits and intermediate features (FitNets, AT, FSP, RKD, ...).

    Minimises

    ``alpha · student_loss + (1 − alpha) · logits_weight · T² · KL(t ‖ s)
    + Σ_pairs weight · feature_loss(teacher layer, adapter(student layer))
    + sum(student.losses)``

    with one term per `FeaturePair` / `FSPPair` (see those for the losses
    and their papers). Teacher and student must be Functional models or
    built Sequential models so that their layers can be tapped; layers of
    nested sub-models are named ``"submodel/layer"``. Shapes are checked at
    construction: a pair whose shapes cannot match raises a ``ValueError``
    naming the pair and both shapes.
    """ + _COMMON_NOTES + """

    Args:
        student: The model to train (``keras`` or ``tf_keras``).
        teacher: The trained model to imitate (either flavour).
        pairs: A list of `FeaturePair` / `FSPPair`; ``(teacher_layer,
            student_layer)`` tuples mean ``FeaturePair(t, s)`` (L2, no
            adapter).""" + _COMMON_ARGS + """

    Example:
    >>> import numpy as np, keras
    >>> from keras_distill import FeatureDistiller, FeaturePair
    >>> x = np.random.rand(32, 8).astype("float32")
    >>> y = np.random.randint(0, 3, 32)
    >>> teacher = keras.Sequential([keras.Input((8,)),
    ...     keras.layers.Dense(16, activation="relu", name="t_hidden"),
    ...     keras.layers.Dense(3, name="t_logits")])
    >>> student = keras.Sequential([keras.Input((8,)),
    ...     keras.layers.Dense(4, activation="relu", name="s_hidden"),
    ...     keras.layers.Dense(3, name="s_logits")])
    >>> distiller = FeatureDistiller(student, teacher, pairs=[
    ...     FeaturePair("t_hidden", "s_hidden", adapter="auto", weight=0.5)])
    >>> distiller.compile(optimizer="adam", alpha=0.1, temperature=4.0,
    ...     student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
    ...         from_logits=True))
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['distillation_loss', 'l2_s_hidden', 'loss', 'student_loss']
    >>> len(distiller.student.weights)  # the adapter is not in the student
    4
    """


# ------------------------------------------------------- convenience classes
class _L2Args:
    """The short form\'s arguments, as feature pairs."""

    def __init__(self, student, teacher, layer_pairs=(), adapter="auto",
                 weight=1.0, name="l2_distiller", **kwargs):
        layer_pairs = check_layer_pairs(layer_pairs, "layer_pairs")
        pairs = [FeaturePair(t, s, "l2", weight=weight, adapter=adapter)
                 for t, s in layer_pairs]
        super().__init__(student, teacher, pairs=pairs, name=name, **kwargs)
        self._own = {"layer_pairs": [list(p) for p in layer_pairs],
                     "adapter": terms._serialize(adapter), "weight": float(weight)}

    def _feature_config(self):
        return dict(self._own)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["adapter"] = terms._deserialize(config.get("adapter"))
        return super().from_config(config, custom_objects=custom_objects)


@keras.saving.register_keras_serializable(package="keras_distill")
class L2Distiller(_L2Args, FeatureDistiller):
    __doc__ = r"""FitNets hint distillation: L2 between named layers, plus logits KD.

    Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015). For each
    ``(teacher_layer, student_layer)``:
    :math:`w \cdot \mathrm{mean}\big((r(s) - t)^2\big)` with ``r`` a learned
    regressor (``adapter="auto"``: a 1x1 convolution or Dense layer, added
    where the widths differ). The same as `FeatureDistiller` with
    ``FeaturePair(t, s, "l2", weight, adapter)`` pairs.
    """ + _COMMON_NOTES + """

    Args:
        student, teacher: As for `FeatureDistiller`.
        layer_pairs: ``[(teacher_layer, student_layer), ...]``.
        adapter: ``"auto"`` (default), ``None``, ``"conv1x1"`` or ``"dense"``.
        weight: Weight of each L2 term.""" + _COMMON_ARGS + """

    Example:
    >>> import keras
    >>> from keras_distill import L2Distiller
    >>> from keras_distill.models import build_student, build_teacher
    >>> d = L2Distiller(build_student("cnn"), build_teacher(),
    ...                 layer_pairs=[("block2b_relu", "block2_conv")])
    >>> d.feature_term_names, type(d.adapters["l2_block2_conv"]).__name__
    (('l2_block2_conv',), 'Conv2D')
    """


class _FSPArgs:
    """The short form\'s arguments, as feature pairs."""

    def __init__(self, student, teacher, pairs=(), weight=1.0, normalize=True,
                 adapter=None, name="fsp_distiller", **kwargs):
        layer_pairs = check_layer_pairs(pairs, "pairs", fsp=True)
        specs = [FSPPair(t[0], t[1], s[0], s[1], weight=weight,
                         normalize=normalize, adapter=adapter)
                 for t, s in layer_pairs]
        super().__init__(student, teacher, pairs=specs, name=name, **kwargs)
        self._own = {"pairs": [[list(t), list(s)] for t, s in layer_pairs],
                     "weight": float(weight), "normalize": normalize,
                     "adapter": adapter}

    def _feature_config(self):
        return dict(self._own)


@keras.saving.register_keras_serializable(package="keras_distill")
class FSPDistiller(_FSPArgs, FeatureDistiller):
    __doc__ = r"""FSP-matrix distillation (Yim et al. 2017), plus logits KD.

    Yim, Joo, Bae & Kim, "A Gift from Knowledge Distillation: Fast
    Optimization, Network Minimization and Transfer Learning" (CVPR 2017).
    For each ``((t1, t2), (s1, s2))`` the student's FSP matrix
    :math:`G^S = \frac{1}{HW}\sum_{h,w} s_1 s_2^\top` copies the teacher's
    :math:`G^T`, with loss :math:`w \cdot \mathrm{mean}(G^S - G^T)^2`
    (`keras_distill.losses.fsp_loss`, maps RMS-normalised by default so the
    loss cannot blow up: the NaNs that made PaddleSlim disable FSP). The
    two layers of a network need equal height and width; channel counts
    must match between teacher and student (or use ``adapter="auto"``).
    """ + _COMMON_NOTES + """

    Args:
        student, teacher: As for `FeatureDistiller`.
        pairs: ``[((teacher_first, teacher_second), (student_first,
            student_second)), ...]``.
        weight: Weight of each FSP term.
        normalize: See `FSPPair`.
        adapter: ``None`` (default), ``"auto"``, ``"conv1x1"`` or
            ``"dense"``.""" + _COMMON_ARGS + """

    Example:
    >>> from keras_distill import FSPDistiller
    >>> from keras_distill.models import build_student, build_teacher
    >>> d = FSPDistiller(build_student("cnn"), build_teacher(),
    ...     pairs=[(("block1a_relu", "block1b_relu"),
    ...             ("block1_conv", "block1_conv"))], adapter="auto")
    >>> d.feature_term_names
    ('fsp_block1_conv',)
    """


class _AttentionArgs:
    """The short form\'s arguments, as feature pairs."""

    def __init__(self, student, teacher, layer_pairs=(), weight=1.0, p=2,
                 name="attention_distiller", **kwargs):
        layer_pairs = check_layer_pairs(layer_pairs, "layer_pairs")
        pairs = [FeaturePair(t, s, "at", weight=weight, loss_kwargs={"p": p})
                 for t, s in layer_pairs]
        super().__init__(student, teacher, pairs=pairs, name=name, **kwargs)
        self._own = {"layer_pairs": [list(x) for x in layer_pairs],
                     "weight": float(weight), "p": p}

    def _feature_config(self):
        return dict(self._own)


@keras.saving.register_keras_serializable(package="keras_distill")
class AttentionDistiller(_AttentionArgs, FeatureDistiller):
    __doc__ = r"""Attention transfer (Zagoruyko & Komodakis 2017), plus logits KD.

    "Paying More Attention to Attention" (ICLR 2017). Each map's spatial
    attention :math:`Q = \mathrm{vec}(\sum_c |A_c|^p)`, normalised to unit
    length, is matched: :math:`w \cdot \mathrm{mean}_b \lVert \hat Q^S -
    \hat Q^T \rVert_2^2` (`keras_distill.losses.at_loss`). Channel counts
    may differ (no adapter needed); height and width must match.
    """ + _COMMON_NOTES + """

    Args:
        student, teacher: As for `FeatureDistiller`.
        layer_pairs: ``[(teacher_layer, student_layer), ...]``.
        weight: Weight of each attention term (the loss is in [0, 2]).
        p: The exponent of the attention map (2 in the paper).""" + _COMMON_ARGS + """

    Example:
    >>> from keras_distill import AttentionDistiller
    >>> from keras_distill.models import build_student, build_teacher
    >>> d = AttentionDistiller(build_student("cnn"), build_teacher(),
    ...     layer_pairs=[("block1_pool", "block1_pool"),
    ...                  ("block2_pool", "block2_pool")], weight=10.0)
    >>> d.feature_term_names
    ('at_block1_pool', 'at_block2_pool')
    """


class _RKDArgs:
    """The short form\'s arguments, as feature pairs."""

    def __init__(self, student, teacher, layer_pairs=(), weight=1.0,
                 distance_weight=25.0, angle_weight=50.0,
                 name="rkd_distiller", **kwargs):
        layer_pairs = check_layer_pairs(layer_pairs, "layer_pairs")
        options = {"distance_weight": distance_weight,
                   "angle_weight": angle_weight}
        pairs = [FeaturePair(t, s, "rkd", weight=weight, loss_kwargs=options)
                 for t, s in layer_pairs]
        super().__init__(student, teacher, pairs=pairs, name=name, **kwargs)
        self._own = {"layer_pairs": [list(x) for x in layer_pairs],
                     "weight": float(weight), **options}

    def _feature_config(self):
        return dict(self._own)


@keras.saving.register_keras_serializable(package="keras_distill")
class RKDDistiller(_RKDArgs, FeatureDistiller):
    __doc__ = r"""Relational knowledge distillation (Park et al. 2019), plus logits KD.

    "Relational Knowledge Distillation" (CVPR 2019): the student copies the
    distances and angles between the batch's embeddings at the named layers,
    :math:`w \cdot (w_D L_D + w_A L_A)` (`keras_distill.losses.rkd_loss`),
    so the embedding widths may differ. RKD is a property of the batch, so
    ``sample_weight`` (and ``class_weight``) cannot weigh it: ``fit``
    raises a ``ValueError`` if they are given.
    """ + _COMMON_NOTES + """

    Args:
        student, teacher: As for `FeatureDistiller`.
        layer_pairs: ``[(teacher_layer, student_layer), ...]`` of embedding
            layers (higher ranks are flattened per sample).
        weight: Weight of each RKD term.
        distance_weight, angle_weight: :math:`w_D` (25) and :math:`w_A`
            (50), the paper's.""" + _COMMON_ARGS + """

    Example:
    >>> from keras_distill import RKDDistiller
    >>> from keras_distill.models import build_student, build_teacher
    >>> d = RKDDistiller(build_student("cnn"), build_teacher(),
    ...                  layer_pairs=[("fc", "fc")])
    >>> d.feature_term_names
    ('rkd_fc',)
    """
