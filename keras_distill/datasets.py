"""Real data, offline: Fashion-MNIST from the places it already is.

Looked up in this order:

1. ``path`` given by the user (a folder holding the four IDX files);
2. the Keras cache, ``$KERAS_HOME/datasets/fashion-mnist`` (by default
   ``~/.keras/datasets/fashion-mnist``), where ``keras.datasets`` puts it;
3. the Debian package ``dataset-fashion-mnist``:
   ``/usr/share/datasets/fashion-mnist``;
4. only if ``allow_download=True``: ``keras.datasets.fashion_mnist.load_data()``
   (needs internet).

The files may be gzipped (``*-ubyte.gz``) or not (``*-ubyte``).
"""

import gzip
import os

import numpy as np

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_HOW_TO_GET_IT = (
    "Get Fashion-MNIST with one of: `sudo apt-get install "
    "dataset-fashion-mnist` (Debian/Ubuntu, installs it under "
    f"{DEBIAN_DIR}); running `keras.datasets.fashion_mnist.load_data()` once "
    "on a machine with internet (fills the Keras cache); or downloading the "
    "four *-ubyte.gz files into a folder and passing it as `path=`."
)


def keras_cache_dir():
    """Returns the folder where ``keras.datasets`` caches Fashion-MNIST.

    Returns:
        ``$KERAS_HOME/datasets/fashion-mnist`` if ``KERAS_HOME`` is set, else
        ``~/.keras/datasets/fashion-mnist``.

    Example:
    >>> keras_cache_dir().endswith(os.path.join("datasets", "fashion-mnist"))
    True
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras"
    )
    return os.path.join(home, "datasets", "fashion-mnist")


def _find(folder, stem):
    for name in (stem + ".gz", stem):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def read_idx(path):
    """Reads one IDX file (the MNIST format), gzipped or not.

    Args:
        path: Path to an ``*-ubyte`` or ``*-ubyte.gz`` file.

    Returns:
        A ``uint8`` numpy array with the shape stored in the file.

    Raises:
        ValueError: The file is not a well-formed unsigned-byte IDX file.

    Example:
    >>> import tempfile
    >>> f = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> _ = open(f, "wb").write(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9]))
    >>> read_idx(f).tolist()
    [7, 9]
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"Cannot read IDX file {path!r}: {error}") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(
            f"{path!r} is not an unsigned-byte IDX file (bad magic number). "
            + _HOW_TO_GET_IT
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path!r} is truncated (incomplete IDX header).")
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    expected = int(np.prod(shape)) if shape else 0
    if len(data) - header != expected:
        raise ValueError(
            f"{path!r} holds {len(data) - header} bytes of data but its header "
            f"announces shape {shape} ({expected} bytes): the file is "
            "truncated or corrupt. " + _HOW_TO_GET_IT
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _load_folder(folder):
    paths = {key: _find(folder, stem) for key, stem in _FILES.items()}
    arrays = {key: read_idx(p) for key, p in paths.items()}
    if arrays["x_train"].shape[0] != arrays["y_train"].shape[0] or (
        arrays["x_test"].shape[0] != arrays["y_test"].shape[0]
    ):
        raise ValueError(
            f"Fashion-MNIST files in {folder!r} disagree: "
            f"{arrays['x_train'].shape[0]} train images vs "
            f"{arrays['y_train'].shape[0]} labels, "
            f"{arrays['x_test'].shape[0]} test images vs "
            f"{arrays['y_test'].shape[0]} labels."
        )
    return (
        (arrays["x_train"], arrays["y_train"]),
        (arrays["x_test"], arrays["y_test"]),
    )


def check_folder(path, argument="path"):
    """Raises ``FileNotFoundError`` unless ``path`` is a folder holding the four
    IDX files (plain or ``.gz``); the message names ``argument``.

    Only looks at the file names; `read_idx` checks the contents.

    Example:
    >>> import tempfile
    >>> check_folder(tempfile.mkdtemp(), "data_dir")
    Traceback (most recent call last):
    ...
    FileNotFoundError: `data_dir`='...' lacks train-images-idx3-ubyte, ...
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"`{argument}`={path!r} is not a folder. " + _HOW_TO_GET_IT)
    missing = [stem for stem in _FILES.values() if _find(path, stem) is None]
    if missing:
        raise FileNotFoundError(
            f"`{argument}`={path!r} lacks {', '.join(missing)} (plain or .gz). "
            + _HOW_TO_GET_IT)
    return path


def find_fashion_mnist(path=None):
    """Returns the first folder that holds all four Fashion-MNIST files.

    Args:
        path: Optional folder to look in first.

    Returns:
        The folder's path, or ``None`` when no known place has the files.

    Example:
    >>> found = find_fashion_mnist()
    >>> found is None or os.path.isdir(found)
    True
    """
    for folder in ([path] if path else []) + [keras_cache_dir(), DEBIAN_DIR]:
        if all(_find(folder, stem) for stem in _FILES.values()):
            return folder
    return None


def load_fashion_mnist(path=None, allow_download=True):
    """Loads Fashion-MNIST without the internet when it is on the machine.

    Args:
        path: Optional folder holding ``train-images-idx3-ubyte[.gz]``,
            ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``
            and ``t10k-labels-idx1-ubyte[.gz]``. If given, it must hold them.
        allow_download: If no local copy is found, fall back to
            ``keras.datasets.fashion_mnist.load_data()``, which downloads.

    Returns:
        ``((x_train, y_train), (x_test, y_test))`` as ``uint8`` arrays of
        shapes ``(60000, 28, 28)``, ``(60000,)``, ``(10000, 28, 28)``,
        ``(10000,)``, like ``keras.datasets.fashion_mnist.load_data()``.

    Raises:
        FileNotFoundError: ``path`` lacks a file, or no copy was found and
            downloading is not allowed or failed; the message says how to get
            the data.
        ValueError: A file is corrupt.

    Example:
    >>> if find_fashion_mnist():
    ...     (x, y), (xt, yt) = load_fashion_mnist(allow_download=False)
    ...     print(x.shape, xt.shape)
    ... else:
    ...     print((60000, 28, 28), (10000, 28, 28))
    (60000, 28, 28) (10000, 28, 28)
    """
    if path is not None:
        return _load_folder(check_folder(path))
    folder = find_fashion_mnist()
    if folder is not None:
        return _load_folder(folder)
    searched = f"{keras_cache_dir()} and {DEBIAN_DIR}"
    if not allow_download:
        raise FileNotFoundError(
            f"Fashion-MNIST was not found in {searched}, and downloading is "
            "off (allow_download=False). " + _HOW_TO_GET_IT
        )
    import keras

    try:
        return keras.datasets.fashion_mnist.load_data()
    except Exception as error:  # noqa: BLE001 - any download failure
        raise FileNotFoundError(
            f"Fashion-MNIST was not found in {searched}, and downloading it "
            f"failed ({type(error).__name__}: {error}). " + _HOW_TO_GET_IT
        ) from error
