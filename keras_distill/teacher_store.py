"""The teacher cache: trained teachers saved once, found again, checked on load.

`get_teacher` returns the main job's trained teacher, from the cache when the
same teacher was trained before. An entry is a ``teacher-<key>.weights.h5``
file and its ``teacher-<key>.json`` metadata in the cache folder
(`default_cache_dir`, or ``config.cache_dir``); the key covers the teacher's
settings and the training data itself (`data_fingerprint`), so any change
retrains. A cached file that fails its checksum or does not load is moved
aside to ``<file>.corrupt-<time>`` and the teacher retrained. Every file is
written atomically (`atomic_save_weights`, `keras_distill._io`), the
metadata last, so a stopped run leaves no partial file, and weights without
their metadata are retrained.

``config`` below is a `keras_distill.pipeline.PipelineConfig` (any object
with its teacher fields will do); `keras_distill.pipeline` re-exports these
functions.
"""

import hashlib
import json
import os
import time

import keras
import numpy as np

from keras_distill import _io, datasets
from keras_distill.models import build_teacher


def default_cache_dir():
    """Where trained teachers are cached: ``$KERAS_DISTILL_CACHE`` or
    ``~/.cache/keras_distill``.

    Example:
    >>> default_cache_dir().endswith("keras_distill")
    True
    """
    return os.environ.get("KERAS_DISTILL_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_distill"
    )


def data_description(config):
    """Names the data the job runs on, for the log and the teacher cache.

    Example:
    >>> from keras_distill.pipeline import PipelineConfig
    >>> data_description(PipelineConfig(data_dir="/data/mnist"))
    'IDX files from /data/mnist'
    """
    if config.data_dir:
        return f"IDX files from {config.data_dir}"
    folder = datasets.find_fashion_mnist()
    return f"Fashion-MNIST from {folder}" if folder else "Fashion-MNIST (downloaded)"


def _sha256(blob):
    return hashlib.sha256(blob).hexdigest()


def data_fingerprint(x, y):
    """The SHA-256 of the training arrays (shapes, dtypes and every byte).

    Fast enough to run every time: about 0.2 s for the 60,000 float32
    Fashion-MNIST images (188 MB) on one core of a 2-CPU machine.

    Example:
    >>> import numpy as np
    >>> a = data_fingerprint(np.zeros((2, 3), "float32"), np.zeros(2, "int64"))
    >>> a == data_fingerprint(np.ones((2, 3), "float32"), np.zeros(2, "int64"))
    False
    """
    digest = hashlib.sha256()
    for array in (x, y):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(array)
    return digest.hexdigest()


def teacher_cache_entry(config, x, y):
    """Where the cached teacher for these settings and this data lives.

    The key covers the architecture, seed, epochs, batch size, training recipe
    (`teacher_recipe`), Keras version and the training data itself
    (`data_fingerprint`), so any change retrains.
    The metadata, written beside the weights after them, is checked on load.

    Returns:
        ``(weights_path, metadata_path, metadata)``.

    Example:
    >>> from keras_distill.pipeline import PipelineConfig
    >>> x = np.zeros((8, 28, 28, 1), "float32"); y = np.zeros(8, "int64")
    >>> w, m, meta = teacher_cache_entry(PipelineConfig(cache_dir="/c"), x, y)
    >>> os.path.basename(m) == os.path.basename(w).replace(".weights.h5", ".json")
    True
    >>> meta["data"]["sha256"] == data_fingerprint(x, y)
    True
    """
    settings = {
        "architecture_sha256": _sha256(_build(config).to_json().encode()),
        "kind": config.teacher,
        "epochs": config.teacher_epochs,
        "seed": config.teacher_seed,
        "batch_size": config.batch_size,
        "recipe": teacher_recipe(config),
        "keras": keras.__version__,
    }
    settings_key = _sha256(json.dumps(settings, sort_keys=True).encode())[:16]
    data = {"sha256": data_fingerprint(x, y), "n_train": len(x),
            "source": data_description(config)}
    key = _sha256(f"{settings_key}:{data['sha256']}".encode())[:16]
    base = os.path.join(config.cache_dir or default_cache_dir(), f"teacher-{key}")
    metadata = {"format": 1, "key": key, "settings_key": settings_key,
                "settings": settings, "data": data}
    return base + ".weights.h5", base + ".json", metadata


def _move_aside(path):
    aside = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(path, aside)
    return aside


def _load_cached_teacher(teacher, path, meta_path, metadata, log):
    """Loads the cached weights into ``teacher`` if they check out; else says
    why (moving a corrupt file aside) and returns ``False``."""
    if not os.path.exists(path) and not os.path.exists(meta_path):
        for other in sorted(os.listdir(os.path.dirname(path))):
            found = (_io.read_json(os.path.join(os.path.dirname(path), other))
                     if other.endswith(".json") else None)
            if (found and found.get("settings_key") == metadata["settings_key"]
                    and found.get("data", {}).get("sha256") != metadata["data"]["sha256"]):
                log(f"teacher: the cached teacher {other} has these settings but was "
                    f"trained on other data ({found['data'].get('source')}, "
                    f"{found['data'].get('n_train')} images); training one for this "
                    f"data ({metadata['data']['source']}, {metadata['data']['n_train']})")
                break
        return False
    stored = _io.read_json(meta_path)
    if os.path.exists(meta_path) and stored is None:
        log(f"teacher: cache metadata {meta_path} is unreadable; moved it to "
            f"{_move_aside(meta_path)}; training a new teacher")
        return False
    if not os.path.exists(path) or stored is None:
        log(f"teacher: cache entry {path} is incomplete (weights or their metadata "
            f"{os.path.basename(meta_path)} missing, e.g. a stopped run); training a new teacher")
        return False
    expected = {k: metadata[k] for k in ("key", "settings_key", "settings")}
    if ({k: stored.get(k) for k in expected} != expected
            or stored.get("data", {}).get("sha256") != metadata["data"]["sha256"]):
        log(f"teacher: cache metadata {meta_path} does not match these settings and "
            f"data (trained on {stored.get('data', {}).get('source')}); training a new teacher")
        return False
    problem = None
    if _io.file_sha256(path) != stored.get("weights_sha256"):
        problem = "does not match the checksum stored when it was written"
    else:
        try:
            teacher.load_weights(path)
        except Exception as error:  # noqa: BLE001 - h5py/Keras raise many kinds
            problem = f"cannot be loaded ({type(error).__name__}: {str(error)[:200]})"
    if problem:
        log(f"teacher: cached file {path} is corrupt: it {problem}; moved it to "
            f"{_move_aside(path)}; training a new teacher")
        return False
    return True


def atomic_save_weights(model, path):
    """Saves weights to ``path`` atomically (a crash leaves no partial file).

    Args:
        model: A Keras 3 model.
        path: Destination ending in ``.weights.h5``.

    Example:
    >>> import tempfile
    >>> from keras_distill.models import build_student
    >>> m = build_student("mlp")
    >>> p = os.path.join(tempfile.mkdtemp(), "m.weights.h5")
    >>> atomic_save_weights(m, p); os.path.exists(p)
    True
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with _io.atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)


def get_teacher(config, x, y, log=print):
    """Returns the trained teacher, from the cache when it was trained before.

    The cache key covers the architecture, seed, epochs, batch size and the
    training data (see `teacher_cache_entry`), so a change to any of them
    retrains. A cached file that is corrupt (it fails its checksum or does not
    load) is moved aside to ``<file>.corrupt-<time>`` and the teacher
    retrained; each such case is logged with the file's name.

    Returns:
        ``(teacher, seconds_spent_training, was_cached)``.

    Example:
    >>> import tempfile
    >>> from keras_distill.pipeline import PipelineConfig
    >>> cfg = PipelineConfig(teacher_epochs=1, cache_dir=tempfile.mkdtemp())
    >>> x = np.zeros((8, 28, 28, 1), "float32"); y = np.zeros(8, "int64")
    >>> _, _, cached = get_teacher(cfg, x, y, log=lambda m: None)
    >>> get_teacher(cfg, x, y, log=lambda m: None)[2]
    True
    """
    path, meta_path, metadata = teacher_cache_entry(config, x, y)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _io.remove_stale_temps(os.path.dirname(path))
    teacher = _build(config)
    if _load_cached_teacher(teacher, path, meta_path, metadata, log):
        log(f"teacher: loaded from cache {path}")
        return teacher, 0.0, True
    recipe = teacher_recipe(config)
    log(f"teacher: training {config.teacher_epochs} epochs "
        f"({teacher.count_params():,} params, {config.teacher} teacher"
        + (f", {recipe['augmentation']}" if recipe["augmentation"] else "")
        + f", {recipe['schedule']} learning rate, {recipe['policy']})")
    teacher, seconds = train_teacher(config, x, y)
    atomic_save_weights(teacher, path)
    metadata["weights_sha256"] = _io.file_sha256(path)
    _io.atomic_write(meta_path, json.dumps(metadata, indent=1, sort_keys=True))
    log(f"teacher: cached at {path}")
    return teacher, seconds, False


TEACHER_AUGMENTATION = "horizontal flip + 2-pixel shift"


def _build(config):
    return build_teacher(seed=config.teacher_seed, kind=config.teacher)


def teacher_recipe(config):
    """How the main job trains its teacher, as recorded in the cache key.

    Example:
    >>> from keras_distill.pipeline import PipelineConfig
    >>> teacher_recipe(PipelineConfig())["policy"]
    'mixed_bfloat16'
    """
    return {"learning_rate": config.learning_rate, "optimizer": "adam",
            "schedule": config.schedule,
            "augmentation": TEACHER_AUGMENTATION if config.augment_teacher else None,
            "policy": config.teacher_policy}


def train_teacher(config, x, y):
    """Trains the main job's teacher on ``(x, y)``; no cache involved.

    Adam at ``config.learning_rate`` (cosine decay to 0 over the run when
    ``config.schedule == "cosine"``), batches of ``config.batch_size``
    shuffled per epoch, each batch augmented with a random horizontal flip
    and a shift of up to 2 pixels when ``config.augment_teacher`` (the views
    the student will be asked about are of the same kind), under the Keras
    dtype policy ``config.teacher_policy`` (``"mixed_bfloat16"``: faster on
    CPUs with bfloat16 units; the weights stay float32). The
    global dtype policy is restored afterwards, and the teacher returned is
    a float32 build holding the trained weights.

    Returns:
        ``(teacher, seconds)``.

    Example:
    >>> from keras_distill.pipeline import PipelineConfig
    >>> x = np.zeros((8, 28, 28, 1), "float32"); y = np.zeros(8, "int64")
    >>> cfg = PipelineConfig(teacher_epochs=1, batch_size=4, teacher="vgg")
    >>> teacher, seconds = train_teacher(cfg, x, y)
    >>> teacher.dtype_policy.name, keras.mixed_precision.global_policy().name
    ('float32', 'float32')
    """
    import tensorflow as tf

    from keras_distill.jobs.stages import optimizer

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.teacher_policy)
    try:
        keras.utils.set_random_seed(config.teacher_seed)
        model = _build(config)
        whole = config.augment_teacher and len(x) >= config.batch_size  # drop_remainder
        steps = config.teacher_epochs * (len(x) // config.batch_size if whole
                                         else -(-len(x) // config.batch_size))
        model.compile(optimizer=optimizer(config, steps),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        start = time.perf_counter()
        if config.augment_teacher:
            augment = keras.Sequential([
                keras.layers.RandomTranslation(2 / 28, 2 / 28, fill_mode="constant",
                                               seed=config.teacher_seed + 1),
                keras.layers.RandomFlip("horizontal", seed=config.teacher_seed + 2)])
            data = (tf.data.Dataset.from_tensor_slices((x, y))
                    .shuffle(len(x), seed=config.teacher_seed)
                    .batch(config.batch_size, drop_remainder=whole)
                    .map(lambda a, b: (augment(a, training=True), b)).prefetch(2))
            model.fit(data, epochs=config.teacher_epochs, verbose=config.verbose,
                      shuffle=False)  # shuffled above, per epoch
        else:
            model.fit(x, y, batch_size=config.batch_size, epochs=config.teacher_epochs,
                      verbose=config.verbose)
        seconds = time.perf_counter() - start
    finally:
        keras.mixed_precision.set_global_policy(previous)
    teacher = _build(config)
    teacher.set_weights(model.get_weights())
    return teacher, seconds
