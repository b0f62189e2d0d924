"""The job file of ``keras-distill run JOB.yaml``: its schema and its checks.

A job names a teacher, a student, the data and the stages to run::

    name: flowers
    teacher: {path: teacher.keras}
    student: {builder: "my_models:tiny_cnn"}
    data: {image_dir: photos/, image_size: [32, 32], validation_split: 0.2}
    stages:
      distil: {epochs: 2, alpha: 0.5, temperature: 2.0}
      export: {quantization: [float32, int8]}

The schema is written with pydantic: every key is checked when the file is
read, before anything is trained, and every mistake is reported at once with
its key path, what was wrong and what is allowed (`JobError`). Unknown keys
are errors (a misspelt ``temprature`` is not silently ignored). Relative
paths are relative to the job file's folder (`load_job` resolves them), and
``module:function`` builders are imported from that folder too. The full
reference is docs/jobs.md.
"""

import difflib
import os
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

STAGES = ("teacher", "baseline", "distil", "prune", "qat", "export")
APPLICATIONS_HINT = "a keras.applications name such as MobileNetV2 or ResNet50"
BUILTIN_DATA = ("fashion_mnist", "mnist")
BUILTIN_STUDENTS = ("cnn", "mlp")
METHODS = ("kd", "dkd", "dist", "kd_ls", "dkd_ls")
PositiveInt = Annotated[int, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
Temperature = Annotated[float, Field(gt=0)]
LearningRate = Annotated[float, Field(gt=0)]


class JobError(ValueError):
    """A job file that cannot be read or does not follow the schema.

    The message lists every problem, one per line, as
    ``<file>: <key path>: <what is wrong>``.

    Example:
    >>> try:  # doctest: +ELLIPSIS
    ...     parse_job({"teacher": {"path": "t.keras"}, "student": {"builtin": "cnn"},
    ...                "data": {"builtin": "fashion_mnist"},
    ...                "stages": {"distil": {"temprature": 2}}}, "job.yaml")
    ... except JobError as error:
    ...     print(error)
    job.yaml: 1 problem:
      stages.distil.temprature: unknown key; did you mean temperature? (allowed: epochs, ...)
    """


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _builder(value):
    if not isinstance(value, str) or value.count(":") != 1 or not all(value.split(":")):
        raise ValueError(f"must be 'module:function' (e.g. 'my_models:tiny_cnn'), got {value!r}")
    return value


class Preprocess(_Strict):
    """How images are turned into what a model takes.

    ``resize`` (height, width) is applied first, then ``x * scale + offset``.
    """

    resize: Optional[tuple[PositiveInt, PositiveInt]] = None
    scale: float = 1.0
    offset: float = 0.0


class TeacherSpec(_Strict):
    """Where the teacher comes from: exactly one of ``path``, ``application``, ``builder``.

    * ``path``: a saved model (``.keras``, ``.h5``, or a SavedModel folder;
      a SavedModel is used for inference only, so it cannot be fine-tuned).
    * ``application``: a ``keras.applications`` network, built with
      ``input_shape`` (default: the data's) and ``classes`` (the data's),
      ``weights`` a weights file of yours (or none: random weights, only useful
      with a ``teacher`` stage that trains it), extra constructor arguments in
      ``kwargs`` (e.g. ``alpha: 0.35``).
    * ``builder``: ``module:function`` called as ``function(input_shape,
      num_classes, **kwargs)``, with ``weights`` optionally loaded into it.

    ``input_fn`` (``module:function``) maps the batch the student sees to the
    teacher's input, for a teacher that takes other inputs; ``preprocess``
    does the common case (resize and rescale) without code. ``outputs``
    says whether the teacher ends in ``logits`` (default) or ``probabilities``.
    """

    path: Optional[str] = None
    application: Optional[str] = None
    builder: Optional[str] = None
    weights: Optional[str] = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    input_shape: Optional[tuple[PositiveInt, ...]] = None
    input_fn: Optional[str] = None
    preprocess: Optional[Preprocess] = None
    outputs: Literal["logits", "probabilities"] = "logits"

    _check_builder = field_validator("builder", "input_fn")(
        lambda cls, v: None if v is None else _builder(v))

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("path", "application", "builder") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of path, application, builder "
                             f"(got {', '.join(given) or 'none'})")
        if self.path and self.weights:
            raise ValueError("weights is for application or builder; a saved model at "
                             "path already holds its weights")
        if self.input_shape and not self.application:
            raise ValueError("input_shape is for application teachers")
        if self.kwargs and self.path:
            raise ValueError("kwargs is for application or builder teachers; a saved "
                             "model at path is not built")
        return self


class StudentSpec(_Strict):
    """The student: exactly one of ``builder``, ``path``, ``builtin``.

    * ``builder``: ``module:function`` called as ``function(input_shape,
      num_classes)``; it must return an uncompiled Keras model ending in
      logits (``num_classes`` units, no softmax).
    * ``path``: a saved ``.keras``/``.h5`` model (its weights are the start).
    * ``builtin``: ``cnn`` (about 14k parameters) or ``mlp``: the main job's
      students, built for the data's input shape and classes.
    """

    builder: Optional[str] = None
    path: Optional[str] = None
    builtin: Optional[Literal["cnn", "mlp"]] = None
    preprocess: Optional[Preprocess] = None

    _check_builder = field_validator("builder")(
        lambda cls, v: None if v is None else _builder(v))

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("builder", "path", "builtin") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of builder, path, builtin "
                             f"(got {', '.join(given) or 'none'})")
        return self


class NpzFiles(_Strict):
    """``.npz`` arrays: ``train`` (and optionally ``validation``/``test``)
    files, each holding images under ``x_key`` and integer labels under ``y_key``."""

    train: str
    validation: Optional[str] = None
    test: Optional[str] = None
    x_key: str = "x"
    y_key: str = "y"


class TFRecordFiles(_Strict):
    """TFRecord files of ``tf.train.Example`` records: ``image_key`` holds an
    encoded image (PNG/JPEG) or raw bytes of ``image_shape`` uint8,
    ``label_key`` an int64 label. File lists or glob patterns per split."""

    train: Union[str, list[str]]
    validation: Union[str, list[str], None] = None
    test: Union[str, list[str], None] = None
    image_key: str = "image"
    label_key: str = "label"
    image_shape: Optional[tuple[PositiveInt, PositiveInt, PositiveInt]] = None
    num_classes: Optional[PositiveInt] = None


class TFDSSpec(_Strict):
    """A TensorFlow Datasets name read from a local ``data_dir`` (prepared
    beforehand: nothing is downloaded), with its split names."""

    name: str
    data_dir: str
    train_split: str = "train"
    validation_split: Optional[str] = None
    test_split: Optional[str] = "test"
    image_key: str = "image"
    label_key: str = "label"


class DataSpec(_Strict):
    """The data: exactly one of ``image_dir``, ``npz``, ``tfrecord``, ``tfds``, ``builtin``.

    * ``image_dir``: one sub-folder per class
      (``keras.utils.image_dataset_from_directory`` layout), with
      ``image_size`` and ``color_mode``; ``test_dir`` the same layout for the test split.
    * ``npz``, ``tfrecord``, ``tfds``: see `NpzFiles`, `TFRecordFiles`, `TFDSSpec`.
    * ``builtin``: ``fashion_mnist`` or ``mnist`` (read from ``data_dir`` or
      the usual places; never downloaded when ``allow_download`` is false).

    ``validation_split`` holds out a fraction of the training data when there
    is no validation split of its own; ``test_split`` does the same for the
    test set when there is none. ``scale``/``offset`` map the stored pixel
    values (0..255) to what the student takes (default ``1/255``, 0).
    Data is held in memory when it takes less than ``memory_limit_mb``
    (then the teacher's outputs can be cached), else streamed with tf.data.
    ``train_samples`` / ``test_samples`` keep the first N (quick trials).
    """

    image_dir: Optional[str] = None
    npz: Optional[NpzFiles] = None
    tfrecord: Optional[TFRecordFiles] = None
    tfds: Optional[TFDSSpec] = None
    builtin: Optional[Literal["fashion_mnist", "mnist"]] = None
    data_dir: Optional[str] = None
    allow_download: bool = False
    image_size: Optional[tuple[PositiveInt, PositiveInt]] = None
    color_mode: Literal["rgb", "grayscale"] = "rgb"
    test_dir: Optional[str] = None
    validation_split: Annotated[float, Field(ge=0, lt=1)] = 0.0
    test_split: Annotated[float, Field(ge=0, lt=1)] = 0.0
    scale: float = 1 / 255
    offset: float = 0.0
    batch_size: PositiveInt = 64
    shuffle_buffer: PositiveInt = 10_000
    memory_limit_mb: Annotated[float, Field(gt=0)] = 2048
    train_samples: Optional[PositiveInt] = None
    test_samples: Optional[PositiveInt] = None

    @model_validator(mode="after")
    def _one_source(self):
        sources = ("image_dir", "npz", "tfrecord", "tfds", "builtin")
        given = [k for k in sources if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(sources)} "
                             f"(got {', '.join(given) or 'none'})")
        if self.image_dir and not self.image_size:
            raise ValueError("image_dir needs image_size: [height, width] (images are "
                             "resized to it)")
        if self.test_dir and not self.image_dir:
            raise ValueError("test_dir goes with image_dir")
        return self


class Augmentation(_Strict):
    """One Keras preprocessing layer by its class name and arguments, e.g.
    ``{layer: RandomFlip, mode: horizontal}`` or
    ``{layer: RandomTranslation, height_factor: 0.1, width_factor: 0.1}``."""

    model_config = ConfigDict(extra="allow", frozen=True)
    layer: str

    def arguments(self):
        """The layer's constructor arguments (every key but ``layer``)."""
        return dict(self.model_extra or {})


class TrainSettings(_Strict):
    """Settings shared by every stage that trains."""

    epochs: PositiveInt = 5
    learning_rate: LearningRate = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    schedule: Literal["constant", "cosine"] = "cosine"


class TeacherStage(TrainSettings):
    """Trains the teacher (from its builder/application) or fine-tunes it on
    the job's data, with ``augmentation`` if given. Skip the stage to use the
    teacher as it is."""

    augmentation: list[Augmentation] = Field(default_factory=list)


class BaselineStage(TrainSettings):
    """The student trained alone on the labels, from the same initial weights
    and with the same settings as ``distil`` unless given here: the
    comparison that says whether distillation paid."""

    epochs: Optional[PositiveInt] = None
    learning_rate: Optional[LearningRate] = None
    optimizer: Optional[Literal["adam", "adamw", "sgd"]] = None
    schedule: Optional[Literal["constant", "cosine"]] = None


class DistilStage(TrainSettings):
    """Distils the student from the teacher.

    ``method``: ``kd`` (Hinton), ``dkd`` (decoupled KD), ``dist`` (DIST),
    ``kd_ls``/``dkd_ls`` (with logit standardisation). ``alpha`` weighs the
    hard-label loss, ``1 - alpha`` the distillation loss; ``temperature``
    softens both distributions (the loss is scaled by T squared).
    ``augmentation``: a fresh view per batch goes to teacher and student
    (the teacher runs online); with ``views: K`` the teacher's outputs for
    K views per image are cached once and replayed (in-memory data only).
    ``cache_teacher`` caches the teacher's outputs when there is no
    augmentation (in-memory data).
    """

    method: Literal["kd", "dkd", "dist", "kd_ls", "dkd_ls"] = "kd"
    alpha: Probability = 0.5
    temperature: Temperature = 2.0
    augmentation: list[Augmentation] = Field(default_factory=list)
    views: Optional[PositiveInt] = None
    top_k: Optional[PositiveInt] = None
    cache_teacher: bool = True

    @model_validator(mode="after")
    def _views_need_augmentation(self):
        if self.views and not self.augmentation:
            raise ValueError("views caches the teacher on augmented views: give "
                             "augmentation too (or drop views)")
        return self


class PruneStage(_Strict):
    """Prunes the distilled student to ``sparsity`` (magnitude pruning with
    TFMOT, polynomial schedule) while distilling, for ``epochs``."""

    sparsity: Annotated[float, Field(gt=0, lt=1)] = 0.5
    epochs: PositiveInt = 2
    learning_rate: LearningRate = 1e-4


class QatStage(_Strict):
    """Quantization-aware training (TFMOT, sparsity preserved after
    ``prune``) while distilling from the float teacher."""

    epochs: PositiveInt = 1
    learning_rate: LearningRate = 1e-4


class ExportStage(_Strict):
    """Writes ``.tflite`` files and runs each with the LiteRT interpreter on
    the test set. ``quantization``: any of ``float32``, ``float16``,
    ``dynamic``, ``int8`` (post-training, calibrated on
    ``representative_samples`` training images; a QAT student is exported
    int8 from its QAT model). ``models``: which models to export."""

    quantization: list[Literal["float32", "float16", "dynamic", "int8"]] = Field(
        default_factory=lambda: ["float32", "int8"], min_length=1)
    representative_samples: PositiveInt = 200
    models: list[Literal["teacher", "baseline", "student"]] = Field(
        default_factory=lambda: ["student"], min_length=1)


class Stages(_Strict):
    """Which stages run, in this order: teacher, baseline, distil, prune, qat,
    export. A stage left out is skipped; every artifact is evaluated on the
    test set."""

    teacher: Optional[TeacherStage] = None
    baseline: Optional[BaselineStage] = None
    distil: Optional[DistilStage] = None
    prune: Optional[PruneStage] = None
    qat: Optional[QatStage] = None
    export: Optional[ExportStage] = None

    @model_validator(mode="after")
    def _order(self):
        if (self.prune or self.qat) and not self.distil:
            raise ValueError("prune and qat continue from the distilled student: add "
                             "a distil stage")
        return self


class Job(_Strict):
    """A whole job file. See the module docstring and docs/jobs.md.

    Example:
    >>> job = parse_job({"teacher": {"path": "t.keras"},
    ...                  "student": {"builtin": "cnn"},
    ...                  "data": {"builtin": "fashion_mnist"},
    ...                  "stages": {"distil": {"epochs": 2}}}, "job.yaml")
    >>> job.name, job.stages.distil.alpha, job.stages.export is None
    ('job', 0.5, True)
    """

    name: Optional[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]] = None
    seed: int = 0
    teacher: TeacherSpec
    student: StudentSpec
    data: DataSpec
    stages: Stages = Field(default_factory=Stages)

    def stage_names(self):
        """The stages this job runs, in order."""
        return [s for s in STAGES if getattr(self.stages, s) is not None]


def _allowed(model, location):
    """The keys allowed where an unknown key was found."""
    for key in location[:-1]:
        if isinstance(key, int):
            continue
        field = model.model_fields.get(key)
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation] + list(getattr(annotation, "__args__", ()))
        for candidate in candidates:
            inner = getattr(candidate, "__args__", ())
            for c in [candidate, *inner]:
                if isinstance(c, type) and issubclass(c, BaseModel):
                    model = c
                    break
            else:
                continue
            break
        else:
            return None
    return list(model.model_fields)


def _describe(error, source):
    location = tuple(error["loc"])
    path = ".".join(str(p) for p in location) or "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = _allowed(Job, location) or []
        close = difflib.get_close_matches(str(location[-1]), allowed, n=1)
        message = "unknown key" + (f"; did you mean {close[0]}?" if close else "")
        if allowed:
            message += f" (allowed: {', '.join(allowed)})"
    elif error["type"] == "missing":
        message = "missing (required)"
    else:
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if error["type"] not in ("value_error", "assertion_error"):
            message += f" (got {error.get('input')!r})"
    return f"  {path}: {message}"


def parse_job(data, source="job"):
    """Checks a job given as a dict; returns a `Job`.

    Args:
        data: The parsed job file.
        source: The file name, for messages.

    Raises:
        JobError: every problem at once, with its key path.

    Example:
    >>> parse_job({"teacher": {"path": "t.keras"}, "student": {"builtin": "cnn"},
    ...            "data": {"builtin": "fashion_mnist"}}, "j.yaml").stage_names()
    []
    """
    if not isinstance(data, dict):
        raise JobError(f"{source}: a job file is a mapping of keys (name, teacher, "
                       f"student, data, stages), got {type(data).__name__}")
    data = dict(data)
    if data.get("name") is None:
        data["name"] = os.path.splitext(os.path.basename(source))[0] or "job"
        data["name"] = "".join(c if c.isalnum() or c in "_.-" else "_" for c in data["name"])
    try:
        return Job.model_validate(data)
    except ValidationError as error:
        problems = [_describe(e, source) for e in error.errors()]
        raise JobError(f"{source}: {len(problems)} problem{'s' * (len(problems) > 1)}:\n"
                       + "\n".join(problems)) from None


def load_job(path):
    """Reads and checks a YAML job file.

    Relative paths in it stay as written; `resolve` turns them into paths
    relative to the job file's folder (``job_dir``).

    Returns:
        ``(job, job_dir)``.

    Raises:
        JobError: the file is missing, is not YAML, or breaks the schema.

    Example:
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "flowers.yaml")
    >>> _ = open(p, "w").write("teacher: {path: t.keras}\\nstudent: {builtin: cnn}\\n"
    ...                        "data: {image_dir: photos, image_size: [32, 32]}\\n")
    >>> job, job_dir = load_job(p)
    >>> job.name, job_dir == d, resolve(job_dir, job.data.image_dir) == os.path.join(d, "photos")
    ('flowers', True, True)
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise JobError(f"job file {path!r} cannot be read ({error.strerror or error}): "
                       "give the path of a YAML job file (see docs/jobs.md).") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise JobError(f"{path}: not valid YAML: {error}") from None
    return parse_job(data, path), os.path.dirname(os.path.abspath(path))


def resolve(job_dir, path):
    """``path`` relative to the job file's folder (absolute paths and
    ``~`` stay as they are); ``None`` stays ``None``.

    Example:
    >>> resolve("/jobs", "data/x.npz"), resolve("/jobs", "/abs.npz"), resolve("/j", None)
    ('/jobs/data/x.npz', '/abs.npz', None)
    """
    if path is None:
        return None
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(job_dir, path)
