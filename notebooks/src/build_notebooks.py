"""Writes the notebooks from this file (the source of truth for their code).

Run `python notebooks/src/build_notebooks.py` after editing, then execute them
(`python notebooks/src/run_notebooks.py --full`) to store outputs.
"""

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))

INSTALL = '''# Install keras-distill (skipped where it is already installed, e.g. in the repository's .venv).
import importlib.util, subprocess, sys
if importlib.util.find_spec("keras_distill") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "keras-distill"])'''

PARAMETERS = '''# Parameters (papermill-style "parameters" tag). CI sets QUICK = True: a slice of the
# data and fewer epochs, so the notebook runs in well under 3 minutes.
QUICK = False'''


def quickstart():
    cells = [
        new_markdown_cell(
            "# keras-distill quickstart: distil a small Fashion-MNIST student\n\n"
            "A CNN teacher (0.47M parameters) teaches a 14k-parameter student with "
            "`keras_distill.Distiller`, a drop-in for the keras.io `Distiller` example whose "
            "KL term is exact. We compare the student trained from scratch with the same "
            "student distilled (same initial weights, same epochs), look at the training "
            "curves, and sweep `alpha` and the temperature.\n\n"
            "Fashion-MNIST is read offline when it is on the machine (Keras cache or the "
            "Debian package `dataset-fashion-mnist`); elsewhere (Colab) Keras downloads it."),
        new_code_cell(INSTALL),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell('''import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import matplotlib.pyplot as plt
import numpy as np
from keras_distill import Distiller, pipeline
from keras_distill.models import build_student

config = pipeline.PipelineConfig.classic(epochs=10, teacher_epochs=5)
if QUICK:
    config = pipeline.PipelineConfig.classic(epochs=2, teacher_epochs=1, train_samples=5000, test_samples=1000)
(x_train, y_train), (x_test, y_test) = pipeline.prepare_data(config)
print(x_train.shape, x_test.shape)'''),
        new_markdown_cell("## The teacher\nTrained once and cached in `~/.cache/keras_distill` "
                          "(the main job `keras-distill` uses the same cache)."),
        new_code_cell('''teacher, seconds, cached = pipeline.get_teacher(config, x_train, y_train)
teacher_acc = np.mean(np.argmax(teacher.predict(x_test, verbose=0), -1) == y_test)
print(f"teacher: {teacher.count_params():,} params, test accuracy {100 * teacher_acc:.2f}%")'''),
        new_markdown_cell("## Scratch vs distilled\n`alpha` weighs the hard-label loss, "
                          "`1 - alpha` the distillation loss `T² · KL(softmax(t/T) ‖ softmax(s/T))`."),
        new_code_cell('''ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
acc = keras.metrics.SparseCategoricalAccuracy
histories = {}

keras.utils.set_random_seed(0)
scratch = build_student("cnn", seed=0)
scratch.compile(optimizer=keras.optimizers.Adam(), loss=ce, metrics=[acc()])
histories["scratch"] = scratch.fit(x_train, y_train, batch_size=128, epochs=config.epochs,
                                   validation_data=(x_test, y_test), verbose=0).history

keras.utils.set_random_seed(0)
student = build_student("cnn", seed=0)
distiller = Distiller(student=student, teacher=teacher)
distiller.compile(optimizer=keras.optimizers.Adam(), metrics=[acc()],
                  student_loss_fn=ce, alpha=0.5, temperature=2.0)
histories["distilled"] = distiller.fit(x_train, y_train, batch_size=128, epochs=config.epochs,
                                       validation_data=(x_test, y_test), verbose=0,
                                       cache_teacher=True).history
for name, h in histories.items():
    print(f"{name:>9}: test accuracy {100 * h['val_sparse_categorical_accuracy'][-1]:.2f}%")'''),
        new_code_cell('''fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for name, h in histories.items():
    axes[0].plot(h["val_sparse_categorical_accuracy"], label=name)
    axes[1].plot(h["loss"], label=f"{name}: training loss")
axes[1].plot(histories["distilled"]["distillation_loss"], "--", label="distilled: distillation term")
axes[0].set(title="test accuracy", xlabel="epoch"); axes[1].set(title="losses", xlabel="epoch")
for ax in axes: ax.legend(); ax.grid(alpha=0.3)
plt.show()'''),
        new_markdown_cell("## Choosing alpha and the temperature\nA small sweep, one seed each: "
                          "differences of a few tenths of a point are within seed noise "
                          "(see `bench/kd_vs_scratch.py` for 3-seed means)."),
        new_code_cell('''alphas, temperatures = ([0.1, 0.5, 0.9], [1.0, 2.0, 4.0, 8.0])
if QUICK:
    alphas, temperatures = ([0.5], [2.0, 4.0])
grid = np.zeros((len(alphas), len(temperatures)))
for i, alpha in enumerate(alphas):
    for j, temperature in enumerate(temperatures):
        keras.utils.set_random_seed(0)
        s = build_student("cnn", seed=0)
        d = Distiller(student=s, teacher=teacher)
        d.compile(optimizer=keras.optimizers.Adam(), student_loss_fn=ce,
                  alpha=alpha, temperature=temperature)
        d.fit(x_train, y_train, batch_size=128, epochs=config.epochs, verbose=0, cache_teacher=True)
        grid[i, j] = 100 * np.mean(np.argmax(s.predict(x_test, verbose=0), -1) == y_test)
fig, ax = plt.subplots(figsize=(5, 3))
image = ax.imshow(grid, cmap="viridis")
ax.set_xticks(range(len(temperatures)), [str(t) for t in temperatures]); ax.set_xlabel("temperature")
ax.set_yticks(range(len(alphas)), [str(a) for a in alphas]); ax.set_ylabel("alpha")
for (i, j), v in np.ndenumerate(grid):
    ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w")
scratch_acc = 100 * histories["scratch"]["val_sparse_categorical_accuracy"][-1]
ax.set_title(f"distilled test accuracy (%), scratch {scratch_acc:.2f}")
fig.colorbar(image); plt.show()'''),
        new_markdown_cell("## Keep the student\nThe distiller trained `student` in place: save it "
                          "like any Keras model, or export it (see the edge-deployment notebook).\n\n"
                          "```python\nstudent.save(\"student.keras\")\n```"),
    ]
    return cells


def feature_distillation():
    return [
        new_markdown_cell(
            "# Feature-map distillation: FSP, hints (L2 with an adapter), attention transfer\n\n"
            "Beyond the logits, a student can imitate what the teacher computes inside: "
            "FitNets hints (an L2 loss between feature maps, with a learned 1x1 convolution "
            "when the widths differ), FSP matrices (Yim et al. 2017: how features flow between "
            "two layers) and attention maps (Zagoruyko & Komodakis 2017). keras-distill taps "
            "named layers in the same single forward pass that gives the logits."),
        new_code_cell(INSTALL),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell('''import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import matplotlib.pyplot as plt
import numpy as np
from keras_distill import FeatureDistiller, FeaturePair, FSPPair, pipeline
from keras_distill.models import build_student

config = pipeline.PipelineConfig.classic(epochs=10, teacher_epochs=5)
if QUICK:
    config = pipeline.PipelineConfig.classic(epochs=1, teacher_epochs=1, train_samples=3000, test_samples=1000)
(x_train, y_train), (x_test, y_test) = pipeline.prepare_data(config)
teacher, _, _ = pipeline.get_teacher(config, x_train, y_train)'''),
        new_markdown_cell("## Finding layer names\nTaps address layers by name (a path such as "
                          "`\"backbone/conv3\"` reaches into a nested model). List them with "
                          "their output shapes:"),
        new_code_cell('''student = build_student("cnn")
for model in (teacher, student):
    print(model.name)
    for layer in model.layers:
        print(f"   {layer.name:<14} {layer.output.shape}")'''),
        new_markdown_cell("## Four ways to distil the same student\nSame initial weights, "
                          "same epochs; each feature method keeps the logits KD term "
                          "(`logits_weight=1`). Each loss term is logged under its name."),
        new_code_cell('''ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
methods = {
    "KD": [],
    "KD + hint (L2, adapter)": [FeaturePair("block2_pool", "block2_pool", loss="l2", adapter="auto")],
    "KD + FSP": [FSPPair("block1_pool", "block2a_relu", "block1_pool", "block2_conv", adapter="auto")],
    "KD + attention": [FeaturePair(l, l, loss="at", weight=10.0) for l in ("block1_pool", "block2_pool")],
}
results, histories = {}, {}
for name, pairs in methods.items():
    keras.utils.set_random_seed(0)
    student = build_student("cnn", seed=0)
    distiller = FeatureDistiller(student, teacher, pairs=pairs)
    distiller.compile(optimizer=keras.optimizers.Adam(), student_loss_fn=ce, alpha=0.5, temperature=2.0)
    histories[name] = distiller.fit(x_train, y_train, batch_size=128, epochs=config.epochs,
                                    verbose=0).history
    results[name] = 100 * np.mean(np.argmax(student.predict(x_test, verbose=0), -1) == y_test)
    terms = [k for k in histories[name] if k not in ("loss", "student_loss", "distillation_loss")]
    print(f"{name:<26} test accuracy {results[name]:.2f}%   logged terms: {terms}")'''),
        new_code_cell('''fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
axes[0].barh(list(results), list(results.values()))
axes[0].set_xlim(min(results.values()) - 1, max(results.values()) + 0.5)
axes[0].set_xlabel("test accuracy (%)")
for name, h in histories.items():
    for key, values in h.items():
        if key not in ("loss", "student_loss", "distillation_loss"):
            axes[1].plot(np.array(values) / values[0], label=f"{name}: {key}")
axes[1].set(title="feature terms (relative to epoch 1)", xlabel="epoch")
axes[1].legend(fontsize=7); plt.tight_layout(); plt.show()'''),
        new_markdown_cell("`distiller` is now the last one trained, attention transfer: it needs no "
                          "adapter, since attention maps sum over channels. The hint and FSP "
                          "distillers learned 1x1 convolutions mapping the student's channels to the "
                          "teacher's; adapters train with the student but are never part of it: "
                          "`distiller.student` is your model, ready to save or export."),
        new_code_cell('''print("adapters:", {k: type(v).__name__ for k, v in distiller.adapters.items()})
print("student params:", distiller.student.count_params())'''),
    ]


def edge_deployment():
    return [
        new_markdown_cell(
            "# From teacher to int8 .tflite: distil, prune and quantize while distilling\n\n"
            "The path an edge model takes: distil a small student, prune it to 50% sparsity "
            "*while still distilling*, make it quantization-aware (keeping the zeros) *while "
            "distilling* against the float teacher, export a full-int8 TFLite file, and check "
            "the file itself with the LiteRT interpreter: accuracy, agreement with Keras, size, "
            "latency. Pruning and QAT use TensorFlow Model Optimization, which needs `tf_keras` "
            "models: keras-distill converts the Keras 3 student for you."),
        new_code_cell(INSTALL),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell('''import os, tempfile
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import matplotlib.pyplot as plt
import numpy as np
from keras_distill import export, pipeline, pruning
from keras_distill.report import format_artifact_table, measure_artifact

config = pipeline.PipelineConfig.classic(epochs=10, teacher_epochs=5, prune_epochs=2, qat_epochs=1)
if QUICK:
    config = pipeline.PipelineConfig.classic(epochs=1, teacher_epochs=1, prune_epochs=1, qat_epochs=1,
                                     train_samples=3000, test_samples=1000)
(x_train, y_train), (x_test, y_test) = pipeline.prepare_data(config)
teacher, _, _ = pipeline.get_teacher(config, x_train, y_train)
accuracy = lambda m: 100 * np.mean(np.argmax(m.predict(x_test, verbose=0), -1) == y_test)'''),
        new_markdown_cell("## 1. Distil\nThe keras.io-style `Distiller` with the teacher's "
                          "outputs cached (the teacher runs once)."),
        new_code_cell('''student, _ = pipeline.train_distilled(config, teacher, x_train, y_train)
print(f"distilled student: {student.count_params():,} params, {accuracy(student):.2f}%")'''),
        new_markdown_cell("## 2. Prune while distilling\n`pruning.prune` converts the student to "
                          "`tf_keras`, wraps its layers for magnitude pruning (polynomial schedule "
                          "to 50%), and the `Distiller` advances TFMOT's pruning step once per "
                          "batch by itself. `strip` bakes the zeros in."),
        new_code_cell('''sparse, _ = pipeline.prune_distilled(config, student, teacher, x_train, y_train)
print(f"sparse student: {accuracy(sparse):.2f}%")
print({k: f"{100 * v:.0f}%" for k, v in pruning.sparsity_report(sparse).items()})'''),
        new_markdown_cell("## 3. Quantization-aware training while distilling\nThe teacher "
                          "stays float (checked); prune-preserving QAT keeps the zeros."),
        new_code_cell('''qat, _ = pipeline.qat_distilled(config, sparse, teacher, x_train, y_train)
print(f"QAT student: {accuracy(qat):.2f}%, sparsity {100 * pruning.total_sparsity(qat):.0f}%")'''),
        new_markdown_cell("## 4. Export and verify the files themselves\nEach `.tflite` file is "
                          "run with the LiteRT interpreter on the test set (int8 scales and zero "
                          "points handled), compared with its Keras model, and timed on one thread."),
        new_code_cell('''folder = tempfile.mkdtemp()
rows = [
    measure_artifact("teacher", teacher, f"{folder}/teacher.tflite", x_test, y_test),
    measure_artifact("distilled student", student, f"{folder}/student.tflite", x_test, y_test),
    measure_artifact("distilled student, int8 (post-training)", student,
                     f"{folder}/student_int8.tflite", x_test, y_test, quantization="int8",
                     representative_data=x_train[:1000]),
    measure_artifact("sparse QAT student, int8", qat, f"{folder}/student_qat_int8.tflite",
                     x_test, y_test, quantization="int8"),
]
print(format_artifact_table(rows))'''),
        new_code_cell('''fig, ax = plt.subplots(figsize=(7, 4))
for r in rows:
    ax.scatter(r["gzip_bytes"] / 1024, 100 * r["test_accuracy"], s=50, label=r["name"])
ax.set_xscale("log"); ax.set_xlabel("gzip size of the .tflite file (KB, log)")
ax.set_ylabel("test accuracy of the file (%)"); ax.grid(alpha=0.3); ax.legend(fontsize=8)
plt.show()'''),
        new_markdown_cell("Sparsity shows in the gzip size (what an app download costs), not in "
                          "the raw file size or the latency: TFLite stores and runs the zeros. "
                          "`keras-distill` (the command) runs this whole path and writes the same "
                          "table, a JSON file and this plot to `runs/latest/`."),
    ]


def your_own_job():
    return [
        new_markdown_cell(
            "# Your own job: a teacher, a student, an image folder and a YAML file\n\n"
            "Notebooks 01-03 call keras-distill from Python. A *job* says the same in a "
            "YAML file, and `keras-distill run job.yaml` (or `keras_distill.jobs.run_job`) "
            "does the rest. A job names:\n\n"
            "* **a teacher**: a saved model, a `keras.applications` name or a builder "
            "function (trained by a `teacher` stage when it starts untrained);\n"
            "* **a student**: a builder function of yours, a saved model or a built-in one;\n"
            "* **the data**: here a folder of images, one sub-folder per class;\n"
            "* **the stages**, run in order: `teacher`, `baseline` (the student alone, the "
            "comparison), `distil`, `prune`, `qat` (quantization-aware training) and "
            "`export` (`.tflite` files, each run with LiteRT).\n\n"
            "Every stage writes its model and a record into a run folder of its own; a "
            "stopped or changed job resumes from there. This notebook makes an image folder, "
            "writes a job for it, runs it, reads what it wrote and resumes it."),
        new_code_cell(INSTALL),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell('''import glob, json, os, sys, tempfile, warnings
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import matplotlib.pyplot as plt
import tensorflow as tf
import yaml
from IPython.display import Image, Markdown, display

tf.get_logger().setLevel("ERROR")  # no tf.function retracing notes
warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed")

work = tempfile.mkdtemp(prefix="keras_distill_job_")  # everything this notebook writes goes here
print(work)'''),
        new_markdown_cell(
            "## 1. An image folder\n"
            "The layout `keras.utils.image_dataset_from_directory` reads: one sub-folder per "
            "class, the class names taken from the folder names, and a test split in the same "
            "layout. `examples/make_image_folder.py` (in the repository, beside this "
            "folder; on Colab upload it next to the notebook) writes five Fashion-MNIST "
            "classes as PNG files. Your own photos go in the same layout."),
        new_code_cell('''sys.path[:0] = [os.path.abspath(os.path.join("..", "examples")), os.getcwd()]
from make_image_folder import write_folder

per_class, test_per_class = (40, 10) if QUICK else (300, 60)
images = os.path.join(work, "clothes")
# Fashion-MNIST is read from the machine (Keras cache or /usr/share/datasets); Keras
# downloads it only where it is not there (e.g. on Colab).
n = write_folder(images, per_class, test_per_class, allow_download=True)
print(f"wrote {n} PNG images\\n")
for root, folders, files in os.walk(images):
    folders.sort()
    depth = os.path.relpath(root, images).count(os.sep) + (root != images)
    shown = f"  {len(files)} files: {', '.join(sorted(files)[:2])}, ..." if files else ""
    print("    " * depth + os.path.basename(root) + "/" + shown)'''),
        new_code_cell('''classes = sorted(os.listdir(os.path.join(images, "train")))
fig, axes = plt.subplots(len(classes), 8, figsize=(8, 1.1 * len(classes)))
for row, name in zip(axes, classes):
    for ax, file in zip(row, sorted(glob.glob(os.path.join(images, "train", name, "*.png")))):
        ax.imshow(plt.imread(file), cmap="gray")
        ax.set_xticks([]); ax.set_yticks([])
    row[0].set_ylabel(name, rotation=0, ha="right", va="center")
plt.show()'''),
        new_markdown_cell(
            "## 2. The student's builder and the job file\n"
            "A builder is a function `builder(input_shape, num_classes)` returning an "
            "uncompiled Keras model that ends in logits (no softmax). A job file names it "
            "`module:function` and imports the module from the job file's folder, so "
            "`my_models.py` goes beside `job.yaml`."),
        new_code_cell('''MY_MODELS = """import keras


def tiny_cnn(input_shape, num_classes):
    # A 3-block CNN of about 6k parameters for small grey or RGB images.
    layers = keras.layers
    return keras.Sequential([
        keras.Input(input_shape),
        layers.Conv2D(8, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(num_classes),
    ], name="tiny_cnn")
"""
with open(os.path.join(work, "my_models.py"), "w") as handle:
    handle.write(MY_MODELS)'''),
        new_markdown_cell(
            "The job: the main job's VGG-style teacher (0.47M parameters) built by "
            "`keras_distill.models:build_teacher` and trained by the `teacher` stage, the "
            "`tiny_cnn` student, the image folder (grey 28x28 images, 20% of the training "
            "images held out for validation, the test folder for the test split) and every "
            "stage. `distil` uses Hinton's KD (`method: kd`; `dkd`, `dist` and the "
            "label-smoothing variants are one word away) with augmentation: the same "
            "flipped and shifted view goes to the teacher and the student. `baseline: {}` "
            "takes the `distil` stage's settings (epochs, learning rate, optimizer, "
            "augmentation), so the "
            "comparison is fair. Paths are relative to the job file. "
            "[docs/jobs.md](../docs/jobs.md) lists every key."),
        new_code_cell('''epochs = ({"teacher": 1, "distil": 1, "prune": 1, "qat": 1} if QUICK
          else {"teacher": 5, "distil": 10, "prune": 4, "qat": 1})


def job_text(distil_epochs):
    return f"""name: clothes
teacher:
  builder: keras_distill.models:build_teacher   # or path: my_teacher.keras
student:
  builder: my_models:tiny_cnn                   # my_models.py beside this file
data:
  image_dir: clothes/train                      # relative to this file
  test_dir: clothes/test
  image_size: [28, 28]
  color_mode: grayscale
  validation_split: 0.2
stages:
  teacher:
    epochs: {epochs["teacher"]}
  baseline: {{}}
  distil:
    method: kd
    alpha: 0.5
    temperature: 2.0
    learning_rate: 0.003
    epochs: {distil_epochs}
    augmentation:                               # the same view to teacher and student
      - {{layer: RandomFlip, mode: horizontal}}
      - {{layer: RandomTranslation, height_factor: 0.07, width_factor: 0.07, fill_mode: constant}}
  prune:
    sparsity: 0.5
    epochs: {epochs["prune"]}
  qat:
    epochs: {epochs["qat"]}
  export:
    quantization: [float32, int8]
"""


job_path = os.path.join(work, "job.yaml")
with open(job_path, "w") as handle:
    handle.write(job_text(epochs["distil"]))
print(job_text(epochs["distil"]))'''),
        new_markdown_cell(
            "## 3. Mistakes are caught before anything loads\n"
            "Every key is checked first, and every problem is reported at once, with its "
            "path in the file and, for a misspelt key, the closest allowed one. Here the "
            "job above with `temperature` misspelt and `image_size` left out, checked with "
            "`parse_job` (the dict form of `load_job`):"),
        new_code_cell('''from keras_distill.jobs import JobError, parse_job

wrong = yaml.safe_load(job_text(epochs["distil"]))
wrong["stages"]["distil"]["temprature"] = wrong["stages"]["distil"].pop("temperature")
del wrong["data"]["image_size"]
try:
    parse_job(wrong, "job.yaml")
except JobError as error:
    print(error)'''),
        new_markdown_cell(
            "## 4. Run it\n"
            "`run_job` is what `keras-distill run job.yaml` calls. One line per stage and "
            "per evaluation (`log=print`); `quiet=True` leaves out Keras's per-epoch "
            "progress. The run goes to `<work>/runs/clothes-<time>/`, and "
            "`<work>/runs/latest` becomes a link to it when it completes."),
        new_code_cell('''from keras_distill.jobs import run_job

latest = os.path.join(work, "runs", "latest")
results = run_job(job_path, latest, quiet=True, log=print)'''),
        new_markdown_cell(
            "## 5. Read the results\n"
            "Every artifact, each evaluated on the test folder: the Keras models, and the "
            "`.tflite` files run with the LiteRT interpreter (accuracy of the file itself, "
            "agreement with its Keras model, single-image latency on one thread). The run "
            "folder's `results.md` holds the same table."),
        new_code_cell('''from keras_distill.jobs.report import format_table

display(Markdown(format_table(results["artifacts"])))'''),
        new_markdown_cell(
            "Read it top-down: `student (baseline)` against `student (distilled)` is what the "
            "teacher added (same student, same initial weights, epochs and augmentation); the "
            "sparse and QAT rows are what pruning and quantization-aware training cost or win "
            "back; `agreement` is how often a `.tflite` file predicts the same class as its "
            "Keras model. The Keras sizes include what `.keras` files carry beside the "
            "weights; the `.tflite` sizes are what a device loads. One run, one seed, "
            "1,200 training images: differences of a couple of points are within "
            "run-to-run noise."),
        new_markdown_cell("The run folder: one sub-folder per stage (its artifact, its "
                          "`record.json`, the `key.json` it was started with, TensorBoard logs), "
                          "the report, and `run.json` (written last, with every file's SHA-256)."),
        new_code_cell('''run = results["run"]
for root, folders, files in os.walk(run):
    folders.sort()
    depth = os.path.relpath(root, run).count(os.sep) + (root != run)
    print("    " * depth + os.path.basename(root) + "/")
    if os.path.basename(root) in ("tensorboard", "backup"):
        folders.clear()  # TensorBoard event files: not listed
        continue
    for file in sorted(files):
        print("    " * (depth + 1) + f"{file:<34} {os.path.getsize(os.path.join(root, file)) / 1024:8.1f} KB")'''),
        new_markdown_cell(
            "A stage's `record.json` is written last: its *key* (a SHA-256 over its "
            "settings, the data, the teacher's and student's sources and the stages before "
            "it), the SHA-256 of its files, its time and its metrics, here the training "
            "history per epoch:"),
        new_code_cell('''record = json.load(open(os.path.join(run, "distil", "record.json")))
print("key:     ", record["key"])
print("outputs: ", record["outputs"])
print("seconds: ", record["seconds"])
history = record["metrics"]["history"]
display(Markdown("| " + " | ".join(history[0]) + " |\\n" + "|---:" * len(history[0]) + "|\\n"
                 + "".join("| " + " | ".join(f"{v:.4g}" for v in row.values()) + " |\\n"
                           for row in history)))'''),
        new_markdown_cell("The plots the run wrote: accuracy against file size for every "
                          "artifact, the training curves of each stage, and the sparsity "
                          "per layer after pruning."),
        new_code_cell('''for plot in ("accuracy_vs_size.png", "curves.png", "sparsity.png"):
    display(Image(filename=os.path.join(run, plot)))'''),
        new_markdown_cell(
            "## 6. Resume\n"
            "`resume=` (`--resume` on the command line) continues a run folder: a stage "
            "whose record has the same key and intact files is skipped. Resuming the run "
            "that just finished skips every stage (only the evaluations run again):"),
        new_code_cell('''again = run_job(job_path, latest, resume=run, quiet=True, log=print)'''),
        new_markdown_cell(
            "Now more epochs for `distil`. Its key changes, so it runs again, and so does "
            "every stage after it (prune, qat and export start from the distilled student). "
            "The teacher's key is the same: it is skipped. The baseline runs again too: it "
            "takes the `distil` stage's epochs, which keeps the comparison fair. A stage "
            "stopped midway (Ctrl-C, a crash) would continue from its last finished epoch."),
        new_code_cell('''with open(job_path, "w") as handle:
    handle.write(job_text(2 * epochs["distil"]))
longer = run_job(job_path, latest, resume=run, quiet=True, log=print)
display(Markdown(format_table(longer["artifacts"])))'''),
        new_markdown_cell(
            "## Where next\n"
            "* [docs/jobs.md](../docs/jobs.md): every key of a job file, teachers from "
            "`keras.applications` or saved models, `.npz`, TFRecord and TFDS data, the "
            "distillation methods, and the run folder's layout.\n"
            "* The same job from a terminal: `keras-distill run job.yaml` (add "
            "`--output-dir OUT` to choose where it goes, `--quiet` for stage lines only); "
            "a stopped run prints how to go on: "
            "`keras-distill run job.yaml --resume runs/clothes-<time>`.\n"
            "* `examples/`: `image_folder.yaml` (this job), `mobilenet_teacher.yaml` "
            "(a `keras.applications` teacher) and `fashion_mnist.yaml`.\n"
            "* `tensorboard --logdir runs/latest` shows every training stage."),
    ]


def write(name, cells):
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []}})
    path = os.path.join(HERE, "..", name)
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    print(write("01_quickstart.ipynb", quickstart()))
    print(write("02_feature_distillation.ipynb", feature_distillation()))
    print(write("03_edge_deployment.ipynb", edge_deployment()))
    print(write("04_your_own_job.ipynb", your_own_job()))
