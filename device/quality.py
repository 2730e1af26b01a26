"""Is this ECG at all? Cheap checks that refuse signals no ECG recorder makes.

The quality checks of :func:`ecgedge.device.runtime.window_problem` refuse windows the device
can not read (flat line, clipping, non-finite samples). These two refuse windows that are not
ECG, so that noise, mains hum or a test signal is never called a rhythm:

- **Most power above 40 Hz.** ECG's power above 0.5 Hz lies almost all below 40 Hz. Measured on
  10 s windows at each database's own rate (mitdb 360 Hz, CinC 2017 300 Hz, vfdb and cudb
  250 Hz; every window of mitdb, vfdb, cudb and every 8th CinC recording): the share below
  40 Hz was >= 0.87 in 99.9 % of windows of every class and database (lowest: vfdb's NSR 0.871,
  cudb's VF 0.877). White noise has 0.22-0.66 (at 360 to 125 Hz), muscle bursts 0.23-0.58,
  50/60 Hz mains hum 0.00. Threshold ``MIN_ECG_BAND_SHARE`` = 0.75.
- **Piecewise linear.** A sawtooth, triangle or square wave has a second difference of exactly
  zero almost everywhere (share 0.98-0.99); real windows at most 0.71 (cudb VF; mitdb <= 0.17).
  Threshold ``MAX_LINEAR_SHARE`` = 0.9.
- **A featureless power law like a random walk's.** A random walk (the running sum of white
  noise) keeps 99 % of its power below 40 Hz, so the first check passes it, and the model
  called it VENT. Its spectrum is a straight line of slope -2 in log-log from
  0.5 Hz up to the Nyquist rate, and its first difference is white. ECG's is not: heartbeats
  and QRS complexes put humps and harmonics on it, VF a peak at 3-9 Hz, and the recorder's
  filters bend it above 40 Hz. Three numbers of the Welch spectrum (Hann segments of a fifth
  of the window, 2 s of 10 s, half overlapping) say it: the RMS distance (log10 units) of 16
  log-spaced band powers from 0.5 Hz to 0.45 fs to their straight-line fit, that line's slope,
  and the spectral flatness of the first difference above 0.5 Hz. Measured on 1,800 random
  walks (Gaussian, uniform and integer steps; 100 to 1000 Hz): distance <= 0.245, slope -2.21 to
  -1.73, flatness >= 0.91.
  Refused when all three hold: distance < ``MAX_POWER_LAW_RESIDUAL`` = 0.3, slope within
  ``RANDOM_WALK_SLOPE`` = (-2.5, -1.5), flatness > ``MIN_DIFF_FLATNESS`` = 0.85. Of the real
  windows (39,873 non-overlapping 10 s windows of the four databases) only 22 of cudb's
  stretches swamped by clipping and defibrillation artifacts meet them. Not caught: a random
  walk that went through a recorder's 40 Hz low-pass (a drifting electrode as a device records
  it). Below 35 Hz alone the same three numbers put 511 of 16,220 real windows among the
  walks: there the spectrum of ECG is a power law of slope about -2 too.
"""

from functools import lru_cache

import numpy as np

ECG_BAND_HZ = (0.5, 40.0)
MIN_ECG_BAND_SHARE = 0.75
MAX_LINEAR_SHARE = 0.9
MAX_POWER_LAW_RESIDUAL = 0.3
RANDOM_WALK_SLOPE = (-2.5, -1.5)
MIN_DIFF_FLATNESS = 0.85
WELCH_SEGMENTS = 5
POWER_LAW_BANDS = 16


def ecg_band_share(x, fs):
    """Share of the power above 0.5 Hz that lies in 0.5-40 Hz (40 Hz capped at 0.45 fs).

    Parameters
    ----------
    x : ndarray of shape (n,), float, a raw window, any amplitude units.
    fs : float, Hz.

    Returns
    -------
    float in [0, 1]; 1.0 for a window without power above 0.5 Hz.
    """
    x = np.asarray(x, dtype=np.float64)
    window, above_lo, in_band = _spectrum_plan(x.size, float(fs))
    spectrum = np.fft.rfft((x - x.mean()) * window)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    above = power[above_lo:].sum()
    band = power[above_lo:in_band].sum()
    return float(band / above) if above > 0 else 1.0


@lru_cache(maxsize=8)
def _spectrum_plan(n, fs):
    """Hann window and the bins where 0.5 Hz and the band's top (40 Hz, at most 0.45 fs) begin,
    made once per window length and rate (every window of a stream has the same)."""
    f = np.fft.rfftfreq(n, 1.0 / fs)
    top = min(ECG_BAND_HZ[1], 0.45 * fs)
    return np.hanning(n), int(np.searchsorted(f, ECG_BAND_HZ[0])), int(np.searchsorted(f, top, side="right"))


def linear_share(x):
    """Share of samples whose second difference is zero (to 1e-9 of the window's range)."""
    x = np.asarray(x, dtype=np.float64)
    span = np.ptp(x)
    if x.size < 3 or span == 0:
        return 1.0
    return float(np.mean(np.abs(np.diff(x, 2)) <= 1e-9 * span))


def welch_spectrum(x, fs, segments=WELCH_SEGMENTS):
    """Welch's power spectrum, up to a constant: periodic-Hann segments of a ``segments``-th of
    the window (2 s of a 10 s window), overlapping by half, each centred, their periodograms
    averaged (``scipy.signal.welch``'s defaults, in numpy).

    Returns
    -------
    (f, p) : ndarrays of shape (m,), Hz and power.
    """
    x = np.asarray(x, dtype=np.float64)
    f, index, window = _welch_plan(x.size, float(fs), segments)
    pieces = x[index]
    pieces -= pieces.sum(axis=1, keepdims=True) / pieces.shape[1]
    spectra = np.fft.rfft(pieces * window, axis=1)
    return f, (spectra.real ** 2 + spectra.imag ** 2).sum(axis=0) / len(index)


@lru_cache(maxsize=8)
def _welch_plan(size, fs, segments):
    """Frequencies, segment sample indices and window of :func:`welch_spectrum`, once per length and rate."""
    n = max(size // segments, min(size, 8))
    starts = np.arange(0, size - n + 1, n // 2)
    return np.fft.rfftfreq(n, 1.0 / fs), starts[:, None] + np.arange(n), np.hanning(n + 1)[:-1]


@lru_cache(maxsize=8)
def _band_plan(size, fs):
    """Bin ranges of the 16 log-spaced bands from 0.5 Hz to 0.45 fs in the Welch spectrum of a
    window of ``size`` samples, and their log10 centres."""
    f = _welch_plan(size, fs, WELCH_SEGMENTS)[0]
    edges = np.geomspace(ECG_BAND_HZ[0], 0.45 * fs, POWER_LAW_BANDS + 1)
    bins = np.searchsorted(f, edges)
    return bins[:-1], bins[1:], np.log10(np.sqrt(edges[:-1] * edges[1:]))


def power_law_fit(x, fs):
    """How well the spectrum from 0.5 Hz to 0.45 fs is one power law (see the module docstring).

    Returns
    -------
    (residual, slope, flatness) : floats -- the RMS distance (log10) of the 16 log-spaced band
    powers from their straight-line fit in log-log, that line's slope, and the spectral flatness
    (geometric over arithmetic mean) of the first difference's Welch spectrum above 0.5 Hz.
    NaN for a window with too few bands or no power.
    """
    x = np.asarray(x, dtype=np.float64)
    _, p = welch_spectrum(x, fs)
    lo, hi, centres = _band_plan(x.size, float(fs))
    cumulative = np.concatenate([[0.0], np.cumsum(p)])
    counts = hi - lo
    sums = cumulative[hi] - cumulative[lo]
    used = (counts > 0) & (sums > 0)
    fd, pd = welch_spectrum(np.diff(x), fs)
    pd = pd[np.searchsorted(fd, ECG_BAND_HZ[0]):]
    if used.sum() < 4 or not pd.size or np.any(pd <= 0):
        return float("nan"), float("nan"), float("nan")
    cx, cy = centres[used], np.log10(sums[used] / counts[used])
    dx, dy = cx - cx.sum() / cx.size, cy - cy.sum() / cy.size
    slope = (dx * dy).sum() / (dx * dx).sum()
    residual = np.sqrt(((dy - slope * dx) ** 2).sum() / cy.size)
    flatness = np.exp(np.log(pd).sum() / pd.size) / (pd.sum() / pd.size)
    return float(residual), float(slope), float(flatness)


def like_a_random_walk(x, fs):
    """True when the window's spectrum is the featureless power law of a random walk."""
    residual, slope, flatness = power_law_fit(x, fs)
    return bool(residual < MAX_POWER_LAW_RESIDUAL and RANDOM_WALK_SLOPE[0] < slope < RANDOM_WALK_SLOPE[1]
                and flatness > MIN_DIFF_FLATNESS)


def not_ecg(window, fs):
    """Why a raw window is not ECG, or None when it may be.

    Returns
    -------
    str or None -- "not ECG: ..." with the measured share.
    """
    linear = linear_share(window)
    if linear > MAX_LINEAR_SHARE:
        return f"not ECG: piecewise linear ({linear:.0%} of samples on straight lines; a test signal?)"
    band = ecg_band_share(window, fs)
    if band < MIN_ECG_BAND_SHARE:
        return f"not ECG: {1 - band:.0%} of its power above 0.5 Hz lies above {ECG_BAND_HZ[1]:g} Hz (noise or mains hum?)"
    if like_a_random_walk(window, fs):
        return "not ECG: its spectrum is one featureless power law (a random walk?)"
    return None


def non_ecg_signals(fs, seconds=10.0, seed=0):
    """Signals no ECG recorder makes, ``seconds`` long at ``fs`` Hz: what a careless or hostile
    user may feed a device (dict name -> ndarray of shape (n,), float64). The gates above refuse
    all of them (the flat line with a spike is the runtime's flat-line check's); ``ecgedge bench
    robustness`` reports what the device says to each."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fs))
    t = np.arange(n) / fs
    flat_spike = np.zeros(n)
    flat_spike[n // 2] = 5.0
    return {
        "white noise": rng.standard_normal(n),
        "mains hum 50 Hz": np.sin(2 * np.pi * 50 * t),
        "mains hum 60 Hz + offset": 0.3 * np.sin(2 * np.pi * 60 * t) + 2.0,
        "random walk": np.cumsum(rng.standard_normal(n)) * 0.05,
        "sawtooth 1.2 Hz": (1.2 * t) % 1.0,
        "square wave 1.1 Hz": np.sign(np.sin(2 * np.pi * 1.1 * t)),
        "flat line with a spike": flat_spike,
        "muscle bursts": rng.standard_normal(n) * (np.sin(2 * np.pi * 0.5 * t) > 0.3),
    }
