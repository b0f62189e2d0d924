"""``keras-distill run JOB.yaml``: stages, records, resume, report, CLI."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml

from keras_distill.jobs import run_job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = textwrap.dedent('''
    import keras

    def teacher(input_shape, num_classes):
        return keras.Sequential([
            keras.Input(input_shape),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes)])

    def student(input_shape, num_classes):
        return keras.Sequential([
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(num_classes)])
''')


def _write_data(folder, n_train=96, n_test=32, size=8, classes=3, seed=0):
    """Learnable images: each class lights up its own band of rows."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, classes, n)
        x = rng.integers(0, 60, (n, size, size)).astype("uint8")
        for i, label in enumerate(y):
            x[i, label * 2:label * 2 + 2] += 180
        return x, y

    for split, n in (("train", n_train), ("test", n_test)):
        x, y = make(n)
        np.savez(os.path.join(folder, f"{split}.npz"), x=x, y=y)


def _job(folder, stages, name="tiny", **data):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "my_models.py"), "w") as handle:
        handle.write(MODELS)
    if not os.path.exists(os.path.join(folder, "train.npz")):
        _write_data(folder)
    job = {"name": name, "teacher": {"builder": "my_models:teacher"},
           "student": {"builder": "my_models:student"},
           "data": dict({"npz": {"train": "train.npz", "test": "test.npz"},
                         "batch_size": 16}, **data),
           "stages": stages}
    path = os.path.join(folder, f"{name}.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(job, handle)
    return path


ALL_STAGES = {"teacher": {"epochs": 2, "learning_rate": 0.01},
              "baseline": {},
              "distil": {"epochs": 2, "learning_rate": 0.01},
              "prune": {"epochs": 1, "sparsity": 0.5},
              "qat": {"epochs": 1},
              "export": {"quantization": ["float32", "int8"],
                         "models": ["student"], "representative_samples": 16}}


def test_a_job_with_every_stage(tmp_path):
    """One run through every stage (the most expensive test here, so the
    checks of its folder, results and progress lines share it)."""
    folder = str(tmp_path)
    job = _job(folder, ALL_STAGES)
    lines = []
    results = run_job(job, os.path.join(folder, "runs", "latest"), quiet=True,
                      log=lines.append)
    _check_folder(folder, results)
    _check_results(folder)
    _check_progress(lines)


def _check_folder(folder, results):
    run = os.path.join(folder, "runs", "latest")
    assert os.path.islink(run)
    assert os.path.realpath(run) == results["run"]
    for stage, files in {"teacher": ["teacher.keras"], "baseline": ["student.keras"],
                         "distil": ["student.keras"], "prune": ["student_sparse.keras"],
                         "qat": ["student_qat_int8.tflite"]}.items():
        record = json.load(open(os.path.join(run, stage, "record.json")))
        assert record["stage"] == stage and len(record["key"]) == 64
        assert sorted(record["outputs"]) == files
        assert record["seconds"] > 0
    for file in ("results.json", "results.md", "run.json", "job.yaml",
                 "accuracy_vs_size.png", "curves.png", "sparsity.png"):
        assert os.path.isfile(os.path.join(run, file)), file


def _check_results(folder):
    on_disk = json.load(open(os.path.join(folder, "runs", "latest", "results.json")))
    names = [(a["name"], a["format"]) for a in on_disk["artifacts"]]
    assert names == [
        ("teacher", "keras"), ("student (baseline)", "keras"),
        ("student (distilled)", "keras"), ("student (distilled, 50% sparse)", "keras"),
        ("student (QAT), int8", "tflite int8"),
        ("student (distilled), float32", "tflite float32"),
        ("student (distilled), int8", "tflite int8"),
        ("student (sparse), float32", "tflite float32"),
        ("student (sparse), int8", "tflite int8")]
    for artifact in on_disk["artifacts"]:
        assert 0.0 <= artifact["accuracy"] <= 1.0
        assert artifact["size_bytes"] is None or artifact["size_bytes"] > 0
        if artifact["file"]:
            assert os.path.isfile(os.path.join(folder, "runs", "latest", artifact["file"]))
    # The data is learnable: the trained teacher is far above chance (1/3).
    assert on_disk["artifacts"][0]["accuracy"] > 0.6
    assert "npz" in on_disk["data"]
    sparsity = on_disk["stages"]["prune"]["metrics"]["sparsity"]
    assert 0.45 <= sparsity <= 0.55
    history = on_disk["stages"]["distil"]["metrics"]["history"]
    assert [h["epoch"] for h in history] == [1, 2] and "loss" in history[0]


def _check_progress(lines):
    headers = [line for line in lines if line.startswith("stage ")]
    assert [h.split(":")[0] for h in headers] == [
        "stage 1/6 teacher", "stage 2/6 baseline", "stage 3/6 distil", "stage 4/6 prune",
        "stage 5/6 qat", "stage 6/6 export"]
    assert any(line.startswith("data: ") for line in lines)


def test_baseline_and_distilled_start_from_the_same_weights(tmp_path):
    """Same seed: the student's initial weights are those of the baseline."""
    job = _job(str(tmp_path), {"baseline": {"epochs": 1, "learning_rate": 1e-9,
                                            "optimizer": "sgd", "schedule": "constant"},
                               "distil": {"epochs": 1, "learning_rate": 1e-9,
                                          "optimizer": "sgd", "schedule": "constant"}})
    results = run_job(job, str(tmp_path / "out"), quiet=True, log=lambda m: None)
    import keras

    base = keras.models.load_model(os.path.join(results["run"], "baseline", "student.keras"))
    dist = keras.models.load_model(os.path.join(results["run"], "distil", "student.keras"))
    for a, b in zip(base.get_weights(), dist.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_resume_skips_finished_stages_and_reruns_changed_ones(tmp_path):
    stages = {"teacher": {"epochs": 1}, "distil": {"epochs": 1},
              "export": {"quantization": ["float32"]}}
    job = _job(str(tmp_path), stages)
    out = str(tmp_path / "runs" / "latest")
    first = run_job(job, out, quiet=True, log=lambda m: None)
    teacher_record = json.load(open(os.path.join(first["run"], "teacher", "record.json")))
    lines = []
    again = run_job(job, out, resume=first["run"], quiet=True, log=lines.append)
    assert again["run"] == first["run"]
    skipped = [line for line in lines if "skipped" in line]
    assert len(skipped) == 3, lines
    # Change the distil stage: teacher skipped, distil and export run again.
    stages["distil"]["epochs"] = 2
    _job(str(tmp_path), stages)
    lines = []
    changed = run_job(job, out, resume=first["run"], quiet=True, log=lines.append)
    assert [line.split(":")[0] for line in lines if line.startswith("stage ")] == [
        "stage 1/3 teacher", "stage 2/3 distil", "stage 3/3 export"]
    assert "skipped" in next(line for line in lines if line.startswith("stage 1/3"))
    assert "skipped" not in next(line for line in lines if line.startswith("stage 2/3"))
    record = json.load(open(os.path.join(changed["run"], "distil", "record.json")))
    assert len(record["metrics"]["history"]) == 2
    assert json.load(open(os.path.join(first["run"], "teacher", "record.json"))) \
        == teacher_record


def test_a_changed_artifact_makes_its_stage_run_again(tmp_path):
    job = _job(str(tmp_path), {"teacher": {"epochs": 1}, "distil": {"epochs": 1}})
    out = str(tmp_path / "out")
    first = run_job(job, out, quiet=True, log=lambda m: None)
    with open(os.path.join(first["run"], "teacher", "teacher.keras"), "ab") as handle:
        handle.write(b"tampered")
    lines = []
    run_job(job, out, resume=first["run"], quiet=True, log=lines.append)
    assert not any("teacher: done in the resumed run" in line for line in lines)
    assert any(line.startswith("stage 1/2 teacher: training") for line in lines)


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path):
    job = _job(str(tmp_path), {"distil": {"epochs": 1}})
    with pytest.raises(ValueError, match="is not a keras-distill run folder"):
        run_job(job, str(tmp_path / "out"), resume=str(tmp_path), quiet=True,
                log=lambda m: None)


def test_a_failed_run_keeps_its_folder_and_says_how_to_resume(tmp_path):
    job = _job(str(tmp_path), {"distil": {"epochs": 1, "views": 2,
                                          "augmentation": [{"layer": "RandomFlp"}]}})
    lines = []
    with pytest.raises(ValueError, match=r"stages.distil.augmentation\[0\]: keras.layers "
                       "has no layer 'RandomFlp'; did you mean RandomFlip"):
        run_job(job, str(tmp_path / "out"), quiet=True, log=lines.append)
    kept = [line for line in lines if "continue it with --resume" in line]
    assert kept and not os.path.exists(tmp_path / "out")


def _cli(args, cwd, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "keras_distill.cli", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT), **kwargs)


def test_killed_mid_stage_resumes_from_the_last_epoch(tmp_path):
    """SIGKILL during the distil stage once an epoch checkpoint exists; the
    resumed run continues from that epoch and completes."""
    folder = str(tmp_path)
    _write_data(folder, n_train=3000, n_test=64, size=16)
    job = _job(folder, {"distil": {"epochs": 12, "learning_rate": 0.01,
                                   "cache_teacher": False}}, batch_size=32)
    out = os.path.join(folder, "runs", "latest")
    process = _cli(["run", job, "--output-dir", out, "--quiet"], folder)
    deadline = time.time() + 180
    checkpoint = None
    while time.time() < deadline and process.poll() is None:
        found = [os.path.join(root, f) for root, _, files in os.walk(folder)
                 for f in files if f == "training_metadata.json"]
        if found:
            checkpoint = found[0]
            break
        time.sleep(0.05)
    assert checkpoint, "no epoch checkpoint appeared before the run ended"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    run_folder = os.path.dirname(os.path.dirname(os.path.dirname(checkpoint)))
    assert not os.path.exists(out)  # nothing complete to show yet
    assert not os.path.exists(os.path.join(run_folder, "distil", "record.json"))
    resumed = _cli(["run", job, "--output-dir", out, "--quiet", "--resume", run_folder],
                   folder)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert "distil: continuing from the checkpoint of epoch" in stdout
    assert "distil: found the checkpoint of a stopped run" in stdout
    record = json.load(open(os.path.join(run_folder, "distil", "record.json")))
    epochs = [h["epoch"] for h in record["metrics"]["history"]]
    assert epochs[0] > 1 and epochs[-1] == 12
    assert os.path.realpath(out) == run_folder


def test_cli_prints_stage_lines_and_the_table_without_tensorflow_noise(tmp_path):
    job = _job(str(tmp_path), {"distil": {"epochs": 1},
                               "export": {"quantization": ["float32"]}})
    process = _cli(["run", job, "--output-dir", str(tmp_path / "out")], str(tmp_path))
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "stage 1/2 distil: kd, alpha 0.5, T 2, 1 epoch" in stdout
    # Keras's own progress: one line per epoch when not on a terminal.
    assert re.search(r"^\d+/\d+ - .*loss: ", stdout, re.M), stdout
    assert "| student (distilled), float32 | tflite float32 |" in stdout
    for noise in ("cuInit", "oneDNN", "absl::InitializeLog", "cudart_stub",
                  "Created TensorFlow Lite XNNPACK delegate", "fully_quantize"):
        assert noise not in stderr + stdout, noise


def test_cli_reports_a_bad_source_with_its_key(tmp_path, capsys, monkeypatch):
    from keras_distill import cli

    job = _job(str(tmp_path), {"distil": {"epochs": 1}})
    os.remove(os.path.join(tmp_path, "train.npz"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", job, "--output-dir", str(tmp_path / "out")]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("keras-distill: error: ")
    assert "data.npz.train" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("example", ["fashion_mnist", "image_folder", "mobilenet_teacher"])
def test_example_jobs_run_on_a_few_dozen_samples(example, tmp_path):
    """Each example job file, with its stages shortened to one epoch and its
    data to a few dozen images (the image folder is built here)."""
    from keras_distill import datasets

    with open(os.path.join(ROOT, "examples", f"{example}.yaml")) as handle:
        job = yaml.safe_load(handle)
    if "image_dir" in job["data"]:
        from PIL import Image

        rng = np.random.default_rng(0)
        for split, n in (("train", 12), ("test", 4)):
            for c, name in enumerate(["boot", "shirt", "trouser"]):
                folder = tmp_path / "data" / "clothes" / split / name
                folder.mkdir(parents=True)
                for i in range(n):
                    pixels = rng.integers(0, 50, (28, 28, 3)).astype("uint8")
                    pixels[c * 8:c * 8 + 8] += 200
                    Image.fromarray(pixels).save(folder / f"{i}.png")
    elif not datasets.find_fashion_mnist():
        pytest.skip("Fashion-MNIST is not on this machine")
    else:
        job["data"].update(train_samples=64, test_samples=32)
    # Every stage kind runs in test_a_job_with_every_stage; here the sources matter: the prune and
    # QAT stages, and a MobileNetV2's training, are left out to save time.
    for name in ("prune", "qat") + (("teacher",) if "application" in job["teacher"]
                                    else ()):
        job["stages"].pop(name, None)
    for stage in job["stages"].values():
        if isinstance(stage, dict) and "epochs" in stage:
            stage["epochs"] = 1
    if "export" in job["stages"]:  # one model is enough here (the every-stage test: all of them)
        job["stages"]["export"].update(representative_samples=8, models=["student"])
    shutil.copy(os.path.join(ROOT, "examples", "my_models.py"), tmp_path)
    path = tmp_path / f"{example}.yaml"
    path.write_text(yaml.safe_dump(job))
    results = run_job(str(path), str(tmp_path / "runs" / "latest"), quiet=True,
                      log=lambda m: None)
    formats = {a["format"] for a in results["artifacts"]}
    assert {"keras", "tflite float32", "tflite int8"} <= formats
    assert all(0 <= a["accuracy"] <= 1 for a in results["artifacts"])
