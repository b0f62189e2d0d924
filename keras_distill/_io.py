"""Atomic file writes: a reader never sees a partial file, a failure leaves the old one.

Every file keras_distill writes (weights, ``.tflite`` files, reports, plots,
sensitivity results) goes through here.
"""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path, suffix=".tmp"):
    """Yields a temporary path beside ``path``, moved onto it if the block succeeds.

    Args:
        path: The final file; its folder must exist.
        suffix: The temporary file's ending (some writers need one, e.g.
            Keras's ``.weights.h5``).

    Example:
    >>> import tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with atomic_path(target) as tmp:
    ...     _ = open(tmp, "w").write("done")
    >>> open(target).read()
    'done'
    """
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                   suffix=suffix)
    os.close(handle)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path, data):
    """Writes ``data`` (bytes or text) to ``path`` atomically, synced to disk.

    Example:
    >>> import tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "b.bin")
    >>> atomic_write(target, b"\\x00\\x01"); os.path.getsize(target)
    2
    """
    mode = "wb" if isinstance(data, (bytes, bytearray)) else "w"
    with atomic_path(path) as tmp:
        with open(tmp, mode) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
