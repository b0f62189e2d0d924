"""Runs a job file: stages in order, each with a record, resumable.

Layout of a run folder (``runs/<name>-<YYYYmmdd-HHMMSS>/``)::

    job.yaml            the job as given (copied at the start)
    teacher/            teacher.keras, record.json, tensorboard/
    baseline/           student.keras, record.json, tensorboard/
    distil/             student.keras, record.json, tensorboard/
    prune/              student_sparse.keras (tf_keras), record.json
    qat/                student_qat_int8.tflite, record.json
    export/             <model>_<quantization>.tflite, record.json
    results.json, results.md, accuracy_vs_size.png, curves.png, sparsity.png
    run.json            written last: every file with its SHA-256

A stage's ``record.json`` is written last, atomically, and holds the stage's
*key*: a SHA-256 over everything its result depends on (its settings, the
data's fingerprint, the teacher's and student's sources and the keys of the
stages before it). ``--resume RUN`` skips a stage whose record has the same
key and whose files still match their SHA-256; a stage without a record
(killed) continues from its last finished epoch (Keras
``BackupAndRestore`` in ``<stage>/backup``); a stage whose key changed runs
again from the start, and so does every stage after it.
"""

import hashlib
import json
import os
import shutil
import sys
import time

from keras_distill import _io
from keras_distill._quiet_tf import quiet_stderr
from keras_distill.jobs import config as config_lib

RECORD = "record.json"


def _identity(path):
    """What identifies a user's file or folder without reading it all:
    names, sizes and modification times."""
    if path is None or not os.path.exists(path):
        return None
    if os.path.isfile(path):
        stat = os.stat(path)
        return [os.path.basename(path), stat.st_size, int(stat.st_mtime)]
    out = []
    for root, _, names in sorted(os.walk(path)):
        for name in sorted(names):
            full = os.path.join(root, name)
            stat = os.stat(full)
            out.append([os.path.relpath(full, path), stat.st_size, int(stat.st_mtime)])
    return out


def stage_key(*parts):
    """A SHA-256 over JSON-able parts (the key a stage record holds).

    Example:
    >>> stage_key({"a": 1}, "x") == stage_key({"a": 1}, "x") != stage_key({"a": 2}, "x")
    True
    """
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Stage:
    """One stage's folder and record inside a run.

    Example:
    >>> import tempfile
    >>> s = Stage(tempfile.mkdtemp(), "distil", key="k")
    >>> s.done(), os.path.basename(s.path("student.keras"))
    (False, 'student.keras')
    """

    def __init__(self, run_path, name, key):
        self.name = name
        self.key = key
        self.folder = os.path.join(run_path, name)
        self.record = _io.read_json(os.path.join(self.folder, RECORD))

    def path(self, file):
        """A file of this stage (its folder is created)."""
        os.makedirs(self.folder, exist_ok=True)
        return os.path.join(self.folder, file)

    def done(self):
        """Whether a finished record with this key and intact files exists."""
        record = self.record
        if not record or record.get("key") != self.key:
            return False
        for file, digest in record.get("outputs", {}).items():
            full = os.path.join(self.folder, file)
            if not os.path.isfile(full) or _io.file_sha256(full) != digest:
                return False
        return True

    def prepare(self, log):
        """Before running: a folder of another key is cleared (its checkpoint
        would restore the wrong training); the same key keeps its checkpoint."""
        if self.record and self.record.get("key") != self.key or (
                self.record is None and os.path.isdir(self.folder)
                and _io.read_json(os.path.join(self.folder, "key.json")) not in (
                    None, {"key": self.key})):
            shutil.rmtree(self.folder, ignore_errors=True)
            log(f"{self.name}: settings or inputs changed since the stopped run; "
                "starting the stage again")
        elif os.path.isdir(os.path.join(self.folder, "backup")):
            log(f"{self.name}: found the checkpoint of a stopped run")
        self.record = None
        _io.atomic_write(self.path("key.json"), json.dumps({"key": self.key}))

    def finish(self, outputs, metrics, seconds, settings):
        """Writes the record (last, atomically) with the outputs' SHA-256."""
        record = {"stage": self.name, "key": self.key, "settings": settings,
                  "outputs": {f: _io.file_sha256(os.path.join(self.folder, f))
                              for f in outputs},
                  "metrics": metrics, "seconds": round(seconds, 2),
                  "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        _io.atomic_write(self.path(RECORD), json.dumps(record, indent=1, default=float))
        self.record = record
        return record


def _verbose(quiet):
    if quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def _epochs(n):
    return f"{n} epoch{'s' * (n != 1)}"


def _save_keras(model, path):
    """Saves the model without its optimizer state (an uncompiled copy), so
    the sizes of the Keras artifacts compare; subclassed models as they are."""
    try:
        # from_config, not clone_model: Keras 3 compiles a clone of a
        # compiled model, and its optimizer state would be saved.
        copy = type(model).from_config(model.get_config())
        copy.set_weights(model.get_weights())
    except Exception:  # noqa: BLE001 - a subclassed model cannot be cloned
        copy = model
    with _io.atomic_path(path, suffix=".keras") as tmp:
        copy.save(tmp)


def run_job(job_path, output_dir="runs/latest", resume=None, quiet=False, log=print):
    """Runs a job file and writes its report; returns the results dict.

    Args:
        job_path: The YAML job file (`keras_distill.jobs.config`).
        output_dir: The name that shows the last complete run (a link to
            ``<its folder>/<job name>-<time>``).
        resume: A stopped (or finished) run folder to continue.
        quiet: No per-epoch progress (stage lines and the table stay).
        log: Called with one progress line at a time.

    Returns:
        ``{"job", "data", "artifacts": [...], "stages": {...}, "run"}``.

    Raises:
        keras_distill.jobs.config.JobError: the job file is wrong.
        ValueError, TypeError: a source or a setting cannot be used (the
            message names the key).

    Example (a job on a hundred Fashion-MNIST images; the teacher is untrained here):
    >>> import tempfile
    >>> from keras_distill import datasets
    >>> d = tempfile.mkdtemp(); job = os.path.join(d, "fm.yaml")
    >>> _ = open(job, "w").write(
    ...     "teacher: {builder: 'keras_distill.models:build_teacher'}\\n"
    ...     "student: {builtin: mlp}\\n"
    ...     "data: {builtin: fashion_mnist, train_samples: 128, test_samples: 32}\\n"
    ...     "stages: {distil: {epochs: 1}}\\n")
    >>> if datasets.find_fashion_mnist():
    ...     r = run_job(job, os.path.join(d, "latest"), quiet=True, log=lambda m: None)
    ...     names = [a["name"] for a in r["artifacts"]]
    ... else:
    ...     names = ["teacher", "student (distilled)"]
    >>> names
    ['teacher', 'student (distilled)']
    """
    from keras_distill import runs

    job, job_dir = config_lib.load_job(job_path)
    folder = runs.RunFolder(output_dir, name=job.name, log=log, argument="--output-dir",
                            resumable=True, resume=resume)
    with folder:
        shutil.copyfile(job_path, os.path.join(folder.path, "job.yaml"))
        folder.info.update(job=os.path.abspath(job_path), stages=job.stage_names())
        results = _Job(job, job_dir, folder.path, _verbose(quiet), log).run()
        from keras_distill.jobs import report

        report.write(results, folder.path)
        results["run"] = folder.path
    log(f"written: {output_dir} -> {folder.path}")
    return results


class _Job:
    """The stages of one job, run in order (see the module docstring)."""

    def __init__(self, job, job_dir, run_path, verbose, log):
        self.job, self.job_dir, self.run_path = job, job_dir, run_path
        self.verbose, self.log = verbose, log
        self.rows, self.stages = [], {}

    def _header(self, index, total, name, detail):
        self.log(f"stage {index}/{total} {name}: {detail}")

    def _source(self, spec):
        files = {k: _identity(config_lib.resolve(self.job_dir, getattr(spec, k, None)))
                 for k in ("path", "weights")}
        return stage_key(spec.model_dump(mode="json"), files)

    def _keras_stage(self, stage, skip, model, file, settings, train):
        """A stage that trains a Keras 3 model: in a resumed run whose record
        holds, ``model`` gets the saved weights; else ``train()`` (returning
        the epoch history) runs, the model is saved and the record written."""
        import keras

        if skip:
            model.set_weights(keras.models.load_model(
                stage.path(file), compile=False).get_weights())
        else:
            start = time.perf_counter()
            history = train()
            _save_keras(model, stage.path(file))
            stage.finish([file], {"history": history}, time.perf_counter() - start,
                         settings.model_dump(mode="json"))
        self.stages[stage.name] = stage.record

    def run(self):
        from keras_distill.jobs import sources
        from keras_distill.jobs import stages as S

        job, log = self.job, self.log
        names = job.stage_names()
        log(f"job {job.name}: stages {', '.join(names) or '(none: evaluate only)'}")
        data = sources.load_data(job.data, self.job_dir, seed=job.seed, log=log)
        data = _DataView(data, job.data)
        log(f"data: {data.description}")
        teacher = sources.load_teacher(job.teacher, self.job_dir, data.input_shape,
                                       data.num_classes, log=log)
        teacher_key = self._source(job.teacher)
        student_key = stage_key(self._source(job.student), job.seed)
        total, index = len(names), 0
        context = {"data": data.fingerprint, "seed": job.seed}

        def begin(name, key, detail):
            nonlocal index
            index += 1
            stage = Stage(self.run_path, name, key)
            if stage.done():
                log(f"stage {index}/{total} {name}: done in the resumed run "
                    f"(same inputs and settings), skipped")
                return stage, True
            self._header(index, total, name, detail)
            stage.prepare(log)
            return stage, False

        # teacher
        if job.stages.teacher:
            s = job.stages.teacher
            if not teacher.trainable_weights:
                raise ValueError(
                    "stages.teacher trains the teacher, but this teacher has no trainable "
                    "weights (a SavedModel folder is loaded for inference only): remove "
                    "stages.teacher, or give teacher.path a .keras/.h5 file.")
            teacher_key = stage_key(teacher_key, context, s.model_dump(mode="json"))
            stage, skip = begin("teacher", teacher_key,
                                f"training the teacher, {_epochs(s.epochs)}")
            self._keras_stage(stage, skip, teacher, "teacher.keras", s, lambda: S.train_alone(
                teacher, s, data, S.augmentation(s.augmentation, "stages.teacher.augmentation"),
                stage.folder, self.verbose, log, job.seed, stage="teacher"))
        self._keras_row("teacher", teacher, data, self._file("teacher", "teacher.keras"))
        student = sources.build_student(job.student, self.job_dir, data.input_shape,
                                        data.num_classes, seed=job.seed)
        initial = student.get_weights()

        def fresh_student():
            model = sources.build_student(job.student, self.job_dir, data.input_shape,
                                          data.num_classes, seed=job.seed)
            model.set_weights(initial)
            return model

        distil_settings = job.stages.distil
        if job.stages.baseline:
            b = job.stages.baseline
            merged = self._baseline_settings(b)
            key = stage_key(student_key, context, merged.model_dump(mode="json"))
            stage, skip = begin("baseline", key,
                                f"the student alone on the labels, {_epochs(merged.epochs)}, "
                                "same initial weights and augmentation")
            baseline = fresh_student()
            self._keras_stage(
                stage, skip, baseline, "student.keras", merged, lambda: S.train_alone(
                    baseline, merged, data,
                    S.augmentation(merged.augmentation, "stages.distil.augmentation"),
                    stage.folder, self.verbose, log, job.seed, stage="baseline"))
            self._keras_row("student (baseline)", baseline, data,
                            stage.path("student.keras"))
            self.models_baseline = baseline
        distilled, key = None, None
        if distil_settings:
            d = distil_settings
            key = stage_key(student_key, teacher_key, context, d.model_dump(mode="json"))
            stage, skip = begin("distil", key,
                                f"{d.method}, alpha {d.alpha:g}, T {d.temperature:g}, "
                                f"{_epochs(d.epochs)}"
                                + (f", {len(d.augmentation)} augmentation layer(s)"
                                   if d.augmentation else "")
                                + (f", {d.views} cached views" if d.views else ""))
            distilled = fresh_student()
            self._keras_stage(stage, skip, distilled, "student.keras", d, lambda: S.distil(
                distilled, teacher, d, data, stage.folder, self.verbose, log, job.seed))
            self._keras_row("student (distilled)", distilled, data,
                            stage.path("student.keras"))
        final = distilled
        if job.stages.prune:
            p = job.stages.prune
            key = stage_key(key, p.model_dump(mode="json"))
            stage, skip = begin("prune", key, f"{100 * p.sparsity:g}% sparsity while "
                                f"distilling, {_epochs(p.epochs)}")
            import tf_keras

            if skip:
                sparse = tf_keras.models.load_model(stage.path("student_sparse.keras"),
                                                    compile=False)
            else:
                start = time.perf_counter()
                sparse = S.prune(distilled, teacher, p, distil_settings, data, self.verbose)
                with _io.atomic_path(stage.path("student_sparse.keras"),
                                     suffix=".keras") as tmp:
                    sparse.save(tmp)
                from keras_distill import pruning

                stage.finish(["student_sparse.keras"],
                             {"sparsity": pruning.total_sparsity(sparse),
                              "sparsity_by_layer": pruning.sparsity_report(sparse)},
                             time.perf_counter() - start, p.model_dump(mode="json"))
            self.stages["prune"] = stage.record
            self._keras_row(f"student (distilled, {100 * p.sparsity:g}% sparse)", sparse,
                            data, stage.path("student_sparse.keras"))
            final = sparse
        if job.stages.qat:
            q = job.stages.qat
            key = stage_key(key, q.model_dump(mode="json"))
            stage, skip = begin("qat", key, f"quantization-aware training while "
                                f"distilling, {_epochs(q.epochs)}")
            if not skip:
                start = time.perf_counter()
                model = S.qat(final, teacher, q, distil_settings, data, self.verbose)
                from keras_distill.report import measure_artifact

                xt, yt = S.eval_arrays(data)
                with quiet_stderr():
                    row = measure_artifact("student (QAT), int8", model,
                                           stage.path("student_qat_int8.tflite"), xt, yt,
                                           quantization="int8")
                stage.finish(["student_qat_int8.tflite"], {"artifact": row},
                             time.perf_counter() - start, q.model_dump(mode="json"))
            self.stages["qat"] = stage.record
            self._tflite_row(stage.record["metrics"]["artifact"], "qat")
        if job.stages.export:
            e = job.stages.export
            candidates = {"teacher": ("teacher", teacher),
                          "baseline": ("student (baseline)",
                                       getattr(self, "models_baseline", None)),
                          "student": ("student (distilled)", distilled)}
            chosen = [(name, model) for k, (name, model) in candidates.items()
                      if k in e.models and model is not None]
            if final is not distilled and "student" in e.models:
                chosen.append(("student (sparse)", final))
            key = stage_key(key, teacher_key, context, e.model_dump(mode="json"),
                            [name for name, _ in chosen],
                            [self.stages.get(s, {}).get("key") for s in
                             ("teacher", "baseline", "distil", "prune")])
            stage, skip = begin("export", key,
                                f"{', '.join(e.quantization)} .tflite files of "
                                f"{', '.join(n for n, _ in chosen)}, each run with LiteRT")
            if not skip:
                start = time.perf_counter()
                from keras_distill.report import measure_artifact

                xt, yt = S.eval_arrays(data)
                calibration = data.sample(e.representative_samples)
                rows, files = [], []
                for name, model in chosen:
                    for q in e.quantization:
                        file = (name.replace("student (", "student_").replace(")", "")
                                .replace(" ", "_") + f"_{q}.tflite")
                        log(f"export: {name}, {q} -> {file}")
                        with quiet_stderr():
                            rows.append(measure_artifact(
                                f"{name}, {q}", model, stage.path(file), xt, yt,
                                quantization=q,
                                representative_data=calibration if q == "int8" else None))
                        files.append(file)
                stage.finish(files, {"artifacts": rows}, time.perf_counter() - start,
                             e.model_dump(mode="json"))
            self.stages["export"] = stage.record
            for row in stage.record["metrics"]["artifacts"]:
                self._tflite_row(row, "export")
        return {"job": job.name, "data": data.description,
                "artifacts": self.rows, "stages": self.stages}

    def _baseline_settings(self, baseline):
        """The baseline's settings: its own, else the distil stage's."""
        from keras_distill.jobs.config import DistilStage, TeacherStage

        distil = self.job.stages.distil or DistilStage()
        given = {k: v for k, v in baseline.model_dump().items() if v is not None}
        base = {k: getattr(distil, k) for k in TeacherStage.model_fields
                if k != "augmentation"}
        base.update(given)
        return TeacherStage(**base, augmentation=list(distil.augmentation))

    def _file(self, stage, file):
        path = os.path.join(self.run_path, stage, file)
        return path if os.path.isfile(path) else None

    def _keras_row(self, name, model, data, path):
        from keras_distill.jobs import stages as S

        accuracy = S.accuracy(model, data)
        size = os.path.getsize(path) if path and os.path.isfile(path) else None
        self.rows.append({"name": name, "format": "keras", "params": int(model.count_params()),
                          "size_bytes": size, "accuracy": accuracy,
                          "file": os.path.relpath(path, self.run_path) if size else None})
        self.log(f"evaluate: {name}: {100 * accuracy:.2f}% test accuracy")

    def _tflite_row(self, row, stage):
        self.rows.append(dict(row, accuracy=row["test_accuracy"],
                              file=os.path.join(stage, row["file"])))
        self.log(f"evaluate: {row['name']} ({row['size_bytes'] / 1024:.1f} KB): "
                 f"{100 * row['test_accuracy']:.2f}% test accuracy of the file")


class _DataView:
    """A `sources.JobData` with the job's batch size and memory limit."""

    def __init__(self, data, spec):
        self._data = data
        self.batch_size = spec.batch_size
        self.memory_limit_mb = spec.memory_limit_mb

    def __getattr__(self, name):
        return getattr(self._data, name)
