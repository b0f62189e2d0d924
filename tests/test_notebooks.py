"""The notebooks: install cell, no unconditional downloads, run top to bottom (quick mode)."""

import glob
import os
import re
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, os.path.join(ROOT, "notebooks", "src"))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


def code_cells(path):
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if c.cell_type == "code"]


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_first_code_cell_installs_the_package(path):
    first = code_cells(path)[0].source
    assert "pip" in first and "keras-distill" in first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_no_cell_downloads_unconditionally(path):
    for cell in code_cells(path):
        source = cell.source
        assert "fashion_mnist.load_data" not in source
        assert not re.search(r"https?://", source), source
        assert "urlretrieve" not in source and "wget" not in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_no_huge_embedded_outputs(path):
    assert os.path.getsize(path) < 1_000_000


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_runs_top_to_bottom_in_quick_mode(path, tmp_path, monkeypatch):
    from keras_distill import datasets

    if datasets.find_fashion_mnist() is None:
        pytest.skip("Fashion-MNIST is not on this machine")
    import run_notebooks

    monkeypatch.setenv("KERAS_DISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = run_notebooks.execute(path, quick=True, timeout=600)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
