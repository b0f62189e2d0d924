"""What a job runs on: its data, teacher and student, built from the job file.

`load_data` reads ``data:`` into batched tf.data pipelines (`JobData`),
`load_teacher` and `build_student` make the Keras models of ``teacher:`` and
``student:``, `import_object` imports the ``module:function`` references
(from the job file's folder first). Every error names the key of the job
file it comes from and says what to do.
"""

import dataclasses
import difflib
import functools
import hashlib
import importlib
import json
import os
import sys
from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf

from keras_distill import _compat, models
from keras_distill.jobs import _data
from keras_distill.jobs.config import DataSpec, StudentSpec, TeacherSpec  # noqa: F401
from keras_distill.jobs.config import resolve

__all__ = ["JobData", "load_data", "load_teacher", "build_student", "import_object"]
_IMPORTED = {}  # top-level module name -> the file import_object imported it from


@dataclasses.dataclass
class JobData:
    """A job's data, ready to train on.

    ``train``, ``validation`` (or None) and ``test`` are batched tf.data
    pipelines of ``(x, y)``: ``x`` float32 already scaled (``x * scale +
    offset``), ``y`` int64 class ids; ``train`` is reshuffled each epoch
    (seeded), the others are not. ``input_shape`` is one image's shape
    (channels last), ``class_names`` strings (``"0"``, ``"1"``, ... for
    numeric labels), ``description`` names the data as it is,
    ``fingerprint`` is a SHA-256 of its content and of the settings that
    change it, ``counts`` the examples per split (None: a stream not counted),
    ``arrays`` the numpy ``(x, y)`` per split when the data fits in
    ``data.memory_limit_mb`` (else None: streamed).

    Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> x = np.arange(40 * 4 * 4).reshape(40, 4, 4) % 256
    >>> np.savez(os.path.join(d, "train.npz"), x=x.astype("uint8"), y=np.arange(40) % 2)
    >>> data = load_data(DataSpec(npz={"train": "train.npz"}, test_split=0.25,
    ...                           batch_size=8), d, log=lambda line: None)
    >>> data.counts, data.input_shape, data.class_names, data.arrays["test"][0].shape
    ({'train': 30, 'validation': 0, 'test': 10}, (4, 4, 1), ['0', '1'], (10, 4, 4, 1))
    >>> data.sample(3).shape, data.sample(3).dtype.name
    ((3, 4, 4, 1), 'float32')
    """

    train: Any
    validation: Any
    test: Any
    input_shape: tuple
    num_classes: int
    class_names: list
    description: str
    fingerprint: str
    counts: dict
    arrays: Optional[dict]
    _sampler: Any = dataclasses.field(default=None, repr=False, compare=False)

    def sample(self, n):
        """Up to ``n`` training images (float32, scaled), the same ones at
        every call, spread over the training split (for int8 calibration).

        Example: see `JobData`.
        """
        return self._sampler(int(n))


def load_data(spec, job_dir, seed=0, log=print):
    """Reads the data a job names (``data:``) into a `JobData`.

    Args:
        spec: The job's `keras_distill.jobs.config.DataSpec`.
        job_dir: The job file's folder (relative paths start there).
        seed: Seeds the held-out splits and the training shuffle.
        log: Called with one line of text per thing worth saying.

    ``validation_split``/``test_split`` hold a fraction of the training data
    out when the data has no such split of its own. An image folder gives
    the same validation files as ``keras.utils.image_dataset_from_directory(
    validation_split=v, subset=..., seed=seed)`` (held-out test files come
    out of its training files); arrays and records are permuted with the
    seed. With no test split the validation set is the test set; with
    neither, an error. ``train_samples`` keeps the first N training examples
    (an image folder: in seeded order) before anything is held out of them,
    ``test_samples`` the first N test examples. The data is held in memory
    when it takes at most ``memory_limit_mb`` as float32 and its size is
    known (images are read once), else streamed.

    Raises:
        ValueError: a missing file or folder, unreadable data, labels out of
            range, ...: the message names the key of the job file.

    Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> for name, n in (("a.npz", 12), ("b.npz", 4)):
    ...     np.savez(os.path.join(d, name), x=np.full((n, 2, 2, 3), 255, "uint8"),
    ...              y=np.arange(n) % 3)
    >>> data = load_data(DataSpec(npz={"train": "a.npz", "test": "b.npz"},
    ...                           batch_size=5), d)
    data: in memory (0.0 MB as float32)
    >>> data.description  # doctest: +ELLIPSIS
    'npz arrays .../a.npz, .../b.npz (3 classes; 12 train / 4 test images)'
    >>> x, y = next(iter(data.train)); x.shape, float(x.numpy().max()), y.dtype.name
    (TensorShape([5, 2, 2, 3]), 1.0, 'int64')
    """
    source = _data.read(spec, job_dir, log)
    parts, seed_matters = _data.carve(source, spec, seed, log)
    test_is_validation = parts["test"] is None
    if test_is_validation:
        if parts["validation"] is None:
            raise ValueError(f"data: no test set: {source.test_hint} (or "
                             "data.validation_split: then the validation set is the test set)")
        parts["test"] = parts["validation"]
        log("data: no test split given: the validation set is the test set")
    if spec.test_samples:
        parts["test"] = parts["test"].head(spec.test_samples)
    num_classes = source.num_classes
    if num_classes is None:  # from the (full) training labels
        labels = source.parts["train"].y
        num_classes = int(labels.max()) + 1 if len(labels) else 0
    if num_classes < 1:
        raise ValueError(f"{source.keys['train']}: no training examples")
    _data.check_labels(parts, source.keys, num_classes)
    counts = {s: (parts[s].count if parts[s] is not None else 0) for s in _data.SPLITS}
    description = _describe(source, counts, num_classes, test_is_validation)
    scale, offset = np.float32(spec.scale), np.float32(spec.offset)
    arrays = None
    if None in counts.values():
        log("data: streamed (the number of examples is unknown)")
    else:
        size_mb = sum(counts.values()) * int(np.prod(source.input_shape)) * 4 / 2**20
        if size_mb <= spec.memory_limit_mb:
            log(f"data: in memory ({size_mb:.1f} MB as float32)")
            arrays, done = {}, {}
            for split, part in parts.items():
                if part is not None and id(part) not in done:
                    x, y = part.materialize(source.keys[split])
                    done[id(part)] = ((x.astype("float32") * scale + offset).astype(
                        "float32"), y.astype("int64"))
                arrays[split] = None if part is None else done[id(part)]
        else:
            log(f"data: streamed ({size_mb:.0f} MB as float32 > data.memory_limit_mb "
                f"{spec.memory_limit_mb:g})")

    def pipeline(split, shuffle):
        part = parts[split]
        if part is None:
            return None
        if arrays is not None:
            dataset = tf.data.Dataset.from_tensor_slices(arrays[split])
        else:
            dataset = part.elements()
        if shuffle:
            buffer = min(spec.shuffle_buffer, part.count or spec.shuffle_buffer)
            dataset = dataset.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True)
        if arrays is None:
            if part.decode is not None:
                dataset = dataset.map(part.decode, num_parallel_calls=tf.data.AUTOTUNE)
            dataset = dataset.map(lambda x, y: (tf.cast(x, "float32") * scale + offset,
                                                tf.cast(y, "int64")))
        return dataset.batch(spec.batch_size).prefetch(tf.data.AUTOTUNE)

    return JobData(
        train=pipeline("train", True), validation=pipeline("validation", False),
        test=pipeline("test", False), input_shape=tuple(int(d) for d in source.input_shape),
        num_classes=num_classes, class_names=list(source.class_names or [
            str(i) for i in range(num_classes)]), description=description,
        fingerprint=_fingerprint(source, spec, seed, seed_matters), counts=counts,
        arrays=arrays, _sampler=_data.sampler(parts["train"], arrays, scale, offset))


def _fingerprint(source, spec, seed, seed_matters):
    """SHA-256 of the data's content id and the settings that change the data."""
    settings = {k: getattr(spec, k) for k in (
        "image_size", "color_mode", "scale", "offset", "validation_split", "test_split",
        "train_samples", "test_samples")}
    settings.update(seed=seed if seed_matters else None, input_shape=source.input_shape)
    blob = json.dumps([source.content, settings], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _describe(source, counts, num_classes, test_is_validation):
    """One line naming the data, e.g. ``image folder /p (3 classes: a, b, c; 9 train /
    3 test images)``."""
    shown = [f"{counts[s] if counts[s] is not None else '?'} {s}" for s in _data.SPLITS
             if s != "validation" or counts[s] != 0]
    text = " / ".join(shown) + source.unit
    if test_is_validation:
        text += "; the test set is the validation set"
    detail = source.detail if source.detail is not None else f"{num_classes} classes"
    return f"{source.what} ({detail}; {text})"


def import_object(reference, job_dir, argument):
    """Imports ``"module:function"`` (a dotted attribute is fine), looking in
    the job file's folder first.

    ``job_dir`` goes to the front of ``sys.path`` (once). A module of the
    same name that an earlier call imported from another job folder is
    replaced by the one in ``job_dir``.

    Raises:
        ValueError: naming ``argument`` and saying what was wrong: no such
            module, the import failed, no such attribute, not callable.

    Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with open(os.path.join(d, "doctest_models.py"), "w") as f:
    ...     _ = f.write("def f(a, b):\\n    return a + b\\n")
    >>> import_object("doctest_models:f", d, "student.builder")(2, 3)
    5
    >>> import_object("doctest_models:g", d, "student.builder")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: student.builder 'doctest_models:g': module 'doctest_models' (...) has no 'g'; ...
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute or ":" in attribute:
        raise ValueError(f"{argument} must be 'module:function' (e.g. "
                         f"'my_models:tiny_cnn'), got {reference!r}")
    job_dir = os.path.abspath(job_dir)
    if sys.path[:1] != [job_dir]:
        sys.path[:] = [job_dir] + [p for p in sys.path if p != job_dir]
    importlib.invalidate_caches()
    top = module_name.split(".")[0]
    local = next((p for p in (os.path.join(job_dir, top + ".py"),
                              os.path.join(job_dir, top, "__init__.py")) if os.path.isfile(p)),
                 None)
    if local and _IMPORTED.get(top, local) != local:  # imported from another job
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
    where = f"{argument} {reference!r}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name + ".").startswith(error.name + "."):
            raise ValueError(f"{where}: no module {module_name!r} in the job folder "
                             f"{job_dir} (looked for {module_name.replace('.', '/')}.py) "
                             "nor on the Python path") from None
        raise ValueError(f"{where}: importing {module_name!r} failed: {error}") from error
    except Exception as error:  # noqa: BLE001 - any error of the user's module
        raise ValueError(f"{where}: importing {module_name!r} failed "
                         f"({type(error).__name__}: {error})") from error
    if local:
        _IMPORTED[top] = local
    try:
        found = functools.reduce(getattr, attribute.split("."), module)
    except AttributeError:
        defined = sorted(n for n, v in vars(module).items() if callable(v)
                         and not n.startswith("_") and getattr(v, "__module__", None)
                         == module.__name__)
        close = difflib.get_close_matches(attribute, defined, n=1)
        raise ValueError(
            f"{where}: module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
            f"{attribute!r}" + (f"; did you mean {close[0]!r}?" if close else "")
            + (f"; it defines: {', '.join(defined)}" if defined else "")) from None
    if not callable(found):
        raise ValueError(f"{where}: {module_name}.{attribute} is a "
                         f"{type(found).__name__}, not a function")
    return found


def _inner_shape(preprocess, input_shape, given=None):
    if given:
        return tuple(given)
    if preprocess is not None and preprocess.resize:
        return (*preprocess.resize, input_shape[-1])
    return tuple(input_shape)


def _wrap(core, input_shape, preprocess, input_fn, probabilities, name):
    """``core`` behind the preprocessing, as a new functional model."""
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if preprocess is not None:
        if preprocess.resize:
            x = keras.layers.Resizing(*preprocess.resize, name="resize")(x)
        if preprocess.scale != 1 or preprocess.offset != 0:
            x = keras.layers.Rescaling(preprocess.scale, preprocess.offset, name="rescale")(x)
    if input_fn is not None:
        try:
            x = input_fn(x)
        except Exception:  # noqa: BLE001 - e.g. TensorFlow ops on a KerasTensor
            x = keras.layers.Lambda(input_fn, name="input_fn")(x)
    outputs = core(x)
    if isinstance(outputs, dict) and len(outputs) == 1:  # a SavedModel's endpoint
        outputs = next(iter(outputs.values()))
    if probabilities:  # log-probabilities are logits (softmax is shift-invariant)
        outputs = keras.ops.log(keras.ops.clip(outputs, 1e-7, 1.0))
    return keras.Model(inputs, outputs, name=name)


def _reason(error):
    """The informative line of an error (Keras puts it after a header)."""
    lines = [line.replace("\x1b[1m", "").replace("\x1b[0m", "").strip()
             for line in str(error).splitlines()]
    lines = [line for line in lines if line and not line.startswith("Exception encountered")]
    return (lines[0] if lines else type(error).__name__).rstrip(".")


def _check_input(core, fed, role, source, hint, note=""):
    """Refuses a model whose declared input shape is not ``fed``."""
    specs = []
    if isinstance(core, keras.layers.TFSMLayer):
        function = getattr(core, "call_endpoint_fn", None)
        specs = keras.tree.flatten(getattr(function, "structured_input_signature", ()))
    elif isinstance(core, keras.Model):
        specs = list(getattr(core, "inputs", None) or [])
    if len(specs) != 1:
        return
    declared = tuple(specs[0].shape)[1:]
    if None not in declared and declared != tuple(fed):
        raise ValueError(f"{role} ({source}) takes images of shape {declared}, but the data's "
                         f"are {tuple(fed)}{note}. "
                         f"{hint}")


def _check(model, input_shape, num_classes, role, source, hint):
    """``model`` takes a batch of ``input_shape`` and gives num_classes logits."""
    try:
        outputs = model(np.zeros((1, *input_shape), "float32"), training=False)
    except Exception as error:  # noqa: BLE001 - any refusal of the input
        raise ValueError(f"{role} ({source}) does not take the data's images of shape "
                         f"{tuple(input_shape)}: {_reason(error)}. {hint}") from error
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    flat = keras.tree.flatten(outputs)
    shape = tuple(flat[0].shape) if len(flat) == 1 else None
    if shape is None or len(shape) != 2 or shape[-1] != num_classes:
        got = f"{len(flat)} outputs" if shape is None else f"outputs of shape {shape[1:]}"
        raise ValueError(f"{role} ({source}) gives {got} per image, but the data has "
                         f"{num_classes} classes: it must end in {num_classes} logits")
    return model


def _load_weights(model, spec, job_dir, role):
    if not spec.weights:
        return model
    path = resolve(job_dir, spec.weights)
    if not os.path.isfile(path):
        raise ValueError(f"{role}.weights {path!r} does not exist: give a weights file "
                         "(.weights.h5, or a .keras model) of this architecture")
    try:
        model.load_weights(path)
    except Exception as error:  # noqa: BLE001 - any mismatch
        raise ValueError(f"{role}.weights {path!r} do not fit the model "
                         f"({type(error).__name__}: {error})") from error
    return model


def _load_model(path, key):
    if not os.path.exists(path):
        raise ValueError(f"{key} {path!r} does not exist: give a .keras or .h5 model file"
                         + (" or a SavedModel folder" if key.startswith("teacher") else "")
                         + " (relative paths start at the job file's folder)")
    if not path.endswith((".keras", ".h5")):
        raise ValueError(f"{key} {path!r} is not a .keras/.h5 model file"
                         + (" nor a SavedModel folder (with saved_model.pb)"
                            if key.startswith("teacher") else ""))
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - any loading error
        raise ValueError(f"{key} {path!r} cannot be loaded by Keras 3 "
                         f"({type(error).__name__}: {error})") from error


def load_teacher(spec, job_dir, input_shape, num_classes, log=print):
    """The teacher of ``teacher:`` (a `TeacherSpec`), taking the data's
    images (``input_shape``) and giving ``num_classes`` logits.

    * ``path``: a ``.keras``/``.h5`` model, or a SavedModel folder used through
      ``keras.layers.TFSMLayer`` (inference only: it cannot be trained).
    * ``application``: ``keras.applications.<name>(input_shape, classes,
      weights=None, classifier_activation=None, **kwargs)``, then ``weights``.
    * ``builder``: ``function(input_shape, num_classes)``, then ``weights``.

    The teacher's own input shape is ``input_shape`` of the spec, else
    ``preprocess.resize`` with the data's channels, else the data's. With
    ``preprocess`` (resize, then ``x * scale + offset``) or ``input_fn``
    (both: in that order) the teacher is wrapped in a new model named
    ``teacher`` that takes the data's images (the given model is untouched).
    ``outputs: probabilities`` appends ``log(clip(p))``: log-probabilities
    are logits up to a constant per image, and a softmax (what distillation
    applies) ignores such a constant, so they give back ``p`` exactly.

    Raises:
        ValueError: a missing file, an unknown application, a teacher that
            does not take the data's images or does not give ``num_classes``
            outputs (the message says which and what to do).

    Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
    ...                   keras.layers.Dense(3)]).save(os.path.join(d, "t.keras"))
    >>> teacher = load_teacher(TeacherSpec(path="t.keras",
    ...                                    preprocess={"resize": [4, 4]}), d, (8, 8, 1), 3)
    >>> teacher.name, teacher.input_shape, teacher.output_shape
    ('teacher', (None, 8, 8, 1), (None, 3))
    """
    input_shape = tuple(input_shape)
    inner = _inner_shape(spec.preprocess, input_shape, spec.input_shape)
    hint = ("Give teacher.preprocess: {resize: [height, width]} (and scale/offset) or "
            "teacher.input_fn to map the data's images to the teacher's input.")
    saved_model = False
    if spec.path:
        path = resolve(job_dir, spec.path)
        source = f"path {path!r}"
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb")):
            try:
                core = keras.layers.TFSMLayer(path, call_endpoint="serving_default",
                                              name="saved_model")
            except Exception as error:  # noqa: BLE001 - any SavedModel error
                raise ValueError(f"teacher.path {path!r}: the SavedModel cannot be used "
                                 f"({type(error).__name__}: {error})") from error
            saved_model = True
            log(f"teacher: SavedModel {path} (inference only: it cannot be trained or "
                "fine-tuned; a teacher stage needs a .keras model)")
        elif os.path.isdir(path):
            raise ValueError(f"teacher.path {path!r} is a folder without saved_model.pb: "
                             "give a .keras/.h5 file or a SavedModel folder")
        else:
            core = _load_model(path, "teacher.path")
    elif spec.application:
        source = f"application {spec.application}"
        names = sorted(n for n in dir(keras.applications) if n[:1].isupper())
        if spec.application not in names:
            close = difflib.get_close_matches(spec.application, names, n=1)
            raise ValueError(f"teacher.application {spec.application!r} is not in "
                             "keras.applications" + (f"; did you mean {close[0]}?" if close
                                                     else "")
                             + f" (it has {len(names)}, e.g. MobileNetV2, ResNet50, "
                             "EfficientNetB0, ConvNeXtTiny)")
        arguments = dict(input_shape=inner, classes=num_classes, weights=None,
                         classifier_activation=None)
        arguments.update(spec.kwargs)
        try:
            core = getattr(keras.applications, spec.application)(**arguments)
        except Exception as error:  # noqa: BLE001 - any constructor error
            raise ValueError(f"teacher.application {spec.application}({arguments}) "
                             f"failed: {type(error).__name__}: {error}") from error
        core = _load_weights(core, spec, job_dir, "teacher")
    else:
        source = f"builder {spec.builder!r}"
        core = _call_builder(spec.builder, job_dir, "teacher.builder", inner, num_classes,
                             spec.kwargs)
        core = _load_weights(core, spec, job_dir, "teacher")
    input_fn = spec.input_fn and import_object(spec.input_fn, job_dir, "teacher.input_fn")
    if not input_fn:
        size = spec.preprocess.resize if spec.preprocess and spec.preprocess.resize else None
        _check_input(core, (*(size or input_shape[:-1]), input_shape[-1]), "teacher", source,
                     hint, " after teacher.preprocess" if spec.preprocess else "")
    probabilities = spec.outputs == "probabilities"
    model = core
    try:
        if saved_model or spec.preprocess or input_fn or probabilities:
            model = _wrap(core, input_shape, spec.preprocess, input_fn, probabilities,
                          "teacher")
    except Exception as error:  # noqa: BLE001 - the wrapped input does not fit
        raise ValueError(f"teacher ({source}) does not take the data's images of shape "
                         f"{input_shape}{' after preprocessing' * bool(spec.preprocess)}: "
                         f"{_reason(error)}. {hint}") from error
    return _check(model, input_shape, num_classes, "teacher", source, hint)


def _call_builder(reference, job_dir, key, input_shape, num_classes, kwargs=None):
    builder = import_object(reference, job_dir, key)
    kwargs = kwargs or {}
    try:
        model = builder(tuple(input_shape), num_classes, **kwargs)
    except Exception as error:  # noqa: BLE001 - any error of the user's builder
        extra = "".join(f", {k}={v!r}" for k, v in kwargs.items())
        raise ValueError(f"{key} {reference!r} failed when called as "
                         f"{reference.split(':')[1]}({tuple(input_shape)}, {num_classes}"
                         f"{extra}): {type(error).__name__}: {error}") from error
    if _compat.flavour_of(model) == _compat.TF_KERAS:
        raise TypeError(f"{key} {reference!r} returned a tf_keras (Keras 2) model: build "
                        "it with `import keras` (Keras 3)")
    if not isinstance(model, keras.Model):
        raise TypeError(f"{key} {reference!r} must return a keras.Model, got "
                        f"{type(model).__name__}")
    return model


def build_student(spec, job_dir, input_shape, num_classes, seed=0):
    """The student of ``student:`` (a `StudentSpec`): ``builder`` called as
    ``function(input_shape, num_classes)``, a saved ``path``, or a
    ``builtin`` (`keras_distill.models.build_student`).

    ``keras.utils.set_random_seed(seed)`` comes first, so the same seed
    gives the same initial weights. With ``preprocess`` the student is built
    for the resized shape and wrapped in a model named ``student`` that
    takes the data's images.

    Raises:
        TypeError: the builder returned no Keras 3 model.
        ValueError: a missing file or module, or a model that does not take
            the data's images or does not give ``num_classes`` logits.

    Example:
    >>> a = build_student(StudentSpec(builtin="mlp"), ".", (6, 6, 1), 4, seed=1)
    >>> b = build_student(StudentSpec(builtin="mlp"), ".", (6, 6, 1), 4, seed=1)
    >>> same = all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    >>> a.output_shape, same
    ((None, 4), True)
    """
    input_shape = tuple(input_shape)
    keras.utils.set_random_seed(seed)
    inner = _inner_shape(spec.preprocess, input_shape)
    if spec.builder:
        source = f"builder {spec.builder!r}"
        model = _call_builder(spec.builder, job_dir, "student.builder", inner, num_classes)
    elif spec.path:
        source = f"path {resolve(job_dir, spec.path)!r}"
        model = _load_model(resolve(job_dir, spec.path), "student.path")
    else:
        source = f"builtin {spec.builtin}"
        model = models.build_student(spec.builtin, inner, num_classes, seed)
    hint = "Build it for the data's input shape, or give student.preprocess: {resize: [h, w]}."
    _check_input(model, inner, "student", source, hint,
                 " after student.preprocess" if spec.preprocess else "")
    if spec.preprocess:
        try:
            model = _wrap(model, input_shape, spec.preprocess, None, False, "student")
        except Exception as error:  # noqa: BLE001 - the resized input does not fit
            raise ValueError(f"student ({source}) does not take the data's images of shape "
                             f"{input_shape} after preprocessing: {_reason(error)}. "
                             f"{hint}") from error
    return _check(model, input_shape, num_classes, "student", source, hint)
