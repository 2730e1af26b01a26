"""The label does not depend on DC offset, gain or units: the same real records, shifted and
scaled as other recorders would send them, get the same labels (ecgedge.device.dsp centres
before resampling; every feature reads a standardised or scale-free signal)."""

import numpy as np
import pytest

from ecgedge.device.wfdb_reader import choose_signal, read_digital, read_header, to_physical

RECORDS = [("mitdb", "203"), ("mitdb", "107"), ("cinc2017", "A00004"), ("vfdb", "424")]


def windows_of(physionet_dir, db, record, window_s, n=24, hop_s=None):
    """Up to ``n`` raw windows of a real record, in physical units and in raw ADC counts: spread
    over the record, or one after another ``hop_s`` apart from its start (then with their starts)."""
    path = physionet_dir / db / record
    header = read_header(path)
    channel = choose_signal(header, ["MLII", "ECG"], "first")
    digital = read_digital(path, header)
    physical = np.nan_to_num(to_physical(digital, header)[:, channel])
    counts = digital[:, channel].astype(np.float64)
    length = int(round(window_s * header.fs))
    if hop_s is None:
        starts = np.linspace(0, len(physical) - length, n).astype(int)
    else:
        starts = np.arange(0, len(physical) - length + 1, int(round(hop_s * header.fs)))[:n]
    out = header.fs, np.stack([physical[s:s + length] for s in starts]), np.stack([counts[s:s + length] for s in starts])
    return out if hop_s is None else (*out, starts / header.fs)


@pytest.mark.parametrize("db,record", RECORDS)
def test_same_labels_in_any_units_and_offset(rhythm_bundle, physionet_dir, db, record):
    from ecgedge.device.runtime import Classifier

    clf = Classifier(rhythm_bundle)
    # One after another: each window's history (the rhythm head's context) is the windows before it.
    fs, mv, counts, starts_s = windows_of(physionet_dir, db, record, clf.window_s, hop_s=clf.hop_s)
    assert clf.context_s > 0 and len(starts_s) >= 4
    reference = clf.classify_windows(mv, fs, starts_s)
    labels = [r.label for r in reference]
    variants = {"+20 mV": mv + 20.0, "+1000 mV": mv + 1000.0, "microvolts": mv * 1000.0,
                "ADC counts": counts, "inverted gain x0.01 - 5": mv * 0.01 - 5.0}
    for name, x in variants.items():
        results = clf.classify_windows(x, fs, starts_s)
        assert [r.label for r in results] == labels, name
        for a, b in zip(results, reference):
            if a.probs is not None:
                np.testing.assert_allclose(a.probs, b.probs, atol=2e-3, err_msg=name)


def test_features_and_image_are_offset_and_gain_free(physionet_dir):
    from ecgedge.device.dsp import window_image
    from ecgedge.device.rhythm import window_rhythm_features
    from ecgedge.train.tasks import load_task

    cfg = load_task("multidb-rhythm5").spectrogram
    fs, mv, _, starts_s = windows_of(physionet_dir, "cinc2017", "A00004", cfg.window_s, n=5, hop_s=5.0)
    signal = np.concatenate([mv[0]] + [x[-int(5 * fs):] for x in mv[1:]])
    for x, start in zip(mv, (starts_s * fs).astype(int)):
        history = signal[:start]  # the context features read it
        ref_image, ref_features = window_image(x, fs, cfg), window_rhythm_features(x, fs, cfg, history=history)
        for a, b in ((1.0, 1000.0), (200.0, -1024.0)):
            np.testing.assert_allclose(window_image(a * x + b, fs, cfg), ref_image, atol=1e-4)
            np.testing.assert_allclose(window_rhythm_features(a * x + b, fs, cfg, history=a * history + b), ref_features,
                                       rtol=1e-6, atol=1e-9)
    assert not np.array_equal(ref_features, window_rhythm_features(x, fs, cfg))  # the last window's history counts


@pytest.mark.parametrize("rate", [125.0, 200.0, 500.0])
def test_features_read_alike_from_recorders_of_other_rates(physionet_dir, rate):
    """The same real windows as a 125, 200 or 500 Hz recorder gives them: every rhythm feature
    within 5 % (median over windows) of the original's, because the model's band (40 Hz) lies
    inside every recorder's. Without the low-pass the sharpness features move by 20-30 %."""
    from dataclasses import replace

    from ecgedge.device.dsp import resample_poly, resample_ratio
    from ecgedge.device.rhythm import FEATURE_NAMES, window_rhythm_features
    from ecgedge.train.tasks import load_task

    cfg = load_task("multidb-rhythm5").spectrogram
    assert cfg.lowpass_hz == 40.0
    changes = {"low-passed": [], "full band": []}
    for db, record in RECORDS:
        fs, mv, _ = windows_of(physionet_dir, db, record, cfg.window_s, n=4)
        for x in mv:
            y = resample_poly(x - x.mean(), *resample_ratio(fs, rate))
            for name, c in (("low-passed", cfg), ("full band", replace(cfg, lowpass_hz=None))):
                a, b = window_rhythm_features(x, fs, c), window_rhythm_features(y, rate, c)
                changes[name].append(np.abs(a - b) / (np.abs(a) + 1e-3))
    low_passed = np.nanmedian(changes["low-passed"], axis=0)
    worst = int(np.argmax(low_passed))
    assert low_passed[worst] < 0.05, FEATURE_NAMES[worst]
    assert np.nanmax(np.nanmedian(changes["full band"], axis=0)) > 2 * low_passed[worst]
