"""The README's Quickstart runs as written (on every backend of the suite)."""

import os
import re

import keras
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_blocks():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_quickstart_runs_as_written(tmp_path, monkeypatch):
    quickstart = python_blocks()[0]
    assert "Distiller(student=student, teacher=teacher)" in quickstart
    rng = np.random.default_rng(0)
    x = rng.random((64, 8), dtype=np.float32)
    y = rng.integers(0, 3, 64)

    def net():
        return keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])

    monkeypatch.chdir(tmp_path)
    namespace = {"student": net(), "teacher": net(), "x_train": x,
                 "y_train": y, "x_test": x, "y_test": y}
    exec(compile(quickstart, "README.md", "exec"), namespace)
    assert os.path.exists(tmp_path / "student.keras")
    reloaded = keras.models.load_model(tmp_path / "student.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0),
                               namespace["student"].predict(x, verbose=0),
                               rtol=1e-6)
