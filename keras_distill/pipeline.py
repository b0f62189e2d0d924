"""The stages of the main job: data, teacher, scratch student, distilled student.

`run_pipeline` is what ``keras-distill`` runs; the benchmarks and notebooks
call the same functions so every number they print comes from one code path.
The teacher and its cache are `keras_distill.teacher_store` (re-exported here).
Later stages (pruning, QAT, TFLite export) are added here.
"""

import dataclasses
import os
import time

import keras
import numpy as np

from keras_distill import _validation, datasets
from keras_distill.distiller import Distiller
from keras_distill.models import build_student, build_teacher  # noqa: F401 - doctests
from keras_distill.report import format_table  # noqa: F401 - re-exported
from keras_distill.teacher_store import (  # noqa: F401 - re-exported
    atomic_save_weights,
    data_description,
    data_fingerprint,
    default_cache_dir,
    get_teacher,
    teacher_cache_entry,
)

# --method tokens: a logits term ("kd" or "dkd") and/or feature terms between
# the reference models' layers (see models.py for the names).
LOGITS_METHODS = ("kd", "dkd", "dist", "kd_ls", "dkd_ls")
FEATURE_METHODS = ("l2", "at", "fsp", "rkd")
# The cache holds every tapped teacher feature map of the training set; past
# this size the teacher runs online instead.
CACHE_LIMIT_BYTES = 1 << 30

QUICK = dict(train_samples=12000, test_samples=2000, teacher_epochs=3, epochs=5,
             prune_epochs=1, qat_epochs=1)
TEACHERS = ("vgg", "wide")
SCHEDULES = ("cosine", "constant")
POLICIES = ("mixed_bfloat16", "float32")


@dataclasses.dataclass
class PipelineConfig:
    """Settings of the main job (the command-line flags map onto these).

    Example:
    >>> PipelineConfig(epochs=3).method
    'dist'
    """

    epochs: int = 40
    teacher_epochs: int = 30
    teacher: str = "wide"
    student: str = "cnn"
    # The winner of bench/recipes.py's search (bench/results/sweeps/README.md):
    # DIST without the hard-label loss, against the scratch student of the
    # same schedule (bench/kd_vs_scratch.py measures it in this job).
    method: str = "dist"
    alpha: float = 0.0
    temperature: float = 4.0
    seed: int = 0
    teacher_seed: int = 0
    batch_size: int = 128
    learning_rate: float = 2e-3
    schedule: str = "cosine"
    augment_teacher: bool = True
    teacher_policy: str = "mixed_bfloat16"
    # Pruning and QAT distil with the main method but give the hard labels
    # weight: a DIST student (alpha 0) keeps small logits and loses about 2
    # points to 50% pruning at 1e-4 without them (bench/results/sweeps/README.md).
    finetune_learning_rate: float = 1e-3
    finetune_alpha: float = 0.5
    train_samples: int = 0  # 0: all 60000
    test_samples: int = 0  # 0: all 10000
    data_dir: str = None
    cache_dir: str = None
    output_dir: str = None
    allow_download: bool = True
    export: bool = True  # .tflite artifacts, measured by running them
    compress: bool = True  # prune, then QAT, both while distilling (TFMOT)
    sparsity: float = 0.5
    prune_epochs: int = 2
    qat_epochs: int = 1
    verbose: int = 0

    @classmethod
    def classic(cls, **overrides):
        """The main job's recipe before the search of issue #13 (up to
        2026-11-27): a 5-epoch VGG teacher without augmentation, constant
        Adam 1e-3, KD with alpha 0.5 and T 2, 10 student epochs. Fast (a few
        minutes); the notebooks use it. Distillation does not pay with it
        (bench/results/sweeps/README.md).

        Example:
        >>> PipelineConfig.classic(epochs=3).method, PipelineConfig.classic().teacher
        ('kd', 'vgg')
        """
        settings = dict(epochs=10, teacher_epochs=5, teacher="vgg", method="kd",
                        alpha=0.5, temperature=2.0, learning_rate=1e-3,
                        schedule="constant", augment_teacher=False,
                        teacher_policy="float32")
        settings.update(overrides)
        return cls(**settings)

    def validate(self):
        """Raises ``ValueError`` (or ``TypeError``) naming the first setting
        that is invalid, before any data is read or model trained.

        Example:
        >>> PipelineConfig(train_samples=100, batch_size=128).validate()
        Traceback (most recent call last):
        ...
        ValueError: `train_samples`=100 is smaller than `batch_size`=128: ...
        """
        for name in ("epochs", "teacher_epochs", "batch_size", "prune_epochs",
                     "qat_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        for name in ("train_samples", "test_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"`{name}` must be 0 (all) or a positive integer, got {value!r}."
                )
        if self.student not in ("cnn", "mlp"):
            raise ValueError(f"`student` must be 'cnn' or 'mlp', got {self.student!r}.")
        for name, allowed in (("teacher", TEACHERS), ("schedule", SCHEDULES),
                              ("teacher_policy", POLICIES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got "
                                 f"{getattr(self, name)!r}.")
        logits, _ = parse_method(self.method, self.student)
        for name in ("alpha", "finetune_alpha"):
            if not (0.0 <= getattr(self, name) <= 1.0):
                raise ValueError(f"`{name}` must be in [0, 1], got {getattr(self, name)!r}.")
        if logits is None and self.alpha == 0:
            raise ValueError(
                f"`method`={self.method!r} has no logits term and `alpha` is 0: nothing "
                "would train the student's classifier. Give `alpha` a weight for the "
                "hard-label loss (e.g. 0.5) or add a logits term (e.g. 'dist+"
                f"{self.method}').")
        _validation.check_temperature(self.temperature, "temperature")
        if not (0.0 < self.sparsity < 1.0):
            raise ValueError(f"`sparsity` must be in (0, 1), got {self.sparsity!r}.")
        for name in ("learning_rate", "finetune_learning_rate"):
            if not (getattr(self, name) > 0):
                raise ValueError(
                    f"`{name}` must be positive, got {getattr(self, name)!r}.")
        for name in ("seed", "teacher_seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < 2**32:
                raise ValueError(
                    f"`{name}` must be an integer from 0 to 2**32 - 1, got {value!r}.")
        if self.data_dir is not None:
            datasets.check_folder(self.data_dir, "data_dir")
        if self.train_samples:
            self.check_train_size(self.train_samples)
        return self

    def check_train_size(self, n_train):
        """Raises ``ValueError`` if ``n_train`` images cannot fill one batch, or
        give the pruning ramp fewer than 2 steps.

        Example:
        >>> PipelineConfig(batch_size=64).check_train_size(100) is None
        True
        """
        given = self.train_samples == n_train
        if n_train < self.batch_size:
            what = (f"`train_samples`={n_train} is smaller than" if given else
                    f"the training data has {n_train} images, fewer than")
            raise ValueError(
                f"{what} `batch_size`={self.batch_size}: every epoch would be one partial "
                f"batch. Use `train_samples` >= {self.batch_size} or a smaller `batch_size`.")
        steps = self.prune_epochs * -(-n_train // self.batch_size)
        if self.compress and steps < 2:
            raise ValueError(
                f"`prune_epochs`={self.prune_epochs} with {n_train} training images in "
                f"batches of `batch_size`={self.batch_size} gives {steps} pruning step; "
                "the sparsity ramp needs at least 2: raise `prune_epochs` or "
                "`train_samples`, or lower `batch_size`.")


def prepare_data(config):
    """Loads Fashion-MNIST as float32 images in [0, 1] with a channel axis.

    Args:
        config: A `PipelineConfig`; ``train_samples``/``test_samples`` take
            the first samples when non-zero.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``.

    Example:
    >>> if datasets.find_fashion_mnist():
    ...     (x, y), _ = prepare_data(PipelineConfig(train_samples=10))
    ...     print(x.shape, x.dtype)
    ... else:
    ...     print((10, 28, 28, 1), "float32")
    (10, 28, 28, 1) float32
    """
    (x, y), (xt, yt) = datasets.load_fashion_mnist(
        config.data_dir, allow_download=config.allow_download
    )
    source = data_description(config)
    for name, images, labels in (("train", x, y), ("test", xt, yt)):
        asked = getattr(config, f"{name}_samples")
        if asked > len(images):
            raise ValueError(
                f"`{name}_samples`={asked} but the {name} data ({source}) has only "
                f"{len(images)} images: pass at most {len(images)}, or 0 for all.")
        if images.shape[1:] != (28, 28) or len(images) == 0:
            raise ValueError(
                f"the {name} images of {source} have shape {images.shape}; the main "
                "job's models take at least one 28x28 grayscale image (Fashion-MNIST "
                "or MNIST IDX files).")
        if labels.size and labels.max() >= 10:
            raise ValueError(
                f"the {name} labels of {source} go up to {int(labels.max())}; the main "
                "job's models have 10 classes (labels 0 to 9).")
    if config.train_samples:
        x, y = x[: config.train_samples], y[: config.train_samples]
    if config.test_samples:
        xt, yt = xt[: config.test_samples], yt[: config.test_samples]

    def scale(images):
        return (images[..., None] / np.float32(255.0)).astype("float32")

    return (scale(x), y.astype("int64")), (scale(xt), yt.astype("int64"))


def _ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _optimizer(config, n_train):
    """Adam at ``config.learning_rate``, decayed to 0 over the students'
    epochs (cosine) when ``config.schedule == "cosine"``."""
    from keras_distill.jobs.stages import optimizer

    return optimizer(config, config.epochs * -(-n_train // config.batch_size))


def _logits_term(logits):
    """The ``distillation_loss_fn`` of a logits token (``None``: none)."""
    if logits in (None, "kd"):
        return "kl_divergence"
    if logits == "dkd":
        from keras_distill.distiller import DecoupledKD

        return DecoupledKD()
    from keras_distill.jobs.stages import method_term

    return method_term(logits)


def _accuracy(model, x, y, batch_size=512):
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def train_scratch(config, x, y):
    """Trains the student alone on the labels (the baseline).

    Returns:
        ``(student, seconds)``.

    Example:
    >>> import numpy as np
    >>> x = np.zeros((8, 28, 28, 1), "float32"); y = np.zeros(8, "int64")
    >>> _, seconds = train_scratch(PipelineConfig(epochs=1), x, y)
    >>> seconds > 0
    True
    """
    keras.utils.set_random_seed(config.seed)
    student = build_student(config.student, seed=config.seed)
    student.compile(optimizer=_optimizer(config, len(x)), loss=_ce())
    start = time.perf_counter()
    student.fit(x, y, batch_size=config.batch_size, epochs=config.epochs,
                verbose=config.verbose)
    return student, time.perf_counter() - start


def parse_method(method, student="cnn"):
    """Splits a ``--method`` such as ``"kd+l2"`` into its logits and feature parts.

    Args:
        method: ``+``-joined tokens: at most one logits term (``kd``,
            ``dkd``, ``dist``, ``kd_ls`` or ``dkd_ls``, see
            `keras_distill.jobs.stages.method_term`; none means feature
            terms alone) and any of ``l2``
            (FitNets hint on ``block2_pool``), ``at`` (attention transfer on
            ``block1_pool`` and ``block2_pool``), ``fsp`` (FSP between
            ``block1_pool`` and the next conv) and ``rkd`` (relational KD on
            the ``fc`` embeddings).
        student: ``"cnn"`` or ``"mlp"``; the MLP has no feature maps, so
            only ``rkd`` of the feature terms applies to it.

    Returns:
        ``(logits, features)``: the logits token or ``None``, and a tuple.

    Example:
    >>> parse_method("kd+l2")
    ('kd', ('l2',))
    >>> parse_method("fsp")
    (None, ('fsp',))
    """
    if not isinstance(method, str) or not method:
        raise ValueError(f"`method` must be a string such as 'kd' or 'kd+l2', got {method!r}.")
    tokens = method.lower().split("+")
    unknown = [t for t in tokens if t not in LOGITS_METHODS + FEATURE_METHODS]
    if unknown:
        raise ValueError(
            f"`method`={method!r} has unknown part(s) {unknown}: use '+'-joined "
            f"names from {LOGITS_METHODS + FEATURE_METHODS}, e.g. 'kd+at'.")
    logits = [t for t in tokens if t in LOGITS_METHODS]
    if len(logits) > 1:
        raise ValueError(f"`method`={method!r} names two logits terms {logits}: pick one.")
    features = tuple(dict.fromkeys(t for t in tokens if t in FEATURE_METHODS))
    if student == "mlp" and set(features) - {"rkd"}:
        raise ValueError(
            f"`method`={method!r}: the MLP student has no feature maps; of the "
            "feature terms only 'rkd' applies to it (use --student cnn).")
    return (logits[0] if logits else None), features


def feature_pairs(features):
    """The reference models' layer pairs for the feature tokens of a method.

    Example:
    >>> [p.name for p in feature_pairs(("l2", "rkd"))]
    ['hint_block2_pool', 'rkd_fc']
    """
    from keras_distill import FeaturePair, FSPPair

    pairs = []
    if "l2" in features:
        pairs.append(FeaturePair("block2_pool", "block2_pool", loss="l2",
                                 adapter="auto", name="hint_block2_pool"))
    if "at" in features:
        for layer in ("block1_pool", "block2_pool"):
            pairs.append(FeaturePair(layer, layer, loss="at", weight=10.0,
                                     name=f"at_{layer}"))
    if "fsp" in features:
        pairs.append(FSPPair("block1_pool", "block2a_relu", "block1_pool",
                             "block2_conv", adapter="auto", name="fsp_block1_2"))
    if "rkd" in features:
        pairs.append(FeaturePair("fc", "fc", loss="rkd", name="rkd_fc"))
    return pairs


def _cache_bytes(teacher, pairs, n):
    """Bytes a float32 cache of the teacher's logits and tapped maps takes."""
    layers = set()
    for pair in pairs:
        layers |= {getattr(pair, a) for a in ("teacher_layer", "teacher_first",
                                              "teacher_second") if hasattr(pair, a)}
    shapes = [teacher.outputs[0].shape] + [teacher.get_layer(n_).output.shape
                                           for n_ in layers]
    return 4 * n * sum(int(np.prod(shape[1:])) for shape in shapes)


def train_distilled(config, teacher, x, y):
    """Trains the same student (same initial weights) with a `Distiller`.

    Returns:
        ``(student, seconds)``.

    Example:
    >>> import numpy as np
    >>> x = np.zeros((8, 28, 28, 1), "float32"); y = np.zeros(8, "int64")
    >>> teacher = build_teacher()
    >>> _, seconds = train_distilled(PipelineConfig(epochs=1), teacher, x, y)
    >>> seconds > 0
    True
    """
    logits, features = parse_method(config.method, config.student)
    keras.utils.set_random_seed(config.seed)
    student = build_student(config.student, seed=config.seed)
    pairs = feature_pairs(features)
    if pairs:
        from keras_distill import FeatureDistiller

        distiller = FeatureDistiller(student, teacher, pairs=pairs,
                                     logits_weight=1.0 if logits else 0.0)
    else:
        distiller = Distiller(student=student, teacher=teacher)
    distiller.compile(
        optimizer=_optimizer(config, len(x)),
        student_loss_fn=_ce(),
        distillation_loss_fn=_logits_term(logits),
        alpha=config.alpha,
        temperature=config.temperature,
    )
    # In-memory arrays, no augmentation: the teacher's outputs are the same
    # every epoch, so it runs once (see Distiller.fit), unless its tapped
    # feature maps would take too much memory.
    cache = _cache_bytes(teacher, pairs, len(x)) <= CACHE_LIMIT_BYTES
    start = time.perf_counter()
    distiller.fit(x, y, batch_size=config.batch_size, epochs=config.epochs,
                  verbose=config.verbose, cache_teacher=cache)
    return student, time.perf_counter() - start


def _distil_tf_keras(config, student, teacher, x, y, epochs):
    """Distils a tf_keras (pruned or QAT) student for one stage."""
    import tf_keras

    distiller = Distiller(student, teacher)
    distiller.compile(
        optimizer=tf_keras.optimizers.Adam(config.finetune_learning_rate),
        student_loss_fn=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=_logits_term(parse_method(config.method)[0]),
        alpha=config.finetune_alpha, temperature=config.temperature)
    start = time.perf_counter()
    # The Distiller adds TFMOT's pruning-step callback for a pruned student.
    distiller.fit(x, y, batch_size=config.batch_size, epochs=epochs,
                  verbose=config.verbose, cache_teacher=True)
    return time.perf_counter() - start


def prune_distilled(config, student, teacher, x, y):
    """Prunes ``student`` to ``config.sparsity`` while distilling, then strips.

    Returns:
        ``(plain tf_keras model with the zeros baked in, seconds)``.

    Example:
    >>> import numpy as np
    >>> x = np.zeros((16, 28, 28, 1), "float32"); y = np.zeros(16, "int64")
    >>> sparse, _ = prune_distilled(PipelineConfig(prune_epochs=1, batch_size=8),
    ...                             build_student(), build_teacher(), x, y)
    >>> from keras_distill import pruning
    >>> round(pruning.total_sparsity(sparse), 2)
    0.5
    """
    from keras_distill import pruning

    steps = -(-len(x) // config.batch_size)
    pruned = pruning.prune(student, config.sparsity, epochs=config.prune_epochs,
                           steps_per_epoch=steps)
    seconds = _distil_tf_keras(config, pruned, teacher, x, y, config.prune_epochs)
    return pruning.strip(pruned), seconds


def qat_distilled(config, student, teacher, x, y):
    """Quantization-aware training while distilling from the float teacher.

    Sparsity is preserved (prune-preserving QAT) when ``student`` is sparse.

    Returns:
        ``(tf_keras QAT model, seconds)``.

    Example:
    >>> import numpy as np
    >>> x = np.zeros((16, 28, 28, 1), "float32"); y = np.zeros(16, "int64")
    >>> qat, _ = qat_distilled(PipelineConfig(qat_epochs=1, batch_size=8),
    ...                        build_student(), build_teacher(), x, y)
    >>> type(qat).__module__.startswith("tf_keras")
    True
    """
    from keras_distill import quantization

    quantization.check_float_teacher(teacher)
    qat = quantization.quantize(student)
    return qat, _distil_tf_keras(config, qat, teacher, x, y, config.qat_epochs)


def run_pipeline(config, log=print):
    """Runs the main job and returns its results.

    Args:
        config: A `PipelineConfig`.
        log: Called with one progress line at a time.

    Returns:
        A dict with ``config`` and ``rows``: one row per model with its
        ``name``, ``params``, ``test_accuracy`` and ``train_seconds``.

    Example:
    >>> cfg = PipelineConfig(epochs=1, teacher_epochs=1, train_samples=256,
    ...                      test_samples=64, compress=False)
    >>> if datasets.find_fashion_mnist():
    ...     names = [r["name"] for r in run_pipeline(cfg, log=lambda m: None)["rows"]]
    ... else:
    ...     names = ["teacher", "student (scratch)", "student (distilled)"]
    >>> names
    ['teacher', 'student (scratch)', 'student (distilled)']
    """
    config.validate()
    (x, y), (xt, yt) = prepare_data(config)
    config.check_train_size(len(x))
    log(f"data: {data_description(config)}, {len(x)} train / {len(xt)} test images")
    teacher, teacher_seconds, cached = get_teacher(config, x, y, log=log)
    rows = [{
        "name": "teacher",
        "params": teacher.count_params(),
        "test_accuracy": _accuracy(teacher, xt, yt),
        "train_seconds": teacher_seconds,
        "cached": cached,
    }]
    log(f"student ({config.student}): training from scratch, {config.epochs} epochs")
    scratch, seconds = train_scratch(config, x, y)
    rows.append({"name": "student (scratch)", "params": scratch.count_params(),
                 "test_accuracy": _accuracy(scratch, xt, yt), "train_seconds": seconds})
    log(f"student ({config.student}): distilling ({config.method}), {config.epochs} "
        f"epochs, alpha={config.alpha}, T={config.temperature}")
    distilled, seconds = train_distilled(config, teacher, x, y)
    rows.append({"name": "student (distilled)", "params": distilled.count_params(),
                 "test_accuracy": _accuracy(distilled, xt, yt),
                 "train_seconds": seconds})
    qat = None
    if config.compress:
        from keras_distill import pruning

        log(f"prune: {100 * config.sparsity:.0f}% sparsity while distilling "
            f"(alpha={config.finetune_alpha}, learning rate {config.finetune_learning_rate:g}), "
            f"{config.prune_epochs} epochs")
        sparse, seconds = prune_distilled(config, distilled, teacher, x, y)
        rows.append({"name": f"student (distilled, {100 * config.sparsity:.0f}% sparse)",
                     "params": sparse.count_params(),
                     "test_accuracy": _accuracy(sparse, xt, yt), "train_seconds": seconds,
                     "sparsity": pruning.total_sparsity(sparse)})
        log(f"QAT: while distilling, sparsity preserved, {config.qat_epochs} epochs")
        qat, seconds = qat_distilled(config, sparse, teacher, x, y)
        rows.append({"name": "student (distilled, sparse, QAT)",
                     "params": distilled.count_params(),
                     "test_accuracy": _accuracy(qat, xt, yt), "train_seconds": seconds,
                     "sparsity": pruning.total_sparsity(qat)})
    results = {"config": dataclasses.asdict(config), "rows": rows, "artifacts": []}
    if config.output_dir:
        os.makedirs(config.output_dir, exist_ok=True)
        atomic_save_weights(
            distilled, os.path.join(config.output_dir, "student_distilled.weights.h5")
        )
        if config.export:
            log("export: .tflite files, each run with the LiteRT interpreter "
                "on the test set")
            results["artifacts"] = export_artifacts(
                config.output_dir,
                [("teacher", teacher), ("student (scratch)", scratch),
                 ("student (distilled)", distilled)],
                distilled, x, xt, yt)
            if qat is not None:
                from keras_distill.report import measure_artifact

                results["artifacts"].append(measure_artifact(
                    "student (distilled, sparse, QAT), int8", qat,
                    os.path.join(config.output_dir, "student_sparse_qat_int8.tflite"),
                    xt, yt, quantization="int8"))
    return results


def export_artifacts(output_dir, float_models, int8_model, x_train, x_test, y_test):
    """Exports each model to float32 ``.tflite`` and ``int8_model`` to int8.

    Returns:
        The `keras_distill.report.measure_artifact` rows.

    Example:
    >>> import numpy as np, tempfile
    >>> m = build_student("mlp")
    >>> x = np.zeros((8, 28, 28, 1), "float32"); y = np.zeros(8, "int64")
    >>> rows = export_artifacts(tempfile.mkdtemp(), [("s", m)], m, x, x, y)
    >>> [r["format"] for r in rows]
    ['tflite float32', 'tflite int8']
    """
    from keras_distill.report import measure_artifact

    rows = []
    for name, model in float_models:
        file = name.replace(" (", "_").replace(")", "").replace(" ", "_")
        rows.append(measure_artifact(
            name, model, os.path.join(output_dir, f"{file}.tflite"), x_test, y_test))
    rng = np.random.default_rng(0)
    calibration = x_train[rng.choice(len(x_train), min(1000, len(x_train)),
                                     replace=False)]
    rows.append(measure_artifact(
        "student (distilled), int8", int8_model,
        os.path.join(output_dir, "student_distilled_int8.tflite"), x_test, y_test,
        quantization="int8", representative_data=calibration))
    return rows
