"""``keras-distill``: the command-line main job, and ``keras-distill run JOB.yaml``.

Trains (or loads from the cache) a CNN teacher on Fashion-MNIST, trains a
small student from scratch as the baseline, distils the same student from the
teacher with the same schedule (DIST by default, the winner of the recipe
search; ``--classic`` for the earlier KD recipe), prunes and
quantization-aware-trains it while distilling, exports ``.tflite`` files,
and prints a table of parameters, test accuracy and time.

Every flag is checked before any training (``keras-distill: error: ...``
naming the flag, exit code 2), and so are the cache and output folders. Each
run writes into a folder of its own beside ``--output-dir``
(`keras_distill.runs.RunFolder`); ``--output-dir`` becomes a link to it when
the run completes. Ctrl-C (exit code 130) or SIGTERM (143) stop cleanly,
with one line saying what was kept.
"""

import argparse
import dataclasses
import os
import re
import signal
import sys
import time

from keras_distill import runs

_OUTPUT_HELP = (
    "where results.json, results.md, the .tflite files and the student are read "
    "(default runs/latest). Each run writes into its own folder beside it, "
    "<folder>/main-<YYYYmmdd-HHMMSS>, and when it completes OUTPUT_DIR becomes a "
    "link to that folder: it always shows one complete run, and a stopped run "
    "never touches it. A folder there holding only files of an earlier "
    "keras-distill is moved to OUTPUT_DIR.previous-<time>; a folder with other "
    "files is refused (nothing of yours is moved or deleted). Unfinished run "
    "folders of stopped runs are removed by the next run.")


def build_parser():
    """Returns the argument parser of ``keras-distill``.

    Example:
    >>> build_parser().parse_args(["--quick"]).quick
    True
    """
    parser = argparse.ArgumentParser(
        prog="keras-distill",
        description="Distil a small Fashion-MNIST student from a CNN teacher "
        "and compare it with the same student trained from scratch.",
        epilog="Your own teacher, student and data: keras-distill run JOB.yaml "
        "(see keras-distill run --help and docs/jobs.md).",
    )
    parser.add_argument("--quick", action="store_true",
                        help="small run of the classic recipe (--classic; 12000/2000 "
                        "images, teacher 3 epochs, students 5 epochs): about a "
                        "minute on 2 cores")
    parser.add_argument("--classic", action="store_true",
                        help="the recipe before the search of issue #13: a 5-epoch VGG "
                        "teacher, KD alpha 0.5 T 2, 10 student epochs at a constant "
                        "rate (a few minutes; distillation does not pay with it)")
    parser.add_argument("--epochs", type=int, help="student epochs (default 40)")
    parser.add_argument("--teacher-epochs", type=int, help="teacher epochs (default 30)")
    parser.add_argument("--teacher", choices=["wide", "vgg"],
                        help="teacher network (default wide: 0.59M parameters, 94%%)")
    parser.add_argument("--student", choices=["cnn", "mlp"], default="cnn")
    parser.add_argument("--method",
                        help="distillation: one logits term (dist, kd, dkd, kd_ls, "
                        "dkd_ls) and/or l2, at, fsp, rkd (features), joined by '+', "
                        "e.g. kd+at (default dist)")
    parser.add_argument("--alpha", type=float,
                        help="weight of the hard-label loss (default 0)")
    parser.add_argument("--temperature", type=float,
                        help="softening temperature (default 4)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the students' initial weights and data order "
                        "(the teacher is always seed 0, so it is trained once)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-samples", type=int,
                        help="use the first N training images (default: all)")
    parser.add_argument("--test-samples", type=int,
                        help="use the first N test images (default: all)")
    parser.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--cache-dir", help="teacher cache (default ~/.cache/keras_distill)")
    parser.add_argument("--output-dir", default="runs/latest", help=_OUTPUT_HELP)
    parser.add_argument("--no-compress", action="store_true",
                        help="skip pruning and QAT (both while distilling)")
    parser.add_argument("--sparsity", type=float, default=0.5,
                        help="pruning target (default 0.5)")
    parser.add_argument("--prune-epochs", type=int, help="default 2")
    parser.add_argument("--qat-epochs", type=int, help="default 1")
    parser.add_argument("--no-export", action="store_true",
                        help="skip the .tflite artifacts and their measurements")
    parser.add_argument("--no-download", action="store_true",
                        help="never download Fashion-MNIST; fail if not on disk")
    parser.add_argument("--verbose", type=int, choices=[0, 1, 2],
                        help="Keras progress per epoch: 1 a progress bar, 2 one line per "
                        "epoch, 0 none (default: 1 on a terminal, 2 otherwise)")
    parser.add_argument("--quiet", action="store_true",
                        help="no per-epoch progress (the same as --verbose 0)")
    return parser


def _verbosity(args):
    """Keras's ``verbose``: what the user asked for, else a progress bar on a
    terminal and one line per epoch in a log file.

    Example:
    >>> _verbosity(build_parser().parse_args(["--quiet"]))
    0
    """
    if args.quiet:
        return 0
    if args.verbose is not None:
        return args.verbose
    return 1 if sys.stdout.isatty() else 2


def _as_flags(message):
    """Writes the settings a message names (`` `train_samples` ``) as the
    flags the user typed (``--train-samples``)."""
    from keras_distill.pipeline import PipelineConfig

    for field in dataclasses.fields(PipelineConfig):
        message = message.replace(f"`{field.name}`", "--" + field.name.replace("_", "-"))
    return re.sub(r"`(\w+)`", r"\1", message)


def _error(message):
    print(f"keras-distill: error: {_as_flags(str(message))}", file=sys.stderr, flush=True)
    return 2


def _cache_label(args):
    """How the user chose the teacher cache, for messages."""
    if args.cache_dir:
        return "--cache-dir"
    if os.environ.get("KERAS_DISTILL_CACHE"):
        return "$KERAS_DISTILL_CACHE"
    return "the teacher cache (default; choose another with --cache-dir)"


def _stopped_line(stop, state):
    """One line: which signal stopped the run and what was kept."""
    kept = []
    cache = state.get("cache_dir")
    if cache and os.path.isdir(cache):
        n = len([f for f in os.listdir(cache) if f.startswith("teacher-")
                 and f.endswith(".json")])
        kept.append(f"the teacher cache {cache} "
                    + (f"({n} teacher{'s' * (n != 1)})" if n else "(no teacher yet)"))
    out = state.get("output_dir")
    if out:
        done = runs.current_run(out)
        kept.append(f"{out} -> {done} (the last complete run)" if done
                    else f"no complete run in {out} yet")
    run = state.get("run")
    removed = (f"; the unfinished run folder {run.path} was removed"
               if run and run.path and not os.path.exists(run.path) else "")
    return (f"keras-distill: stopped by {stop}; kept: {', '.join(kept) or 'nothing'}"
            f"{removed}.")


def main(argv=None):
    """Runs the main job; returns the process exit code.

    Errors go to stderr as ``keras-distill: error: ...`` with exit code 2.

    Example:
    >>> main(["--epochs", "0"])
    2
    """
    # Before TensorFlow loads (the package imports it lazily, so Ctrl-C is
    # ours from the first moment; `_quiet_tf` hides its start-up lines).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    state = {}
    with runs.stop_on_signals():
        try:
            return _main(argv, state)
        except Exception as error:
            stop = _interrupt_behind(error)
            if stop is None:
                raise
        except KeyboardInterrupt as interrupt:  # runs.Interrupted too (SIGTERM)
            stop = interrupt
        if not isinstance(stop, runs.Interrupted):
            stop = runs.Interrupted(signal.SIGINT)
        print(_stopped_line(stop, state), file=sys.stderr, flush=True)
        return stop.exit_code


def _interrupt_behind(error):
    """The ``KeyboardInterrupt`` that caused ``error``, if any: a signal that
    arrives while a C extension loads or runs can come back as another error
    (``ImportError: initialization failed`` while TensorFlow is imported)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def build_run_parser():
    """Returns the argument parser of ``keras-distill run``.

    Example:
    >>> build_run_parser().parse_args(["job.yaml", "--quiet"]).quiet
    True
    """
    parser = argparse.ArgumentParser(
        prog="keras-distill run",
        description="Run a job file: your teacher, student and data through the "
        "stages it names (teacher, baseline, distil, prune, qat, export), with a "
        "record per stage, --resume, and a report. Reference: docs/jobs.md.")
    parser.add_argument("job", help="the YAML job file")
    parser.add_argument("--output-dir", default="runs/latest", help=_OUTPUT_HELP.replace(
        "main-<YYYYmmdd-HHMMSS>", "<job name>-<YYYYmmdd-HHMMSS>"))
    parser.add_argument("--resume", metavar="RUN",
                        help="continue a stopped run folder: finished stages whose "
                        "inputs and settings are unchanged are skipped, a stopped "
                        "stage continues from its last finished epoch")
    parser.add_argument("--quiet", action="store_true",
                        help="no per-epoch progress (stage lines and the table stay)")
    return parser


def _run_job(argv, state):
    """``keras-distill run JOB.yaml ...``."""
    try:
        args = build_run_parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code
    from keras_distill.jobs import config as job_config

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    try:
        job, _ = job_config.load_job(args.job)  # every key checked before TensorFlow loads
    except job_config.JobError as error:
        print(f"keras-distill: error: {error}", file=sys.stderr, flush=True)
        return 2
    log(f"job {job.name}: {args.job} checked (stages: "
        f"{', '.join(job.stage_names()) or 'none'}); loading TensorFlow")
    from keras_distill import _quiet_tf

    _quiet_tf.import_tensorflow()
    from keras_distill.jobs import report, runner

    state["output_dir"] = args.output_dir
    try:
        results = runner.run_job(args.job, args.output_dir, resume=args.resume,
                                 quiet=args.quiet, log=log)
    except (FileNotFoundError, TypeError, ValueError) as error:
        if _interrupt_behind(error):
            raise
        print(f"keras-distill: error: {error}", file=sys.stderr, flush=True)
        return 2
    print()
    print(report.format_table(results["artifacts"]))
    print(f"\nreport: {os.path.join(args.output_dir, 'results.md')}")
    return 0


def _main(argv, state):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:
        return _run_job(argv[1:], state)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse's own errors and --help
        return exit_.code
    for flag in ("train_samples", "test_samples"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            return _error(f"`{flag}` must be a positive integer (leave the flag out to "
                          f"use all images), got {value}.")
    from keras_distill import _quiet_tf

    _quiet_tf.import_tensorflow()
    from keras_distill import pipeline

    quick = pipeline.QUICK if args.quick else {}
    classic = args.classic or args.quick
    defaults = pipeline.PipelineConfig.classic() if classic else pipeline.PipelineConfig()

    def pick(value, name):
        if value is not None:
            return value
        return quick.get(name, getattr(defaults, name))

    config = dataclasses.replace(
        defaults,
        epochs=pick(args.epochs, "epochs"),
        teacher_epochs=pick(args.teacher_epochs, "teacher_epochs"),
        teacher=pick(args.teacher, "teacher"),
        student=args.student,
        method=pick(args.method, "method"),
        alpha=pick(args.alpha, "alpha"),
        temperature=pick(args.temperature, "temperature"),
        seed=args.seed,
        batch_size=args.batch_size,
        train_samples=pick(args.train_samples, "train_samples"),
        test_samples=pick(args.test_samples, "test_samples"),
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        output_dir=args.output_dir,
        allow_download=not args.no_download,
        export=not args.no_export,
        compress=not args.no_compress,
        sparsity=args.sparsity,
        prune_epochs=pick(args.prune_epochs, "prune_epochs"),
        qat_epochs=pick(args.qat_epochs, "qat_epochs"),
        verbose=_verbosity(args),
    )

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    try:
        config.validate()
        state["cache_dir"] = runs.check_writable(
            config.cache_dir or pipeline.default_cache_dir(), _cache_label(args))
        run = runs.RunFolder(args.output_dir, name="main", log=log, argument="--output-dir")
        state.update(output_dir=args.output_dir, run=run)
        with run:
            config.output_dir = run.path
            run.info["argv"] = argv
            _run(pipeline, config, run, log)
    except (FileNotFoundError, TypeError, ValueError) as error:
        if _interrupt_behind(error):
            raise
        return _error(error)
    print(f"written: {args.output_dir} -> {run.path}")
    return 0


def _run(pipeline, config, run, log):
    start = time.perf_counter()
    results = pipeline.run_pipeline(config, log=log)
    results["total_seconds"] = time.perf_counter() - start
    print()
    print(pipeline.format_table(results["rows"]))
    if results.get("artifacts"):
        from keras_distill.report import format_artifact_table

        print()
        print(format_artifact_table(results["artifacts"]))
    print(f"\ntotal time: {results['total_seconds']:.0f} s")
    from keras_distill.report import write_report

    write_report(results, run.path)


if __name__ == "__main__":
    sys.exit(main())
