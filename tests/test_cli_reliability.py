"""The main job under misuse and faults (issue #12, items 17 and 19-24).

Bad flags are refused before any training, naming the flag; each run writes
its own folder and ``--output-dir`` only ever shows a complete run (also when
runs are killed with SIGKILL at different stages); Ctrl-C and SIGTERM stop
cleanly; files honour the umask; the teacher cache is keyed on the data and
survives a corrupt file.
"""

import hashlib
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import keras_distill
from keras_distill import _io, cli, datasets, pipeline, report, runs

needs_data = pytest.mark.skipif(datasets.find_fashion_mnist() is None,
                                reason="Fashion-MNIST is not on this machine")
DATA_DIR = datasets.find_fashion_mnist()
TINY = ["--train-samples", "256", "--test-samples", "64", "--epochs", "1",  # [4:]: all
        "--teacher-epochs", "1", "--prune-epochs", "1", "--batch-size", "64",
        "--no-download"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(keras_distill.__file__)))


def quiet(message):
    pass


def main(tmp_path, *args):
    """``keras-distill`` in-process with a tiny job and folders under tmp_path."""
    return cli.main([*TINY, "--cache-dir", str(tmp_path / "cache"),
                     "--output-dir", str(tmp_path / "runs" / "latest"), *args])


# --- 17 and more: every bad flag refused at the start, naming it ------------

def _write_idx(folder, shape_train=(300, 28, 28), label_max=9):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, shape in (("train-images-idx3-ubyte", shape_train),
                        ("t10k-images-idx3-ubyte", (50, 28, 28)),
                        ("train-labels-idx1-ubyte", shape_train[:1]),
                        ("t10k-labels-idx1-ubyte", (50,))):
        high = label_max + 1 if "labels" in stem else 256
        data = rng.integers(0, high, size=shape).astype("uint8")
        header = bytes([0, 0, 8, len(shape)]) + b"".join(
            int(d).to_bytes(4, "big") for d in shape)
        with open(os.path.join(folder, stem), "wb") as handle:
            handle.write(header + data.tobytes())
    return str(folder)


BAD_FLAGS = {
    # id: (extra args, words the error must contain)
    "train_samples_below_batch_size": (["--train-samples", "100", "--batch-size", "128"],
                                       ["--train-samples", "--batch-size"]),
    "one_pruning_step": (["--train-samples", "128", "--batch-size", "128"],
                         ["--prune-epochs", "at least 2"]),
    "train_samples_zero": (["--train-samples", "0"], ["--train-samples", "leave the flag out"]),
    "test_samples_zero": (["--test-samples", "0"], ["--test-samples"]),
    "test_samples_negative": (["--test-samples", "-5"], ["--test-samples"]),
    "sparsity_one": (["--sparsity", "1.0"], ["--sparsity"]),
    "sparsity_negative": (["--sparsity", "-0.1"], ["--sparsity"]),
    "alpha_two": (["--alpha", "2"], ["--alpha"]),
    "alpha_nan": (["--alpha", "nan"], ["--alpha"]),
    "temperature_zero": (["--temperature", "0"], ["--temperature"]),
    "temperature_huge": (["--temperature", "1e20"], ["--temperature"]),
    "method_unknown": (["--method", "kd+hint"], ["--method", "hint"]),
    "prune_epochs_zero": (["--prune-epochs", "0"], ["--prune-epochs"]),
    "batch_size_zero": (["--batch-size", "0"], ["--batch-size"]),
    "seed_negative": (["--seed", "-1"], ["--seed"]),
    "data_dir_missing": (["--data-dir", "{tmp}/nowhere"], ["--data-dir", "not a folder"]),
    "data_dir_without_idx_files": (["--data-dir", "{tmp}"], ["--data-dir", "lacks"]),
    "output_dir_empty_string": (["--output-dir", ""], ["--output-dir"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_flag_is_refused_before_training_naming_the_flag(case, tmp_path, capsys):
    extra, words = BAD_FLAGS[case]
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    assert main(tmp_path, *extra) == 2
    out, err = capsys.readouterr()
    assert err.startswith("keras-distill: error: ")
    for word in words:
        assert word in err
    assert "teacher:" not in out and "Traceback" not in err
    assert not os.path.exists(tmp_path / "runs" / "latest")


@needs_data
def test_more_train_samples_than_the_data_has_is_refused(tmp_path, capsys):
    assert main(tmp_path, "--train-samples", "70000") == 2
    out, err = capsys.readouterr()
    assert "--train-samples=70000" in err and "only 60000" in err
    assert "teacher:" not in out


@pytest.mark.parametrize("kind,shape,label_max,extra,words", [
    ("images_not_28x28", (300, 32, 32), 9, [], ["shape (300, 32, 32)", "28x28"]),
    ("labels_beyond_9", (300, 28, 28), 40, [], ["labels", "up to", "0 to 9"]),
    ("fewer_images_than_a_batch", (40, 28, 28), 9, [], ["40 images", "--batch-size=64"]),
    ("test_samples_beyond_the_data", (300, 28, 28), 9, ["--test-samples", "64"],
     ["--test-samples=64", "only 50"]),
])
def test_unusable_idx_data_is_refused_before_training(kind, shape, label_max, extra, words,
                                                      tmp_path, capsys):
    folder = _write_idx(tmp_path / "idx", shape, label_max)
    code = cli.main(TINY[4:] + extra + [
        "--data-dir", folder, "--cache-dir", str(tmp_path / "c"),
        "--output-dir", str(tmp_path / "runs" / "latest")])
    out, err = capsys.readouterr()
    assert code == 2, err
    for word in words:
        assert word in err
    assert "teacher:" not in out
    # The run folder made for it is gone; the output name was never made.
    assert sorted(os.listdir(tmp_path / "runs")) == []


# --- 19: folders that cannot be written, found at the start ------------------

@pytest.mark.parametrize("flag", ["--cache-dir", "--output-dir"])
def test_unwritable_folder_is_refused_at_start_naming_it(flag, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(tmp_path, flag, str(blocker / "sub" / "latest")) == 2
    out, err = capsys.readouterr()
    assert flag in err and "cannot be written" in err and str(blocker) in err
    assert "teacher:" not in out


def test_unwritable_default_cache_names_the_environment_variable(tmp_path, capsys,
                                                                monkeypatch):
    (tmp_path / "a_file").write_text("x")
    monkeypatch.setenv("KERAS_DISTILL_CACHE", str(tmp_path / "a_file" / "cache"))
    code = cli.main([*TINY, "--output-dir", str(tmp_path / "runs" / "latest")])
    assert code == 2
    assert "$KERAS_DISTILL_CACHE" in capsys.readouterr().err


# --- 21: one folder per run, the output name switched atomically --------------

def _fake_run(out, text, fail=False):
    with runs.RunFolder(out, log=quiet) as run:
        _io.atomic_write(os.path.join(run.path, "results.json"), text)
        if fail:
            raise RuntimeError("stage failed")
    return run.path


def test_output_dir_shows_the_last_complete_run_only(tmp_path):
    out = tmp_path / "runs" / "latest"
    first = _fake_run(out, "first")
    assert os.path.islink(out) and runs.current_run(out) == os.path.realpath(first)
    with pytest.raises(RuntimeError):
        _fake_run(out, "second", fail=True)
    assert (out / "results.json").read_text() == "first"
    assert sorted(os.listdir(tmp_path / "runs")) == ["latest", os.path.basename(first)]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete"
    assert record["files"]["results.json"]["sha256"] == hashlib.sha256(b"first").hexdigest()


def test_two_runs_at_once_get_their_own_folders(tmp_path):
    out = tmp_path / "latest"
    with runs.RunFolder(out, log=quiet) as a, runs.RunFolder(out, log=quiet) as b:
        assert a.path != b.path
        for run in (a, b):
            _io.atomic_write(os.path.join(run.path, "who"), run.path)
    assert runs.is_complete(a.path) and runs.is_complete(b.path)
    for run in (a, b):
        assert open(os.path.join(run.path, "who")).read() == run.path
    assert os.path.realpath(out) == os.path.realpath(a.path)  # the last to finish


def test_killed_run_folder_is_never_complete_and_next_run_removes_it(tmp_path):
    out = tmp_path / "latest"
    first = _fake_run(out, "first")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        killed = tmp_path / "main-20000101-000000"
        killed.mkdir()
        (killed / runs.MARKER).write_text(json.dumps(
            {"pid": child.pid, "host": __import__("socket").gethostname()}))
        (killed / "results.json").write_text("half")
        (killed / runs.RUN_FILE).write_text("{}")  # even with run.json: marker wins
        assert not runs.is_complete(killed)
        assert _fake_run(out, "second") and killed.exists()  # its process still runs
    finally:
        child.kill()
        child.wait()
    third = _fake_run(out, "third")
    assert not killed.exists()
    assert runs.current_run(out) == os.path.realpath(third) and os.path.isdir(first)


def test_output_dir_with_user_files_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "runs" / "latest"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    assert main(tmp_path, "--no-export") == 2
    out_, err = capsys.readouterr()
    assert "--output-dir" in err and "notes.txt" in err and "teacher:" not in out_
    assert sorted(os.listdir(out)) == ["notes.txt"]
    assert sorted(os.listdir(tmp_path / "runs")) == ["latest"]


def test_output_dir_that_is_a_file_or_the_current_folder_is_refused(tmp_path,
                                                                   monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        runs.RunFolder(tmp_path / "f", log=quiet).__enter__()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="current folder"):
        runs.RunFolder(".", log=quiet).__enter__()
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_earlier_layout_output_folder_is_moved_aside_when_the_run_completes(tmp_path):
    out = tmp_path / "latest"
    out.mkdir()
    (out / "results.json").write_text("old")
    (out / "teacher.tflite").write_bytes(b"old")
    lines = []
    with runs.RunFolder(out, log=lines.append) as run:
        assert (out / "results.json").read_text() == "old"  # not touched yet
        _io.atomic_write(os.path.join(run.path, "results.json"), "new")
    assert (out / "results.json").read_text() == "new"
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("latest.previous-")]
    assert len(aside) == 1 and (aside[0] / "results.json").read_text() == "old"
    assert any("previous" in line for line in lines)


def test_dangling_output_link_is_replaced(tmp_path):
    out = tmp_path / "latest"
    os.symlink("main-19990101-000000", out)  # its run folder was deleted by hand
    assert runs.current_run(out) is None
    _fake_run(out, "new")
    assert (out / "results.json").read_text() == "new"


def test_signal_while_a_run_is_finishing_lets_it_finish_first(tmp_path, monkeypatch):
    real_symlink = os.symlink

    def symlink_after_a_signal(*args):  # SIGTERM lands inside the switch
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        real_symlink(*args)

    monkeypatch.setattr(os, "symlink", symlink_after_a_signal)
    with pytest.raises(runs.Interrupted):
        with runs.stop_on_signals():
            path = None
            with runs.RunFolder(tmp_path / "latest", log=quiet) as run:
                path = run.path
    assert runs.current_run(tmp_path / "latest") == os.path.realpath(path)
    assert _temp_files(tmp_path) == []


def test_empty_output_folder_is_replaced_by_the_link(tmp_path):
    out = tmp_path / "latest"
    out.mkdir()
    _fake_run(out, "new")
    assert os.path.islink(out) and (out / "results.json").read_text() == "new"


# --- 22: files and folders get the permissions the umask says -----------------

@pytest.mark.parametrize("umask,file_mode,dir_mode", [
    (0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)],
    ids=["umask022", "umask077", "umask002"])
def test_written_files_honour_the_umask(umask, file_mode, dir_mode, tmp_path):
    old = os.umask(umask)
    try:
        written = report.write_report({"rows": [], "artifacts": []}, str(tmp_path / "r"))
        student = keras_distill.pipeline.build_student("mlp")
        weights = str(tmp_path / "s.weights.h5")
        pipeline.atomic_save_weights(student, weights)
        with runs.RunFolder(tmp_path / "latest", log=quiet) as run:
            pass
    finally:
        os.umask(old)
    for path in written + [weights, os.path.join(run.path, runs.RUN_FILE)]:
        assert oct(os.stat(path).st_mode & 0o777) == oct(file_mode), path
    assert oct(os.stat(run.path).st_mode & 0o777) == oct(dir_mode)


def test_rewriting_a_file_keeps_its_mode(tmp_path):
    path = tmp_path / "results.md"
    path.write_text("old")
    os.chmod(path, 0o640)
    _io.atomic_write(str(path), "new")
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o640)


# --- 23: signals stop cleanly, temporary files removed -----------------------

def test_sigterm_during_a_file_write_leaves_no_temporary_file(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(runs.Interrupted) as stop:
        with runs.stop_on_signals():
            with _io.atomic_path(str(tmp_path / "teacher.weights.h5")) as tmp:
                open(tmp, "wb").write(b"half")
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises before this ends
    assert stop.value.exit_code == 143
    assert os.listdir(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_temporary_file_of_a_killed_process_is_removed_by_the_next_cache_use(
        cached_teacher, tmp_path):
    config, _, _ = _copy_cache(cached_teacher, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / "cache" / f".teacher-x.weights.h5{_io.TEMP_TAG}{dead}-abc.weights.h5"
    stale.write_bytes(b"half")
    mine = tmp_path / "cache" / f".other{_io.TEMP_TAG}{os.getpid()}-abc.tmp"  # a live writer's
    mine.write_bytes(b"busy")
    assert pipeline.get_teacher(config, *_images(8), log=quiet)[2]
    assert not stale.exists() and mine.exists()


def test_main_puts_the_signal_handlers_back(capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert cli.main(["--epochs", "0"]) == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    return env


class _Child:
    """A ``keras-distill`` subprocess whose stdout is read line by line."""

    def __init__(self, args):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keras_distill.cli", *args], env=_env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.out = []
        self.err = []
        self.readers = [
            threading.Thread(target=self._read, args=(stream, put), daemon=True)
            for stream, put in ((self.proc.stdout, self.lines.put),
                                (self.proc.stderr, self.err.append))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, put):
        for line in stream:
            put(line)

    def wait_for(self, text, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                assert self.proc.poll() is None, (
                    f"exited {self.proc.returncode} before {text!r}: "
                    f"{''.join(self.out)}{''.join(self.err)}")
                continue
            self.out.append(line)
            if text in line:
                return
        self.proc.kill()
        raise AssertionError(f"no {text!r} within {timeout} s: {''.join(self.out)}")

    def finish(self, timeout=60):
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.proc.kill()  # a no-op once it has exited
            for reader in self.readers:
                reader.join(timeout=10)
        while not self.lines.empty():
            self.out.append(self.lines.get())
        return self.proc.returncode, "".join(self.out), "".join(self.err)


def _temp_files(folder):
    return [os.path.join(root, n) for root, _, names in os.walk(folder)
            for n in names if _io.TEMP_TAG in n]


@needs_data
@pytest.mark.tensorflow
@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl_c", "sigterm"])
def test_signal_stops_the_run_cleanly_saying_what_was_kept(signum, code, tmp_path):
    out = tmp_path / "runs" / "latest"
    earlier = _fake_run(out, "earlier")
    child = _Child([*TINY, "--no-compress", "--cache-dir", str(tmp_path / "cache"),
                    "--output-dir", str(out)])
    child.wait_for("teacher: training")
    time.sleep(0.3)
    child.proc.send_signal(signum)
    returncode, stdout, err = child.finish()
    assert returncode == code, err
    assert "Traceback" not in err
    ours = [line for line in err.splitlines() if line.startswith("keras-distill:")]
    assert len(ours) == 1 and ours[0].startswith(
        f"keras-distill: stopped by {signal.Signals(signum).name}; kept: the teacher cache")
    assert f"{out} -> {os.path.realpath(earlier)} (the last complete run)" in ours[0]
    assert sorted(os.listdir(out.parent)) == sorted(["latest", os.path.basename(earlier)])
    assert _temp_files(tmp_path) == []


def test_importing_the_command_line_does_not_import_tensorflow():
    # so `keras-distill` sets its signal handlers before TensorFlow loads
    found = subprocess.run(
        [sys.executable, "-c",
         "import sys, keras_distill.cli; print('tensorflow' in sys.modules)"],
        env=_env(), capture_output=True, text=True, timeout=120)
    assert found.stdout.strip() == "False", found.stderr


@needs_data
@pytest.mark.tensorflow
def test_ctrl_c_in_the_first_second_stops_cleanly(tmp_path):
    child = _Child([*TINY, "--no-compress", "--cache-dir", str(tmp_path / "cache"),
                    "--output-dir", str(tmp_path / "runs" / "latest")])
    time.sleep(1)  # TensorFlow is still loading
    child.proc.send_signal(signal.SIGINT)
    returncode, _, err = child.finish(timeout=60)
    assert returncode == 130, err
    assert "Traceback" not in err
    assert "keras-distill: stopped by SIGINT" in err


# --- the must-show: SIGKILL at three stages, then a run that completes --------

def _snapshot(out):
    """The run ``out`` shows: its folder and every file's bytes."""
    folder = os.path.realpath(out)
    return folder, {n: open(os.path.join(folder, n), "rb").read()
                    for n in sorted(os.listdir(folder))}


@needs_data
@pytest.mark.tensorflow
def test_runs_killed_at_three_stages_never_reach_the_output_and_a_rerun_completes(
        tmp_path):
    out = tmp_path / "runs" / "latest"
    cache = tmp_path / "cache"
    args = [*TINY, "--no-compress", "--data-dir", DATA_DIR, "--cache-dir", str(cache),
            "--output-dir", str(out)]
    earlier = _fake_run(out, "an earlier complete run")
    before = _snapshot(out)
    rng = random.Random()
    # The first two run at the same time (two runs into one --output-dir).
    for stages in (("teacher: training", "distilling"), ("export:",)):
        children = [(stage, _Child(args)) for stage in stages]
        for stage, child in children:
            delay = rng.uniform(0.0, 0.5)
            child.wait_for(stage)
            time.sleep(delay)
            child.proc.kill()  # SIGKILL: no handler, no cleanup
            returncode, stdout, _ = child.finish()
            assert returncode == -signal.SIGKILL, f"{stage} +{delay:.2f}s: {stdout}"
            assert _snapshot(out) == before, f"killed at {stage} +{delay:.2f}s"
            for folder in (tmp_path / "runs").iterdir():
                if folder.name.startswith("main-") and str(folder) != earlier:
                    assert not runs.is_complete(folder), f"{stage} +{delay:.2f}s"
    final = _Child(args)
    returncode, stdout, err = final.finish(timeout=150)
    assert returncode == 0, err
    assert f"data: IDX files from {DATA_DIR}" in stdout
    folder = os.path.realpath(out)
    assert folder != earlier and runs.is_complete(folder)
    record = json.loads((out / runs.RUN_FILE).read_text())
    assert record["pid"] == final.proc.pid
    listed = set(record["files"]) | {runs.RUN_FILE}
    assert set(os.listdir(folder)) == listed
    for name, meta in record["files"].items():
        content = open(os.path.join(folder, name), "rb").read()
        assert hashlib.sha256(content).hexdigest() == meta["sha256"], name
    assert {r["file"] for r in json.loads((out / "results.json").read_text())["artifacts"]} \
        <= set(record["files"])
    # The killed runs' folders are gone; the earlier run is as it was.
    assert sorted(os.listdir(tmp_path / "runs")) == sorted(
        ["latest", os.path.basename(earlier), os.path.basename(folder)])
    assert runs.is_complete(earlier)
    assert _temp_files(tmp_path) == []


# --- 24 and 20: the teacher cache is keyed on the data, survives corruption ---

def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 28, 28, 1)).astype("float32"),
            rng.integers(0, 10, n).astype("int64"))


def _teacher_config(cache_dir):
    return pipeline.PipelineConfig(teacher_epochs=1, batch_size=4, cache_dir=str(cache_dir))


@pytest.fixture(scope="module")
def cached_teacher(tmp_path_factory):
    """A cache folder holding one teacher trained on `_images(8)`."""
    cache = tmp_path_factory.mktemp("teacher_cache")
    _, _, cached = pipeline.get_teacher(_teacher_config(cache), *_images(8), log=quiet)
    assert not cached
    return cache


def _copy_cache(cached_teacher, tmp_path):
    shutil.copytree(cached_teacher, tmp_path / "cache")
    config = _teacher_config(tmp_path / "cache")
    weights, meta, _ = pipeline.teacher_cache_entry(config, *_images(8))
    return config, weights, meta


def test_teacher_cached_for_other_data_is_not_reused(cached_teacher, tmp_path):
    config, _, _ = _copy_cache(cached_teacher, tmp_path)
    lines = []
    _, _, cached = pipeline.get_teacher(config, *_images(8, seed=1), log=lines.append)
    assert not cached
    assert any("trained on other data" in line for line in lines), lines
    assert pipeline.get_teacher(config, *_images(8), log=quiet)[2]  # the first still there


def test_teacher_cache_metadata_for_other_data_retrains(cached_teacher, tmp_path):
    config, weights, meta = _copy_cache(cached_teacher, tmp_path)
    stored = json.loads(open(meta).read())
    stored["data"]["sha256"] = "0" * 64
    open(meta, "w").write(json.dumps(stored))
    lines = []
    assert not pipeline.get_teacher(config, *_images(8), log=lines.append)[2]
    assert any(meta in line and "does not match" in line for line in lines), lines
    assert pipeline.get_teacher(config, *_images(8), log=quiet)[2]


def test_teacher_weights_without_metadata_retrain(cached_teacher, tmp_path):
    config, weights, meta = _copy_cache(cached_teacher, tmp_path)
    os.remove(meta)
    lines = []
    assert not pipeline.get_teacher(config, *_images(8), log=lines.append)[2]
    assert any("incomplete" in line and weights in line for line in lines), lines
    assert os.path.exists(meta)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zeroed_middle", "bad_json",
                                    "garbage_with_its_checksum"])
def test_corrupt_cached_teacher_is_moved_aside_and_retrained(damage, cached_teacher,
                                                             tmp_path):
    config, weights, meta = _copy_cache(cached_teacher, tmp_path)
    target = meta if damage == "bad_json" else weights
    content = open(target, "rb").read()
    if damage.startswith("garbage"):
        content = b"\x00garbage" * 100
    elif damage == "truncated":
        content = content[: len(content) // 2]
    elif damage == "zeroed_middle":  # still a valid HDF5 file: only the checksum sees it
        middle = len(content) // 2
        content = content[:middle] + bytes(4096) + content[middle + 4096:]
    else:
        content = b'{"key": '
    open(target, "wb").write(content)
    if damage == "garbage_with_its_checksum":  # passes the checksum, fails to load
        stored = json.loads(open(meta).read())
        stored["weights_sha256"] = hashlib.sha256(content).hexdigest()
        open(meta, "w").write(json.dumps(stored))
    lines = []
    teacher, _, cached = pipeline.get_teacher(config, *_images(8), log=lines.append)
    assert not cached
    assert any(target in line and "moved it to" in line for line in lines), lines
    aside = [n for n in os.listdir(tmp_path / "cache") if ".corrupt-" in n]
    assert len(aside) == 1 and aside[0].startswith(os.path.basename(target))
    assert open(tmp_path / "cache" / aside[0], "rb").read() == content
    assert pipeline.get_teacher(config, *_images(8), log=quiet)[2]  # the new one loads


def test_teacher_cache_key_covers_every_byte_of_the_data():
    x, y = _images(8)
    key = pipeline.teacher_cache_entry(_teacher_config("/c"), x, y)[0]
    x2 = x.copy()
    x2[3, 5, 5, 0] += 1e-6
    y2 = y.copy()
    y2[7] = (y2[7] + 1) % 10
    assert pipeline.teacher_cache_entry(_teacher_config("/c"), x2, y)[0] != key
    assert pipeline.teacher_cache_entry(_teacher_config("/c"), x, y2)[0] != key
    assert pipeline.teacher_cache_entry(_teacher_config("/c"), x, y)[0] == key
