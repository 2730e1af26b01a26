"""Timing the device runtime on one window: DSP, inference and end to end (``device bench``)."""

import itertools
import platform
import sys
import time
from pathlib import Path

import numpy as np

from ecgedge.device.errors import EcgEdgeError


def synthetic_ecg(n, fs, seed):
    """Seeded ECG-like signal: ndarray of shape (n,), float64, mV (spikes at ~75 bpm, wander, noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    beats = np.cumsum(rng.uniform(0.7, 0.9, size=int(n / fs / 0.7) + 2))
    spikes = np.zeros(n)
    for b in beats:
        spikes += np.exp(-(((t - b) / 0.02) ** 2))
    return spikes + 0.2 * np.sin(2 * np.pi * 0.3 * t) + 0.02 * rng.standard_normal(n)


def _timed(fn, args_list):
    """Call ``fn(*args)`` for each args; return ndarray of wall times in milliseconds."""
    times = np.empty(len(args_list))
    for i, args in enumerate(args_list):
        began = time.perf_counter()
        fn(*args)
        times[i] = (time.perf_counter() - began) * 1e3
    return times


ROUNDS = 10
"""Turns that :func:`interleaved` takes between the jobs it times."""


def interleaved(jobs, warmup=0, rounds=ROUNDS):
    """Wall times of several jobs on the same inputs, taken in turns.

    A shared machine (or a Raspberry Pi that throttles when warm) can run twice as fast in one
    minute as in the next: timed one after the other, jobs would be compared across different
    minutes. Here the inputs are cut into ``rounds`` consecutive chunks, and every job runs on
    chunk r before any job starts chunk r + 1, so a change of pace affects all jobs alike and
    their ratios stay fair.

    Parameters
    ----------
    jobs : {name: (fn, args_list)}, args lists of one length; ``fn(*args)`` is timed.
    warmup : int, leading args of each list run once, untimed, before any timing.
    rounds : int, >= 1.

    Returns
    -------
    {name: ndarray of milliseconds}, one per timed args, in the order of the args.
    """
    lengths = {len(args_list) for _, args_list in jobs.values()}
    if len(lengths) > 1:
        raise ValueError(f"jobs to interleave need args lists of one length, got {sorted(lengths)}")
    for fn, args_list in jobs.values():
        for args in args_list[:warmup]:
            fn(*args)
    n = max(lengths, default=warmup) - warmup
    bounds = np.linspace(warmup, warmup + n, max(1, min(rounds, n)) + 1).astype(int)
    times = {name: [] for name in jobs}
    for start, stop in zip(bounds[:-1], bounds[1:]):
        for name, (fn, args_list) in jobs.items():
            times[name].append(_timed(fn, args_list[start:stop]))
    return {name: np.concatenate(parts) for name, parts in times.items()}


def _stats(ms):
    return {"median_ms": round(float(np.median(ms)), 4), "p90_ms": round(float(np.percentile(ms, 90)), 4)}


def peak_rss_mib():
    """Peak resident memory of this process in MiB (None where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 2)


def split_history(segment, classifier, fs):
    """(window, history) of a timed segment: its last ``window_samples(fs)`` samples, and the
    samples before them (None when there are none)."""
    length = classifier.window_samples(fs)
    history = segment[:-length]
    return segment[-length:], (history if history.size else None)


def window_jobs(classifier, segments, fs):
    """``classifier`` on ``segments`` as jobs for :func:`interleaved`: dsp, invoke, end_to_end.

    A segment is a window with the history before it that a head with context features reads
    (:func:`split_history`): timing windows without it would leave that DSP out.
    """
    pairs = [split_history(s, classifier, fs) for s in segments]
    inputs = [(classifier.model_input(classifier.preprocess(w, fs, h)[0]),) for w, h in pairs]
    return {"dsp": (lambda w, h: classifier.preprocess(w, fs, h), pairs), "invoke": (classifier.invoke, inputs),
            "end_to_end": (lambda w, h: classifier.classify_window(w, fs, history=h), pairs)}


def measure_window_latency(classifier, fs=360.0, n=200, warmup=20, seed=0, windows=None):
    """Median and p90 times of DSP, invoke and end to end over ``n`` windows, taken in turns
    (:func:`interleaved`).

    Parameters
    ----------
    classifier : runtime.Classifier.
    fs : input sampling rate of the windows, Hz (resampling is part of the DSP).
    n, warmup : timed and untimed windows.
    seed : seed of the synthetic signal.
    windows : raw segments at ``fs`` to time instead (a list, repeated as needed to make
        ``warmup + n``): each a window, after the history its context features read, if any
        (:func:`split_history`); default consecutive windows of a seeded synthetic ECG, each
        with the ``classifier.context_s`` seconds before it.

    Returns
    -------
    dict: dsp, invoke, end_to_end ({median_ms, p90_ms}), windows_per_s (from the end-to-end
    median), real_time_factor (end-to-end median / hop: the share of real time a stream needs;
    < 1 keeps up), model_bytes, peak_rss_mib, plus interpreter, machine and versions.
    """
    source = "synthetic" if windows is None else "given"
    if windows is None:
        length = classifier.window_samples(fs) + int(round(classifier.context_s * fs))
        hop = max(int(round(classifier.hop_s * fs)), 1)
        signal = synthetic_ecg(length + hop * (n + warmup), fs, seed)
        windows = [signal[i * hop:i * hop + length] for i in range(n + warmup)]
    if len(windows) == 0:
        raise EcgEdgeError("no windows to time")
    windows = [windows[i % len(windows)] for i in range(n + warmup)]
    ms = interleaved(window_jobs(classifier, windows, fs), warmup)
    median_s = float(np.median(ms["end_to_end"])) / 1e3
    return {
        "dsp": _stats(ms["dsp"]),
        "invoke": _stats(ms["invoke"]),
        "end_to_end": _stats(ms["end_to_end"]),
        "windows_per_s": round(1.0 / median_s, 2),
        "real_time_factor": round(median_s / classifier.hop_s, 6),
        "model_bytes": classifier.bundle.model_path.stat().st_size,
        "peak_rss_mib": peak_rss_mib(),
        "n": n,
        "windows": source,
        "fs_in": fs,
        "window_s": classifier.window_s,
        "hop_s": classifier.hop_s,
        "history_s": round(float(np.median([len(w) for w in windows])) / fs - classifier.window_s, 3),
        "interpreter": classifier.info,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def windows_of_records(paths, window_s, n, history_s=0.0):
    """``n`` raw windows of the WFDB records at ``paths`` (lead MLII, else the first), each after
    the ``history_s`` seconds of its record before it (the segments :func:`window_jobs` times).

    Every record gives ``ceil(n / records)`` windows evenly spaced over its length (the first
    after ``history_s`` seconds), taken in turns (the first window of each record, then the
    second, ...), so any leading part, the warm-up included, spans many patients. Records
    shorter than a window and its history give none; the others' windows are then repeated to
    make ``n``.

    Returns
    -------
    (list of n ndarrays of shape (round(history_s * fs) + round(window_s * fs),), float64 mV; fs, Hz).
    """
    from ecgedge.device.wfdb_reader import read_signal

    per_record = -(-n // len(paths))
    by_record, rates = [], set()
    for path in paths:
        signal, fs, _ = read_signal(path, ["MLII"])
        length = int(round(history_s * fs)) + int(round(window_s * fs))
        if signal.size < length:
            continue
        rates.add(fs)
        starts = np.linspace(0, signal.size - length, per_record).astype(int)
        by_record.append([signal[s:s + length] for s in starts])
    if len(rates) != 1:
        raise EcgEdgeError(f"latency windows need records of one sampling rate, at least {history_s + window_s} s long; "
                           f"{Path(paths[0]).parent} has rates {sorted(rates)} among those")
    in_turns = [w for windows in zip(*by_record) for w in windows]
    return list(itertools.islice(itertools.cycle(in_turns), n)), rates.pop()
