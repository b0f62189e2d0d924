"""Executes the notebooks with nbclient.

    python notebooks/src/run_notebooks.py            # quick mode, outputs discarded (CI)
    python notebooks/src/run_notebooks.py --full     # full run, outputs stored in the .ipynb

Quick mode replaces the cell tagged "parameters" by `QUICK = True`.
"""

import argparse
import glob
import os
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true")
    parser.add_argument("notebooks", nargs="*", default=NOTEBOOKS)
    args = parser.parse_args()
    for path in args.notebooks:
        start = time.perf_counter()
        nb = execute(path, quick=not args.full)
        if args.full:
            nbformat.write(nb, path)
        print(f"{os.path.basename(path)}: ok in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
