"""Benchmark: three roads to a .tflite file for the students, and why int8 is slow here.

For the ``cnn`` and ``mlp`` students (``build_student``), trained on the
Fashion-MNIST labels for a few seeded epochs (weights cached outside the
repository), this writes each of:

- today's converter path, ``keras_distill.export.to_tflite``
  (``tf.lite.TFLiteConverter.from_keras_model``): float32, float16, dynamic
  and int8 (300 calibration images);
- Keras 3's ``model.export(path, format="litert")`` (SavedModel, then
  ``TFLiteConverter.from_saved_model``): float32 as it comes, and int8 with
  converter options passed through ``model.export``'s keyword arguments;
- the LiteRT quantizer (``litert-quantizer``, the successor of
  ai-edge-quantizer) applied to today's float32 file: ``static_wi8_ai8``
  (int8 weights and activations, the same 300 calibration images) and
  ``dynamic_wi8_afp32``; skipped when the package is not installed.

For each file: size (raw and gzip), the ops in it, Flex ops
(``keras_distill.litert.flex_ops``), test accuracy of the file run with the
LiteRT interpreter on the 10k test images, top-1 agreement with the Keras
model, and latency of one image (``benchmark_tflite``): 1 and 2 threads,
with LiteRT's default XNNPACK delegate and without it (TFLite's builtin
kernels), and, where a C compiler is there, once more with AMX denied to
the process (a seccomp filter makes ``arch_prctl(ARCH_REQ_XCOMP_PERM)``
fail, so XNNPACK falls back to its AVX512-VNNI int8 kernels): the test of
the explanation in docs/export_paths.md. Batch-size effects are timed on
the cnn student's float32 and int8 files.

Latency is measured in worker processes, ``--rounds`` times; in each round
every variant is timed once (``--runs`` invokes after ``--runs // 10``
warm-up invokes) in a shuffled order, and the AMX-allowed and AMX-denied
workers alternate which goes first. A table cell is the median over rounds
of the per-round medians; the load average is recorded around every round
(other work may share the machine: say so next to any number you quote).

``--profile`` adds a ``perf record`` of the cnn float32 and int8 files (the
hottest functions, AMX allowed and denied) when ``perf`` is installed.

Writes bench/results/export_paths.json and .md, and prints the Markdown.

Usage:
    python bench/export_paths.py --profile            # the committed results
    python bench/export_paths.py --epochs 1 --rounds 2 --runs 100   # smoke
"""

import argparse
import gzip
from importlib import metadata
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CALIBRATION = 300


# -- the students ------------------------------------------------------------------


def student(kind, args, x, y):
    """The ``kind`` student trained on the labels, from the cache when there."""
    import keras

    from keras_distill import models, pipeline

    path = os.path.join(args.cache, f"{kind}_e{args.epochs}_s{args.seed}.weights.h5")
    model = models.build_student(kind, seed=args.seed)
    if os.path.exists(path):
        model.load_weights(path)
        return model, f"trained on the labels, {args.epochs} epochs, seed {args.seed} (cached)"
    config = pipeline.PipelineConfig(student=kind, epochs=args.epochs,
                                     seed=args.seed).validate()
    model, seconds = pipeline.train_scratch(config, x, y)
    model.save_weights(path)
    keras.backend.clear_session()
    return model, (f"trained on the labels, {args.epochs} epochs, seed {args.seed} "
                   f"({seconds:.0f} s)")


def calibration_images(x):
    rng = np.random.default_rng(0)  # as to_tflite samples them
    return x[np.sort(rng.choice(len(x), size=CALIBRATION, replace=False))]


# -- the three paths -------------------------------------------------------------


def write_files(model, kind, x, folder):
    """Every variant's file; returns ``{name: {"path", "convert_seconds", ...}}``."""
    import tensorflow as tf

    from keras_distill import export

    calib = calibration_images(x)
    files = {}

    def timed(name, make, **extra):
        path = os.path.join(folder, f"{kind}_{name.replace(' ', '_')}.tflite")
        start = time.perf_counter()
        try:
            make(path)
        except Exception as error:  # noqa: BLE001 - reported, not fatal
            files[name] = {"error": f"{type(error).__name__}: {error}"[:500], **extra}
            print(f"{kind} {name}: FAILED {files[name]['error']}", flush=True)
            return
        files[name] = {"path": path, "convert_seconds": time.perf_counter() - start,
                       **extra}

    for quantization in export.QUANTIZATIONS:
        timed(f"converter {quantization}",
              lambda p, q=quantization: export.to_tflite(model, p, q,
                                                         representative_data=x),
              path_kind="converter", how=f"to_tflite(model, path, {quantization!r})")
    timed("converter int8 float-io",
          lambda p: export.to_tflite(model, p, "int8", representative_data=x,
                                     int8_io=False),
          path_kind="converter",
          how="to_tflite(model, path, 'int8', int8_io=False): QUANTIZE and "
              "DEQUANTIZE at the ends")

    def representative():
        for image in calib:
            yield [image[None]]

    timed("keras.export float32",
          lambda p: model.export(p, format="litert", verbose=False),
          path_kind="keras.export", how='model.export(path, format="litert")')
    timed("keras.export int8",
          lambda p: model.export(
              p, format="litert", verbose=False,
              optimizations=[tf.lite.Optimize.DEFAULT],
              representative_dataset=representative,
              target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
              inference_input_type=tf.int8, inference_output_type=tf.int8),
          path_kind="keras.export",
          how='model.export(path, format="litert", optimizations=[DEFAULT], '
              'representative_dataset=..., target_spec={"supported_ops": '
              '[TFLITE_BUILTINS_INT8]}, inference_input_type=tf.int8, '
              'inference_output_type=tf.int8)')

    float_file = files.get("converter float32", {}).get("path")
    try:
        from litert_quantizer import quantizer, recipe
    except ImportError as error:
        for name in ("quantizer a8w8", "quantizer a8w8 per-image calibration",
                     "quantizer wi8 afp32"):
            files[name] = {"error": f"litert-quantizer not installed ({error})",
                           "path_kind": "litert-quantizer"}
        return files

    def quantize(path, which, one_batch=True):
        from ai_edge_litert.interpreter import Interpreter

        qt = quantizer.Quantizer(float_file)
        qt.load_quantization_recipe(which())
        result = None
        if qt.need_calibration:
            signatures = Interpreter(model_path=float_file).get_signature_list()
            key = next(iter(signatures))
            name = signatures[key]["inputs"][0]
            # The calibrator keeps a moving average (0.95) of each sample's
            # min/max: one sample of 300 images gives their global range, as
            # the TFLite converter's calibration does; 300 samples of one
            # image give narrower ranges that clip.
            samples = [calib] if one_batch else [image[None] for image in calib]
            result = qt.calibrate({key: [{name: sample} for sample in samples]})
        with open(path, "wb") as handle:
            handle.write(qt.quantize(result, enable_progress_report=False).quantized_model)

    timed("quantizer a8w8", lambda p: quantize(p, recipe.static_wi8_ai8),
          path_kind="litert-quantizer",
          how="Quantizer(float32 file), recipe.static_wi8_ai8(), calibrate() on one "
              "sample of the 300 images")
    timed("quantizer a8w8 per-image calibration",
          lambda p: quantize(p, recipe.static_wi8_ai8, one_batch=False),
          path_kind="litert-quantizer",
          how="Quantizer(float32 file), recipe.static_wi8_ai8(), calibrate() on 300 "
              "samples of one image (the calibrator's moving-average ranges)")
    timed("quantizer wi8 afp32", lambda p: quantize(p, recipe.dynamic_wi8_afp32),
          path_kind="litert-quantizer",
          how="Quantizer(float32 file), recipe.dynamic_wi8_afp32()")
    return files


def describe(path):
    """Size, gzip size, ops, I/O dtypes and Flex ops of a file."""
    from ai_edge_litert.interpreter import Interpreter

    from keras_distill.litert import flex_ops

    content = open(path, "rb").read()
    interpreter = Interpreter(model_path=path,
                              experimental_op_resolver_type=_no_delegate())
    ops = []
    for op in interpreter._get_ops_details():  # noqa: SLF001 - the only op listing
        kinds = sorted({np.dtype(t).name for t in op.get("operand_types", ())})
        ops.append(f"{op['op_name']}({'/'.join(kinds)})")
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    return {
        "size_bytes": len(content),
        "gzip_size_bytes": len(gzip.compress(content, compresslevel=9, mtime=0)),
        "ops": ops,
        "flex_ops": list(flex_ops(content)),
        "input": f"{np.dtype(inp['dtype']).name}{inp['shape_signature'].tolist()}",
        "output": f"{np.dtype(out['dtype']).name}{out['shape_signature'].tolist()}",
    }


def _no_delegate():
    from ai_edge_litert.interpreter import OpResolverType

    return OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def check(model, path, xt, yt, keras_accuracy):
    from keras_distill.litert import evaluate_tflite

    row = {}
    for xnnpack in (True, False):
        evaluation = evaluate_tflite(path, xt, yt, reference_model=model,
                                     batch_size=1000, xnnpack=xnnpack)
        key = "" if xnnpack else "_builtin"
        row["accuracy" + key] = evaluation.accuracy
        row["agreement" + key] = evaluation.agreement
        row["max_abs_diff" + key] = evaluation.max_abs_diff
    row["accuracy_delta_points"] = 100 * (row["accuracy"] - keras_accuracy)
    return row


# -- latency, in worker processes ------------------------------------------------

NOAMX_C = r"""
/* noamx: runs a command with arch_prctl(ARCH_REQ_XCOMP_PERM) failing (EPERM),
   so libraries cannot enable the AMX tile registers (XNNPACK then uses its
   AVX512-VNNI kernels). Built by bench/export_paths.py. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

int main(int argc, char **argv) {
  struct sock_filter filter[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_arch_prctl, 0, 3),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x1023, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof(filter) / sizeof(filter[0]), filter};
  if (argc < 2) { fprintf(stderr, "usage: noamx command...\n"); return 2; }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
      prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
    perror("noamx: seccomp"); return 1;
  }
  execvp(argv[1], argv + 1);
  perror("noamx: execvp");
  return 1;
}
"""


def cpu_facts():
    flags, model = set(), platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                elif line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
              "amx_tile", "amx_int8", "amx_bf16")
    return {"model": model, "flags": [f for f in wanted if f in flags],
            "amx_int8": "amx_int8" in flags}


def noamx_launcher(cache):
    """Path of the noamx launcher, built with the C compiler, or None."""
    if platform.machine() != "x86_64" or not sys.platform.startswith("linux"):
        return None
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source, binary = os.path.join(cache, "noamx.c"), os.path.join(cache, "noamx")
    with open(source, "w") as handle:
        handle.write(NOAMX_C)
    done = subprocess.run([compiler, "-O2", "-o", binary, source],
                          capture_output=True, text=True)
    return binary if done.returncode == 0 else None


def amx_permitted():
    """Whether this process may use AMX tiles (asks for them, like XNNPACK)."""
    import ctypes

    if platform.machine() != "x86_64" or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(158, 0x1023, 18) == 0  # arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)


def worker(plan_path):
    """Times every entry of the plan once; prints JSON."""
    from keras_distill.litert import benchmark_tflite

    with open(plan_path) as handle:
        plan = json.load(handle)
    results = []
    for entry in plan["entries"]:
        b = benchmark_tflite(entry["path"], num_threads=entry["threads"],
                             runs=plan["runs"], warmup=plan["warmup"],
                             batch_size=entry["batch"], xnnpack=entry["xnnpack"])
        results.append({**entry, "median_us": b.median_us, "p90_us": b.p90_us})
    print(json.dumps({"amx_permitted": amx_permitted(), "results": results}))


def latency(files, args, launcher):
    """Interleaved, repeated timing; returns per-variant statistics and rounds."""
    entries = []
    for (kind, name), info in files.items():
        if "path" not in info:
            continue
        for threads in (1, 2):
            for xnnpack in (True, False):
                entries.append({"student": kind, "file": name, "path": info["path"],
                                "threads": threads, "xnnpack": xnnpack, "batch": 1})
        if kind == "cnn" and name in ("converter float32", "converter int8"):
            for batch in (8, 64):
                for xnnpack in (True, False):
                    entries.append({"student": kind, "file": name,
                                    "path": info["path"], "threads": 1,
                                    "xnnpack": xnnpack, "batch": batch})
    modes = [("amx", [])] + ([("noamx", [launcher])] if launcher else [])
    samples, rounds = {}, []
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        for r in range(args.rounds):
            order = modes if r % 2 == 0 else modes[::-1]
            for mode, prefix in order:
                shuffled = list(entries)
                rng.shuffle(shuffled)
                plan = os.path.join(folder, "plan.json")
                with open(plan, "w") as handle:
                    json.dump({"entries": shuffled, "runs": args.runs,
                               "warmup": max(1, args.runs // 10)}, handle)
                load_before = os.getloadavg()
                start = time.perf_counter()
                done = subprocess.run(
                    prefix + [sys.executable, os.path.abspath(__file__),
                              "--worker", plan],
                    capture_output=True, text=True, check=False,
                    env=dict(os.environ, OPENBLAS_NUM_THREADS="1",
                             OMP_NUM_THREADS="1"))
                if done.returncode != 0:
                    raise RuntimeError(f"latency worker ({mode}) failed:\n"
                                       f"{done.stderr[-3000:]}")
                report = json.loads(done.stdout.strip().splitlines()[-1])
                rounds.append({"round": r, "mode": mode,
                               "amx_permitted": report["amx_permitted"],
                               "seconds": time.perf_counter() - start,
                               "load_before": load_before,
                               "load_after": os.getloadavg()})
                for result in report["results"]:
                    key = (result["student"], result["file"], result["threads"],
                           result["xnnpack"], result["batch"], mode)
                    samples.setdefault(key, []).append(result["median_us"])
                print(f"round {r + 1}/{args.rounds} {mode}: "
                      f"{rounds[-1]['seconds']:.0f} s, load {load_before[0]:.2f}"
                      f" -> {rounds[-1]['load_after'][0]:.2f}", flush=True)
    stats = [{"student": k[0], "file": k[1], "threads": k[2], "xnnpack": k[3],
              "batch": k[4], "amx": k[5] == "amx", "median_us": float(np.median(v)),
              "min_us": float(np.min(v)), "max_us": float(np.max(v)), "rounds_us": v}
             for k, v in samples.items()]
    return stats, rounds


# -- perf profile ----------------------------------------------------------------

PROFILE_LOOP = r"""
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
path, n = sys.argv[1], int(sys.argv[2])
it = Interpreter(model_path=path, num_threads=1)
d = it.get_input_details()[0]
shape = [1] + list(d["shape_signature"][1:])
it.resize_tensor_input(d["index"], shape)
it.allocate_tensors()
it.set_tensor(d["index"], np.zeros(shape, d["dtype"]))
for _ in range(n):
    it.invoke()
"""


def profile(files, launcher, cache):
    """Hottest functions of the cnn float32/int8 files under ``perf record``."""
    perf = shutil.which("perf")
    if perf is None:
        return {"skipped": "perf is not installed"}
    loop = os.path.join(cache, "profile_loop.py")
    with open(loop, "w") as handle:
        handle.write(PROFILE_LOOP)
    out = {}
    for name in ("converter float32", "converter int8"):
        info = files.get(("cnn", name), {})
        if "path" not in info:
            continue
        for mode, prefix in [("amx", [])] + ([("noamx", [launcher])] if launcher else []):
            data = os.path.join(cache, "perf.data")
            record = subprocess.run(
                [perf, "record", "-q", "-o", data, "--"] + prefix
                + [sys.executable, loop, info["path"], "30000"],
                capture_output=True, text=True,
                env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"))
            if record.returncode != 0:
                return {"skipped": f"perf record failed: {record.stderr[-300:]}"}
            report = subprocess.run(
                [perf, "report", "-i", data, "--no-children", "--sort", "symbol",
                 "--stdio", "--percent-limit", "2"],
                capture_output=True, text=True)
            top = []
            for line in report.stdout.splitlines():
                found = re.match(r"\s*([\d.]+%)\s+\[.\]\s+(\S+)", line)
                if found:
                    top.append(f"{found.group(1)} {found.group(2)}")
            out[f"cnn {name}, {mode}"] = top[:6]
    return out


# -- the report ------------------------------------------------------------------


def lat(stats, kind, name, threads=1, xnnpack=True, batch=1, amx=True):
    for s in stats:
        if (s["student"], s["file"], s["threads"], s["xnnpack"], s["batch"],
                s["amx"]) == (kind, name, threads, xnnpack, batch, amx):
            return s
    return None


def fmt(s, per=1):
    if s is None:
        return "–"
    return f"{s['median_us'] / per:.1f}"


def format_markdown(result):
    meta, rows, stats = result["meta"], result["files"], result["latency"]
    noamx = any(not s["amx"] for s in stats)
    lines = [
        f"Students trained on the Fashion-MNIST labels ({meta['training']}); "
        "accuracy of each file run with the LiteRT interpreter (default XNNPACK "
        "delegate) on the 10,000 test images; agreement = top-1 agreement with "
        "the Keras model. Latency: one image, µs per `invoke()`, median over "
        f"{meta['args']['rounds']} interleaved rounds of the median of "
        f"{meta['args']['runs']} invokes; XNNPACK = LiteRT's default delegate, "
        "builtin = TFLite's own kernels (`xnnpack=False`)"
        + ("; no-AMX = the same XNNPACK run in a process denied AMX (a seccomp "
           "filter refuses `arch_prctl(ARCH_REQ_XCOMP_PERM)`; checked in every "
           f"round: {meta['amx_check']})." if noamx else ".")
        + f" Load average during timing: {meta['load_range'][0]:.2f}–"
        f"{meta['load_range'][1]:.2f} on {meta['cpus']} CPUs (a niced teacher "
        "training shared the machine).",
        "",
    ]
    for kind in meta["students"]:
        k = meta["keras"][kind]
        lines += [
            f"### `{kind}` student ({k['params']:,} params, Keras test accuracy "
            f"{100 * k['accuracy']:.2f}%)",
            "",
            "| file | convert s | size | gzip | accuracy | vs Keras | agreement | "
            "XNNPACK 1 thr | XNNPACK 2 thr | builtin 1 thr | builtin 2 thr"
            + (" | no-AMX XNNPACK 1 thr | no-AMX 2 thr |" if noamx else " |"),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
            + ("|---:|---:|" if noamx else "|"),
        ]
        for (student_kind, name), r in rows.items():
            if student_kind != kind:
                continue
            if "error" in r:
                lines.append(f"| {name} | not written: {r['error'][:120]} |")
                continue
            cells = [fmt(lat(stats, kind, name, t, x)) for x in (True, False)
                     for t in (1, 2)]
            if noamx:
                cells += [fmt(lat(stats, kind, name, t, True, amx=False)) for t in (1, 2)]
            lines.append(
                f"| {name} | {r['convert_seconds']:.1f} | {r['size_bytes'] / 1024:.1f} KB | "
                f"{r['gzip_size_bytes'] / 1024:.1f} KB | {100 * r['accuracy']:.2f}% | "
                f"{r['accuracy_delta_points']:+.2f} | {100 * r['agreement']:.2f}% | "
                + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### Spread over rounds (1 thread, batch 1: median, min–max of the "
              "round medians, µs)", "",
              "| student | file | XNNPACK | XNNPACK, no AMX | builtin |",
              "|---|---|---:|---:|---:|"]
    for kind in meta["students"]:
        for name in ("converter float32", "converter int8"):
            cells = []
            for xnnpack, amx in ((True, True), (True, False), (False, True)):
                s = lat(stats, kind, name, 1, xnnpack, 1, amx)
                cells.append("–" if s is None else
                             f"{s['median_us']:.1f} ({s['min_us']:.1f}–{s['max_us']:.1f})")
            lines.append(f"| {kind} | {name} | " + " | ".join(cells) + " |")
    lines += ["", "### Batch size (cnn, 1 thread, µs per image)", "",
              "| file | kernels | batch 1 | batch 8 | batch 64 |", "|---|---|---:|---:|---:|"]
    for name in ("converter float32", "converter int8"):
        for label, xnnpack, amx in (("XNNPACK", True, True), ("builtin", False, True),
                                    ("XNNPACK, no AMX", True, False)):
            if not amx and not noamx:
                continue
            cells = [fmt(lat(stats, "cnn", name, 1, xnnpack, b, amx), b)
                     for b in (1, 8, 64)]
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "### Ops in the files", ""]
    for (kind, name), r in rows.items():
        if "ops" in r:
            flex = f"; Flex ops: {', '.join(r['flex_ops'])}" if r["flex_ops"] else ""
            lines.append(f"- {kind} {name} (in {r['input']}, out {r['output']}{flex}): "
                         + ", ".join(r["ops"]))
    if result.get("profile"):
        lines += ["", "### perf: hottest functions (cnn, 1 thread, 30,000 invokes)", ""]
        for key, top in result["profile"].items():
            lines.append(f"- {key}: " + ("; ".join(top) if isinstance(top, list) else top))
    lines += ["", "### How each file was written", ""]
    seen = set()
    for (_, name), r in rows.items():
        if name not in seen and "how" in r:
            seen.add(name)
            lines.append(f"- {name}: `{r['how']}`")
    lines += ["", (
        f"Measured {meta['date']} on {meta['machine']} ({meta['cpu']['model']}; "
        f"{', '.join(meta['cpu']['flags'])}), {meta['cpus']} CPUs, "
        f"{', '.join(f'{k} {v}' for k, v in meta['versions'].items())}, with "
        f"`{meta['command']}`. Load average at start {meta['load_start'][0]:.2f}, "
        f"at end {meta['load_end'][0]:.2f}.")]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--students", nargs="+", default=["cnn", "mlp"],
                        choices=["cnn", "mlp"])
    parser.add_argument("--rounds", type=int, default=7,
                        help="interleaved latency rounds (median over them)")
    parser.add_argument("--runs", type=int, default=500,
                        help="timed invokes per variant per round")
    parser.add_argument("--profile", action="store_true",
                        help="perf-record the cnn float32/int8 files")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(),
                                                        "keras_distill_export_paths"),
                        help="trained weights and the files (not committed)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "export_paths"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    command = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(command)
    if args.worker:
        return worker(args.worker)

    import keras

    from keras_distill import pipeline

    load_start = os.getloadavg()
    os.makedirs(args.cache, exist_ok=True)
    folder = os.path.join(args.cache, "files")
    os.makedirs(folder, exist_ok=True)
    (x, y), (xt, yt) = pipeline.prepare_data(pipeline.PipelineConfig())
    files, keras_info, training = {}, {}, ""
    for kind in args.students:
        model, training = student(kind, args, x, y)
        accuracy = pipeline._accuracy(model, xt, yt)
        keras_info[kind] = {"params": model.count_params(), "accuracy": accuracy}
        print(f"{kind}: {training}; Keras test accuracy {100 * accuracy:.2f}%",
              flush=True)
        for name, info in write_files(model, kind, x, folder).items():
            if "path" in info:
                info.update(describe(info["path"]))
                info.update(check(model, info["path"], xt, yt, accuracy))
                print(json.dumps({"student": kind, "file": name, **{
                    k: info[k] for k in ("size_bytes", "accuracy", "agreement")}}),
                    flush=True)
            files[(kind, name)] = info
        keras.backend.clear_session()

    launcher = noamx_launcher(args.cache) if cpu_facts()["amx_int8"] else None
    stats, rounds = latency(files, args, launcher)
    loads = [r["load_before"][0] for r in rounds] + [r["load_after"][0] for r in rounds]
    versions = {}
    for name in ("tensorflow", "keras", "ai-edge-litert", "litert-quantizer"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    result = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(),
            "cpu": cpu_facts(), "cpus": os.cpu_count(), "args": vars(args),
            "command": " ".join(["python bench/export_paths.py"] + command),
            "students": args.students, "keras": keras_info,
            "training": training.replace(" (cached)", ""),
            "versions": versions, "noamx_launcher": bool(launcher),
            "load_start": load_start, "load_end": os.getloadavg(),
            "load_range": [min(loads), max(loads)],
            "amx_check": (
                "AMX granted to the "
                f"{sum(r['amx_permitted'] for r in rounds if r['mode'] == 'amx')}/"
                f"{sum(r['mode'] == 'amx' for r in rounds)} AMX workers, refused to "
                f"{sum(not r['amx_permitted'] for r in rounds if r['mode'] == 'noamx')}/"
                f"{sum(r['mode'] == 'noamx' for r in rounds)} no-AMX workers"),
        },
        "files": files,
        "latency": stats,
        "rounds": rounds,
        "profile": profile(files, launcher, args.cache) if args.profile else None,
    }
    table = format_markdown(result)
    print("\n" + table)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    serializable = dict(result, files=[{"student": k[0], "file": k[1], **{
        key: value for key, value in v.items() if key != "path"}}
        for k, v in files.items()])
    with open(args.out + ".json", "w") as handle:
        json.dump(serializable, handle, indent=2, default=str)
    with open(args.out + ".md", "w") as handle:
        handle.write(table + "\n")
    return None


if __name__ == "__main__":
    main()
