"""DSP speed: ``window_image`` of this tree against the committed one (``git show REV:device/dsp.py``).

Usage: python -m ecgedge.benchmarks.dsp_speed [--rev HEAD] [--task mitdb-rhythm4] [--n 400]
       [--out benchmarks/results/dsp_speed.json]   (or: python benchmarks/dsp_speed.py ...)

Seeded 10 s windows at 360 Hz (MIT-BIH's rate) with the task's SpectrogramConfig (``--task ''``:
the SpectrogramConfig defaults); warm-up
first, then the two implementations alternate call by call so machine load hits both alike;
the clock is this thread's CPU time (time.thread_time), so waiting for a shared core does not count.
Reports min, median and p90 milliseconds, the median ratio, the largest image difference, and
the machine, versions and command.
"""

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ecgedge.device import dsp
from ecgedge.device.benchmark import synthetic_ecg

REPO = Path(__file__).resolve().parents[1]


def committed_dsp(rev):
    """The dsp module as of git revision ``rev``, imported from a temporary file."""
    source = subprocess.run(["git", "show", f"{rev}:device/dsp.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "dsp_committed.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("dsp_committed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stats(ms):
    ms = np.asarray(ms)
    return {"min_ms": round(float(ms.min()), 4), "median_ms": round(float(np.median(ms)), 4),
            "p90_ms": round(float(np.percentile(ms, 90)), 4)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--task", default="mitdb-rhythm4", help="task whose spectrogram is timed ('': defaults)")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "dsp_speed.json")
    args = parser.parse_args()
    old = committed_dsp(args.rev)
    if args.task:
        from ecgedge.train.tasks import load_task

        cfg = load_task(args.task).spectrogram
    else:
        cfg = dsp.SpectrogramConfig()
    fs = 360.0
    length = dsp.window_length(fs, cfg)
    signal = synthetic_ecg(length * 8, fs, seed=0)
    windows = [signal[i * length // 2:i * length // 2 + length] for i in range(15)]
    old_cfg = old.SpectrogramConfig.from_dict(cfg.to_dict())
    impls = {"committed": lambda w: old.window_image(w, fs, old_cfg),
             "this_tree": lambda w: dsp.window_image(w, fs, cfg)}
    diff = max(float(np.abs(impls["committed"](w) - impls["this_tree"](w)).max()) for w in windows)
    times = {k: [] for k in impls}
    for i in range(args.n + 50):
        for name, fn in impls.items():
            began = time.thread_time()
            fn(windows[i % len(windows)])
            if i >= 50:
                times[name].append((time.thread_time() - began) * 1e3)
    result = {name: stats(ms) for name, ms in times.items()}
    result["median_ratio_committed_over_this"] = round(result["committed"]["median_ms"] / result["this_tree"]["median_ms"], 3)
    result["max_abs_image_difference"] = diff
    result["config"] = cfg.to_dict()
    result["environment"] = {"machine": platform.machine(), "processor": platform.processor(),
                             "python": platform.python_version(), "numpy": np.__version__,
                             "command": " ".join([Path(sys.executable).name, *sys.argv]), "rev": args.rev}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
