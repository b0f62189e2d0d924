"""Atomic file writes: a reader never sees a partial file, a failure leaves the old one.

Every file keras_distill writes (weights, ``.tflite`` files, reports, plots,
sensitivity results) goes through here. The file gets the permissions a plain
``open()`` would give it (``0644`` under the usual umask ``022``), not the
``0600`` of a temporary file; a temporary file names the process that writes
it, so one left by a killed process can be told apart and removed
(`remove_stale_temps`).
"""

import contextlib
import hashlib
import json
import os
import re
import stat
import tempfile

# ".<final name>.kdtmp-<pid>-<random><suffix>": see `remove_stale_temps`.
TEMP_TAG = ".kdtmp-"
_STALE_TEMP = re.compile(r"^\..+\.kdtmp-(\d+)-")


def current_umask():
    """The process's umask, read without changing it where the system allows.

    Example:
    >>> old = os.umask(0o027); current_umask() == 0o027; _ = os.umask(old)
    True
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no read-only call elsewhere: set and put back
    os.umask(mask)
    return mask


def pid_alive(pid):
    """Whether process ``pid`` runs on this machine (``False`` for ``None``).

    Example:
    >>> pid_alive(os.getpid()), pid_alive(None)
    (True, False)
    """
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temps(folder):
    """Removes temporary files (and links) `atomic_path` left in ``folder``
    when its process was killed; a live process's are left alone.

    Returns:
        The paths removed.

    Example:
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, ".a.txt.kdtmp-999999999-x.tmp"), "w")
    >>> [os.path.basename(p) for p in remove_stale_temps(d)]
    ['.a.txt.kdtmp-999999999-x.tmp']
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _STALE_TEMP.match(name)
        if match and not pid_alive(int(match.group(1))):
            path = os.path.join(folder, name)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return removed


def read_json(path):
    """The JSON object (a dict) in ``path``, or ``None`` if the file is
    missing, unreadable or holds something else.

    Example:
    >>> read_json(os.path.join(tempfile.mkdtemp(), "missing.json")) is None
    True
    """
    try:
        with open(path) as handle:
            found = json.load(handle)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def probe_folder(folder):
    """Creates ``folder`` if needed and writes (then removes) a file in it;
    raises the ``OSError`` if either fails. Works as root too, where
    ``os.access`` always says yes.

    Example:
    >>> probe_folder(os.path.join(tempfile.mkdtemp(), "new", "sub"))
    """
    os.makedirs(folder, exist_ok=True)
    handle, probe = tempfile.mkstemp(dir=folder, prefix=".keras_distill-check-")
    os.close(handle)
    os.remove(probe)


def _final_mode(path):
    """The mode ``open(path, "w")`` would leave: the old file's, else 0666 - umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


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
    >>> oct(os.stat(target).st_mode & 0o666) == oct(0o666 & ~current_umask())
    True
    """
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(
        dir=folder, prefix=f".{os.path.basename(path)}{TEMP_TAG}{os.getpid()}-",
        suffix=suffix)
    os.close(handle)
    try:
        yield tmp
        os.chmod(tmp, _final_mode(path))
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


def file_sha256(path):
    """The SHA-256 (hex) of a file's bytes, read in 1 MiB blocks.

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "f")
    >>> _ = open(path, "wb").write(b"abc")
    >>> file_sha256(path)[:12]
    'ba7816bf8f01'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
