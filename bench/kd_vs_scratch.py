"""Benchmark: distilled student vs the same student trained from scratch.

On the full Fashion-MNIST (60k train / 10k test), with the main job's teacher
(trained once, seed 0, cached) and student, for several seeds: the student
trained from scratch on the labels, and distilled with each (alpha, T) given,
for the same number of epochs and the same initial weights per seed.

Writes bench/results/kd_vs_scratch.json and .md (mean and per-seed test
accuracy), and prints the Markdown table.

Usage:
    python bench/kd_vs_scratch.py                      # the README table
    python bench/kd_vs_scratch.py --seeds 0 --epochs 2  # a smoke run
"""

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_distill import pipeline  # noqa: E402


def parse_configs(text):
    configs = []
    for item in text.split(","):
        alpha, temperature = item.split(":")
        configs.append((float(alpha), float(temperature)))
    return configs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--teacher-epochs", type=int, default=5)
    parser.add_argument("--student", default="cnn", choices=["cnn", "mlp"])
    parser.add_argument("--configs", type=parse_configs, default="0.5:2,0.1:4",
                        help="comma-separated alpha:temperature pairs")
    parser.add_argument("--methods", default="kd",
                        help="comma-separated --method values of the main job, "
                        "e.g. kd,dkd,kd+l2,kd+at,kd+fsp")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                      "results", "kd_vs_scratch"))
    args = parser.parse_args(argv)
    if isinstance(args.configs, str):
        args.configs = parse_configs(args.configs)

    base = pipeline.PipelineConfig(epochs=args.epochs, teacher_epochs=args.teacher_epochs,
                                   student=args.student, seed=0).validate()
    (x, y), (xt, yt) = pipeline.prepare_data(base)
    teacher, _, _ = pipeline.get_teacher(base, x, y)
    teacher_accuracy = pipeline._accuracy(teacher, xt, yt)
    print(f"teacher: {teacher.count_params():,} params, "
          f"test accuracy {100 * teacher_accuracy:.2f}%", flush=True)

    runs = []
    for seed in args.seeds:
        config = dataclasses.replace(base, seed=seed)
        student, seconds = pipeline.train_scratch(config, x, y)
        runs.append({"method": "scratch", "seed": seed, "seconds": seconds,
                     "params": student.count_params(),
                     "test_accuracy": pipeline._accuracy(student, xt, yt)})
        print(json.dumps(runs[-1]), flush=True)
        for method, (alpha, temperature) in (
                (m, c) for m in args.methods.split(",") for c in args.configs):
            config = dataclasses.replace(base, seed=seed, alpha=alpha,
                                         temperature=temperature, method=method)
            student, seconds = pipeline.train_distilled(config, teacher, x, y)
            label = "KD" if method == "kd" else method.upper()
            runs.append({"method": f"{label} alpha={alpha:g} T={temperature:g}",
                         "seed": seed, "seconds": seconds,
                         "params": student.count_params(),
                         "test_accuracy": pipeline._accuracy(student, xt, yt)})
            print(json.dumps(runs[-1]), flush=True)

    methods = []
    for run in runs:
        if run["method"] not in methods:
            methods.append(run["method"])
    scratch_mean = statistics.mean(
        r["test_accuracy"] for r in runs if r["method"] == "scratch")
    lines = [
        f"Student `{args.student}` ({runs[0]['params']:,} params), teacher "
        f"{teacher.count_params():,} params ({100 * teacher_accuracy:.2f}%), "
        f"{args.epochs} epochs, seeds {args.seeds}.",
        "",
        "| method | mean test accuracy | vs scratch | per seed | mean time/run (s) |",
        "|---|---:|---:|---|---:|",
    ]
    for method in methods:
        accs = [r["test_accuracy"] for r in runs if r["method"] == method]
        secs = [r["seconds"] for r in runs if r["method"] == method]
        mean = statistics.mean(accs)
        lines.append(
            f"| {method} | {100 * mean:.2f}% | {100 * (mean - scratch_mean):+.2f} | "
            + ", ".join(f"{100 * a:.2f}" for a in accs)
            + f" | {statistics.mean(secs):.0f} |")
    table = "\n".join(lines)
    print("\n" + table)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
            "cpus": os.cpu_count(), "args": {k: v for k, v in vars(args).items()},
            "teacher_accuracy": teacher_accuracy}
    with open(args.out + ".json", "w") as handle:
        json.dump({"meta": meta, "runs": runs}, handle, indent=2, default=str)
    with open(args.out + ".md", "w") as handle:
        handle.write(table + f"\n\nMeasured {meta['date']} on {meta['machine']}, "
                     f"{meta['cpus']} CPUs.\n")


if __name__ == "__main__":
    main()
