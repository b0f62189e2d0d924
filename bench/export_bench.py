"""Benchmark: the distilled student exported to TFLite in every quantization mode.

The main job's student (`build_student("cnn")`), distilled on the full
Fashion-MNIST from the main job's teacher (cached after its first training)
with the main job's settings, or trained on the labels alone with
``--student-training labels`` (faster, no teacher). Then for float32, float16,
dynamic and int8 (300 calibration images from the training set): file size
(raw and gzip), test accuracy of the .tflite run with the LiteRT interpreter
on all 10k test images, argmax agreement with the Keras student, and 1-thread
latency of one image (median and p90, microseconds).

Writes bench/results/export.json and .md, and prints the Markdown table.

Usage:
    python bench/export_bench.py                    # the committed results
    python bench/export_bench.py --epochs 1 --student-training labels  # smoke
"""

import argparse
import dataclasses
from importlib import metadata
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_distill import export, pipeline  # noqa: E402

TARGETS = {
    "int8 size <= 0.30x float32": lambda r: r["int8"]["size_bytes"]
    <= 0.30 * r["float32"]["size_bytes"],
    "int8 accuracy within 0.5 points of the Keras student": lambda r: abs(
        r["int8"]["accuracy_delta_points"]) <= 0.5,
    "int8 latency below float32": lambda r: r["int8"]["median_us"]
    < r["float32"]["median_us"],
}


def train_student(args, x, y):
    config = pipeline.PipelineConfig(epochs=args.epochs, seed=args.seed).validate()
    if args.student_training == "labels":
        student, seconds = pipeline.train_scratch(config, x, y)
        return student, seconds, "trained on the labels (no teacher)"
    teacher, _, cached = pipeline.get_teacher(config, x, y)
    student, seconds = pipeline.train_distilled(config, teacher, x, y)
    how = (f"distilled from the main job's teacher ({'cached' if cached else 'trained'}"
           f", {teacher.count_params():,} params), alpha={config.alpha}, "
           f"T={config.temperature}")
    return student, seconds, how


def measure(student, x, xt, yt, keras_accuracy, folder, args):
    rows = {}
    for quantization in export.QUANTIZATIONS:
        path = os.path.join(folder, f"student_{quantization}.tflite")
        start = time.perf_counter()
        result = export.to_tflite(student, path, quantization, representative_data=x)
        convert_seconds = time.perf_counter() - start
        evaluation = export.evaluate_tflite(path, xt, yt, reference_model=student,
                                            batch_size=1000)
        latency = export.benchmark_tflite(path, num_threads=1, runs=args.runs,
                                          warmup=args.runs // 10)
        rows[quantization] = {
            **{k: v for k, v in dataclasses.asdict(result).items() if k != "path"},
            "convert_seconds": convert_seconds,
            "accuracy": evaluation.accuracy,
            "accuracy_delta_points": 100 * (evaluation.accuracy - keras_accuracy),
            "agreement": evaluation.agreement,
            "max_abs_diff": evaluation.max_abs_diff,
            "median_us": latency.median_us,
            "p90_us": latency.p90_us,
        }
        print(json.dumps({"quantization": quantization, **{
            k: rows[quantization][k] for k in ("size_bytes", "accuracy", "median_us")}}),
            flush=True)
    return rows


def format_markdown(rows, meta):
    base = rows["float32"]["size_bytes"]
    lines = [
        f"Student `cnn` ({meta['params']:,} params), {meta['how']}, "
        f"{meta['epochs']} epochs; Keras float32 test accuracy "
        f"{100 * meta['keras_accuracy']:.2f}% (10k Fashion-MNIST test images).",
        "",
        "| quantization | size | vs float32 | gzip | test accuracy | vs Keras "
        "| argmax agreement | latency median / p90 (µs, 1 thread) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['size_bytes'] / 1024:.1f} KB | "
            f"{r['size_bytes'] / base:.2f}x | {r['gzip_size_bytes'] / 1024:.1f} KB | "
            f"{100 * r['accuracy']:.2f}% | {r['accuracy_delta_points']:+.2f} | "
            f"{100 * r['agreement']:.2f}% | {r['median_us']:.1f} / {r['p90_us']:.1f} |")
    lines += ["", "Targets (reported, not asserted):", ""]
    lines += [f"- {'met' if ok else 'MISSED'}: {name}"
              for name, ok in meta["targets"].items()]
    params, f32, i8 = meta["params"], base, rows["int8"]["size_bytes"]
    lines += ["", (
        f"Size: the float32 file is {4 * params / 1024:.1f} KB of weights (4 B/param) "
        f"plus {(f32 - 4 * params) / 1024:.1f} KB of graph, tensor names and metadata; "
        f"the int8 file about {params / 1024:.1f} KB of weights (1 B/param) plus "
        f"{(i8 - params) / 1024:.1f} KB (the same, with int32 biases and per-channel "
        f"scales). At {params:,} parameters this fixed part is why int8 is "
        f"{i8 / f32:.2f}x, not the 0.25x of the weights alone.")]
    lines += ["", (
        f"Latency: one 28x28 image, `invoke()` only, {meta['args']['runs']} runs after "
        f"{meta['args']['runs'] // 10} warm-up runs, LiteRT interpreter "
        f"(ai-edge-litert {meta['versions']['ai-edge-litert']}, default XNNPACK "
        "delegate), 1 thread. Accuracy: each .tflite run on all 10,000 test images.")]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--student-training", choices=["distill", "labels"],
                        default="distill")
    parser.add_argument("--runs", type=int, default=2000,
                        help="timed runs per latency measurement")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                      "results", "export"))
    command = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(command)

    (x, y), (xt, yt) = pipeline.prepare_data(pipeline.PipelineConfig())
    student, seconds, how = train_student(args, x, y)
    keras_accuracy = pipeline._accuracy(student, xt, yt)
    print(f"student: {how}, {seconds:.0f} s, Keras test accuracy "
          f"{100 * keras_accuracy:.2f}%", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        rows = measure(student, x, xt, yt, keras_accuracy, folder, args)

    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "args": vars(args), "how": how,
        "params": student.count_params(), "epochs": args.epochs,
        "train_seconds": seconds, "keras_accuracy": keras_accuracy,
        "versions": {name: metadata.version(name) for name in
                     ("tensorflow", "keras", "tf_keras", "ai-edge-litert")},
        "targets": {name: bool(check(rows)) for name, check in TARGETS.items()},
    }
    table = format_markdown(rows, meta)
    print("\n" + table)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as handle:
        json.dump({"meta": meta, "results": rows}, handle, indent=2, default=str)
    with open(args.out + ".md", "w") as handle:
        handle.write(table + f"\n\nMeasured {meta['date']} on {meta['machine']} "
                     f"({meta['processor']}), {meta['cpus']} CPUs, with "
                     f"`{' '.join(['python bench/export_bench.py'] + command)}`.\n")


if __name__ == "__main__":
    main()
