"""Scores per database and per recording, from a run's out-of-fold probabilities.

A pooled window score hides two things a user asks about: how each database (device, rate,
population) fares, and how recordings fare where a database labels recordings, not time
(CinC 2017). This module turns out-of-fold probabilities into

- ``per_database``: for each database, window-level scores, or recording-level scores when the
  database labels whole recordings (each recording decided by the bundle's rule,
  :mod:`ecgedge.device.decision`, exactly as ``device eval`` decides it);
- ``headline``: the one line a report leads with (the contract of ``metrics.json``): recording
  level over the recording-labelled databases when the task has any, else window level over all
  windows. Its ``af_se`` / ``af_sp`` count an inconclusive answer as "not called AF".

Window-level AF sensitivity / specificity and the "inconclusive" rate use the same definitions
as the recording level, a window being a recording of one window.
"""

import numpy as np

from ecgedge.device.decision import RecordingDecision, decide, default_rule, recording_metrics
from ecgedge.device.rhythm import cnn_weights, combine


def out_of_fold(fold_results, n, key=None):
    """Pooled out-of-fold probabilities (n, n_classes) from fold results (``test``, ``proba``).

    ``key`` reads ``result[key]["proba"]`` (e.g. "int8") instead of ``result["proba"]``. Rows no
    fold tested stay NaN.
    """
    first = fold_results[0][key]["proba"] if key else fold_results[0]["proba"]
    out = np.full((n, len(first[0])), np.nan)
    for r in fold_results:
        out[np.asarray(r["test"], dtype=np.int64)] = np.asarray(r[key]["proba"] if key else r["proba"])
    return out


def device_out_of_fold(cnn, rhythm, n, class_names):
    """The device's out-of-fold probabilities: int8 CNN (float when a fold has no int8 result)
    combined with the rhythm head as the bundle will (``ecgedge.device.rhythm.combine`` with the
    per-class ``cnn_weights``); the CNN alone without a head."""
    key = "int8" if all("int8" in r for r in cnn) else None
    proba = out_of_fold(cnn, n, key)
    if rhythm:
        proba = combine(proba, out_of_fold(rhythm, n), cnn_weights(class_names))
    return proba


def _window_scores(y_true, proba, classes, rule):
    decisions = [RecordingDecision(classes[int(np.argmax(p))], p, None, 1, 1) for p in proba]
    return recording_metrics([classes[i] for i in y_true], decisions, classes, rule)


def _recording_scores(y_true, proba, records, classes, rule):
    order = {}
    for i, r in enumerate(records):
        order.setdefault(r, []).append(i)
    names = sorted(order)
    truth = [classes[int(y_true[order[r][0]])] for r in names]
    decisions = [decide([proba[i] for i in order[r]], classes, rule) for r in names]
    return recording_metrics(truth, decisions, classes, rule)


def level_scores(task, windows, proba, rule=None):
    """Per-database and headline scores of out-of-fold probabilities.

    Parameters
    ----------
    task : ecgedge.train.tasks.Task.
    windows : ecgedge.train.data.Windows (``y``, ``record`` "db/record"), same rows as ``proba``.
    proba : ndarray (n, n_classes), NaN rows (not tested) are left out.
    rule : DecisionRule; default the rule of the task's new bundles (``default_rule``).

    Returns
    -------
    dict {"per_database": {db: {"level", **recording_metrics}}, "headline": {...}}.
    """
    classes = list(task.class_names)
    rule = rule or default_rule(classes)
    tested = ~np.isnan(proba).any(axis=1)
    database = np.array([r.split("/", 1)[0] for r in windows.record])
    by_recording = {db.name for db in task.databases if db.labels in ("reference", "record")}
    per_database = {}
    for name in sorted(set(database[tested].tolist())):
        rows = np.flatnonzero(tested & (database == name))
        if name in by_recording:
            scores = _recording_scores(windows.y[rows], proba[rows], windows.record[rows], classes, rule)
            per_database[name] = {"level": "record", **scores}
        else:
            per_database[name] = {"level": "window", "n_windows": int(rows.size),
                                  **_window_scores(windows.y[rows], proba[rows], classes, rule)}
    recording_dbs = sorted(set(per_database) & by_recording)
    if recording_dbs:
        rows = np.flatnonzero(tested & np.isin(database, recording_dbs))
        head = {"level": "record", "databases": recording_dbs,
                **_recording_scores(windows.y[rows], proba[rows], windows.record[rows], classes, rule)}
    else:
        rows = np.flatnonzero(tested)
        head = {"level": "window", "databases": sorted(per_database),
                **_window_scores(windows.y[rows], proba[rows], classes, rule)}
    return {"per_database": per_database, "headline": head}


def headline(task, protocol, scores):
    """The ``metrics.json`` headline object: task, protocol, level, accuracy, macro_f1, af_se,
    af_sp, inconclusive_rate (and challenge_f1 when the task has NSR, AF and OTHER)."""
    h = scores["headline"]
    out = {"task": task.name, "protocol": protocol, "level": h["level"], "databases": h["databases"],
           "n": h.get("n_recordings"), "accuracy": h["accuracy"], "macro_f1": h["macro_f1"],
           "af_se": h.get("af_se"), "af_sp": h.get("af_sp"), "inconclusive_rate": h["inconclusive_rate"]}
    if "challenge_f1" in h:
        out["challenge_f1"] = h["challenge_f1"]
    return out
