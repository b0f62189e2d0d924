"""The tf_keras Distiller on 2 workers: ``tf.distribute.MultiWorkerMirroredStrategy``.

Each worker is a python process (tests/_mwms_worker.py) on 127.0.0.1 with its
``TF_CONFIG`` and one CPU device, so 2 replicas in sync; the reference is the
same run in one process with the same global batch (32) and initial weights.
Checked: both workers log the 1-process losses epoch by epoch (with a teacher
built outside ``strategy.scope()``, which ``compile`` clones in, and with
``fit(cache_teacher=True)``; then, in the same processes, fresh models on a
``tf.data`` dataset with ``fit(cache_teacher=DiskCache(dir))``, a directory
per worker), the user's teacher stays untouched; and
``BackupAndRestore`` fault tolerance: one worker SIGKILLed after the first
epoch's backup, the other failing on its collective, both restarted, training
resumes at the second epoch with the uninterrupted losses, and keras_distill's
NaN guard snapshots the restored weights, not the fresh ones.
"""

import json
import os
import sys

import numpy as np
import pytest

from _multiprocess import child_env, free_ports, read_json, report, run_workers

pytestmark = pytest.mark.multiprocess

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_mwms_worker.py")
EPOCHS = 3
LOSSES = ("loss", "distillation_loss", "student_loss")
TOLERANCE = 1e-6
TIMEOUT = 150  # seconds, for each launch (about 20 s when the machine is idle)
GRACE = 30  # seconds a worker has to fail by itself once its peer is dead


def _env(tf_config=None):
    """A worker's environment: TensorFlow backend, quiet, CPU only."""
    return child_env(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
                     CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
                     TF_CONFIG=tf_config)


def _process(directory, name, flags=(), tf_config=None):
    """The argv, environment and result path of one process of a launch."""
    out = str(directory / f"{name}.json")
    argv = [sys.executable, WORKER, "--out", out, "--epochs", str(EPOCHS), *flags]
    return argv, _env(tf_config), out


def _cluster(directory, name, flags=(), extra=None):
    """The processes of 2 workers on free loopback ports; ``extra`` maps a
    worker's index to more flags for it alone."""
    ports = free_ports(2)
    return [_process(directory, f"{name}_{index}",
                     [*flags, *(extra or {}).get(index, ())],
                     json.dumps({
                         "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                         "task": {"type": "worker", "index": index}}))
            for index in range(2)]


def _launch(processes, grace=None):
    """Runs the processes together; returns their results and JSON outputs."""
    argv, envs, outs = zip(*processes)
    results = run_workers(list(argv), list(envs), timeout=TIMEOUT, grace=grace)
    return results, [read_json(path) for path in outs]


def _check_ok(results, outputs):
    """Every process exited 0 and wrote a result without an error."""
    for result, output in zip(results, outputs):
        assert result.returncode == 0 and output and "error" not in output, (
            report(results) + "\n" + json.dumps((output or {}).get("error"))[:3000])


def _max_diff(a, b):
    """The largest absolute difference between two lists of weight arrays."""
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(a, b, strict=True))


def _assert_losses(history, reference, first_epoch=0):
    """``history``'s losses equal the reference's from ``first_epoch`` on."""
    for key in LOSSES:
        got = np.asarray(history[key])
        want = np.asarray(reference["history"][key][first_epoch:first_epoch + len(got)])
        assert got.shape == want.shape and np.allclose(got, want, rtol=0,
                                                       atol=TOLERANCE), (key, got, want)


def _reference(results, outputs):
    """The 1-process run's output (the last process of a launch), checked."""
    _check_ok(results[-1:], outputs[-1:])
    assert outputs[-1]["replicas"] == 1
    return outputs[-1]


def _check_worker(output, reference, first_epoch=0):
    """A worker's fit: the 1-process losses and final weights, the user's
    teacher (built outside the scope) swapped for an in-scope copy and
    untouched, ``cache_teacher=True`` over all 256 samples (tf_keras's
    ``predict`` all-gathers across workers)."""
    assert output["replicas"] == 2
    assert output["history_epochs"] == list(range(first_epoch, EPOCHS))
    _assert_losses(output["history"], reference, first_epoch)
    assert _max_diff(output["student_after_fit"], reference["student_after_fit"]) < 1e-5
    assert output["teacher_unchanged"]
    assert output["teacher_swapped"]
    assert output["teacher_cache_samples"] == 256


def test_two_workers_match_one_process_and_resume_after_a_kill(tmp_path):
    """2 workers log the 1-process losses; one is SIGKILLed after epoch 1's
    backup; restarted, both resume at epoch 2 with the uninterrupted losses
    and the NaN guard keeps the restored state; then a disk cache (one
    directory a worker) of a tf.data dataset trains the same 3 epochs.
    One test: each launch of TensorFlow workers costs ~20 s."""
    flags = ["--backup-dir", str(tmp_path / "backup"), "--teacher-outside",
             "--cache-teacher"]
    # Phase 1: worker 1 SIGKILLs itself at the end of epoch 0, after the
    # backup; worker 0 fails in its next collective (or is killed after
    # GRACE). The 1-process reference runs meanwhile.
    results, outputs = _launch(
        _cluster(tmp_path, "phase1", flags, extra={1: ["--kill-after-first-epoch"]})
        + [_process(tmp_path, "single")], grace=GRACE)
    reference = _reference(results, outputs)
    killed = outputs[1]
    assert results[1].returncode == -9 and killed, report(results)
    assert killed["killed_after_epoch"] == 0
    for key in LOSSES:
        assert abs(killed["logs_before_kill"][key]
                   - reference["history"][key][0]) <= TOLERANCE
    assert results[0].returncode != 0, report(results)
    assert os.listdir(tmp_path / "backup"), "no backup was written"

    # Phase 2: both restarted with the same backup_dir resume at epoch 1.
    disk = {i: ["--disk-cache", str(tmp_path / f"disk-{i}")] for i in range(2)}
    results, outputs = _launch(_cluster(tmp_path, "phase2", flags, extra=disk))
    _check_ok(results, outputs)
    for output in outputs:
        _check_worker(output, reference, first_epoch=1)
        assert output["epoch_begins"] == [1, 2]
        assert output["iterations_at_train_begin"] == 8
        assert output["optimizer_iterations"] == 24
        # The NaN guard's first snapshot is of the restored state (the
        # weights at the kill, the optimizer's too), not of fresh weights.
        guard = output["guard_at_train_begin"]
        assert guard["matches_state"]
        assert _max_diff(guard["student"], output["student_at_train_begin"]) == 0
        assert _max_diff(guard["student"], killed["student_at_kill"]) <= TOLERANCE
        assert _max_diff(guard["student"], output["student_before_fit"]) > 1e-3
        # The disk cache: written from the whole dataset each worker
        # iterates (256 samples, one shard), streamed and split by the
        # strategy (auto-shard policy DATA) into the same global batches.
        on_disk = output["disk_cache"]
        assert on_disk["history_epochs"] == list(range(EPOCHS))
        _assert_losses(on_disk["history"], reference)
        assert _max_diff(on_disk["student_after_fit"], reference["student_after_fit"]) < 1e-5
        assert on_disk["teacher_unchanged"]
        assert (on_disk["teacher_cache_samples"], on_disk["teacher_cache_shards"]) == (256, 1)
    for index in range(2):
        assert (tmp_path / f"disk-{index}" / "manifest.json").is_file()
