"""Cross-validated training of the spectrogram MobileNet, its baselines and the deployable model.

:func:`train_run` is the whole job behind ``ecgedge train``:

1. the task's labelled windows and their images (:mod:`ecgedge.train.data`, cached);
2. the protocol's folds (:mod:`ecgedge.train.protocols`); per fold, a fresh model trained on
   class-balanced, augmented epochs with early stopping on the fold's validation part, then
   evaluated on its test part;
3. the deployable model, trained the same way on a fixed, seeded patient split
   (train / val / test) and saved as ``model.keras``;
4. both baselines (:mod:`ecgedge.train.baselines`) on the very same folds;
5. ``metrics.json`` and the plots (:mod:`ecgedge.train.report`).

Each finished fold is saved at once (:mod:`ecgedge.train.runs`), so an interrupted run resumes
where it stopped, and every fold is seeded on its own, so the resumed run equals an
uninterrupted one.
"""

import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone

import numpy as np

from ecgedge.device.errors import EcgEdgeError
from ecgedge.train import protocols, report, runs, scoring
from ecgedge.train.augment import AugmentConfig, balanced_class_weights, balanced_indices, epoch_batch
from ecgedge.train.baselines import (
    RR_FEATURE_NAMES, SVM_MAX_PER_CLASS, predict_folds, rr_classifier, svm_classifier, window_rr_features,
)
from ecgedge.train.int8_grid import snap_backbone
from ecgedge.train.models import (
    build_model, feature_extractor, get_backbone, input_scaling, parse_fine_tune, set_backbone_trainable,
)
from ecgedge.train.rhythm_head import (
    HEAD_FILE, RECORD_SHARE, combined_predictions, combined_tables, deployable_rhythm_head, rhythm_folds,
)

PROTOCOL_NOTES = {
    "paper": "class-balanced subset, stratified K-fold at the window level: windows of one "
             "patient are on both sides of a fold (comparable with the paper, flatters)",
    "records": "StratifiedGroupKFold by patient over all windows: no patient on both sides "
               "of a fold (the honest number)",
    "databases": "leave one database out: each fold tests on every window of one database and "
                 "trains on the others (the number for new hardware and populations)",
}
SCALING_SAMPLE = 256
PREDICT_BATCH = 128


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run trains, besides the task. Stored in config.json.

    The one place of the training defaults: ``ecgedge train`` reads its option defaults from
    here, and the main job's ``PipelineConfig`` holds one of these (``PipelineConfig.train``).
    The defaults are the main job's measured settings (12 epochs, all blocks fine-tuned at 5e-4,
    600 windows per class per epoch).

    Attributes
    ----------
    backbone : registry name (:data:`ecgedge.train.models.BACKBONES`).
    protocol : "paper", "records" or "databases".
    epochs : most epochs per model (early stopping may end sooner).
    fine_tune : 0 (frozen backbone), number of last blocks to train, or "all".
    seed : int; every random choice derives from it.
    weights : "imagenet", "none" or a path of an .h5 file.
    n_folds : cross-validation folds; None: 10 (paper) or 5 (records).
    max_per_class : cap of training windows per class per epoch; None: all.
    max_val_per_class : cap of validation windows per class that early stopping scores after
        each epoch (one class-balanced draw per model, kept for all its epochs); None: all.
        Scoring 9,000 validation windows took a third of each multidb-rhythm5 epoch.
    batch_size : images per gradient step.
    learning_rate : Adam learning rate of the head (frozen backbone).
    fine_tune_learning_rate : Adam learning rate once backbone blocks are unfrozen.
    head_epochs : when fine-tuning, epochs that train the head alone first.
    dropout : before the dense layer.
    patience : epochs without a better validation macro-F1 before stopping.
    quant_noise : noise after each backbone ReLU6 while training, in units of int8 rounding
        noise (see ecgedge.train.models.with_quantization_noise); 0 for none.
    int8_grid : after training, round the backbone's kernels to the int8 grid
        (ecgedge.train.int8_grid): the saved float model then holds the very weights of its int8
        conversion. False: plain float kernels.
    rhythm_head : also fit the rhythm head (gradient boosting on the device's rhythm features,
        ecgedge.train.rhythm_head) on every fold and for the deployable model; the device
        combines its probabilities with the CNN's.
    augment : AugmentConfig as dict (default: AugmentConfig()), or None for no augmentation.
    paper_n_windows : size of the paper protocol's balanced subset.
    baselines : also run the SVM and RR baselines on the same folds.
    records : record names to use (empty: all of the task).
    """

    backbone: str = "mobilenet_v1_0.25_128"
    protocol: str = "records"
    epochs: int = 12
    fine_tune: object = "all"
    seed: int = 0
    weights: str = "imagenet"
    n_folds: object = None
    max_per_class: object = 600
    max_val_per_class: object = 1000
    batch_size: int = 32
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 5e-4
    head_epochs: int = 1
    dropout: float = 0.2
    patience: int = 3
    quant_noise: float = 0.0
    int8_grid: bool = True
    rhythm_head: bool = True
    augment: object = field(default_factory=lambda: AugmentConfig().to_dict())
    paper_n_windows: int = protocols.PAPER_N_WINDOWS
    baselines: bool = True
    records: tuple = ()

    def validate(self):
        """Raise EcgEdgeError naming the first invalid value; return a normalised copy."""
        get_backbone(self.backbone)
        protocols.check_protocol(self.protocol)
        for name in ("epochs", "batch_size", "paper_n_windows"):
            if int(getattr(self, name)) < 1:
                raise EcgEdgeError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("head_epochs", "patience"):
            if int(getattr(self, name)) < 0:
                raise EcgEdgeError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_per_class", "max_val_per_class"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise EcgEdgeError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not float(self.quant_noise) >= 0:
            raise EcgEdgeError(f"quant_noise must be >= 0, got {self.quant_noise}")
        for name in ("learning_rate", "fine_tune_learning_rate"):
            if not float(getattr(self, name)) > 0:
                raise EcgEdgeError(f"{name} must be > 0, got {getattr(self, name)}")
        augment = None if self.augment is None else AugmentConfig(**self.augment).validate().to_dict()
        return replace(self, fine_tune=parse_fine_tune(self.fine_tune), augment=augment,
                       records=tuple(str(r) for r in self.records))

    def to_dict(self):
        d = asdict(self)
        d["records"] = list(self.records)
        return d


def derived_seed(seed, *keys):
    """A 31-bit seed for one part of a run (a fold, the deployable model), from the run's seed."""
    return int(np.random.SeedSequence([int(seed), *[int(k) for k in keys]]).generate_state(1)[0] >> 1)


def _keras_verbosity(progress):
    """Keras fit verbosity: a live bar on a terminal, one line per epoch in a log file, or none."""
    if not progress:
        return 0
    return 1 if sys.stdout.isatty() else 2


def _log(progress, message):
    if progress:
        print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# One model


def predict_proba(model, images, positions, batch=PREDICT_BATCH):
    """Model outputs for ``images[positions]``, read in batches (images may be a memory map).

    ``predict_on_batch`` rather than ``predict``: the same numbers without building a tf.data
    pipeline per call, which is faster for the many small calls of training and verification.

    Returns
    -------
    ndarray of shape (len(positions), *model output shape[1:]), float32.
    """
    positions = np.asarray(positions, dtype=np.int64)
    out = [np.asarray(model.predict_on_batch(np.asarray(images[positions[i:i + batch]], dtype=np.float32)))
           for i in range(0, len(positions), batch)]
    return np.concatenate(out) if out else np.zeros((0, *model.output_shape[1:]), np.float32)


def _compile(model, learning_rate):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def _learning_phase(model, cfg, epoch):
    """Unfreeze the fine-tuned blocks when the head-only epochs are over; compile when needed."""
    fine_tuning = cfg.fine_tune != 0
    head_epochs = min(cfg.head_epochs, cfg.epochs - 1) if fine_tuning else cfg.epochs
    if epoch == 0 and head_epochs > 0:
        set_backbone_trainable(model, get_backbone(cfg.backbone), 0)
        _compile(model, cfg.learning_rate)
    elif epoch == head_epochs and fine_tuning:
        set_backbone_trainable(model, get_backbone(cfg.backbone), cfg.fine_tune)
        _compile(model, cfg.fine_tune_learning_rate)


def _epoch_scores(model, images, val, y_val, class_names):
    """Validation loss, accuracy and macro-F1 of one epoch."""
    proba = predict_proba(model, images, val)
    eps = 1e-7
    loss = float(-np.mean(np.log(np.clip(proba[np.arange(len(val)), y_val], eps, 1.0))))
    m = report.classification_metrics(y_val, proba.argmax(axis=1), class_names)
    return loss, m["accuracy"], m["macro_f1"]


def fit_model(data, images, train, val, cfg, scaling, seed, progress=True, label="model", before_int8_grid=None):
    """Train one fresh model on ``train`` windows with early stopping on ``val`` macro-F1
    (at most ``cfg.max_val_per_class`` windows of each class of ``val``, drawn with ``seed``).

    Parameters
    ----------
    data : _RunData -- raw windows (``x``, ``fs``, ``y``, ``class_names``) and ``spec``, the
        SpectrogramConfig that turns the augmented windows into images.
    images : ndarray or RowView (n, *image_shape), float32 -- un-augmented images of the windows.
    train, val : int64 positions into ``data``.
    cfg : TrainConfig (validated).
    scaling : {"center", "half_range"} of the input Rescaling layer.
    seed : int seeding weights, dropout and the epochs' sampling and augmentation.
    progress : Keras progress bars and one line per epoch on stderr.
    label : name of the model in the log lines.
    before_int8_grid : with ``cfg.int8_grid``, called with the trained model while its kernels
        are still plain float (to evaluate what the rounding costs).

    Returns
    -------
    (model, history): the model with the weights of its best validation epoch, and a dict of
    per-epoch lists (loss, accuracy, val_loss, val_accuracy, val_macro_f1, train_images_per_s --
    model.fit alone --, epoch_seconds -- images, augmentation, fit and validation) plus
    best_epoch (1-based) and val_windows_scored (per class: the validation windows early stopping
    scored). With ``cfg.int8_grid`` the backbone's kernels end on the int8 grid
    (:func:`ecgedge.train.int8_grid.snap_backbone`), and the history holds
    ``int8_grid_val_macro_f1``, the validation macro-F1 after rounding.
    """
    import keras

    if len(train) == 0 or len(val) == 0:
        raise EcgEdgeError(
            f"{label} has {len(train)} training and {len(val)} validation windows; use more records "
            "(each part of a patient split needs at least one patient)"
        )
    keras.utils.set_random_seed(seed)
    class_names = list(data.class_names)
    model = build_model(cfg.backbone, images.shape[1:], len(class_names), cfg.weights, 0,
                        cfg.dropout, seed, scaling, quant_noise=cfg.quant_noise)
    # early stopping scores a fixed class-balanced draw of the validation windows
    val = np.sort(np.asarray(val)[balanced_indices(data.y[val], cfg.max_val_per_class, np.random.default_rng(seed))])
    x_train, y_train, y_val = np.asarray(data.x[train]), data.y[train], data.y[val]
    augment = None if cfg.augment is None else AugmentConfig(**cfg.augment)
    history = {k: [] for k in ("loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1",
                               "train_images_per_s", "epoch_seconds")}
    best_score, best_weights, best_epoch, waited = -np.inf, None, 0, 0
    for epoch in range(cfg.epochs):
        epoch_started = time.perf_counter()
        _learning_phase(model, cfg, epoch)
        xb, yb = epoch_batch(x_train, y_train, data.fs, data.spec, seed, epoch, cfg.max_per_class, augment)
        started = time.perf_counter()
        fitted = model.fit(xb, yb, batch_size=cfg.batch_size, epochs=1, shuffle=False, verbose=_keras_verbosity(progress),
                           class_weight=balanced_class_weights(yb, len(class_names)))
        history["train_images_per_s"].append(len(xb) / (time.perf_counter() - started))
        history["loss"].append(float(fitted.history["loss"][0]))
        history["accuracy"].append(float(fitted.history["accuracy"][0]))
        for key, value in zip(("val_loss", "val_accuracy", "val_macro_f1"),
                              _epoch_scores(model, images, val, y_val, class_names)):
            history[key].append(value)
        history["epoch_seconds"].append(time.perf_counter() - epoch_started)
        _log(progress, f"{label} epoch {epoch + 1}/{cfg.epochs}: loss {history['loss'][-1]:.4f}, "
                       f"val macro-F1 {history['val_macro_f1'][-1]:.4f}")
        if history["val_macro_f1"][-1] > best_score:
            best_score, best_weights, best_epoch, waited = history["val_macro_f1"][-1], model.get_weights(), epoch + 1, 0
        else:
            waited += 1
            if waited > cfg.patience:
                break
    model.set_weights(best_weights)
    history["best_epoch"] = best_epoch
    history["val_windows_scored"] = np.bincount(y_val, minlength=len(class_names)).tolist()
    if cfg.int8_grid:
        if before_int8_grid is not None:
            before_int8_grid(model)
        snap_backbone(model)
        history["int8_grid_val_macro_f1"] = _epoch_scores(model, images, val, y_val, class_names)[2]
        _log(progress, f"{label} kernels on the int8 grid: val macro-F1 {history['int8_grid_val_macro_f1']:.4f}")
    return model, history


def evaluate_model(model, images, positions, y, class_names):
    """Predictions, metrics and prediction speed of ``model`` on ``images[positions]``."""
    started = time.perf_counter()
    proba = predict_proba(model, images, positions)
    seconds = time.perf_counter() - started
    y_pred = proba.argmax(axis=1)
    return {
        "y_true": y[positions].astype(int).tolist(),
        "y_pred": y_pred.astype(int).tolist(),
        "proba": np.round(proba.astype(np.float64), 6).tolist(),
        "metrics": report.classification_metrics(y[positions], y_pred, class_names),
        "predict_images_per_s": len(positions) / seconds if seconds > 0 else None,
    }


# ---------------------------------------------------------------------------------------------
# Parts of a run


@dataclass(frozen=True)
class _RunData:
    """Windows of the protocol's set (``x``, ``fs``, ``y``, ``patient``, ...) with the model's ``spec``."""

    windows: object
    spec: object

    def __getattr__(self, name):
        return getattr(self.windows, name)


class RowView:
    """Rows ``positions`` of an image array (often a memory map), indexed without copying it all.

    ``view[i]`` is ``images[positions[i]]``; ``shape`` is ``(len(positions), *images.shape[1:])``.
    """

    def __init__(self, images, positions):
        self.images, self.positions = images, np.asarray(positions, dtype=np.int64)
        self.shape = (len(self.positions),) + tuple(images.shape[1:])

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        return self.images[self.positions[index]]


def cnn_folds(run_dir, data, images, folds, cfg, scaling, progress, int8_eval=None):
    """Train and test the CNN on every fold (resuming finished ones); list of fold results.

    ``int8_eval(model, images, fold, y, y_pred)``, when given, converts the fold's model and
    returns its int8 result (see ecgedge.convert.folds), kept as the fold's ``int8``. A fold
    that finished earlier without it stays without (its model is not kept).
    """
    from tqdm import tqdm

    results = []
    for fold in tqdm(folds, desc=f"{cfg.protocol} folds", unit="fold", disable=not progress):
        name = f"cnn-{fold.index}"
        result = runs.load_fold(run_dir, name)
        if result is None:
            started = time.perf_counter()
            plain = {}
            model, history = fit_model(data, images, fold.train, fold.val, cfg, scaling,
                                       derived_seed(cfg.seed, 1, fold.index), progress, f"fold {fold.index}",
                                       before_int8_grid=_plain_kernels_hook(plain, images, fold.test, data))
            result = evaluate_model(model, images, fold.test, data.y, list(data.class_names))
            result.update(plain)
            result.update(fold=fold.index, test=fold.test.tolist(), n_train=len(fold.train),
                          n_val=len(fold.val), history=history, seconds=time.perf_counter() - started)
            if int8_eval is not None:
                result["int8"] = int8_eval(model, images, fold, data.y, result["y_pred"])
            runs.save_fold(run_dir, name, result)
        results.append(result)
    return results


def _plain_kernels_hook(into, images, positions, data):
    """A ``before_int8_grid`` hook: stores the model's predictions on ``positions`` before its
    kernels are rounded, as ``into["plain_kernels"]`` ({"y_pred", "metrics"})."""

    def hook(model):
        result = evaluate_model(model, images, positions, data.y, list(data.class_names))
        into["plain_kernels"] = {"y_pred": result["y_pred"], "metrics": result["metrics"]}

    return hook


def split_records(data, parts):
    """{"train", "val", "test"}: sorted record names of each part of a patient split."""
    return {name: sorted(set(data.record[p].tolist())) for name, p in zip(("train", "val", "test"), parts)}


def deployable_model(run_dir, data, images, cfg, scaling, progress, features=None):
    """Train (or reuse) the deployable model on the fixed patient split; returns its result dict.

    With ``features`` (rhythm features of every window), also fits the deployable rhythm head
    (RUN_DIR/rhythm_head.npz, on the train and validation records) and scores it alone
    (``rhythm``) and combined with the CNN (``combined``) on the test records.
    """
    parts = protocols.split_patients(data.y, data.patient, protocols.SPLIT_FRACTIONS, cfg.seed,
                                     strata=protocols.strata_of(data.y, data.patient))
    runs.write_json(run_dir / "split.json", split_records(data, parts))
    result = runs.load_fold(run_dir, "deploy")
    head_ready = features is None or (run_dir / HEAD_FILE).is_file()
    if result is not None and (run_dir / "model.keras").is_file() and head_ready:
        return result
    train, val, test = parts
    started = time.perf_counter()
    plain = {}
    model, history = fit_model(data, images, train, val, cfg, scaling, derived_seed(cfg.seed, 2), progress, "deploy",
                               before_int8_grid=_plain_kernels_hook(plain, images, test, data))
    class_names = list(data.class_names)
    result = {
        "split": {name: {"records": len(set(data.record[p].tolist())), "windows": len(p),
                         "class_counts": np.bincount(data.y[p], minlength=len(class_names)).tolist()}
                  for name, p in zip(("train", "val", "test"), parts)},
        "history": history,
        "val": evaluate_model(model, images, val, data.y, class_names)["metrics"],
        "test": evaluate_model(model, images, test, data.y, class_names),
        "seconds": time.perf_counter() - started,
        **plain,
    }
    if features is not None:
        rhythm = deployable_rhythm_head(run_dir, data, features, np.concatenate([train, val]), test, cfg.seed)
        y_pred = combined_predictions(result["test"]["proba"], rhythm["proba"], class_names)
        result["rhythm"] = {**rhythm, "metrics": report.classification_metrics(data.y[test], rhythm["y_pred"],
                                                                               class_names)}
        result["combined"] = {"y_pred": y_pred,
                              "metrics": report.classification_metrics(data.y[test], y_pred, class_names)}
    model.save(run_dir / "model.keras")
    runs.save_fold(run_dir, "deploy", result)
    return result


def imagenet_features(data, images, cfg, scaling, progress):
    """Pooled features of the frozen backbone (the run's weights) for every window: (n, d) float32."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg.backbone, images.shape[1:], len(data.class_names), cfg.weights, 0, 0.0,
                        cfg.seed, scaling)
    _log(progress, f"baseline features: {len(data.y)} windows through the frozen {cfg.backbone}")
    return predict_proba(feature_extractor(model), images, np.arange(len(data.y)))


def rr_features_of(task, data, data_dir):
    """RR-interval features (:func:`window_rr_features`) of every window from its record's beats.

    Records without beat annotations (CinC 2017 labels recordings and annotates no beats) keep
    NaN rows: the peer can only be as good as its reference beats allow there.
    """
    from pathlib import Path

    from ecgedge.train.data import read_beats, read_header, task_records

    records = sorted(set(data.record.tolist()))
    features = np.full((len(data.y), len(RR_FEATURE_NAMES)), np.nan)
    for db, db_dir, rec in task_records(task, data_dir, records):
        if not (Path(db_dir) / f"{rec}.{db.annotator}").is_file():
            continue
        rows = np.flatnonzero(data.record == f"{db.name}/{rec}")
        samples, symbols = read_beats(db_dir, rec, db.annotator)
        beat_s = samples / float(read_header(db_dir, rec).fs)
        features[rows] = window_rr_features(beat_s, symbols, data.start_s[rows], task.window_s)
    return features


def baseline_folds(run_dir, task, data, images, folds, cfg, scaling, data_dir, progress):
    """Both baselines on the CNN's folds (resuming finished ones): {name: list of fold results}."""
    makers = {
        "svm_imagenet": (svm_classifier, lambda: imagenet_features(data, images, cfg, scaling, progress),
                         SVM_MAX_PER_CLASS),
        "rr_gbm": (rr_classifier, lambda: rr_features_of(task, data, data_dir), None),
    }
    results = {}
    for name, (make_classifier, features, cap) in makers.items():
        saved = runs.load_fold(run_dir, f"baseline-{name}")
        if saved is None:
            _log(progress, f"baseline {name} on {len(folds)} folds")
            saved = {"folds": predict_folds(make_classifier, features(), data.y, folds, cfg.seed, cap)}
            runs.save_fold(run_dir, f"baseline-{name}", saved)
        results[name] = saved["folds"]
    return results


# ---------------------------------------------------------------------------------------------
# The run


def protocol_positions(cfg, y):
    """Positions of the windows the protocol cross-validates: the balanced subset or all."""
    if cfg.protocol == "paper":
        return protocols.paper_subset(y, cfg.paper_n_windows, cfg.seed)
    return np.arange(len(y), dtype=np.int64)


def run_config(task, cfg, scaling, windows, data_dir):
    """The JSON-ready config.json of a run."""
    from ecgedge.device.rhythm import BEAT_DETECTOR
    from ecgedge.train.runs import versions

    return {
        "task": task.to_dict(),
        "task_name": task.name,
        "backbone": cfg.backbone,
        "weights": cfg.weights,
        "protocol": cfg.protocol,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "fine_tune": cfg.fine_tune,
        "class_names": list(task.class_names),
        "image_shape": list(task.spectrogram.image_shape),
        "input_scaling": scaling,
        "train": cfg.to_dict(),
        "n_windows": len(windows.y),
        # the beats the rhythm head's features were computed from; a run without it read detector 1
        **({"beat_detector": BEAT_DETECTOR} if cfg.rhythm_head else {}),
        # how the head weighs records against windows (rhythm_head.RECORD_SHARE); without it: 0
        **({"rhythm_record_share": RECORD_SHARE} if cfg.rhythm_head else {}),
        "data_dir": None if data_dir is None else str(data_dir),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }


def _cv_tables(cnn, baselines, class_names):
    tables = {"cnn": report.cross_validation_metrics(cnn, class_names)}
    if cnn and all("int8" in r for r in cnn):
        int8 = [{**r, "y_pred": r["int8"]["y_pred"]} for r in cnn]
        tables["cnn_int8"] = report.cross_validation_metrics(int8, class_names)
        tables["cnn_int8"]["agreement_with_float"] = float(
            np.mean(np.concatenate([r["int8"]["y_pred"] for r in cnn]) == np.concatenate([r["y_pred"] for r in cnn])))
    if cnn and all("plain_kernels" in r for r in cnn):
        plain = [{**r, "y_pred": r["plain_kernels"]["y_pred"]} for r in cnn]
        tables["cnn_plain_kernels"] = report.cross_validation_metrics(plain, class_names)
        if "cnn_int8" in tables:
            tables["cnn_int8"]["agreement_with_plain_kernels"] = float(np.mean(
                np.concatenate([r["int8"]["y_pred"] for r in cnn]) == np.concatenate([p["y_pred"] for p in plain])))
    for name, folds in baselines.items():
        tables[name] = report.cross_validation_metrics(folds, class_names)
    return tables


def _timing(cnn, deploy):
    fits = [r for r in cnn] + [deploy]
    train_rates = [v for r in fits for v in r["history"]["train_images_per_s"]]
    predict_rates = [r["predict_images_per_s"] for r in cnn + [deploy["test"]] if r.get("predict_images_per_s")]
    return {
        "train_images_per_s_median": float(np.median(train_rates)) if train_rates else None,
        "predict_images_per_s_median": float(np.median(predict_rates)) if predict_rates else None,
        "seconds_cnn_folds": float(sum(r["seconds"] for r in cnn)),
        "seconds_deploy": float(deploy["seconds"]),
    }


def level_tables(task, data, cnn, rhythm):
    """Per-database and recording-level scores (:mod:`ecgedge.train.scoring`) of the device's
    decision (int8 CNN + rhythm head when the folds have them), the rhythm head alone and the CNN alone."""
    n = len(data.y)
    models = {"device": scoring.device_out_of_fold(cnn, rhythm, n, data.class_names),
              "cnn": scoring.out_of_fold(cnn, n)}
    if rhythm:
        models["rhythm_head"] = scoring.out_of_fold(rhythm, n)
    return {name: scoring.level_scores(task, data.windows, proba) for name, proba in models.items()}


def assemble_metrics(config, data, folds, cnn, baselines, deploy, rhythm=None, task=None):
    """metrics.json: the headline (the device, per recording where the task labels recordings),
    per-database scores, both tables side by side, the deployable model, timing, seed, config."""
    class_names = list(data.class_names)
    tables = _cv_tables(cnn, baselines, class_names)
    if rhythm is not None:
        tables.update(combined_tables(cnn, rhythm, class_names))
    summary = {name: {"accuracy": t["accuracy"], "macro_f1": t["macro_f1"]} for name, t in tables.items()}
    summary["deploy_test"] = {k: deploy["test"]["metrics"][k] for k in ("accuracy", "macro_f1")}
    levels = level_tables(task, data, cnn, rhythm) if task is not None else {}
    return {
        **({"headline": scoring.headline(task, config["protocol"], levels["device"])} if levels else {}),
        "levels": levels,
        "task": config["task_name"],
        "protocol": config["protocol"],
        "protocol_note": PROTOCOL_NOTES[config["protocol"]],
        "seed": config["seed"],
        "class_names": class_names,
        "summary": summary,
        "cv": {
            "n_folds": len(folds),
            "n_windows": int(len(data.y)),
            "class_counts": np.bincount(data.y, minlength=len(class_names)).tolist(),
            **tables,
        },
        "deploy": {
            "protocol_note": "fixed seeded patient split (train/val/test), all windows",
            "split": deploy["split"],
            "best_epoch": deploy["history"]["best_epoch"],
            "val": deploy["val"],
            "test": deploy["test"]["metrics"],
            **({"test_plain_kernels": deploy["plain_kernels"]["metrics"]} if "plain_kernels" in deploy else {}),
            **({"test_rhythm_head": deploy["rhythm"]["metrics"], "test_combined": deploy["combined"]["metrics"]}
               if "combined" in deploy else {}),
        },
        "timing": _timing(cnn, deploy),
        "config": config,
        "versions": config["versions"],
    }


def write_plots(run_dir, metrics, cnn, deploy):
    """confusion_matrix.png (CNN and baselines, cross-validation) and training_curves.png."""
    cv = metrics["cv"]
    matrices = {f"{name} ({metrics['protocol']} CV)": cv[name]["confusion_matrix"]
                for name in ("cnn", "cnn_rhythm", "svm_imagenet", "rr_gbm") if name in cv}
    matrices["cnn deployable (test patients)"] = metrics["deploy"]["test"]["confusion_matrix"]
    report.plot_confusion_matrices(run_dir / "confusion_matrix.png", matrices, metrics["class_names"])
    histories = {f"fold {r['fold']}": r["history"] for r in cnn}
    histories["deploy"] = deploy["history"]
    report.plot_training_curves(run_dir / "training_curves.png", histories)


def _load_data(task, data_dir, cfg, cache_dir, progress, windows):
    from ecgedge.train.data import load_windows, window_images

    if windows is None:
        windows = load_windows(task, data_dir, list(cfg.records) or None, progress, cache_dir)
    images = window_images(windows, task.spectrogram, progress, cache_dir)
    return _RunData(windows, task.spectrogram), images


def train_run(task, out_dir, config=None, data_dir=None, cache_dir=None, force=False, progress=True, windows=None,
              int8_eval=None, **settings):
    """Cross-validate, train the deployable model, run the baselines and write RUN_DIR.

    Parameters
    ----------
    task : Task or a task name / TOML path.
    out_dir : RUN_DIR (created).
    config : TrainConfig, or None for ``TrainConfig()`` (its defaults).
    data_dir, cache_dir : data root and cache folder (defaults: ECGEDGE_DATA, ECGEDGE_CACHE).
    force : discard a run already in ``out_dir`` (otherwise a finished run is refused and an
        unfinished one with the same config resumes).
    progress : progress bars and per-epoch lines on stderr.
    windows : ecgedge.train.data.Windows to use instead of loading the task's (tests).
    int8_eval : hook that converts each fold's model to int8 and tests it (see
        :func:`cnn_folds`); the pipeline passes ``ecgedge.convert.folds.fold_int8_evaluator``.
    **settings : TrainConfig fields that replace those of ``config`` (backbone, epochs, seed, ...).

    Returns
    -------
    dict, the metrics written to ``out_dir/metrics.json``.
    """
    import tensorflow as tf

    from ecgedge.train.data import rhythm_features_of
    from ecgedge.train.tasks import load_task

    task = load_task(task) if isinstance(task, str) else task
    cfg = replace(config if config is not None else TrainConfig(), **settings).validate()
    runs.refuse_finished(out_dir, force)
    tf.config.experimental.enable_op_determinism()
    data, images = _load_data(task, data_dir, cfg, cache_dir, progress, windows)
    sample = np.random.default_rng(0).choice(len(data.y), size=min(SCALING_SAMPLE, len(data.y)), replace=False)
    scaling = input_scaling(images[np.sort(sample)])
    config = run_config(task, cfg, scaling, data.windows, data_dir)
    run_dir = runs.prepare_run_dir(out_dir, config, force)

    features = rhythm_features_of(data.windows, task.spectrogram, progress, cache_dir) if cfg.rhythm_head else None
    deploy = deployable_model(run_dir, data, images, cfg, scaling, progress, features)
    positions = protocol_positions(cfg, data.y)
    cv_data = _RunData(data.windows.subset(positions), data.spec)
    cv_images = RowView(images, positions)
    folds = protocols.make_folds(cfg.protocol, cv_data.y, cv_data.patient, cfg.n_folds, cfg.seed)
    cnn = cnn_folds(run_dir, cv_data, cv_images, folds, cfg, scaling, progress, int8_eval)
    rhythm = rhythm_folds(run_dir, cv_data, np.asarray(features)[positions], folds, cfg.seed, progress) \
        if cfg.rhythm_head else None
    base = baseline_folds(run_dir, task, cv_data, cv_images, folds, cfg, scaling, data_dir, progress) \
        if cfg.baselines else {}
    metrics = assemble_metrics(config, cv_data, folds, cnn, base, deploy, rhythm, task)
    write_plots(run_dir, metrics, cnn, deploy)
    runs.write_json(run_dir / "metrics.json", metrics)
    return metrics
