"""Seeded augmentation of raw ECG windows and class-balanced sampling of training epochs.

Augmentation works on the raw window at its input rate, before
:func:`ecgedge.device.dsp.window_image`, so the training images come from the one spectrogram the
device computes. ``window_image`` standardises every window, so a plain gain change would not
reach the image; amplitude is therefore varied *within* the window (a slow modulation, as
breathing does to the ECG), which survives standardisation.

Every random draw comes from a ``numpy.random.Generator`` seeded by ``(seed, epoch)``, so an epoch's
images are the same whether a run is fresh or resumed.
"""

from dataclasses import asdict, dataclass

import numpy as np

from ecgedge.device.dsp import window_image
from ecgedge.device.errors import EcgEdgeError


@dataclass(frozen=True)
class AugmentConfig:
    """Largest strength of each augmentation; each window draws its own uniformly up to it.

    Attributes
    ----------
    wander : peak baseline wander, in units of the window's standard deviation.
    wander_hz : (low, high) frequency range of the wander sinusoid, Hz.
    noise : standard deviation of added white gaussian noise, in window standard deviations.
    modulation : depth of the slow amplitude modulation (0.2 -> gain between 0.8 and 1.2).
    modulation_hz : (low, high) frequency range of the modulation, Hz.
    shift_s : largest time shift, seconds (either direction; the edge is filled by reflection).
    """

    wander: float = 0.5
    wander_hz: tuple = (0.05, 0.5)
    noise: float = 0.05
    modulation: float = 0.2
    modulation_hz: tuple = (0.1, 0.4)
    shift_s: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "wander_hz", tuple(float(v) for v in self.wander_hz))
        object.__setattr__(self, "modulation_hz", tuple(float(v) for v in self.modulation_hz))

    def validate(self):
        """Raise EcgEdgeError naming the first invalid value; return self."""
        for name in ("wander", "noise", "modulation", "shift_s"):
            if not getattr(self, name) >= 0:
                raise EcgEdgeError(f"augmentation {name} must be >= 0, got {getattr(self, name)}")
        if self.modulation >= 1:
            raise EcgEdgeError(f"augmentation modulation must be < 1, got {self.modulation}")
        for name in ("wander_hz", "modulation_hz"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise EcgEdgeError(f"augmentation {name} must be (low, high) with 0 < low <= high, got {(lo, hi)}")
        return self

    def to_dict(self):
        d = asdict(self)
        d["wander_hz"], d["modulation_hz"] = list(self.wander_hz), list(self.modulation_hz)
        return d


def _sinusoids(rng, n, t, amplitude, hz_range):
    """(n, len(t)) sinusoids with amplitudes uniform in [0, amplitude] and random frequency and phase."""
    amp = rng.uniform(0.0, amplitude, size=(n, 1))
    freq = rng.uniform(hz_range[0], hz_range[1], size=(n, 1))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n, 1))
    return amp * np.sin(2 * np.pi * freq * t[None, :] + phase)


def _shift(x, shifts):
    """Shift each row of ``x`` by ``shifts[i]`` samples, filling the edge by reflection."""
    pad = int(np.max(np.abs(shifts), initial=0))
    if pad == 0:
        return x
    padded = np.pad(x, ((0, 0), (pad, pad)), mode="reflect")
    cols = pad - shifts[:, None] + np.arange(x.shape[1])[None, :]
    return np.take_along_axis(padded, cols, axis=1)


def augment_windows(x, fs, rng, cfg=AugmentConfig()):
    """Augmented copies of raw windows.

    Parameters
    ----------
    x : ndarray of shape (n, n_samples), float -- raw windows at ``fs``, physical units (mV).
    fs : float, Hz.
    rng : numpy.random.Generator.
    cfg : AugmentConfig.

    Returns
    -------
    ndarray of shape (n, n_samples), float64: time-shifted, amplitude-modulated windows with
    baseline wander and white noise added (wander and noise scaled by each window's SD).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise EcgEdgeError(f"augment_windows takes windows of shape (n, n_samples), got {x.shape}")
    n, length = x.shape
    if n == 0:
        return x.copy()
    max_shift = min(int(round(cfg.shift_s * fs)), length - 1)
    shifts = rng.integers(-max_shift, max_shift + 1, size=n)
    t = np.arange(length) / fs
    sd = x.std(axis=1, keepdims=True)
    gain = 1.0 + _sinusoids(rng, n, t, cfg.modulation, cfg.modulation_hz)
    wander = _sinusoids(rng, n, t, cfg.wander, cfg.wander_hz)
    noise = rng.standard_normal((n, length)) * rng.uniform(0.0, cfg.noise, size=(n, 1))
    return _shift(x, shifts) * gain + (wander + noise) * sd


def balanced_indices(y, max_per_class, rng):
    """One epoch's class-balanced sample of training windows.

    Parameters
    ----------
    y : ndarray of shape (n,), int class indices.
    max_per_class : int or None -- at most this many windows of each class (all if None).
    rng : numpy.random.Generator.

    Returns
    -------
    ndarray of positions into ``y``, int64, shuffled: ``min(count, max_per_class)`` windows of
    each class drawn without replacement.
    """
    y = np.asarray(y)
    chosen = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        k = len(members) if max_per_class is None else min(len(members), int(max_per_class))
        chosen.append(rng.choice(members, size=k, replace=False))
    picked = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    return rng.permutation(picked).astype(np.int64)


def balanced_class_weights(y, n_classes):
    """``{class: n / (n_present * count)}`` for the classes present in ``y`` (sklearn's "balanced")."""
    counts = np.bincount(np.asarray(y), minlength=n_classes)
    present = np.flatnonzero(counts)
    return {int(c): float(len(y) / (len(present) * counts[c])) for c in present}


def images_of(x, fs, cfg):
    """Spectrogram images of raw windows through the device's ``window_image``.

    Parameters
    ----------
    x : ndarray of shape (n, n_samples) -- raw windows at ``fs`` Hz.
    cfg : SpectrogramConfig.

    Returns
    -------
    ndarray of shape (n, *cfg.image_shape), float32.
    """
    out = np.empty((len(x),) + tuple(cfg.image_shape), dtype=np.float32)
    for i, window in enumerate(x):
        out[i] = window_image(window, fs, cfg)
    return out


def epoch_batch(x, y, fs, spec, seed, epoch, max_per_class=None, augment=None):
    """The training images and labels of one epoch: balanced sample, augmented, to images.

    Parameters
    ----------
    x : ndarray of shape (n, n_samples) -- raw training windows at ``fs`` Hz.
    y : ndarray of shape (n,), int class indices.
    spec : SpectrogramConfig.
    seed, epoch : ints; the epoch's random draws depend on these only.
    max_per_class : cap of windows per class in this epoch (None: all).
    augment : AugmentConfig, or None for no augmentation.

    Returns
    -------
    (images, labels): ndarray (m, *spec.image_shape) float32 and ndarray (m,) int64.
    """
    rng = np.random.default_rng([int(seed), int(epoch)])
    idx = balanced_indices(y, max_per_class, rng)
    windows = np.asarray(x)[idx]
    if augment is not None:
        windows = augment_windows(windows, fs, rng, augment)
    return images_of(windows, fs, spec), np.asarray(y)[idx].astype(np.int64)
