"""Distil with 2 processes on one machine (loopback), the way a cluster would.

Two engines, one script: it launches itself twice as workers on 127.0.0.1,
and once more as a 1-process run with the same global batch, and prints
every run's per-epoch losses (the workers' equal the 1-process run's).

- ``--engine jax``: Keras 3 on JAX, ``keras.distribution.initialize`` +
  ``DataParallel``; a ``tf.data.Dataset`` batched by the GLOBAL batch (Keras
  gives each process its share).
- ``--engine mwms``: ``tf_keras`` + ``tf.distribute.MultiWorkerMirroredStrategy``
  (``TF_CONFIG``), models and distiller built in ``strategy.scope()``, with
  ``BackupAndRestore`` so a killed worker's restart resumes at its epoch.

Both cache the teacher's outputs on disk (``keras_distill.DiskCache``, one
directory per worker) and stream them every epoch. The data: Fashion-MNIST
when it is on the machine (the Debian package ``dataset-fashion-mnist``),
else random images of its shape.

Usage::

    python examples/scale_out.py --engine jax   # a minute or two on 2 cores
    python examples/scale_out.py --engine mwms
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

GLOBAL_BATCH = 64


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(samples):
    import numpy as np

    try:
        from keras_distill.datasets import load_fashion_mnist

        (x, y), _ = load_fashion_mnist(allow_download=False)
    except (OSError, ValueError):
        rng = np.random.default_rng(0)
        x, y = rng.random((samples, 28, 28)), rng.integers(0, 10, samples)
    return (np.asarray(x[:samples], "float32") / (255.0 if x.max() > 1 else 1.0))[
        ..., None], np.asarray(y[:samples], "int32")


def models(k):
    def net(width, name):
        return k.Sequential([
            k.layers.Conv2D(width, 3, strides=2, activation="relu",
                            input_shape=(28, 28, 1)),
            k.layers.GlobalAveragePooling2D(), k.layers.Dense(10)], name=name)

    k.utils.set_random_seed(0)
    return net(8, "student"), net(32, "teacher")


def worker(args):
    """One process of the run; returns its history."""
    x, y = load(args.samples)
    single = args.index < 0  # the 1-process reference
    if args.engine == "jax":
        os.environ["KERAS_BACKEND"] = "jax"
        import keras
        import tensorflow as tf

        from keras_distill import DiskCache, Distiller

        if not single:
            keras.distribution.initialize(
                job_addresses=f"127.0.0.1:{args.ports[0]}", num_processes=2,
                process_id=args.index)
            keras.distribution.set_distribution(
                keras.distribution.DataParallel(
                    devices=keras.distribution.list_devices()))
        student, teacher = models(keras)  # after set_distribution
        d = Distiller(student, teacher)
        d.compile(optimizer=keras.optimizers.Adam(1e-3), alpha=0.5, temperature=4,
                  student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
        callbacks = []
    else:
        if not single:
            os.environ["TF_CONFIG"] = json.dumps({
                "cluster": {"worker": [f"127.0.0.1:{p}" for p in args.ports]},
                "task": {"type": "worker", "index": args.index}})
        import tensorflow as tf
        import tf_keras

        from keras_distill import DiskCache
        from keras_distill.tf_keras import Distiller

        strategy = (tf.distribute.get_strategy() if single
                    else tf.distribute.MultiWorkerMirroredStrategy())
        with strategy.scope():
            student, teacher = models(tf_keras)
            d = Distiller(student, teacher)
            d.compile(optimizer=tf_keras.optimizers.Adam(1e-3), alpha=0.5,
                      temperature=4,
                      student_loss_fn=tf_keras.losses.
                      SparseCategoricalCrossentropy(from_logits=True))
        callbacks = [tf_keras.callbacks.BackupAndRestore(
            os.path.join(args.work, f"backup{'-single' if single else ''}"))]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    history = d.fit(data, epochs=args.epochs, verbose=0, callbacks=callbacks,
                    cache_teacher=DiskCache(
                        os.path.join(args.work, f"cache-{args.index}")))
    return history.history


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=["jax", "mwms"], default="jax")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.index is not None:
        print("HISTORY " + json.dumps(worker(args)), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="keras-distill-scale-out-") as work:
        launch(args, work)


def launch(args, work):
    """The two workers and the 1-process run, at once; prints their losses."""
    ports = [free_port(), free_port()]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if args.engine == "jax":
        env.update(KERAS_BACKEND="jax",
                   XLA_FLAGS="--xla_cpu_multi_thread_eigen=false")
    procs = [subprocess.Popen(
        [sys.executable, __file__, "--engine", args.engine, "--samples",
         str(args.samples), "--epochs", str(args.epochs), "--index", str(i),
         "--ports", *map(str, ports), "--work", work],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in (0, 1, -1)]
    for i, proc in enumerate(procs):
        try:
            out, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            sys.exit("timed out after 600 s")
        lines = [x for x in out.splitlines() if x.startswith("HISTORY ")]
        if proc.returncode or not lines:
            sys.exit(f"process {i} failed:\n{err[-2000:]}")
        history = json.loads(lines[-1][len("HISTORY "):])
        name = f"worker {i}" if i < 2 else "1 process"
        print(f"{name}: loss per epoch {[round(v, 6) for v in history['loss']]}")


if __name__ == "__main__":
    main()
