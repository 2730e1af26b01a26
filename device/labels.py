"""Labelled time and windows: the one definition, shared by training and the device.

Training (:mod:`ecgedge.train.data`, which reads records with wfdb) and the device's own
evaluation (:mod:`ecgedge.device.evaluate`, numpy only) both turn a record's annotations into
labelled intervals and cut windows with these functions, so a window is labelled alike on both
sides.

How a database gives labelled time (a task's ``[databases.NAME] labels = ...``):

``"rhythm"``
    Rhythm-change annotations (symbol ``+``) whose aux note is the new rhythm, e.g. ``(AFIB``;
    each rhythm runs until the next change or the end of the record (MIT-BIH, AFDB, VFDB, CUDB).
    Optionally (``brackets``), ventricular flutter/fibrillation episodes opened by ``[`` and
    closed by ``]`` annotations take the bracket label over whatever rhythm note is in force:
    CUDB marks VF this way and gives ``(VF`` notes only sometimes.
``"record"``
    The whole record is one rhythm, ``record_label`` (NSRDB has beat annotations only).
``"episode"``
    Episodes opened and closed by aux notes of one symbol (the European ST-T database).
``"reference"``
    One label per recording from a CSV file beside the records (``REFERENCE.csv`` of the
    PhysioNet/CinC Challenge 2017: ``A00001,N``), mapped to rhythm labels by the task
    (``N`` -> ``(N``, ``A`` -> ``(AFIB``, ``O`` -> ``(OTHER``, ``~`` -> ``(NOISE``). The label
    holds for the whole recording; a recording is scored once (see
    :mod:`ecgedge.device.decision`).

**Sinus rhythm with abnormal beats** (``abnormal_sinus``, a database with typed beat
annotations): a sinus-rhythm window (``(N``) with at least ``MIN_ECTOPIC_BEATS`` ectopic beats
(``ECTOPIC_BEATS``) or with at least ``MIN_BLOCK_FRACTION`` of its beats conducted with bundle
branch block (``BLOCK_BEATS``) takes the ``abnormal_sinus`` label instead. MIT-BIH calls such
stretches sinus rhythm; CinC 2017 calls them "Other rhythm", and a model trained on both learns
the conflict (the deployable multidb model called MIT-BIH 118, sinus rhythm with right bundle
branch block, OTHER in 209 of 360 windows). Harmonised, a rhythm head trained on the Holter
databases alone scored CinC 2017's recordings with Challenge F1 0.580 instead of 0.505.

Recordings shorter than one window (16 of CinC 2017's 8,528 last 9.0-9.9 s against 10 s
windows) are not dropped: a recording of at least ``MIN_RECORDING_FRACTION`` of a window gives
one window, padded with its own mean (:func:`pad_to_window`); the device pads a short input file
the same way. Chosen by measurement: 1,328 held-out CinC recordings cut to 9.0 s and padded to
10 s, classified by the multidb-rhythm5 bundle, were right 70.2 % of the time padded with their
mean, 69.1 % holding the last sample, 66.1 % wrapped around (the junction looks like an irregular
beat) and 65.9 % mirrored, against 75.6 % for their first full 10 s; skipping them would leave them
all unanswered.
"""

import csv
import re
from pathlib import Path

import numpy as np

from ecgedge.device.errors import DataError

MIN_RECORDING_FRACTION = 0.5
"""A recording shorter than a window but at least this part of it gives one padded window."""


def _clean(aux):
    return str(aux).replace("\x00", "").strip()


def _join_runs(intervals):
    """Join ``(start, stop, label)`` intervals with the same label that touch or overlap."""
    merged = []
    for start, stop, label in sorted(intervals):
        if merged and merged[-1][2] == label and start <= merged[-1][1]:
            last = merged.pop()
            start, stop = last[0], max(last[1], stop)
        merged.append((start, stop, label))
    return merged


def rhythm_intervals(sample, symbol, aux, n_samples):
    """Rhythm intervals from rhythm-change annotations (symbol ``+``, aux ``(LABEL``).

    Each rhythm runs from its annotation to the next rhythm change, or to the record's end;
    time before the first change has no label. Consecutive equal rhythms are joined.

    Parameters
    ----------
    sample : sequence of int, annotation sample indices (sorted).
    symbol, aux : sequences of str, annotation symbols and aux notes (NUL padding allowed).
    n_samples : int, record length in samples.

    Returns
    -------
    list of ``(start, stop, label)`` in samples, sorted.
    """
    changes = [(int(s), _clean(a)) for s, sym, a in zip(sample, symbol, aux)
               if sym == "+" and _clean(a).startswith("(")]
    intervals = []
    for i, (start, label) in enumerate(changes):
        stop = min(changes[i + 1][0] if i + 1 < len(changes) else n_samples, n_samples)
        if start < stop:
            intervals.append((start, stop, label))
    return _join_runs(intervals)


def bracket_intervals(sample, symbol, n_samples, label):
    """Episodes between ``[`` and ``]`` annotations (ventricular flutter/fibrillation in CUDB).

    An episode never closed runs to the record's end; a ``]`` with no open episode is ignored.

    Returns
    -------
    list of ``(start, stop, label)``, sorted, overlapping episodes joined.
    """
    episodes, opened = [], None
    for s, sym in zip(sample, symbol):
        if sym == "[" and opened is None:
            opened = int(s)
        elif sym == "]" and opened is not None:
            episodes.append((opened, min(int(s), n_samples), label))
            opened = None
    if opened is not None:
        episodes.append((opened, n_samples, label))
    return _join_runs([e for e in episodes if e[0] < e[1]])


def overlay(intervals, episodes):
    """``intervals`` with ``episodes`` laid over them: episode time takes the episode's label.

    Both are lists of ``(start, stop, label)``; returns a sorted list with equal runs joined.
    """
    out = []
    for start, stop, label in intervals:
        cuts = [start]
        for a, b, _ in episodes:
            if a < stop and start < b:
                cuts += [max(a, start), min(b, stop)]
        cuts = sorted(set(cuts + [stop]))
        for a, b in zip(cuts[:-1], cuts[1:]):
            if not any(ea <= a and b <= eb for ea, eb, _ in episodes):
                out.append((a, b, label))
    return _join_runs(out + list(episodes))


def episode_intervals(sample, symbol, aux, n_samples, episode_symbol="s", prefix="(ST"):
    """Episodes opened by aux ``(ST0-`` and closed by ``ST0-)`` (annotations of ``episode_symbol``).

    An opening note ``prefix + rest`` starts an episode that the note ``prefix[1:] + rest +
    ")"`` ends; a closing note that matches no open episode exactly ends the oldest open one of
    the same lead (``ST0...)`` ends ``(ST0...``). Episodes never closed run to the record's end;
    overlapping episodes (e.g. on two leads) are joined. Each episode is labelled ``prefix``.

    Returns
    -------
    list of ``(start, stop, prefix)`` in samples, sorted.
    """
    body = prefix[1:]
    lead = re.compile(re.escape(body) + r"\d*")
    open_at, episodes = {}, []
    for t, sym, note in zip(sample, symbol, aux):
        if sym != episode_symbol:
            continue
        note = _clean(note)
        if note.startswith(prefix):
            open_at.setdefault(note[1:], int(t))
        elif note.startswith(body) and note.endswith(")"):
            key = note[:-1]
            if key not in open_at:
                same_lead = lead.match(note).group(0)
                key = next((k for k in open_at if lead.match(k).group(0) == same_lead), None)
            if key is not None:
                episodes.append((open_at.pop(key), int(t), prefix))
    episodes += [(t, n_samples, prefix) for t in open_at.values()]
    return _join_runs([e for e in episodes if e[0] < e[1]])


def read_reference(path):
    """Recording labels of a Challenge-style ``REFERENCE.csv`` (``record,label`` per line).

    Returns
    -------
    dict {record name: label as written, e.g. ``"A"``}.

    Raises
    ------
    DataError : the file is missing, a line does not have two fields, or a record is listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"reference labels {path} do not exist; the database folder needs its label file")
    labels = {}
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for number, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2 or not row[0].strip():
                raise DataError(f"{path} line {number}: expected 'record,label', got {','.join(row)[:80]!r}")
            record, label = row[0].strip(), row[1].strip()
            if record in labels:
                raise DataError(f"{path} line {number}: record {record!r} is listed twice")
            labels[record] = label
    return labels


def reference_label(table, record, mapping, where="the reference file"):
    """The rhythm label ``mapping`` gives the CSV label of ``record`` in ``table``
    (:func:`read_reference`), or None when the mapping does not list it.

    Raises
    ------
    DataError : ``table`` has no label for ``record``.
    """
    if record not in table:
        raise DataError(f"{where} has no label for record {record}; the label file and the records disagree")
    return dict(mapping).get(table[record])


def record_intervals(kind, n_samples, annotations=None, label=None, brackets="", episode=("s", "(ST")):
    """Labelled intervals ``[(start, stop, label)]`` of one record, for each way a database labels
    (the module docstring): training and the device's evaluation both call this.

    Parameters
    ----------
    kind : "rhythm", "episode", "record" or "reference".
    n_samples : int, record length.
    annotations : (sample, symbol, aux) sequences, for "rhythm" and "episode".
    label : the whole record's label, for "record" and "reference" (None: no labelled time).
    brackets : for "rhythm", the label of ``[`` ... ``]`` episodes laid over the notes ("" none).
    episode : (annotation symbol, aux prefix), for "episode".
    """
    if kind in ("record", "reference"):
        return [] if label is None else [(0, int(n_samples), label)]
    sample, symbol, aux = annotations
    if kind == "episode":
        return episode_intervals(sample, symbol, aux, n_samples, *episode)
    intervals = rhythm_intervals(sample, symbol, aux, n_samples)
    if brackets:
        intervals = overlay(intervals, bracket_intervals(sample, symbol, n_samples, brackets))
    return intervals


SINUS_LABEL = "(N"
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?!")
"""Annotation symbols that mark a beat (WFDB's beat codes)."""
ECTOPIC_BEATS = frozenset("VFEAaJS")
"""Premature ventricular (V), fusion (F), ventricular escape (E), premature atrial (A), aberrated
atrial (a), premature nodal (J) and supraventricular (S) beats: MIT-BIH's beat symbols."""
BLOCK_BEATS = frozenset("LR")
"""Left and right bundle branch block beats."""
MIN_ECTOPIC_BEATS = 2
MIN_BLOCK_FRACTION = 0.5


def abnormal_sinus(labels, starts, length, ann_samples, ann_symbols, label):
    """Window labels with sinus windows of frequent abnormal beats relabelled (module docstring).

    Parameters
    ----------
    labels : sequence of str (k,), the windows' labels.
    starts : ndarray (k,), int, window starts in samples; ``length`` samples each.
    ann_samples, ann_symbols : the record's annotations (sorted samples, symbols); the beats
        among them (``BEAT_SYMBOLS``) are counted.
    label : the label such windows take, e.g. ``"(OTHER"``.

    Returns
    -------
    ndarray of shape (k,), str.
    """
    symbols = np.asarray(ann_symbols, dtype=str)
    beat = np.isin(symbols, sorted(BEAT_SYMBOLS))
    beat_samples, symbols = np.asarray(ann_samples, dtype=np.int64)[beat], symbols[beat]
    ectopic = np.concatenate([[0], np.cumsum(np.isin(symbols, sorted(ECTOPIC_BEATS)))])
    block = np.concatenate([[0], np.cumsum(np.isin(symbols, sorted(BLOCK_BEATS)))])
    starts = np.asarray(starts, dtype=np.int64)
    lo = np.searchsorted(beat_samples, starts, side="left")
    hi = np.searchsorted(beat_samples, starts + length, side="left")
    n_beats = hi - lo
    frequent = ((ectopic[hi] - ectopic[lo]) >= MIN_ECTOPIC_BEATS) | (
        (n_beats > 0) & ((block[hi] - block[lo]) >= MIN_BLOCK_FRACTION * np.maximum(n_beats, 1)))
    out = np.asarray(labels, dtype=object).copy()
    out[(out == SINUS_LABEL) & frequent] = label
    return out.astype(str).reshape(len(out))


def window_starts(start, stop, length, hop):
    """Starts (ndarray (k,), int64) of the ``length``-sample windows ``hop`` apart inside [start, stop)."""
    k = (stop - start - length) // hop + 1
    return start + hop * np.arange(max(int(k), 0), dtype=np.int64)


def pad_to_window(x, length):
    """A recording shorter than one window, padded to ``length`` samples with its mean.

    A flat stretch at the recording's mean reads as a pause, which the model and the rhythm
    features take better than a wrapped-around junction (see the module docstring). Recordings
    of fewer than ``MIN_RECORDING_FRACTION * length`` samples give None (the quality checks
    would call them a flat line).

    Returns
    -------
    ndarray of shape (length,), same dtype, or None.
    """
    x = np.asarray(x)
    if x.size >= length:
        return x[:length]
    if x.size < MIN_RECORDING_FRACTION * length:
        return None
    return np.concatenate([x, np.full(length - x.size, np.mean(x), dtype=x.dtype)])


def cut_windows(signal, intervals, length, hop, keep, pad_short=False):
    """Windows of ``signal`` lying entirely inside one interval whose label is in ``keep``.

    With ``pad_short`` (databases that label whole recordings), a recording shorter than a
    window gives one window padded by :func:`pad_to_window`.

    Parameters
    ----------
    signal : ndarray of shape (n,), float.
    intervals : list of ``(start, stop, label)``.
    length, hop : int, samples.
    keep : container of the labels to keep.
    pad_short : pad a recording shorter than a window into one (see above).

    Returns
    -------
    x : ndarray of shape (k, length), float32.
    starts : ndarray of shape (k,), int64, samples.
    labels : ndarray of shape (k,), str.
    skipped : dict {label not kept: windows it would have given}.
    """
    n = len(signal)
    rows, starts, labels, skipped = [], [], [], {}
    for start, stop, label in intervals:
        s = window_starts(start, stop, length, hop)
        short = None
        if pad_short and s.size == 0 and start == 0 and stop == n:
            short = pad_to_window(signal[:n], length)
            s = np.zeros(0 if short is None else 1, dtype=np.int64)
        if label not in keep:
            if s.size:
                skipped[label] = skipped.get(label, 0) + int(s.size)
            continue
        rows += [short] if short is not None else [signal[a:a + length] for a in s]
        starts.append(s)
        labels += [label] * int(s.size)
    x = np.stack(rows).astype(np.float32) if rows else np.zeros((0, length), dtype=np.float32)
    starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
    return x, starts, np.asarray(labels, dtype=str).reshape(len(labels)), skipped
