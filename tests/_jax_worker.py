"""One process of the 2-process JAX test (`tests/test_multiprocess_jax.py`).

Started twice by the test, with ``KERAS_BACKEND=jax``::

    python tests/_jax_worker.py --pid {0,1} --port PORT --out DIR

Each process joins ``keras.distribution.initialize`` on 127.0.0.1:PORT,
builds a teacher and a student BEFORE ``set_distribution`` (for the
placement cases), sets ``DataParallel(auto_shard_dataset=False)``, then
runs every case in turn, each case's outcome (its per-epoch history or its
error) recorded rather than raised. Last, with the distribution unset, it
runs the one-process references on this process's own device: the whole
arrays, global batch ``GLOBAL_BATCH``. It writes ``DIR/result_<pid>.json``
and, for the disk-cache cases, the caches ``DIR/disk-<pid>`` (its own) and
``DIR/disk-shared`` (written by both processes at once).

Tiny models with fixed numpy weights on a deterministic 256x8, 3-class
problem (the scale-out probe's set-up, bench/probes/scaleout/).
"""

import argparse
import json
import os
import sys
import time
import traceback

if __name__ == "__main__":  # never in a process that imports this file
    os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _multiprocess import FEATURES, CLASSES, fixed_weights, make_data  # noqa: E402
GLOBAL_BATCH = 32
EPOCHS = 2
NPROC = 2
DISK_SHARD = 64  # samples per shard of the disk cases: 4 shards


def build(keras, role):
    """The teacher (16 hidden units) or the student (8), fixed weights."""
    prefix, units, seed = ("t", 16, 1) if role == "teacher" else ("s", 8, 2)
    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(units, activation="relu", name=f"{prefix}_hidden"),
        keras.layers.Dense(CLASSES, name=f"{prefix}_logits"),
    ], name=role)
    model.set_weights(fixed_weights(model, seed))
    return model


def distiller(keras, student, teacher, feature=False):
    import keras_distill

    if feature:  # RKD on the hidden layers: no adapter, widths may differ
        d = keras_distill.FeatureDistiller(student, teacher, pairs=[
            keras_distill.FeaturePair("t_hidden", "s_hidden", loss="rkd",
                                      weight=0.1)])
    else:
        d = keras_distill.Distiller(student=student, teacher=teacher)
    d.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01),
              metrics=[keras.metrics.SparseCategoricalAccuracy()],
              student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
                  from_logits=True),
              alpha=0.3, temperature=2.0)
    return d


def history(fit_result):
    return {k: [float(v) for v in vs] for k, vs in fit_result.history.items()}


def error_of(error):
    return {"type": type(error).__name__, "message": str(error)}


def unchanged(model, before):
    import numpy as np

    return all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def run_case(results, name, fn):
    """Records ``fn()``'s dict, or its error, under ``name``."""
    start = time.time()
    try:
        results[name] = fn()
    except Exception as error:  # noqa: BLE001 - recorded for the test
        results[name] = {"error": error_of(error),
                         "trace": traceback.format_exc()[-2000:]}
    results[name]["seconds"] = round(time.time() - start, 1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    t0 = time.time()
    results = {"pid": args.pid}
    import keras

    keras.distribution.initialize(job_addresses=f"127.0.0.1:{args.port}",
                                  num_processes=NPROC, process_id=args.pid)
    early = {"teacher": build(keras, "teacher"),
             "student": build(keras, "student")}
    import jax
    import tensorflow as tf

    from keras_distill import DiskCache
    from keras_distill.datasets import process_slice

    distribution = keras.distribution.DataParallel(
        devices=jax.devices(), auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    x, y = make_data()
    xs, ys = process_slice((x, y), GLOBAL_BATCH)
    fit_kwargs = dict(epochs=EPOCHS, shuffle=False, verbose=0)
    local = GLOBAL_BATCH // NPROC

    def sliced(cache_teacher=False, teacher=None, feature=False):
        teacher = teacher or build(keras, "teacher")
        before = [w.copy() for w in teacher.get_weights()]
        d = distiller(keras, build(keras, "student"), teacher, feature)
        out = {"history": history(d.fit(xs, ys, batch_size=local,
                                        cache_teacher=cache_teacher,
                                        **fit_kwargs)),
               "teacher_unchanged": unchanged(teacher, before),
               "trained_teacher_unchanged": unchanged(d.teacher, before),
               "teacher_swapped": d.teacher is not teacher,
               "rows": len(ys)}
        if cache_teacher:
            out["cache_shape"] = list(d.teacher_cache_info["shape"])
        if out["teacher_swapped"]:
            old = {id(v) for v in teacher.variables}
            out["clone_spans_devices"] = all(
                len(v.value.sharding.device_set) == NPROC
                for v in d.teacher.variables)
            out["old_teacher_untracked"] = not any(
                id(v) in old for v in d.variables)
        return out

    run_case(results, "numpy", sliced)
    run_case(results, "cache", lambda: sliced(cache_teacher=True))
    run_case(results, "feature_cache",
             lambda: sliced(cache_teacher=True, feature=True))
    run_case(results, "teacher_before",
             lambda: sliced(teacher=early["teacher"]))

    def student_before():
        distiller(keras, early["student"], build(keras, "teacher"))
        return {"compiled": True}

    run_case(results, "student_before", student_before)

    distribution.auto_shard_dataset = True

    def autoshard_numpy():
        d = distiller(keras, build(keras, "student"), build(keras, "teacher"))
        d.fit(x, y, batch_size=GLOBAL_BATCH, cache_teacher=True, **fit_kwargs)
        return {"fitted": True}

    def tfdata():
        teacher = build(keras, "teacher")
        before = [w.copy() for w in teacher.get_weights()]
        d = distiller(keras, build(keras, "student"), teacher)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
        return {"history": history(d.fit(ds, **fit_kwargs)),
                "teacher_unchanged": unchanged(teacher, before)}

    def tfdata_disk(directory):
        """The tf.data case with the teacher's outputs cached on disk: the
        teacher pass writes the shards, each epoch streams them zipped with
        the inputs, and the distribution shards that stream (rebatch to 16,
        then every other batch) as it does the plain dataset. Each process
        iterates (and caches) the WHOLE dataset: its 256 samples."""
        teacher = build(keras, "teacher")
        before = [w.copy() for w in teacher.get_weights()]
        d = distiller(keras, build(keras, "student"), teacher)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
        start = time.time()
        disk = DiskCache(directory, dtype="float32", shard_size=DISK_SHARD)
        out = {"history": history(d.fit(ds, cache_teacher=disk, **fit_kwargs)),
               "teacher_unchanged": unchanged(teacher, before),
               "trained_teacher_unchanged": unchanged(d.teacher, before),
               "samples": d.teacher_cache_info["samples"],
               "shards": d.teacher_cache_info["shards"],
               "started": start}
        return out

    run_case(results, "autoshard_numpy", autoshard_numpy)
    run_case(results, "tfdata", tfdata)
    # One directory per process, then one both processes write at once
    # (the same bytes, each file written atomically).
    run_case(results, "tfdata_disk", lambda: tfdata_disk(
        os.path.join(args.out, f"disk-{args.pid}")))
    run_case(results, "tfdata_disk_shared", lambda: tfdata_disk(
        os.path.join(args.out, "disk-shared")))

    # The one-process references: no distribution, this process's device,
    # the whole arrays in global batches.
    keras.distribution.set_distribution(None)

    def reference(feature=False):
        with jax.default_device(jax.local_devices()[0]):
            d = distiller(keras, build(keras, "student"),
                          build(keras, "teacher"), feature)
            return {"history": history(d.fit(x, y, batch_size=GLOBAL_BATCH,
                                             **fit_kwargs))}

    run_case(results, "reference", reference)
    run_case(results, "feature_reference", lambda: reference(feature=True))
    results["seconds"] = round(time.time() - t0, 1)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"result_{args.pid}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)
    jax.distributed.shutdown()  # after the other process's last collective


if __name__ == "__main__":
    main()
