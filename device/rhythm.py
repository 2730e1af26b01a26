"""Rhythm features of one window from beats the device finds itself: intervals and beat shapes.

The spectrogram CNN sees rhythm only through its image; RR-interval tools read it directly. This
module gives the device the RR tools' view without reference annotations: it detects the beats
of a standardised window at the model rate, then describes

- the RR intervals (:func:`rr_statistics`: rate, variability, irregularity), and
- the beat shapes (:func:`beat_shape_features`): each beat against the window's medoid beat
  (the beat most like the others), and whether the beats that differ from it come early. A
  ventricular ectopic beat is early and differently shaped; an atrial one is early and shaped
  like the rest; atrial fibrillation is irregular with normal shapes.
- the signal's sharpness (:func:`sharpness_features`) at ``SHARPNESS_FS``: a pacemaker's
  stimulus is a spike a few milliseconds wide, sharper than any QRS, and too narrow for the
  model rate to show.
- the atrial activity (:func:`atrial_features`): whether the stretch before each QRS repeats
  from beat to beat, as a P wave does and fibrillatory waves do not.
- how random the RR intervals are (:func:`rr_irregularity`): entropy measures that atrial
  fibrillation's "irregularly irregular" rhythm raises and ectopic beats in sinus rhythm do not.
- how the power spreads over the ECG band (:func:`spectrum_features`), and
- when the typical beat's P and T waves come (:func:`wave_timing_features`): times only, which
  do not depend on the lead or the recorder as wave amplitudes do.
- the intervals, their irregularity and the atrial activity again over the window and the
  ``CONTEXT_S`` seconds before it (:func:`context_features`): about 30 beats instead of a dozen.
  The caller hands the history in (a stream's ring buffer, :func:`window_histories` for windows of
  one recording); without it these are the window's own.

Numbers that motivated it (mitdb-rhythm4, 5 folds by patient): gradient boosting on these
features alone scored macro-F1 0.593, the spectrogram CNN 0.566 in the same budget, and the
geometric mean of the two classifiers' probabilities 0.702. Adding the sharpness features
raised the features alone from 0.593 to 0.698 (paced rhythm is two thirds of the "other" class;
its recall rose from 0.32 to 0.61). Adding the atrial features raised the geometric mean with the
int8 CNN from 0.672-0.679 to 0.718-0.741 (three seeds) and atrial fibrillation's recall from 0.59
to 0.83: sinus rhythm with frequent PVCs (mitdb 233) and atrial fibrillation with them (203) had
looked alike in their RR intervals.
"""

from functools import lru_cache

import numpy as np

from ecgedge.device.dsp import lowpass, resample_poly, resample_ratio, standardize, to_model_rate
from ecgedge.device.errors import EcgEdgeError
from ecgedge.device.trees import softmax

RR_STAT_NAMES = (
    "heart_rate_bpm", "mean_rr_s", "sd_rr_s", "rmssd_s", "pnn50", "cv_rr", "nrmssd",
    "median_abs_diff_ratio", "frac_large_diff", "rr_range_ratio",
)
BEAT_SHAPE_NAMES = (
    "n_shaped_beats", "corr_mean", "corr_median", "corr_min", "frac_unlike_medoid", "frac_corr_below_half",
    "frac_early_unlike", "frac_early_like", "frac_late_unlike", "width_median", "width_medoid", "frac_wide",
    "amplitude_sd", "frac_tall", "rr_alternation", "corr_all_mean", "medoid_cluster_frac", "frac_early",
    "prematurity_unlike", "prematurity_sd_like", "medoid_steepness", "beats_per_s",
)
SHARPNESS_NAMES = ("sharp_curvature_vs_slope", "sharp_curvature_vs_amplitude", "sharp_slope_vs_amplitude")
ATRIAL_NAMES = ("p_consistency", "p_correlation")
IRREGULARITY_NAMES = ("rr_turning_points", "rr_histogram_entropy", "rr_sample_entropy", "rr_cosen",
                      "rr_trimmed_irregularity", "rr_pair_sum_ratio")
SPECTRUM_NAMES = ("spectral_entropy", "share_4_9hz")
WAVE_TIMING_NAMES = ("p_wave_lead_s", "t_wave_lag_s")
DETRENDED_ATRIAL_NAMES = ("p_consistency_detrended", "p_correlation_detrended")
"""The atrial features of each stretch less its straight line: a T wave's tail at a fast rate
does not look like a P wave (:func:`atrial_features`)."""
CONTEXT_NAMES = tuple(f"context_{name}" for name in RR_STAT_NAMES + IRREGULARITY_NAMES + ATRIAL_NAMES
                      + DETRENDED_ATRIAL_NAMES)
"""The interval, irregularity and atrial features again, over the window and up to ``CONTEXT_S``
seconds of signal before it (:func:`context_features`)."""
FEATURE_NAMES = (RR_STAT_NAMES + BEAT_SHAPE_NAMES + SHARPNESS_NAMES + ATRIAL_NAMES + IRREGULARITY_NAMES
                 + SPECTRUM_NAMES + WAVE_TIMING_NAMES + CONTEXT_NAMES + DETRENDED_ATRIAL_NAMES)
"""Every rhythm feature, in the order :func:`window_rhythm_features` returns them. New features are
appended, so a head trained on an earlier list reads its columns by name (:func:`feature_columns`)."""

BEFORE_S, AFTER_S = 0.15, 0.25
"""A beat's shape: the window from 150 ms before to 250 ms after its detected time."""
QRS_BEFORE_S, QRS_AFTER_S = 0.05, 0.08
"""A beat's QRS: from 50 ms before to 80 ms after its detected time."""
P_BEFORE_S, P_AFTER_S = 0.25, 0.06
"""A beat's atrial (P-wave) stretch: from 250 ms to 60 ms before its detected time."""
P_SEARCH_S = (0.28, 0.08)
"""Where the template's P wave is looked for: 280 to 80 ms before its detected time."""
T_SEARCH_S = (0.15, 0.48)
"""Where the template's T wave is looked for: 150 to 480 ms after its detected time."""
PR_BASELINE_S = (0.08, 0.04)
"""The template's zero level: its median from 80 to 40 ms before the detected time (the PR segment)."""
REFRACTORY_S = 0.22
BEAT_DETECTOR = 3
"""The beat detector (:func:`detect_beats`) of new rhythm heads; a bundle names its head's in
``rhythm_head.beat_detector`` (bundles without it: 1), and the device detects beats as that head
was trained to read them."""
BEAT_DETECTORS = (1, 2, 3)
SLOPE_S = {1: 0.03, 2: 0.008, 3: 0.016}  # each detector's slope: z[t + k] - z[t - k], k = SLOPE_S * fs samples
LEVEL_BLOCK_S, LEVEL_FRACTION = 1.0, 0.3  # detectors 2, 3: threshold 0.3 x the median of 1-s blocks' maxima
T_WAVE_S, T_WAVE_RATIO = 0.36, 0.5  # detectors 2, 3: a peak this soon after a beat, this much weaker, is its T wave
LIKE_CORR = 0.8       # a beat "like" the medoid correlates above this with it
CLUSTER_CORR = 0.9    # beats above this correlation count as one shape when picking the medoid
EARLY_RATIO = 0.85    # "early": the RR interval before the beat is below this x the median
SHARPNESS_FS = 360.0  # MIT-BIH's rate, where the features were chosen; other inputs are resampled to it
CONTEXT_S = 20.0
"""Seconds of signal before a window that :func:`context_features` reads with it: about 30 beats
instead of a window's dozen, so that irregularity and P waves are judged on more beats. Only what
came before, so a stream needs no look-ahead. Measured with the CNN's out-of-fold predictions
fixed (multidb-rhythm5, `runs/multidb12` and `-databases`, the head refit with the 18 context
features added): MIT-BIH held out AF Se / Sp 0.944 / 0.967 -> 0.956 / 0.985, macro-F1 0.744 ->
0.766; patients held out 0.944 / 0.978 -> 0.953 / 0.988, 0.766 -> 0.778; CinC 2017 no better
(Challenge F1 0.786 -> 0.780 patient-wise, 0.590 -> 0.589 held out). All 40 interval, atrial and
beat-shape features over the context read the same on MIT-BIH and worse on CinC (0.777); a
centred context (10 s each side) the same as this one, and a stream would wait 10 s for it."""
COMBINE_RULE = "weighted_geometric_mean"
"""How :func:`combine` merges the CNN's and the rhythm head's probabilities (named in bundles,
with the per-class weights of :func:`cnn_weights`); bundles of ``"geometric_mean"`` weigh 0.5 each."""
COMBINE_RULES = ("geometric_mean", COMBINE_RULE)
GEOMETRIC_MEAN_WEIGHT = 0.5
"""The CNN's weight in a ``"geometric_mean"`` bundle (older bundles): the plain geometric mean."""
CNN_WEIGHT = 0.3
"""The CNN's weight in new bundles, classes not in ``CNN_CLASS_WEIGHTS``; the rhythm head's is
0.7. Measured on the out-of-fold predictions of multidb-rhythm5 once the splits balanced each
database's classes (the CNN then trains on, better alone: pooled macro-F1 0.502 -> 0.579), weights
0.3 / 0.4 / 0.5 / 0.6 against AF 0.15 / 0.25 / 0.35 / 0.5: 0.3 (AF 0.25) is as good or better
than 0.5 on both protocols, most where the recorder is new (`runs/multidb10`: CinC Challenge F1
0.772 -> 0.782; `runs/multidb10-databases`, CinC held out: 0.578 -> 0.594, AF Se 0.505 -> 0.515,
mitdb held out: macro-F1 0.732 -> 0.737)."""
CNN_CLASS_WEIGHTS = {"AF": 0.25}
"""The CNN's weight for AF: a quarter, the rhythm head's three quarters. Measured on the
out-of-fold predictions of multidb-rhythm5 (int8 CNN, weights 0.5 / 0.35 / 0.25 / 0.15 tried):
the CNN alone finds AF worse on hardware it has not seen (held-out MIT-BIH AF Se / Sp 0.766 /
0.864 against the head's 0.925 / 0.973), and where the two disagree on AF the head is more often
right. With 0.25: records protocol pooled macro-F1 0.659 -> 0.662, CinC Challenge F1 0.750 ->
0.753, mitdb AF Se 0.896 -> 0.941 (Sp 0.972 -> 0.971); leaving one database out, AF Se on
held-out MIT-BIH 0.924 -> 0.934 (Sp 0.964 -> 0.967), CinC 0.482 -> 0.501, vfdb 0.067 -> 0.339."""


def _sliding_max(x, width):
    """``out[i] = max(x[i:i + width])`` for i <= len(x) - width, by doubling windows (exact)."""
    out, span = x, 1
    while 2 * span <= width:
        out = np.maximum(out[:-span], out[span:])
        span *= 2
    return out if span == width else np.maximum(out[:len(x) - width + 1], out[width - span:])


def _quantiles(x, qs):
    """``np.percentile(x, 100 * q)`` (linear interpolation) of each ``q`` in ``qs``, by one
    partial sort; a list of floats."""
    positions = [(x.size - 1) * q for q in qs]
    bounds = [(int(p), min(int(p) + 1, x.size - 1)) for p in positions]
    part = np.partition(x, sorted({i for pair in bounds for i in pair}))
    return [float(part[lo] + (part[hi] - part[lo]) * (p - lo)) for p, (lo, hi) in zip(positions, bounds)]


def _quantile(x, q):
    """``np.percentile(x, 100 * q)`` (linear interpolation) by partial sort."""
    return _quantiles(x, (q,))[0]


def _std(x):
    """``np.std(x)`` of a 1-D array: the same arithmetic, so the same bits, without its overhead.

    This module's reductions are spelled as sums (``x.sum() / x.size`` for ``x.mean()``, a
    boolean ``.sum(axis)`` for ``np.count_nonzero(..., axis)``): on the dozen beats of a window
    numpy's convenience wrappers cost more than the arithmetic (beat shapes 250 -> 200 us).
    """
    centred = x - x.sum(keepdims=True) / x.size
    return np.sqrt((centred * centred).sum() / x.size)


def _median(x):
    """Median of a small 1-D array (as np.median)."""
    s = np.sort(x)
    mid = s.size // 2
    return float(s[mid]) if s.size % 2 else 0.5 * float(s[mid - 1] + s[mid])


def detect_beats(z, fs, detector=None):
    """Beat times of a standardised window: local maxima of the smoothed slope energy.

    Parameters
    ----------
    z : ndarray of shape (n,), float, zero-mean unit-variance ECG.
    fs : float, Hz.
    detector : 1, 2 or 3 (:data:`BEAT_DETECTORS`; None: ``BEAT_DETECTOR``), which detector: a
        rhythm head reads the beats of the detector its training read.

    Returns
    -------
    ndarray of int64, sample indices, ascending; peaks at least ``REFRACTORY_S`` apart.

    Detector 3 (new bundles) is detector 2 with the slope over +-16 ms (two samples at 128 Hz):
    still steeper for a QRS than for T waves and baseline moves, but it no longer passes the
    20-40 Hz of muscle artifact. ``ecgedge bench beats`` (as below) detector 2 -> 3: clean 0.990 /
    0.997 -> 0.989 / 0.998, muscle artifact 6 dB 0.987 / 0.978 -> 0.989 / 0.995, 0 dB 0.960 / 0.903
    -> 0.984 / 0.974. Detector 2: the slope over +-8 ms (at the model's 128 Hz, the neighbouring
    samples: QRS complexes are steeper than T waves and baseline moves); peaks above 0.3 x the
    median over the window's 1-s blocks of each block's largest energy (an artifact second does
    not raise the threshold over the beats of the others); a peak less than 360 ms after the beat
    before with less than half its energy is that beat's T wave. Detector 1 (bundles made before
    it): the slope over +-30 ms, peaks above a quarter of the 98th percentile of the energy.
    Against MIT-BIH's reference beats (``ecgedge bench beats``: 48 records, 8,640 10-s windows,
    +-100 ms; sensitivity / positive predictivity) detector 1 -> 2: 0.974 / 0.968 -> 0.990 / 0.997
    clean; with the Noise Stress Test's muscle artifact at 6 dB 0.974 / 0.967 -> 0.987 / 0.978, at
    0 dB 0.972 / 0.952 -> 0.960 / 0.903 (the steep slope passes more of it). Counted apart by the
    window's rhythm (MLII windows): normal sinus rhythm 0.985 / 0.957 -> 0.995 / 0.998, atrial
    fibrillation 0.967 / 0.998 -> 0.982 / 0.999. On 1,500 CinC 2017 recordings the 10-s windows
    of normal recordings with an implausible RR spread (CV > 0.15, missed or extra beats) fall
    from 35 % to 13 %, those of AF recordings stay at 70 % / 68 %. It costs about 40 us more per
    call (numpy, this machine).
    """
    detector = BEAT_DETECTOR if detector is None else detector
    z = np.asarray(z, dtype=np.float64)
    n = z.size
    k = max(1, int(round(SLOPE_S[detector] * fs)))
    if n <= 2 * max(k, int(round(SLOPE_S[1] * fs))):
        return np.zeros(0, dtype=np.int64)
    m = max(1, int(round(0.12 * fs)))  # energy over 120 ms, about one QRS
    energy = _slope_energy(z, k, m)
    r = int(round(REFRACTORY_S * fs))
    padded = np.full(n + 2 * r, -1.0)
    padded[r:r + n] = energy
    peaks = np.flatnonzero((energy == _sliding_max(padded, 2 * r + 1)) & (energy > 0))
    if detector == 1:
        return peaks[energy[peaks] > 0.25 * _quantile(energy, 0.98)].astype(np.int64)
    block = max(1, int(round(LEVEL_BLOCK_S * fs)))
    n_blocks = n // block
    level = (float(np.median(energy[:n_blocks * block].reshape(n_blocks, block).max(axis=1))) if n_blocks >= 3
             else float(energy.max()))
    beats = []
    t_wave = int(round(T_WAVE_S * fs))
    for p in peaks[energy[peaks] > LEVEL_FRACTION * level].tolist():
        if beats and p - beats[-1] < t_wave and energy[p] < T_WAVE_RATIO * energy[beats[-1]]:
            continue
        beats.append(p)
    # The steep slope's energy is flat over a narrow QRS: each beat is placed where detector 1's
    # smoother energy peaks nearby (the beat time the shape, atrial and timing features expect).
    smooth = _slope_energy(z, int(round(SLOPE_S[1] * fs)), m)
    half = m // 2
    return np.array([max(p - half, 0) + int(np.argmax(smooth[max(p - half, 0):p + half + 1])) for p in beats],
                    dtype=np.int64)


def _slope_energy(z, k, m):
    """The mean over ``m`` samples (centred) of the squared slope ``z[t + k] - z[t - k]``."""
    n = z.size
    slope = np.zeros(n)
    slope[k:-k] = z[2 * k:] - z[:-2 * k]
    cumulative = np.concatenate([[0.0], np.cumsum(slope * slope)])
    energy = np.zeros(n)
    h = m // 2
    energy[h:n - m + h + 1] = (cumulative[m:] - cumulative[:-m]) / m
    return energy


def rr_statistics(rr):
    """RR-interval statistics of one window.

    Parameters
    ----------
    rr : ndarray of shape (m,), float, seconds between successive beats.

    Returns
    -------
    ndarray of shape (10,), float64 (:data:`RR_STAT_NAMES`): heart rate (bpm), mean RR, SD RR,
    RMSSD (s), pNN50 (fraction of successive differences > 50 ms), CV (SD / mean), normalised
    RMSSD (RMSSD / mean), median |successive difference| / median RR, fraction of successive
    differences > 15 % of the mean RR, and max RR / min RR. NaN where fewer than 2 intervals
    (or successive differences) exist; gradient boosting handles NaN natively.
    """
    rr = np.asarray(rr, dtype=np.float64)
    out = np.full(10, np.nan)
    if rr.size == 0:
        return out
    mean = rr.sum() / rr.size
    out[0] = 60.0 / mean
    out[1] = mean
    if rr.size < 2:
        return out
    diff = np.abs(rr[1:] - rr[:-1])
    centred = rr - mean
    out[2] = np.sqrt(np.dot(centred, centred) / rr.size)
    out[3] = np.sqrt(np.dot(diff, diff) / diff.size)
    out[4] = np.count_nonzero(diff > 0.05) / diff.size
    out[5] = out[2] / mean
    out[6] = out[3] / mean
    out[7] = _median(diff) / _median(rr)
    out[8] = np.count_nonzero(diff > 0.15 * mean) / diff.size
    out[9] = rr.max() / rr.min()
    return out


def _beats_inside(z, beats, before, after):
    """``z`` as float64 and the beats with ``before`` samples before and ``after`` after them inside it."""
    z = np.asarray(z, dtype=np.float64)
    beats = np.asarray(beats, dtype=np.int64)
    return z, beats[(beats >= before) & (beats < z.size - after)]


def _segments(z, beats, start, stop):
    """``z[beat + start : beat + stop]`` of each beat, each row minus its mean: (len(beats), stop - start)."""
    rows = z[beats[:, None] + np.arange(start, stop)[None, :]]
    rows -= rows.sum(axis=1, keepdims=True) / rows.shape[1]
    return rows


def _correlations(rows):
    """Correlations (n, n) between mean-removed rows, and per row how many correlate with it above
    ``CLUSTER_CORR`` (the medoid, the beat most like the others, has the most)."""
    unit = rows / (np.sqrt(np.einsum("ij,ij->i", rows, rows))[:, None] + 1e-9)
    corr = unit @ unit.T
    return corr, (corr > CLUSTER_CORR).sum(axis=1)


def beat_shape_features(z, beats, fs):
    """Shapes of the window's beats against its medoid beat, and their timing.

    Parameters
    ----------
    z : ndarray of shape (n,), float, the standardised window.
    beats : ndarray of int, beat sample indices (:func:`detect_beats`).
    fs : float, Hz.

    Returns
    -------
    ndarray of shape (len(BEAT_SHAPE_NAMES),), float64: the number of beats whose whole shape
    window fits, then NaN for the rest when fewer than 3 do.
    """
    before, after = int(round(BEFORE_S * fs)), int(round(AFTER_S * fs))
    z, beats = _beats_inside(z, beats, before, after)
    out = np.full(len(BEAT_SHAPE_NAMES), np.nan)
    n = len(beats)
    out[0] = n
    if n < 3:
        return out
    shapes = _segments(z, beats, -before, after)
    corr_all, cluster = _correlations(shapes)
    medoid = int(np.argmax(cluster))
    corr = corr_all[medoid]
    like = corr > LIKE_CORR
    unlike = ~like
    rr = (beats[1:] - beats[:-1]) / fs
    ratio_before = np.empty(n)
    ratio_before[0] = np.nan
    ratio_before[1:] = rr / _median(rr)
    early = ratio_before < EARLY_RATIO  # NaN (the first beat) compares False
    slope = np.abs(shapes[:, 1:] - shapes[:, :-1])
    width = (slope > 0.3 * slope.max(axis=1, keepdims=True)).sum(axis=1)
    peak_to_peak = shapes.max(axis=1) - shapes.min(axis=1)
    amplitude = peak_to_peak / peak_to_peak[medoid]
    turns = np.sign(rr[1:] - rr[:-1])
    early_unlike = ratio_before[unlike & ~np.isnan(ratio_before)]
    like_ratios = ratio_before[like & ~np.isnan(ratio_before)]
    out[1:] = [
        corr.sum() / n, _median(corr), corr.min(), np.count_nonzero(unlike) / n, np.count_nonzero(corr < 0.5) / n,
        np.count_nonzero(unlike & early) / n, np.count_nonzero(like & early) / n,
        np.count_nonzero(unlike & ~early) / n,
        _median(width), width[medoid], np.count_nonzero(width > width[medoid] + 3) / n, _std(amplitude),
        np.count_nonzero(amplitude > 1.5) / n,
        np.count_nonzero(turns[1:] != turns[:-1]) / (turns.size - 1) if turns.size > 1 else np.nan,
        corr_all.sum() / corr_all.size, cluster[medoid] / n, np.count_nonzero(early) / n,
        early_unlike.sum() / early_unlike.size if early_unlike.size else np.nan,
        _std(like_ratios) if np.count_nonzero(like) > 2 else np.nan,
        slope[medoid].max() / (peak_to_peak[medoid] + 1e-9), n * fs / z.size,
    ]
    return out


def atrial_features(z, beats, fs):
    """Whether the stretch before each QRS repeats from beat to beat: the P wave.

    In sinus rhythm each QRS follows a P wave of the same shape at the same distance; in atrial
    fibrillation there is none, only fibrillatory waves unrelated to the QRS. Irregular RR
    intervals alone confuse the two when ectopic beats are frequent (mitdb 233: sinus rhythm with
    multiform PVCs; 203: atrial fibrillation with them). Only beats whose QRS is like the window's
    medoid QRS count, so ectopic ventricular beats, which have no P wave of their own, do not.

    Parameters
    ----------
    z : ndarray of shape (n,), float, the standardised window.
    beats : ndarray of int, beat sample indices (:func:`detect_beats`).
    fs : float, Hz.

    The same two again of each stretch less its least-squares line (``DETRENDED_ATRIAL_NAMES``):
    at fast rates the stretch starts inside the T wave before it, whose tail repeats from beat to
    beat in atrial fibrillation too (CinC 2017's AF windows, median 90 bpm against MIT-BIH's 85,
    have a median p_correlation of 0.08 against 0.02; detrended 0.05 and 0.01). A head trained
    without CinC 2017 found 56 % of its AF recordings with both kinds, 52 % with the first alone
    (README, "Detrended atrial features").

    Returns
    -------
    ndarray of shape (len(ATRIAL_NAMES) + len(DETRENDED_ATRIAL_NAMES),), float64: the energy of
    the beats' mean atrial stretch over their mean energy (1 when every stretch is the same; about
    1 / beats when they are unrelated) and their mean pairwise correlation, of the stretches and
    of the detrended stretches. NaN when fewer than 3 beats count. Medians on mitdb-rhythm4: 0.87
    and 0.86 in sinus rhythm windows, 0.10 and 0.01 in atrial fibrillation.
    """
    p_before, p_after = int(round(P_BEFORE_S * fs)), int(round(P_AFTER_S * fs))
    q_after = int(round(QRS_AFTER_S * fs))
    z, beats = _beats_inside(z, beats, p_before, q_after)
    out = np.full(len(ATRIAL_NAMES) + len(DETRENDED_ATRIAL_NAMES), np.nan)
    if beats.size < 3:
        return out
    like = _like_medoid_qrs(z, beats, fs)
    if like.sum() < 3:
        return out
    stretch = _segments(z, beats[like], -p_before, -p_after)
    ramp = np.arange(stretch.shape[1], dtype=np.float64)
    ramp -= ramp.mean()
    out[:] = [*_repetition(stretch), *_repetition(stretch - np.outer(stretch @ ramp / (ramp @ ramp), ramp))]
    return out


def _repetition(stretch):
    """How alike the rows of ``stretch`` (n, m) are: the energy of their mean over their mean
    energy, and their mean pairwise correlation (:func:`atrial_features`)."""
    n = stretch.shape[0]
    energy = np.einsum("ij,ij->i", stretch, stretch)
    mean = stretch.sum(axis=0) / n
    unit = stretch / (np.sqrt(energy)[:, None] + 1e-9)
    pairs = unit @ unit.T
    return mean @ mean / (energy.sum() / n + 1e-12), (pairs.sum() - np.trace(pairs)) / (n * (n - 1))


def _like_medoid_qrs(z, beats, fs):
    """Which beats' QRS (``QRS_BEFORE_S`` .. ``QRS_AFTER_S``) is like the window's medoid QRS
    (boolean ndarray of shape (len(beats),)); ectopic ventricular beats are not."""
    corr, cluster = _correlations(_segments(z, beats, -int(round(QRS_BEFORE_S * fs)), int(round(QRS_AFTER_S * fs))))
    return corr[int(np.argmax(cluster))] > LIKE_CORR


def wave_timing_features(z, beats, fs):
    """When the P and T waves of the window's typical beat come: intervals, in seconds.

    The typical beat is the sample-wise median of the beats whose QRS is like the medoid's, less
    its level just before the QRS (``PR_BASELINE_S``). The P wave is its largest
    deflection in ``P_SEARCH_S`` before the beat, the T wave its largest in ``T_SEARCH_S`` after.
    A long PR interval (first-degree block) or QT interval, which CinC 2017 calls "Other rhythm",
    shows in them; in atrial fibrillation the "P wave" is wherever a fibrillatory wave peaks.
    Times only, no amplitudes: tried with the template's P, ST and T amplitudes too (rhythm head
    alone, multidb-rhythm5), patient-wise scores rose more (CinC Challenge F1 0.772 -> 0.783),
    but a head trained without CinC then found 33 % of its AF recordings instead of 50 %: wave
    amplitudes depend on the lead and recorder. With the times alone 0.772 -> 0.776, and 50 %.

    Parameters
    ----------
    z : ndarray of shape (n,), float, the standardised window.
    beats : ndarray of int, beat sample indices (:func:`detect_beats`).
    fs : float, Hz.

    Returns
    -------
    ndarray of shape (len(WAVE_TIMING_NAMES),), float64: the P wave's lead on the beat and the T
    wave's lag behind it, seconds; NaN when fewer than 3 beats like the medoid fit in the window.
    """
    before, after = int(round(P_SEARCH_S[0] * fs)), int(round(T_SEARCH_S[1] * fs))
    z, beats = _beats_inside(z, beats, before, after)
    out = np.full(len(WAVE_TIMING_NAMES), np.nan)
    if beats.size < 3:
        return out
    like = _like_medoid_qrs(z, beats, fs)
    if like.sum() < 3:
        return out
    offsets = np.arange(-before, after + 1)
    template = np.median(z[beats[like][:, None] + offsets[None, :]], axis=0)
    t = offsets / fs
    template -= _median(template[(t >= -PR_BASELINE_S[0]) & (t <= -PR_BASELINE_S[1])])
    p = np.flatnonzero((t >= -P_SEARCH_S[0]) & (t <= -P_SEARCH_S[1]))
    tw = np.flatnonzero((t >= T_SEARCH_S[0]) & (t <= T_SEARCH_S[1]))
    out[:] = [-t[p[np.argmax(np.abs(template[p]))]], t[tw[np.argmax(np.abs(template[tw]))]]]
    return out


def sharpness_features(x):
    """How sharp the sharpest moments of a raw window at ``SHARPNESS_FS`` are: pacing spikes.

    The curvature (second difference) and slope (first difference) of a pacemaker's stimulus
    are high against both the steepest QRS slopes and the signal's amplitude (the 99th
    percentile of its distance from the median; half the central 99 % range scored macro-F1
    0.66 instead of 0.69-0.70 over three seeds). Each feature is a ratio of two quantiles, so it
    does not depend on the amplitude units.

    Parameters
    ----------
    x : ndarray of shape (n,), float, a raw window at ``SHARPNESS_FS`` Hz, any amplitude units.

    Returns
    -------
    ndarray of shape (len(SHARPNESS_NAMES),), float64: the 99.9th percentile of |curvature| over
    the 99th of |slope|; the 99.5th of |curvature| over the amplitude; the 99.9th of |slope|
    over the amplitude. NaN for a flat window.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size < 3:
        return np.full(len(SHARPNESS_NAMES), np.nan)
    amplitude = _quantile(np.abs(x - _quantile(x, 0.5)), 0.99)
    step = np.diff(x)
    curvature = np.abs(np.diff(step))
    slope = np.abs(step)
    typical_slope, steepest_slope = _quantiles(slope, (0.99, 0.999))
    sharp_curvature, sharpest_curvature = _quantiles(curvature, (0.995, 0.999))
    if amplitude <= 0 or typical_slope <= 0:
        return np.full(len(SHARPNESS_NAMES), np.nan)
    return np.array([sharpest_curvature / typical_slope, sharp_curvature / amplitude,
                     steepest_slope / amplitude])


SAMPEN_TOLERANCE_S = 0.03
"""Two RR intervals "match" in the sample entropy when they differ by at most 30 ms."""


def rr_irregularity(rr):
    """How random a window's RR intervals are: the marks of atrial fibrillation's irregularity.

    Measured before it was built (CinC 2017, 5 folds, recording level, the rhythm head alone): these
    six features on top of the 37 before raised the Challenge F1 from 0.766 to 0.778, AF's F1 from
    0.779 to 0.810 and AF sensitivity / specificity from 0.844 / 0.969 to 0.864 / 0.974.

    Parameters
    ----------
    rr : ndarray of shape (m,), float, seconds between successive detected beats.

    Returns
    -------
    ndarray of shape (len(IRREGULARITY_NAMES),), float64: the turning-point ratio of the RR
    series (about 2/3 for random intervals); the Shannon entropy of RR / median RR in 17 bins
    over 0.3-2.0; the sample entropy (m = 1, tolerance 30 ms) and the coefficient of sample
    entropy (COSEn: sample entropy + ln(2 x tolerance) - ln(mean RR), Lake and Moorman 2011);
    the mean |successive difference| without the two largest, over the mean RR (an ectopic beat
    makes two large differences); and the median |RR(i+2) - RR(i)| over the median RR (lag-2
    differences: the alternation of bigeminy gives 0, fibrillation does not). NaN with fewer than 4 intervals
    (the sample entropy also when no interval pair matches, the trimmed mean with fewer than 5).
    """
    rr = np.asarray(rr, dtype=np.float64)
    out = np.full(len(IRREGULARITY_NAMES), np.nan)
    if rr.size < 4:
        return out
    d = rr[1:] - rr[:-1]
    median_rr = _median(rr)
    out[0] = np.count_nonzero(d[1:] * d[:-1] < 0) / (d.size - 1)
    counts = np.histogram(rr / median_rr, bins=np.linspace(0.3, 2.0, 18))[0]
    p = counts[counts > 0] / max(counts.sum(), 1)
    out[1] = -np.sum(p * np.log(p))
    close = np.abs(rr[:-1, None] - rr[None, :-1]) <= SAMPEN_TOLERANCE_S
    upper = np.triu(np.ones_like(close), 1)
    b = np.count_nonzero(close & upper)
    a = np.count_nonzero(close & upper & (np.abs(rr[1:, None] - rr[None, 1:]) <= SAMPEN_TOLERANCE_S))
    if a > 0 and b > 0:
        out[2] = -np.log(a / b)
        out[3] = out[2] + np.log(2 * SAMPEN_TOLERANCE_S) - np.log(rr.sum() / rr.size)
    magnitude = np.sort(np.abs(d))
    if magnitude.size > 3:
        out[4] = magnitude[:-2].sum() / (magnitude.size - 2) / (rr.sum() / rr.size)
    out[5] = _median(np.abs(d[1:] + d[:-1])) / median_rr
    return out


def window_rhythm_features(x, fs_in, cfg, standardized=None, history=None, detector=None):
    """All rhythm features (``FEATURE_NAMES``) of one raw window.

    Parameters
    ----------
    x : ndarray of shape (window_length(fs_in, cfg),), float, a raw window at ``fs_in`` Hz.
    fs_in : float, Hz.
    cfg : SpectrogramConfig, whose model rate the intervals and shapes are measured at.
    standardized : ``standardize(to_model_rate(x, fs_in, cfg))`` when the caller has it already
        (the spectrogram is made of the same standardised window).
    history : ndarray of shape (m,), the samples just before the window at ``fs_in`` (the last
        ``CONTEXT_S`` seconds are read), or None / empty / with non-finite samples: the context
        features are then the window's own.
    detector : the beat detector (:func:`detect_beats`; None: ``BEAT_DETECTOR``).

    Returns
    -------
    ndarray of shape (len(FEATURE_NAMES),), float64, NaN where a feature is undefined.
    """
    z = standardize(to_model_rate(x, fs_in, cfg)) if standardized is None else standardized
    beats = detect_beats(z, cfg.fs, detector)
    # Centred before resampling (the resampler pads with zeros; see dsp.to_model_rate), and in
    # the model's band when it has one, so that the recorder's bandwidth does not show.
    at_sharpness_rate = x if fs_in == SHARPNESS_FS else resample_poly(x - np.mean(x), *resample_ratio(fs_in, SHARPNESS_FS))
    if cfg.lowpass_hz is not None:
        at_sharpness_rate = lowpass(at_sharpness_rate - np.mean(at_sharpness_rate), cfg.lowpass_hz, SHARPNESS_FS)
    rr = np.diff(beats) / cfg.fs
    own = (rr_statistics(rr), rr_irregularity(rr), atrial_features(z, beats, cfg.fs))
    usable = history is not None and len(history) > 0 and np.isfinite(history).all()  # a gap in a stream: none
    context = context_features(history, x, fs_in, cfg, detector) if usable else own
    atrial, detrended = own[2][:len(ATRIAL_NAMES)], own[2][len(ATRIAL_NAMES):]
    return np.concatenate([own[0], beat_shape_features(z, beats, cfg.fs), sharpness_features(at_sharpness_rate),
                           atrial, own[1], spectrum_features(z, cfg.fs), wave_timing_features(z, beats, cfg.fs),
                           *context, detrended])


def context_features(history, x, fs_in, cfg, detector=None):
    """The interval, irregularity and atrial features (``CONTEXT_NAMES``) of a window together with
    the last ``CONTEXT_S`` seconds of ``history`` before it, as a tuple of three arrays.

    The signal is centred, resampled to the model rate and low-passed as :func:`to_model_rate`
    does a window (any length here), then standardised: the same for ``a * x + b``.
    """
    keep = int(round(CONTEXT_S * fs_in))
    signal = np.concatenate([np.asarray(history, dtype=np.float64)[-keep:], np.asarray(x, dtype=np.float64)])
    y = resample_poly(signal - np.mean(signal), *resample_ratio(fs_in, cfg.fs))
    z = standardize(y if cfg.lowpass_hz is None else lowpass(y, cfg.lowpass_hz, cfg.fs))
    beats = detect_beats(z, cfg.fs, detector)
    rr = np.diff(beats) / cfg.fs
    return rr_statistics(rr), rr_irregularity(rr), atrial_features(z, beats, cfg.fs)


def window_histories(windows, fs, starts_s):
    """What each window of one recording has before it: the samples of the earlier windows that
    reach back ``CONTEXT_S`` seconds from its start without a gap.

    Parameters
    ----------
    windows : ndarray of shape (n, length), the recording's windows at ``fs``, by start time.
    fs : float, Hz.
    starts_s : ndarray of shape (n,), seconds, each window's start.

    Returns
    -------
    list of n ndarrays (empty where nothing came just before): windows that overlap or touch
    join into one stretch of signal, as a stream would have seen it.
    """
    keep = int(round(CONTEXT_S * fs))
    starts = np.round(np.asarray(starts_s, dtype=np.float64) * fs).astype(np.int64)
    out = []
    for i in range(len(starts)):
        parts, earliest = [], int(starts[i])
        for j in range(i - 1, -1, -1):
            if starts[i] - earliest >= keep or not earliest - len(windows[j]) <= starts[j] < earliest:
                break
            parts.append(np.asarray(windows[j][: earliest - starts[j]]))
            earliest = int(starts[j])
        out.append(np.concatenate(parts[::-1])[-keep:] if parts else np.zeros(0))
    return out


SPECTRUM_BAND_HZ = (1.0, 40.0)
ATRIAL_BAND_HZ = (4.0, 9.0)
"""Where fibrillatory waves (and VF) put their power, inside the ECG band ``SPECTRUM_BAND_HZ``."""


def spectrum_features(z, fs):
    """How the standardised window's power spreads over 1-40 Hz (capped at the Nyquist rate).

    Sinus rhythm puts it on a few heart-rate harmonics and the QRS; fibrillatory waves, ectopic
    beats of other shapes and noise spread it. Measured before building (head alone, 5 folds):
    CinC 2017 Challenge F1 0.775 -> 0.782 (OTHER F1 0.666 -> 0.680); leaving one database out,
    CinC AF sensitivity 0.524 -> 0.549, held-out MIT-BIH macro-F1 0.492 -> 0.513.

    Parameters
    ----------
    z : ndarray of shape (n,), float, the standardised window at ``fs`` Hz.
    fs : float, Hz.

    Returns
    -------
    ndarray of shape (len(SPECTRUM_NAMES),), float64: the Shannon entropy of the Hann-windowed
    periodogram's bins in the band, normalised to [0, 1] by the log of their number, and the share
    of the band's power in ``ATRIAL_BAND_HZ``. NaN without power in the band.
    """
    z = np.asarray(z, dtype=np.float64)
    window, band, atrial_band = _spectrum_plan(z.size, float(fs))
    spectrum = np.fft.rfft(z * window)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    total = power[band].sum()
    if band.stop - band.start < 2 or not total > 0:
        return np.full(len(SPECTRUM_NAMES), np.nan)
    share = power[band] / total
    entropy = -(share * np.log(share + 1e-12)).sum() / np.log(share.size)
    return np.array([entropy, power[atrial_band].sum() / total])


@lru_cache(maxsize=8)
def _spectrum_plan(size, fs):
    """Hann window and the bin ranges (slices) of the ECG and atrial bands, once per length and rate."""
    f = np.fft.rfftfreq(size, 1.0 / fs)

    def bins(lo, hi):
        return slice(int(np.searchsorted(f, lo)), int(np.searchsorted(f, hi, side="right")))

    return np.hanning(size), bins(SPECTRUM_BAND_HZ[0], min(SPECTRUM_BAND_HZ[1], fs / 2)), bins(*ATRIAL_BAND_HZ)


def feature_columns(names):
    """Positions in :data:`FEATURE_NAMES` of the features a rhythm head was trained on (a list).

    Raises EcgEdgeError naming the features this version does not compute.
    """
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown:
        raise EcgEdgeError(f"rhythm features {unknown} are not computed by this ecgedge version")
    return [FEATURE_NAMES.index(n) for n in names]


def cnn_weights(classes):
    """The CNN's weight in :func:`combine` per class (ndarray of shape (len(classes),), float64):
    ``CNN_CLASS_WEIGHTS`` where named, else ``CNN_WEIGHT``."""
    return np.array([CNN_CLASS_WEIGHTS.get(name, CNN_WEIGHT) for name in classes], dtype=np.float64)


def combine(cnn_proba, rhythm_proba, cnn_weight=GEOMETRIC_MEAN_WEIGHT):
    """Weighted geometric mean of the CNN's and the rhythm head's class probabilities, renormalised.

    The two err on different windows (on mitdb-rhythm4 the head on the "other" rhythms, the CNN
    on atrial fibrillation); a class both find likely wins.

    Parameters
    ----------
    cnn_proba, rhythm_proba : ndarray of shape (..., n_classes), float.
    cnn_weight : the CNN's weight in [0, 1], one for all classes or one per class
        (:func:`cnn_weights`); the head's is 1 minus it. 0.5: the plain geometric mean.

    Returns
    -------
    ndarray of the same shape, float64, rows summing to 1.
    """
    w = np.asarray(cnn_weight, dtype=np.float64)
    return softmax(w * np.log(np.clip(cnn_proba, 1e-6, None)) + (1.0 - w) * np.log(np.clip(rhythm_proba, 1e-6, None)))
