"""Training run -> model bundle (``model.tflite`` + ``model.json``), int8, float16 or float32.

What keeps the int8 model faithful to its float self (see issue 4's measurements):

- the representative (calibration) set is drawn from the TRAINING split's windows, class by
  class, by a seeded index list that the manifest records, so calibration sees the activation
  ranges of every rhythm, not mostly normal sinus rhythm;
- convolution weights are quantized per output channel (the converter's default for
  CONV_2D/DEPTHWISE_CONV_2D; :func:`quantize_run` checks the converted model and refuses
  per-tensor weights);
- the model holds no Keras ``Normalization`` layer: its 1/std constant gets an int8 scale so
  large that ordinary values round to zero. Input scaling is a fixed ``Rescaling`` layer
  (``ecgedge.train.models.build_model``); :func:`check_quantizable` refuses the rest.
"""

import datetime
import hashlib
from importlib import metadata

import numpy as np

from ecgedge.convert import rundir
from ecgedge.convert.runtime import model_io
from ecgedge.convert.tflite import QUANT_MODES, keras_to_tflite
from ecgedge.convert.tflite_model import conv_weight_channel_scales, parse_model
from ecgedge.device.bundle import write_bundle
from ecgedge.device.errors import EcgEdgeError
from ecgedge.train.rhythm_head import HEAD_FILE

DEFAULT_REPRESENTATIVE = 1000


def calibration_indices(y, n, seed=0, n_classes=None):
    """The calibration draw: a seeded, class-balanced sample of ``n`` row indices.

    Each class present gets ``n // k`` rows (k = classes present) drawn without replacement;
    a class with fewer rows gives all it has and the remainder is shared by the other classes,
    so the sample has ``min(n, len(y))`` rows whenever the data allow.

    Parameters
    ----------
    y : ndarray of shape (m,), int -- class index of each window.
    n : int > 0, rows wanted.
    seed : int, the only source of randomness.
    n_classes : int or None; classes ``0..n_classes-1`` (default: ``max(y) + 1``).

    Returns
    -------
    ndarray of shape (min(n, m),), int64, sorted ascending.
    """
    y = np.asarray(y)
    if int(n) <= 0:
        raise EcgEdgeError(f"the representative set needs n > 0 windows, got {n}")
    if y.ndim != 1 or y.size == 0:
        raise EcgEdgeError(f"class labels must be a non-empty 1-D array, got shape {y.shape}")
    rng = np.random.default_rng(seed)
    n_classes = int(n_classes if n_classes is not None else y.max() + 1)
    pools = [rng.permutation(np.flatnonzero(y == c)) for c in range(n_classes)]
    take = _balanced_counts([len(p) for p in pools], min(int(n), y.size))
    chosen = np.concatenate([p[:t] for p, t in zip(pools, take)]).astype(np.int64)
    return np.sort(chosen)


def _balanced_counts(available, n):
    """Rows to take per class: as equal as possible, never more than a class has."""
    take = [0] * len(available)
    remaining = n
    open_classes = [c for c, a in enumerate(available) if a > 0]
    while remaining > 0 and open_classes:
        share = max(remaining // len(open_classes), 1)
        for c in list(open_classes):
            extra = min(share, available[c] - take[c], remaining)
            take[c] += extra
            remaining -= extra
            if take[c] == available[c]:
                open_classes.remove(c)
            if remaining == 0:
                break
    return take


def _iter_layers(model):
    """Every layer of a Keras model, nested models included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _iter_layers(layer)


def check_quantizable(model):
    """Refuse a Keras model that full-int8 conversion would silently ruin.

    A ``Normalization`` layer stores 1/std as a constant; full-int8 conversion gives it one
    scale (~39000 in issue 4's measurement) and every ordinary value rounds to zero. Express the
    scaling as a fixed ``Rescaling`` layer instead (as ``ecgedge.train.models.build_model``
    does).
    """
    import keras

    bad = [layer.name for layer in _iter_layers(model) if isinstance(layer, keras.layers.Normalization)]
    if bad:
        raise EcgEdgeError(
            f"the model has Keras Normalization layer(s) {bad}, which break int8 conversion; "
            "retrain with a fixed Rescaling layer for input scaling (ecgedge.train.models.build_model)"
        )


def check_per_channel(tflite_bytes):
    """Raise EcgEdgeError unless every convolution's int8 weights have one scale per channel.

    Returns
    -------
    int, the number of convolutions checked.
    """
    convs = conv_weight_channel_scales(parse_model(tflite_bytes, "the converted model"))
    per_tensor = [(op, name, n) for op, name, n, channels in convs if channels > 1 and n != channels]
    if per_tensor:
        raise EcgEdgeError(f"convolution weights were not quantized per channel: {per_tensor[:3]}")
    return len(convs)


def representative_set(run, n, seed=0, data_dir=None):
    """Calibration images from the training split, class-balanced and seeded.

    Parameters
    ----------
    run : ecgedge.train.runs.Run.
    n : int, windows wanted.
    seed : int.
    data_dir : PhysioNet folder or None.

    Returns
    -------
    (images, record) : images of shape (n', *spectrogram.image_shape) float32 with
    n' = min(n, training windows); record is the manifest's ``representative`` dict
    {seed, n, indices, n_records, records_sha256, class_counts} -- ``indices`` index the windows
    that ``load_windows(task, records=records)`` returns for the run's training records
    (``split.json``'s ``train``), whose list :func:`records_digest` names: the list itself (7,300
    CinC 2017 names in the demo) made up 60 % of the manifest.
    """
    windows = rundir.load_split_windows(run, "train", data_dir)
    classes = list(run.task.class_names)
    idx = calibration_indices(windows.y, n, seed=seed, n_classes=len(classes))
    images = np.asarray(rundir.images_of(windows.subset(idx), run.task.spectrogram))
    counts = np.bincount(np.asarray(windows.y)[idx], minlength=len(classes))
    record = {
        "seed": int(seed),
        "n": int(len(idx)),
        "indices": [int(i) for i in idx],
        "n_records": len(run.split["train"]),
        "records_sha256": records_digest(run.split["train"]),
        "class_counts": {c: int(k) for c, k in zip(classes, counts)},
    }
    return images, record


def records_digest(records):
    """sha256 (hex) of record names, one per line in the given order: which training records a
    representative set's indices count through, checkable against a run's ``split.json``."""
    return hashlib.sha256("\n".join(records).encode()).hexdigest()


def versions():
    """Versions of the packages that made the bundle."""
    out = {}
    for key, dist in (("ecgedge", "ecgedge"), ("tensorflow", "tensorflow"), ("keras", "keras"),
                      ("ai_edge_litert", "ai-edge-litert")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = _module_version(key)
    return out


def _module_version(module):
    """``module.__version__`` or None (tensorflow-cpu installs under another dist name)."""
    try:
        return __import__(module).__version__
    except (ImportError, AttributeError):
        return None


def metrics_summary(metrics):
    """The scalar entries of ``metrics.json`` (nested dicts kept, lists such as histories or
    confusion matrices dropped), for the manifest's ``training``."""
    out = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, dict):
            nested = metrics_summary(value)
            if nested:
                out[key] = nested
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
    return out


def build_manifest(task, quant, tflite_bytes, metrics=None, representative=None):
    """The bundle manifest (every key but those ``write_bundle`` fills).

    Input and output quantization are read from the converted model's tensor details.
    """
    input_spec, output_spec = model_io(tflite_bytes, "the converted model")
    manifest = rundir.task_fields(task)
    manifest.update(
        input=input_spec,
        output=output_spec,
        quantization=quant,
        training=metrics_summary(metrics),
        versions=versions(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    if representative is not None:
        manifest["representative"] = representative
    return manifest


def quantize_run(run_dir, out_dir, quant="int8", n_representative=DEFAULT_REPRESENTATIVE, seed=0, data_dir=None):
    """Convert a training run's model into a bundle.

    Parameters
    ----------
    run_dir : folder written by ``ecgedge train`` (model.keras, config.json, split.json,
        metrics.json; rhythm_head.npz, when there, goes into the bundle).
    out_dir : bundle folder to write (created).
    quant : "int8" (full integer, int8 input and output), "float16" or "float32".
    n_representative : calibration windows for int8, drawn class-balanced from the training
        split with ``seed``.
    data_dir : PhysioNet folder (default ECGEDGE_DATA); read only for int8.

    Returns
    -------
    ecgedge.device.bundle.Bundle, loaded back (hash-checked) from ``out_dir``.
    """
    if quant not in QUANT_MODES:
        raise EcgEdgeError(f"quant must be one of {', '.join(QUANT_MODES)}, got {quant!r}")
    run = rundir.load_run_dir(run_dir)
    model = rundir.load_keras_model(run.model_path)
    representative, images = None, None
    if quant == "int8":
        check_quantizable(model)
        images, representative = representative_set(run, n_representative, seed, data_dir)
    tflite_bytes = keras_to_tflite(model, quant, images)
    if quant == "int8":
        check_per_channel(tflite_bytes)
    manifest = build_manifest(run.task, quant, tflite_bytes, run.metrics, representative)
    head = run.path / HEAD_FILE
    # The head reads the beats of the detector its training read; runs from before detector 2 name none.
    return write_bundle(out_dir, tflite_bytes, manifest, head.read_bytes() if head.is_file() else None,
                        beat_detector=run.config.get("beat_detector", 1))
