"""Readers and steps behind `keras_distill.jobs.sources.load_data`.

Every source (image folder, ``.npz`` files, TFRecord files, TensorFlow
Datasets, the builtin Fashion-MNIST and MNIST) is read by `read` into a
`Source`: one `Part` per split (images in memory, or keys/records plus a
decode function), then `carve` holds validation/test out of the training
data; `keras_distill.jobs.sources.load_data` does the rest the same way
for all.
"""

import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from keras_distill import _io, datasets
from keras_distill.jobs.config import resolve
from keras_distill.teacher_store import data_fingerprint

SPLITS = ("train", "validation", "test")
IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # as image_dataset_from_directory
_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class Part:
    """One split before scaling.

    ``x`` holds images (``decode`` is None) or keys such as file paths that
    ``decode(key, label)`` turns into ``(image, label)``; or ``stream`` is a
    tf.data.Dataset of records for ``decode(record)``. ``y``: the labels
    when known; ``count``: the number of examples when known.

    Example:
    >>> part = Part(np.zeros((4, 2, 2, 1)), np.arange(4))
    >>> part.head(3).count, part.select(np.array([3, 1])).y.tolist()
    (3, [3, 1])
    """

    def __init__(self, x=None, y=None, decode=None, stream=None, count=None):
        self.x, self.y, self.decode, self.stream = x, y, decode, stream
        self.count = len(y) if y is not None else count

    def elements(self):
        """The undecoded elements as a tf.data.Dataset."""
        if self.stream is not None:
            return self.stream
        return tf.data.Dataset.from_tensor_slices((self.x, self.y))

    def select(self, index):
        """The examples at ``index`` (a stream keeps its stored order)."""
        if self.stream is None:
            return Part(self.x[index], self.y[index], self.decode)
        index = np.sort(index)
        table = np.zeros(self.count, bool)
        table[index] = True
        table = tf.constant(table)
        stream = self.stream.enumerate().filter(lambda i, _: table[i]).map(lambda _, r: r)
        y = None if self.y is None else self.y[index]
        return Part(y=y, decode=self.decode, stream=stream, count=len(index))

    def head(self, n):
        """The first ``n`` examples."""
        if self.stream is None:
            return Part(self.x[:n], self.y[:n], self.decode)
        count = None if self.count is None else min(n, self.count)
        y = None if self.y is None else self.y[:n]
        return Part(y=y, decode=self.decode, stream=self.stream.take(n), count=count)

    def materialize(self, key):
        """``(x, y)`` numpy arrays of the whole split (each image read once)."""
        if self.decode is None:
            return self.x, self.y
        xs, ys = [], []
        try:
            for x, y in self.elements().map(self.decode, tf.data.AUTOTUNE).batch(256):
                xs.append(x.numpy())
                ys.append(y.numpy())
        except tf.errors.OpError as error:
            hint = (" (images of different sizes need data.image_size)"
                    if "shape" in error.message.lower() else "")
            raise ValueError(f"{key}: reading the data failed: {error.message}{hint}") from None
        if not xs:
            raise ValueError(f"{key}: the split holds no examples")
        return np.concatenate(xs), np.concatenate(ys).astype("int64")


@dataclasses.dataclass
class Source:
    """What a reader found; ``keys`` name each split in messages."""

    parts: dict
    input_shape: tuple
    what: str
    content: list
    keys: dict
    test_hint: str
    num_classes: Optional[int] = None
    class_names: Optional[list] = None
    detail: Optional[str] = None
    shuffle_first: bool = False
    unit: str = " images"


def _existing(path, key, folder, what):
    ok = os.path.isdir(path) if folder else os.path.isfile(path)
    if not ok:
        state = "does not exist" if not os.path.exists(path) else (
            "is not a folder" if folder else "is a folder, not a file")
        raise ValueError(f"{key} {path!r} {state}: {what} (relative paths start at "
                         "the job file's folder)")
    return path


def _stats(paths, root):
    """Relative names, sizes and modification times: a cheap content id."""
    return [[os.path.relpath(p, root), s.st_size, s.st_mtime_ns]
            for p in paths for s in [os.stat(p)]]


def _index(root, key, log):
    classes = sorted(d for d in os.listdir(root)
                     if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if len(classes) < 2:
        raise ValueError(
            f"{key} {root!r} has {len(classes)} class folder(s)"
            f"{': ' + ', '.join(classes) if classes else ''}; it needs one sub-folder "
            "of images per class, at least 2 (e.g. photos/cat/1.png, photos/dog/1.png)")
    paths, labels = [], []
    for label, name in enumerate(classes):
        before = len(paths)
        for folder, _, files in sorted(os.walk(os.path.join(root, name)), key=lambda w: w[0]):
            paths += [os.path.join(folder, f) for f in sorted(files)
                      if f.lower().endswith(IMAGE_FORMATS)]
        labels += [label] * (len(paths) - before)
        if len(paths) == before:
            log(f"data: warning: {key} class folder {name!r} holds no images")
    if not paths:
        raise ValueError(f"{key} {root!r} holds no images ({', '.join(IMAGE_FORMATS)}) "
                         f"in its class folders {', '.join(classes)}")
    return classes, np.array(paths), np.array(labels, "int64")


def _channels(image, channels):
    have = image.shape[-1]
    if have == channels:
        return image
    if channels == 3 and have == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 1 and have == 3:
        return tf.image.rgb_to_grayscale(image)
    raise ValueError(f"cannot turn {have}-channel images into {channels}-channel ones")


def _image_dir(spec, job_dir, log):
    what = "give a folder with one sub-folder of images per class"
    root = _existing(resolve(job_dir, spec.image_dir), "data.image_dir", True, what)
    classes, paths, labels = _index(root, "data.image_dir", log)
    channels = 3 if spec.color_mode == "rgb" else 1
    size = tuple(spec.image_size)

    def decode(path, label):  # as image_dataset_from_directory
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                                   expand_animations=False)
        image = tf.image.resize(image, size)
        image.set_shape((*size, channels))
        return image, label

    parts = {"train": Part(paths, labels, decode), "validation": None, "test": None}
    content = [["image_dir", _stats(paths, root)]]
    keys = {s: f"data.image_dir {root!r} ({s})" for s in SPLITS}
    name = f"image folder {root}"
    if spec.test_dir:
        test_root = _existing(resolve(job_dir, spec.test_dir), "data.test_dir", True, what)
        test_classes, test_paths, test_labels = _index(test_root, "data.test_dir", log)
        if test_classes != classes:
            raise ValueError(
                f"data.test_dir {test_root!r} has the class folders "
                f"{', '.join(test_classes)}, but data.image_dir {root!r} has "
                f"{', '.join(classes)}: both need the same class sub-folders")
        parts["test"] = Part(test_paths, test_labels, decode)
        content.append(["test_dir", _stats(test_paths, test_root)])
        keys["test"] = f"data.test_dir {test_root!r}"
        name += f", test folder {test_root}"
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    return Source(parts, (*size, channels), name, content, keys,
                  "give data.test_dir or data.test_split", len(classes), classes,
                  f"{len(classes)} classes: {shown}", shuffle_first=True)


def _fit_images(x, spec, key):
    """Arrays ``(n, h, w[, c])`` as images of ``image_size``/``color_mode``."""
    x = np.asarray(x)
    if x.dtype.kind not in "uifb":
        raise ValueError(f"{key}: images must be numbers (uint8 or float), got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"{key}: images must have the shape (n, height, width) or (n, "
                         f"height, width, channels), got {x.shape}")
    if "color_mode" in spec.model_fields_set:  # stored channels unless asked
        x = np.asarray(_channels(tf.constant(x), 3 if spec.color_mode == "rgb" else 1))
    if spec.image_size and tuple(spec.image_size) != x.shape[1:3]:
        x = np.concatenate([tf.image.resize(x[i:i + 1024], spec.image_size).numpy()
                            for i in range(0, len(x), 1024)] or [x.astype("float32")])
    return x


def _labels(y, n, key):
    y = np.asarray(y)
    width = None
    if y.ndim == 2:  # one-hot
        width, y = y.shape[1], y.argmax(axis=1)
    if y.ndim != 1 or y.dtype.kind not in "uifb" or (
            y.dtype.kind == "f" and not np.all(y == np.round(y))):
        raise ValueError(f"{key}: labels must be integer class ids of shape (n,) or "
                         f"one-hot (n, classes), got {y.dtype} {y.shape}")
    if len(y) != n:
        raise ValueError(f"{key}: {n} images but {len(y)} labels")
    return y.astype("int64"), width


def _read_npz(path, files, key):
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - whatever numpy says
        raise ValueError(f"{key} {path!r} cannot be read as .npz ({error}): write it "
                         "with numpy.savez(path, x=images, y=labels)") from None
    if not hasattr(archive, "files"):
        raise ValueError(f"{key} {path!r} is a .npy array, not a .npz archive: write it "
                         "with numpy.savez(path, x=images, y=labels)")
    with archive:
        for name, option in ((files.x_key, "x_key"), (files.y_key, "y_key")):
            if name not in archive.files:
                raise ValueError(
                    f"{key} {path!r} has no array {name!r} (data.npz.{option}); it "
                    f"holds: {', '.join(archive.files) or 'nothing'}")
        try:
            return archive[files.x_key], archive[files.y_key]
        except ValueError as error:
            raise ValueError(f"{key} {path!r}: {error}") from None


def _npz(spec, job_dir, log):
    files = spec.npz
    parts, content, keys, names, width = {}, [], {}, [], None
    for split in SPLITS:
        keys[split] = f"data.npz.{split}"
        if getattr(files, split) is None:
            parts[split] = None
            continue
        path = _existing(resolve(job_dir, getattr(files, split)), keys[split], False,
                         "give a .npz file holding images and labels")
        keys[split] += f" {path!r}"
        x, y = _read_npz(path, files, keys[split])
        x = _fit_images(x, spec, keys[split])
        y, one_hot = _labels(y, len(x), keys[split])
        if split == "train":
            width = one_hot
        elif x.shape[1:] != parts["train"].x.shape[1:]:
            raise ValueError(f"{keys[split]}: images of shape {x.shape[1:]}, but the "
                             f"training images are {parts['train'].x.shape[1:]}")
        content.append([split, _io.file_sha256(path), files.x_key, files.y_key])
        parts[split] = Part(x, y)
        names.append(path)
    return Source(parts, parts["train"].x.shape[1:], "npz arrays " + ", ".join(names),
                  content, keys, "give data.npz.test or data.test_split", width)


def _tfrecord_files(job_dir, split, patterns):
    found = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        full = resolve(job_dir, pattern)
        matched = sorted(tf.io.gfile.glob(full))
        if not matched:
            raise ValueError(f"data.tfrecord.{split}: {pattern!r} matches no file (looked "
                             f"for {full}); give TFRecord files or glob patterns")
        found += [m for m in matched if m not in found]
    return found


def _tfrecord(spec, job_dir, log):
    t = spec.tfrecord
    files = {s: None if getattr(t, s) is None else _tfrecord_files(job_dir, s, getattr(t, s))
             for s in SPLITS}
    keys = {s: f"data.tfrecord.{s}" for s in SPLITS}
    first = next(iter(tf.data.TFRecordDataset(files["train"]).take(1)), None)
    if first is None:
        raise ValueError(f"data.tfrecord.train: {files['train']} hold no records")
    feature = tf.train.Example.FromString(first.numpy()).features.feature
    for name, option in ((t.image_key, "image_key"), (t.label_key, "label_key")):
        if name not in feature:
            raise ValueError(f"data.tfrecord.{option} {name!r} is not a feature of the "
                             f"records in {files['train'][0]}; they have: "
                             f"{', '.join(sorted(feature))}")
    want = ((3 if spec.color_mode == "rgb" else 1)
            if "color_mode" in spec.model_fields_set else 0)
    blob = feature[t.image_key].bytes_list.value[0]
    if t.image_shape:
        if len(blob) != int(np.prod(t.image_shape)):
            raise ValueError(f"data.tfrecord.image_shape {list(t.image_shape)} is "
                             f"{int(np.prod(t.image_shape))} bytes, but the first record's "
                             f"{t.image_key!r} holds {len(blob)} bytes")
        stored = tuple(t.image_shape)
    else:
        try:
            stored = tuple(tf.io.decode_image(blob, channels=want,
                                              expand_animations=False).shape)
        except tf.errors.OpError as error:
            raise ValueError(f"data.tfrecord.image_key {t.image_key!r}: the first record's "
                             f"image is not PNG/JPEG/GIF/BMP ({error.message}); for raw "
                             "uint8 pixels give data.tfrecord.image_shape") from None
    channels = want or stored[-1]
    size = tuple(spec.image_size or stored[:2])
    parse = {t.image_key: tf.io.FixedLenFeature([], tf.string),
             t.label_key: tf.io.FixedLenFeature([], tf.int64)}

    def decode(record):
        example = tf.io.parse_single_example(record, parse)
        if t.image_shape:
            image = tf.reshape(tf.io.decode_raw(example[t.image_key], tf.uint8),
                               t.image_shape)
            image = _channels(image, channels)
        else:
            image = tf.io.decode_image(example[t.image_key], channels=channels,
                                       expand_animations=False)
        image = tf.image.resize(image, size) if spec.image_size else tf.cast(image, "float32")
        return tf.ensure_shape(image, (*size, channels)), example[t.label_key]

    derived = any(getattr(spec, f"{s}_split") > 0 and files[s] is None
                  for s in ("validation", "test"))
    scan = t.num_classes is None or derived
    label = {t.label_key: tf.io.FixedLenFeature([], tf.int64)}
    parts = {}
    for split in SPLITS:
        if files[split] is None:
            parts[split] = None
            continue
        stream = tf.data.TFRecordDataset(files[split])
        if not scan:
            parts[split] = Part(decode=decode, stream=stream)
            continue
        try:
            ys = [b.numpy() for b in stream.map(
                lambda r: tf.io.parse_single_example(r, label)[t.label_key]).batch(4096)]
        except tf.errors.OpError as error:
            raise ValueError(f"{keys[split]}: reading the labels failed: "
                             f"{error.message}") from None
        parts[split] = Part(y=np.concatenate(ys or [np.zeros(0, "int64")]),
                            decode=decode, stream=stream)
    num_classes = t.num_classes
    if scan:
        y = parts["train"].y
        num_classes = num_classes or (int(y.max()) + 1 if len(y) else 0)
        log(f"data: scanned the labels of the TFRecord files ({len(y)} training records, "
            f"{num_classes} classes)" + ("; give data.tfrecord.num_classes to skip the "
                                         "scan" if t.num_classes is None else ""))
    content = [[s, [[os.path.basename(p), st.length, st.mtime_nsec]  # gs:// paths too
                    for p in f for st in [tf.io.gfile.stat(p)]]] for s, f in files.items() if f]
    content.append([t.image_key, t.label_key, t.image_shape])
    patterns = t.train if isinstance(t.train, str) else ", ".join(t.train)
    return Source(parts, (*size, channels), f"TFRecord files {patterns}", content, keys,
                  "give data.tfrecord.test or data.test_split", num_classes)


def _tfds(spec, job_dir, log):
    t = spec.tfds
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ValueError("data.tfds needs the tensorflow-datasets package, which is not "
                         "installed: pip install tensorflow-datasets") from None
    how = (f"prepare {t.name!r} there beforehand (e.g. `tfds build {t.name} --data_dir "
           "DIR` on a machine with internet): nothing is downloaded")
    data_dir = _existing(resolve(job_dir, t.data_dir), "data.tfds.data_dir", True, how)
    try:
        builder = tfds.builder(t.name, data_dir=data_dir)
        info = builder.info
        features = {name: info.features[name] for name in info.features}
    except Exception as error:  # noqa: BLE001 - whatever tfds raises
        raise ValueError(f"data.tfds {t.name!r} cannot be opened in {data_dir} "
                         f"({type(error).__name__}: {error}): {how}") from None
    for name, option in ((t.image_key, "image_key"), (t.label_key, "label_key")):
        if name not in features:
            raise ValueError(f"data.tfds.{option} {name!r} is not a feature of {t.name}; "
                             f"it has: {', '.join(sorted(features))}")
    label, stored = features[t.label_key], tuple(features[t.image_key].shape)
    if None in stored[:2] and not spec.image_size:
        raise ValueError(f"data.tfds {t.name!r}: images have no fixed size {stored}: "
                         "give data.image_size")
    channels = ((3 if spec.color_mode == "rgb" else 1)
                if "color_mode" in spec.model_fields_set else stored[-1])
    size = tuple(spec.image_size or stored[:2])

    def decode(example):
        image = _channels(example[t.image_key], channels)
        image = tf.image.resize(image, size) if spec.image_size else tf.cast(image, "float32")
        return tf.ensure_shape(image, (*size, channels)), tf.cast(example[t.label_key],
                                                                  tf.int64)

    parts, keys = {}, {}
    for split, name in (("train", t.train_split), ("validation", t.validation_split),
                        ("test", t.test_split)):
        keys[split] = f"data.tfds.{split}_split {name!r}"
        if name is None:
            parts[split] = None
            continue
        try:
            parts[split] = Part(decode=decode, count=int(info.splits[name].num_examples),
                                stream=builder.as_dataset(split=name, shuffle_files=False))
        except Exception as error:  # noqa: BLE001 - whatever tfds raises
            raise ValueError(f"{keys[split]} of {t.name!r} cannot be read from {data_dir} "
                             f"({type(error).__name__}: {error}); {how}") from None
    folder = os.path.join(data_dir, t.name)
    stats = [_stats([os.path.join(r, f) for f in fs], folder)
             for r, _, fs in sorted(os.walk(folder))]
    content = [t.name, str(getattr(info, "version", "")), t.train_split, t.validation_split,
               t.test_split, t.image_key, t.label_key, stats]
    return Source(parts, (*size, channels), f"TFDS {t.name} from {data_dir}", content, keys,
                  "give data.tfds.test_split or data.test_split", int(label.num_classes),
                  [str(n) for n in label.names])


def _mnist(data_dir, allow_download):
    if data_dir:
        _existing(data_dir, "data.data_dir", True, "give a folder with mnist.npz or the "
                  "four MNIST IDX files")
        candidates = [os.path.join(data_dir, "mnist.npz")]
    else:
        candidates = [os.path.join(os.path.dirname(datasets.keras_cache_dir()), "mnist.npz")]
    if os.path.isfile(candidates[0]) and (data_dir or not allow_download):
        with np.load(candidates[0], allow_pickle=False) as f:
            return ((f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])), candidates[0]
    if data_dir:
        found = [next((p for p in (os.path.join(data_dir, s + ".gz"),
                                   os.path.join(data_dir, s)) if os.path.isfile(p)), None)
                 for s in _IDX]
        if None in found:
            raise ValueError(f"data.data_dir {data_dir!r} holds neither mnist.npz nor the "
                             f"four MNIST IDX files ({', '.join(_IDX)}, plain or .gz)")
        x, y, xt, yt = (datasets.read_idx(p) for p in found)
        return ((x, y), (xt, yt)), data_dir
    if not allow_download:
        raise ValueError(f"data.builtin mnist: MNIST is not in the Keras cache "
                         f"({candidates[0]}) and data.allow_download is false: set "
                         "data.allow_download: true to download it once, or give "
                         "data.data_dir (a folder with mnist.npz or the MNIST IDX files)")
    import keras

    return keras.datasets.mnist.load_data(), "Keras cache"


def _builtin(spec, job_dir, log):
    data_dir = resolve(job_dir, spec.data_dir)
    if spec.builtin == "fashion_mnist":
        try:
            if data_dir:
                datasets.check_folder(data_dir, "data.data_dir")
            (x, y), (xt, yt) = datasets.load_fashion_mnist(
                data_dir, allow_download=spec.allow_download)
        except FileNotFoundError as error:
            message = str(error).replace("passing it as `path=`", "giving it as data.data_dir")
            raise ValueError(f"data.builtin fashion_mnist: {message}"
                             + ("" if spec.allow_download else
                                " Or set data.allow_download: true.")) from None
        where = data_dir or datasets.find_fashion_mnist() or "Keras cache"
        name, names = "Fashion-MNIST", list(datasets.CLASS_NAMES)
    else:
        ((x, y), (xt, yt)), where = _mnist(data_dir, spec.allow_download)
        name, names = "MNIST digits", [str(i) for i in range(10)]
    key = f"data.builtin {spec.builtin}"
    parts = {"train": Part(_fit_images(x, spec, key), _labels(y, len(x), key)[0]),
             "validation": None,
             "test": Part(_fit_images(xt, spec, key), _labels(yt, len(xt), key)[0])}
    content = [spec.builtin, data_fingerprint(x, y), data_fingerprint(xt, yt)]
    return Source(parts, parts["train"].x.shape[1:], name, content,
                  {s: f"{key} ({s})" for s in SPLITS}, "", 10, names, where, unit="")


def read(spec, job_dir, log):
    """The `Source` of a `DataSpec` (whichever source it names)."""
    for field, reader in (("image_dir", _image_dir), ("npz", _npz), ("tfrecord", _tfrecord),
                          ("tfds", _tfds), ("builtin", _builtin)):
        if getattr(spec, field):
            return reader(spec, job_dir, log)
    raise ValueError("data: give one of image_dir, npz, tfrecord, tfds, builtin")


def carve(source, spec, seed, log):
    """Holds validation/test out of the training data (seeded) and keeps the
    first ``train_samples``; returns ``(parts, seed_matters)``."""
    parts = dict(source.parts)
    need = {s: getattr(spec, f"{s}_split") > 0 and parts[s] is None
            for s in ("validation", "test")}
    for split in ("validation", "test"):
        if getattr(spec, f"{split}_split") > 0 and not need[split]:
            log(f"data: data.{split}_split ignored: the data has a {split} split of its "
                f"own ({source.keys[split]})")
    train, samples = parts["train"], spec.train_samples
    if not any(need.values()):
        if samples and source.shuffle_first:
            parts["train"] = train.select(
                np.random.RandomState(seed).permutation(train.count)[:samples])
        elif samples:
            parts["train"] = train.head(samples)
        return parts, bool(samples and source.shuffle_first)
    order = np.arange(train.count)
    if source.shuffle_first:  # image_dataset_from_directory's order
        order = np.random.RandomState(seed).permutation(train.count)
    order = order[:samples] if samples else order
    if not source.shuffle_first:
        order = order[np.random.RandomState(seed).permutation(len(order))]
    m = len(order)
    held = {s: int(getattr(spec, f"{s}_split") * m) if need[s] else 0 for s in need}
    for split, count in held.items():
        if need[split] and count == 0:
            raise ValueError(f"data.{split}_split={getattr(spec, f'{split}_split')} of "
                             f"{m} training examples holds out none: raise it")
    rest = m - held["validation"] - held["test"]
    if rest < 1:
        raise ValueError("data.validation_split + data.test_split leave no training "
                         f"examples (of {m}): lower them")
    if need["validation"]:
        parts["validation"] = train.select(order[rest + held["test"]:])
    if need["test"]:
        parts["test"] = train.select(order[rest:rest + held["test"]])
    parts["train"] = train.select(order[:rest])
    return parts, True


def check_labels(parts, keys, num_classes):
    """Labels known in advance must be in ``[0, num_classes)``; a stream's
    are checked as it is read."""
    for split, part in parts.items():
        if part is None:
            continue
        if part.y is None and part.decode is not None:
            part.decode = _checked(part.decode, num_classes, keys[split])
            continue
        bad = part.y[(part.y < 0) | (part.y >= num_classes)]
        if len(bad):
            raise ValueError(
                f"data: {split} labels must be in [0, {num_classes}) (the training data "
                f"has {num_classes} classes), found {int(bad[0])} ({len(bad)} labels out "
                f"of range; {keys[split]})")


def _checked(decode, num_classes, key):
    def check(*args):
        image, label = decode(*args)
        tf.debugging.assert_non_negative(label, message=f"{key}: a label is negative")
        tf.debugging.assert_less(label, tf.constant(num_classes, label.dtype),
                                 message=f"{key}: a label is >= num_classes {num_classes}")
        return image, label
    return check


def sampler(part, arrays, scale, offset):
    """``sample(n)``: up to n training images spread over the split."""
    def sample(n):
        if arrays is not None:
            x = arrays["train"][0]
            return x[np.unique(np.linspace(0, len(x) - 1, min(n, len(x))).astype(int))]
        dataset = part.elements()
        if part.count:
            stride = max(1, part.count // max(n, 1))
            dataset = dataset.enumerate().filter(lambda i, e: i % stride == 0)
            dataset = dataset.map(lambda i, e: e)
        dataset = dataset.take(n)
        if part.decode is not None:
            dataset = dataset.map(part.decode)
        xs = [x.numpy() for x, _ in dataset.batch(256)]
        x = np.concatenate(xs) if xs else np.zeros((0,), "float32")
        return (x.astype("float32") * scale + offset).astype("float32")
    return sample
