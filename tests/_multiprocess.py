"""Launching multi-process tests: N worker processes on 127.0.0.1.

Small and backend-neutral, shared by the multi-worker tests (tf.distribute,
JAX). A test picks free loopback ports (`free_ports`), starts one python
process per worker with its own argv and environment (`run_workers`, every
process bounded by a timeout, its whole process group killed when it hangs)
and reads back the JSON each worker wrote (`read_json`). `report` formats
the outcome for an assertion message.

Example:
>>> import sys
>>> results = run_workers([[sys.executable, "-c", "print(6 * 7)"]], timeout=60)
>>> results[0].returncode, results[0].stdout.strip(), results[0].killed
(0, '42', False)
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The workers' problem: 256 samples of 8 features, 3 classes (`make_data`).
N, FEATURES, CLASSES = 256, 8, 3


@dataclasses.dataclass
class WorkerResult:
    """How one worker process ended (like ``subprocess.CompletedProcess``).

    ``returncode`` is negative for a signal (-9: SIGKILL); ``killed`` says
    that the launcher killed it (timeout or ``grace`` ran out); ``seconds``
    is its wall time from launch.
    """

    args: list
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    killed: bool


def free_ports(n):
    """``n`` distinct TCP ports free on 127.0.0.1 just now.

    The sockets are bound together, then closed, so the ports differ; another
    process could still take one before a worker binds it (bind them soon).

    Example:
    >>> ports = free_ports(3)
    >>> len(set(ports)), all(1024 <= p < 65536 for p in ports)
    (3, True)
    """
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def child_env(**overrides):
    """``os.environ`` for a worker: the repository root first on
    ``PYTHONPATH``, ``TF_CONFIG`` removed, then ``overrides`` (a value of
    ``None`` removes the variable).

    Example:
    >>> env = child_env(KERAS_BACKEND="jax", TF_CONFIG="{}", HOME=None)
    >>> env["KERAS_BACKEND"], env["TF_CONFIG"], "HOME" in env
    ('jax', '{}', False)
    >>> env["PYTHONPATH"].split(os.pathsep)[0] == ROOT
    True
    """
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def _kill(process):
    """SIGKILLs ``process``'s process group (its own session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_workers(argv_per_worker, env_per_worker=None, timeout=120, grace=None,
                cwd=ROOT):
    """Runs one process per argv, all at once; returns a `WorkerResult` each.

    Args:
        argv_per_worker: The command of each worker (a list of strings,
            e.g. ``[sys.executable, "tests/_worker.py", "--index", "0"]``).
        env_per_worker: Its environment each (default: `child_env()`).
        timeout: Seconds from launch after which a worker still running is
            killed (with its process group).
        grace: If set, once a worker has exited with a nonzero code, the
            others still running get ``grace`` more seconds before they are
            killed: a peer blocked in a collective on a dead worker may
            otherwise hang until ``timeout``.
        cwd: The working directory (default: the repository root).

    Output goes to temporary files, not pipes, so a chatty worker never
    blocks; ``stdout`` and ``stderr`` hold it in full.
    """
    if env_per_worker is None:
        env_per_worker = [child_env() for _ in argv_per_worker]
    if len(env_per_worker) != len(argv_per_worker):
        raise ValueError("one environment per worker")
    start = time.monotonic()
    deadline = start + timeout
    procs, outs, ended, killed = [], [], {}, set()
    try:
        for argv, env in zip(argv_per_worker, env_per_worker):
            out = (tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+"))
            outs.append(out)
            procs.append(subprocess.Popen(
                [str(a) for a in argv], env=env, cwd=cwd, stdout=out[0],
                stderr=out[1], stdin=subprocess.DEVNULL, text=True,
                start_new_session=True))
        while len(ended) < len(procs):
            now = time.monotonic()
            for i, p in enumerate(procs):
                if i not in ended and p.poll() is not None:
                    ended[i] = now - start
                    if grace is not None and p.returncode != 0:
                        deadline = min(deadline, now + grace)
            if now >= deadline:
                for i, p in enumerate(procs):
                    if i not in ended:
                        _kill(p)
                        killed.add(i)
                        p.wait()
                        ended[i] = time.monotonic() - start
                break
            time.sleep(0.2)
    finally:
        for i, p in enumerate(procs):  # an exception (e.g. Ctrl-C) above
            if p.poll() is None:
                _kill(p)
                p.wait()
    results = []
    for i, (argv, p, (out, err)) in enumerate(zip(argv_per_worker, procs, outs)):
        out.seek(0)
        err.seek(0)
        results.append(WorkerResult(
            args=[str(a) for a in argv], returncode=p.returncode,
            stdout=out.read(), stderr=err.read(),
            seconds=round(ended.get(i, time.monotonic() - start), 1),
            killed=i in killed))
        out.close()
        err.close()
    return results


def read_json(path):
    """The JSON object in ``path``, or ``None`` if the file is missing or
    incomplete (a worker killed while writing it).

    Example:
    >>> read_json(os.path.join(tempfile.gettempdir(), "no such file.json")) is None
    True
    """
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path, obj):
    """Writes ``obj`` to ``path`` atomically (a worker may be killed).

    Example:
    >>> path = os.path.join(tempfile.mkdtemp(), "r.json")
    >>> write_json(path, {"loss": [0.5]}); read_json(path)
    {'loss': [0.5]}
    """
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def report(results):
    """Each worker's exit code, wall time and the tail of its stderr: for
    assertion messages.

    Example:
    >>> print(report([WorkerResult(["python", "w.py"], -9, "", "", 3.0, True)]))
    worker 0: exit -9 (killed by the launcher) after 3.0 s: python w.py
    """
    lines = []
    for i, r in enumerate(results):
        note = " (killed by the launcher)" if r.killed else ""
        lines.append(f"worker {i}: exit {r.returncode}{note} after {r.seconds} s: "
                     + " ".join(r.args))
        tail = "\n".join(r.stderr.strip().splitlines()[-15:])
        if tail:
            lines.append("  " + tail.replace("\n", "\n  "))
    return "\n".join(lines)


# --------------------------------------------------- the workers' problem
def make_data():
    """256 samples of 8 features and their labels, 3 classes, from seed 0
    (the scale-out probe's set-up, bench/probes/scaleout/).

    Example:
    >>> x, y = make_data()
    >>> x.shape, sorted(set(y.tolist()))
    ((256, 8), [0, 1, 2])
    """
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, FEATURES)).astype("float32")
    w = rng.normal(size=(FEATURES, CLASSES)).astype("float32")
    y = np.argmax(x @ w + 0.5 * rng.normal(size=(N, CLASSES)), axis=1)
    return x, y.astype("int32")


def fixed_weights(model, seed):
    """Weights for ``model`` drawn from ``seed`` (the same in every process
    and on every Keras flavour), for ``model.set_weights``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [(0.5 * rng.normal(size=w.shape)).astype("float32")
            for w in model.get_weights()]
