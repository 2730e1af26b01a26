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

Not caught here: a random walk (its spectrum looks like a slow ECG's; the share below 40 Hz is
0.99) -- the model's NOISY class has to say that one.
"""

from functools import lru_cache

import numpy as np

ECG_BAND_HZ = (0.5, 40.0)
MIN_ECG_BAND_SHARE = 0.75
MAX_LINEAR_SHARE = 0.9


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
    return None


def non_ecg_signals(fs, seconds=10.0, seed=0):
    """Signals no ECG recorder makes, ``seconds`` long at ``fs`` Hz: what a careless or hostile
    user may feed a device (dict name -> ndarray of shape (n,), float64). The gates above refuse
    all but the random walk; ``ecgedge bench robustness`` reports what the model says to each."""
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
