"""The main job's report: every artifact measured by running the artifact itself.

For each model the pipeline produced, `measure_artifact` exports it to a
``.tflite`` file (with `keras_distill.export.to_tflite`), runs that file with
the LiteRT interpreter on the test set, and times it; `format_table` and
`format_artifact_table` make Markdown tables of the pipeline's rows;
`write_report` writes them as Markdown and JSON and draws accuracy against
file size as a PNG.
"""

import json
import os

from keras_distill import _io, export


def measure_artifact(name, model, path, x_test, y_test, quantization="float32",
                     representative_data=None, latency_runs=200):
    """Exports ``model`` to ``path`` and measures the exported file.

    Args:
        name: The row's name (e.g. ``"student (distilled), int8"``).
        model: A Keras model of either flavour.
        path: Where the ``.tflite`` file goes (its folder must exist).
        x_test, y_test: Test data; accuracy is the file's, not the model's.
        quantization: Passed to `keras_distill.export.to_tflite`.
        representative_data: Calibration inputs for ``"int8"``.
        latency_runs: Timed single-input runs (after warm-up), 1 thread.

    Returns:
        A dict: ``name``, ``params``, ``format``, ``file``, ``size_bytes``,
        ``gzip_bytes``, ``test_accuracy``, ``agreement`` (argmax agreement
        with the Keras model), ``latency_median_us``, ``latency_p90_us``.

    Example:
    >>> import keras, numpy as np, tempfile
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> x = np.random.default_rng(0).normal(size=(20, 4)).astype("float32")
    >>> y = np.zeros(20, "int64")
    >>> row = measure_artifact("m", m, os.path.join(tempfile.mkdtemp(),
    ...                        "m.tflite"), x, y, latency_runs=5)
    >>> row["format"], row["agreement"]
    ('tflite float32', 1.0)
    """
    exported = export.to_tflite(model, path, quantization,
                                representative_data=representative_data)
    evaluation = export.evaluate_tflite(path, x_test, y_test, reference_model=model)
    timing = export.benchmark_tflite(path, num_threads=1, runs=latency_runs,
                                     warmup=min(20, latency_runs))
    return {
        "name": name,
        "params": int(model.count_params()),
        "format": f"tflite {quantization}",
        "file": os.path.basename(path),
        "size_bytes": exported.size_bytes,
        "gzip_bytes": exported.gzip_size_bytes,
        "test_accuracy": evaluation.accuracy,
        "agreement": evaluation.agreement,
        "latency_median_us": timing.median_us,
        "latency_p90_us": timing.p90_us,
    }


def format_table(rows):
    """Formats result rows as a Markdown table.

    Example:
    >>> print(format_table([{"name": "m", "params": 10, "test_accuracy": 0.5,
    ...                      "train_seconds": 1.0}]))
    | model | params | test accuracy | sparsity | train time (s) |
    |---|---:|---:|---:|---:|
    | m | 10 | 50.00% | - | 1.0 |
    """
    lines = ["| model | params | test accuracy | sparsity | train time (s) |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        seconds = "cached" if row.get("cached") else f"{row['train_seconds']:.1f}"
        sparsity = f"{100 * row['sparsity']:.0f}%" if "sparsity" in row else "-"
        lines.append(f"| {row['name']} | {row['params']:,} | "
                     f"{100 * row['test_accuracy']:.2f}% | {sparsity} | {seconds} |")
    return "\n".join(lines)


def format_artifact_table(rows):
    """Formats `measure_artifact` rows as a Markdown table.

    Example:
    >>> print(format_artifact_table([{"name": "m", "params": 10,
    ...     "format": "tflite int8", "size_bytes": 2048, "gzip_bytes": 1024,
    ...     "test_accuracy": 0.5, "agreement": 1.0,
    ...     "latency_median_us": 3.0, "latency_p90_us": 4.0}]))
    | artifact | params | format | size (KB) | gzip (KB) | test accuracy | agrees with Keras | latency median / p90 (µs) |
    |---|---:|---|---:|---:|---:|---:|---:|
    | m | 10 | tflite int8 | 2.0 | 1.0 | 50.00% | 100.00% | 3.0 / 4.0 |
    """
    lines = [
        "| artifact | params | format | size (KB) | gzip (KB) | test accuracy "
        "| agrees with Keras | latency median / p90 (µs) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['params']:,} | {r['format']} | "
            f"{r['size_bytes'] / 1024:.1f} | {r['gzip_bytes'] / 1024:.1f} | "
            f"{100 * r['test_accuracy']:.2f}% | {100 * r['agreement']:.2f}% | "
            f"{r['latency_median_us']:.1f} / {r['latency_p90_us']:.1f} |")
    return "\n".join(lines)


def plot_accuracy_vs_size(rows, path):
    """Draws test accuracy against gzip file size (log scale) to a PNG.

    The gzip size is what an app download costs; it also shows what pruning
    buys (TFLite stores zeros, so sparsity shrinks only the compressed file).

    Args:
        rows: `measure_artifact` rows.
        path: The ``.png`` to write.

    Returns:
        ``path``, or ``None`` when matplotlib is not installed.

    Example:
    >>> import tempfile
    >>> rows = [{"name": "a", "gzip_bytes": 1000, "test_accuracy": 0.8},
    ...         {"name": "b", "gzip_bytes": 9000, "test_accuracy": 0.9}]
    >>> out = plot_accuracy_vs_size(rows, os.path.join(tempfile.mkdtemp(), "p.png"))
    >>> out is None or os.path.getsize(out) > 0
    True
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    markers = "osD^vP*X"
    for i, r in enumerate(rows):
        # A legend, not annotations: points of similar size and accuracy
        # (e.g. int8 variants) would make labels overlap.
        ax.scatter(r["gzip_bytes"] / 1024, 100 * r["test_accuracy"], s=55,
                   marker=markers[i % len(markers)], label=r["name"])
    ax.legend(fontsize=8, loc="lower right")
    ax.margins(x=0.25, y=0.12)
    ax.set_xscale("log")
    ax.set_xlabel("gzip size of the .tflite file (KB, log scale): the download")
    ax.set_ylabel("test accuracy (%), measured by running the file")
    ax.set_title("Fashion-MNIST: accuracy against size")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with _io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path


def write_report(results, output_dir):
    """Writes ``results.json``, ``results.md`` and ``accuracy_vs_size.png``.

    Args:
        results: The dict `keras_distill.pipeline.run_pipeline` returns.
        output_dir: The folder (created if missing).

    Returns:
        The list of paths written.

    Example:
    >>> import tempfile
    >>> paths = write_report({"rows": [], "artifacts": []}, tempfile.mkdtemp())
    >>> sorted(os.path.basename(p) for p in paths)
    ['results.json', 'results.md']
    """
    os.makedirs(output_dir, exist_ok=True)
    written = []
    json_path = os.path.join(output_dir, "results.json")
    _io.atomic_write(json_path, json.dumps(results, indent=2))
    written.append(json_path)
    md = format_table(results["rows"]) + "\n"
    if results.get("artifacts"):
        md += "\n" + format_artifact_table(results["artifacts"]) + "\n"
    md_path = os.path.join(output_dir, "results.md")
    _io.atomic_write(md_path, md)
    written.append(md_path)
    if results.get("artifacts"):
        png = plot_accuracy_vs_size(
            results["artifacts"], os.path.join(output_dir, "accuracy_vs_size.png"))
        if png:
            written.append(png)
    return written
