"""The report of a job run: ``results.json``, ``results.md`` and plots.

``results.json`` has one entry per artifact under ``"artifacts"``
(``name``, ``format`` (``keras`` or ``tflite <quantization>``),
``size_bytes``, ``accuracy`` (of the file itself for ``.tflite``: it is run
with the LiteRT interpreter), ``params``, ``file`` relative to the run
folder, and for ``.tflite`` files ``agreement`` with the Keras model and
single-image latency), and each stage's record under ``"stages"``. The
plots: accuracy against file size for every artifact, training curves per
stage, and sparsity per layer after pruning (when there is a prune stage).
"""

import json
import os

from keras_distill import _io


def format_table(rows):
    """The artifact table (Markdown) printed at the end of a run.

    Example:
    >>> print(format_table([{"name": "t", "format": "keras", "params": 10,
    ...                      "size_bytes": 2048, "accuracy": 0.5}]))
    | artifact | format | params | size (KB) | test accuracy | agreement | latency (µs) |
    |---|---|---:|---:|---:|---:|---:|
    | t | keras | 10 | 2.0 | 50.00% |  |  |
    """
    lines = ["| artifact | format | params | size (KB) | test accuracy | agreement "
             "| latency (µs) |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        size = "" if r.get("size_bytes") is None else f"{r['size_bytes'] / 1024:.1f}"
        agreement = "" if r.get("agreement") is None else f"{100 * r['agreement']:.2f}%"
        latency = ("" if r.get("latency_median_us") is None
                   else f"{r['latency_median_us']:.1f}")
        lines.append(f"| {r['name']} | {r['format']} | {r.get('params', 0):,} | {size} | "
                     f"{100 * r['accuracy']:.2f}% | {agreement} | {latency} |")
    return "\n".join(lines)


def _figure(**kwargs):
    """A matplotlib ``Figure`` made without pyplot (so a notebook's or an
    application's backend is left alone), or ``None`` without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(**kwargs)


def _save(fig, path):
    fig.tight_layout()
    with _io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    return path


def plot_accuracy_vs_size(rows, path, title="accuracy against size"):
    """Test accuracy against file size (log scale) for every artifact with a file.

    Returns:
        ``path``, or ``None`` (no matplotlib, or no artifact with a size).

    Example:
    >>> import tempfile
    >>> rows = [{"name": "a", "size_bytes": 1000, "accuracy": 0.8},
    ...         {"name": "b", "size_bytes": 9000, "accuracy": 0.9}]
    >>> out = plot_accuracy_vs_size(rows, os.path.join(tempfile.mkdtemp(), "p.png"))
    >>> out is None or os.path.getsize(out) > 0
    True
    """
    rows = [r for r in rows if r.get("size_bytes")]
    fig = _figure(figsize=(6.4, 4.2), dpi=110) if rows else None
    if fig is None:
        return None
    ax = fig.subplots()
    markers = "osD^vP*X"
    for i, r in enumerate(rows):
        ax.scatter(r["size_bytes"] / 1024, 100 * r["accuracy"], s=55,
                   marker=markers[i % len(markers)], label=r["name"])
    ax.legend(fontsize=7, loc="lower right")
    ax.margins(x=0.25, y=0.12)
    ax.set_xscale("log")
    ax.set_xlabel("file size (KB, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_curves(stages, path):
    """Loss (and accuracy when logged) per epoch of every training stage.

    Returns:
        ``path``, or ``None`` when no stage has a history.

    Example:
    >>> import tempfile
    >>> stages = {"distil": {"metrics": {"history": [
    ...     {"epoch": 1, "loss": 1.0, "accuracy": 0.5},
    ...     {"epoch": 2, "loss": 0.5, "accuracy": 0.7}]}}}
    >>> out = plot_curves(stages, os.path.join(tempfile.mkdtemp(), "c.png"))
    >>> out is None or os.path.getsize(out) > 0
    True
    """
    histories = {name: (record or {}).get("metrics", {}).get("history")
                 for name, record in stages.items()}
    histories = {k: v for k, v in histories.items() if v}
    fig = _figure(figsize=(9, 3.6), dpi=110) if histories else None
    if fig is None:
        return None
    axes = fig.subplots(1, 2)
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        for ax, key in zip(axes, ("loss", "accuracy")):
            for prefix, style in (("", "-"), ("val_", "--")):
                values = [h.get(prefix + key) for h in history]
                if all(v is not None for v in values):
                    ax.plot(epochs, values, style, marker="o", ms=3,
                            label=f"{name} {prefix + key}")
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_sparsity(by_layer, path):
    """Sparsity per layer (bars) after pruning.

    Example:
    >>> import tempfile
    >>> out = plot_sparsity({"conv": 0.5, "logits": 0.4},
    ...                     os.path.join(tempfile.mkdtemp(), "s.png"))
    >>> out is None or os.path.getsize(out) > 0
    True
    """
    fig = _figure(figsize=(6.4, 0.4 * len(by_layer) + 1.2), dpi=110) if by_layer else None
    if fig is None:
        return None
    ax = fig.subplots()
    names = list(by_layer)
    ax.barh(names, [100 * by_layer[n] for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("exact zeros in the kernel (%)")
    ax.set_xlim(0, 100)
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


def write(results, folder):
    """Writes ``results.json``, ``results.md`` and the plots into ``folder``.

    Returns:
        The paths written.

    Example:
    >>> import tempfile
    >>> paths = write({"job": "j", "data": "d", "artifacts": [], "stages": {}},
    ...               tempfile.mkdtemp())
    >>> sorted(os.path.basename(p) for p in paths)
    ['results.json', 'results.md']
    """
    written = []
    path = os.path.join(folder, "results.json")
    _io.atomic_write(path, json.dumps(results, indent=1, default=float))
    written.append(path)
    md = (f"# {results['job']}\n\nData: {results['data']}\n\n"
          + format_table(results["artifacts"]) + "\n")
    stages = results.get("stages", {})
    if stages:
        md += "\n| stage | seconds | finished |\n|---|---:|---|\n" + "".join(
            f"| {name} | {record.get('seconds', 0):.0f} | {record.get('finished', '')} |\n"
            for name, record in stages.items() if record)
    path = os.path.join(folder, "results.md")
    _io.atomic_write(path, md)
    written.append(path)
    plots = [plot_accuracy_vs_size(results["artifacts"],
                                   os.path.join(folder, "accuracy_vs_size.png"),
                                   title=f"{results['job']}: accuracy against size"),
             plot_curves(stages, os.path.join(folder, "curves.png"))]
    sparsity = ((stages.get("prune") or {}).get("metrics") or {}).get("sparsity_by_layer")
    if sparsity:
        plots.append(plot_sparsity(sparsity, os.path.join(folder, "sparsity.png")))
    written += [p for p in plots if p]
    return written
