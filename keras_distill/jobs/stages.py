"""What each stage of a job does: train the teacher, the baseline, distil,
prune, QAT, export. The runner (`keras_distill.jobs.runner`) decides which
run, in what order, and what is skipped on ``--resume``.

Every training stage uses Keras's own machinery: the optimizer and schedule
the job names, Keras progress output (a bar on a terminal, one line per
epoch otherwise), ``keras.callbacks.BackupAndRestore`` so a killed stage
continues from its last finished epoch, and TensorBoard logs per stage.
"""

import math
import os
import time

import keras
import numpy as np

from keras_distill import terms

METHOD_HELP = "kd, dkd, dist, kd_ls or dkd_ls"


def method_term(method):
    """The distillation term a job's (or a benchmark's) ``method`` names.

    ``kd`` (Hinton et al. 2015), ``kd_ls`` (KD on standardised logits, Sun
    et al. 2024), ``dkd`` (decoupled KD, Zhao et al. 2022, beta 2),
    ``dkd_ls``, ``dist`` (Huang et al. 2022, beta = gamma = 1).

    Example:
    >>> type(method_term("dist")).__name__
    'DIST'
    >>> method_term("fsp")
    Traceback (most recent call last):
    ...
    ValueError: `method` must be one of kd, dkd, dist, kd_ls or dkd_ls, got 'fsp'.
    """
    if method == "kd":
        return terms.KD()
    if method == "kd_ls":
        return terms.KD(standardise=True)
    if method == "dkd":
        return terms.DKD(beta=2.0)
    if method == "dkd_ls":
        return terms.DKD(beta=2.0, standardise=True)
    if method == "dist":
        return terms.DIST(beta=1.0, gamma=1.0)
    raise ValueError(f"`method` must be one of {METHOD_HELP}, got {method!r}.")


def optimizer(settings, steps):
    """The Keras optimizer a stage's ``optimizer``/``learning_rate``/
    ``schedule``/``weight_decay`` name, for ``steps`` training batches.

    Example:
    >>> from keras_distill.jobs.config import DistilStage
    >>> opt = optimizer(DistilStage(optimizer="sgd", schedule="constant"), 10)
    >>> type(opt).__name__, round(float(opt.learning_rate), 6)
    ('SGD', 0.001)
    """
    rate = settings.learning_rate
    if getattr(settings, "schedule", "constant") == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, max(1, steps))
    name = getattr(settings, "optimizer", "adam")
    decay = getattr(settings, "weight_decay", 0.0) or None
    if name == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=decay or 0.004)
    if name == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9, weight_decay=decay)
    return keras.optimizers.Adam(rate, weight_decay=decay)


def augmentation(specs, where):
    """Keras preprocessing layers from a stage's ``augmentation`` list.

    Args:
        specs: `keras_distill.jobs.config.Augmentation` items.
        where: The key path, for messages (``stages.distil.augmentation``).

    Returns:
        A list of layers (empty when ``specs`` is).

    Example:
    >>> from keras_distill.jobs.config import Augmentation
    >>> [type(l).__name__ for l in augmentation(
    ...     [Augmentation(layer="RandomFlip", mode="horizontal")], "aug")]
    ['RandomFlip']
    >>> augmentation([Augmentation(layer="RandomFlp")], "stages.distil.augmentation")
    Traceback (most recent call last):
    ...
    ValueError: stages.distil.augmentation[0]: keras.layers has no layer 'RandomFlp'; did you mean RandomFlip?
    """
    import difflib

    layers = []
    names = [n for n in dir(keras.layers) if n.startswith("Random") or n in (
        "MixUp", "CutMix", "RandAugment", "AugMix", "Solarization", "Equalization",
        "AutoContrast")]
    for i, spec in enumerate(specs):
        cls = getattr(keras.layers, spec.layer, None)
        if cls is None or spec.layer not in names:
            close = difflib.get_close_matches(spec.layer, names, n=1)
            hint = f"; did you mean {close[0]}?" if close else (
                f" (one of {', '.join(sorted(names)[:8])}, ...)")
            raise ValueError(f"{where}[{i}]: keras.layers has no layer "
                             f"{spec.layer!r}{hint}")
        try:
            layers.append(cls(**spec.arguments()))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}[{i}] ({spec.layer}): {error}") from None
    return layers


class EpochLog(keras.callbacks.Callback):
    """Records each epoch's logs (and where a resumed stage started).

    Example:
    >>> log = EpochLog("distil", print_fn=lambda m: None)
    >>> log.history
    []
    """

    def __init__(self, stage, print_fn=print):
        super().__init__()
        self.stage = stage
        self.print_fn = print_fn
        self.history = []
        self._first = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._first and epoch > 0:
            self.print_fn(f"{self.stage}: continuing from the checkpoint of epoch {epoch}")
        self._first = False
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - self._start, 2)}
        row.update({k: float(v) for k, v in (logs or {}).items()
                    if np.ndim(v) == 0})
        self.history.append(row)


def callbacks(stage, folder, verbose, print_fn, tensorboard=True):
    """BackupAndRestore (in ``folder``/backup), TensorBoard (``folder``/
    tensorboard) and an `EpochLog` for one training stage.

    Example:
    >>> import tempfile
    >>> cbs = callbacks("distil", tempfile.mkdtemp(), 0, print, tensorboard=False)
    >>> [type(c).__name__ for c in cbs]
    ['BackupAndRestore', 'EpochLog']
    """
    out = [keras.callbacks.BackupAndRestore(os.path.join(folder, "backup"),
                                            delete_checkpoint=True)]
    if tensorboard:
        out.append(keras.callbacks.TensorBoard(os.path.join(folder, "tensorboard"),
                                               write_graph=False))
    out.append(EpochLog(stage, print_fn))
    return out


def _ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def steps_per_epoch(data):
    """Training batches per epoch (``None`` when the count is unknown)."""
    n = data.counts.get("train")
    return None if not n else math.ceil(n / data.batch_size)


def _augmented(dataset, layers, seed):
    if not layers:
        return dataset
    pipeline = keras.Sequential(layers)
    return dataset.map(lambda x, y: (pipeline(x, training=True), y))


def _train_inputs(data, layers, seed):
    """``(x, y, kwargs)`` for ``fit``: arrays when in memory and not augmented."""
    if data.arrays is not None and not layers:
        x, y = data.arrays["train"]
        return x, y, {"batch_size": data.batch_size, "shuffle": True}
    # The dataset is shuffled already (per epoch, seeded).
    return _augmented(data.train, layers, seed), None, {"shuffle": False}


def _validation(data):
    if data.arrays is not None and data.arrays.get("validation") is not None:
        return data.arrays["validation"]
    return data.validation


def train_alone(model, settings, data, layers, folder, verbose, print_fn, seed,
                stage="teacher"):
    """Trains ``model`` on the labels (the teacher stage, the baseline).

    Returns:
        The `EpochLog` history (a list of per-epoch dicts).
    """
    steps = (steps_per_epoch(data) or 1) * settings.epochs
    model.compile(optimizer(settings, steps), _ce(), metrics=["accuracy"])
    x, y, kwargs = _train_inputs(data, layers, seed)
    cbs = callbacks(stage, folder, verbose, print_fn)
    model.fit(x, y, epochs=settings.epochs, validation_data=_validation(data),
              verbose=verbose, callbacks=cbs, **kwargs)
    return cbs[-1].history


def distil(student, teacher, settings, data, folder, verbose, print_fn, seed):
    """Distils ``student`` from ``teacher`` as the ``distil`` stage says.

    In-memory data without augmentation: the teacher's outputs are cached
    once (``cache_teacher``). With ``augmentation``: a fresh view per batch
    for both models, the teacher online; with ``views: K`` too, the
    teacher's outputs on K recorded views per image are cached once and one
    of them replayed per image each epoch. Streamed data: the teacher runs
    online on every batch.

    Returns:
        The `EpochLog` history.
    """
    from keras_distill import Distiller

    layers = augmentation(settings.augmentation, "stages.distil.augmentation")
    steps = (steps_per_epoch(data) or 1) * settings.epochs
    distiller = Distiller(student=student, teacher=teacher)
    distiller.compile(optimizer(settings, steps), student_loss_fn=_ce(),
                      distillation_loss_fn=method_term(settings.method),
                      alpha=settings.alpha, temperature=settings.temperature,
                      metrics=["accuracy"])
    cbs = callbacks("distil", folder, verbose, print_fn)
    kwargs = {}
    if layers:
        kwargs["augmentation"] = layers
    in_memory = data.arrays is not None
    if in_memory:
        x, y = data.arrays["train"]
        kwargs.update(batch_size=data.batch_size)
        if layers and settings.views:
            # FKD: the teacher's outputs on K recorded views per image, once.
            kwargs.update(cache_teacher=True, views=settings.views, top_k=settings.top_k,
                          cache_dtype="float16")
        elif settings.cache_teacher and not layers:
            kwargs["cache_teacher"] = True
        # With augmentation and no `views`, a fresh view per batch (as the
        # baseline gets) goes to both models: the teacher runs online.
    else:
        if settings.views:
            raise ValueError(
                "stages.distil.views caches the teacher per view, which needs the data "
                f"in memory; this data is streamed (above data.memory_limit_mb = "
                f"{data.memory_limit_mb:g}): raise data.memory_limit_mb or drop views "
                "(the teacher then runs on every augmented batch).")
        x, y = data.train, None
        kwargs["shuffle"] = False  # shuffled already (per epoch, seeded)
    distiller.fit(x, y, epochs=settings.epochs, validation_data=_validation(data),
                  verbose=verbose, callbacks=cbs, **kwargs)
    return cbs[-1].history


def _tf_keras_distil(student, teacher, epochs, learning_rate, settings, data, verbose):
    """Distils a tf_keras (pruned or QAT) student with the ``distil`` stage's
    method, alpha and temperature."""
    import tf_keras

    from keras_distill import Distiller

    if data.arrays is None:
        raise ValueError(
            "prune and qat train tf_keras models (TFMOT) from cached teacher outputs, "
            "which needs the data in memory; this data is streamed (above "
            f"data.memory_limit_mb = {data.memory_limit_mb:g}): raise "
            "data.memory_limit_mb or leave prune/qat out.")
    x, y = data.arrays["train"]
    distiller = Distiller(student, teacher)
    distiller.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        student_loss_fn=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=method_term(settings.method if settings else "kd"),
        alpha=settings.alpha if settings else 0.5,
        temperature=settings.temperature if settings else 2.0)
    distiller.fit(x, y, batch_size=data.batch_size, epochs=epochs,
                  verbose=verbose, cache_teacher=True)


def prune(student, teacher, settings, distil_settings, data, verbose):
    """Prunes a copy of ``student`` to ``settings.sparsity`` while distilling.

    Returns:
        The stripped tf_keras model (zeros baked in).
    """
    from keras_distill import pruning

    steps = steps_per_epoch(data)
    if steps is None or steps * settings.epochs < 3:
        # Too few batches for a polynomial ramp: prune to the target at once.
        pruned = pruning.prune(student, settings.sparsity, schedule="constant",
                               frequency=1)
    else:
        pruned = pruning.prune(student, settings.sparsity, epochs=settings.epochs,
                               steps_per_epoch=steps)
    _tf_keras_distil(pruned, teacher, settings.epochs, settings.learning_rate,
                     distil_settings, data, verbose)
    return pruning.strip(pruned)


def qat(student, teacher, settings, distil_settings, data, verbose):
    """Quantization-aware training of a copy of ``student`` while distilling.

    Returns:
        The tf_keras QAT model (export it as int8).
    """
    from keras_distill import quantization

    quantization.check_float_teacher(teacher)
    model = quantization.quantize(student)
    _tf_keras_distil(model, teacher, settings.epochs, settings.learning_rate,
                     distil_settings, data, verbose)
    return model


def accuracy(model, data):
    """Top-1 accuracy of a Keras model (either flavour) on the test split.

    Example:
    >>> import types, numpy as np
    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> x = np.zeros((4, 2), "float32"); y = np.zeros(4, "int64")
    >>> accuracy(m, types.SimpleNamespace(arrays={"test": (x, y)}))
    1.0
    """
    correct = total = 0
    for x, y in eval_batches(data):
        logits = np.asarray(model(x, training=False))
        correct += int(np.sum(np.argmax(logits, -1) == np.asarray(y)))
        total += len(y)
    return correct / total if total else float("nan")


def eval_batches(data, batch_size=512):
    """The test split as numpy batches ``(x, y)``."""
    if data.arrays is not None:
        x, y = data.arrays["test"]
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
        return
    for x, y in data.test.as_numpy_iterator():
        yield x, y


def eval_arrays(data):
    """The whole test split as arrays (the exported files are run on it)."""
    if data.arrays is not None:
        return data.arrays["test"]
    xs, ys = zip(*eval_batches(data))
    return np.concatenate(xs), np.concatenate(ys)
