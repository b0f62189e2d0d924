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

`process_slice` cuts in-memory data for multi-process training (Keras 3
``keras.distribution`` with ``auto_shard_dataset=False``): each process
gets its share of every global batch.
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


def _whole(value, argument):
    """``value`` as a non-negative or positive int, else a ``ValueError``."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"`{argument}` must be an integer, got {value!r} of type "
            f"{type(value).__name__}."
        )
    return int(value)


def _process_defaults(process_id, num_processes):
    if process_id is not None and num_processes is not None:
        return process_id, num_processes
    import keras

    if keras.backend.backend() == "jax":
        import jax

        found = jax.process_index(), jax.process_count()
    else:  # keras.distribution spans processes on JAX only
        found = 0, 1
    return (found[0] if process_id is None else process_id,
            found[1] if num_processes is None else num_processes)


def process_slice(arrays, global_batch_size, process_id=None,
                  num_processes=None):
    """This process's share of every global batch of in-memory data.

    For multi-process data-parallel training with Keras 3's
    ``keras.distribution`` (JAX) and ``auto_shard_dataset=False``, where
    each process must feed its own part of each global batch: with ``G =
    global_batch_size`` and ``P = num_processes``, process ``i`` gets rows
    ``k*G + i*G/P`` to ``k*G + (i+1)*G/P - 1`` of every batch ``k``, in
    order. Fit each process on its share with ``batch_size=G // P`` (the
    global batch divided by the processes) and ``shuffle=False`` to
    reproduce a one-process run on batches of ``G`` exactly (with
    ``shuffle=True`` each process shuffles its own share). A contiguous
    half of the arrays would not give the same global batches. A last,
    partial global batch is split the same way.

    With a ``tf.data.Dataset`` none of this is needed: batch it by the
    global batch and keep ``auto_shard_dataset=True``.

    Args:
        arrays: An array, or a tuple/list/dict of arrays of one length
            (e.g. ``(x, y)``).
        global_batch_size: The batch size of a one-process run, summed
            over the processes; divisible by ``num_processes``.
        process_id: This process's index, ``0 <= process_id <
            num_processes``; by default ``jax.process_index()`` on JAX
            (after ``keras.distribution.initialize``), else 0.
        num_processes: The number of processes; by default
            ``jax.process_count()`` on JAX, else 1.

    Returns:
        ``arrays``' structure with numpy arrays of this process's rows.

    Raises:
        ValueError: An argument is not an integer or out of range,
            ``global_batch_size`` is not divisible by ``num_processes``, the
            arrays differ in length, or the last partial batch cannot be
            split evenly; the message names the argument.

    Example:
    >>> x = np.arange(20).reshape(10, 2)
    >>> y = np.arange(10)  # global batches 0-3, 4-7 and the last, 8-9
    >>> xs, ys = process_slice((x, y), global_batch_size=4, process_id=1,
    ...                        num_processes=2)
    >>> xs.shape, ys.tolist()  # fit it with batch_size=4 // 2
    ((5, 2), [2, 3, 6, 7, 9])
    >>> process_slice(y, 4, process_id=0, num_processes=2).tolist()
    [0, 1, 4, 5, 8]
    >>> process_slice(np.arange(8), 3, process_id=0, num_processes=2)
    Traceback (most recent call last):
    ...
    ValueError: `global_batch_size`=3 is not divisible by `num_processes`=2: ...
    """
    from keras_distill._arrays import leaves, map_arrays, samples

    process_id, num_processes = _process_defaults(process_id, num_processes)
    num_processes = _whole(num_processes, "num_processes")
    process_id = _whole(process_id, "process_id")
    global_batch_size = _whole(global_batch_size, "global_batch_size")
    if num_processes < 1:
        raise ValueError(
            f"`num_processes` must be at least 1, got {num_processes}.")
    if not 0 <= process_id < num_processes:
        raise ValueError(
            f"`process_id`={process_id} is not in [0, {num_processes}) "
            f"(`num_processes`={num_processes}): pass this process's index, "
            "as given to `keras.distribution.initialize`."
        )
    if global_batch_size < 1:
        raise ValueError(
            f"`global_batch_size` must be a positive integer, got "
            f"{global_batch_size}.")
    if global_batch_size % num_processes:
        raise ValueError(
            f"`global_batch_size`={global_batch_size} is not divisible by "
            f"`num_processes`={num_processes}: every process must feed the "
            "same number of rows per step. Pick a global batch that is a "
            f"multiple of {num_processes}."
        )
    found = leaves(arrays)
    if not found or any(not hasattr(a, "shape") or not np.ndim(a)
                        for a in found):
        raise ValueError(
            "`arrays` must be an array or a tuple/list/dict of arrays with a "
            f"leading sample axis, got {type(arrays).__name__}."
        )
    n = samples(found[0])
    lengths = sorted({samples(a) for a in found})
    if len(lengths) > 1:
        raise ValueError(
            f"`arrays` hold different numbers of samples ({lengths}): give "
            "one entry per sample in every array."
        )
    local = global_batch_size // num_processes
    rest = n % global_batch_size
    if rest % num_processes:
        raise ValueError(
            f"`arrays` hold {n} samples: the last global batch of {rest} "
            f"cannot be split evenly over {num_processes} processes. Drop "
            f"or add samples to make the count a multiple of {num_processes}"
            f" (e.g. arrays[:{n - rest % num_processes}])."
        )
    index = np.arange(n - rest).reshape(-1, global_batch_size)[
        :, process_id * local:(process_id + 1) * local].ravel()
    share = rest // num_processes
    index = np.concatenate([index, np.arange(
        n - rest + process_id * share, n - rest + (process_id + 1) * share)])
    return map_arrays(lambda a: np.asarray(a)[index], arrays)
