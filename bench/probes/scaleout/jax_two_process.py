"""Prototype: keras_distill.Distiller on Keras 3 / JAX, 2 processes vs 1.

Usage (the launcher does everything; every process runs under nice -n 19,
every multi-process run is wrapped in `timeout 120` and uses 127.0.0.1):

    .venv/bin/python bench/probes/scaleout/jax_two_process.py            # all cases
    .venv/bin/python bench/probes/scaleout/jax_two_process.py --cases numpy,tfdata

Internal modes (started by the launcher):
    ... jax_two_process.py --role single --case numpy
    ... jax_two_process.py --role worker --case numpy --pid 0 --port 12355

Cases:
    numpy          per-process slice of every global batch, auto_shard_dataset=False
    numpy_autoshard numpy arrays with the default auto_shard_dataset=True (expect an error)
    numpy_full     every process feeds the WHOLE arrays, auto_shard_dataset=False
                   (no error: shows what happens without the per-process slice)
    tfdata         tf.data.Dataset batched by the GLOBAL batch, auto_shard_dataset=True
    cache          as `numpy`, with fit(cache_teacher=True)
    cache_full     as `numpy_full`, with fit(cache_teacher=True)
    cache_patched  as `cache`, with Distiller._teacher_predict replaced by an
                   eager per-process loop (the fix proposed for keras_distill)
    teacher_before as `numpy`, the teacher built before set_distribution
    all_before     as `numpy`, student and teacher built before set_distribution
    teacher_before_clone  as teacher_before, the teacher cloned (clone_model +
                   set_weights) after set_distribution: the fix tried
    cache_local    as `cache`, with Distiller._teacher_predict replaced by a jitted
                   teacher.stateless_call on this process's device and local
                   copies of the teacher's weights (a stricter variant)

Each process writes <tmp>/keras_distill_scaleout/jax_<case>_<role><pid>.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import (CLASSES, FEATURES, GLOBAL_BATCH, OUT,  # noqa: E402
                     deterministic_weights, make_data)
from _common import load as _load  # noqa: E402
PY = sys.executable

EPOCHS = 2
NPROC = 2


# ------------------------------------------------------------------ data


def process_slice(a, pid, nproc=NPROC, batch=GLOBAL_BATCH):
    """This process's share of every global batch (shuffle=False):
    rows [k*B + pid*B/n, k*B + (pid+1)*B/n) for every batch k."""
    local = batch // nproc
    steps = len(a) // batch
    a = a[: steps * batch].reshape((steps, batch) + a.shape[1:])
    return a[:, pid * local:(pid + 1) * local].reshape(
        (steps * local,) + a.shape[2:])




def build_models(keras):
    teacher = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(16, activation="relu", name="t_hidden"),
        keras.layers.Dense(CLASSES, name="t_logits"),
    ], name="teacher")
    student = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(8, activation="relu", name="s_hidden"),
        keras.layers.Dense(CLASSES, name="s_logits"),
    ], name="student")
    teacher.set_weights(deterministic_weights(teacher, 1))
    student.set_weights(deterministic_weights(student, 2))
    return student, teacher


def patch_teacher_predict(distiller):
    """The fix tried for cache_teacher under JAX multi-process: the teacher
    runs eagerly over THIS process's arrays, batch by batch (Keras's
    `predict` cannot fetch a batch-sharded output spanning processes)."""
    import numpy as np
    import keras

    def _teacher_predict(x, batch_size):
        teacher = distiller._inference_teacher.model
        outs = [np.asarray(keras.ops.convert_to_numpy(
            teacher(x[i:i + batch_size], training=False)))
            for i in range(0, len(x), batch_size)]
        return np.concatenate(outs), {}

    distiller._teacher_predict = _teacher_predict


def patch_teacher_predict_local(distiller):
    """A stricter variant: the teacher's weights copied to this process's
    own device (their local replica) and a jitted `stateless_call` run there
    on this process's arrays; no global (cross-process) array is involved."""
    import jax
    import numpy as np

    def _teacher_predict(x, batch_size):
        teacher = distiller._inference_teacher.model
        device = jax.local_devices()[0]

        def local(variables):
            return [jax.device_put(np.asarray(v.value.addressable_data(0)),
                                   device) for v in variables]

        trainable = local(teacher.trainable_variables)
        non_trainable = local(teacher.non_trainable_variables)
        forward = jax.jit(lambda t, n, xb: teacher.stateless_call(
            t, n, xb, training=False)[0])
        outs = [np.asarray(forward(trainable, non_trainable, jax.device_put(
            x[i:i + batch_size], device)))
            for i in range(0, len(x), batch_size)]
        return np.concatenate(outs), {}

    distiller._teacher_predict = _teacher_predict


# ------------------------------------------------------------ one process
def run(role, case, pid, port):
    os.environ["KERAS_BACKEND"] = "jax"
    sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "..", "..")))
    result = {"role": role, "case": case, "pid": pid}
    t0 = time.time()
    try:
        import numpy as np
        import keras

        early = None
        if role == "worker":
            keras.distribution.initialize(
                job_addresses=f"127.0.0.1:{port}", num_processes=NPROC,
                process_id=pid)
            if case in ("teacher_before", "all_before",
                        "teacher_before_clone"):
                # Built BEFORE set_distribution (after initialize): their
                # variables are not laid out by DataParallel.
                early = build_models(keras)
            import jax

            devices = jax.devices()
            result["devices"] = [str(d) for d in devices]
            result["local_devices"] = [str(d) for d in jax.local_devices()]
            auto_shard = case in ("tfdata", "numpy_autoshard")
            distribution = keras.distribution.DataParallel(
                devices=devices, auto_shard_dataset=auto_shard)
            keras.distribution.set_distribution(distribution)
            result["auto_shard_dataset"] = auto_shard
        keras.utils.set_random_seed(0)
        import keras_distill

        x, y = make_data()
        student, teacher = build_models(keras)
        if case == "teacher_before":
            teacher = early[1]
        elif case == "teacher_before_clone":
            # The fix tried: a copy of the early teacher made under the
            # distribution (what keras_distill does for tf.distribute).
            teacher = keras.models.clone_model(early[1])
            teacher.set_weights(early[1].get_weights())
            result["clone_replicated"] = all(
                len(v.value.sharding.device_set) == NPROC
                for v in teacher.variables)
        elif case == "all_before":
            student, teacher = early
        teacher_before = [w.copy() for w in teacher.get_weights()]
        distiller = keras_distill.Distiller(student=student, teacher=teacher)
        distiller.compile(
            optimizer=keras.optimizers.Adam(learning_rate=0.01),
            metrics=[keras.metrics.SparseCategoricalAccuracy()],
            student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True),
            alpha=0.3, temperature=2.0)
        fit_kwargs = dict(epochs=EPOCHS, shuffle=False, verbose=0)
        if case.startswith("cache"):
            fit_kwargs["cache_teacher"] = True
        if case == "cache_patched":
            patch_teacher_predict(distiller)
        if case == "cache_local":
            patch_teacher_predict_local(distiller)
        if role == "single":
            history = distiller.fit(x, y, batch_size=GLOBAL_BATCH,
                                    **fit_kwargs)
        elif case == "tfdata":
            import tensorflow as tf

            ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(
                GLOBAL_BATCH)
            history = distiller.fit(ds, **fit_kwargs)
        elif case in ("numpy", "cache", "cache_patched", "cache_local",
                      "teacher_before", "all_before",
                      "teacher_before_clone"):
            history = distiller.fit(
                process_slice(x, pid), process_slice(y, pid),
                batch_size=GLOBAL_BATCH // NPROC, **fit_kwargs)
        elif case in ("numpy_full", "cache_full"):
            history = distiller.fit(x, y, batch_size=GLOBAL_BATCH // NPROC,
                                    **fit_kwargs)
        elif case == "numpy_autoshard":
            history = distiller.fit(x, y, batch_size=GLOBAL_BATCH,
                                    **fit_kwargs)
        else:
            raise ValueError(case)
        result["history"] = {k: [float(v) for v in vs]
                             for k, vs in history.history.items()}
        if case == "numpy":
            # evaluate: the same per-process slice; predict: may fail.
            if role == "single":
                ev = distiller.evaluate(x, y, batch_size=GLOBAL_BATCH,
                                        verbose=0, return_dict=True)
            else:
                ev = distiller.evaluate(
                    process_slice(x, pid), process_slice(y, pid),
                    batch_size=GLOBAL_BATCH // NPROC, verbose=0,
                    return_dict=True)
            result["evaluate"] = {k: float(v) for k, v in ev.items()}
            try:
                xs = x if role == "single" else process_slice(x, pid)
                pred = distiller.predict(
                    xs, batch_size=GLOBAL_BATCH // (1 if role == "single"
                                                    else NPROC), verbose=0)
                result["predict_shape"] = list(pred.shape)
            except Exception as error:  # noqa: BLE001 - recorded
                result["predict_error"] = (
                    f"{type(error).__name__}: {str(error)[:300]}")
        after = teacher.get_weights()
        result["teacher_unchanged"] = all(
            np.array_equal(a, b) for a, b in zip(teacher_before, after))
        result["teacher_max_change"] = float(max(
            np.max(np.abs(a - b)) for a, b in zip(teacher_before, after)))
        result["student_weights"] = [w.tolist() for w in student.get_weights()]
        result["optimizer_iterations"] = int(keras.ops.convert_to_numpy(
            distiller.optimizer.iterations))
        if hasattr(distiller, "teacher_cache_info"):
            result["teacher_cache_info"] = {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in distiller.teacher_cache_info.items()
                if isinstance(v, (int, float, str, tuple, list))}
    except BaseException as error:  # noqa: BLE001 - recorded
        text = "".join(traceback.format_exception_only(type(error), error))
        result["error"] = {
            "type": type(error).__name__,
            "first_lines": "\n".join(text.splitlines()[:6]),
            "length": len(text),
            "raised_in": [f"{f.filename}:{f.lineno} {f.name}" for f in
                          traceback.extract_tb(error.__traceback__)][-8:],
        }
    result["seconds"] = round(time.time() - t0, 1)
    os.makedirs(OUT, exist_ok=True)
    tag = f"{role}{pid}" if role == "worker" else "single"
    with open(os.path.join(OUT, f"jax_{case}_{tag}.json"), "w") as f:
        json.dump(result, f, indent=1)
    if role == "worker":
        # Let the other process finish its collectives before shutdown.
        try:
            import jax

            jax.distributed.shutdown()
        except Exception:  # noqa: BLE001
            pass


# ------------------------------------------------------------- launcher
ENV = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2",
           XLA_FLAGS="--xla_cpu_multi_thread_eigen=false "
                     "intra_op_parallelism_threads=1",
           OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")


def child(args, timeout):
    cmd = (["timeout", str(timeout), "nice", "-n", "19", PY, __file__]
           + args)
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)




def launch(cases, port):
    import numpy as np

    os.makedirs(OUT, exist_ok=True)
    summary_path = os.path.join(OUT, "jax_summary.json")
    summary = {}
    if os.path.exists(summary_path):  # earlier cases kept, these replaced
        with open(summary_path) as f:
            summary = json.load(f)
    singles = {}
    for case in cases:
        single_case = "cache" if case.startswith("cache") else "numpy"
        if single_case not in singles:
            t = time.time()
            p = child(["--role", "single", "--case", single_case], 120)
            log = p.communicate()[0]
            singles[single_case] = load(single_case, "single")
            singles[single_case]["wall"] = round(time.time() - t, 1)
            with open(os.path.join(OUT, f"jax_{single_case}_single.log"),
                      "w") as f:
                f.write(log)
        for tag in ("worker0", "worker1"):
            path = os.path.join(OUT, f"jax_{case}_{tag}.json")
            if os.path.exists(path):
                os.remove(path)
        t = time.time()
        procs = [child(["--role", "worker", "--case", case, "--pid", str(i),
                        "--port", str(port)], 120) for i in range(NPROC)]
        logs = [p.communicate()[0] for p in procs]
        wall = round(time.time() - t, 1)
        port += 1
        for i, log in enumerate(logs):
            with open(os.path.join(OUT, f"jax_{case}_worker{i}.log"),
                      "w") as f:
                f.write(log)
        ref = singles[single_case]
        entry = {"wall_2proc": wall, "wall_single": ref.get("wall"),
                 "single_evaluate": ref.get("evaluate"),
                 "single_predict_shape": ref.get("predict_shape"),
                 "single_history": ref.get("history"),
                 "single_error": ref.get("error")}
        for i in range(NPROC):
            res = load(case, f"worker{i}")
            w = {"seconds": res.get("seconds"),
                 "exit_code": procs[i].returncode,
                 "teacher_unchanged": res.get("teacher_unchanged"),
                 "optimizer_iterations": res.get("optimizer_iterations"),
                 "history": res.get("history"), "error": res.get("error"),
                 "teacher_cache_info": res.get("teacher_cache_info"),
                 "evaluate": res.get("evaluate"),
                 "predict_shape": res.get("predict_shape"),
                 "predict_error": res.get("predict_error")}
            if res.get("history") and ref.get("history"):
                diffs = {k: float(np.max(np.abs(
                    np.array(v) - np.array(ref["history"][k]))))
                    for k, v in res["history"].items()
                    if k in ref["history"]}
                w["max_abs_diff_vs_single"] = diffs
                w["student_weights_max_abs_diff"] = float(max(
                    np.max(np.abs(np.array(a) - np.array(b)))
                    for a, b in zip(res["student_weights"],
                                    ref["student_weights"])))
            entry[f"worker{i}"] = w
        summary[case] = entry
        print(f"== {case}: 2-proc wall {wall}s", flush=True)
        print(json.dumps(entry, indent=1)[:4000], flush=True)
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="launch",
                        choices=["launch", "single", "worker"])
    parser.add_argument("--case", default="numpy")
    parser.add_argument("--cases", default="numpy,numpy_autoshard,"
                        "numpy_full,tfdata,cache,cache_full,cache_patched,cache_local,"
                        "teacher_before,all_before,teacher_before_clone")
    parser.add_argument("--pid", type=int, default=0)
    parser.add_argument("--port", type=int, default=12355)
    args = parser.parse_args()
    if args.role == "launch":
        launch(args.cases.split(","), args.port)
    else:
        run(args.role, args.case, args.pid, args.port)


def load(case, tag):
    return _load('jax', case, tag)


if __name__ == "__main__":
    main()

