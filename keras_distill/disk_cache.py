"""Teacher outputs on disk, streamed: ``fit(dataset, cache_teacher=DiskCache(...))``.

For training data larger than memory (MaxText and open-instruct precompute a
big teacher's outputs the same way). One pass of the teacher over a
``tf.data.Dataset`` writes its outputs (float16 or float32, optionally only
the ``top_k`` largest logits) in shards, each row keyed by the sample's
position in the dataset's order and a fingerprint of its inputs. Every epoch
then reads the shards back with ``tf.data`` beside the input stream, checks
each sample's fingerprint, shuffles the pairs together in a bounded buffer
and batches them: memory stays flat whatever the dataset's size.

The dataset must yield the same samples in the same order on every pass
(read from files or arrays, no ``shuffle`` or random augmentation before
``fit``; use ``fit(augmentation=...)`` for random views): a pass that yields
other inputs is refused, on its first batch before training and on any
later sample during training.

The directory holds ``manifest.json`` (the teacher's weights' SHA-256, the
settings, per shard its samples and SHA-256) and ``shard-NNNNN.example``
files, each one serialized ``tf.train.Example`` of that shard's tensors. A
killed teacher pass resumes at its first missing shard; a complete cache of
the same teacher is reused (checksums checked); another teacher's is refused.
Several workers may share a directory (files are written atomically and
hold the same bytes), or each use its own.

Example:
>>> import tempfile, numpy as np, keras, tensorflow as tf
>>> from keras_distill import Distiller
>>> make = lambda: keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
>>> d = Distiller(student=make(), teacher=make())
>>> d.compile(optimizer="adam", student_loss_fn=keras.losses.
...           SparseCategoricalCrossentropy(from_logits=True))
>>> x = np.random.rand(64, 8).astype("float32"); y = np.arange(64) % 3
>>> ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
>>> _ = d.fit(ds, epochs=2, verbose=0,
...           cache_teacher=DiskCache(tempfile.mkdtemp(), shard_size=32))
>>> d.teacher_cache_info["samples"], d.teacher_cache_info["shards"]
(64, 2)
"""

import json
import numbers
import os
import re
import shutil
import sys

import keras
import numpy as np

from keras_distill import _io, cache, shards
from keras_distill import view_cache as vc
from keras_distill._arrays import to_numpy
from keras_distill.shards import batch_fingerprints, fingerprint

FORMAT = 1
MANIFEST = "manifest.json"
FINGERPRINT = "fingerprint"
OUTPUTS = "outputs"
CLASSES = "classes"
FEATURE_PREFIX = "features/"
RECORD_PREFIX = "view_record/"
# The most memory the shuffle buffer may take unless `shuffle_buffer` says.
SHUFFLE_MEMORY = 256 * 2**20
# What a pass in progress leaves before its first manifest: shards and temps.
_PASS_FILE = re.compile(r"^(shard-\d{5}\.example|\..*\.kdtmp-.*)$")


def _tf():
    import tensorflow as tf  # tf.data: the input pipeline on every backend

    return tf


def _positive_int(value, argument):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < 1:
        raise ValueError(f"`{argument}` must be a positive integer, got "
                         f"{value!r}.")
    return int(value)


# ------------------------------------------------------------- the dataset
def check_dataset(x, y=None):
    """Refuses what a disk cache cannot stream: not a ``tf.data.Dataset``,
    separate labels, an endless dataset. Returns the number of batches
    (``None`` if unknown).

    Example:
    >>> import numpy as np
    >>> check_dataset(np.zeros((4, 2)))
    Traceback (most recent call last):
    ...
    TypeError: A disk cache (`cache_teacher=DiskCache(...)` or a directory) streams a tf.data.Dataset ...
    """
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(x, tf.data.Dataset):
        raise TypeError(
            "A disk cache (`cache_teacher=DiskCache(...)` or a directory) "
            "streams a tf.data.Dataset of batches (x, y), got "
            f"{type(x).__name__}. In-memory arrays: use cache_teacher=True "
            "(the cache in memory), or wrap them: tf.data.Dataset."
            "from_tensor_slices((x, y)).batch(batch_size).")
    if y is not None:
        raise ValueError(
            "`y` must be None when `x` is a tf.data.Dataset: the dataset "
            "yields (x, y) batches itself.")
    cardinality = int(x.cardinality())
    if cardinality == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError(
            "The dataset is endless (`.repeat()`), so the teacher's pass "
            "over it would never end: pass it without `.repeat()` (fit's "
            "`epochs` repeats it).")
    if cardinality == 0:
        raise ValueError("`x` has no batches: there is nothing to cache.")
    return None if cardinality < 0 else cardinality


def _split_element(element):
    if isinstance(element, (tuple, list)):
        return element[0], tuple(element[1:])
    return element, ()


def _rows(x):
    return int(keras.tree.flatten(x)[0].shape[0])


# --------------------------------------------------------------- the cache
class DiskCache:
    """Where and how ``fit`` writes the teacher's outputs on disk.

    Pass it as ``fit(dataset, cache_teacher=DiskCache(directory))`` (or
    ``cache_teacher=directory`` for the defaults, with fit's
    ``cache_dtype`` and ``top_k``); see the module docstring for the
    contract on the dataset.

    Args:
        directory: A new or empty directory, or one holding a disk cache
            of this teacher (reused, or resumed after a killed pass).
        dtype: ``"float16"`` (default: half the bytes) or ``"float32"``.
        top_k: Keep only the ``top_k`` largest teacher logits per sample
            (with their class ids); the others are rebuilt 10,000 below the
            smallest kept one, so the teacher's distribution is renormalised
            over its ``top_k`` classes. Not with tapped features.
        shard_size: Samples per shard (a shard ends on a batch boundary).
        shuffle_buffer: Samples in the shuffle buffer. Default: as many as
            fit in 256 MiB (inputs and outputs), at most the dataset.
        views: With ``fit(augmentation=...)``: K, the augmented views
            cached per sample (FKD, as `keras_distill.view_cache` does in
            memory); each is stored with the parameters that rebuild it and
            every step replays one. Default: fit's ``views``, else 8.
        seed: The views' seed: view ``k`` of batch ``j`` is drawn from
            ``view_cache.view_seed(seed, k, j)``, so a resumed or rebuilt
            cache holds the same views.

    Example:
    >>> DiskCache("/tmp/cache", dtype="float16", top_k=5).top_k
    5
    >>> DiskCache("/tmp/cache", dtype="int8")
    Traceback (most recent call last):
    ...
    ValueError: `cache_dtype` must be one of ('float32', 'float16'), got 'int8'.
    """

    def __init__(self, directory, dtype="float16", top_k=None,
                 shard_size=8192, shuffle_buffer=None, views=None, seed=0):
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"`directory` must be a path, got "
                            f"{type(directory).__name__}.")
        self.directory = os.fspath(directory)
        self.dtype = cache.check_dtype(dtype)
        self.top_k = None if top_k is None else _positive_int(top_k, "top_k")
        self.shard_size = _positive_int(shard_size, "shard_size")
        self.shuffle_buffer = (None if shuffle_buffer is None else
                               _positive_int(shuffle_buffer, "shuffle_buffer"))
        self.views = None if views is None else _positive_int(views, "views")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"`seed` must be an integer, got {seed!r}.")
        self.seed = int(seed)
        self.manifest = None

    # ---------------------------------------------------------- manifest
    def _path(self, name):
        return os.path.join(self.directory, name)

    def _key(self, distiller):
        views = distiller._views.value
        return {"format": FORMAT,
                "teacher": shards.weights_sha256(distiller.teacher),
                "teacher_dtype": distiller.teacher_dtype,
                "dtype": self.dtype, "top_k": self.top_k,
                "shard_size": self.shard_size,
                "views": None if views is None else self.views,
                "augmentation": None if views is None else _describe(views),
                "seed": self.seed}

    def _write_manifest(self):
        _io.atomic_write(self._path(MANIFEST),
                         json.dumps(self.manifest, indent=1) + "\n")

    def _open(self, key):
        """The manifest to continue from (a fresh one if the directory is
        new or empty); refuses a directory holding anything else."""
        os.makedirs(self.directory, exist_ok=True)
        _io.remove_stale_temps(self.directory)
        found = _io.read_json(self._path(MANIFEST))
        if found is None:
            # Shards without a manifest: another worker's pass just began.
            if any(not _PASS_FILE.match(name)
                   for name in os.listdir(self.directory)):
                raise ValueError(
                    f"`directory` {self.directory!r} is not empty and holds "
                    "no keras_distill disk cache: pass a new or empty "
                    "directory (nothing in it is overwritten).")
            return dict(key, shards=[], batches=0, complete=False)
        differs = sorted(k for k in key if found.get(k) != key[k])
        if differs:
            raise ValueError(
                f"`directory` {self.directory!r} holds a disk cache of "
                f"another teacher or other settings ({', '.join(differs)} "
                f"differ{'s' if len(differs) == 1 else ''}): pass a new "
                "directory, or delete this one to "
                "rebuild it.")
        bad = shards.damaged(self.directory, found["shards"])
        if bad is not None:
            raise ValueError(
                f"The disk cache in {self.directory!r} is damaged ({bad} is "
                "missing or changed): delete the directory to rebuild it.")
        return found

    # ------------------------------------------------------------- build
    def build(self, distiller, dataset, verbose=True):
        """Runs the teacher over ``dataset`` once and writes the shards
        (or reuses / resumes what the directory holds). Returns ``self``;
        ``info`` describes the cache.

        Example:
        >>> import tempfile, numpy as np, keras, tensorflow as tf
        >>> from keras_distill import Distiller
        >>> make = lambda: keras.Sequential([keras.Input((4,)),
        ...                                  keras.layers.Dense(5)])
        >>> d = Distiller(make(), make())
        >>> ds = tf.data.Dataset.from_tensor_slices(
        ...     np.random.rand(10, 4).astype("float32")).batch(4)
        >>> c = DiskCache(tempfile.mkdtemp(), top_k=2).build(d, ds, verbose=0)
        >>> c.info["samples"], c.info["shapes"]
        (10, {'classes': [2], 'outputs': [2]})
        """
        batches = check_dataset(dataset)
        if self.top_k is not None and distiller._has_student_features():
            raise ValueError("`top_k` keeps logits only; a FeatureDistiller "
                             "caches tapped features too: leave top_k None.")
        views = distiller._views.value
        if views is not None:
            views.check_replayable()
            if distiller._has_student_features():
                raise ValueError(
                    "A view cache stores the teacher's logits only, not its "
                    "tapped features: with a FeatureDistiller use online "
                    "views (cache_teacher=False).")
            self.views = self.views or 8
        self.manifest = self._open(self._key(distiller))
        if self.manifest["complete"]:
            if verbose:
                print(f"keras_distill: reusing {self.describe()}")
            return self
        done = self.manifest["batches"]
        progress = None
        pending, rows = [], 0
        for index, element in enumerate(dataset.skip(done), start=done):
            x, _ = _split_element(element)
            arrays = self._teacher_arrays(distiller, x, index)
            if "specs" not in self.manifest:
                self._start(arrays, batches, verbose)
            if progress is None and verbose:
                progress = keras.utils.Progbar(batches, unit_name="batch")
                if done:
                    progress.update(done)
            pending.append(arrays)
            rows += len(arrays[FINGERPRINT])
            if rows >= self.shard_size:
                self._write_shard(pending, index + 1)
                pending, rows = [], 0
            if progress is not None:
                progress.update(index + 1)
        if pending:
            self._write_shard(pending, self.manifest["batches"]
                              + len(pending))
        if "specs" not in self.manifest:
            raise ValueError("`x` has no batches: there is nothing to cache.")
        self.manifest["complete"] = True
        self._write_manifest()
        if verbose:
            print(f"keras_distill: {self.describe()}")
        return self

    def _teacher_arrays(self, distiller, x, batch):
        """The rows one batch adds to the cache: fingerprints, outputs (of
        each view, with the views' parameters) and features."""
        inputs = keras.tree.map_structure(to_numpy, x)
        views = distiller._views.value
        record, features = {}, {}
        if views is None:
            outputs, features = distiller._teacher_predict(inputs, _rows(x))
        else:  # (batch, K, ...): K recorded views of each sample
            outputs, record = vc.record_views(
                lambda view: distiller._teacher_predict(
                    to_numpy(view), _rows(x))[0],
                inputs, views, self.views, self.seed, batch)
        outputs = np.asarray(outputs, "float32")
        cache.check_finite_outputs(
            [outputs, *(np.asarray(v) for v in features.values())],
            distiller.teacher_dtype)
        arrays = {FINGERPRINT: to_numpy(batch_fingerprints(x))}
        self.manifest.setdefault("num_classes", int(outputs.shape[-1]))
        if self.top_k is not None:
            outputs, arrays[CLASSES] = vc.top_k_rows(outputs, self.top_k)
        arrays[OUTPUTS] = outputs.astype(self.dtype)
        arrays.update({RECORD_PREFIX + k: v for k, v in record.items()})
        for key, value in features.items():
            arrays[FEATURE_PREFIX + key] = np.asarray(value).astype(self.dtype)
        cache.check_stored_range(arrays.values())
        return arrays

    def _start(self, arrays, batches, verbose):
        """Records the tensors' specs; says (and checks) the size."""
        self.manifest["specs"] = shards.specs_of(arrays)
        per_sample = sum(v[0].nbytes for v in arrays.values())
        self.manifest["sample_bytes"] = int(per_sample)
        if batches is None:
            size = "size unknown (the dataset's length is)"
            estimate = 0
        else:
            samples = batches * len(arrays[FINGERPRINT])
            estimate = samples * per_sample
            size = f"about {samples} samples, {estimate / 2**20:.1f} MiB"
        free = shutil.disk_usage(self.directory).free
        if estimate > free:
            raise ValueError(
                f"The disk cache would take about {estimate / 2**20:.0f} MiB "
                f"but {self.directory!r} has {free / 2**20:.0f} MiB free: "
                "pass a directory on a larger disk, or use dtype='float16' "
                "or `top_k`.")
        if verbose:
            print(f"keras_distill: writing the teacher's outputs to "
                  f"{self.directory}: {size} ({self.dtype}"
                  f"{f', {self.views} views' if self.views else ''}"
                  f"{f', top {self.top_k}' if self.top_k else ''}), shards of "
                  f"{self.shard_size} samples")

    def _write_shard(self, pending, batches):
        arrays = {name: np.concatenate([p[name] for p in pending])
                  for name in pending[0]}
        self.manifest["shards"].append(shards.write_shard(
            self.directory, len(self.manifest["shards"]), arrays))
        self.manifest["batches"] = int(batches)
        self._write_manifest()

    # ------------------------------------------------------------- info
    @property
    def info(self):
        """Samples, shards, bytes and settings of the built cache."""
        shards = self.manifest["shards"]
        samples = sum(s["samples"] for s in shards)
        return {"samples": samples, "shards": len(shards),
                "bytes": samples * self.manifest["sample_bytes"],
                "dtype": self.dtype, "top_k": self.top_k,
                "views": self.manifest.get("views"),
                "directory": self.directory,
                "shapes": {k: v["shape"] for k, v in
                           self.manifest["specs"].items() if k != FINGERPRINT}}

    def describe(self):
        """One line for the log."""
        info = self.info
        return (f"disk cache of the teacher's outputs for {info['samples']} "
                f"samples in {info['shards']} shards "
                f"({info['bytes'] / 2**20:.1f} MiB, {self.dtype}) in "
                f"{self.directory}")

    # ------------------------------------------------------------ stream
    def _stored(self):
        """The stored rows, one sample at a time, in the dataset's order."""
        return shards.stream(self.directory, self.manifest["shards"],
                             self.manifest["specs"])

    def _buffer(self, dataset, batch_rows):
        if self.shuffle_buffer is not None:
            return self.shuffle_buffer
        spec = _split_element(dataset.element_spec)[0]
        tf = _tf()
        input_bytes = sum(
            int(np.prod([d or 1 for d in s.shape[1:]])) * s.dtype.size
            for s in tf.nest.flatten(spec))
        per_sample = input_bytes + self.manifest["sample_bytes"]
        samples = self.info["samples"]
        return max(batch_rows, min(samples, SHUFFLE_MEMORY // per_sample))

    def check_order(self, dataset):
        """Refuses a dataset whose first batch is not the one cached (it is
        shuffled or randomly augmented before ``fit``); returns that
        batch's number of samples (`stream`'s batch size).

        Example:
        >>> import tempfile, numpy as np, keras, tensorflow as tf
        >>> from keras_distill import Distiller
        >>> make = lambda: keras.Sequential([keras.Input((4,)),
        ...                                  keras.layers.Dense(2)])
        >>> ds = tf.data.Dataset.from_tensor_slices(
        ...     np.random.rand(8, 4).astype("float32")).batch(4)
        >>> c = DiskCache(tempfile.mkdtemp()).build(
        ...     Distiller(make(), make()), ds, verbose=0)
        >>> c.check_order(ds.map(lambda x: x + 1.0))
        Traceback (most recent call last):
        ...
        ValueError: The dataset's first batch is not the one the disk cache ...
        """
        first = next(iter(dataset.take(1)))
        x, _ = _split_element(first)
        now = to_numpy(batch_fingerprints(x))
        stored = next(iter(self._stored().batch(len(now)).take(1)))
        if not np.array_equal(now, to_numpy(stored[FINGERPRINT])):
            raise ValueError(_ORDER_ERROR)
        return len(now)

    def stream(self, dataset, shuffle=True, seed=None, batch_rows=None):
        """The dataset for ``fit``: each sample's inputs packed with its
        stored teacher outputs (``keras_distill.cache.split`` takes them
        apart), shuffled together in a bounded buffer, rebatched to the
        dataset's batch size (``batch_rows``, if known: the rows of its
        first batch).

        Example:
        >>> import tempfile, numpy as np, keras, tensorflow as tf
        >>> from keras_distill import Distiller
        >>> make = lambda: keras.Sequential([keras.Input((4,)),
        ...                                  keras.layers.Dense(3)])
        >>> ds = tf.data.Dataset.from_tensor_slices(
        ...     (np.random.rand(8, 4).astype("float32"), np.zeros(8))).batch(4)
        >>> c = DiskCache(tempfile.mkdtemp()).build(
        ...     Distiller(make(), make()), ds, verbose=0)
        >>> packed, labels = next(iter(c.stream(ds, shuffle=False)))
        >>> tuple(packed[cache.OUTPUTS_KEY].shape), tuple(labels.shape)
        ((4, 3), (4,))
        """
        tf = _tf()
        spec = _split_element(dataset.element_spec)[0]
        batch_dim = tf.nest.flatten(spec)[0].shape[0]
        if batch_rows is None:
            batch_rows = _rows(_split_element(next(iter(dataset.take(1))))[0])
        top_k = self.top_k
        num_classes = self.manifest["num_classes"]
        views = self.manifest.get("views")

        def pack(element, stored):
            x, rest = _split_element(element)
            check = tf.debugging.assert_equal(
                fingerprint(x), stored[FINGERPRINT], message=_ORDER_ERROR)
            with tf.control_dependencies([check]):
                outputs = tf.identity(stored[OUTPUTS])
            if views:  # `view_cache.select` picks and rebuilds one
                packed = {cache.INPUTS_KEY: x, vc.VIEW_OUTPUTS_KEY: outputs,
                          vc.VIEW_RECORD_KEY: {
                              key[len(RECORD_PREFIX):]: value
                              for key, value in stored.items()
                              if key.startswith(RECORD_PREFIX)}}
                if top_k is not None:
                    packed[vc.VIEW_INDEX_KEY] = stored[CLASSES]
                return (packed, *rest) if rest else packed
            if top_k is not None:
                outputs = _expand_top_k(outputs, stored[CLASSES], num_classes)
            packed = {cache.INPUTS_KEY: x, cache.OUTPUTS_KEY: outputs}
            features = {key[len(FEATURE_PREFIX):]: value
                        for key, value in stored.items()
                        if key.startswith(FEATURE_PREFIX)}
            if features:
                packed[cache.FEATURES_KEY] = features
            return (packed, *rest) if rest else packed

        zipped = tf.data.Dataset.zip((dataset.unbatch(), self._stored()))
        packed = zipped.map(pack, num_parallel_calls=tf.data.AUTOTUNE)
        if shuffle:
            packed = packed.shuffle(self._buffer(dataset, batch_rows),
                                    seed=seed, reshuffle_each_iteration=True)
        drop = batch_dim is not None
        samples = self.info["samples"]
        batches = samples // batch_rows if drop else -(-samples // batch_rows)
        packed = packed.batch(batch_rows, drop_remainder=drop).apply(
            tf.data.experimental.assert_cardinality(batches))
        options = tf.data.Options()
        # Workers must split the zipped pairs, never the two files apart.
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        return packed.with_options(options).prefetch(tf.data.AUTOTUNE)


_ORDER_ERROR = (
    "The dataset's first batch is not the one the disk cache was written from "
    "(or a later sample differs): it yields other samples or another order on "
    "each pass (shuffled or randomly augmented before fit). The cached teacher "
    "outputs would be paired with the wrong inputs. Pass the dataset in a "
    "fixed order (no .shuffle(), no random maps; the disk cache shuffles "
    "itself) and use fit(augmentation=...) for random views.")


def _describe(views):
    """The augmentation, as text for the cache's key."""
    if views.layers is None:
        return repr(views)
    return json.dumps([[type(layer).__name__, layer.get_config()]
                       for layer in views.layers], sort_keys=True, default=str)


def _expand_top_k(values, classes, num_classes):
    tf = _tf()
    values = tf.cast(values, "float32")
    fill = tf.reduce_min(values) - vc.TOPK_FILL
    full = tf.fill([num_classes], fill)
    return tf.tensor_scatter_nd_update(full, classes[:, None], values)


def resolve(cache_teacher, dtype, top_k, views=None):
    """``cache_teacher`` as a `DiskCache`, or ``None`` for the in-memory
    cache (``True``) or none (``False``).

    Example:
    >>> resolve("/tmp/c", "float16", None).dtype
    'float16'
    >>> resolve(True, "float32", None) is None
    True
    """
    if isinstance(cache_teacher, DiskCache):
        if cache_teacher.views is None and views is not None:
            cache_teacher.views = _positive_int(views, "views")
        return cache_teacher
    if isinstance(cache_teacher, (str, os.PathLike)):
        return DiskCache(cache_teacher, dtype=dtype, top_k=top_k, views=views)
    if isinstance(cache_teacher, bool):
        return None
    raise TypeError(
        "`cache_teacher` must be True/False (in memory or not), a directory "
        "or a keras_distill.DiskCache (on disk, for a tf.data.Dataset), got "
        f"{type(cache_teacher).__name__}.")


def prepare_fit(distiller, x, disk, shuffle, verbose):
    """What ``fit`` does with a disk cache (its arguments checked by
    `check_dataset`): builds (or reuses) it, checks the dataset's order,
    sets ``teacher_cache_info`` and returns the stream to train on."""
    disk.build(distiller, x, verbose=verbose)
    batch_rows = disk.check_order(x)  # its first batch, read once
    distiller.teacher_cache_info = disk.info
    return disk.stream(x, shuffle=shuffle, batch_rows=batch_rows)
