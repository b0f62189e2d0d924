"""Train the strong Fashion-MNIST teacher the recipe search uses (and probe others).

    python bench/teacher_probe.py --epochs 30 --policy mixed_bfloat16 \
        --out ~/.cache/keras_distill/teacher

trains ``models.build_teacher(kind="wide")`` (seed 0) with flip + 2-px shift and
a cosine schedule, prints one JSON line per epoch (test accuracy included) and
writes ``<out>_wide32_<epochs>ep_<policy>.weights.h5`` (atomically: a killed
run resumes from its BackupAndRestore folder and leaves no half file).
"""
import argparse, json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np, keras, tensorflow as tf
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from keras_distill import datasets, models

p = argparse.ArgumentParser()
p.add_argument("--arch", default="wide")
p.add_argument("--epochs", type=int, default=30)
p.add_argument("--samples", type=int, default=0)
p.add_argument("--aug", default="shift+flip")
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--width", type=int, default=32)
p.add_argument("--policy", default="float32")
p.add_argument("--out", default=os.path.expanduser("~/.cache/keras_distill/teacher"))
a = p.parse_args()

(x, y), (xt, yt) = datasets.load_fashion_mnist(allow_download=False)
x = (x[..., None] / 255.0).astype("float32"); xt = (xt[..., None] / 255.0).astype("float32")
if a.samples: x, y = x[:a.samples], y[:a.samples]

def wide(w=32, seed=0):
    L = keras.layers
    def cb(f, n):
        return [L.Conv2D(f, 3, padding="same", use_bias=False, name=n + "_conv"),
                L.BatchNormalization(momentum=0.9, name=n + "_bn"), L.ReLU(name=n + "_relu")]
    return keras.Sequential([keras.Input((28, 28, 1))] + cb(w, "b1a") + cb(w, "b1b") + [L.MaxPooling2D()]
        + cb(2 * w, "b2a") + cb(2 * w, "b2b") + [L.MaxPooling2D()]
        + cb(4 * w, "b3a") + cb(4 * w, "b3b") + [L.MaxPooling2D(), L.Flatten(), L.Dropout(0.3),
        L.Dense(256, activation="relu"), L.Dropout(0.3), L.Dense(10, dtype="float32")], name="teacher_wide")

keras.utils.set_random_seed(0)
keras.mixed_precision.set_global_policy(a.policy)
if a.arch == "wide" and a.width == 32:
    model = models.build_teacher(kind="wide", seed=0)  # the package's own wide teacher
else:
    model = wide(a.width) if a.arch == "wide" else models.build_teacher()
print("params", model.count_params(), flush=True)
steps = (len(x) // 128) * a.epochs
sched = keras.optimizers.schedules.CosineDecay(a.lr, steps)
model.compile(keras.optimizers.Adam(sched), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
augs = []
if "shift" in a.aug: augs.append(keras.layers.RandomTranslation(2 / 28, 2 / 28, fill_mode="constant", seed=1))
if "flip" in a.aug: augs.append(keras.layers.RandomFlip("horizontal", seed=2))
aug = keras.Sequential(augs) if augs else None
ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(60000, seed=0).batch(128, drop_remainder=True)
if aug is not None:
    ds = ds.map(lambda a_, b_: (aug(a_, training=True), b_), num_parallel_calls=2)
ds = ds.prefetch(2)
class Log(keras.callbacks.Callback):
    def on_epoch_begin(self, e, logs=None): self.t = time.time()
    def on_epoch_end(self, e, logs=None):
        acc = float(np.mean(np.argmax(model.predict(xt, batch_size=1000, verbose=0), -1) == yt))
        print(json.dumps({"epoch": e + 1, "s": round(time.time() - self.t, 1), "loss": round(logs["loss"], 4),
                          "train_acc": round(logs["accuracy"], 4), "test_acc": acc}), flush=True)
tag = f'{a.arch}{a.width}_{a.epochs}ep_{a.policy}'
backup = os.path.join(os.path.dirname(a.out), f"backup_{tag}")
model.fit(ds, epochs=a.epochs, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(backup), Log()])
final = a.out + f"_{tag}.weights.h5"
model.save_weights(final + ".partial.weights.h5")
os.replace(final + ".partial.weights.h5", final)
print("wrote", final, flush=True)
