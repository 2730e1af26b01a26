"""What the converter reads from a training run: its model, task, split and windows.

The run directory is read by ``ecgedge.train.runs.load_run``; windows by
``ecgedge.train.data.load_windows`` and made into images by ``window_images`` (cached), which
runs ``ecgedge.device.dsp.window_image`` -- the one preprocessing the device runs.
"""

from ecgedge.device.errors import EcgEdgeError

SPLITS = ("train", "val", "test")


def load_run_dir(run_dir):
    """Read a finished run directory (``ecgedge.train.runs.Run``) and check its split.

    Raises EcgEdgeError when the folder, its ``model.keras``, ``config.json``, ``metrics.json``
    or ``split.json`` is missing or malformed, or a split needed here is empty.
    """
    from ecgedge.train.runs import load_run

    run = load_run(run_dir)
    for name in ("train", "test"):
        records = run.split.get(name) if isinstance(run.split, dict) else None
        if not isinstance(records, list) or not records:
            raise EcgEdgeError(
                f"{run.path / 'split.json'} must map {name!r} to a non-empty list of records, got {records!r}"
            )
    return run


def task_fields(task):
    """The manifest fields that come from the task (``ecgedge.train.tasks.Task``).

    Returns
    -------
    dict with task (name), classes (model output order), label_map, lead (preference list),
    spectrogram (``SpectrogramConfig.to_dict()``), window_s, hop_s, decision (the recording-level
    rule, ``ecgedge.device.decision``) and databases (how each database of the task labels its
    records, so that ``device eval`` labels windows as training did).
    """
    from ecgedge.device.decision import default_rule

    return {
        "task": task.name,
        "decision": default_rule(list(task.class_names)).to_dict(),
        "databases": {db.name: label_source(db) for db in task.databases},
        "classes": list(task.class_names),
        "label_map": dict(task.label_map),
        "lead": list(task.leads),
        "spectrogram": task.spectrogram.validate().to_dict(),
        "window_s": float(task.window_s),
        "hop_s": float(task.hop_s),
    }


def label_source(db):
    """How database ``db`` (``ecgedge.train.tasks.DatabaseSpec``) labels windows, for the manifest."""
    return {"labels": db.labels, "annotator": db.annotator, "brackets": db.brackets,
            "reference": db.reference, "reference_labels": dict(db.reference_labels),
            "record_label": db.record_label, "abnormal_sinus": db.abnormal_sinus}


def load_split_windows(run, split, data_dir=None):
    """The labelled raw windows (``ecgedge.train.data.Windows``) of one split of a run.

    Parameters
    ----------
    run : ecgedge.train.runs.Run.
    split : "train", "val" or "test".
    data_dir : folder of PhysioNet databases, or None for ECGEDGE_DATA / the default.
    """
    if split not in SPLITS:
        raise EcgEdgeError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    from ecgedge.train.data import load_windows

    windows = load_windows(run.task, data_dir, records=run.split[split], progress=False)
    if len(windows) == 0:
        raise EcgEdgeError(f"the {split} split of {run.path} ({run.split[split]}) has no labelled windows")
    return windows


def images_of(windows, cfg):
    """Model input images of ``windows``: ndarray (n, *cfg.image_shape) float32 (cached)."""
    from ecgedge.train.data import window_images

    return window_images(windows, cfg, progress=False)


def load_keras_model(path):
    """Load a ``.keras`` model; EcgEdgeError naming the file when Keras can not read it."""
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors...
        raise EcgEdgeError(f"{path} could not be loaded as a Keras model ({type(exc).__name__}: {exc})") from None
