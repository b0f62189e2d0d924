"""Benchmark: distil -> prune 50% while distilling -> QAT while distilling -> int8.

On the full Fashion-MNIST (60k train / 10k test) with the main job's CNN
student and teacher (cached after its first training), two pipelines with the
same epochs, learning rates and initial weights:

- distilled: dense student distilled from the teacher (`pipeline.
  train_distilled`), then pruned to 50% sparsity *while distilling*
  (`keras_distill.pruning.prune` + `Distiller` + `pruning_callbacks`), then
  stripped and made quantization-aware *while distilling* against the float
  teacher (`keras_distill.quantization.qat_distiller`, prune-preserving),
  then exported to full-int8 TFLite (`export.to_tflite`) and run with LiteRT
  on the test set (`export.evaluate_tflite`);
- scratch: the same stages trained on the labels alone.

Per stage: Keras test accuracy and kernel sparsity (and for int8: the
accuracy of the .tflite file, its agreement with the Keras QAT model, its
size and gzip size, and the sparsity of its int8 weights).

Writes bench/results/prune_qat.json and .md, and prints the Markdown table.

Usage:
    python bench/prune_qat.py                          # the committed results
    python bench/prune_qat.py --epochs 1 --prune-epochs 1 --qat-epochs 1 \\
        --train-samples 6000                           # a smoke run
"""

import argparse
import dataclasses
from importlib import metadata
import json
import math
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_distill import Distiller, export, pipeline  # noqa: E402
from keras_distill import pruning, quantization  # noqa: E402

TARGETS = {
    "50%-sparse distilled within 0.5 points of dense distilled":
        lambda r: r["distilled"]["pruned"]["accuracy"]
        >= r["distilled"]["dense"]["accuracy"] - 0.005,
    "int8 QAT distilled within 0.3 points of its float version (the pruned float student)":
        lambda r: r["distilled"]["int8"]["accuracy"]
        >= r["distilled"]["pruned"]["accuracy"] - 0.003,
    "distilled better than scratch at every stage":
        lambda r: all(r["distilled"][s]["accuracy"] > r["scratch"][s]["accuracy"]
                      for s in ("dense", "pruned", "qat", "int8")),
}


def accuracy(model, x, y):
    logits = model.predict(x, batch_size=1024, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def ce():
    import tf_keras

    return tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def fit_stage(model, teacher, x, y, config, epochs, learning_rate, callbacks=()):
    """Trains a tf_keras student for one stage, distilled when ``teacher``."""
    import tf_keras

    optimizer = tf_keras.optimizers.Adam(learning_rate)
    start = time.perf_counter()
    if teacher is None:
        model.compile(optimizer=optimizer, loss=ce())
        model.fit(x, y, batch_size=config.batch_size, epochs=epochs, verbose=0,
                  callbacks=list(callbacks))
    else:
        distiller = Distiller(model, teacher)
        distiller.compile(optimizer=optimizer, student_loss_fn=ce(),
                          alpha=config.alpha, temperature=config.temperature)
        distiller.fit(x, y, batch_size=config.batch_size, epochs=epochs, verbose=0,
                      callbacks=list(callbacks), cache_teacher=True)
    return time.perf_counter() - start


def run_pipeline(name, dense, dense_seconds, teacher, data, config, args, folder):
    (x, y), (xt, yt) = data
    rows = {}
    rows["dense"] = {"accuracy": accuracy(dense, xt, yt),
                     "sparsity": pruning.total_sparsity(dense),
                     "seconds": dense_seconds}
    print(f"{name}: dense {rows['dense']}", flush=True)

    steps_per_epoch = math.ceil(len(x) / config.batch_size)
    pruned = pruning.prune(dense, args.sparsity, epochs=args.prune_epochs,
                           steps_per_epoch=steps_per_epoch)
    seconds = fit_stage(pruned, teacher, x, y, config, args.prune_epochs,
                        args.prune_lr, callbacks=pruning.pruning_callbacks(pruned))
    steps = sorted({int(w.pruning_step.numpy()) for w in pruning.pruning_wrappers(pruned)})
    stripped = pruning.strip(pruned)
    rows["pruned"] = {"accuracy": accuracy(stripped, xt, yt),
                      "sparsity": pruning.total_sparsity(stripped),
                      "per_layer": pruning.sparsity_report(stripped),
                      "pruning_steps": steps, "seconds": seconds}
    print(f"{name}: pruned {rows['pruned']}", flush=True)

    if teacher is None:
        qat = quantization.quantize(stripped)
    else:
        qat = quantization.qat_distiller(stripped, teacher).student
    seconds = fit_stage(qat, teacher, x, y, config, args.qat_epochs, args.qat_lr)
    rows["qat"] = {"accuracy": accuracy(qat, xt, yt),
                   "sparsity": pruning.total_sparsity(qat),
                   "per_layer": pruning.sparsity_report(qat), "seconds": seconds}
    print(f"{name}: qat {rows['qat']}", flush=True)

    path = os.path.join(folder, f"{name}_int8.tflite")
    exported = export.to_tflite(qat, path, "int8")
    check = export.evaluate_tflite(path, xt, yt, reference_model=qat)
    float_path = os.path.join(folder, f"{name}_dense_float32.tflite")
    float_export = export.to_tflite(dense, float_path)
    rows["int8"] = {"accuracy": check.accuracy, "agreement_with_keras_qat": check.agreement,
                    "size_bytes": exported.size_bytes,
                    "gzip_size_bytes": exported.gzip_size_bytes,
                    "dense_float32_size_bytes": float_export.size_bytes,
                    "dense_float32_gzip_size_bytes": float_export.gzip_size_bytes,
                    "float_ops": list(exported.float_ops),
                    "weight_sparsity": int8_weight_sparsity(path)}
    print(f"{name}: int8 {rows['int8']}", flush=True)
    return rows


def int8_weight_sparsity(path):
    """Fraction of zeros in the int8 weight tensors (rank 2 and 4) of a file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    zeros = size = 0
    for detail in interpreter.get_tensor_details():
        signature = detail.get("shape_signature", detail["shape"])
        if detail["dtype"] != np.int8 or len(detail["shape"]) not in (2, 4) \
                or min(signature) < 0:
            continue  # activations have a dynamic batch dimension
        value = interpreter.get_tensor(detail["index"])
        zeros += int(np.count_nonzero(value == 0))
        size += int(value.size)
    return zeros / size if size else None


def markdown(results):
    meta = results["meta"]
    lines = [
        f"Student `{meta['student']}` ({meta['student_params']:,} params); teacher "
        f"{meta['teacher_params']:,} params ({100 * meta['teacher_accuracy']:.2f}%, "
        f"{'cached' if meta['teacher_cached'] else 'trained'}). Full Fashion-MNIST "
        f"({meta['train_samples']:,} train / {meta['test_samples']:,} test), batch "
        f"{meta['batch_size']}, alpha={meta['alpha']}, T={meta['temperature']}, "
        f"seed {meta['seed']}. Epochs: dense {meta['epochs']}, prune "
        f"{meta['prune_epochs']} (lr {meta['prune_lr']}, polynomial 0 -> "
        f"{meta['sparsity']:.0%} over the whole stage), QAT {meta['qat_epochs']} "
        f"(lr {meta['qat_lr']}, prune-preserving).",
        "",
        "| stage | distilled | scratch (labels only) | distilled - scratch "
        "| sparsity (distilled / scratch) |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = {"dense": "dense float (Keras)", "pruned": "pruned, stripped (Keras)",
              "qat": "QAT (Keras, fake-quant)", "int8": "int8 TFLite (LiteRT)"}
    for stage, label in labels.items():
        d, s = results["distilled"][stage], results["scratch"][stage]
        ds = d.get("sparsity", d.get("weight_sparsity"))
        ss = s.get("sparsity", s.get("weight_sparsity"))
        lines.append(
            f"| {label} | {100 * d['accuracy']:.2f}% | {100 * s['accuracy']:.2f}% | "
            f"{100 * (d['accuracy'] - s['accuracy']):+.2f} | "
            f"{100 * ds:.1f}% / {100 * ss:.1f}% |")
    d = results["distilled"]
    lines += [
        "",
        "Targets (reported, not asserted):",
        "",
    ]
    for name, met in results["targets"].items():
        lines.append(f"- {'met' if met else 'MISSED'}: {name}")
    lines += [
        "",
        f"Distilled: pruned - dense = "
        f"{100 * (d['pruned']['accuracy'] - d['dense']['accuracy']):+.2f} points; "
        f"int8 - pruned float = "
        f"{100 * (d['int8']['accuracy'] - d['pruned']['accuracy']):+.2f} points; "
        f"int8 argmax agreement with the Keras QAT model "
        f"{100 * d['int8']['agreement_with_keras_qat']:.2f}%. Sizes: dense float32 "
        f"{d['int8']['dense_float32_size_bytes'] / 1024:.1f} KB "
        f"(gzip {d['int8']['dense_float32_gzip_size_bytes'] / 1024:.1f} KB), 50%-sparse "
        f"int8 {d['int8']['size_bytes'] / 1024:.1f} KB (gzip "
        f"{d['int8']['gzip_size_bytes'] / 1024:.1f} KB): unstructured sparsity "
        "shrinks the gzip size, not the file.",
        "",
        "Per-layer sparsity after pruning (distilled): "
        + ", ".join(f"{k} {100 * v:.1f}%" for k, v in d["pruned"]["per_layer"].items())
        + "; after QAT: "
        + ", ".join(f"{k} {100 * v:.1f}%" for k, v in d["qat"]["per_layer"].items())
        + f". Pruning step counters after the prune stage: {d['pruned']['pruning_steps']}"
        f" (= {meta['prune_epochs']} epochs x {meta['steps_per_epoch']} batches).",
        "",
        "One seed: differences of a few tenths of a point are within seed-to-seed "
        "noise (bench/results/kd_vs_scratch.md shows the spread). The prune and "
        "QAT stages are extra epochs on top of the dense stage, so part of a "
        "stage's change is further training, not pruning or quantization: this "
        "is the pipeline as run, not a same-budget ablation.",
        "",
        f"Measured {meta['date']} on {meta['machine']}, {meta['cpus']} CPUs, "
        f"TF {meta['versions']['tensorflow']}, keras {meta['versions']['keras']}, "
        f"tf_keras {meta['versions']['tf_keras']}, TFMOT "
        f"{meta['versions']['tensorflow-model-optimization']}; total "
        f"{meta['total_seconds']:.0f} s, with `python bench/prune_qat.py`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="dense stage")
    parser.add_argument("--prune-epochs", type=int, default=4)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--prune-lr", type=float, default=5e-4)
    parser.add_argument("--qat-lr", type=float, default=2e-4)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-samples", type=int, default=0, help="0: all")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                      "results", "prune_qat"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    config = pipeline.PipelineConfig(epochs=args.epochs, seed=args.seed,
                                     train_samples=args.train_samples,
                                     allow_download=False).validate()
    (x, y), (xt, yt) = data = pipeline.prepare_data(config)
    # The teacher is cached by its own settings (all samples unless asked).
    teacher, _, cached = pipeline.get_teacher(config, x, y)
    teacher_accuracy = accuracy(teacher, xt, yt)
    print(f"teacher: {teacher.count_params():,} params, {100 * teacher_accuracy:.2f}%",
          flush=True)

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        distilled, seconds = pipeline.train_distilled(config, teacher, x, y)
        results["distilled"] = run_pipeline("distilled", distilled, seconds, teacher,
                                            data, config, args, folder)
        scratch, seconds = pipeline.train_scratch(config, x, y)
        results["scratch"] = run_pipeline("scratch", scratch, seconds, None, data,
                                          config, args, folder)
    versions = {}
    for package in ("tensorflow", "keras", "tf_keras", "tensorflow-model-optimization",
                    "ai-edge-litert"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    results["meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(),
        "processor": platform.machine(), "cpus": os.cpu_count(),
        "versions": versions, "student": config.student,
        "student_params": int(distilled.count_params()),
        "teacher_params": int(teacher.count_params()),
        "teacher_accuracy": teacher_accuracy, "teacher_cached": cached,
        "train_samples": len(x), "test_samples": len(xt),
        "steps_per_epoch": math.ceil(len(x) / config.batch_size),
        **{k: v for k, v in dataclasses.asdict(config).items()
           if k in ("batch_size", "alpha", "temperature", "seed", "epochs",
                    "learning_rate")},
        **{k: v for k, v in vars(args).items()
           if k not in ("out", "epochs", "seed", "train_samples")},
        "total_seconds": time.perf_counter() - start,
    }
    results["targets"] = {name: bool(check(results)) for name, check in TARGETS.items()}
    text = markdown(results)
    print("\n" + text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as handle:
        json.dump(results, handle, indent=2, default=str)
    with open(args.out + ".md", "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
