"""A job's data, teacher and student from its sources (keras_distill.jobs.sources).

Everything is built in tmp_path: an image folder of PNGs, .npz files,
TFRecord files, a builder module in the job folder, saved teachers. Nothing
is downloaded.
"""

import os
import shutil
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_distill.jobs import sources
from keras_distill.jobs.config import DataSpec, StudentSpec, TeacherSpec

pytestmark = pytest.mark.tensorflow  # tf.data, SavedModels

CLASSES = ["cat", "dog", "fox"]
FASHION = "/usr/share/datasets/fashion-mnist"
MY_MODELS = '''
import keras


def tiny_cnn(input_shape, num_classes):
    return keras.Sequential([
        keras.Input(input_shape), keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(num_classes)],
        name="tiny_cnn")


def softmax_cnn(input_shape, num_classes):
    return keras.Sequential([tiny_cnn(input_shape, num_classes), keras.layers.Softmax()])


def halve(x):
    return x * 0.5


def tf_halve(x):  # TensorFlow ops: run in a Lambda layer
    import tensorflow as tf
    return tf.multiply(x, 0.5)


def legacy(input_shape, num_classes):
    import tf_keras
    return tf_keras.Sequential([tf_keras.layers.Flatten(input_shape=input_shape),
                                tf_keras.layers.Dense(num_classes)])


def not_a_model(input_shape, num_classes):
    return "a model"


CONSTANT = 3
'''


def quiet(_line):
    pass


def pixels(label, index, size=12, channels=3):
    """A distinct image per (label, index)."""
    rng = np.random.default_rng(100 * label + index)
    return rng.integers(0, 256, (size, size, channels), dtype=np.uint8)


def write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(image))


def load(spec, job_dir, seed=0, logs=None):
    return sources.load_data(spec, str(job_dir), seed=seed,
                             log=quiet if logs is None else logs.append)


def all_images(data):
    """Every (image bytes, label) of the in-memory splits, validation and test once."""
    seen = {}
    for split in ("train", "validation", "test"):
        if data.arrays[split] is not None:
            for x, y in zip(*data.arrays[split]):
                seen[np.round(x * 255).astype(np.uint8).tobytes()] = int(y)
    return seen


def batches(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A job folder with photos/<class>/<i>.png: 3 classes x 8 PNGs of 12x12x3."""
    root = tmp_path_factory.mktemp("photos_job")
    for label, name in enumerate(CLASSES):
        for index in range(8):
            write_png(root / "photos" / name / f"{index}.png", pixels(label, index))
    return root


@pytest.fixture
def job_dir(tmp_path):
    (tmp_path / "my_models.py").write_text(MY_MODELS)
    return tmp_path


@pytest.fixture(autouse=True)
def restore_sys_path():
    before = list(sys.path)
    yield
    sys.path[:] = before


# ---------------------------------------------------------------- image folders


def test_image_folder_splits_hold_every_image_once(photos):
    logs = []
    spec = DataSpec(image_dir="photos", image_size=[12, 12], validation_split=0.25,
                    test_split=0.25, batch_size=5)
    data = load(spec, photos, seed=3, logs=logs)
    assert data.counts == {"train": 12, "validation": 6, "test": 6}
    assert (data.num_classes, data.class_names, data.input_shape) == (3, CLASSES, (12, 12, 3))
    assert data.description == (f"image folder {photos / 'photos'} (3 classes: cat, dog, fox; "
                                "12 train / 6 validation / 6 test images)")
    assert any("in memory" in line for line in logs)
    x, y = data.arrays["train"]
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (12, 12, 12, 3)
    expected = {pixels(c, i).tobytes(): c for c in range(3) for i in range(8)}
    assert all_images(data) == expected  # values scaled by 1/255, labels right
    first_x, first_y = next(iter(data.train))
    assert first_x.shape == (5, 12, 12, 3) and first_y.dtype == tf.int64
    np.testing.assert_array_equal(batches(data.test)[0], data.arrays["test"][0])
    np.testing.assert_array_equal(batches(data.validation)[1], data.arrays["validation"][1])


def test_image_folder_validation_is_image_dataset_from_directorys(photos):
    logs = []
    data = load(DataSpec(image_dir="photos", image_size=[12, 12], validation_split=0.25),
                photos, seed=7, logs=logs)
    _, validation = keras.utils.image_dataset_from_directory(
        photos / "photos", image_size=(12, 12), validation_split=0.25, subset="both",
        seed=7, batch_size=None, verbose=False)
    theirs = sorted((x.numpy().tobytes(), int(y)) for x, y in validation)
    x, y = data.arrays["validation"]
    ours = sorted(((xi * 255).round().astype(np.float32).tobytes(), int(yi))
                  for xi, yi in zip(x, y))
    assert ours == theirs
    assert data.counts == {"train": 18, "validation": 6, "test": 6}
    assert data.arrays["test"] is data.arrays["validation"]
    assert any("validation set is the test set" in line for line in logs)
    assert "the test set is the validation set" in data.description


def test_image_folder_streamed_gives_the_same_data(photos):
    spec = dict(image_dir="photos", image_size=[8, 8], validation_split=0.25, batch_size=4)
    logs = []
    memory = load(DataSpec(**spec), photos, seed=1)
    streamed = load(DataSpec(**spec, memory_limit_mb=0.01), photos, seed=1, logs=logs)
    assert streamed.arrays is None and any("streamed" in line for line in logs)
    assert streamed.counts == memory.counts and streamed.input_shape == (8, 8, 3)
    assert streamed.fingerprint == memory.fingerprint
    x, y = batches(streamed.validation)
    np.testing.assert_allclose(x, memory.arrays["validation"][0], atol=1e-6)
    np.testing.assert_array_equal(y, memory.arrays["validation"][1])
    epoch1, epoch2 = batches(streamed.train), batches(streamed.train)
    assert sorted(epoch1[1].tolist()) == sorted(memory.arrays["train"][1].tolist())
    assert not np.array_equal(epoch1[0], epoch2[0])  # reshuffled each epoch
    again = load(DataSpec(**spec, memory_limit_mb=0.01), photos, seed=1)
    np.testing.assert_array_equal(batches(again.train)[0], epoch1[0])  # seeded
    sample = streamed.sample(4)
    assert sample.shape == (4, 8, 8, 3) and sample.dtype == np.float32
    np.testing.assert_array_equal(sample, streamed.sample(4))
    assert memory.sample(100).shape == (18, 8, 8, 3)


def test_image_folder_test_dir_and_samples(photos, tmp_path):
    shutil.copytree(photos / "photos", tmp_path / "photos")
    for label, name in enumerate(CLASSES):
        write_png(tmp_path / "held" / name / "x.png", pixels(label, 50))
    data = load(DataSpec(image_dir="photos", test_dir="held", image_size=[6, 6],
                         color_mode="grayscale", train_samples=10, test_samples=2),
                tmp_path)
    assert data.counts == {"train": 10, "validation": 0, "test": 2}
    assert data.input_shape == (6, 6, 1) and data.validation is None
    assert "test folder" in data.description and "10 train / 2 test images" in data.description
    assert len(set(data.arrays["train"][1].tolist())) > 1  # seeded, not the first class


def test_image_folder_fingerprint(photos, tmp_path):
    shutil.copytree(photos / "photos", tmp_path / "photos")
    spec = DataSpec(image_dir="photos", image_size=[12, 12], validation_split=0.25)
    first = load(spec, tmp_path).fingerprint
    assert len(first) == 64 and load(spec, tmp_path).fingerprint == first
    assert load(spec, tmp_path, seed=1).fingerprint != first  # other split
    assert load(DataSpec(**{**spec.model_dump(), "scale": 1.0}), tmp_path).fingerprint != first
    path = tmp_path / "photos" / "dog" / "3.png"
    write_png(path, pixels(9, 9))
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load(spec, tmp_path).fingerprint != first


def test_image_folder_errors(photos, tmp_path):
    def error(**kwargs):
        with pytest.raises(ValueError) as info:
            load(DataSpec(image_size=[12, 12], **kwargs), tmp_path)
        return str(info.value)

    assert f"data.image_dir {str(tmp_path / 'nowhere')!r} does not exist" in error(
        image_dir="nowhere")
    write_png(tmp_path / "one" / "cat" / "0.png", pixels(0, 0))
    assert "has 1 class folder(s): cat" in error(image_dir="one")
    os.makedirs(tmp_path / "empty" / "a")
    os.makedirs(tmp_path / "empty" / "b")
    assert "holds no images" in error(image_dir="empty")
    shutil.copytree(photos / "photos", tmp_path / "photos")
    assert "give data.test_dir or data.test_split" in error(image_dir="photos")
    for name in ("cat", "owl"):
        write_png(tmp_path / "other" / name / "0.png", pixels(0, 0))
    message = error(image_dir="photos", test_dir="other")
    assert "data.test_dir" in message and "data.image_dir" in message and "owl" in message


# ---------------------------------------------------------------- npz


def save_npz(path, **arrays):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, **arrays)


def test_npz_splits_scale_and_samples(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 6, 6), dtype=np.uint8)
    y = np.arange(20) % 4
    save_npz(tmp_path / "d" / "train.npz", x=x, y=y)
    save_npz(tmp_path / "d" / "val.npz", x=x[:8], y=y[:8])
    save_npz(tmp_path / "d" / "test.npz", x=x[8:], y=np.eye(4)[y[8:]])  # one-hot
    spec = DataSpec(npz={"train": "d/train.npz", "validation": "d/val.npz",
                         "test": "d/test.npz"}, scale=2 / 255, offset=-1,
                    train_samples=12, test_samples=5, validation_split=0.5)
    logs = []
    data = load(spec, tmp_path, logs=logs)
    assert data.counts == {"train": 12, "validation": 8, "test": 5}
    assert any("validation_split ignored" in line for line in logs)
    assert (data.input_shape, data.class_names) == ((6, 6, 1), ["0", "1", "2", "3"])
    np.testing.assert_allclose(data.arrays["train"][0],
                               x[:12, ..., None] * np.float32(2 / 255) - 1, atol=1e-6)
    np.testing.assert_array_equal(data.arrays["test"][1], y[8:13])
    np.testing.assert_array_equal(data.sample(3), data.arrays["train"][0][[0, 5, 11]])


def test_npz_held_out_splits_and_fingerprint(tmp_path):
    x = np.arange(40 * 2 * 2 * 3).reshape(40, 2, 2, 3).astype(np.float32)
    save_npz(tmp_path / "all.npz", images=x, labels=np.arange(40) % 2)
    spec = DataSpec(npz={"train": "all.npz", "x_key": "images", "y_key": "labels"},
                    validation_split=0.1, test_split=0.2, scale=1.0)
    data = load(spec, tmp_path, seed=5)
    assert data.counts == {"train": 28, "validation": 4, "test": 8}
    held = np.concatenate([data.arrays[s][0] for s in ("train", "validation", "test")])
    np.testing.assert_array_equal(np.sort(held.ravel()), x.ravel())  # each once
    assert load(spec, tmp_path, seed=5).fingerprint == data.fingerprint
    save_npz(tmp_path / "all.npz", images=x, labels=np.arange(40) % 2)  # same content
    assert load(spec, tmp_path, seed=5).fingerprint == data.fingerprint
    x[0, 0, 0, 0] = 1000
    save_npz(tmp_path / "all.npz", images=x, labels=np.arange(40) % 2)
    assert load(spec, tmp_path, seed=5).fingerprint != data.fingerprint


def test_npz_errors(tmp_path):
    save_npz(tmp_path / "a.npz", images=np.zeros((4, 3, 3)), labels=np.arange(4) % 3)
    save_npz(tmp_path / "b.npz", x=np.zeros((4, 3, 3)), y=np.arange(4) % 3)
    save_npz(tmp_path / "c.npz", x=np.zeros((4, 3, 3)), y=np.array([0, 1, 2, 3]))
    save_npz(tmp_path / "d.npz", x=np.zeros((4, 3)), y=np.arange(4))

    def error(**npz):
        with pytest.raises(ValueError) as info:
            load(DataSpec(npz=npz), tmp_path)
        return str(info.value)

    assert "has no array 'x' (data.npz.x_key); it holds: images, labels" in error(
        train="a.npz")
    assert "data.npz.train" in error(train="gone.npz") and "does not exist" in error(
        train="gone.npz")
    message = error(train="b.npz", test="c.npz")
    assert "test labels must be in [0, 3)" in message and "data.npz.test" in message
    assert "(n, height, width)" in error(train="d.npz")
    assert "give data.npz.test or data.test_split" in error(train="b.npz")


# ---------------------------------------------------------------- TFRecord


def write_records(path, images, labels, key="image", encode=True):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image, label in zip(images, labels):
            blob = tf.io.encode_png(image).numpy() if encode else image.tobytes()
            feature = {key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[blob])),
                       "label": tf.train.Feature(int64_list=tf.train.Int64List(
                           value=[int(label)]))}
            writer.write(tf.train.Example(features=tf.train.Features(
                feature=feature)).SerializeToString())


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("records_job")
    images = [pixels(i % 3, i, size=10) for i in range(15)]
    write_records(root / "rec" / "train-0.tfrecord", images[:6], [i % 3 for i in range(6)])
    write_records(root / "rec" / "train-1.tfrecord", images[6:12], [i % 3 for i in range(6)])
    write_records(root / "rec" / "test.tfrecord", images[12:], [0, 1, 2])
    return root, np.stack(images)


def test_tfrecord_scanned_in_memory(records):
    root, images = records
    logs = []
    data = load(DataSpec(tfrecord={"train": "rec/train-*.tfrecord",
                                   "test": "rec/test.tfrecord"}), root, logs=logs)
    assert any("scanned the labels" in line and "3 classes" in line for line in logs)
    assert data.counts == {"train": 12, "validation": 0, "test": 3}
    assert data.input_shape == (10, 10, 3) and data.num_classes == 3
    np.testing.assert_allclose(data.arrays["train"][0] * 255, images[:12], atol=1e-3)
    np.testing.assert_array_equal(data.arrays["test"][1], [0, 1, 2])
    resized = load(DataSpec(tfrecord={"train": ["rec/train-0.tfrecord"]}, image_size=[5, 5],
                            test_split=0.5), root)
    assert resized.input_shape == (5, 5, 3) and resized.counts["test"] == 3


def test_tfrecord_streamed_with_num_classes(records):
    root, images = records
    logs = []
    data = load(DataSpec(tfrecord={"train": "rec/train-*.tfrecord", "test": "rec/test.tfrecord",
                                   "num_classes": 3}, batch_size=4), root, logs=logs)
    assert data.arrays is None and data.counts["train"] is None
    assert not any("scanned" in line for line in logs)
    x, y = batches(data.test)
    np.testing.assert_allclose(x * 255, images[12:], atol=1e-3)
    assert sorted(batches(data.train)[1].tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    assert data.sample(5).shape == (5, 10, 10, 3)
    assert "(3 classes; ? train / ? test images)" in data.description


def test_tfrecord_raw_bytes(tmp_path):
    images = [np.full((4, 4, 1), 10 * i, np.uint8) for i in range(6)]
    write_records(tmp_path / "raw.tfrecord", images, [0, 1] * 3, key="pixels", encode=False)
    data = load(DataSpec(tfrecord={"train": "raw.tfrecord", "image_key": "pixels",
                                   "image_shape": [4, 4, 1]}, validation_split=0.5, scale=1.0),
                tmp_path)
    assert data.input_shape == (4, 4, 1) and data.counts["validation"] == 3
    assert sorted(np.concatenate([data.arrays[s][0][:, 0, 0, 0] for s in ("train", "test")])
                  .tolist()) == [0, 10, 20, 30, 40, 50]


def test_tfrecord_errors(records, tmp_path):
    root, _ = records

    def error(**tfrecord):
        with pytest.raises(ValueError) as info:
            load(DataSpec(tfrecord=tfrecord, test_split=0.5), root)
        return str(info.value)

    assert "data.tfrecord.train: 'rec/none-*.tfrecord' matches no file" in error(
        train="rec/none-*.tfrecord")
    assert "data.tfrecord.image_key 'img' is not a feature" in error(
        train="rec/test.tfrecord", image_key="img")
    assert "data.tfrecord.image_shape [2, 2, 1] is 4 bytes" in error(
        train="rec/test.tfrecord", image_shape=[2, 2, 1])
    streamed = load(DataSpec(tfrecord={"train": "rec/test.tfrecord",
                                       "test": "rec/test.tfrecord", "num_classes": 2}), root)
    with pytest.raises(tf.errors.InvalidArgumentError, match="data.tfrecord.test"):
        batches(streamed.test)


# ---------------------------------------------------------------- TFDS and builtin


def test_tfds_missing_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ValueError, match="pip install tensorflow-datasets"):
        load(DataSpec(tfds={"name": "mnist", "data_dir": str(tmp_path)}), tmp_path)


def test_tfds_through_its_builder(monkeypatch, tmp_path):
    """The calls made to tensorflow_datasets, against a stand-in module."""
    images = np.arange(10 * 6 * 6).reshape(10, 6, 6, 1).astype(np.uint8)
    calls = []

    class Builder:
        info = types.SimpleNamespace(
            version="1.0.0",
            features={"image": types.SimpleNamespace(shape=(6, 6, 1)),
                      "label": types.SimpleNamespace(num_classes=2, names=["no", "yes"])},
            splits={"train": types.SimpleNamespace(num_examples=8),
                    "test": types.SimpleNamespace(num_examples=2)})

        def as_dataset(self, split, shuffle_files):
            part = slice(0, 8) if split == "train" else slice(8, 10)
            return tf.data.Dataset.from_tensor_slices(
                {"image": images[part], "label": np.arange(10)[part] % 2})

    def builder(name, data_dir):
        calls.append((name, data_dir))
        return Builder()

    monkeypatch.setitem(sys.modules, "tensorflow_datasets",
                        types.SimpleNamespace(builder=builder))
    os.makedirs(tmp_path / "job" / "tfds")
    data = load(DataSpec(tfds={"name": "toy", "data_dir": "tfds"}, validation_split=0.25,
                         scale=1.0), tmp_path / "job")
    assert calls == [("toy", str(tmp_path / "job" / "tfds"))]
    assert data.counts == {"train": 6, "validation": 2, "test": 2}
    assert data.class_names == ["no", "yes"] and data.input_shape == (6, 6, 1)
    np.testing.assert_array_equal(data.arrays["test"][0], images[8:])


@pytest.mark.skipif(not os.path.isdir(FASHION), reason=f"{FASHION} is missing")
def test_builtin_fashion_mnist():
    data = load(DataSpec(builtin="fashion_mnist", data_dir=FASHION, train_samples=256,
                         test_samples=64), "/tmp")
    assert data.counts == {"train": 256, "validation": 0, "test": 64}
    assert data.input_shape == (28, 28, 1) and data.class_names[0] == "T-shirt/top"
    assert data.description == f"Fashion-MNIST ({FASHION}; 256 train / 64 test)"
    x = data.arrays["train"][0]
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1 and x.max() > 0.9


def test_builtin_mnist_from_the_keras_cache_only(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    spec = DataSpec(builtin="mnist")
    with pytest.raises(ValueError, match="data.allow_download"):
        load(spec, tmp_path)
    rng = np.random.default_rng(0)
    save_npz(tmp_path / "keras" / "datasets" / "mnist.npz",
             x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
             y_train=np.arange(30) % 10, x_test=np.zeros((10, 28, 28), np.uint8),
             y_test=np.arange(10))
    data = load(spec, tmp_path)
    assert data.description.startswith("MNIST digits (") and "Fashion" not in data.description
    assert data.counts == {"train": 30, "validation": 0, "test": 10}
    assert data.class_names == [str(i) for i in range(10)] and data.input_shape == (28, 28, 1)


# ---------------------------------------------------------------- import_object


def test_import_object_from_the_job_folder(job_dir, tmp_path_factory):
    function = sources.import_object("my_models:tiny_cnn", str(job_dir), "student.builder")
    assert function((8, 8, 1), 2).output_shape == (None, 2)
    sources.import_object("my_models:halve", str(job_dir), "teacher.input_fn")
    assert sys.path.count(str(job_dir)) == 1
    other = tmp_path_factory.mktemp("other_job")
    (other / "my_models.py").write_text("def tiny_cnn(input_shape, num_classes):\n"
                                        "    return 'other'\n")
    assert sources.import_object("my_models:tiny_cnn", str(other), "b")((1,), 1) == "other"
    (job_dir / "broken.py").write_text("import not_a_module_anywhere\n")

    def error(reference):
        with pytest.raises(ValueError) as info:
            sources.import_object(reference, str(job_dir), "student.builder")
        return str(info.value)

    assert "student.builder 'nowhere:f': no module 'nowhere' in the job folder" in error(
        "nowhere:f")
    assert "has no 'tiny_cn'; did you mean 'tiny_cnn'?" in error("my_models:tiny_cn")
    assert "my_models.CONSTANT is a int, not a function" in error("my_models:CONSTANT")
    assert "importing 'broken' failed" in error("broken:f")
    assert "must be 'module:function'" in error("my_models")


# ---------------------------------------------------------------- teachers


def small_model(input_shape, classes, activation=None, seed=0):
    return keras.Sequential([
        keras.Input(input_shape), keras.layers.Flatten(),
        keras.layers.Dense(classes, activation=activation,
                           kernel_initializer=keras.initializers.GlorotUniform(seed))])


def teacher_error(spec, job_dir, input_shape=(12, 12, 3), classes=3):
    with pytest.raises(ValueError) as info:
        sources.load_teacher(spec, str(job_dir), input_shape, classes, log=quiet)
    return str(info.value)


def test_teacher_from_keras_file_and_saved_model(tmp_path):
    model = small_model((12, 12, 3), 3)
    model.save(tmp_path / "t.keras")
    model.export(str(tmp_path / "exported"), verbose=False)
    x = np.random.default_rng(0).random((2, 12, 12, 3)).astype(np.float32)
    loaded = sources.load_teacher(TeacherSpec(path="t.keras"), str(tmp_path), (12, 12, 3), 3)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    logs = []
    saved = sources.load_teacher(TeacherSpec(path="exported"), str(tmp_path), (12, 12, 3), 3,
                                 log=logs.append)
    assert saved.name == "teacher" and any("inference only" in line for line in logs)
    np.testing.assert_allclose(saved(x), model(x), atol=1e-6)
    message = teacher_error(TeacherSpec(path="exported"), tmp_path, (10, 10, 3))
    assert "takes images of shape (12, 12, 3), but the data's are (10, 10, 3)" in message
    assert "teacher.preprocess" in message
    assert "teacher.preprocess" in teacher_error(TeacherSpec(path="t.keras"), tmp_path,
                                                 (10, 10, 3))
    assert "the data has 4 classes" in teacher_error(TeacherSpec(path="t.keras"), tmp_path,
                                                     classes=4)
    assert "teacher.path" in teacher_error(TeacherSpec(path="gone.keras"), tmp_path)
    (tmp_path / "t.txt").write_text("no")
    assert "is not a .keras/.h5" in teacher_error(TeacherSpec(path="t.txt"), tmp_path)
    os.makedirs(tmp_path / "folder")
    assert "without saved_model.pb" in teacher_error(TeacherSpec(path="folder"), tmp_path)


def test_teacher_application():
    teacher = sources.load_teacher(
        TeacherSpec(application="MobileNetV2", kwargs={"alpha": 0.35}), "/tmp", (32, 32, 3),
        3, log=quiet)
    assert teacher.output_shape == (None, 3)
    assert teacher.layers[-1].activation is keras.activations.linear  # logits
    assert "did you mean MobileNetV2?" in teacher_error(
        TeacherSpec(application="MobileNetv2"), "/tmp")


def test_teacher_builder_weights_preprocess_and_probabilities(job_dir):
    inner = sources.import_object("my_models:tiny_cnn", str(job_dir), "x")((8, 8, 3), 3)
    inner.save_weights(job_dir / "tiny.weights.h5")
    x = np.random.default_rng(1).random((2, 12, 12, 3)).astype(np.float32)
    spec = TeacherSpec(builder="my_models:tiny_cnn", weights="tiny.weights.h5",
                       preprocess={"resize": [8, 8], "scale": 2.0, "offset": -1.0})
    teacher = sources.load_teacher(spec, str(job_dir), (12, 12, 3), 3)
    assert teacher.name == "teacher" and teacher.input_shape == (None, 12, 12, 3)
    expected = inner(keras.layers.Resizing(8, 8)(x) * 2.0 - 1.0)
    np.testing.assert_allclose(teacher(x), expected, atol=1e-5)
    teacher.save(job_dir / "wrapped.keras")  # what a teacher stage saves and reloads
    reloaded = keras.models.load_model(job_dir / "wrapped.keras", compile=False)
    np.testing.assert_allclose(reloaded(x), expected, atol=1e-5)
    halved = sources.load_teacher(
        TeacherSpec(builder="my_models:tiny_cnn", weights="tiny.weights.h5",
                    input_fn="my_models:halve"), str(job_dir), (8, 8, 3), 3)
    np.testing.assert_allclose(halved(x[:, :8, :8]), inner(x[:, :8, :8] * 0.5), atol=1e-5)
    lambda_ = sources.load_teacher(
        TeacherSpec(builder="my_models:tiny_cnn", weights="tiny.weights.h5",
                    input_fn="my_models:tf_halve"), str(job_dir), (8, 8, 3), 3)
    np.testing.assert_allclose(lambda_(x[:, :8, :8]), inner(x[:, :8, :8] * 0.5), atol=1e-5)
    soft = TeacherSpec(builder="my_models:softmax_cnn", outputs="probabilities")
    teacher = sources.load_teacher(soft, str(job_dir), (8, 8, 3), 3)
    probabilities = teacher.layers[1](x[:, :8, :8])
    np.testing.assert_allclose(keras.ops.softmax(teacher(x[:, :8, :8])), probabilities,
                               atol=1e-5)
    message = teacher_error(TeacherSpec(builder="my_models:tiny_cnn", weights="no.h5"),
                            job_dir)
    assert "teacher.weights" in message and "does not exist" in message


# ---------------------------------------------------------------- students


def test_student_builder_seeded(job_dir):
    spec = StudentSpec(builder="my_models:tiny_cnn")
    a = sources.build_student(spec, str(job_dir), (8, 8, 1), 3, seed=1)
    b = sources.build_student(spec, str(job_dir), (8, 8, 1), 3, seed=1)
    c = sources.build_student(spec, str(job_dir), (8, 8, 1), 3, seed=2)
    assert a.output_shape == (None, 3)
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_student_path_builtin_preprocess(tmp_path):
    small_model((8, 8, 1), 3).save(tmp_path / "s.keras")
    loaded = sources.build_student(StudentSpec(path="s.keras"), str(tmp_path), (8, 8, 1), 3)
    assert loaded.output_shape == (None, 3)
    wrapped = sources.build_student(StudentSpec(builtin="cnn", preprocess={"resize": [8, 8]}),
                                    str(tmp_path), (12, 12, 1), 5)
    assert wrapped.name == "student" and wrapped.input_shape == (None, 12, 12, 1)
    assert wrapped.output_shape == (None, 5)


def test_student_errors(job_dir):
    def error(builder, kind=ValueError, classes=3):
        with pytest.raises(kind) as info:
            sources.build_student(StudentSpec(builder=builder), str(job_dir), (8, 8, 1),
                                  classes)
        return str(info.value)

    assert "import keras" in error("my_models:legacy", TypeError)
    assert "must return a keras.Model, got str" in error("my_models:not_a_model", TypeError)
    assert "no module 'nowhere'" in error("nowhere:f")
    small_model((8, 8, 1), 3).save(job_dir / "s.keras")
    with pytest.raises(ValueError, match="gives outputs of shape .3,. per image, but the "
                                         "data has 2 classes"):
        sources.build_student(StudentSpec(path="s.keras"), str(job_dir), (8, 8, 1), 2)
    with pytest.raises(ValueError, match="student.path .* does not exist"):
        sources.build_student(StudentSpec(path="gone.keras"), str(job_dir), (8, 8, 1), 2)
    with pytest.raises(ValueError, match=r"takes images of shape \(8, 8, 1\), but the data's "
                                         r"are \(6, 6, 1\)\. .*student.preprocess"):
        sources.build_student(StudentSpec(path="s.keras"), str(job_dir), (6, 6, 1), 3)
