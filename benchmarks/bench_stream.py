"""A long stream through standard input: does ``ecgedge device run --input -`` keep its memory flat?

A wearable or a Holter gateway pipes samples into the device for days, under a service that
restarts it when it dies. This benchmark writes ``hours`` of real MIT-BIH ECG (the records
concatenated, cycling, one text line per sample, as ``--format text`` reads it) into the stdin
of a ``ecgedge device run`` subprocess and samples that process's resident memory (VmRSS from
``/proc/PID/status``) as the stream goes on. Reported: RSS after the first hour of signal
(model loaded, buffers warm), at the end, the growth between them, and the time taken.
"""

import itertools
import os
import subprocess
import sys
import threading
import time

import numpy as np

from ecgedge.device.errors import EcgEdgeError


def _rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _text_blocks(paths, hours, lead=("MLII",)):
    """(bytes of one second of text lines, fs) for ``hours`` of the records' concatenation."""
    from ecgedge.device.wfdb_reader import read_signal

    left = None
    for path in itertools.cycle(paths):
        signal, fs, _ = read_signal(path, list(lead))
        left = int(round(hours * 3600 * fs)) if left is None else left
        signal = np.nan_to_num(signal[:left])
        step = int(fs)
        for start in range(0, len(signal), step):
            yield ("\n".join(f"{v:.3f}" for v in signal[start:start + step]) + "\n").encode(), fs
        left -= len(signal)
        if left <= 0:
            return


def measure_stream_memory(bundle, record_paths, hours=24.0, sample_every_s=2.0):
    """Stream ``hours`` of ECG into ``ecgedge device run --input - --format text``; sample its RSS.

    Returns
    -------
    dict: hours, windows (lines of output), rss_mib [(signal hours, MiB)], rss_after_first_hour_mib,
    rss_end_mib, growth_mib, wall_s.
    """
    if not record_paths:
        raise EcgEdgeError("the stream benchmark needs MIT-BIH records: pass --data or set ECGEDGE_DATA")
    blocks = _text_blocks(record_paths, hours)
    first, fs = next(blocks)
    cmd = [sys.executable, "-c", "from ecgedge.cli import main; main()", "device", "run", "--bundle", str(bundle), "--input", "-",
           "--fs", f"{fs:g}", "--format", "text", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    lines = [0]

    def count_output():
        for _ in proc.stdout:
            lines[0] += 1

    reader = threading.Thread(target=count_output, daemon=True)
    reader.start()
    samples, sent_s, last = [], 0.0, 0.0
    started = time.perf_counter()
    try:
        for block, _ in itertools.chain([(first, fs)], blocks):
            proc.stdin.write(block)
            sent_s += 1.0
            if time.perf_counter() - last >= sample_every_s:
                last = time.perf_counter()
                samples.append((round(sent_s / 3600, 4), _rss_mib(proc.pid)))
        proc.stdin.close()
    except BrokenPipeError:
        pass
    samples.append((round(sent_s / 3600, 4), _rss_mib(proc.pid)))
    proc.wait()
    reader.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise EcgEdgeError(f"ecgedge device run ended with status {proc.returncode}: "
                           f"{proc.stderr.read().decode(errors='replace').strip()[-300:]}")
    warm = [m for h, m in samples if m is not None and h >= min(1.0, hours / 2)]
    end = [m for _, m in samples if m is not None]
    return {"hours": hours, "fs": fs, "windows": lines[0], "rss_mib": samples,
            "rss_after_first_hour_mib": warm[0] if warm else None, "rss_end_mib": end[-1] if end else None,
            "growth_mib": (end[-1] - warm[0]) if warm and end else None, "wall_s": round(wall, 1)}


def summary(results):
    return (f"{results['hours']:g} h through stdin ({results['windows']} windows) in {results['wall_s']} s: RSS "
            f"{results['rss_after_first_hour_mib']:.1f} MiB after the first hour, {results['rss_end_mib']:.1f} MiB at "
            f"the end, growth {results['growth_mib']:+.2f} MiB")


def plot(path, results):
    from ecgedge.train.report import _pyplot

    plt = _pyplot()
    hours, rss = zip(*[(h, m) for h, m in results["rss_mib"] if m is not None])
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(hours, rss)
    ax.set(xlabel="hours of signal streamed", ylabel="RSS (MiB)",
           title=f"ecgedge device run --input -: growth {results['growth_mib']:+.2f} MiB")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
