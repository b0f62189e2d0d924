"""One folder per run, and one name that always shows the last complete run.

A job (the ``keras-distill`` main job; later ``keras-distill run JOB.yaml``)
writes into a fresh folder of its own beside the output name the user gave,
``<parent>/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ... when two start in
the same second). While it runs the folder holds a ``.incomplete`` marker
(process id and host); when the job succeeds, ``run.json`` is written last,
the marker removed, and the output name is switched to the new folder in one
step: a symbolic link made under a temporary name and ``os.replace``-d onto
it. So the output name always shows one complete run, a killed run never
touches it, and two runs at once never mix their files.

What happens to what is already there:

* the output name is a link (an earlier run), missing, or an empty folder:
  it becomes the link;
* a folder holding only files an earlier ``keras-distill`` wrote straight
  into it (``results.json``, ``results.md``, ``accuracy_vs_size.png``,
  ``*.tflite``, ``*.weights.h5``): moved aside to ``<name>.previous-<time>``
  when the new run completes (a log line says so), never deleted;
* a folder with anything else in it, or a file: refused at the start, with
  the folder named and what to do;
* a run folder left unfinished by a stopped process (marker, process gone):
  removed when the next run in the same parent starts (log line). A folder
  is complete only with ``run.json`` and without the marker (`is_complete`).

`stop_on_signals` turns Ctrl-C (SIGINT) and SIGTERM into an `Interrupted`
exception so that every ``finally`` (temporary files, the unfinished run
folder) runs before the process exits with ``128 + signal``.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import threading
import time

from keras_distill import _io

MARKER = ".incomplete"
RUN_FILE = "run.json"
_STAMP = "%Y%m%d-%H%M%S"
# What an earlier keras-distill wrote straight into --output-dir.
_KNOWN = r"(results\.json|results\.md|accuracy_vs_size\.png|.+\.tflite|.+\.weights\.h5)"
# ... and the hidden temporary files it left when stopped while writing one.
_OLD_LAYOUT = re.compile(rf"{_KNOWN}$|\.{_KNOWN}\..+$")


def check_writable(folder, argument):
    """Creates ``folder`` if needed and checks that a file can be written in it.

    Args:
        folder: The folder.
        argument: How the user gave it (e.g. ``"--cache-dir"``), for the message.

    Returns:
        ``folder``.

    Raises:
        ValueError: It cannot be created or written; the message names it.

    Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> check_writable(os.path.join(d, "new"), "--cache-dir") == os.path.join(d, "new")
    True
    >>> check_writable(os.path.join(__file__, "x"), "--cache-dir")
    Traceback (most recent call last):
    ...
    ValueError: --cache-dir '...' cannot be written (Not a directory): ...
    """
    try:
        _io.probe_folder(folder)
    except OSError as error:
        raise ValueError(
            f"{argument} {folder!r} cannot be written ({error.strerror or error}): "
            "choose a folder you can write to, or fix its permissions."
        ) from None
    return folder


def is_complete(folder):
    """Whether ``folder`` holds a run that finished (``run.json``, no marker).

    Example:
    >>> import tempfile
    >>> is_complete(tempfile.mkdtemp())
    False
    """
    return (os.path.isfile(os.path.join(folder, RUN_FILE))
            and not os.path.lexists(os.path.join(folder, MARKER)))


def current_run(output_dir):
    """The complete run folder ``output_dir`` shows, or ``None``.

    Example:
    >>> import tempfile
    >>> current_run(os.path.join(tempfile.mkdtemp(), "latest")) is None
    True
    """
    if not os.path.isdir(output_dir):
        return None
    folder = os.path.realpath(output_dir)
    return folder if is_complete(folder) else None


def remove_unfinished(parent, name, log=print):
    """Removes run folders ``<name>-<time>`` in ``parent`` whose process was
    stopped before they completed (marker present, process gone).

    Folders of live processes, of other hosts, complete ones and anything not
    made by `RunFolder` are left alone.

    Returns:
        The folders removed.

    Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp(); f = os.path.join(d, "main-20260101-000000")
    >>> os.mkdir(f); _ = open(os.path.join(f, MARKER), "w").write(
    ...     json.dumps({"pid": 999999999, "host": socket.gethostname()}))
    >>> remove_unfinished(d, "main", log=lambda m: None) == [f]
    True
    """
    pattern = re.compile(re.escape(name) + r"-\d{8}-\d{6}(-\d+)?$")
    removed = []
    try:
        entries = sorted(os.listdir(parent))
    except OSError:
        return removed
    for entry in entries:
        folder = os.path.join(parent, entry)
        if not pattern.match(entry) or os.path.islink(folder):
            continue
        info = _io.read_json(os.path.join(folder, MARKER))
        if (info is None or info.get("host") != socket.gethostname()
                or _io.pid_alive(info.get("pid"))):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
        log(f"run: removed {folder}, left unfinished by a stopped run "
            f"(process {info.get('pid')})")
    return removed


def _describe_file(path):
    with open(path, "rb") as handle:
        content = handle.read()
    return {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}


class RunFolder:
    """A fresh folder for one run; ``output_dir`` is switched to it on success.

    Args:
        output_dir: The name the user reads results at (e.g.
            ``runs/latest``); it becomes a link to the last complete run.
        name: The run folders' prefix (``"main"`` for the main job).
        log: Called with one line at a time.
        argument: How the user gave ``output_dir``, for messages.
        resumable: Keep the folder of a failed or stopped run (a job that
            can continue it with ``resume``) instead of removing it, and do
            not remove other unfinished folders at the start.
        resume: An unfinished (or complete) run folder to continue writing
            into instead of a fresh one; refused while its process runs.

    Attributes:
        path: The run's own folder (inside the ``with`` block).
        info: A dict added to ``run.json`` (e.g. the settings). ``run.json``
            also lists every file of the run with its size and SHA-256.

    Raises:
        ValueError: at the start: ``output_dir`` is a file, a folder with
            files of the user's, the current folder or one that holds it, or
            its parent cannot be written.

    Example:
    >>> import tempfile
    >>> parent = tempfile.mkdtemp(); out = os.path.join(parent, "latest")
    >>> with RunFolder(out, log=lambda m: None) as run:
    ...     _ = open(os.path.join(run.path, "result.txt"), "w").write("42")
    >>> open(os.path.join(out, "result.txt")).read(), is_complete(out)
    ('42', True)
    >>> os.path.islink(out) and os.readlink(out).startswith("main-")
    True
    """

    def __init__(self, output_dir, name="main", log=print, argument="output_dir",
                 resumable=False, resume=None):
        if not isinstance(output_dir, (str, os.PathLike)) or not os.fspath(output_dir):
            raise TypeError(f"`{argument}` must be a folder path, got {output_dir!r}.")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"`name` must be letters, digits, '_', '.' or '-', got {name!r}.")
        self.output_dir = os.path.abspath(os.fspath(output_dir))
        self.parent = os.path.dirname(self.output_dir)
        self.name = name
        self.log = log
        self.argument = argument
        self.path = None
        self.info = {}
        self._started = None
        self.resumable = bool(resumable or resume)
        self.resume = None if resume is None else os.path.abspath(os.fspath(resume))

    def _check_output(self):
        out, argument = self.output_dir, self.argument
        cwd = os.path.realpath(os.getcwd())
        if not os.path.islink(out) and (
                cwd == os.path.realpath(out)
                or cwd.startswith(os.path.realpath(out).rstrip(os.sep) + os.sep)):
            raise ValueError(f"{argument} {out!r} is the current folder or holds it: "
                             f"pass a new name such as {os.path.join(out, 'latest')!r}.")
        if os.path.islink(out) or not os.path.lexists(out):
            return
        if not os.path.isdir(out):
            raise ValueError(f"{argument} {out!r} is a file, not a folder: pass a folder "
                             "name (it becomes a link to the last complete run).")
        entries = os.listdir(out)
        if entries and not all(_OLD_LAYOUT.match(e) for e in entries):
            raise ValueError(
                f"{argument} {out!r} is a folder with other files in it (e.g. "
                f"{sorted(entries)[0]!r}). keras-distill writes each run to a folder of "
                f"its own beside it and makes {out!r} a link to the last complete run, "
                f"so it never replaces a folder of yours: pass another {argument}, "
                "or move that folder away.")
        if entries:
            self.log(f"run: {out} holds files an earlier keras-distill wrote into it; "
                     f"when this run completes they move to {out}.previous-<time> "
                     f"and {out} becomes a link to the new run")

    def __enter__(self):
        self._check_output()
        check_writable(self.parent, f"{self.argument} (its folder)")
        if not self.resumable:
            remove_unfinished(self.parent, self.name, log=self.log)
        _io.remove_stale_temps(self.parent)
        self._started = time.time()
        if self.resume:
            return self._reopen()
        stamp = time.strftime(_STAMP, time.localtime(self._started))
        for i in range(1, 1000):
            candidate = os.path.join(
                self.parent, f"{self.name}-{stamp}" + (f"-{i}" if i > 1 else ""))
            try:
                os.mkdir(candidate)  # atomic: two runs never get the same folder
            except FileExistsError:
                continue
            self.path = candidate
            break
        else:
            raise RuntimeError(f"no free run folder name for {self.name}-{stamp}")
        # O_EXCL and one write: the marker is there before anything else.
        fd = os.open(os.path.join(self.path, MARKER), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     0o666)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "started": self._started}))
        self.log(f"run: writing to {self.path}")
        return self

    def _reopen(self):
        folder = self.resume
        if not os.path.isdir(folder):
            raise ValueError(f"--resume {folder!r} is not a folder: give the run folder "
                             "a stopped run printed (e.g. runs/<name>-<time>).")
        marker = os.path.join(folder, MARKER)
        info = _io.read_json(marker) if os.path.lexists(marker) else None
        if info is None and not is_complete(folder):
            raise ValueError(f"--resume {folder!r} is not a keras-distill run folder "
                             f"(no {MARKER} or {RUN_FILE} in it).")
        if (info and info.get("host") == socket.gethostname()
                and info.get("pid") != os.getpid() and _io.pid_alive(info.get("pid"))):
            raise ValueError(f"--resume {folder!r}: process {info.get('pid')} is still "
                             "running it; wait for it or stop it first.")
        _io.atomic_write(marker, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                             "started": self._started}))
        self.path = folder
        self.log(f"run: resuming {self.path}")
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._commit()
            return False
        if self.resumable:
            self.log(f"run: kept the unfinished run {self.path}; continue it with "
                     f"--resume {self.path}")
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        self.log(f"run: removed the unfinished run folder {self.path}")
        return False

    def _commit(self):
        with _signals_held():
            self._write_record()
            os.remove(os.path.join(self.path, MARKER))
            self._switch()

    def _write_record(self):
        files = {}
        for root, _, names in os.walk(self.path):
            for n in names:
                full = os.path.join(root, n)
                if n != MARKER:
                    files[os.path.relpath(full, self.path)] = _describe_file(full)
        record = dict(self.info, status="complete", name=self.name, pid=os.getpid(),
                      host=socket.gethostname(), started=self._started,
                      finished=time.time(), files=files)
        _io.atomic_write(os.path.join(self.path, RUN_FILE),
                         json.dumps(record, indent=1, sort_keys=True))

    def _switch(self):
        out = self.output_dir
        if os.path.isdir(out) and not os.path.islink(out):
            entries = os.listdir(out)
            if not entries:
                os.rmdir(out)
            elif all(_OLD_LAYOUT.match(e) for e in entries):
                aside = f"{out}.previous-{time.strftime(_STAMP)}"
                os.rename(out, aside)
                self.log(f"run: moved the earlier files of {out} to {aside}")
        if os.path.lexists(out) and not os.path.islink(out):
            self.log(f"run: {out} is not a link (something made it meanwhile) and was "
                     f"left as it is; this run is complete in {self.path}")
            return
        link = os.path.join(self.parent, f".{os.path.basename(out)}{_io.TEMP_TAG}"
                            f"{os.getpid()}-link")
        with contextlib.suppress(FileNotFoundError):
            os.remove(link)
        os.symlink(os.path.relpath(self.path, self.parent), link)
        os.replace(link, out)


# What `stop_on_signals`' handler shares with `_signals_held` (handlers run
# in the main thread only, so no lock is needed).
_SIGNALS = {"fired": False, "held": 0, "pending": None}


@contextlib.contextmanager
def _signals_held():
    """Holds `stop_on_signals`' SIGINT/SIGTERM back during a short step that
    must not be cut in two (finishing a run); it is raised right after."""
    _SIGNALS["held"] += 1
    try:
        yield
    finally:
        _SIGNALS["held"] -= 1
    pending = _SIGNALS["pending"]
    if pending is not None and not _SIGNALS["held"]:
        _SIGNALS.update(pending=None, fired=True)
        raise Interrupted(pending)


class Interrupted(KeyboardInterrupt):
    """Raised by `stop_on_signals` when SIGINT or SIGTERM arrives.

    Attributes:
        signum: The signal's number; ``exit_code`` is ``128 + signum``.

    Example:
    >>> Interrupted(signal.SIGTERM).exit_code, str(Interrupted(signal.SIGINT))
    (143, 'SIGINT')
    """

    def __init__(self, signum):
        self.signum = int(signum)
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self):
        return 128 + self.signum


@contextlib.contextmanager
def stop_on_signals(signums=(signal.SIGINT, signal.SIGTERM)):
    """Within the block, SIGINT and SIGTERM raise `Interrupted` (once; a second
    signal while stopping is ignored), so ``finally`` blocks and context
    managers clean up. The previous handlers come back afterwards. Outside
    the main thread (where Python cannot set handlers) it does nothing.

    Example:
    >>> try:
    ...     with stop_on_signals():
    ...         os.kill(os.getpid(), signal.SIGTERM)
    ... except Interrupted as stop:
    ...     print(stop.exit_code)
    143
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _SIGNALS.update(fired=False, pending=None)

    def handler(signum, frame):
        if _SIGNALS["fired"]:
            return
        if _SIGNALS["held"]:
            _SIGNALS["pending"] = signum
            return
        _SIGNALS["fired"] = True
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
