"""Executes the notebooks with nbclient.

    python notebooks/src/run_notebooks.py            # quick mode, outputs discarded (CI)
    python notebooks/src/run_notebooks.py --full     # full run, outputs stored in the .ipynb

Quick mode replaces the cell tagged "parameters" by `QUICK = True`.
"""

import argparse
import glob
import os
import re
import sys
import time

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOKS = sorted(glob.glob(os.path.join(HERE, "..", "*.ipynb")))


def parameters_cell(nb):
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    raise ValueError("the notebook has no cell tagged 'parameters'")


def execute(path, quick, timeout=900):
    """Runs one notebook top to bottom; returns the executed notebook."""
    nb = nbformat.read(path, as_version=4)
    if quick:
        parameters_cell(nb).source = "QUICK = True"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(path)}})
    client.execute()
    return nb


_TF_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages|To enable the following "
                     r"instructions|fully_quantize|INFO: Created TensorFlow Lite|"
                     r"INFO:tensorflow:Assets written)")


def drop_tf_logs(nb):
    """Removes TensorFlow's log chatter (C++ start-up lines, converter INFO) from outputs."""
    for cell in nb.cells:
        outputs = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                lines = [line for line in output["text"].splitlines(keepends=True)
                         if not _TF_LOG.match(line)]
                if not "".join(lines).strip():
                    continue
                output["text"] = "".join(lines)
            outputs.append(output)
        if cell.cell_type == "code":
            cell.outputs = outputs


def stamp(nb, seconds):
    """Adds (or replaces) a markdown cell saying where and when outputs came from."""
    import platform

    text = (f"*The outputs stored in this notebook come from a full run (`QUICK = False`) on "
            f"{time.strftime('%Y-%m-%d')}, on a {os.cpu_count()}-CPU {platform.machine()} "
            f"machine without GPU ({platform.platform()}), in {seconds / 60:.0f} minutes. "
            "Re-run it to get your own.*")
    nb.cells = [c for c in nb.cells
                if "run-info" not in c.get("metadata", {}).get("tags", [])]
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(text, metadata={"tags": ["run-info"]}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true")
    parser.add_argument("notebooks", nargs="*", default=NOTEBOOKS)
    args = parser.parse_args()
    for path in args.notebooks:
        start = time.perf_counter()
        nb = execute(path, quick=not args.full)
        seconds = time.perf_counter() - start
        if args.full:
            drop_tf_logs(nb)
            stamp(nb, seconds)
            nbformat.write(nb, path)
        print(f"{os.path.basename(path)}: ok in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
