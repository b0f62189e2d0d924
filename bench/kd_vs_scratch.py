"""Benchmark: the main job, seed by seed: does its distilled student beat scratch?

Runs the main job (`keras_distill.pipeline.run_pipeline`, exactly what
``keras-distill`` runs, with its default settings unless flags say otherwise)
once per seed, on the full Fashion-MNIST (60k train / 10k test). The seed
sets the students' initial weights and data order; the teacher (seed 0) is
trained once by the first run and cached, so later runs load it. Scratch and
distilled students share the seed's initial weights, epochs and schedule, so
each seed gives one paired difference; the gain is reported as the mean over
seeds with a 95% t-interval.

Each finished run is appended to ``<out>.runs.jsonl`` (a stopped benchmark
resumes: seeds already there with the same settings are skipped). Writes
``<out>.json`` (``meta``, ``runs`` and the top-level ``summary`` the README
quotes) and ``<out>.md`` (the per-seed table with the main job's time per
run).

Usage:
    python bench/kd_vs_scratch.py                  # the main job's default, seeds 0 1 2
    python bench/kd_vs_scratch.py --classic        # the recipe before the search
    python bench/kd_vs_scratch.py --seeds 0 --epochs 1 --teacher-epochs 1 \\
        --train-samples 2000 --out /tmp/smoke      # a smoke run
"""

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_distill import _io, pipeline  # noqa: E402
from recipes import ci95  # noqa: E402

SETTINGS = ("epochs", "teacher_epochs", "teacher", "student", "method", "alpha",
            "temperature", "learning_rate", "schedule", "augment_teacher",
            "teacher_policy", "finetune_learning_rate", "finetune_alpha", "batch_size",
            "train_samples", "test_samples", "compress", "export", "sparsity",
            "prune_epochs", "qat_epochs")

# PipelineConfig settings a flag of the same name (with dashes) overrides.
OVERRIDES = (("epochs", int), ("teacher_epochs", int), ("train_samples", int),
             ("method", str), ("alpha", float), ("temperature", float))


def recipe_name(config):
    """One line naming the recipe, e.g. for the summary's ``recipe``."""
    return (f"{config.method} alpha={config.alpha:g} T={config.temperature:g}, "
            f"{config.epochs} epochs Adam {config.learning_rate:g} {config.schedule}, "
            f"{config.teacher} teacher ({config.teacher_epochs} epochs), "
            f"student {config.student}")


def _row(results, name):
    return next(r for r in results["rows"] if r["name"] == name)


def run_seed(config, log, keep=None):
    """One main job; returns the record the benchmark keeps of it (and, with
    ``keep``, writes its report there: results.json/.md, the plot)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        results = pipeline.run_pipeline(
            dataclasses.replace(config, output_dir=folder if config.export else None),
            log=log)
    if keep:
        from keras_distill.report import write_report

        results["total_seconds"] = time.perf_counter() - start
        write_report(results, os.path.join(keep, f"seed{config.seed}"))
    return {"seed": config.seed, "total_seconds": round(time.perf_counter() - start, 1),
            "settings": {k: getattr(config, k) for k in SETTINGS},
            "rows": results["rows"], "artifacts": results["artifacts"],
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "load_average_1_5_15": [round(v, 1) for v in os.getloadavg()]}


def summarise(records, config):
    """The top-level ``summary`` and the Markdown table."""
    scratch = [100 * _row(r, "student (scratch)")["test_accuracy"] for r in records]
    distilled = [100 * _row(r, "student (distilled)")["test_accuracy"] for r in records]
    gains = [d - s for d, s in zip(distilled, scratch)]
    gain_mean, ci = ci95(gains)
    teacher = _row(records[0], "teacher")
    student = _row(records[0], "student (distilled)")
    summary = {
        "recipe": recipe_name(config), "seeds": len(records),
        "scratch_mean": round(statistics.mean(scratch), 3),
        "distilled_mean": round(statistics.mean(distilled), 3),
        "gain_mean": round(gain_mean, 3), "gain_ci95": [round(v, 3) for v in ci],
        "teacher_accuracy": round(100 * teacher["test_accuracy"], 3),
        "student_params": student["params"], "teacher_params": teacher["params"],
        "units": "accuracies in percent, gains in percentage points",
    }
    compressed = [r for r in records if r["artifacts"] and len(r["rows"]) > 3]
    if compressed:
        def artifact(record, name):
            return next(a for a in record["artifacts"] if a["name"] == name)
        final = "student (distilled, sparse, QAT), int8"
        summary["int8_sparse_qat"] = {
            "test_accuracy_mean": round(statistics.mean(
                100 * artifact(r, final)["test_accuracy"] for r in compressed), 3),
            "below_teacher_points": round(statistics.mean(
                100 * (_row(r, "teacher")["test_accuracy"]
                       - artifact(r, final)["test_accuracy"]) for r in compressed), 3),
            "size_vs_teacher_float32": round(statistics.mean(
                artifact(r, final)["size_bytes"] / artifact(r, "teacher")["size_bytes"]
                for r in compressed), 5),
            "speedup_vs_teacher_float32": round(statistics.mean(
                artifact(r, "teacher")["latency_median_us"]
                / artifact(r, final)["latency_median_us"] for r in compressed), 2),
        }
    lines = [
        f"Main job: {recipe_name(config)}; teacher {teacher['params']:,} params "
        f"({summary['teacher_accuracy']:.2f}%), student {student['params']:,} params; "
        + (f"the first {config.train_samples} training images" if config.train_samples
           else "all 60,000 training images") + " of Fashion-MNIST, 10,000 test images.",
        "",
        "| seed | scratch | distilled | gain | 50% sparse | sparse + QAT | "
        "int8 file (sparse, QAT) | main job (s) | load (1, 5, 15 min) at its end |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for record, s, d in zip(records, scratch, distilled):
        rows = {r["name"]: r for r in record["rows"]}
        sparse = [v for k, v in rows.items() if "sparse)" in k]
        qat = rows.get("student (distilled, sparse, QAT)")
        int8 = [a for a in record["artifacts"] if a["name"].endswith("QAT), int8")]
        cell = lambda row: f"{100 * row['test_accuracy']:.2f}%" if row else "-"  # noqa: E731
        lines.append(
            f"| {record['seed']} | {s:.2f}% | {d:.2f}% | {d - s:+.2f} | "
            f"{cell(sparse[0] if sparse else None)} | {cell(qat)} | "
            f"{cell(int8[0] if int8 else None)} | {record['total_seconds']:.0f} | "
            + ", ".join(str(v) for v in record.get("load_average_1_5_15", [])) + " |")
    lines += ["", f"Gain of the distilled student over scratch: **{gain_mean:+.2f} points**, "
              + (f"95% CI [{ci[0]:+.2f}, {ci[1]:+.2f}] over {len(gains)} paired seeds"
                 if len(gains) > 1 else "one seed (no interval)")
              + f" (scratch {summary['scratch_mean']:.2f}%, "
              f"distilled {summary['distilled_mean']:.2f}%)."]
    cold = [r for r in records if not _row(r, "teacher").get("cached")]
    if cold:
        lines.append(f"The first run trained the teacher: "
                     f"{_row(cold[0], 'teacher')['train_seconds'] / 60:.1f} min of its "
                     f"{cold[0]['total_seconds'] / 60:.1f} min (the cold main job); the "
                     "others loaded it from the cache.")
    return summary, "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--classic", action="store_true",
                        help="PipelineConfig.classic() instead of the default")
    for name, kind in OVERRIDES:
        parser.add_argument("--" + name.replace("_", "-"), type=kind)
    parser.add_argument("--no-compress", action="store_true")
    parser.add_argument("--cache-dir")
    parser.add_argument("--keep", help="write each run's report (results.md/.json, "
                        "accuracy_vs_size.png) to KEEP/seed<N>/")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                      "results", "kd_vs_scratch"))
    args = parser.parse_args(argv)
    config = pipeline.PipelineConfig.classic() if args.classic else pipeline.PipelineConfig()
    overrides = {name: getattr(args, name) for name, _ in OVERRIDES
                 if getattr(args, name) is not None}
    config = dataclasses.replace(config, allow_download=False, cache_dir=args.cache_dir,
                                 compress=not args.no_compress, verbose=0, **overrides)
    config.validate()
    settings = {k: getattr(config, k) for k in SETTINGS}

    runs_path = args.out + ".runs.jsonl"
    os.makedirs(os.path.dirname(os.path.abspath(runs_path)), exist_ok=True)
    done = {}
    if os.path.exists(runs_path):
        with open(runs_path) as handle:
            for number, line in enumerate(handle, 1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a killed run
                    print(f"{runs_path}:{number}: not a whole record, ignored "
                          "(its seed runs again)", flush=True)
                    continue
                if record["settings"] == settings:
                    done[record["seed"]] = record

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    for seed in args.seeds:
        if seed in done:
            log(f"seed {seed}: done before ({runs_path})")
            continue
        log(f"seed {seed}: the main job ({recipe_name(config)})")
        record = run_seed(dataclasses.replace(config, seed=seed), log, args.keep)
        with open(runs_path, "a+b") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell():  # after a line cut short by a killed run: a line of its own
                handle.seek(-1, os.SEEK_END)
                cut = handle.read(1) != b"\n"
                handle.seek(0, os.SEEK_END)
                handle.write(b"\n" * cut)
            handle.write((json.dumps(record, default=str) + "\n").encode())
        done[seed] = record
        log(f"seed {seed}: " + ", ".join(
            f"{r['name']} {100 * r['test_accuracy']:.2f}%" for r in record["rows"]))

    records = [done[s] for s in args.seeds]
    summary, table = summarise(records, config)
    print("\n" + table)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
            "cpus": os.cpu_count(), "command": "python bench/kd_vs_scratch.py "
            + " ".join(argv if argv is not None else sys.argv[1:]), "settings": settings}
    _io.atomic_write(args.out + ".json", json.dumps(
        {"meta": meta, "summary": summary, "runs": records}, indent=1, default=str))
    _io.atomic_write(args.out + ".md", table + f"\n\nMeasured {meta['date']} on "
                     f"{meta['machine']}, {meta['cpus']} CPUs.\n")


if __name__ == "__main__":
    main()
