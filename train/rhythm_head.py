"""The rhythm head: gradient boosting on the device's rhythm features, beside the spectrogram CNN.

Features come from ``ecgedge.device.rhythm`` (beats the device detects itself and the signal's
sharpness, no annotations).
The classifier is scikit-learn's ``HistGradientBoostingClassifier``, every class weighing alike and,
within a class, its windows and its records by halves (:func:`sample_weights`);
:func:`export_trees` flattens it for ``ecgedge.device.trees.Trees``, which runs it in numpy.
The CNN's and the head's class probabilities are combined on the device by
``ecgedge.device.rhythm.combine`` (geometric mean, weighted per class: the head 0.7, for AF 0.75).
"""

import numpy as np

from ecgedge.device.errors import EcgEdgeError
from ecgedge.device.trees import ARRAYS


RECORD_SHARE = 0.5
"""The share of each class's weight in the rhythm head that is spread over its records evenly
(each record's part split over its windows); the rest is spread over its windows evenly.

By windows alone, MIT-BIH's 8 AF patients (half-hour records, ~360 windows each) teach AF about
40 % as much as CinC 2017's 738 AF recordings (~5 windows each): the head learns the Holters'
AF. By records alone, MIT-BIH's patients are drowned among CinC's recordings. Measured with the
CNN's out-of-fold probabilities of `runs/multidb21` (-databases) fixed, the head refit in two row
orders each: leaving one database out, held-out CinC AF Se 0.572 / 0.561 -> 0.649 / 0.595
(Challenge F1 0.622 / 0.615 -> 0.640 / 0.628), held-out MIT-BIH AF Se 0.957 / 0.952 -> 0.958 /
0.960 (Sp 0.982 / 0.987 -> 0.985 / 0.986), vfdb AF 0.43 / 0.47 -> 0.41 / 0.37 (few AF records);
a quarter 0.583 / 0.592 on CinC and 0.948 / 0.943 on MIT-BIH, three quarters 0.629 / 0.587 and
0.963 / 0.956, records alone (share 1) 0.591 / 0.587 and 0.949 / 0.952; a cap of 20 windows per
record 0.575 on CinC. Two more row orders cut the gain (CinC 0.587 / 0.588 -> 0.589 / 0.585,
MIT-BIH 0.965 / 0.957 -> 0.958 / 0.948): over four, held-out CinC Challenge F1 0.621 -> 0.632 (up
in all four), AF Se 0.577 -> 0.605, held-out MIT-BIH AF Se 0.958 -> 0.956. The full runs (`runs/multidb22`, -databases): held-out CinC AF Se 0.556 ->
0.580, held-out MIT-BIH 0.942 -> 0.962 (mostly row-order noise); patient-wise CinC Challenge F1 0.803 -> 0.804, MIT-BIH
macro-F1 0.787 -> 0.789; vfdb lower. 0 gives the heads before it (balanced classes only)."""


def sample_weights(y, records=None, record_share=RECORD_SHARE):
    """Training weights of the rhythm head's windows: every class sums to ``len(y) / n_classes``.

    Parameters
    ----------
    y : ndarray of shape (n,), int class indices.
    records : ndarray of shape (n,), each window's record (None: classes balanced over windows only).
    record_share : float in [0, 1], the part of a class's weight shared evenly by its records.

    Returns
    -------
    ndarray of shape (n,), float64.
    """
    y = np.asarray(y)
    if not 0.0 <= record_share <= 1.0:
        raise EcgEdgeError(f"record_share must be in [0, 1], got {record_share}")
    if records is not None and len(records) != len(y):
        raise EcgEdgeError(f"{len(records)} records for {len(y)} windows")
    classes, index, counts = np.unique(y, return_inverse=True, return_counts=True)
    share = len(y) / len(classes)  # what each class weighs in all
    by_windows = share / counts[index]
    if records is None or record_share == 0.0:
        return by_windows
    records, by_records = np.asarray(records), np.zeros(len(y))
    for c in range(len(classes)):
        rows = np.flatnonzero(index == c)
        _, record_index, windows = np.unique(records[rows], return_inverse=True, return_counts=True)
        by_records[rows] = share / windows.size / windows[record_index]
    return record_share * by_records + (1.0 - record_share) * by_windows


def fit_rhythm_head(features, y, seed=0, records=None, record_share=RECORD_SHARE):
    """Gradient boosting on rhythm features (NaN allowed), weighted by :func:`sample_weights`.

    Parameters
    ----------
    features : ndarray of shape (n, len(ecgedge.device.rhythm.FEATURE_NAMES)), float.
    y : ndarray of shape (n,), int class indices.
    seed : int.
    records : ndarray of shape (n,), each window's record, or None (classes balanced over windows).
    record_share : see :data:`RECORD_SHARE`.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    features = np.array(features, dtype=np.float64)
    # scikit-learn can not bin a feature that is missing everywhere; constant, it is never split on.
    features[:, np.isnan(features).all(axis=0)] = 0.0
    return HistGradientBoostingClassifier(random_state=seed).fit(
        features, y, sample_weight=sample_weights(y, records, record_share))


def class_probabilities(head, features, n_classes):
    """``head.predict_proba`` with a column for every class 0..n_classes-1 (0 for classes it never saw)."""
    proba = np.zeros((len(features), n_classes))
    proba[:, head.classes_.astype(int)] = head.predict_proba(features)
    return proba


UNSEEN_SCORE = -30.0
"""Raw score of a class the head never saw in training: probability about exp(-30), i.e. zero."""


def export_trees(classifier, n_classes):
    """A fitted multiclass ``HistGradientBoostingClassifier`` as the flat arrays of ``Trees``.

    Reads scikit-learn's fitted predictors (``_predictors``, ``_baseline_prediction``): private
    attributes, so tests compare the exported trees with ``predict_proba`` on every release.
    Classes 0..n_classes-1 that training did not see get a single leaf of value 0 and the raw
    score ``UNSEEN_SCORE`` (as :func:`class_probabilities`, they score zero).
    """
    seen = classifier.classes_.astype(int)
    predictors = classifier._predictors
    if len(seen) < 3 or len(predictors[0]) != len(seen):
        raise EcgEdgeError(f"the rhythm head exports multiclass models (3 classes or more seen in training), "
                           f"got classes {seen.tolist()}")
    unseen_leaf = {"feature": np.zeros(1, np.int32), "threshold": np.zeros(1), "missing_left": np.zeros(1, bool),
                   "left": np.zeros(1, np.int32), "right": np.zeros(1, np.int32), "value": np.zeros(1),
                   "is_leaf": np.ones(1, bool)}
    parts, offset = [unseen_leaf], 1
    roots = np.zeros((len(predictors), n_classes), dtype=np.int64)  # unseen classes: node 0
    for i, iteration in enumerate(predictors):
        for k, tree in zip(seen, iteration):
            nodes = tree.nodes
            if np.any(nodes["is_categorical"]):
                raise EcgEdgeError("categorical splits are not supported by the device's trees")
            roots[i, k] = offset
            parts.append({
                "feature": nodes["feature_idx"].astype(np.int32),
                "threshold": nodes["num_threshold"].astype(np.float64),
                "missing_left": nodes["missing_go_to_left"].astype(bool),
                "left": (nodes["left"].astype(np.int64) + offset).astype(np.int32),
                "right": (nodes["right"].astype(np.int64) + offset).astype(np.int32),
                "value": nodes["value"].astype(np.float64),
                "is_leaf": nodes["is_leaf"].astype(bool),
            })
            offset += len(nodes)
    arrays = {key: np.concatenate([p[key] for p in parts]) for key in unseen_leaf}
    compact_nodes(arrays)
    arrays["roots"] = roots
    baseline = np.full(n_classes, UNSEEN_SCORE)
    baseline[seen] = np.asarray(classifier._baseline_prediction, dtype=np.float64).reshape(-1)
    arrays["baseline"] = baseline
    return {key: arrays[key] for key in ARRAYS}


def compact_nodes(arrays):
    """Zero, in place, what the device never reads: a split's value, a leaf's feature, threshold,
    missing-value side and children; split features as int16 (``MAX_FEATURES`` fits). The walk
    gives the same scores, and the zeros compress: the multidb-rhythm5 head's file (29,586
    nodes) shrinks from 412 to 313 KB."""
    leaf = arrays["is_leaf"]
    for key in ("feature", "threshold", "left", "right"):
        arrays[key] = np.where(leaf, 0, arrays[key]).astype(arrays[key].dtype)
    arrays["feature"] = arrays["feature"].astype(np.int16)
    arrays["missing_left"] = arrays["missing_left"] & ~leaf
    arrays["value"] = np.where(leaf, arrays["value"], 0.0)


def save_trees(path, arrays):
    """Write exported trees to ``path`` (compressed ``.npz``, no pickles; multidb-rhythm5's head: about 320 KB)."""
    np.savez_compressed(path, **arrays)


# ---------------------------------------------------------------------------------------------
# In a training run


HEAD_FILE = "rhythm_head.npz"


def _proba_rows(proba):
    return np.round(np.asarray(proba, dtype=np.float64), 6).tolist()


def rhythm_folds(run_dir, data, features, folds, seed, progress=False):
    """The rhythm head on each fold (fit on train + val, scored on test), resuming a saved run.

    Returns
    -------
    list of dicts per fold: ``fold``, ``test``, ``y_true``, ``y_pred``, ``proba`` (lists).
    """
    from ecgedge.train import runs

    saved = runs.load_fold(run_dir, "rhythm")
    if saved is not None:
        return saved["folds"]
    if progress:
        import sys

        print(f"rhythm head on {len(folds)} folds", file=sys.stderr, flush=True)
    features, y, records = np.asarray(features), np.asarray(data.y), np.asarray(data.record)
    results = []
    for fold in folds:
        fit_on = np.concatenate([fold.train, fold.val])
        head = fit_rhythm_head(features[fit_on], y[fit_on], seed, records[fit_on])
        proba = class_probabilities(head, features[fold.test], len(data.class_names))
        results.append({"fold": fold.index, "test": fold.test.tolist(), "y_true": y[fold.test].tolist(),
                        "y_pred": proba.argmax(axis=1).tolist(), "proba": _proba_rows(proba)})
    runs.save_fold(run_dir, "rhythm", {"folds": results})
    return results


def deployable_rhythm_head(run_dir, data, features, train, test, seed):
    """Fit the deployable rhythm head on ``train`` positions, save it as RUN_DIR/rhythm_head.npz.

    Returns
    -------
    dict with the head's test ``y_pred`` and ``proba`` (lists).
    """
    features = np.asarray(features)
    head = fit_rhythm_head(features[train], np.asarray(data.y)[train], seed, np.asarray(data.record)[train])
    save_trees(run_dir / HEAD_FILE, export_trees(head, len(data.class_names)))
    proba = class_probabilities(head, features[test], len(data.class_names))
    return {"y_pred": proba.argmax(axis=1).tolist(), "proba": _proba_rows(proba)}


def combined_predictions(cnn_proba, rhythm_proba, class_names):
    """Class indices of the combined CNN + rhythm head decision, as the bundle combines them
    (:func:`ecgedge.device.rhythm.combine` with the per-class ``cnn_weights``)."""
    from ecgedge.device.rhythm import cnn_weights, combine

    combined = combine(np.asarray(cnn_proba), np.asarray(rhythm_proba), cnn_weights(class_names))
    return combined.argmax(axis=1).astype(int).tolist()


def combined_tables(cnn, rhythm, class_names):
    """Cross-validation tables of the rhythm head alone and combined with the CNN (float, int8).

    Parameters
    ----------
    cnn : the CNN's fold results (``proba``; ``int8`` with its ``proba`` when converted).
    rhythm : :func:`rhythm_folds` results, same folds.

    Returns
    -------
    {"rhythm_head", "cnn_rhythm"[, "cnn_rhythm_int8"]}: ``report.cross_validation_metrics``
    tables; the int8 one holds ``agreement_with_float`` (with "cnn_rhythm").
    """
    from ecgedge.train import report

    by_fold = {r["fold"]: r for r in rhythm}
    tables = {"rhythm_head": report.cross_validation_metrics(rhythm, class_names)}
    combined = [{**r, "y_pred": combined_predictions(r["proba"], by_fold[r["fold"]]["proba"], class_names)}
                for r in cnn]
    tables["cnn_rhythm"] = report.cross_validation_metrics(combined, class_names)
    if all("proba" in r.get("int8", {}) for r in cnn):
        int8 = [{**r, "y_pred": combined_predictions(r["int8"]["proba"], by_fold[r["fold"]]["proba"], class_names)}
                for r in cnn]
        tables["cnn_rhythm_int8"] = report.cross_validation_metrics(int8, class_names)
        tables["cnn_rhythm_int8"]["agreement_with_float"] = float(np.mean(
            np.concatenate([r["y_pred"] for r in int8]) == np.concatenate([r["y_pred"] for r in combined])))
    return tables
