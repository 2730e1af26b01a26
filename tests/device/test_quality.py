"""Non-ECG input is refused, never called a rhythm (ecgedge.device.quality, through the runtime)."""

import numpy as np
import pytest

from ecgedge.device import quality


def non_ecg_signals(fs, seconds=10.0, seed=0):
    """The signals a careless or hostile user feeds a wearable, at ``fs`` Hz."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fs))
    t = np.arange(n) / fs
    flat_spike = np.zeros(n)
    flat_spike[n // 2] = 5.0
    return {
        "white noise": rng.standard_normal(n),
        "mains hum 50 Hz": np.sin(2 * np.pi * 50 * t),
        "mains hum 60 Hz": 0.3 * np.sin(2 * np.pi * 60 * t) + 2.0,
        "sawtooth": (1.2 * t) % 1.0,
        "square wave": np.sign(np.sin(2 * np.pi * 1.1 * t)),
        "flat line with a spike": flat_spike,
        "muscle bursts": rng.standard_normal(n) * (np.sin(2 * np.pi * 0.5 * t) > 0.3),
    }


@pytest.mark.parametrize("fs", [125.0, 250.0, 360.0])
def test_non_ecg_is_refused_by_the_gates(fs):
    for name, x in non_ecg_signals(fs).items():
        if name == "flat line with a spike":
            continue  # the flat-line check of the runtime refuses it (below)
        assert quality.not_ecg(x, fs) is not None, name


def test_real_ecg_passes_the_gates(physionet_dir):
    """Every 10 s window of 8 real records (sinus, AF, paced, VF, noisy CinC) passes."""
    from ecgedge.device.wfdb_reader import read_signal

    refused = []
    for db, record in [("mitdb", "100"), ("mitdb", "203"), ("mitdb", "107"), ("vfdb", "424"), ("cudb", "cu01"),
                       ("cinc2017", "A00004"), ("cinc2017", "A00022"), ("cinc2017", "A00001")]:
        x, fs = read_signal(physionet_dir / db / record)[:2]
        x = np.nan_to_num(np.asarray(x, dtype=np.float64))
        n = int(10 * fs)
        for start in range(0, len(x) - n + 1, n):
            w = x[start:start + n]
            if np.ptp(w) > 0 and quality.not_ecg(w, fs) is not None:
                refused.append((db, record, start // n, quality.not_ecg(w, fs)))
    assert len(refused) <= 2, refused  # of about 700 windows


def test_runtime_gives_non_ecg_a_null_label(tiny_bundle):
    from ecgedge.device.runtime import Classifier

    clf = Classifier(tiny_bundle)
    fs = 360.0
    for name, x in non_ecg_signals(fs, seconds=tiny_bundle.window_s).items():
        result = clf.classify_window(x, fs)
        assert result.label is None and result.probs is None, name
        assert result.reason.startswith(("not ECG", "flat line", "clipping")), (name, result.reason)
