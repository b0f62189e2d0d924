"""The job file's schema: every mistake named by its key, before anything loads."""

import os
import re
import subprocess
import sys

import pytest

from keras_distill.jobs import config
from keras_distill.jobs.config import JobError, load_job, parse_job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINIMAL = {"teacher": {"path": "t.keras"}, "student": {"builtin": "cnn"},
           "data": {"builtin": "fashion_mnist"}}


def _problems(data):
    with pytest.raises(JobError) as info:
        parse_job(data, "job.yaml")
    return str(info.value)


def _with(**changes):
    job = {k: dict(v) for k, v in MINIMAL.items()}
    for path, value in changes.items():
        keys = path.split("__")
        target = job
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    return job


def test_minimal_job_has_defaults():
    job = parse_job(MINIMAL, "/x/my-job.yaml")
    assert job.name == "my-job"
    assert job.seed == 0 and job.data.batch_size == 64
    assert job.stage_names() == []


def test_stages_run_in_fixed_order_whatever_the_file_order():
    job = parse_job(_with(stages={"export": {}, "distil": {}, "teacher": {}}), "j.yaml")
    assert job.stage_names() == ["teacher", "distil", "export"]


@pytest.mark.parametrize("changes, expected", [
    ({"stages": {"distil": {"temprature": 2}}},
     "stages.distil.temprature: unknown key; did you mean temperature?"),
    ({"data__batchsize": 3}, "data.batchsize: unknown key; did you mean batch_size?"),
    ({"stages": {"distil": {"alpha": 1.5}}},
     "stages.distil.alpha: Input should be less than or equal to 1 (got 1.5)"),
    ({"stages": {"distil": {"temperature": 0}}},
     "stages.distil.temperature: Input should be greater than 0 (got 0)"),
    ({"stages": {"distil": {"method": "fsp"}}},
     "stages.distil.method: Input should be 'kd', 'dkd', 'dist', 'kd_ls' or 'dkd_ls'"),
    ({"stages": {"export": {"quantization": ["int4"]}}},
     "stages.export.quantization.0: Input should be 'float32', 'float16', 'dynamic' or "
     "'int8' (got 'int4')"),
    ({"stages": {"export": {"quantization": []}}}, "stages.export.quantization:"),
    ({"stages": {"prune": {}}}, "stages: prune and qat continue from the distilled "
     "student: add a distil stage"),
    ({"stages": {"prune": {"sparsity": 1.0}, "distil": {}}},
     "stages.prune.sparsity: Input should be less than 1"),
    ({"stages": {"distil": {"views": 8}}}, "views caches the teacher on augmented views"),
    ({"stages": {"distil": {"epochs": 0}}},
     "stages.distil.epochs: Input should be greater than 0 (got 0)"),
    ({"student__builtin": "resnet"}, "student.builtin: Input should be 'cnn' or 'mlp'"),
    ({"data__image_dir": "photos"}, "data: give exactly one of image_dir, npz, tfrecord, "
     "tfds, builtin (got image_dir, builtin)"),
    ({"data__validation_split": 1.0}, "data.validation_split: Input should be less than 1"),
    ({"seed": "zero"}, "seed: Input should be a valid integer"),
    ({"name": "my job"}, "name: String should match pattern"),
])
def test_each_mistake_is_named_by_its_key(changes, expected):
    job = _with(**{k: v for k, v in changes.items() if "__" in k})
    job.update({k: v for k, v in changes.items() if "__" not in k})
    assert expected in _problems(job)


@pytest.mark.parametrize("spec, expected", [
    ({}, "teacher: give exactly one of path, application, builder (got none)"),
    ({"path": "a.keras", "builder": "m:f"}, "(got path, builder)"),
    ({"builder": "no_colon"}, "teacher.builder: must be 'module:function'"),
    ({"path": "a.keras", "weights": "w.h5"}, "weights is for application or builder"),
    ({"builder": "m:f", "input_shape": [28, 28, 1]}, "input_shape is for application "
     "teachers"),
    ({"path": "a.keras", "kwargs": {"alpha": 1}}, "kwargs is for application or builder"),
    ({"path": "a.keras", "outputs": "softmax"},
     "teacher.outputs: Input should be 'logits' or 'probabilities'"),
])
def test_teacher_sources(spec, expected):
    assert expected in _problems(dict(MINIMAL, teacher=spec))


def test_every_problem_is_reported_at_once():
    message = _problems({"teacher": {}, "student": {"builtin": "x"},
                         "data": {"image_dir": "p"}, "stages": {"distil": {"alpha": 2}}})
    assert message.startswith("job.yaml: 4 problems:")
    assert len(message.splitlines()) == 5


def test_missing_sections_are_named():
    message = _problems({"teacher": {"path": "t.keras"}})
    assert "student: missing (required)" in message
    assert "data: missing (required)" in message


def test_not_a_mapping():
    with pytest.raises(JobError, match="a job file is a mapping of keys"):
        parse_job(["teacher"], "job.yaml")


def test_load_job_reports_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(JobError, match="cannot be read"):
        load_job(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: {path: [unclosed\n")
    with pytest.raises(JobError, match="bad.yaml: not valid YAML"):
        load_job(bad)


def test_relative_paths_resolve_against_the_job_folder(tmp_path):
    (tmp_path / "jobs").mkdir()
    path = tmp_path / "jobs" / "j.yaml"
    path.write_text("teacher: {path: ../models/t.keras}\nstudent: {builtin: cnn}\n"
                    "data: {npz: {train: data/train.npz}}\n")
    job, job_dir = load_job(path)
    assert config.resolve(job_dir, job.teacher.path) == str(
        tmp_path / "jobs" / ".." / "models" / "t.keras")
    assert config.resolve(job_dir, job.data.npz.train) == str(
        tmp_path / "jobs" / "data" / "train.npz")
    assert config.resolve(job_dir, "/abs/x") == "/abs/x"


@pytest.mark.parametrize("name", ["fashion_mnist", "image_folder", "mobilenet_teacher"])
def test_example_jobs_are_valid(name):
    job, _ = load_job(os.path.join(ROOT, "examples", f"{name}.yaml"))
    assert "distil" in job.stage_names() and "export" in job.stage_names()


def _schema_keys(model, seen=None):
    seen = set() if seen is None else seen
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        for candidate in [field.annotation, *getattr(field.annotation, "__args__", ())]:
            for inner in [candidate, *getattr(candidate, "__args__", ())]:
                if isinstance(inner, type) and issubclass(inner, config.BaseModel) \
                        and inner not in seen:
                    seen.add(inner)
                    keys |= _schema_keys(inner, seen)
    return keys


def test_docs_name_every_key_of_the_schema():
    """docs/jobs.md is the reference: a key added to the schema must be documented."""
    with open(os.path.join(ROOT, "docs", "jobs.md"), encoding="utf-8") as handle:
        docs = handle.read()
    documented = set(re.findall(r"`([a-z_0-9]+)`", docs)) | set(
        re.findall(r"[{,] ?([a-z_]+):", docs))
    missing = sorted(_schema_keys(config.Job) - documented)
    assert not missing, f"docs/jobs.md does not document: {missing}"


def test_cli_reports_a_bad_job_file_before_tensorflow_loads(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("teacher: {path: t.keras}\nstudent: {builtin: cnn}\n"
                   "data: {builtin: fashion_mnist}\nstages: {distil: {temprature: 2}}\n")
    code = ("import sys; from keras_distill.cli import main; rc = main(['run', sys.argv[1]]);"
            "print('tensorflow' in sys.modules); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, str(job)], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert "stages.distil.temprature: unknown key; did you mean temperature?" in result.stderr
    assert result.stdout.strip() == "False"
