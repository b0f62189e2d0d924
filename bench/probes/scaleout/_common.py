"""What both scale-out probes share: the data, the fixed weights, where
results go and how a result file is read back."""

import json
import os
import tempfile

OUT = os.path.join(tempfile.gettempdir(), "keras_distill_scaleout")
N, FEATURES, CLASSES = 256, 8, 3
GLOBAL_BATCH = 32


def make_data():
    """A deterministic 3-class problem: 256 samples of 8 features."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, FEATURES)).astype("float32")
    w = rng.normal(size=(FEATURES, CLASSES)).astype("float32")
    y = np.argmax(x @ w + 0.5 * rng.normal(size=(N, CLASSES)), axis=1)
    return x, y.astype("int32")


def deterministic_weights(model, seed):
    """Weights for ``model`` from a numpy seed (the same in every process)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [(0.5 * rng.normal(size=w.shape)).astype("float32")
            for w in model.get_weights()]


def load(prefix, case, tag):
    """The result a process wrote, or a record saying it wrote none."""
    path = os.path.join(OUT, f"{prefix}_{case}_{tag}.json")
    if not os.path.exists(path):
        return {"error": {"type": "NoOutput", "first_lines":
                          "process wrote no result (killed or hung)"}}
    with open(path) as f:
        return json.load(f)
