"""Prototype: keras_distill.Distiller (tf_keras twin) under
tf.distribute.MultiWorkerMirroredStrategy, 2 workers on 127.0.0.1 vs 1 process.

Usage (every process under nice -n 19; every multi-process run under
`timeout 120`; loopback addresses only):

    .venv/bin/python bench/probes/scaleout/mwms_two_worker.py             # all cases
    .venv/bin/python bench/probes/scaleout/mwms_two_worker.py --cases inscope,backup

Cases (each a 2-worker run compared with a 1-process run, same global batch):
    inscope              student + teacher built inside strategy.scope(), numpy input
    inscope_tfdata       the same with a tf.data.Dataset (global batch, DATA sharding)
    teacher_outside      teacher built outside the scope; keras_distill's own
                         compile-time fix (_distribute.prepare) left on
    teacher_outside_raw  the same with keras_distill's fix switched off
                         (teacher_in_scope patched to return the teacher as is):
                         the raw tf_keras error
    teacher_clone        keras_distill's fix switched off, the user clones the
                         teacher into the scope (clone_model + set_weights)
    cache                as inscope, with fit(cache_teacher=True)
    backup               BackupAndRestore: worker 1 SIGKILLs itself right after
                         epoch 1 is backed up (marker file), the launcher kills
                         worker 0, then restarts both: which epoch does it resume at?

Internal: ... --role single|worker --case CASE [--index I --ports P0,P1 --phase 1|2]
Results: <tmp>/keras_distill_scaleout/mwms_<case>_<role><index>[_phase].json, summary
<tmp>/keras_distill_scaleout/mwms_summary.json.
"""

import argparse
import json
import os
import shutil
import signal
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

NWORKERS = 2


def epochs_for(case):
    return 3 if case == "backup" else 2


# ------------------------------------------------------------------ data




def make_teacher(tf_keras):
    teacher = tf_keras.Sequential([
        tf_keras.layers.Dense(16, activation="relu", input_shape=(FEATURES,),
                              name="t_hidden"),
        tf_keras.layers.Dense(CLASSES, name="t_logits"),
    ], name="teacher")
    teacher.set_weights(deterministic_weights(teacher, 1))
    return teacher


def make_student(tf_keras):
    student = tf_keras.Sequential([
        tf_keras.layers.Dense(8, activation="relu", input_shape=(FEATURES,),
                              name="s_hidden"),
        tf_keras.layers.Dense(CLASSES, name="s_logits"),
    ], name="student")
    student.set_weights(deterministic_weights(student, 2))
    return student


def error_record(error):
    text = "".join(traceback.format_exception_only(type(error), error))
    return {
        "type": type(error).__name__,
        "first_lines": "\n".join(text.splitlines()[:4])[:1500],
        "length": len(text),
        "raised_in": [f"{f.filename}:{f.lineno} {f.name}" for f in
                      traceback.extract_tb(error.__traceback__)][-8:],
    }


# ------------------------------------------------------------ one process
def run(role, case, index, ports, phase):
    result = {"role": role, "case": case, "index": index, "phase": phase}
    t0 = time.time()
    tag = "single" if role == "single" else f"worker{index}"
    if phase:
        tag += f"_phase{phase}"
    out_path = os.path.join(OUT, f"mwms_{case}_{tag}.json")

    def dump():
        result["seconds"] = round(time.time() - t0, 1)
        with open(out_path, "w") as f:
            json.dump(result, f, indent=1)

    try:
        if role == "worker":
            os.environ["TF_CONFIG"] = json.dumps({
                "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                "task": {"type": "worker", "index": index},
            })
        import numpy as np
        import tensorflow as tf
        import tf_keras

        sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "..", "..")))
        import keras_distill
        from keras_distill import _distribute

        tf.config.threading.set_intra_op_parallelism_threads(1)
        if role == "worker":
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            strategy = tf.distribute.get_strategy()  # the default strategy
        result["replicas"] = strategy.num_replicas_in_sync

        if case in ("teacher_outside_raw", "teacher_clone"):
            # Switch keras_distill's compile-time teacher copy off.
            _distribute.teacher_in_scope = (
                lambda teacher, strategy, can_clone=True: teacher)
            result["keras_distill_fix"] = "disabled"

        x, y = make_data()
        outside = case.startswith("teacher_") and role == "worker"
        if outside:
            teacher = make_teacher(tf_keras)  # NOT in the scope
        with strategy.scope():
            if not outside:
                teacher = make_teacher(tf_keras)
            user_teacher = teacher
            if case == "teacher_clone" and role == "worker":
                teacher = tf_keras.models.clone_model(user_teacher)
                teacher.set_weights(user_teacher.get_weights())
            student = make_student(tf_keras)
            teacher_before = [w.copy() for w in user_teacher.get_weights()]
            distiller = keras_distill.Distiller(student, teacher)
            result["distiller_class"] = (f"{type(distiller).__module__}."
                                         f"{type(distiller).__name__}")
            t_compile = time.time()
            try:
                distiller.compile(
                    optimizer=tf_keras.optimizers.Adam(learning_rate=0.01),
                    metrics=[tf_keras.metrics.SparseCategoricalAccuracy()],
                    student_loss_fn=tf_keras.losses.
                    SparseCategoricalCrossentropy(from_logits=True),
                    alpha=0.3, temperature=2.0)
            finally:
                result["compile_seconds"] = round(time.time() - t_compile, 1)
            result["teacher_swapped_by_keras_distill"] = (
                distiller.teacher is not teacher)
            if role == "worker":
                result["teacher_vars_in_scope"] = not _distribute.outside_scope(
                    distiller.teacher, strategy)

        callbacks = []
        epoch_begins = []
        callbacks.append(tf_keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: epoch_begins.append(epoch)))
        if case == "backup":
            backup_dir = os.path.join(OUT, "mwms_backup_dir"
                                      if role == "worker"
                                      else "mwms_backup_dir_single")
            callbacks.insert(0, tf_keras.callbacks.BackupAndRestore(
                backup_dir=backup_dir))
            marker = os.path.join(OUT, "mwms_kill_marker")
            if role == "worker" and index == 1 and os.path.exists(marker):

                class KillAfterFirstEpoch(tf_keras.callbacks.Callback):
                    def on_epoch_end(self, epoch, logs=None):
                        if epoch == 0:
                            result["killed_after_epoch"] = epoch + 1
                            result["logs_before_kill"] = {
                                k: float(v) for k, v in (logs or {}).items()}
                            result["epoch_begins"] = list(epoch_begins)
                            os.remove(marker)
                            dump()
                            os.kill(os.getpid(), signal.SIGKILL)

                callbacks.append(KillAfterFirstEpoch())  # after the backup

        if case == "inscope_tfdata":
            ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(
                GLOBAL_BATCH)
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.DATA)
            ds = ds.with_options(options)
            fit_args = (ds,)
            fit_kwargs = {}
        else:
            fit_args = (x, y)
            fit_kwargs = {"batch_size": GLOBAL_BATCH}
        if case == "cache":
            fit_kwargs["cache_teacher"] = True
        history = distiller.fit(*fit_args, epochs=epochs_for(case),
                                shuffle=False, verbose=0,
                                callbacks=callbacks, **fit_kwargs)
        result["history"] = {k: [float(v) for v in vs]
                             for k, vs in history.history.items()}
        result["history_epochs"] = list(history.epoch)
        result["epoch_begins"] = list(epoch_begins)
        result["optimizer_iterations"] = int(distiller.optimizer.iterations.numpy())
        info = getattr(distiller, "teacher_cache_info", None)
        if info:
            result["teacher_cache_info"] = {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in info.items()
                if isinstance(v, (int, float, str, tuple, list))}
        after = user_teacher.get_weights()
        result["teacher_unchanged"] = all(
            np.array_equal(a, b) for a, b in zip(teacher_before, after))
        result["student_weights"] = [w.tolist()
                                     for w in student.get_weights()]
    except BaseException as error:  # noqa: BLE001 - recorded
        result["error"] = error_record(error)
    dump()


# ------------------------------------------------------------- launcher
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
           OMP_NUM_THREADS="1")
ENV.pop("TF_CONFIG", None)
ENV.pop("TF_USE_LEGACY_KERAS", None)


def child(args, timeout, log):
    cmd = (["timeout", str(timeout), "nice", "-n", "19", PY, __file__]
           + args)
    return subprocess.Popen(cmd, env=ENV, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)




def compare(res, ref, offset=0):
    import numpy as np

    if not res.get("history") or not ref.get("history"):
        return None
    diffs = {}
    for k, v in res["history"].items():
        if k in ref["history"]:
            r = np.array(ref["history"][k][offset:offset + len(v)])
            diffs[k] = float(np.max(np.abs(np.array(v) - r)))
    return diffs


def summarise(res, ref, proc, offset=0):
    import numpy as np

    out = {k: res.get(k) for k in (
        "seconds", "compile_seconds", "replicas", "distiller_class",
        "teacher_swapped_by_keras_distill", "teacher_vars_in_scope",
        "teacher_unchanged", "history", "history_epochs", "epoch_begins",
        "optimizer_iterations", "killed_after_epoch", "logs_before_kill",
        "teacher_cache_info")}
    out["exit_code"] = proc.returncode if proc is not None else None
    if res.get("error"):
        out["error"] = {k: res["error"][k] for k in
                        ("type", "first_lines", "length", "raised_in")
                        if k in res["error"]}
    out["max_abs_diff_vs_single"] = compare(res, ref, offset)
    if res.get("student_weights") and ref.get("student_weights"):
        out["student_weights_max_abs_diff"] = float(max(
            np.max(np.abs(np.array(a) - np.array(b)))
            for a, b in zip(res["student_weights"],
                            ref["student_weights"])))
    return {k: v for k, v in out.items() if v is not None}


def run_pair(case, ports, phase=None, kill_when_one_dies=False):
    """Starts both workers (timeout 120), waits; returns (procs, wall)."""
    suffix = f"_phase{phase}" if phase else ""
    for i in range(NWORKERS):
        path = os.path.join(OUT, f"mwms_{case}_worker{i}{suffix}.json")
        if os.path.exists(path):
            os.remove(path)
    args = ["--role", "worker", "--case", case,
            "--ports", ",".join(map(str, ports))]
    if phase:
        args += ["--phase", str(phase)]
    t = time.time()
    procs = [child(args + ["--index", str(i)], 120, os.path.join(
        OUT, f"mwms_{case}_worker{i}{suffix}.log")) for i in range(NWORKERS)]
    events = {}
    if kill_when_one_dies:
        # Wait for worker 1 to die; then see whether worker 0 notices on its
        # own within 30 s; if not, kill it (SIGKILL, its process group).
        while procs[1].poll() is None and procs[0].poll() is None:
            time.sleep(0.5)
        events["worker1_exit"] = procs[1].poll()
        events["worker1_died_at"] = round(time.time() - t, 1)
        deadline = time.time() + 30
        while procs[0].poll() is None and time.time() < deadline:
            time.sleep(0.5)
        if procs[0].poll() is None:
            os.killpg(procs[0].pid, signal.SIGKILL)
            events["worker0"] = ("still running 30 s after worker 1 died "
                                 "(blocked in a collective): SIGKILLed by "
                                 "the launcher")
        else:
            events["worker0"] = (f"exited by itself with code "
                                 f"{procs[0].returncode} "
                                 f"{round(time.time() - t, 1)} s after start")
    for p in procs:
        p.wait()
    return procs, round(time.time() - t, 1), events


def launch(cases, base_port):
    os.makedirs(OUT, exist_ok=True)
    summary_path = os.path.join(OUT, "mwms_summary.json")
    summary = {}
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
    singles = {}
    port = base_port
    for case in cases:
        single_case = "backup" if case == "backup" else "inscope"
        if single_case not in singles:
            if single_case == "backup":
                shutil.rmtree(os.path.join(OUT, "mwms_backup_dir_single"),
                              ignore_errors=True)
            t = time.time()
            p = child(["--role", "single", "--case", single_case], 120,
                      os.path.join(OUT, f"mwms_{single_case}_single.log"))
            p.wait()
            singles[single_case] = load(single_case, "single")
            singles[single_case]["wall"] = round(time.time() - t, 1)
        ref = singles[single_case]
        ports = (port, port + 1)
        port += 2
        entry = {"ports": list(ports), "wall_single": ref.get("wall"),
                 "single": summarise(ref, ref, None)}
        if case != "backup":
            procs, wall, _ = run_pair(case, ports)
            entry["wall_2workers"] = wall
            for i in range(NWORKERS):
                entry[f"worker{i}"] = summarise(
                    load(case, f"worker{i}"), ref, procs[i])
        else:
            shutil.rmtree(os.path.join(OUT, "mwms_backup_dir"),
                          ignore_errors=True)
            open(os.path.join(OUT, "mwms_kill_marker"), "w").close()
            procs, wall, events = run_pair(case, ports, phase=1,
                                           kill_when_one_dies=True)
            entry["phase1_wall"] = wall
            entry["phase1_events"] = events
            entry["backup_dir_after_kill"] = sorted(
                os.path.relpath(os.path.join(d, f), OUT)
                for d, _, fs in os.walk(os.path.join(OUT, "mwms_backup_dir"))
                for f in fs)
            for i in range(NWORKERS):
                entry[f"phase1_worker{i}"] = summarise(
                    load(case, f"worker{i}_phase1"), ref, procs[i])
            # Restart both workers, same ports, same backup_dir, no marker.
            procs, wall, _ = run_pair(case, ports, phase=2)
            entry["phase2_wall"] = wall
            for i in range(NWORKERS):
                res = load(case, f"worker{i}_phase2")
                first = (res.get("history_epochs") or [0])[0]
                entry[f"phase2_worker{i}"] = summarise(res, ref, procs[i],
                                                       offset=first)
        summary[case] = entry
        print(f"== {case}", flush=True)
        print(json.dumps(entry, indent=1)[:5000], flush=True)
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="launch",
                        choices=["launch", "single", "worker"])
    parser.add_argument("--case", default="inscope")
    parser.add_argument("--cases", default="inscope,inscope_tfdata,"
                        "teacher_outside,teacher_outside_raw,teacher_clone,"
                        "cache,backup")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--ports", default="12455,12456")
    parser.add_argument("--phase", type=int, default=0)
    parser.add_argument("--port", type=int, default=12455)
    args = parser.parse_args()
    if args.role == "launch":
        launch(args.cases.split(","), args.port)
    else:
        run(args.role, args.case, args.index,
            [int(p) for p in args.ports.split(",")], args.phase)


def load(case, tag):
    return _load('mwms', case, tag)


if __name__ == "__main__":
    main()

