"""The device's rhythm features and its numpy trees."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecgedge.device import rhythm
from ecgedge.device.errors import EcgEdgeError
from ecgedge.device.trees import Trees, load_trees

FS = 128.0


def synthetic_ecg(beat_s, fs=FS, seconds=10.0, wide=()):
    """A standardised trace with a narrow QRS-like spike at each beat time; beats at ``wide`` are
    larger, inverted and wide, with a steep onset and a slow return as ventricular beats have."""
    t = np.arange(int(seconds * fs)) / fs
    x = np.zeros_like(t)
    for i, b in enumerate(beat_s):
        if i in wide:
            x -= 1.6 * np.exp(-0.5 * ((t - b) / np.where(t < b, 0.04, 0.10)) ** 2)
        else:
            x += np.exp(-0.5 * ((t - b) / 0.04) ** 2)
    x += 0.01 * np.random.default_rng(0).normal(size=t.size)
    return (x - x.mean()) / x.std()


def test_detector_finds_regular_beats_and_the_rr_statistics_follow():
    beats = np.arange(0.5, 10.0, 0.8)  # 75 bpm
    z = synthetic_ecg(beats)
    found = rhythm.detect_beats(z, FS) / FS
    assert len(found) == len(beats)
    assert np.abs(found - beats).max() < 0.05
    stats = dict(zip(rhythm.RR_STAT_NAMES, rhythm.rr_statistics(np.diff(found))))
    assert stats["heart_rate_bpm"] == pytest.approx(75.0, rel=0.02)
    assert stats["pnn50"] == 0.0 and stats["rr_range_ratio"] < 1.05


def test_a_tall_t_wave_and_an_artifact_second_do_not_move_the_beats():
    """Detectors 2 and 3 (new heads) find each QRS once, under tall T waves and after a large
    artifact in the first second; detector 1 (older bundles' heads) counts the T waves as beats too."""
    beats = np.arange(0.5, 10.0, 0.9)
    t = np.arange(int(10.0 * FS)) / FS
    x = sum(np.exp(-0.5 * ((t - b) / 0.015) ** 2) + 0.9 * np.exp(-0.5 * ((t - b - 0.3) / 0.06) ** 2) for b in beats)
    x = x + 0.01 * np.random.default_rng(0).normal(size=t.size)
    for detector in (2, 3):
        found = rhythm.detect_beats((x - x.mean()) / x.std(), FS, detector) / FS
        assert len(found) == len(beats) and np.abs(found - beats).max() < 0.05
    assert len(rhythm.detect_beats((x - x.mean()) / x.std(), FS, detector=1)) > len(beats)
    x[:int(0.8 * FS)] += 8.0 * np.sin(np.pi * t[:int(0.8 * FS)] / 0.8) ** 8  # electrode contact
    for detector in (2, 3):
        found = rhythm.detect_beats((x - x.mean()) / x.std(), FS, detector) / FS
        assert np.abs(found[-len(beats) + 1:] - beats[1:]).max() < 0.05


def _detector_se_ppv(physionet_dir, record):
    """{condition: {detector: (Se, PPV)}} of every detector on a whole MIT-BIH record's 10-s
    windows (+-100 ms, ``ecgedge bench beats``), clean and with the Noise Stress Test's muscle
    artifact at 0 dB SNR."""
    from ecgedge.benchmarks.bench_beats import measure_beats

    if not (physionet_dir / "nstdb" / "ma.hea").is_file():
        pytest.skip("nstdb noise records not found")
    result = measure_beats(physionet_dir, [record], snrs_db=(0,), progress=False)
    return {condition: {int(d): (v["se"], v["ppv"]) for d, v in scores.items()}
            for condition, scores in (("clean", result["clean"]), ("muscle", result["noise"]["ma"]["0"]))}


@pytest.mark.parametrize("record, detector_1, detector_2, detector_3", [
    ("113", (0.99, 0.50), (0.99, 0.99), (0.99, 0.99)),  # tall T waves: detector 1 counts them
    ("117", (0.99, 0.50), (0.99, 0.99), (0.99, 0.99)),
    ("203", (0.80, 0.99), (0.95, 0.99), (0.92, 0.99)),  # atrial fibrillation with beats of changing size
    ("228", (0.60, 0.95), (0.92, 0.98), (0.92, 0.99)),
])
def test_detectors_against_the_reference_beats_of_real_records(physionet_dir, record, detector_1, detector_2,
                                                               detector_3):
    found = _detector_se_ppv(physionet_dir, record)["clean"]
    for detector, (least_se, least_ppv) in zip((1, 2, 3), (detector_1, detector_2, detector_3)):
        se, ppv = found[detector]
        assert se >= least_se and ppv >= least_ppv, (detector, se, ppv)
    se, ppv = found[1]
    assert se < detector_2[0] or ppv < detector_2[1]  # what detector 2 mends


@pytest.mark.parametrize("record", ["113", "119", "208"])
def test_detector_3_keeps_its_beats_in_muscle_noise(physionet_dir, record):
    """Muscle artifact at 0 dB SNR: detector 2's +-8 ms slope passes its 20-40 Hz and counts extra
    beats; detector 3's +-16 ms slope does not (measured: PPV 0.91 / 0.87 / 0.92 -> 0.98 / 0.96 / 0.98)."""
    found = _detector_se_ppv(physionet_dir, record)["muscle"]
    (se_2, ppv_2), (se_3, ppv_3) = found[2], found[3]
    assert se_3 >= 0.97 and ppv_3 >= 0.95, found
    assert ppv_3 > ppv_2 + 0.02, found


def test_early_wide_beats_count_as_early_and_unlike_the_medoid():
    """Every third beat early and wide, as ventricular ectopic beats are (trigeminy: RR 0.8 s, the
    ectopic beat 0.5 s after a normal one, a 1.1 s pause after it); and bigeminy, every other."""
    def shapes(beats, wide):
        z = synthetic_ecg(beats, wide=wide)
        return dict(zip(rhythm.BEAT_SHAPE_NAMES, rhythm.beat_shape_features(z, rhythm.detect_beats(z, FS), FS)))

    beats = np.cumsum([0.5] + [0.8, 0.5, 1.1] * 4)[:12]
    f = shapes(beats, wide=range(2, 12, 3))
    assert f["frac_unlike_medoid"] == pytest.approx(4 / 12)
    assert f["frac_early_unlike"] == pytest.approx(4 / 12) and f["frac_early_like"] == 0.0
    beats = np.cumsum([0.5] + [0.55, 1.05] * 6)[:12]
    f = shapes(beats, wide=range(1, 12, 2))
    assert f["frac_unlike_medoid"] == pytest.approx(0.5)
    assert f["rr_alternation"] > 0.9
    normal = shapes(np.arange(0.5, 10, 0.8), wide=())
    assert normal["frac_unlike_medoid"] == 0.0 and normal["frac_early"] == 0.0
    assert len(f) == 22 and len(rhythm.FEATURE_NAMES) == 69


def test_rr_irregularity_tells_random_intervals_from_ectopic_beats():
    names = list(rhythm.IRREGULARITY_NAMES)
    rng = np.random.default_rng(0)
    af = rng.uniform(0.45, 1.05, 14)  # irregularly irregular
    sinus = np.full(14, 0.8)
    sinus[[4, 9]] = 0.55  # two premature beats ...
    sinus[[5, 10]] = 1.05  # ... each followed by its compensatory pause
    f_af, f_sinus = (dict(zip(names, rhythm.rr_irregularity(rr))) for rr in (af, sinus))
    assert f_af["rr_histogram_entropy"] > f_sinus["rr_histogram_entropy"] + 0.5
    assert f_af["rr_cosen"] > f_sinus["rr_cosen"]
    assert f_af["rr_trimmed_irregularity"] > 0.2 > f_sinus["rr_trimmed_irregularity"]
    bigeminy = dict(zip(names, rhythm.rr_irregularity(np.tile([0.55, 1.05], 7))))
    assert bigeminy["rr_pair_sum_ratio"] == 0.0 < f_af["rr_pair_sum_ratio"]  # alternation: lag-2 equal
    # Sample entropy against its definition: -ln(A / B) over pairs i < j of template length 1 and 2.
    rr, r = af, rhythm.SAMPEN_TOLERANCE_S
    pairs = [(i, j) for i in range(len(rr) - 1) for j in range(i + 1, len(rr) - 1)]
    b = sum(abs(rr[i] - rr[j]) <= r for i, j in pairs)
    a = sum(abs(rr[i] - rr[j]) <= r and abs(rr[i + 1] - rr[j + 1]) <= r for i, j in pairs)
    assert f_af["rr_sample_entropy"] == pytest.approx(-np.log(a / b))
    assert np.isnan(rhythm.rr_irregularity(np.array([0.8, 0.8, 0.8]))).all()


def with_atria(beat_s, p_wave, seed=0, fs=FS, seconds=10.0, t_wave=0.0):
    """A standardised trace with a QRS at each beat time (12 ms wide Gaussians, as narrow as a
    real one) and either a P wave 160 ms before each (``p_wave``) or, all along, fibrillatory
    waves: a 6 Hz oscillation whose phase drifts at random; ``t_wave``: the height of a T wave
    (80 ms wide) 300 ms after each beat."""
    t = np.arange(int(seconds * fs)) / fs
    rng = np.random.default_rng(seed)
    x = 0.01 * rng.normal(size=t.size)
    for b in beat_s:
        x += np.exp(-0.5 * ((t - b) / 0.012) ** 2) + t_wave * np.exp(-0.5 * ((t - b - 0.3) / 0.08) ** 2)
        if p_wave:
            x += 0.15 * np.exp(-0.5 * ((t - b + 0.16) / 0.025) ** 2)
    if not p_wave:
        x += 0.1 * np.sin(2 * np.pi * 6.0 * t + np.cumsum(rng.normal(0, 0.3, t.size)) / np.sqrt(fs))
    return (x - x.mean()) / x.std()


def test_atrial_features_tell_p_waves_from_fibrillatory_waves_at_the_same_rr():
    irregular = np.cumsum(np.random.default_rng(1).uniform(0.45, 1.1, 16))  # AF-like RR, 10 s
    beats = irregular[irregular < 9.7]
    sin = with_atria(beats, p_wave=True)
    sinus = rhythm.atrial_features(sin, rhythm.detect_beats(sin, FS), FS)
    fib = with_atria(beats, p_wave=False)
    fibrillation = rhythm.atrial_features(fib, rhythm.detect_beats(fib, FS), FS)
    assert sinus.shape == (len(rhythm.ATRIAL_NAMES) + len(rhythm.DETRENDED_ATRIAL_NAMES),)
    assert (sinus > 0.8).all(), sinus  # detrended too
    assert fibrillation[0] < 0.5 and fibrillation[1] < 0.3 and (fibrillation[2:] < 0.3).all(), fibrillation
    # Too few beats: undefined, not an error.
    assert np.isnan(rhythm.atrial_features(fib, np.array([300, 500]), FS)).all()


def test_detrended_atrial_features_ignore_the_t_wave_tail_of_fast_fibrillation():
    # Fibrillation at 86-120 bpm: each atrial stretch (250-60 ms before a beat) starts in the
    # falling tail of the T wave before it, alike from beat to beat; less its line, it is not.
    fast = np.cumsum(np.random.default_rng(2).uniform(0.5, 0.7, 30))
    fib = with_atria(fast[fast < 9.7], p_wave=False, t_wave=0.5)
    f = dict(zip(rhythm.ATRIAL_NAMES + rhythm.DETRENDED_ATRIAL_NAMES,
                 rhythm.atrial_features(fib, rhythm.detect_beats(fib, FS), FS)))
    assert f["p_correlation"] > 0.5 and f["p_consistency"] > 0.5, f
    assert f["p_correlation_detrended"] < 0.2 and f["p_consistency_detrended"] < 0.4, f


def test_detrended_atrial_features_tell_cinc_af_from_sinus_better_on_real_recordings(physionet_dir):
    """CinC 2017 (AliveCor), the first 10 s of its first 60 normal and 60 AF recordings: the
    chance that a sinus window's atrial feature is above an AF window's (AUC) rises with the
    detrended stretch (measured: p_consistency 0.80 -> 0.88, p_correlation 0.81 -> 0.88; the same
    on other picks of 30 or 60)."""
    from ecgedge.device.labels import read_reference
    from ecgedge.device.wfdb_reader import read_signal
    from ecgedge.train.tasks import load_task

    folder = physionet_dir / "cinc2017"
    if not (folder / "REFERENCE.csv").is_file():
        pytest.skip("CinC 2017 not found")
    cfg = load_task("multidb-rhythm5").spectrogram
    reference = read_reference(folder / "REFERENCE.csv")
    features = {}
    for label in ("N", "A"):
        rows = []
        for name in [r for r, lab in reference.items() if lab == label][:60]:
            x, fs = read_signal(folder / name)[:2]
            rows.append(rhythm.window_rhythm_features(np.asarray(x, dtype=np.float64)[:int(10 * fs)], fs, cfg))
        features[label] = np.array(rows)

    def auc(name):
        i = rhythm.FEATURE_NAMES.index(name)
        sinus, af = (v[~np.isnan(v)] for v in (features["N"][:, i], features["A"][:, i]))
        return np.mean((sinus[:, None] > af[None, :]) + 0.5 * (sinus[:, None] == af[None, :]))

    for name in rhythm.ATRIAL_NAMES:
        assert auc(f"{name}_detrended") > auc(name) + 0.03, (name, auc(name), auc(f"{name}_detrended"))


@pytest.mark.parametrize("pr_s, rt_s", [(0.16, 0.30), (0.26, 0.40)])
def test_wave_timing_reads_the_p_and_t_waves_of_the_typical_beat(pr_s, rt_s):
    """A P wave ``pr_s`` before each QRS and an inverted T wave ``rt_s`` after: the features
    read both within two samples at 128 Hz (times are from the detected beat, which may lag the
    R peak by a sample), a longer PR (first-degree block) as longer, and
    one ectopic beat with neither wave changes nothing (the typical beat is the median)."""
    beat_s = np.arange(0.6, 9.6, 0.85)
    t = np.arange(int(10.0 * FS)) / FS
    x = 0.01 * np.random.default_rng(2).normal(size=t.size)
    for i, b in enumerate(beat_s):
        x += np.exp(-0.5 * ((t - b) / 0.012) ** 2)
        if i != 5:
            x += 0.15 * np.exp(-0.5 * ((t - b + pr_s) / 0.025) ** 2)
            x -= 0.3 * np.exp(-0.5 * ((t - b - rt_s) / 0.05) ** 2)
    z = (x - x.mean()) / x.std()
    lead, lag = rhythm.wave_timing_features(z, rhythm.detect_beats(z, FS), FS)
    assert abs(lead - pr_s) <= 2.0 / FS and abs(lag - rt_s) <= 2.0 / FS, (lead, lag)
    assert np.isnan(rhythm.wave_timing_features(z, np.array([300, 500]), FS)).all()


def test_wave_timing_on_a_real_record_is_physiological(physionet_dir):
    """MIT-BIH 100 (sinus rhythm, MLII): PR and R-to-T-peak times in their normal ranges."""
    from ecgedge.device.dsp import standardize, to_model_rate
    from ecgedge.device.wfdb_reader import read_signal
    from ecgedge.train.tasks import load_task

    cfg = load_task("multidb-rhythm5").spectrogram
    x, fs = read_signal(physionet_dir / "mitdb" / "100")[:2]
    x, n = np.asarray(x, dtype=np.float64), int(10 * fs)
    for s in range(0, x.size - n, 30 * n):
        z = standardize(to_model_rate(x[s:s + n], fs, cfg))
        lead, lag = rhythm.wave_timing_features(z, rhythm.detect_beats(z, FS), FS)
        assert 0.10 <= lead <= 0.22 and 0.20 <= lag <= 0.40, (lead, lag)


def test_fibrillation_spreads_power_into_4_9_hz_on_real_records(physionet_dir):
    """MIT-BIH: every AF record's median share of 1-40 Hz power in 4-9 Hz is above every sinus
    record's (measured: 0.38-0.41 in 201, 202, 203; 0.24-0.29 in 100, 103)."""
    from ecgedge.device.dsp import standardize, to_model_rate
    from ecgedge.device.wfdb_reader import read_signal
    from ecgedge.train.tasks import load_task

    cfg = load_task("multidb-rhythm5").spectrogram
    share = {}
    for record in ("100", "103", "201", "202", "203"):
        x, fs = read_signal(physionet_dir / "mitdb" / record)[:2]
        x, n = np.asarray(x, dtype=np.float64), int(10 * fs)
        rows = [rhythm.spectrum_features(standardize(to_model_rate(x[s:s + n], fs, cfg)), cfg.fs)
                for s in range(0, x.size - n, 6 * n)]
        share[record] = np.median([r[1] for r in rows])
    assert min(share[r] for r in ("201", "202", "203")) > max(share["100"], share["103"]) + 0.05, share
    assert np.isnan(rhythm.spectrum_features(np.zeros(1280), cfg.fs)).all()


def test_a_head_reads_its_features_by_name():
    assert rhythm.feature_columns(rhythm.FEATURE_NAMES[:35]) == list(range(35))  # a head of 2026-11-24
    assert rhythm.feature_columns(["p_correlation", "heart_rate_bpm"]) == [36, 0]
    with pytest.raises(EcgEdgeError, match=r"\['qt_interval'\] are not computed"):
        rhythm.feature_columns(["heart_rate_bpm", "qt_interval"])


def test_a_flat_window_gives_nan_features_not_an_error():
    from ecgedge.train.tasks import load_task

    cfg = load_task("mitdb-rhythm4").spectrogram
    f = dict(zip(rhythm.FEATURE_NAMES, rhythm.window_rhythm_features(np.zeros(3600), 360.0, cfg)))
    assert len(f) == 69 and f.pop("n_shaped_beats") == 0
    assert np.isnan(list(f.values())).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=400),
       st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4))
def test_quantiles_equal_numpy_percentile_with_ties(values, qs):
    x = np.array(values, dtype=np.float64) / 4  # few distinct values: many ties, like ADC samples
    expected = np.percentile(x, 100 * np.array(qs))
    np.testing.assert_allclose(rhythm._quantiles(x, qs), expected, rtol=0, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=300))
def test_std_is_bit_for_bit_numpy_std(values):
    x = np.array(values, dtype=np.float64)
    assert rhythm._std(x) == np.std(x)  # the trees' thresholds were learnt on np.std's bits


def paced_ecg(fs, spikes, seconds=10.0):
    """A smooth ECG-like trace at ``fs`` in millivolts; with ``spikes``, a pacemaker stimulus
    (one sample, 0.5 mV) 20 ms before each QRS."""
    t = np.arange(int(seconds * fs)) / fs
    x = 0.2 * np.sin(2 * np.pi * 0.3 * t)  # baseline wander
    for b in np.arange(0.5, seconds, 0.8):
        x += 1.2 * np.exp(-0.5 * ((t - b) / 0.03) ** 2) + 0.3 * np.exp(-0.5 * ((t - b - 0.3) / 0.06) ** 2)
        if spikes:
            x[int(round((b - 0.02) * fs))] += 0.5
    return x + 0.005 * np.random.default_rng(0).normal(size=t.size)


def test_pacing_spikes_make_the_window_sharper_in_any_amplitude_unit():
    paced, plain = paced_ecg(360.0, True), paced_ecg(360.0, False)
    f_paced, f_plain = rhythm.sharpness_features(paced), rhythm.sharpness_features(plain)
    assert np.all(f_paced > 2 * f_plain), (f_paced, f_plain)
    np.testing.assert_allclose(rhythm.sharpness_features(1000 * paced - 3), f_paced, rtol=1e-9)
    assert np.isnan(rhythm.sharpness_features(np.full(3600, 2.5))).all()


def test_sharpness_is_measured_at_its_own_rate_whatever_the_input_rate():
    """A 250 Hz input is resampled to SHARPNESS_FS for the sharpness features, and a 360 Hz one
    is used as it is, while the intervals and shapes come from the model rate in both cases."""
    from ecgedge.device.dsp import resample_poly, resample_ratio
    from ecgedge.train.tasks import load_task

    cfg = load_task("mitdb-rhythm4").spectrogram
    at_360, at_250 = paced_ecg(360.0, True), paced_ecg(250.0, True)
    names = list(rhythm.FEATURE_NAMES)
    sharp = rhythm.feature_columns(rhythm.SHARPNESS_NAMES)
    f360 = rhythm.window_rhythm_features(at_360, 360.0, cfg)
    np.testing.assert_array_equal(f360[sharp], rhythm.sharpness_features(at_360))
    f250 = rhythm.window_rhythm_features(at_250, 250.0, cfg)
    upsampled = resample_poly(at_250 - at_250.mean(), *resample_ratio(250.0, rhythm.SHARPNESS_FS))
    np.testing.assert_array_equal(f250[sharp], rhythm.sharpness_features(upsampled))
    assert f360[names.index("heart_rate_bpm")] == pytest.approx(75.0, rel=0.02)
    assert f250[names.index("heart_rate_bpm")] == pytest.approx(75.0, rel=0.02)


def test_combine_is_a_normalised_geometric_mean():
    a = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    b = np.array([[0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    c = rhythm.combine(a, b)
    expected = np.sqrt(a * b) / np.sqrt(a * b).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(c, expected, rtol=1e-9)
    assert c[0].argmax() == 1  # 0.2 * 0.8 beats 0.7 * 0.1
    w = np.array([0.3, 0.25, 0.3])  # the CNN's weight per class
    weighted = rhythm.combine(a, b, w)
    expected = a ** w * b ** (1 - w)
    np.testing.assert_allclose(weighted, expected / expected.sum(axis=1, keepdims=True), rtol=1e-9)
    np.testing.assert_array_equal(rhythm.cnn_weights(["NSR", "AF", "OTHER"]), w)


@pytest.fixture(scope="module")
def fitted_trees(tmp_path_factory):
    from ecgedge.train.rhythm_head import export_trees, fit_rhythm_head, save_trees

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int) + 2 * (x[:, 2] > 1.0).astype(int)
    y = np.minimum(y, 3)
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values go where training sent them
    classifier = fit_rhythm_head(x, y, seed=0)
    path = tmp_path_factory.mktemp("trees") / "rhythm_head.npz"
    save_trees(path, export_trees(classifier, 4))
    return classifier, path, rng


def test_numpy_trees_equal_scikit_learn(fitted_trees):
    classifier, path, rng = fitted_trees
    trees = load_trees(path)
    x = rng.normal(size=(300, 6))
    x[rng.random(x.shape) < 0.15] = np.nan
    np.testing.assert_allclose(trees.predict_proba(x), classifier.predict_proba(x), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(trees.predict_proba(x[0]), classifier.predict_proba(x[:1])[0], rtol=1e-9)
    assert trees.n_classes == 4


def test_exported_trees_carry_nothing_the_walk_does_not_read(fitted_trees):
    from ecgedge.train.rhythm_head import export_trees

    arrays = export_trees(fitted_trees[0], 4)
    leaf = arrays["is_leaf"]
    assert 0 < leaf.sum() < leaf.size and arrays["feature"].dtype == np.int16
    for key in ("feature", "threshold", "left", "right", "missing_left"):
        assert not arrays[key][leaf].any(), key
    assert not arrays["value"][~leaf].any() and arrays["value"][leaf].any()


def test_a_class_the_head_never_saw_scores_zero_on_both_sides(tmp_path):
    from ecgedge.train.rhythm_head import class_probabilities, export_trees, fit_rhythm_head, save_trees

    x = np.random.default_rng(0).normal(size=(60, 2))
    head = fit_rhythm_head(x, np.array([0, 2, 3] * 20), seed=0)  # class 1 never seen
    proba = class_probabilities(head, x[:5], 4)
    assert proba.shape == (5, 4) and np.all(proba[:, 1] == 0)
    save_trees(tmp_path / "head.npz", export_trees(head, 4))
    np.testing.assert_allclose(load_trees(tmp_path / "head.npz").predict_proba(x[:5]), proba, atol=1e-12)
    with pytest.raises(EcgEdgeError, match="3 classes or more"):
        export_trees(fit_rhythm_head(x, np.array([0, 3] * 30), seed=0), 4)


def test_broken_tree_arrays_are_refused(fitted_trees, tmp_path):
    _, path, _ = fitted_trees
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    with pytest.raises(EcgEdgeError, match="lack"):
        Trees({k: v for k, v in arrays.items() if k != "threshold"})
    bad = dict(arrays, left=arrays["left"] + 10 ** 6)
    with pytest.raises(EcgEdgeError, match="outside"):
        Trees(bad)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(EcgEdgeError, match="can not read"):
        load_trees(tmp_path / "junk.npz")


def test_a_feature_missing_in_every_training_window_is_ignored():
    from ecgedge.train.rhythm_head import fit_rhythm_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    x[:, 1] = np.nan  # e.g. a shape feature of windows too short for three beats
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 2] > 0).astype(int)
    head = fit_rhythm_head(x, y, seed=0)
    assert (head.predict(x) == y).mean() > 0.9


def test_sample_weights_share_each_class_between_its_windows_and_its_records():
    from sklearn.utils.class_weight import compute_sample_weight

    from ecgedge.train.rhythm_head import sample_weights

    # class 0: a Holter record of 8 windows and two short recordings of 1; class 1: 4 + 2 windows
    y = np.array([0] * 10 + [1] * 6)
    records = np.array(["holter"] * 8 + ["a", "b"] + ["holter"] * 4 + ["c"] * 2)
    np.testing.assert_allclose(sample_weights(y), compute_sample_weight("balanced", y))  # the heads before
    np.testing.assert_allclose(sample_weights(y, records, 0.0), compute_sample_weight("balanced", y))
    by_records = sample_weights(y, records, 1.0)
    np.testing.assert_allclose(by_records[:10], [8 / 3 / 8] * 8 + [8 / 3] * 2)  # each record of class 0: 8/3
    np.testing.assert_allclose(by_records[10:], [4 / 4] * 4 + [4 / 2] * 2)
    half = sample_weights(y, records, 0.5)
    np.testing.assert_allclose(half, 0.5 * by_records + 0.5 * sample_weights(y))
    for w in (by_records, half):  # every class weighs len(y) / 2 in all
        np.testing.assert_allclose([w[y == 0].sum(), w[y == 1].sum()], [8, 8])
    assert half[8] > half[0]  # a short recording's window counts more than a long record's
    with pytest.raises(EcgEdgeError, match="record_share"):
        sample_weights(y, records, 1.5)
    with pytest.raises(EcgEdgeError, match="records for"):
        sample_weights(y, records[:-1])


# ---------------------------------------------------------------------------------------------
# In the bundle and on the device


def test_bundle_carries_the_rhythm_head_and_refuses_a_broken_one(rhythm_bundle, tmp_path):
    import shutil

    from ecgedge.device.bundle import MANIFEST_FILE, load_bundle

    head = rhythm_bundle.manifest["rhythm_head"]
    assert head["file"] == "rhythm_head.npz" and head["combine"] == "weighted_geometric_mean"
    assert head["cnn_weights"] == rhythm.cnn_weights(rhythm_bundle.classes).tolist()
    assert head["cnn_weights"][rhythm_bundle.classes.index("AF")] == 0.25
    assert head["features"] == list(rhythm.FEATURE_NAMES)
    assert rhythm_bundle.rhythm_head_path.stat().st_size == head["bytes"]

    def broken(name, change):
        path = tmp_path / name
        shutil.copytree(rhythm_bundle.path, path)
        change(path)
        return path

    def prepend_byte(path):
        head_file = path / "rhythm_head.npz"
        head_file.write_bytes(b"x" + head_file.read_bytes())

    def resealed(name, edit):
        from ecgedge.device.bundle import write_manifest

        path = tmp_path / name
        shutil.copytree(rhythm_bundle.path, path)
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        edit(manifest["rhythm_head"])
        write_manifest(path, manifest)
        return path

    # A bundle of the plain geometric mean (before per-class weights) loads and weighs 0.5 each.
    old = resealed("old_rule", lambda h: (h.update(combine="geometric_mean"), h.pop("cnn_weights")))
    np.testing.assert_array_equal(load_bundle(old).cnn_weights, 0.5)
    for name, edit, message in (("no_weights", lambda h: h.pop("cnn_weights"), "cnn_weights must be a list of 4"),
                                ("weight_2", lambda h: h["cnn_weights"].__setitem__(1, 2.0),
                                 r"cnn_weights\[1\] must be a finite number >= 0 and <= 1, got 2.0")):
        with pytest.raises(EcgEdgeError, match=message):
            load_bundle(resealed(name, edit))

    tampered = broken("tampered", prepend_byte)
    with pytest.raises(EcgEdgeError, match="does not match its manifest"):
        load_bundle(tampered)
    missing = broken("missing", lambda p: (p / "rhythm_head.npz").unlink())
    with pytest.raises(EcgEdgeError, match="not found; the bundle is incomplete"):
        load_bundle(missing)

    def rename_feature(path):
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        manifest["rhythm_head"]["features"][0] = "something_else"
        (path / MANIFEST_FILE).write_text(json.dumps(manifest))

    with pytest.raises(EcgEdgeError, match=r"features this ecgedge does not compute \(\['something_else'\]\)"):
        load_bundle(broken("features", rename_feature))

    def point_outside(path):
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        manifest["rhythm_head"]["file"] = "../rhythm_head.npz"
        (path / MANIFEST_FILE).write_text(json.dumps(manifest))

    with pytest.raises(EcgEdgeError, match="must sit in the bundle folder"):
        load_bundle(broken("outside", point_outside))


def test_classifier_combines_the_model_with_the_rhythm_head(rhythm_bundle, tiny_bundle):
    from ecgedge.device.benchmark import synthetic_ecg
    from ecgedge.device.dsp import standardize, to_model_rate, window_image
    from ecgedge.device.runtime import Classifier

    with_head, without = Classifier(rhythm_bundle), Classifier(tiny_bundle)
    assert with_head.info["rhythm_head"] and not without.info["rhythm_head"]
    fs = 360.0
    window = synthetic_ecg(with_head.window_samples(fs), fs, seed=3)
    image, features = with_head.preprocess(window, fs)
    np.testing.assert_array_equal(image, window_image(window, fs, with_head.cfg))
    np.testing.assert_array_equal(features, rhythm.window_rhythm_features(window, fs, with_head.cfg))
    z = standardize(to_model_rate(window, fs, with_head.cfg))
    fs_model = with_head.cfg.fs
    beats = rhythm.detect_beats(z, fs_model)
    atrial = rhythm.atrial_features(z, beats, fs_model)
    parts = [rhythm.rr_statistics(np.diff(beats) / fs_model), rhythm.beat_shape_features(z, beats, fs_model),
             rhythm.sharpness_features(window), atrial[:len(rhythm.ATRIAL_NAMES)],
             rhythm.rr_irregularity(np.diff(beats) / fs_model), rhythm.spectrum_features(z, fs_model),
             rhythm.wave_timing_features(z, beats, fs_model)]
    own_context = [parts[0], parts[4], atrial]  # without history, the window's own
    detrended = atrial[len(rhythm.ATRIAL_NAMES):]
    np.testing.assert_array_equal(features, np.concatenate(parts + own_context + [detrended]))
    cnn = without.classify_image(image)
    expected = rhythm.combine(cnn, with_head.trees.predict_proba(features), with_head.bundle.cnn_weights)
    np.testing.assert_allclose(with_head.classify_window(window, fs).probs, expected, rtol=1e-6)
    np.testing.assert_allclose(without.classify_window(window, fs).probs, cnn)


def test_classifier_can_leave_the_rhythm_head_out(rhythm_bundle, tiny_bundle):
    from ecgedge.device.benchmark import synthetic_ecg
    from ecgedge.device.runtime import Classifier

    model_only, plain = Classifier(rhythm_bundle, rhythm_head=False), Classifier(tiny_bundle)
    assert model_only.trees is None and not model_only.info["rhythm_head"]
    fs = 360.0
    window = synthetic_ecg(model_only.window_samples(fs), fs, seed=4)
    assert model_only.preprocess(window, fs)[1] is None  # no rhythm features computed
    np.testing.assert_array_equal(model_only.classify_window(window, fs).probs,
                                  plain.classify_window(window, fs).probs)
    with_head = Classifier(rhythm_bundle).classify_window(window, fs).probs
    assert not np.allclose(with_head, plain.classify_window(window, fs).probs)


def test_device_commands_take_no_rhythm_head(rhythm_bundle):
    from click.testing import CliRunner

    from ecgedge.cli import cli

    for flag, used in (("--rhythm-head", True), ("--no-rhythm-head", False)):
        result = CliRunner().invoke(cli, ["device", "bench", "--bundle", str(rhythm_bundle.path), "-n", "2", "--json",
                                          flag])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["interpreter"]["rhythm_head"] is used


def test_a_head_of_an_earlier_version_reads_its_own_columns(tiny_bundle, tmp_path):
    """A bundle made before the atrial features existed knows the first 35 features; a head reads
    its columns by name, in its own order (here reversed, so reading by position would fail)."""
    import io

    from ecgedge.device.benchmark import synthetic_ecg
    from ecgedge.device.bundle import MANIFEST_FILE, write_bundle, write_manifest
    from ecgedge.device.runtime import Classifier
    from ecgedge.train.rhythm_head import export_trees, fit_rhythm_head, save_trees

    old_names = list(rhythm.FEATURE_NAMES[:35])[::-1]
    rng = np.random.default_rng(0)
    features, y = rng.normal(size=(200, 35)), np.arange(200) % 4
    features[:, 0] += 3 * y  # its first column decides: read from the wrong place, it is noise
    head = io.BytesIO()
    save_trees(head, export_trees(fit_rhythm_head(features, y, seed=0), 4))
    manifest = {k: v for k, v in tiny_bundle.manifest.items()
                if k not in ("format", "format_version", "model_file", "sha256", "bytes")}
    path = tmp_path / "old"
    write_bundle(path, tiny_bundle.model_path.read_bytes(), manifest, rhythm_head=head.getvalue())
    written = json.loads((path / MANIFEST_FILE).read_text())
    written["rhythm_head"]["features"] = old_names
    write_manifest(path, written)  # re-sealed: the bundle digest covers the feature list

    classifier = Classifier(path)
    window = synthetic_ecg(classifier.window_samples(360.0), 360.0, seed=3)
    image, all_features = classifier.preprocess(window, 360.0)
    assert all_features.shape == (len(rhythm.FEATURE_NAMES),)
    expected = rhythm.combine(classifier.classify_image(image), classifier.trees.predict_proba(all_features[:35][::-1]),
                              classifier.bundle.cnn_weights)
    np.testing.assert_allclose(classifier.classify_window(window, 360.0).probs, expected, rtol=1e-6)


def test_window_histories_are_the_samples_just_before_each_window_without_a_gap():
    fs, length = 100.0, 1000
    signal = np.arange(6000.0)
    starts = np.array([0, 500, 1000, 1500, 2000, 3500, 4000, 4500, 5000])  # a gap: 3000-3500 uncovered
    histories = rhythm.window_histories(np.stack([signal[s:s + length] for s in starts]), fs, starts / fs)
    keep = int(rhythm.CONTEXT_S * fs)
    begins = [0] * 5 + [3500] * 4  # where each window's stretch of covered signal begins
    for start, begin, history in zip(starts, begins, histories):
        np.testing.assert_array_equal(history, signal[max(begin, start - keep):start])
    assert histories[0].size == 0 and histories[5].size == 0 and histories[4].size == keep


def test_context_features_read_the_window_and_the_last_context_s_seconds_before_it():
    from ecgedge.device.benchmark import synthetic_ecg
    from ecgedge.train.tasks import load_task

    cfg = load_task("multidb-rhythm5").spectrogram
    fs = 360.0
    signal = synthetic_ecg(int(45 * fs), fs, seed=4)
    window, history = signal[-int(10 * fs):], signal[:-int(10 * fs)]
    names = list(rhythm.FEATURE_NAMES)
    context = [names.index(n) for n in rhythm.CONTEXT_NAMES]
    with_history = rhythm.window_rhythm_features(window, fs, cfg, history=history)
    alone = rhythm.window_rhythm_features(window, fs, cfg)
    # Only the last CONTEXT_S seconds are read; the window's own features do not change.
    np.testing.assert_array_equal(
        with_history, rhythm.window_rhythm_features(window, fs, cfg, history=history[-int(rhythm.CONTEXT_S * fs):]))
    own = [i for i in range(len(names)) if i not in context]
    np.testing.assert_array_equal(with_history[own], alone[own])
    # Without history the context features are the window's own: its intervals and P waves.
    np.testing.assert_array_equal(alone[context], alone[[names.index(n[len("context_"):]) for n in rhythm.CONTEXT_NAMES]])
    # A history with a gap in it (NaN) is not read.
    broken = history.copy()
    broken[100] = np.nan
    np.testing.assert_array_equal(rhythm.window_rhythm_features(window, fs, cfg, history=broken), alone)
    # With it they count about three times the beats: 30 s of the same rhythm.
    context_rr = with_history[names.index("context_mean_rr_s")]
    assert context_rr == pytest.approx(alone[names.index("mean_rr_s")], rel=0.05)
    assert not np.array_equal(with_history[context], alone[context])
