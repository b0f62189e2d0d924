"""Shards of per-sample tensors on disk, read back as a ``tf.data`` stream.

What `keras_distill.disk_cache` stores its teacher outputs in. A shard is
one file holding one serialized ``tf.train.Example`` with, per name, one
serialized tensor of the shard's rows (written atomically, normal
permissions, its SHA-256 kept by the caller); `stream` reads a list of
shards back one sample at a time, with bounded memory (a shard at a time).
Samples are told apart by `fingerprint`, a 64-bit hash of their inputs, so
that a reader can check each stored row is paired with its own sample.

Example:
>>> import tempfile, numpy as np
>>> folder = tempfile.mkdtemp()
>>> entry = write_shard(folder, 0, {"a": np.arange(6, dtype="float32").reshape(3, 2)})
>>> entry["file"], entry["samples"]
('shard-00000.example', 3)
>>> specs = {"a": {"dtype": "float32", "shape": [2]}}
>>> [row["a"].numpy().tolist() for row in stream(folder, [entry], specs)]
[[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
"""

import hashlib
import os

import numpy as np

from keras_distill import _io
from keras_distill._arrays import to_numpy


def _tf():
    import tensorflow as tf  # tf.data: the input pipeline on every backend

    return tf


def fingerprint(x):
    """A 64-bit fingerprint of one sample's inputs (any nest of tensors).

    Example:
    >>> import numpy as np
    >>> a = fingerprint(np.ones((2, 2), "float32"))
    >>> int(a) == int(fingerprint(np.ones((2, 2), "float32")))
    True
    >>> int(a) == int(fingerprint(np.zeros((2, 2), "float32")))
    False
    """
    tf = _tf()
    parts = [tf.io.serialize_tensor(tf.convert_to_tensor(v))
             for v in tf.nest.flatten(x)]
    joined = parts[0] if len(parts) == 1 else tf.strings.reduce_join(
        tf.stack(parts))
    return tf.strings.to_hash_bucket_fast(joined, 2**63 - 1)


def batch_fingerprints(x):
    """`fingerprint` of every sample of a batch (an int64 vector)."""
    tf = _tf()
    return tf.map_fn(fingerprint, x, fn_output_signature=tf.int64)


def weights_sha256(model):
    """The SHA-256 of a model's weights, in order: shapes, dtypes and values
    (not names, which Keras numbers per session: the same teacher built
    twice, or cloned into a strategy's scope, has the same hash).

    Example:
    >>> import keras
    >>> make = lambda: keras.Sequential([keras.Input((2,)), keras.layers.Dense(
    ...     1, kernel_initializer="ones")])
    >>> weights_sha256(make()) == weights_sha256(make())
    True
    """
    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(to_numpy(variable))
        digest.update(f"{value.shape}{value.dtype}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------ shards
def specs_of(arrays):
    """Per name, the dtype and per-sample shape of a batch of arrays.

    Example:
    >>> specs_of({"a": np.zeros((4, 3), "float16")})
    {'a': {'dtype': 'float16', 'shape': [3]}}
    """
    return {name: {"dtype": str(v.dtype), "shape": list(v.shape[1:])}
            for name, v in arrays.items()}


def write_shard(directory, index, arrays):
    """Writes ``{name: array}`` (one row per sample) as shard ``index``.

    Returns:
        The manifest entry: ``{"file", "samples", "sha256"}``.
    """
    tf = _tf()
    name = f"shard-{index:05d}.example"
    feature = {key: tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[tf.io.serialize_tensor(value).numpy()]))
        for key, value in arrays.items()}
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    path = os.path.join(directory, name)
    # Deterministic: workers writing the same rows write the same bytes.
    _io.atomic_write(path, example.SerializeToString(deterministic=True))
    return {"file": name, "samples": int(len(next(iter(arrays.values())))),
            "sha256": _io.file_sha256(path)}


def damaged(directory, entries):
    """The first listed shard that is missing or changed, or ``None``.

    Example:
    >>> import tempfile
    >>> damaged(tempfile.mkdtemp(), [{"file": "x", "sha256": ""}])
    'x'
    """
    for entry in entries:
        path = os.path.join(directory, entry["file"])
        if not os.path.exists(path) or _io.file_sha256(path) != entry["sha256"]:
            return entry["file"]
    return None


def stream(directory, entries, specs):
    """The shards' rows, one sample (a dict of tensors) at a time, in order."""
    tf = _tf()
    files = [os.path.join(directory, e["file"]) for e in entries]
    description = {key: tf.io.FixedLenFeature([], tf.string) for key in specs}

    def parse(path):
        raw = tf.io.parse_single_example(tf.io.read_file(path), description)
        out = {}
        for key, spec in specs.items():
            value = tf.io.parse_tensor(raw[key], tf.dtypes.as_dtype(spec["dtype"]))
            value.set_shape([None] + spec["shape"])
            out[key] = value
        return out

    return tf.data.Dataset.from_tensor_slices(files).map(parse).unbatch()
