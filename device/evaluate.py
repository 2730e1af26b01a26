"""On-device evaluation against a database's rhythm annotations, in numpy only.

Windows are cut as the training task cuts them (``ecgedge.train.data``, which uses wfdb):
each rhythm runs from its ``+`` annotation to the next rhythm change or the record's end,
consecutive equal rhythms are joined, and windows of ``window_s`` start every ``hop_s`` from
the start of each interval and lie entirely inside it. Intervals whose label is not in the
bundle's ``label_map`` give no windows; their windows are counted as skipped.
"""

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgedge.device.errors import EcgEdgeError
from ecgedge.device.wfdb_reader import choose_signal, read_annotations, read_digital, read_header, to_physical


@dataclass(frozen=True)
class RecordWindows:
    """The labelled windows of one record.

    Attributes
    ----------
    record : str.
    x : ndarray of shape (k, window samples), float32, physical units (gaps as 0).
    starts : ndarray of shape (k,), int64, first sample of each window.
    labels : list of k annotation labels (e.g. ``"(AFIB"``), all in the label map.
    fs : float, Hz.
    lead : str, the signal used.
    skipped : Counter {label not in the label map: windows it would have given}.
    """

    record: str
    x: np.ndarray
    starts: np.ndarray
    labels: list
    fs: float
    lead: str
    skipped: Counter


def rhythm_intervals(annotations, n_samples):
    """Labelled rhythm intervals ``[(start, stop, label)]`` in samples, sorted, equal runs joined.

    Parameters
    ----------
    annotations : wfdb_reader.Annotations.
    n_samples : int, record length.
    """
    changes = [
        (int(s), aux.replace("\x00", "").strip())
        for s, sym, aux in zip(annotations.sample, annotations.symbol, annotations.aux_note)
        if sym == "+" and aux.replace("\x00", "").strip().startswith("(")
    ]
    intervals = []
    for i, (start, label) in enumerate(changes):
        stop = min(changes[i + 1][0] if i + 1 < len(changes) else n_samples, n_samples)
        if start >= stop:
            continue
        if intervals and intervals[-1][2] == label and start <= intervals[-1][1]:
            start = intervals.pop()[0]
        intervals.append((start, stop, label))
    return intervals


def window_starts(start, stop, length, hop):
    """Starts (ndarray (k,), int64) of the ``length``-sample windows ``hop`` apart inside [start, stop)."""
    k = (stop - start - length) // hop + 1
    return start + hop * np.arange(max(int(k), 0), dtype=np.int64)


def record_windows(record_path, label_map, window_s, hop_s, lead=("MLII",), fallback="first",
                   annotator="atr"):
    """Cut the labelled windows of one WFDB record.

    Parameters
    ----------
    record_path : path of the record without suffix.
    label_map : dict {annotation label: class name}.
    window_s, hop_s : float, seconds.
    lead, fallback : lead preference list and what to do when none is present.

    Returns
    -------
    RecordWindows.
    """
    header = read_header(record_path)
    channel = choose_signal(header, list(lead), fallback)
    signal = np.nan_to_num(to_physical(read_digital(record_path, header), header)[:, channel])
    length = int(round(window_s * header.fs))
    hop = max(int(round(hop_s * header.fs)), 1)
    starts, labels, skipped = [], [], Counter()
    for start, stop, label in rhythm_intervals(read_annotations(record_path, annotator), len(signal)):
        s = window_starts(start, stop, length, hop)
        if label in label_map:
            starts.append(s)
            labels.extend([label] * len(s))
        elif len(s):
            skipped[label] += len(s)
    starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
    x = np.stack([signal[s:s + length] for s in starts]).astype(np.float32) if len(starts) \
        else np.zeros((0, length), dtype=np.float32)
    return RecordWindows(Path(record_path).name, x, starts, labels, header.fs,
                         header.signals[channel].name, skipped)


def classification_metrics(y_true, y_pred, n_classes):
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

    Parameters
    ----------
    y_true, y_pred : ndarray of shape (n,), int class indices.
    n_classes : int.

    Returns
    -------
    dict: accuracy (float), macro_f1 (float, mean over classes present in y_true or y_pred),
    confusion (ndarray (n_classes, n_classes), int64, rows true, columns predicted),
    precision, recall, f1, support (ndarray (n_classes,)).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (support > 0) | (predicted > 0)
    return {
        "accuracy": float(tp.sum() / len(y_true)) if len(y_true) else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "confusion": confusion,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
    }


def list_records(data_dir):
    """Record names of a database folder: its RECORDS file, else every ``*.hea``, sorted."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise EcgEdgeError(f"database folder {data_dir} does not exist; pass one such as $ECGEDGE_DATA/mitdb")
    listing = data_dir / "RECORDS"
    if listing.is_file():
        names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
    else:
        names = sorted(p.stem for p in data_dir.glob("*.hea"))
    if not names:
        raise EcgEdgeError(f"{data_dir} holds no WFDB records (no RECORDS file and no .hea files); "
                           "pass a database folder such as $ECGEDGE_DATA/mitdb")
    return names


def evaluate(classifier, data_dir, records=None, on_window=None):
    """Classify every labelled window of the records and score it against the annotations.

    Parameters
    ----------
    classifier : runtime.Classifier.
    data_dir : database folder with WFDB records and ``.atr`` rhythm annotations.
    records : record names, or None for all of ``data_dir``.
    on_window : optional callable(record, WindowResult, annotation label), e.g. to write
        per-window predictions.

    Returns
    -------
    dict with n_windows (classified), accuracy, macro_f1, per_class {class: {precision,
    recall, f1, support}}, labels (class order of confusion), confusion (rows true),
    skipped {"labels": {label: windows}, "quality": {reason kind: windows}}, records
    {record: {"lead", "n_windows", and :func:`record_scores`}}, rhythm_head (whether the bundle's
    rhythm head took part).
    """
    manifest = classifier.bundle.manifest
    label_map = classifier.bundle.label_map
    class_index = {c: i for i, c in enumerate(classifier.classes)}
    unknown = sorted(set(label_map.values()) - set(class_index))
    if unknown:
        raise EcgEdgeError(f"{classifier.bundle.path}: label_map names classes {unknown} that the model lacks")
    y_true, y_pred = [], []
    skipped_labels, skipped_quality, per_record = Counter(), Counter(), {}
    for record in records or list_records(data_dir):
        rw = record_windows(Path(data_dir) / record, label_map, classifier.window_s, classifier.hop_s,
                            manifest.get("lead") or (), manifest.get("lead_fallback", "first"))
        skipped_labels.update(rw.skipped)
        results = classifier.classify_windows(rw.x, rw.fs, rw.starts / rw.fs)
        first = len(y_true)
        for result, label in zip(results, rw.labels):
            if on_window is not None:
                on_window(record, result, label)
            if result.label is None:
                skipped_quality[result.reason.split(":")[0]] += 1
                continue
            y_true.append(class_index[label_map[label]])
            y_pred.append(class_index[result.label])
        per_record[record] = {"lead": rw.lead, "n_windows": len(results),
                              **record_scores(y_true[first:], y_pred[first:], classifier.classes)}
    report = _report(classification_metrics(y_true, y_pred, len(classifier.classes)), classifier.classes,
                     skipped_labels, skipped_quality, per_record)
    return {**report, "rhythm_head": classifier.trees is not None}


def record_scores(y_true, y_pred, classes):
    """One record's scores: which patients a model fails is what a pooled score hides.

    Parameters
    ----------
    y_true, y_pred : sequences of class indices of the record's classified windows.
    classes : list of class names.

    Returns
    -------
    dict: classified (windows), accuracy (None without windows), recall {class: {"correct",
    "windows"}} for each class the record has windows of, predicted {class: windows} for each
    class the model gave.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    recall = {c: {"correct": int(np.sum((y_true == i) & (y_pred == i))), "windows": int(np.sum(y_true == i))}
              for i, c in enumerate(classes) if np.any(y_true == i)}
    predicted = {c: int(np.sum(y_pred == i)) for i, c in enumerate(classes) if np.any(y_pred == i)}
    return {"classified": int(y_true.size), "accuracy": round(float(np.mean(y_true == y_pred)), 6) if y_true.size else None,
            "recall": recall, "predicted": predicted}


def recall_cells(scores, classes):
    """A per-record table's cells (:func:`record_scores`): "correct/windows" of each class, "-"
    where the record has no window of it."""
    recall = scores["recall"]
    return [f"{recall[c]['correct']}/{recall[c]['windows']}" if c in recall else "-" for c in classes]


def _report(metrics, classes, skipped_labels, skipped_quality, per_record):
    """The ``device eval`` JSON object from the metrics and the counts."""
    per_class = {
        c: {"precision": round(float(metrics["precision"][i]), 6), "recall": round(float(metrics["recall"][i]), 6),
            "f1": round(float(metrics["f1"][i]), 6), "support": int(metrics["support"][i])}
        for i, c in enumerate(classes)
    }
    return {
        "n_windows": int(metrics["confusion"].sum()),
        "accuracy": round(metrics["accuracy"], 6),
        "macro_f1": round(metrics["macro_f1"], 6),
        "per_class": per_class,
        "labels": list(classes),
        "confusion": metrics["confusion"].tolist(),
        "skipped": {"labels": dict(sorted(skipped_labels.items())), "quality": dict(sorted(skipped_quality.items()))},
        "records": per_record,
    }
