"""The offline Fashion-MNIST loader."""

import gzip
import os

import numpy as np
import pytest

from keras_distill import datasets


def write_idx(path, array, compress):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    if compress:
        path += ".gz"
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        with open(path, "wb") as handle:
            handle.write(payload)
    return path


def make_folder(folder, compress=True, n_train=5, n_test=3):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28)),
        "y_train": rng.integers(0, 10, n_train),
        "x_test": rng.integers(0, 256, (n_test, 28, 28)),
        "y_test": rng.integers(0, 10, n_test),
    }
    os.makedirs(folder, exist_ok=True)
    for key, stem in datasets._FILES.items():
        write_idx(os.path.join(folder, stem), arrays[key], compress)
    return arrays


@pytest.fixture
def no_local_copies(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    monkeypatch.setattr(datasets, "DEBIAN_DIR", str(tmp_path / "no_debian"))


@pytest.mark.parametrize("compress", [True, False])
def test_reads_a_user_folder(tmp_path, compress):
    arrays = make_folder(str(tmp_path / "fm"), compress)
    (x, y), (xt, yt) = datasets.load_fashion_mnist(str(tmp_path / "fm"))
    np.testing.assert_array_equal(x, arrays["x_train"])
    np.testing.assert_array_equal(y, arrays["y_train"])
    np.testing.assert_array_equal(xt, arrays["x_test"])
    np.testing.assert_array_equal(yt, arrays["y_test"])
    assert x.dtype == np.uint8 and x.shape == (5, 28, 28)


def test_keras_cache_comes_before_debian(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    cached = make_folder(str(tmp_path / "kh" / "datasets" / "fashion-mnist"),
                         n_train=7)
    make_folder(str(tmp_path / "deb"), n_train=4)
    monkeypatch.setattr(datasets, "DEBIAN_DIR", str(tmp_path / "deb"))
    (x, _), _ = datasets.load_fashion_mnist(allow_download=False)
    np.testing.assert_array_equal(x, cached["x_train"])


def test_debian_package_is_used(tmp_path, monkeypatch, no_local_copies):
    deb = make_folder(str(tmp_path / "deb"), n_train=4)
    monkeypatch.setattr(datasets, "DEBIAN_DIR", str(tmp_path / "deb"))
    (x, _), _ = datasets.load_fashion_mnist(allow_download=False)
    np.testing.assert_array_equal(x, deb["x_train"])


def test_nothing_found_and_no_download_says_how_to_get_it(no_local_copies):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.load_fashion_mnist(allow_download=False)


def test_failed_download_says_how_to_get_it(no_local_copies, monkeypatch):
    import keras

    def offline():
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    with pytest.raises(FileNotFoundError, match="downloading it failed.*no network"):
        datasets.load_fashion_mnist()


def test_user_path_missing_files(tmp_path):
    make_folder(str(tmp_path / "fm"))
    os.remove(str(tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz"))
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        datasets.load_fashion_mnist(str(tmp_path / "fm"))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        datasets.load_fashion_mnist(str(tmp_path / "nowhere"))


def test_truncated_and_foreign_files_are_refused(tmp_path):
    make_folder(str(tmp_path / "fm"), compress=False)
    path = str(tmp_path / "fm" / "train-images-idx3-ubyte")
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[:-10])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        datasets.load_fashion_mnist(str(tmp_path / "fm"))
    with open(path, "wb") as handle:
        handle.write(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="bad magic number"):
        datasets.load_fashion_mnist(str(tmp_path / "fm"))


def test_mismatched_counts(tmp_path):
    make_folder(str(tmp_path / "fm"))
    write_idx(str(tmp_path / "fm" / "train-labels-idx1-ubyte"), np.zeros(2), True)
    with pytest.raises(ValueError, match="5 train images vs 2 labels"):
        datasets.load_fashion_mnist(str(tmp_path / "fm"))


@pytest.mark.skipif(not os.path.isdir(datasets.DEBIAN_DIR),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_debian_fashion_mnist():
    (x, y), (xt, yt) = datasets.load_fashion_mnist(datasets.DEBIAN_DIR)
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert sorted(np.unique(y)) == list(range(10))
    assert np.bincount(y).tolist() == [6000] * 10
    assert np.bincount(yt).tolist() == [1000] * 10
