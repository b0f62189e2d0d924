"""Peak memory of a disk-cached epoch at 1x and 8x dataset size (issue #15).

Synthetic 224x224x3 uint8 images (with a label byte each) are written to one
binary file per size and read back with ``tf.data.FixedLengthRecordDataset``:
a dataset on disk that never fits in memory at once. For each size a fresh
Python process (so that peaks do not carry over) builds a
`keras_distill.DiskCache` of a small conv teacher's outputs, then trains a
student for one epoch on the streamed cache; a thread samples the process's
resident set (``VmRSS``) every 50 ms. The same process also runs an epoch
with the teacher online (no cache) over the same stream, for reference.

Memory stays flat when the cached epoch's peak at 8x is about the one at 1x
(the shuffle buffer is capped at 256 MiB, shards are read one at a time).

Usage::

    python bench/disk_cache_rss.py            # 3,000 and 24,000 images
    python bench/disk_cache_rss.py --base 200 # a quick check

Writes bench/results/disk_cache_rss.{json,md}.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
SIDE, CHANNELS, CLASSES = 224, 3, 10
RECORD = 1 + SIDE * SIDE * CHANNELS  # a label byte, then the image


def write_images(path, count, seed=0):
    """``count`` random images (and labels) as fixed-length records."""
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "wb") as handle:
        for start in range(0, count, 500):
            n = min(500, count - start)
            block = rng.integers(0, 256, size=(n, RECORD), dtype=np.uint8)
            block[:, 0] = rng.integers(0, CLASSES, size=n)
            handle.write(block.tobytes())


def rss_mib():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakRSS:
    """Samples VmRSS in a thread; ``peak`` since the last ``reset``."""

    def __init__(self):
        self.peak = rss_mib()
        self.running = True
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while self.running:
            self.peak = max(self.peak, rss_mib())
            time.sleep(0.05)

    def reset(self):
        self.peak = rss_mib()

    def read(self):
        time.sleep(0.1)
        return round(max(self.peak, rss_mib()), 1)


def measure(path, count, cache_dir, batch_size):
    """One size in this process: the numbers as a dict."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import tensorflow as tf

    from keras_distill import DiskCache, Distiller

    monitor = PeakRSS()

    def decode(record):
        raw = tf.io.decode_raw(record, tf.uint8)
        image = tf.reshape(raw[1:], (SIDE, SIDE, CHANNELS))
        return tf.cast(image, "float32") / 255.0, tf.cast(raw[0], "int32")

    dataset = (tf.data.FixedLengthRecordDataset(path, RECORD)
               .map(decode, num_parallel_calls=tf.data.AUTOTUNE)
               .batch(batch_size))

    def net(width, name):
        keras.utils.set_random_seed(0)
        return keras.Sequential([
            keras.Input((SIDE, SIDE, CHANNELS)),
            keras.layers.Conv2D(width, 8, strides=8, activation="relu"),
            keras.layers.Conv2D(2 * width, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(CLASSES)], name=name)

    def distiller():
        d = Distiller(net(8, "student"), net(32, "teacher"))
        d.compile(optimizer="adam", alpha=0.5, temperature=4.0,
                  student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
        return d

    out = {"images": count, "dataset_bytes": os.path.getsize(path),
           "batch_size": batch_size, "rss_start_mib": round(rss_mib(), 1)}
    d = distiller()
    monitor.reset()
    start = time.time()
    disk = DiskCache(cache_dir, dtype="float16").build(d, dataset)
    out["build_s"] = round(time.time() - start, 1)
    out["build_peak_mib"] = monitor.read()
    out["cache_bytes"] = disk.info["bytes"]
    out["shards"] = disk.info["shards"]
    monitor.reset()
    start = time.time()
    d.fit(dataset, epochs=1, cache_teacher=disk, verbose=2)
    out["cached_epoch_s"] = round(time.time() - start, 1)
    out["cached_epoch_peak_mib"] = monitor.read()
    # Iterating alone (no training): what the cached stream adds per sample
    # (unbatch, fingerprint check, shuffle, rebatch) over reading the data.
    start = time.time()
    for _ in dataset:
        pass
    out["read_s"] = round(time.time() - start, 2)
    start = time.time()
    for _ in disk.stream(dataset):
        pass
    out["stream_s"] = round(time.time() - start, 2)
    online = distiller()
    monitor.reset()
    start = time.time()
    online.fit(dataset, epochs=1, verbose=2)
    out["online_epoch_s"] = round(time.time() - start, 1)
    out["online_epoch_peak_mib"] = monitor.read()
    return out


def table(runs):
    lines = [
        "| images (dataset on disk) | cache on disk | shards | build: peak RSS, time "
        "| cached epoch: peak RSS, time | online epoch (reference): peak RSS, time "
        "| reading the data alone / the cached stream alone |",
        "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(
            f"| {r['images']:,} ({r['dataset_bytes'] / 2**30:.2f} GiB) "
            f"| {r['cache_bytes'] / 2**10:.0f} KiB | {r['shards']} "
            f"| {r['build_peak_mib']:.0f} MiB, {r['build_s']:.0f} s "
            f"| {r['cached_epoch_peak_mib']:.0f} MiB, {r['cached_epoch_s']:.0f} s "
            f"| {r['online_epoch_peak_mib']:.0f} MiB, {r['online_epoch_s']:.0f} s "
            f"| {r['read_s']:.1f} s / {r['stream_s']:.1f} s |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=int, default=3000,
                        help="images at 1x (default 3000: 0.42 GiB; 3.4 GiB at 8x)")
    parser.add_argument("--factors", default="1,8")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--child", nargs=3, metavar=("PATH", "COUNT", "CACHE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(RESULTS, "disk_cache_rss"))
    args = parser.parse_args()
    if args.child:
        path, count, cache_dir = args.child
        print("RESULT " + json.dumps(
            measure(path, int(count), cache_dir, args.batch_size)), flush=True)
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="kd-rss-") as work:
        for factor in [int(f) for f in args.factors.split(",")]:
            count = args.base * factor
            path = os.path.join(work, f"images-{count}.bin")
            print(f"writing {count} images ({count * RECORD / 2**30:.2f} GiB)",
                  flush=True)
            write_images(path, count)
            result = subprocess.run(
                [sys.executable, __file__, "--batch-size", str(args.batch_size),
                 "--child", path, str(count), os.path.join(work, f"cache-{count}")],
                capture_output=True, text=True)
            if result.returncode:
                sys.exit(f"the measuring process failed:\n{result.stderr[-3000:]}")
            line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
            run = json.loads(line[-1][len("RESULT "):])
            run["factor"] = factor
            print(json.dumps(run), flush=True)
            runs.append(run)
            os.remove(path)
    meta = {"machine": f"{platform.node()}: {os.cpu_count()} cores, "
                       f"{platform.machine()}, Python {platform.python_version()}",
            "date": datetime.date.today().isoformat(),
            "command": "python bench/disk_cache_rss.py " + " ".join(sys.argv[1:])}
    with open(args.out + ".json", "w") as handle:
        json.dump({"meta": meta, "runs": runs}, handle, indent=1)
    flat = runs[-1]["cached_epoch_peak_mib"] / runs[0]["cached_epoch_peak_mib"]
    text = (f"# Peak memory of a disk-cached epoch\n\n{meta['date']}, "
            f"{meta['machine']}; `{meta['command']}`.\n\n"
            "Synthetic 224x224x3 uint8 images in one file read by tf.data; a "
            "conv teacher's outputs in a float16 `DiskCache`; each size in a "
            "fresh process, VmRSS sampled every 50 ms.\n\n"
            f"{table(runs)}\n\nCached-epoch peak at {runs[-1]['factor']}x / "
            f"{runs[0]['factor']}x: {flat:.2f}. The decoded float32 images at "
            f"{runs[-1]['factor']}x would take "
            f"{runs[-1]['images'] * SIDE * SIDE * CHANNELS * 4 / 2**30:.1f} GiB in "
            "memory (what `cache_teacher=True` needs, the inputs being arrays).\n\n"
            "Times are not the point here: the teacher is a deliberately small "
            "strided conv net, cheaper per image than the stream's own work on "
            "600 KB float32 images (unbatch, fingerprint check, shuffle, "
            "rebatch: the last column), so the cached epoch is no faster than "
            "the online one. A cache pays when the teacher's forward pass costs "
            "more than that per-sample work.\n")
    with open(args.out + ".md", "w") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
