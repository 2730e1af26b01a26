"""On-device evaluation against a database's labels, in numpy only.

Windows are labelled and cut by :mod:`ecgedge.device.labels`, the functions training uses:
rhythm notes (each rhythm runs from its ``+`` annotation to the next change), CUDB's ``[``/``]``
VF episodes, or one label per recording from a reference file (CinC 2017), as the bundle's
manifest says for a database of the folder's name. Windows of ``window_s`` start every
``hop_s`` inside each interval; a recording shorter than a window gives one window padded with its mean.
Intervals whose label is not in the bundle's ``label_map`` give no windows; their windows are
counted as skipped.

Recording-labelled databases are also scored per recording: the bundle's decision rule
(:mod:`ecgedge.device.decision`) turns each recording's windows into one answer.
"""

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgedge.device import labels
from ecgedge.device.decision import decide, recording_metrics
from ecgedge.device.errors import EcgEdgeError
from ecgedge.device.inputs import check_fs
from ecgedge.device.metrics import classification_metrics
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


def label_source(manifest, data_dir):
    """How the records of ``data_dir`` are labelled: the bundle's entry for a database of that
    folder's name (``manifest["databases"]``), else rhythm notes (``+`` annotations in ``.atr``).

    Returns
    -------
    dict with labels ("rhythm", "record", "reference"), annotator, brackets, reference,
    reference_labels, record_label, abnormal_sinus.
    """
    default = {"labels": "rhythm", "annotator": "atr", "brackets": "", "reference": "REFERENCE.csv",
               "reference_labels": {}, "record_label": "", "abnormal_sinus": ""}
    entry = (manifest.get("databases") or {}).get(Path(data_dir).name) or {}
    if not isinstance(entry, dict) or not set(entry) <= set(default):
        raise EcgEdgeError(f"the bundle's databases.{Path(data_dir).name} must be an object with keys "
                           f"{sorted(default)}, got {entry!r:.200}")
    source = {**default, **entry}
    for key in ("labels", "annotator", "brackets", "reference", "record_label", "abnormal_sinus"):
        if not isinstance(source[key], str) or "/" in source[key] or "\\" in source[key] or source[key] == "..":
            raise EcgEdgeError(f"the bundle's databases.{Path(data_dir).name}.{key} must be a plain name, "
                               f"got {source[key]!r:.200}")
    if not isinstance(source["reference_labels"], dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in source["reference_labels"].items()):
        raise EcgEdgeError(f"the bundle's databases.{Path(data_dir).name}.reference_labels must map names "
                           "to rhythm labels")
    if source["labels"] not in ("rhythm", "record", "reference"):
        raise EcgEdgeError(f"device eval can not label records of kind {source['labels']!r} (database "
                           f"{Path(data_dir).name}); it reads rhythm notes, record labels and reference files")
    if source["labels"] == "reference":
        source["table"] = labels.read_reference(Path(data_dir) / source["reference"])
    return source


def labelled_intervals(record_path, source, n_samples):
    """``[(start, stop, label)]`` of one record as ``source`` (:func:`label_source`) labels it
    (:func:`ecgedge.device.labels.record_intervals`)."""
    record_path = Path(record_path)
    label, ann = None, None
    if source["labels"] == "record":
        label = source["record_label"]
    elif source["labels"] == "reference":
        table = source.get("table") or labels.read_reference(record_path.parent / source["reference"])
        label = labels.reference_label(table, record_path.name, source["reference_labels"],
                                       record_path.parent / source["reference"])
    else:
        a = read_annotations(record_path, source["annotator"])
        ann = (a.sample, a.symbol, a.aux_note)
    return labels.record_intervals(source["labels"], n_samples, ann, label, source["brackets"])


def record_windows(record_path, label_map, window_s, hop_s, lead=("MLII",), fallback="first",
                   source=None):
    """Cut the labelled windows of one WFDB record (:func:`ecgedge.device.labels.cut_windows`).

    Parameters
    ----------
    record_path : path of the record without suffix.
    label_map : dict {annotation label: class name}.
    window_s, hop_s : float, seconds.
    lead, fallback : lead preference list and what to do when none is present.
    source : how the record is labelled (:func:`label_source`); default rhythm notes in ``.atr``.

    Returns
    -------
    RecordWindows.
    """
    source = source or label_source({}, Path(record_path).parent)
    header = read_header(record_path)
    check_fs(header.fs, f"{record_path}.hea")
    channel = choose_signal(header, list(lead), fallback)
    signal = np.nan_to_num(to_physical(read_digital(record_path, header), header)[:, channel])
    length = int(round(window_s * header.fs))
    hop = max(int(round(hop_s * header.fs)), 1)
    x, starts, window_labels, skipped = labels.cut_windows(
        signal, labelled_intervals(record_path, source, len(signal)), length, hop, label_map,
        pad_short=source["labels"] in ("reference", "record"))
    if source["abnormal_sinus"] and len(window_labels):
        ann = read_annotations(record_path, source["annotator"])
        window_labels = labels.abnormal_sinus(window_labels, starts, length, ann.sample, ann.symbol,
                                              source["abnormal_sinus"])
    return RecordWindows(Path(record_path).name, x, starts, list(window_labels), header.fs,
                         header.signals[channel].name, Counter(skipped))


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
    {record: {"lead", "n_windows", and :func:`record_scores`, and its ``decision`` for
    recording-labelled databases}}, rhythm_head (whether the bundle's rhythm head took part),
    level ("record" for databases labelled per recording, else "window") and, per recording,
    recordings (:func:`ecgedge.device.decision.recording_metrics`).
    """
    manifest = classifier.bundle.manifest
    label_map = classifier.bundle.label_map
    class_index = {c: i for i, c in enumerate(classifier.classes)}
    unknown = sorted(set(label_map.values()) - set(class_index))
    if unknown:
        raise EcgEdgeError(f"{classifier.bundle.path}: label_map names classes {unknown} that the model lacks")
    source = label_source(manifest, data_dir)
    by_recording = source["labels"] in ("record", "reference")
    rule = classifier.decision_rule
    y_true, y_pred = [], []
    true_recordings, decisions = [], []
    skipped_labels, skipped_quality, per_record = Counter(), Counter(), {}
    for record in records or list_records(data_dir):
        rw = record_windows(Path(data_dir) / record, label_map, classifier.window_s, classifier.hop_s,
                            manifest.get("lead") or (), manifest.get("lead_fallback", "first"), source)
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
        if by_recording and rw.labels:
            decision = decide([r.probs for r in results], classifier.classes, rule)
            true_recordings.append(label_map[rw.labels[0]])
            decisions.append(decision)
            per_record[record]["decision"] = decision.to_json(classifier.classes)
    report = _report(classification_metrics(y_true, y_pred, len(classifier.classes)), classifier.classes,
                     skipped_labels, skipped_quality, per_record)
    report["level"] = "record" if by_recording else "window"
    if by_recording:
        report["recordings"] = recording_metrics(true_recordings, decisions, classifier.classes, rule)
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
