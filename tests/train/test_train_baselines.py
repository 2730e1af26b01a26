"""RR-interval features on beat sequences with known values, and the shared fold runner."""

import numpy as np
import pytest

from ecgedge.train import baselines
from ecgedge.train.protocols import Fold


def _feature(row, name):
    return row[baselines.RR_FEATURE_NAMES.index(name)]


def test_rr_statistics_of_a_regular_rhythm():
    stats = baselines.rr_statistics(np.full(9, 0.75))
    hr, mean, sd, rmssd, pnn50, cv, nrmssd, mad_ratio, large, span = stats
    assert hr == pytest.approx(80.0)
    assert mean == pytest.approx(0.75)
    assert [sd, rmssd, pnn50, cv, nrmssd, mad_ratio, large] == pytest.approx([0.0] * 7)
    assert span == pytest.approx(1.0)


def test_rr_statistics_of_an_alternating_rhythm():
    # RR 0.6, 1.0, 0.6, 1.0, 0.6: |diff| = 0.4 each time.
    stats = baselines.rr_statistics([0.6, 1.0, 0.6, 1.0, 0.6])
    mean = 3.8 / 5
    sd = np.sqrt(np.mean((np.array([0.6, 1.0, 0.6, 1.0, 0.6]) - mean) ** 2))
    expected = [60 / mean, mean, sd, 0.4, 1.0, sd / mean, 0.4 / mean, 0.4 / 0.6, 1.0, 1.0 / 0.6]
    assert stats == pytest.approx(expected)


def test_rr_statistics_with_too_few_intervals_are_nan():
    assert np.isnan(baselines.rr_statistics([])).all()
    one = baselines.rr_statistics([0.5])
    assert one[:2] == pytest.approx([120.0, 0.5]) and np.isnan(one[2:]).all()


def test_window_rr_features_count_beats_and_families_per_window():
    # Beats every 0.5 s from 0 to 9.5 s; beat 5 (2.5 s) is a PVC, 12 (6.0 s) an APB.
    beat_s = np.arange(20) * 0.5
    symbols = ["N"] * 20
    symbols[5], symbols[12] = "V", "A"
    # Non-beat annotations ("+" rhythm change, "~" noise) are ignored.
    beat_s = np.append(beat_s, [1.25, 7.75])
    symbols += ["+", "~"]
    order = np.argsort(beat_s, kind="stable")
    features = baselines.window_rr_features(beat_s[order], np.array(symbols)[order], [0.0, 5.0], 5.0)
    assert features.shape == (2, len(baselines.RR_FEATURE_NAMES))
    first, second = features
    assert _feature(first, "n_beats") == 10 and _feature(second, "n_beats") == 10
    assert _feature(first, "mean_rr_s") == pytest.approx(0.5)
    assert _feature(first, "heart_rate_bpm") == pytest.approx(120.0)
    assert _feature(first, "frac_V") == pytest.approx(0.1) and _feature(first, "frac_S") == 0.0
    assert _feature(second, "frac_S") == pytest.approx(0.1) and _feature(second, "frac_V") == 0.0
    assert _feature(first, "frac_ectopic") == pytest.approx(0.1)
    assert _feature(first, "frac_N") == pytest.approx(0.9)


def test_window_without_beats_gives_nan_features():
    features = baselines.window_rr_features(np.array([0.1, 0.9]), ["N", "N"], [5.0], 2.0)
    assert _feature(features[0], "n_beats") == 0
    assert np.isnan(features[0][1:]).all()


def test_predict_folds_uses_exactly_the_given_folds():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 100)
    x = rng.normal(size=(300, 3)) + y[:, None] * 3.0
    perm = rng.permutation(300)
    folds = [Fold(0, np.sort(perm[:150]), np.sort(perm[150:200]), np.sort(perm[200:])),
             Fold(1, np.sort(perm[150:]), np.sort(perm[:50]), np.sort(perm[50:150]))]
    for make in (baselines.svm_classifier, baselines.rr_classifier):
        results = baselines.predict_folds(make, x, y, folds, seed=0)
        assert [r["test"] for r in results] == [f.test.tolist() for f in folds]
        assert [r["y_true"] for r in results] == [y[f.test].tolist() for f in folds]
        # Well-separated classes: both classifiers get most test windows right.
        correct = np.mean(np.concatenate([np.equal(r["y_true"], r["y_pred"]) for r in results]))
        assert correct > 0.9
