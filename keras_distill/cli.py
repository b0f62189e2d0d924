"""``keras-distill``: the command-line main job.

Trains (or loads from the cache) a CNN teacher on Fashion-MNIST, trains a
small student from scratch as the baseline, distils the same student from the
teacher, and prints a table of parameters, test accuracy and time.
"""

import argparse
import os
import sys
import time


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
    )
    parser.add_argument("--quick", action="store_true",
                        help="small run (12000/2000 images, teacher 3 epochs, "
                        "students 5 epochs): about a minute on 2 cores")
    parser.add_argument("--epochs", type=int, help="student epochs (default 10)")
    parser.add_argument("--teacher-epochs", type=int, help="teacher epochs (default 5)")
    parser.add_argument("--student", choices=["cnn", "mlp"], default="cnn")
    parser.add_argument("--method", default="kd",
                        help="distillation: kd or dkd (logits) and/or l2, at, fsp, rkd "
                        "(features), joined by '+', e.g. kd+at (default kd)")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="weight of the hard-label loss (default 0.5)")
    parser.add_argument("--temperature", type=float, default=2.0,
                        help="softening temperature (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-samples", type=int,
                        help="use the first N training images (default: all)")
    parser.add_argument("--test-samples", type=int,
                        help="use the first N test images (default: all)")
    parser.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--cache-dir", help="teacher cache (default ~/.cache/keras_distill)")
    parser.add_argument("--output-dir", default="runs/latest",
                        help="where results.json, results.md and the student go")
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
    parser.add_argument("--verbose", type=int, default=0, choices=[0, 1, 2])
    return parser


def main(argv=None):
    """Runs the main job; returns the process exit code.

    Example:
    >>> main(["--epochs", "0"])
    keras-distill: error: `epochs` must be a positive integer, got 0.
    2
    """
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_distill import pipeline

    quick = pipeline.QUICK if args.quick else {}

    def pick(value, name, default):
        if value is not None:
            return value
        return quick.get(name, default)

    config = pipeline.PipelineConfig(
        epochs=pick(args.epochs, "epochs", 10),
        teacher_epochs=pick(args.teacher_epochs, "teacher_epochs", 5),
        student=args.student,
        method=args.method,
        alpha=args.alpha,
        temperature=args.temperature,
        seed=args.seed,
        batch_size=args.batch_size,
        train_samples=pick(args.train_samples, "train_samples", 0),
        test_samples=pick(args.test_samples, "test_samples", 0),
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        output_dir=args.output_dir,
        allow_download=not args.no_download,
        export=not args.no_export,
        compress=not args.no_compress,
        sparsity=args.sparsity,
        prune_epochs=pick(args.prune_epochs, "prune_epochs", 2),
        qat_epochs=pick(args.qat_epochs, "qat_epochs", 1),
        verbose=args.verbose,
    )
    try:
        config.validate()
    except ValueError as error:
        print(f"keras-distill: error: {error}")
        return 2

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    start = time.perf_counter()
    try:
        results = pipeline.run_pipeline(config, log=log)
    except (FileNotFoundError, ValueError) as error:
        print(f"keras-distill: error: {error}", file=sys.stderr)
        return 2
    results["total_seconds"] = time.perf_counter() - start
    print()
    print(pipeline.format_table(results["rows"]))
    if results.get("artifacts"):
        from keras_distill.report import format_artifact_table

        print()
        print(format_artifact_table(results["artifacts"]))
    print(f"\ntotal time: {results['total_seconds']:.0f} s")
    if config.output_dir:
        from keras_distill.report import write_report

        written = write_report(results, config.output_dir)
        print("written: " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
