"""Probe: how much 50% pruning (while distilling) costs a DIST student, by the
pruning stage's learning rate and alpha. One seed, a 10-epoch DIST student of the
main job's defaults, the cached main-job teacher (run the main job once first).

    python bench/probes/prune_after_dist.py

Output of 2026-11-27 22:04-22:14 (2-CPU machine, beside a benchmark) in
bench/probes/prune_after_dist.md.
"""
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
from keras_distill import pipeline  # noqa: E402
base = pipeline.PipelineConfig(epochs=10, allow_download=False, verbose=0)
(x, y), (xt, yt) = pipeline.prepare_data(base)
teacher, _, cached = pipeline.get_teacher(base, x, y, log=print)
assert cached
student, _ = pipeline.train_distilled(base, teacher, x, y)
print("distilled 10ep", pipeline._accuracy(student, xt, yt), flush=True)
for kw in [dict(finetune_learning_rate=1e-4, finetune_alpha=0.0),
           dict(finetune_learning_rate=1e-3, finetune_alpha=0.0),
           dict(finetune_learning_rate=1e-3, finetune_alpha=0.5)]:
    c = dataclasses.replace(base, **kw)
    t = time.time()
    sparse, _ = pipeline.prune_distilled(c, student, teacher, x, y)
    print(json.dumps({**kw, "sparse": pipeline._accuracy(sparse, xt, yt),
                      "s": round(time.time() - t)}), flush=True)
