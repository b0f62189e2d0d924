"""Benchmark: what a cached K-view KD epoch costs against ``student.fit`` with
the same augmentation (issue #13's target: at most 1.3x).

Three ways to train the same student (``models.build_student("cnn")``) on
full Fashion-MNIST with flip + 2-px shift, batch 128, Adam:

* ``scratch+aug``: ``student.fit`` on a ``tf.data`` pipeline that augments
  each batch (what the recipe benchmark's augmented scratch runs do);
* ``cached views``: ``Distiller.fit(augmentation=..., cache_teacher=True,
  views=K)``: the teacher's outputs on K recorded views per image were
  computed once (its build time is reported separately), every epoch replays
  one view per image from its seed and reads the stored outputs;
* ``online views``: ``Distiller.fit(augmentation=...)``: the teacher runs on
  every augmented batch (consistent views without a cache).

Each is one fit of ``rounds + 1`` epochs whose first epoch (tracing,
compiling) is not counted; ``scratch+aug`` runs before and after the other
two, so a change of load on a shared machine shows. Writes ``--out``.json and ``--out``.md.

    python bench/view_cache_cost.py --views 8 --rounds 3
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_distill import Distiller, datasets, models  # noqa: E402


def augmentation():
    return [keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomTranslation(2 / 28, 2 / 28, fill_mode="constant")]


class Timer(keras.callbacks.Callback):
    """Seconds of every epoch of a fit."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3, help="timed epochs of each")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--teacher", default="wide", help="models.build_teacher kind")
    p.add_argument("--out", default="bench/results/view_cache_cost")
    args = p.parse_args()

    (x, y), _ = datasets.load_fashion_mnist(allow_download=False)
    x = (x[..., None] / 255.0).astype("float32")
    keras.utils.set_random_seed(0)
    # The teacher's weights do not change the cost; its architecture does
    # (cache build and online runs).
    teacher = models.build_teacher(kind=args.teacher)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    scratch = models.build_student("cnn", seed=0)
    scratch.compile(keras.optimizers.Adam(1e-3), ce)
    aug = keras.Sequential(augmentation())
    ds = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0)
          .batch(args.batch_size).map(lambda a, b: (aug(a, training=True), b))
          .prefetch(2))

    def distiller():
        d = Distiller(student=models.build_student("cnn", seed=0), teacher=teacher)
        d.compile(keras.optimizers.Adam(1e-3), student_loss_fn=ce, alpha=0.5,
                  temperature=2.0)
        return d

    seconds = {"scratch+aug": [], "cached views": [], "online views": []}
    build_seconds = []

    def run(name):
        """One fit of ``rounds + 1`` epochs; the first epoch is not counted."""
        t = Timer()
        kwargs = dict(epochs=args.rounds + 1, verbose=0, callbacks=[t])
        start = time.perf_counter()
        if name == "scratch+aug":
            scratch.fit(ds, **kwargs)
        elif name == "cached views":
            distiller().fit(x, y, batch_size=args.batch_size, augmentation=augmentation(),
                            cache_teacher=True, views=args.views, cache_dtype="float16",
                            **kwargs)
            # The cache is built before the first epoch begins.
            build_seconds.append(time.perf_counter() - start - sum(t.seconds))
        else:
            distiller().fit(x, y, batch_size=args.batch_size, augmentation=augmentation(),
                            **kwargs)
        seconds[name] += t.seconds[1:]
        print(f"{name}: epochs " + ", ".join(f"{s:.1f}" for s in t.seconds)
              + " s (the first not counted)", flush=True)

    # Scratch before and after the others, so a change of load shows.
    for name in ("scratch+aug", "cached views", "online views", "scratch+aug"):
        run(name)
    build_seconds = statistics.median(build_seconds)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "load_average": os.getloadavg(),
        "views": args.views, "batch_size": args.batch_size, "rounds": args.rounds,
        "teacher_params": teacher.count_params(),
        "student_params": scratch.count_params(),
        "epoch_seconds": seconds, "median_epoch_seconds": median,
        "ratio_cached_to_scratch": median["cached views"] / median["scratch+aug"],
        "ratio_online_to_scratch": median["online views"] / median["scratch+aug"],
        "cache_build_seconds": build_seconds,
    }
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    md = [f"Cost of a consistent-view KD epoch, cnn student ({result['student_params']:,} "
          f"params), teacher `{args.teacher}` ({result['teacher_params']:,} params), "
          f"full Fashion-MNIST, batch {args.batch_size}, flip + 2-px shift, "
          f"K = {args.views} cached views; median of the timed epochs (the first of each fit not counted).",
          "", "| training | median s/epoch | x scratch+aug | epochs (s) |",
          "|---|---:|---:|---|"]
    for k, v in seconds.items():
        md.append(f"| {k} | {median[k]:.1f} | {median[k] / median['scratch+aug']:.2f} | "
                  + ", ".join(f"{s:.1f}" for s in v) + " |")
    md += ["", f"Building the K = {args.views} view cache (K teacher passes over 60k "
           f"images, once per fit): {build_seconds:.0f} s.",
           "", f"Measured {result['date']} on {result['machine']}, load average "
           f"{', '.join(f'{l:.1f}' for l in result['load_average'])} at the end."]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
