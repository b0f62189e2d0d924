"""Sensitivity analysis: how much accuracy each layer loses when pruned alone.

`sensitivity` measures it layer by layer and ratio by ratio (PaddleSlim's
``sensitivity``), saving after every measurement so an interrupted run
resumes from its JSON file; `ratios_by_loss` turns the measurements into
per-layer sparsities for an allowed loss, which
`keras_distill.pruning.prune` accepts as ``target_sparsity``;
`plot_sensitivity` draws them. No TFMOT needed: kernels are pruned by
magnitude directly.
"""

import json
import math
import numbers
import os

import numpy as np

from keras_distill import _introspect, _io
from keras_distill.pruning import _checks
from keras_distill.pruning.sparsity import kernel_layers

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""The pruning ratios `sensitivity` measures by default."""
_SENSITIVITY_VERSION = 1


def sensitivity(model, eval_fn, layers=None, ratios=DEFAULT_RATIOS,
                path="sens.json"):
    """Measures how much accuracy each layer loses when pruned alone.

    For every layer and ratio, the ``ratio`` fraction of the layer's kernel
    weights with the smallest magnitude is set to zero, every other layer
    left intact, and ``eval_fn(model)`` measures the accuracy; the loss is
    ``baseline - accuracy`` (absolute, in the units of ``eval_fn``; PaddleSlim's
    ``sensitivity`` records the loss relative to the baseline instead). The
    model's weights are restored after each measurement, also when
    ``eval_fn`` raises. This is PaddleSlim's ``sensitivity`` with unstructured
    magnitude pruning (what `prune` does).

    After every measurement the results are merged into the JSON file at
    ``path``, written atomically (a temporary file moved onto it), so an
    interrupted analysis loses at most the measurement in progress: calling
    again with the same ``path`` skips what is already there. The file
    records a fingerprint of the model's kernels: resuming with another
    model (or other weights) raises instead of mixing results.

    Args:
        model: A built Keras model of either flavour (no TFMOT needed).
        eval_fn: ``eval_fn(model) -> float``, e.g. the test accuracy.
        layers: ``None`` for every layer with a kernel, or a list of layer
            names.
        ratios: Pruning ratios in ``(0, 1)``.
        path: The JSON file to write (and resume from); ``None`` to keep the
            results in memory only.

    Returns:
        The results: ``{"baseline": float, "layers": {name: {ratio string:
        {"accuracy": float, "loss": float}}}, ...}``, the same as saved.

    Raises:
        TypeError: ``model`` is not a Keras model, or is a distiller (pass
            ``distiller.student``: the teacher's layers would be measured
            too); ``layers`` is a string, not a list.
        ValueError: Unknown layer names, bad ratios, ``eval_fn`` returned
            something that is not a finite number, ``path`` holds results
            for another model, or its folder cannot be written (checked
            before the first measurement).

    Example:
    >>> import keras, numpy as np, os, tempfile
    >>> model = keras.Sequential([keras.Input((4,)),
    ...                           keras.layers.Dense(2, name="logits")])
    >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    >>> y = np.argmax(model.predict(x, verbose=0), axis=-1)
    >>> def accuracy(m):
    ...     return float(np.mean(np.argmax(m.predict(x, verbose=0), -1) == y))
    >>> path = os.path.join(tempfile.mkdtemp(), "sens.json")
    >>> results = sensitivity(model, accuracy, ratios=(0.5, 0.9), path=path)
    >>> results["baseline"], sorted(results["layers"]["logits"])
    (1.0, ['0.5', '0.9'])
    """
    _introspect.check_model(model, "model", "measure")
    if not callable(eval_fn):
        raise TypeError(f"`eval_fn` must be callable, got {type(eval_fn).__name__}.")
    ratios = _checks.check_ratios(ratios)
    if path is not None:
        _checks.check_writable(path, "path")
    candidates = {name: kernels for name, _, _, kernels in kernel_layers(model)}
    if layers is None:
        names = list(candidates)
    else:
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise TypeError(
                f"`layers` must be a list of layer names, got {layers!r}; "
                f"e.g. layers=[{layers!r}] for one layer.")
        names = [getattr(item, "name", item) for item in layers]
        unknown = [n for n in names if n not in candidates]
        if unknown:
            raise ValueError(
                f"`layers` names {unknown}, which are not layers with kernels "
                f"of model {model.name!r}; choose from {list(candidates)}."
            )
    if not names:
        raise ValueError(f"Model {model.name!r} has no layer with a kernel to prune.")
    fingerprint = _fingerprint(model, candidates)
    results = _load_results(path, fingerprint)
    if results is None:
        results = {"version": _SENSITIVITY_VERSION, "fingerprint": fingerprint,
                   "metric": "eval_fn", "loss": "baseline - accuracy",
                   "baseline": None, "layers": {}}
    if results["baseline"] is None:
        results["baseline"] = _evaluate(eval_fn, model)
        _save_results(results, path)
    baseline = results["baseline"]
    for name in names:
        kernels = candidates[name]
        done = results["layers"].setdefault(name, {})
        for ratio in ratios:
            key = _ratio_key(ratio)
            if key in done:
                continue
            saved = [np.array(k.numpy(), copy=True) for k in kernels]
            try:
                _prune_by_magnitude(kernels, saved, ratio)
                accuracy = _evaluate(eval_fn, model)
            finally:
                for kernel, value in zip(kernels, saved):
                    kernel.assign(value)
            done[key] = {"accuracy": accuracy, "loss": baseline - accuracy}
            _save_results(results, path)
    return results


def ratios_by_loss(results, max_loss):
    """Per-layer pruning ratios that keep each layer's loss within ``max_loss``.

    For each layer, the largest ratio whose measured loss does not exceed
    ``max_loss``, interpolated linearly between the two measurements around
    the crossing (from ratio 0 with loss 0 before the first); a layer whose
    loss stays within ``max_loss`` at every ratio gets the largest ratio
    measured (PaddleSlim's ``get_ratios_by_loss``). Losses are absolute, in
    the units of the ``eval_fn`` given to `sensitivity`; layers are judged
    one at a time, so pruning all of them together loses more than
    ``max_loss``: fine-tune (or prune while distilling) afterwards.

    Args:
        results: What `sensitivity` returned, or the path of its JSON file.
        max_loss: The accuracy loss allowed per layer (e.g. ``0.01``).

    Returns:
        ``{layer name: ratio}``, usable as ``prune(target_sparsity=...)``
        (layers that cannot be pruned at all within the loss get 0 and are
        left out).

    Example:
    >>> results = {"baseline": 0.9, "layers": {
    ...     "a": {"0.2": {"loss": 0.0}, "0.4": {"loss": 0.02}},
    ...     "b": {"0.2": {"loss": 0.0}, "0.4": {"loss": 0.0}}}}
    >>> ratios_by_loss(results, 0.01)
    {'a': 0.3, 'b': 0.4}
    """
    results = _results(results)
    if not (isinstance(max_loss, numbers.Real) and math.isfinite(max_loss)
            and max_loss >= 0):
        raise ValueError(f"`max_loss` must be a number >= 0, got {max_loss!r}.")
    ratios = {}
    for name, measured in results["layers"].items():
        points = sorted((float(r), float(v["loss"])) for r, v in measured.items())
        if not points:
            continue
        chosen = points[-1][0]
        previous = (0.0, 0.0)
        for ratio, loss in points:
            if loss > max_loss:
                r0, l0 = previous
                chosen = r0 if loss == l0 else r0 + (ratio - r0) * (max_loss - l0) / (loss - l0)
                chosen = min(max(chosen, r0), ratio)
                break
            previous = (ratio, loss)
        chosen = round(chosen, 6)
        if chosen > 0:
            ratios[name] = chosen
    return ratios


def plot_sensitivity(results, png_path):
    """Draws accuracy loss against pruning ratio, one curve per layer, to PNG.

    Uses Matplotlib's Agg canvas directly (no pyplot, no change to the
    process's Matplotlib backend); the file is written atomically.

    Args:
        results: What `sensitivity` returned, or the path of its JSON file.
        png_path: The image to write.

    Returns:
        ``png_path``.

    Example:
    >>> import os, tempfile
    >>> results = {"baseline": 0.9, "layers": {"a": {"0.5": {"loss": 0.01}}}}
    >>> path = plot_sensitivity(results, os.path.join(tempfile.mkdtemp(), "s.png"))
    >>> os.path.getsize(path) > 0
    True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = _results(results)
    png_path = _checks.check_writable(png_path, "png_path")
    figure = Figure(figsize=(6.4, 4.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for name, measured in results["layers"].items():
        points = sorted((float(r), float(v["loss"])) for r, v in measured.items())
        if points:
            axes.plot([0.0] + [p[0] for p in points], [0.0] + [p[1] for p in points],
                      marker="o", label=name)
    axes.axhline(0.0, color="grey", linewidth=0.5)
    axes.set_xlabel("pruning ratio (fraction of the layer's weights set to zero)")
    axes.set_ylabel("accuracy loss (baseline - accuracy)")
    baseline = results.get("baseline")
    axes.set_title("Sensitivity of each layer to pruning"
                   + (f" (baseline {baseline:.4f})" if baseline is not None else ""))
    if results["layers"]:
        axes.legend(fontsize="small")
    figure.tight_layout()
    with _io.atomic_path(png_path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png")
    return png_path


def _prune_by_magnitude(kernels, values, ratio):
    """Zeros the ``ratio`` smallest-magnitude weights over all ``kernels``."""
    flat = np.concatenate([np.abs(v).ravel() for v in values])
    count = int(round(ratio * flat.size))
    if count == 0:
        return
    order = np.argsort(flat, kind="stable")
    keep = np.ones(flat.size, dtype=bool)
    keep[order[:count]] = False
    start = 0
    for kernel, value in zip(kernels, values):
        mask = keep[start:start + value.size].reshape(value.shape)
        start += value.size
        kernel.assign(np.where(mask, value, 0).astype(value.dtype))


def _evaluate(eval_fn, model):
    value = eval_fn(model)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`eval_fn` must return a number (e.g. the accuracy), got {value!r}."
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"`eval_fn` returned {value}; it must be finite.")
    return value


def _ratio_key(ratio):
    return f"{ratio:.6g}"


def _fingerprint(model, candidates):
    import hashlib

    digest = hashlib.sha256()
    for name, kernels in candidates.items():
        digest.update(name.encode())
        for kernel in kernels:
            value = np.ascontiguousarray(kernel.numpy())
            digest.update(str(value.shape).encode())
            digest.update(value.tobytes())
    return digest.hexdigest()[:16]


def _load_results(path, fingerprint):
    if path is None or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as file:
            results = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"`path`={path!r} exists but is not a sensitivity results file "
            f"({error}); delete it or choose another path."
        ) from error
    if not isinstance(results, dict) or "layers" not in results:
        raise ValueError(f"`path`={path!r} is not a sensitivity results file.")
    if results.get("fingerprint") != fingerprint:
        raise ValueError(
            f"`path`={path!r} holds sensitivity results for another model (or "
            "other weights): delete it or choose another path to start over."
        )
    return results


def _save_results(results, path):
    if path is None:
        return
    _io.atomic_write(path, json.dumps(results, indent=1, sort_keys=True))


def _results(results):
    where = "`results`"
    if isinstance(results, (str, os.PathLike)):
        where = f"`results`={os.fspath(results)!r}"
        try:
            with open(results, encoding="utf-8") as file:
                results = json.load(file)
        except OSError as error:
            raise ValueError(
                f"{where} cannot be read ({error.strerror or error}): give the "
                "JSON file `sensitivity(..., path=...)` wrote."
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{where} is not valid JSON ({error}): the file is damaged or "
                "not a sensitivity results file; run `sensitivity` again."
            ) from None
    layers = results.get("layers") if isinstance(results, dict) else None
    if not isinstance(layers, dict) or not all(
            isinstance(measured, dict) and all(
                _is_ratio(r) and isinstance(v, dict) and _is_number(v.get("loss"))
                for r, v in measured.items())
            for measured in layers.values()):
        raise ValueError(
            f"{where} must be what `sensitivity` returned (a dict with "
            "'layers': {name: {ratio: {'loss': number, ...}}}) or the path of "
            "its JSON file."
        )
    return results


def _is_ratio(text):
    try:
        return 0.0 < float(text) < 1.0
    except (TypeError, ValueError):
        return False


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        math.isfinite(value)
