"""Non-ECG input is refused, never called a rhythm (ecgedge.device.quality, through the runtime)."""

import numpy as np
import pytest

from ecgedge.device import quality
from ecgedge.device.quality import non_ecg_signals


@pytest.mark.parametrize("fs", [125.0, 250.0, 360.0])
def test_non_ecg_is_refused_by_the_gates(fs):
    for name, x in non_ecg_signals(fs).items():
        if name == "flat line with a spike":
            continue  # the flat-line check of the runtime refuses it (below)
        assert quality.not_ecg(x, fs) is not None, name


@pytest.mark.parametrize("fs", [100.0, 128.0, 200.0, 300.0, 500.0, 1000.0])
@pytest.mark.parametrize("steps", ["gaussian", "uniform", "integer"])
def test_random_walks_are_refused_at_any_rate_and_scale(fs, steps):
    rng = np.random.default_rng(int(fs))
    n = int(10 * fs)
    for _ in range(10):
        step = {"gaussian": rng.standard_normal(n), "uniform": rng.uniform(-1, 1, n),
                "integer": rng.integers(-3, 4, n).astype(float)}[steps]
        walk = np.cumsum(step) * rng.uniform(1e-3, 1e3) + rng.uniform(-1e3, 1e3)
        assert quality.not_ecg(walk, fs) is not None


def test_welch_spectrum_is_scipys():
    from scipy.signal import welch

    x = np.random.default_rng(0).standard_normal(2500).cumsum()
    f, p = quality.welch_spectrum(x, 250.0)
    f_ref, p_ref = welch(x, 250.0, nperseg=500)
    assert np.allclose(f, f_ref)
    inner = p[1:-1] / p_ref[1:-1]  # scipy doubles the one-sided bins but DC and Nyquist
    assert np.allclose(inner, inner[0])


def test_power_law_fit_tells_a_walk_from_ecg(physionet_dir):
    from ecgedge.device.wfdb_reader import read_signal

    x, fs = read_signal(physionet_dir / "mitdb" / "100")[:2]
    residual, slope, flatness = quality.power_law_fit(np.asarray(x[:3600], dtype=float), fs)
    assert residual > 2 * quality.MAX_POWER_LAW_RESIDUAL or flatness < quality.MIN_DIFF_FLATNESS
    walk = np.cumsum(np.random.default_rng(1).standard_normal(3600))
    residual, slope, flatness = quality.power_law_fit(walk, 360.0)
    assert residual < quality.MAX_POWER_LAW_RESIDUAL and -2.3 < slope < -1.7 and flatness > 0.9


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
