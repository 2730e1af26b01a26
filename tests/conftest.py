"""Shared fixtures: where the real PhysioNet data is, and a private cache per test."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def physionet_root():
    """$ECGEDGE_DATA, else ../shared/data/physionet next to the repository (None if absent)."""
    candidates = [os.environ.get("ECGEDGE_DATA"), REPO.parent / "shared" / "data" / "physionet"]
    for c in candidates:
        if c and (Path(c) / "mitdb" / "100.hea").is_file():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def keras():
    """The keras module (imported on first use: the device tests run without it)."""
    import keras

    return keras


@pytest.fixture(scope="session")
def physionet_dir():
    """The folder holding PhysioNet databases (mitdb at least); skips when absent."""
    root = physionet_root()
    if root is None:
        pytest.skip("real MIT-BIH data not found: set ECGEDGE_DATA or put it in ../shared/data/physionet")
    return root


@pytest.fixture(scope="session")
def mitdb_dir(physionet_dir):
    """The MIT-BIH Arrhythmia Database folder."""
    return physionet_dir / "mitdb"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh ecgedge cache folder, also set as $ECGEDGE_CACHE for CLI calls."""
    path = tmp_path / "cache"
    monkeypatch.setenv("ECGEDGE_CACHE", str(path))
    return path


# --- converter fixtures (tests/convert/, tests/deploy/) -------------------------------------
# A tiny but real training run: a synthetic 4-class task (one sine frequency per class, 2 s
# windows at 64 Hz, a 32x32x2 spectrogram), a small conv net trained for a few epochs, and the
# run directory files ecgedge.train.runs.load_run reads. The windows replace
# ecgedge.convert.rundir.load_split_windows, so no PhysioNet data is needed.

SYNTHETIC_FS = 64.0


def _synthetic_task():
    import dataclasses

    from ecgedge.device.dsp import SpectrogramConfig
    from ecgedge.train.tasks import load_task, task_from_dict

    base = load_task("mitdb-rhythm4")
    cfg = SpectrogramConfig(fs=32.0, window_s=2.0, hop=2, channels=((16, 64), (32, 64)), n_freq=32)
    task = dataclasses.replace(base, name="synthetic4", window_s=2.0, hop_s=2.0, spectrogram=cfg)
    return task_from_dict(task.to_dict(), "synthetic task")


def synthetic_windows(task, n, seed, record_prefix):
    """``n`` windows of ``task``: class c is a sine of 2 + 3c Hz with random phase, gain and noise."""
    import numpy as np

    from ecgedge.train.data import Windows

    rng = np.random.default_rng(seed)
    k = len(task.class_names)
    y = np.arange(n) % k
    t = np.arange(int(task.window_s * SYNTHETIC_FS)) / SYNTHETIC_FS
    freq = 2.0 + 3.0 * y[:, None]
    x = rng.uniform(0.5, 2.0, (n, 1)) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi, (n, 1)))
    x = (x + 0.3 * rng.standard_normal(x.shape)).astype(np.float32)
    record = np.array([f"syn/{record_prefix}{i % 3}" for i in range(n)])
    labels = np.array([task.classes[c][1][0] for c in y])
    return Windows(x=x, fs=SYNTHETIC_FS, y=y.astype(np.int64), record=record, patient=record.copy(),
                   start_s=(np.arange(n) // 3) * task.hop_s, label=labels, class_names=tuple(task.class_names))


def _tiny_model(image_shape, n_classes):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=image_shape, name="spectrogram")
    x = keras.layers.Rescaling(1 / 4.0, offset=0.75, name="input_scaling")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu")(x)
    # Pool over time only: the class is a frequency, i.e. a row of the image.
    x = keras.layers.AveragePooling2D(pool_size=(1, image_shape[1] // 2), name="pool")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A trained tiny run: namespace with path (RUN_DIR), task, windows {"train", "test"}."""
    import json
    from types import SimpleNamespace

    from ecgedge.train.data import window_images

    root = tmp_path_factory.mktemp("tiny_run")
    task = _synthetic_task()
    windows = {"train": synthetic_windows(task, 240, 1, "train"), "test": synthetic_windows(task, 120, 2, "test")}
    images = window_images(windows["train"], task.spectrogram, progress=False, cache_dir=root / "cache")
    model = _tiny_model(task.spectrogram.image_shape, len(task.class_names))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(images, windows["train"].y, epochs=8, batch_size=16, verbose=0)
    run_dir = root / "run"
    run_dir.mkdir()
    model.save(run_dir / "model.keras")
    files = {
        "config.json": {"task": task.to_dict(), "task_name": task.name, "backbone": "tiny", "weights": "none",
                        "protocol": "synthetic", "seed": 0, "epochs": 8, "fine_tune": 0},
        "split.json": {"train": ["syn/train0", "syn/train1", "syn/train2"], "val": [],
                       "test": ["syn/test0", "syn/test1", "syn/test2"]},
        "metrics.json": {"deployable": {"accuracy": float(history.history["accuracy"][-1])},
                         "history": history.history["loss"]},
    }
    for name, obj in files.items():
        (run_dir / name).write_text(json.dumps(obj))
    return SimpleNamespace(path=run_dir, task=task, windows=windows)


@pytest.fixture(scope="session")
def tiny_bundles(tiny_run, tmp_path_factory):
    """The tiny run converted to int8, float16 and float32 bundles: {quant: Bundle}."""
    from ecgedge.convert import rundir
    from ecgedge.convert.quantize import quantize_run

    out = tmp_path_factory.mktemp("tiny_bundles")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ECGEDGE_CACHE", str(out / "cache"))
        mp.setattr(rundir, "load_split_windows", lambda run, split, data_dir=None: tiny_run.windows[split])
        return {q: quantize_run(tiny_run.path, out / q, quant=q, n_representative=100, seed=0)
                for q in ("int8", "float16", "float32")}


def write_wfdb_record(db_dir, name, fs, seconds, annotations=(), leads=("ECG1", "ECG2"), seed=0):
    """Write a small synthetic WFDB record (format 16) and its ``atr`` annotations.

    Parameters
    ----------
    db_dir : folder (created) that gets ``name.hea``, ``name.dat`` and, when annotations are
        given, ``name.atr``; ``RECORDS`` is appended with ``name``.
    annotations : iterable of (seconds, symbol, aux), e.g. ``(2.0, "+", "(AFIB")``.

    Returns
    -------
    ndarray of shape (n, len(leads)), the physical signal written (mV, 1 uV resolution).
    """
    import numpy as np
    import wfdb

    db_dir = Path(db_dir)
    db_dir.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * fs))
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    signal = np.stack([np.sin(2 * np.pi * (1.2 + k) * t) + 0.05 * rng.standard_normal(n)
                       for k in range(len(leads))], axis=1)
    signal = np.round(signal, 3)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(leads), sig_name=list(leads), p_signal=signal,
                fmt=["16"] * len(leads), adc_gain=[1000.0] * len(leads), baseline=[0] * len(leads),
                write_dir=str(db_dir))
    annotations = sorted(annotations)
    if annotations:
        wfdb.wrann(name, "atr", np.array([int(round(s * fs)) for s, _, _ in annotations]),
                   symbol=[sym for _, sym, _ in annotations],
                   aux_note=[aux for _, _, aux in annotations], write_dir=str(db_dir), fs=fs)
    with open(db_dir / "RECORDS", "a") as f:
        f.write(name + "\n")
    return signal


@pytest.fixture
def wfdb_record():
    """The :func:`write_wfdb_record` helper, for tests that write their own records."""
    return write_wfdb_record


# --- device fixtures (tests/device/, tests/deploy/, tests/benchmarks/) ---------------------
# A small real int8 bundle of the mitdb-rhythm4 classes: an untrained conv net (its accuracy
# means nothing) on a 32x32x2 spectrogram of 2 s windows at 128 Hz, quantized with 16 seeded
# ECG-like images. Only the runtime's plumbing is under test, so no training is needed.

DEVICE_CLASSES = ["NSR", "AF", "VENT", "OTHER"]
DEVICE_LABEL_MAP = {
    "(N": "NSR", "(AFIB": "AF", "(AFL": "AF", "(B": "VENT", "(T": "VENT", "(VT": "VENT",
    "(VFL": "VENT", "(IVR": "VENT", "(SBR": "OTHER", "(SVTA": "OTHER", "(NOD": "OTHER",
    "(AB": "OTHER", "(BII": "OTHER", "(PREX": "OTHER", "(P": "OTHER",
}


def device_spectrogram():
    from ecgedge.device.dsp import SpectrogramConfig

    return SpectrogramConfig(fs=128.0, window_s=2.0, hop=8, channels=((32, 64), (64, 64)), n_freq=32)


def _device_model(image_shape, n_classes):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=image_shape, name="spectrogram")
    x = keras.layers.Rescaling(1 / 4.0, offset=0.75)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def _tensor_spec(detail):
    """Manifest ``input``/``output`` entry of a TFLite tensor detail."""
    import numpy as np

    scale, zero_point = detail["quantization"]
    return {"shape": [int(v) for v in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale), "zero_point": int(zero_point)}


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A real int8 Bundle (ecgedge.device.bundle) of an untrained 4-class model; skips without TF."""
    pytest.importorskip("tensorflow")
    import numpy as np
    import tensorflow as tf

    from ecgedge.convert.tflite import keras_to_tflite
    from ecgedge.device.benchmark import synthetic_ecg
    from ecgedge.device.bundle import write_bundle
    from ecgedge.device.dsp import window_image

    cfg = device_spectrogram()
    fs_in = 360.0
    length = int(round(cfg.window_s * fs_in))
    signal = synthetic_ecg(length * 16, fs_in, seed=0)
    images = np.stack([window_image(signal[i * length:(i + 1) * length], fs_in, cfg) for i in range(16)])
    tflite_bytes = keras_to_tflite(_device_model(cfg.image_shape, len(DEVICE_CLASSES)), "int8", images)
    interpreter = tf.lite.Interpreter(model_content=tflite_bytes)
    manifest = {
        "task": "mitdb-rhythm4", "classes": DEVICE_CLASSES, "label_map": DEVICE_LABEL_MAP,
        "lead": ["MLII"], "lead_fallback": "first", "spectrogram": cfg.to_dict(),
        "window_s": cfg.window_s, "hop_s": 1.0,
        "input": _tensor_spec(interpreter.get_input_details()[0]),
        "output": _tensor_spec(interpreter.get_output_details()[0]),
        "quantization": "int8", "representative": {"seed": 0, "n": 16, "indices": list(range(16))},
    }
    return write_bundle(tmp_path_factory.mktemp("tiny_bundle"), tflite_bytes, manifest)


@pytest.fixture(scope="session")
def rhythm_bundle(tiny_bundle, tmp_path_factory):
    """``tiny_bundle`` with a rhythm head (trees fitted on seeded random rhythm features)."""
    import io

    import numpy as np

    from ecgedge.device.bundle import write_bundle
    from ecgedge.device.rhythm import FEATURE_NAMES
    from ecgedge.train.rhythm_head import export_trees, fit_rhythm_head, save_trees

    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, len(FEATURE_NAMES)))
    y = np.arange(200) % len(DEVICE_CLASSES)
    features[:, 1] += y  # something to learn
    head = io.BytesIO()
    save_trees(head, export_trees(fit_rhythm_head(features, y, seed=0), len(DEVICE_CLASSES)))
    manifest = {k: v for k, v in tiny_bundle.manifest.items()
                if k not in ("format", "format_version", "model_file", "sha256", "bytes")}
    return write_bundle(tmp_path_factory.mktemp("rhythm_bundle"), tiny_bundle.model_path.read_bytes(), manifest,
                        rhythm_head=head.getvalue())
