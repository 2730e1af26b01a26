"""Cost against signal length: real MIT-BIH records concatenated, streamed through the device runtime.

Each length runs in a fresh interpreter process (one thread, ``OMP_NUM_THREADS=1``) so that its
peak resident memory is its own. The records are read one at a time (numpy WFDB reader) and
pushed in one-second chunks into a ``StreamingClassifier``: time should grow linearly with the
length while memory stays flat. The real-time factor is processing time / signal time.
"""

import itertools
import json
import os
import subprocess
import sys
import time

import numpy as np

from ecgedge.device.errors import EcgEdgeError

DEFAULT_LENGTHS_S = [60.0, 600.0, 3600.0, 6 * 3600.0, 24 * 3600.0]
DATABASE = "mitdb"


def record_paths(data_dir=None):
    """Paths (without suffix) of the mitdb records in RECORDS order."""
    from ecgedge.device.evaluate import list_records
    from ecgedge.train.data import data_root

    db_dir = data_root(data_dir) / DATABASE
    return [str(db_dir / r) for r in list_records(db_dir)]


def signal_chunks(paths, seconds, lead=("MLII",)):
    """One-second chunks of the records' concatenation, cycling through them, ``seconds`` in all.

    Yields (chunk ndarray (<= fs,) float64 mV, fs Hz); one record is in memory at a time.
    """
    from ecgedge.device.wfdb_reader import read_signal

    needed = None
    for path in itertools.cycle(paths):
        signal, fs, _ = read_signal(path, list(lead))
        needed = int(round(seconds * fs)) if needed is None else needed
        part = signal[:needed]
        for start in range(0, len(part), int(fs)):
            yield part[start:start + int(fs)], fs
        needed -= len(part)
        if needed <= 0:
            return


def stream_cost(bundle, paths, seconds, rhythm_head=True):
    """Stream ``seconds`` of concatenated records through the runtime; measure this process.

    ``rhythm_head=False`` decides with the bundle's model alone (``Classifier(rhythm_head=False)``).

    Returns
    -------
    dict: seconds (signal), windows, classified, wall_s, cpu_s, rss_before_mib (after loading the
    model), peak_rss_mib, rhythm_head (whether the bundle's rhythm head took part).
    """
    from ecgedge.device.benchmark import peak_rss_mib
    from ecgedge.device.runtime import Classifier, StreamingClassifier

    classifier = Classifier(bundle, num_threads=1, rhythm_head=rhythm_head)
    before = peak_rss_mib()
    stream, windows, classified = None, 0, 0
    wall, cpu = time.perf_counter(), time.process_time()
    for chunk, fs in signal_chunks(paths, seconds):
        stream = stream or StreamingClassifier(classifier, fs)
        for result in stream.push(chunk):
            windows += 1
            classified += result.label is not None
    return {"seconds": seconds, "windows": windows, "classified": classified,
            "wall_s": round(time.perf_counter() - wall, 4), "cpu_s": round(time.process_time() - cpu, 4),
            "rss_before_mib": before, "peak_rss_mib": peak_rss_mib(), "rhythm_head": classifier.trees is not None}


def child_main():
    """Entry of the measuring subprocess: JSON arguments on argv[1], JSON result on stdout."""
    args = json.loads(sys.argv[1])
    print(json.dumps(stream_cost(args["bundle"], args["paths"], args["seconds"], args["rhythm_head"])))


def measure(bundle, paths, seconds, rhythm_head=True):
    """:func:`stream_cost` in a fresh single-threaded process (dict)."""
    code = "from ecgedge.benchmarks.bench_scaling import child_main; child_main()"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = json.dumps({"bundle": str(bundle), "paths": paths, "seconds": seconds, "rhythm_head": rhythm_head})
    done = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise EcgEdgeError(f"the scaling measurement of {seconds:g} s failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def linear_fit(x, y):
    """Least-squares line y = slope * x + intercept and its R^2 (dict)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = np.sum((y - y.mean()) ** 2)
    return {"slope": float(slope), "intercept": float(intercept),
            "r2": float(1 - np.sum(residual ** 2) / total) if total > 0 else 1.0}


def measure_scaling(bundle, lengths_s=DEFAULT_LENGTHS_S, data_dir=None, rhythm_head=True):
    """Measure every length; fit time against length; report memory spread and real-time factors.

    ``rhythm_head=False`` times the bundle's model alone, without its rhythm head.

    Returns
    -------
    dict: bundle, rhythm_head (whether a rhythm head took part), records, points (list of
    :func:`stream_cost` dicts plus real_time_factor), fit {time_vs_length (seconds of processing
    per second of signal), peak_rss_spread_mib, max_real_time_factor, seconds_for_24h
    (extrapolated from the fit)}.
    """
    if bundle is None:
        raise EcgEdgeError("no int8 bundle: run 'ecgedge pipeline' first or pass --bundle")
    paths = record_paths(data_dir)
    points = []
    for seconds in sorted(lengths_s):
        point = measure(bundle, paths, float(seconds), rhythm_head)
        point["real_time_factor"] = point["wall_s"] / seconds
        points.append(point)
    fit = linear_fit([p["seconds"] for p in points], [p["wall_s"] for p in points]) if len(points) > 1 else None
    peaks = [p["peak_rss_mib"] for p in points if p["peak_rss_mib"] is not None]
    return {
        "bundle": str(bundle), "rhythm_head": all(p["rhythm_head"] for p in points),
        "records": [os.path.basename(p) for p in paths], "points": points,
        "fit": {"time_vs_length": fit, "peak_rss_spread_mib": round(max(peaks) - min(peaks), 2) if peaks else None,
                "max_real_time_factor": max(p["real_time_factor"] for p in points),
                "seconds_for_24h": None if fit is None else round(fit["slope"] * 86400 + fit["intercept"], 2)},
    }


def plot(path, results):
    """Processing time and peak memory against signal length (log x)."""
    from ecgedge.train.report import _pyplot

    plt = _pyplot()
    pts = results["points"]
    hours = np.array([p["seconds"] for p in pts]) / 3600
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    ax_t.loglog(hours, [p["wall_s"] for p in pts], "o-", label="wall")
    ax_t.loglog(hours, [p["cpu_s"] for p in pts], "s--", label="CPU")
    ax_t.set(xlabel="signal length (h)", ylabel="processing time (s)", title="time (linear = slope 1)")
    ax_m.semilogx(hours, [p["peak_rss_mib"] for p in pts], "o-", label="peak RSS")
    ax_m.semilogx(hours, [p["rss_before_mib"] for p in pts], "s--", label="after loading the model")
    ax_m.set(xlabel="signal length (h)", ylabel="MiB", title="memory (flat = streaming)")
    for ax in (ax_t, ax_m):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
