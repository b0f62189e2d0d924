"""Benchmark: which distillation recipe beats the same student trained alone?

Every run trains the same student (same initial weights per seed, same
epochs, optimizer, cosine schedule, batch size and augmentation) either on
the labels alone ("scratch") or distilled from one strong teacher. Each
recipe is compared with the scratch run of the *same* augmentation, paired
by seed; the gain is reported as its mean over seeds with a 95% t-interval.

Writes one JSON line per run to ``--out``.jsonl (appending, so a stopped
sweep resumes where it was: finished (recipe, seed) pairs are skipped) and
the summary table to ``--out``.md.

Usage:
    python bench/recipes.py --teacher-weights T.weights.h5 --seeds 0 1 2 \\
        --recipes scratch,kd:0.5:2,dist:0.5:4,kd_ls:0.1:2 --epochs 20
    python bench/recipes.py --recipes scratch+aug,views8/kd:0.5:2 ...

A recipe is ``[views<K>/]<method>[:alpha:T]`` or ``scratch``, with ``+aug``
for the augmented variant (``views<K>`` implies it). Methods: kd, kd_ls
(logit-standardised KD), dkd, dkd_ls, dist.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_distill import Distiller, datasets, models  # noqa: E402
from keras_distill.jobs.stages import method_term  # noqa: E402

# Student's t quantiles (two-sided 95%) for 1..10 degrees of freedom.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]


def ci95(values):
    """Mean and 95% t-interval of paired differences."""
    n = len(values)
    mean = statistics.mean(values)
    if n < 2:
        return mean, [float("nan"), float("nan")]
    half = _T95[min(n, 11) - 2] * statistics.stdev(values) / math.sqrt(n)
    return mean, [mean - half, mean + half]


def augmentation():
    """The augmentation every augmented run uses (teacher was trained on it)."""
    return [keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomTranslation(2 / 28, 2 / 28, fill_mode="constant")]


def parse(recipe):
    """``views8/kd:0.5:2`` -> dict."""
    aug = recipe.endswith("+aug")
    recipe = recipe.removesuffix("+aug")
    views = None
    if recipe.startswith("views"):
        head, recipe = recipe.split("/", 1)
        views = int(head[5:])
        aug = True
    parts = recipe.split(":")
    method = parts[0]
    alpha = float(parts[1]) if len(parts) > 1 else 0.5
    temperature = float(parts[2]) if len(parts) > 2 else 2.0
    return {"method": method, "alpha": alpha, "temperature": temperature,
            "aug": aug, "views": views}


def optimizer(args, steps):
    return keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(args.lr, steps))


def run(args, recipe, seed, data, teacher):
    (x, y), (xt, yt) = data
    spec = parse(recipe)
    keras.utils.set_random_seed(seed)
    student = models.build_student(args.student, seed=seed)
    steps = args.epochs * math.ceil(len(x) / args.batch_size)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    start = time.perf_counter()
    if spec["method"] == "scratch":
        if spec["aug"]:
            # The same augmentation, drawn per batch, as the distilled runs.
            aug = keras.Sequential(augmentation())
            import tensorflow as tf

            ds = (tf.data.Dataset.from_tensor_slices((x, y))
                  .shuffle(len(x), seed=seed).batch(args.batch_size)
                  .map(lambda a, b: (aug(a, training=True), b)).prefetch(2))
            student.compile(optimizer(args, steps), ce)
            student.fit(ds, epochs=args.epochs, verbose=0)
        else:
            student.compile(optimizer(args, steps), ce)
            student.fit(x, y, batch_size=args.batch_size, epochs=args.epochs,
                        verbose=0)
    else:
        d = Distiller(student=student, teacher=teacher)
        d.compile(optimizer(args, steps), student_loss_fn=ce,
                  distillation_loss_fn=method_term(spec["method"]),
                  alpha=spec["alpha"], temperature=spec["temperature"])
        kwargs = {}
        if spec["aug"]:
            kwargs["augmentation"] = augmentation()
            if spec["views"]:
                kwargs.update(cache_teacher=True, views=spec["views"],
                              cache_dtype="float16")
        else:
            kwargs.update(cache_teacher=True)
        d.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0,
              **kwargs)
    seconds = time.perf_counter() - start
    logits = student.predict(xt, batch_size=1000, verbose=0)
    return {"recipe": recipe, "seed": seed, "seconds": round(seconds, 1),
            "test_accuracy": float(np.mean(np.argmax(logits, -1) == yt)),
            "params": student.count_params(), **spec}


def summarise(rows, teacher_accuracy, teacher_params, args):
    by = {}
    for r in rows:
        by.setdefault(r["recipe"], {})[r["seed"]] = r
    lines = [f"Student `{args.student}`, teacher {teacher_params:,} params "
             f"({100 * teacher_accuracy:.2f}%), {args.epochs} epochs, Adam "
             f"{args.lr:g} cosine, batch {args.batch_size}.", "",
             "| recipe | seeds | mean acc | gain vs scratch (same aug) | 95% CI "
             "| per seed | s/run |", "|---|---:|---:|---:|---|---|---:|"]
    summary = {}
    for recipe, runs in by.items():
        spec = parse(recipe)
        base = by.get("scratch+aug" if spec["aug"] else "scratch", {})
        seeds = sorted(s for s in runs if s in base)
        accs = [runs[s]["test_accuracy"] for s in sorted(runs)]
        gains = [100 * (runs[s]["test_accuracy"] - base[s]["test_accuracy"])
                 for s in seeds]
        mean_gain, ci = ci95(gains) if gains else (float("nan"), [])
        summary[recipe] = {"seeds": seeds, "gain_mean": mean_gain,
                           "gain_ci95": ci, "mean": statistics.mean(accs)}
        lines.append(
            f"| {recipe} | {len(accs)} | {100 * statistics.mean(accs):.2f}% | "
            f"{mean_gain:+.2f} | "
            + (f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if len(gains) > 1 else "-")
            + " | " + ", ".join(f"{100 * a:.2f}" for a in accs)
            + f" | {statistics.mean(r['seconds'] for r in runs.values()):.0f} |")
    return "\n".join(lines), summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher-weights", required=True)
    p.add_argument("--teacher", default="wide", help="models.build_teacher kind")
    p.add_argument("--student", default="cnn")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--recipes", default="scratch,kd:0.5:2")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--train-samples", type=int, default=0)
    p.add_argument("--out", default=os.path.join(
        os.path.dirname(__file__), "results", "sweeps", "recipes"))
    args = p.parse_args(argv)

    (x, y), (xt, yt) = datasets.load_fashion_mnist(allow_download=False)
    x = (x[..., None] / np.float32(255)).astype("float32")
    xt = (xt[..., None] / np.float32(255)).astype("float32")
    y, yt = y.astype("int64"), yt.astype("int64")
    if args.train_samples:
        x, y = x[:args.train_samples], y[:args.train_samples]
    teacher = models.build_teacher(kind=args.teacher)
    teacher.load_weights(args.teacher_weights)
    teacher_accuracy = float(np.mean(np.argmax(
        teacher.predict(xt, batch_size=1000, verbose=0), -1) == yt))
    print(f"teacher {teacher.count_params():,} params, "
          f"{100 * teacher_accuracy:.2f}%", flush=True)

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    rows = []
    if os.path.exists(args.out + ".jsonl"):
        with open(args.out + ".jsonl") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    done = {(r["recipe"], r["seed"]) for r in rows}
    for seed in args.seeds:
        for recipe in args.recipes.split(","):
            if (recipe, seed) in done:
                continue
            row = run(args, recipe, seed, ((x, y), (xt, yt)), teacher)
            row.update(date=time.strftime("%Y-%m-%d %H:%M"),
                       machine=f"{platform.node()} {os.cpu_count()} CPUs")
            rows.append(row)
            with open(args.out + ".jsonl", "a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    table, _ = summarise(rows, teacher_accuracy, teacher.count_params(), args)
    print("\n" + table)
    with open(args.out + ".md", "w") as handle:
        handle.write(table + f"\n\nMeasured {time.strftime('%Y-%m-%d')} on "
                     f"{platform.platform()}, {os.cpu_count()} CPUs.\n")


if __name__ == "__main__":
    main()
