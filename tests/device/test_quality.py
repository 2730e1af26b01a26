"""Non-ECG input is refused, never called a rhythm (ecgedge.device.quality, through the runtime)."""

import numpy as np
import pytest

from ecgedge.device import quality
from ecgedge.device.quality import non_ecg_signals

PASSES_THE_GATES = "random walk"  # spectrally like a slow ECG: left to the model (README, Results)


@pytest.mark.parametrize("fs", [125.0, 250.0, 360.0])
def test_non_ecg_is_refused_by_the_gates(fs):
    for name, x in non_ecg_signals(fs).items():
        if name in ("flat line with a spike", PASSES_THE_GATES):
            continue  # the flat-line check of the runtime refuses the first (below)
        assert quality.not_ecg(x, fs) is not None, name
    assert quality.not_ecg(non_ecg_signals(fs)[PASSES_THE_GATES], fs) is None  # the known gap


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
        if name == PASSES_THE_GATES:
            continue
        result = clf.classify_window(x, fs)
        assert result.label is None and result.probs is None, name
        assert result.reason.startswith(("not ECG", "flat line", "clipping")), (name, result.reason)
