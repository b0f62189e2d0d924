"""One process of tests/test_multiworker_tf.py: the tf_keras Distiller under
``tf.distribute.MultiWorkerMirroredStrategy`` (or, without ``TF_CONFIG``,
the same run in one process), its results written as JSON.

Usage (``TF_CONFIG`` in the environment makes it a worker of that cluster)::

    python tests/_mwms_worker.py --out result.json [--epochs 3]
        [--teacher-outside] [--cache-teacher] [--backup-dir DIR]
        [--kill-after-first-epoch] [--disk-cache DIR]

A tiny deterministic problem (256 samples of 8 features, 3 classes, global
batch 32, ``shuffle=False``) and fixed initial weights, so every run starts
from the same state. ``--kill-after-first-epoch`` SIGKILLs this process in
``on_epoch_end`` of epoch 0, after ``BackupAndRestore`` (``--backup-dir``)
has written its backup, once it has written what it saw. ``--disk-cache``
adds, in the same process and strategy, a second fit of fresh models on
``tf.data.Dataset.from_tensor_slices((x, y)).batch(32)`` with
``cache_teacher=DiskCache(DIR, dtype="float32")``; its results go under
``result["disk_cache"]``. Importing this
module imports no TensorFlow: `train` does, after ``TF_CONFIG`` is set.
"""

import argparse
import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _multiprocess import (  # noqa: E402
    CLASSES, FEATURES, fixed_weights, make_data, write_json)

GLOBAL_BATCH = 32


def make_model(tf_keras, name, hidden, seed):
    """A Dense(hidden, relu) -> Dense(3) model with weights from ``seed``."""
    model = tf_keras.Sequential([
        tf_keras.layers.Dense(hidden, activation="relu", input_shape=(FEATURES,),
                              name=f"{name}_hidden"),
        tf_keras.layers.Dense(CLASSES, name=f"{name}_logits"),
    ], name=name)
    model.set_weights(fixed_weights(model, seed))
    return model


def compiled_distiller(tf_keras, distiller_class, teacher):
    """The student built and the distiller compiled (in the open scope)."""
    student = make_model(tf_keras, "student", 8, seed=2)
    distiller = distiller_class(student, teacher)
    distiller.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate=0.01),
        student_loss_fn=tf_keras.losses.SparseCategoricalCrossentropy(
            from_logits=True),
        alpha=0.3, temperature=2.0)
    return distiller, student


def _lists(arrays):
    """numpy arrays as nested lists, for JSON."""
    return [a.tolist() for a in arrays]


def train(args, result):
    """Builds, compiles and fits the distiller; fills ``result`` in."""
    import numpy as np
    import tensorflow as tf
    import tf_keras

    import keras_distill.nan_guard
    from keras_distill.tf_keras import Distiller

    tf.config.threading.set_intra_op_parallelism_threads(1)
    worker = "TF_CONFIG" in os.environ
    strategy = (tf.distribute.MultiWorkerMirroredStrategy() if worker
                else tf.distribute.get_strategy())
    result["replicas"] = strategy.num_replicas_in_sync

    # Keep each NaN guard that fit creates, to read its snapshot.
    guards = []
    make_guard = keras_distill.nan_guard.nan_guard

    def recording_guard(distiller):
        guards.append(make_guard(distiller))
        return guards[-1]

    keras_distill.nan_guard.nan_guard = recording_guard

    x, y = make_data()
    if args.teacher_outside:
        teacher = make_model(tf_keras, "teacher", 16, seed=1)
    with strategy.scope():
        if not args.teacher_outside:
            teacher = make_model(tf_keras, "teacher", 16, seed=1)
        teacher_before = teacher.get_weights()
        distiller, student = compiled_distiller(tf_keras, Distiller, teacher)
    result["teacher_swapped"] = distiller.teacher is not teacher
    result["student_before_fit"] = _lists(student.get_weights())

    epoch_begins = []

    def on_train_begin(logs=None):
        guard = guards[-1]
        state = [np.asarray(v.numpy()) for v in guard._state()]
        result["guard_at_train_begin"] = {
            "student": _lists(guard.good[:len(student.weights)]),
            "matches_state": len(state) == len(guard.good) and all(
                np.array_equal(a, b) for a, b in zip(state, guard.good)),
        }
        result["student_at_train_begin"] = _lists(student.get_weights())
        result["iterations_at_train_begin"] = int(
            distiller.optimizer.iterations.numpy())

    def on_epoch_end(epoch, logs=None):
        if epoch == 0 and args.kill_after_first_epoch:
            result["killed_after_epoch"] = epoch
            result["logs_before_kill"] = {k: float(v) for k, v in logs.items()}
            result["student_at_kill"] = _lists(student.get_weights())
            result["seconds"] = round(time.time() - result["start"], 1)
            write_json(args.out, result)
            os.kill(os.getpid(), signal.SIGKILL)

    callbacks = [tf_keras.callbacks.LambdaCallback(
        on_train_begin=on_train_begin,
        on_epoch_begin=lambda epoch, logs=None: epoch_begins.append(epoch),
        on_epoch_end=on_epoch_end)]
    if args.backup_dir:
        # First: keras_distill puts its NaN guard right after it, before ours.
        callbacks.insert(0, tf_keras.callbacks.BackupAndRestore(args.backup_dir))
    history = distiller.fit(x, y, batch_size=GLOBAL_BATCH, epochs=args.epochs,
                            shuffle=False, verbose=0, callbacks=callbacks,
                            cache_teacher=args.cache_teacher)
    result["history"] = {k: [float(v) for v in vs]
                         for k, vs in history.history.items()}
    result["history_epochs"] = list(history.epoch)
    result["epoch_begins"] = epoch_begins
    result["optimizer_iterations"] = int(distiller.optimizer.iterations.numpy())
    result["teacher_cache_samples"] = (getattr(distiller, "teacher_cache_info", None)
                                       or {}).get("samples")
    result["teacher_unchanged"] = all(
        np.array_equal(a, b) for a, b in zip(teacher_before, teacher.get_weights()))
    result["student_after_fit"] = _lists(student.get_weights())
    if args.disk_cache:
        result["disk_cache"] = fit_disk_cache(args, strategy, x, y)


def fit_disk_cache(args, strategy, x, y):
    """Fresh models fitted on a tf.data dataset of global batches with the
    teacher's outputs cached on disk in ``args.disk_cache``; what it logged."""
    import numpy as np
    import tensorflow as tf
    import tf_keras

    from keras_distill import DiskCache
    from keras_distill.tf_keras import Distiller

    start = time.time()
    with strategy.scope():
        teacher = make_model(tf_keras, "teacher", 16, seed=1)
        teacher_before = teacher.get_weights()
        distiller, student = compiled_distiller(tf_keras, Distiller, teacher)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    history = distiller.fit(
        dataset, epochs=args.epochs, shuffle=False, verbose=0,
        cache_teacher=DiskCache(args.disk_cache, dtype="float32"))
    info = distiller.teacher_cache_info
    return {"history": {k: [float(v) for v in vs]
                        for k, vs in history.history.items()},
            "history_epochs": list(history.epoch),
            "teacher_cache_samples": info["samples"],
            "teacher_cache_shards": info["shards"],
            "teacher_unchanged": all(np.array_equal(a, b) for a, b in zip(
                teacher_before, teacher.get_weights())),
            "student_after_fit": _lists(student.get_weights()),
            "seconds": round(time.time() - start, 1)}


def main():
    """Parses the arguments, trains, writes the result (or the error)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--teacher-outside", action="store_true",
                        help="build the teacher outside strategy.scope()")
    parser.add_argument("--cache-teacher", action="store_true")
    parser.add_argument("--backup-dir")
    parser.add_argument("--kill-after-first-epoch", action="store_true")
    parser.add_argument("--disk-cache", metavar="DIR",
                        help="then fit again, the teacher cached in DIR")
    args = parser.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    result = {"start": time.time(), "tf_config": os.environ.get("TF_CONFIG")}
    code = 0
    try:
        train(args, result)
    except Exception as error:  # noqa: BLE001 - reported to the test
        text = "".join(traceback.format_exception_only(type(error), error))
        result["error"] = {"type": type(error).__name__, "message": text[:2000],
                           "traceback": traceback.format_exc()[-3000:]}
        traceback.print_exc()
        code = 1
    result["seconds"] = round(time.time() - result["start"], 1)
    write_json(args.out, result)
    if code:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # no waiting on TensorFlow's threads (a dead peer's collectives)


if __name__ == "__main__":
    main()
