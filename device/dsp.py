"""The one spectrogram: numpy-only signal processing shared by training and the device.

Training imports these functions; the device runs them; the parameters travel in the model
bundle as ``SpectrogramConfig.to_dict()``. There is no second implementation anywhere.

Pipeline for one window of raw samples at any input rate ``fs_in``:

1. ``resample_poly``: polyphase resampling to ``cfg.fs`` (bit-for-bit the algorithm of
   ``scipy.signal.resample_poly`` with its default Kaiser window, which the tests use as oracle);
   then, when ``cfg.lowpass_hz`` is set, ``lowpass`` to that band (a linear-phase Kaiser FIR,
   ``scipy.signal.firwin`` in the tests). Recorders differ most above 40 Hz (CinC 2017's
   AliveCor has ~16x less power at 50-64 Hz than MIT-BIH's Holters; a 125 Hz monitor has none
   above 62.5 Hz): band-limited, a window reads alike from 125 to 500 Hz hardware.
2. standardise the window (zero mean, unit standard deviation), so gain and baseline offset of
   a recorder or patient do not reach the model.
3. for each image channel ``(nperseg, nfft)``: the magnitude STFT with a periodic Hann window,
   frames centred on ``k * hop`` (``nperseg // 2`` zeros padded each side), no detrending,
   scaled by ``1 / sum(window)`` (scipy's ``scaling='spectrum'``); keep the lowest ``n_freq``
   bins; then ``log(magnitude + eps)``.

Short windows show each beat as a vertical stripe (rhythm), long ones the harmonics of the
heart rate (regularity); so channels of different lengths give the network both views.
"""

import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

from ecgedge.device.errors import EcgEdgeError

MAX_RESAMPLE_FACTOR = 1000


@dataclass(frozen=True)
class SpectrogramConfig:
    """Every parameter of the model's input image. Travels in the bundle manifest.

    Attributes
    ----------
    fs : model sampling rate, Hz; every input is resampled to it.
    window_s : window length, seconds.
    hop : STFT hop, samples at ``fs``; the image has ``round(window_s * fs) // hop`` columns.
    channels : one ``(nperseg, nfft)`` pair per image channel, samples at ``fs``.
    n_freq : rows of the image: the lowest ``n_freq`` frequency bins of each channel.
    eps : added to the magnitude (of a unit-variance window) before the log.
    lowpass_hz : None, or the cut-off (Hz) of the low-pass every window gets at ``fs`` after
        resampling (``lowpass``); the rhythm features read the same band.
    """

    fs: float = 128.0
    window_s: float = 10.0
    hop: int = 10
    channels: tuple = ((64, 256), (256, 256), (512, 512))
    n_freq: int = 128
    eps: float = 1e-3
    lowpass_hz: object = None  # optional: see to_dict

    def __post_init__(self):
        # Lists from JSON become tuples, so configs compare and hash by value.
        object.__setattr__(self, "channels", tuple(tuple(int(v) for v in c) for c in self.channels))
        if self.lowpass_hz is not None:
            object.__setattr__(self, "lowpass_hz", float(self.lowpass_hz))

    @property
    def n_samples(self):
        """Samples of one window at the model rate."""
        return int(round(self.window_s * self.fs))

    @property
    def n_time(self):
        """Columns of the image."""
        return self.n_samples // self.hop

    @property
    def image_shape(self):
        """(rows, columns, channels) of the image: frequency, time, channel."""
        return (self.n_freq, self.n_time, len(self.channels))

    def validate(self):
        """Raise EcgEdgeError naming the first invalid value; return self."""
        if not self.fs > 0:
            raise EcgEdgeError(f"spectrogram fs must be > 0 Hz, got {self.fs}")
        if not self.window_s > 0:
            raise EcgEdgeError(f"window_s must be > 0, got {self.window_s}")
        if not 0 < self.hop <= self.n_samples:
            raise EcgEdgeError(f"hop must be in 1..{self.n_samples} samples, got {self.hop}")
        if not self.channels:
            raise EcgEdgeError("channels must name at least one (nperseg, nfft) pair, got none")
        for nperseg, nfft in self.channels:
            if nperseg < 2 or nfft < nperseg:
                raise EcgEdgeError(
                    f"each channel needs 2 <= nperseg <= nfft, got nperseg={nperseg}, nfft={nfft}"
                )
            if self.n_freq > nfft // 2 + 1:
                raise EcgEdgeError(
                    f"n_freq={self.n_freq} is more than the {nfft // 2 + 1} bins of nfft={nfft}"
                )
        if not self.eps > 0:
            raise EcgEdgeError(f"eps must be > 0, got {self.eps}")
        if self.lowpass_hz is not None and not 0 < self.lowpass_hz < self.fs / 2:
            raise EcgEdgeError(f"lowpass_hz must be between 0 and fs / 2 = {self.fs / 2} Hz, got {self.lowpass_hz}")
        return self

    def to_dict(self):
        """JSON-ready settings; ``lowpass_hz`` only when set (configs without it read as before)."""
        d = asdict(self)
        d["channels"] = [list(c) for c in self.channels]
        if d["lowpass_hz"] is None:
            del d["lowpass_hz"]
        return d

    @classmethod
    def from_dict(cls, d):
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise EcgEdgeError(f"unknown spectrogram settings {sorted(unknown)}")
        return cls(**d).validate()

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))


@lru_cache(maxsize=64)
def resample_ratio(fs_in, fs_out):
    """Return ``(up, down)``, coprime integers with ``fs_in * up / down == fs_out``.

    Rates are read as decimals (``250.5`` Hz is ``501/2``); a ratio needing factors above
    1000 is refused rather than approximated.
    """
    if not (np.isfinite(fs_in) and fs_in > 0):
        raise EcgEdgeError(f"input sampling rate must be a positive number of Hz, got {fs_in}")
    ratio = Fraction(str(float(fs_out))) / Fraction(str(float(fs_in)))
    if max(ratio.numerator, ratio.denominator) > MAX_RESAMPLE_FACTOR:
        raise EcgEdgeError(
            f"can not resample {fs_in} Hz to {fs_out} Hz with factors up to "
            f"{MAX_RESAMPLE_FACTOR} (ratio {ratio}); resample the input to a rounder rate first"
        )
    return ratio.numerator, ratio.denominator


def _kaiser_lowpass(up, down):
    """scipy.signal.resample_poly's default filter: firwin(2*10*max+1, 1/max, ('kaiser', 5.0)) * up."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    m = np.arange(2 * half_len + 1) - half_len
    h = np.sinc(m / max_rate) / max_rate
    h *= np.kaiser(2 * half_len + 1, 5.0)
    h /= h.sum()
    return h * up, half_len


@lru_cache(maxsize=32)
def _polyphase_plan(up, down):
    """The resampling filter split into its ``up`` phases, as one matrix.

    Returns ``(weights, first, lead)``. Output ``m = q * up + p`` of scipy's upfirdn-based
    computation is ``padded[first + q * down:][:width] @ weights[p]``, where ``padded`` is
    the input after ``lead`` zeros (and enough zeros after it) and ``width =
    weights.shape[1]``. So all outputs come from one matrix product of a strided view of
    the input with ``weights.T``: one output row per ``down`` input samples.
    """
    h, half_len = _kaiser_lowpass(up, down)
    n_pre_pad = down - half_len % down
    h = np.concatenate([np.zeros(n_pre_pad), h])
    n_pre_remove = (half_len + n_pre_pad) // down
    taps = -(-len(h) // up)
    # Output m of the full upfirdn sits at upsampled time t = m * down and sums
    # x[k] * h[t - k * up] over k = last - taps + 1 .. last, last = t // up, keeping the
    # terms with 0 <= t - k * up < len(h). With taps - 1 zeros before x, those k start at
    # padded index `last`; for m = q * up + p, last = q * down + last(p).
    t = (np.arange(up) + n_pre_remove) * down
    last = t // up
    h_index = t[:, None] - (last[:, None] - taps + 1 + np.arange(taps)[None, :]) * up
    phase = np.where(h_index < len(h), h[np.clip(h_index, 0, len(h) - 1)], 0.0)
    offset = last - last[0]
    weights = np.zeros((up, int(offset.max()) + taps))
    for p in range(up):
        weights[p, offset[p]:offset[p] + taps] = phase[p]
    return weights, int(last[0]), taps - 1


def resample_poly(x, up, down):
    """Polyphase resampling of a 1-D signal by ``up / down``.

    Parameters
    ----------
    x : ndarray of shape (n,), any real dtype.
    up, down : positive ints.

    Returns
    -------
    ndarray of shape (ceil(n * up / down),), float64 -- equal to
    ``scipy.signal.resample_poly(x, up, down)``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise EcgEdgeError(f"resample_poly takes a 1-D signal, got shape {x.shape}")
    g = np.gcd(int(up), int(down))
    up, down = int(up) // g, int(down) // g
    if up == down == 1:
        return x.copy()
    if x.size == 0:
        return x.copy()
    weights, first, lead = _polyphase_plan(up, down)
    n_out = -(-x.size * up // down)
    n_rows = -(-n_out // up)
    padded = np.zeros(max(first + (n_rows - 1) * down + weights.shape[1], lead + x.size))
    padded[lead:lead + x.size] = x
    rows = _frames(padded, first, weights.shape[1], down, n_rows)
    return (rows @ weights.T).reshape(-1)[:n_out]


LOWPASS_S = 0.5
"""Length of ``lowpass``'s FIR, seconds (65 taps at 128 Hz: 37-43 Hz transition for a 40 Hz cut-off)."""


@lru_cache(maxsize=16)
def lowpass_taps(cutoff_hz, fs):
    """Linear-phase low-pass FIR: ``scipy.signal.firwin(numtaps, cutoff_hz, fs=fs, window=('kaiser', 5.0))``
    with ``numtaps`` the odd number nearest ``LOWPASS_S * fs``; unit gain at 0 Hz."""
    numtaps = int(round(LOWPASS_S * fs)) // 2 * 2 + 1
    m = np.arange(numtaps) - (numtaps - 1) / 2
    h = 2 * cutoff_hz / fs * np.sinc(2 * cutoff_hz / fs * m) * np.kaiser(numtaps, 5.0)
    return h / h.sum()


def lowpass(x, cutoff_hz, fs):
    """``x`` (1-D, at ``fs`` Hz) through ``lowpass_taps`` without delay (zeros beyond its ends)."""
    return np.convolve(np.asarray(x, dtype=np.float64), lowpass_taps(float(cutoff_hz), float(fs)), mode="same")


@lru_cache(maxsize=16)
def hann_periodic(n):
    """The periodic (DFT-even) Hann window of length n, as scipy.signal.get_window('hann', n)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _frames(padded, start, nperseg, hop, n_frames):
    """Read-only (n_frames, nperseg) view of ``padded`` (1-D, contiguous): frame k starts at
    ``start + k * hop``. (The ndarray constructor checks the frames fit in ``padded``, and costs
    1 us where ``as_strided`` costs 5; the DSP makes four such views per window.)"""
    step = padded.strides[0]
    view = np.ndarray((n_frames, nperseg), padded.dtype, padded, start * step, (hop * step, step))
    view.flags.writeable = False
    return view


@lru_cache(maxsize=32)
def _scaled_hann(nperseg):
    """The periodic Hann window divided by its sum (scipy's ``scaling='spectrum'``)."""
    window = hann_periodic(nperseg)
    return window / window.sum()


def _magnitude(frames, nfft, n_bins):
    """(n_frames, n_bins): the lowest ``n_bins`` of ``|rfft(frame * hann, nfft)| / sum(hann)``."""
    spectrum = np.fft.rfft(frames * _scaled_hann(frames.shape[1]), n=nfft, axis=1)
    return np.abs(spectrum[:, :n_bins])


def _padded(x, pad, tail):
    """``x`` (float64) with ``pad`` zeros before and ``pad + tail`` after."""
    padded = np.zeros(x.size + 2 * pad + tail)
    padded[pad:pad + x.size] = x
    return padded


def stft_magnitude(x, nperseg, nfft, hop, n_frames=None, n_bins=None):
    """Magnitude STFT with centred frames, before any log.

    Parameters
    ----------
    x : ndarray of shape (n,), float.
    nperseg, nfft, hop : ints, samples.
    n_frames : columns to return; default ``n // hop``.
    n_bins : rows to return (the lowest frequencies); default all ``nfft // 2 + 1``.

    Returns
    -------
    ndarray of shape (n_bins, n_frames), float64: ``|rfft(frame * hann, nfft)| /
    sum(hann)`` for frames centred on ``k * hop``, the signal padded by ``nperseg // 2`` zeros
    on each side. Equals ``scipy.signal.spectrogram(np.pad(x, nperseg // 2), window='hann',
    nperseg=nperseg, noverlap=nperseg - hop, nfft=nfft, detrend=False, scaling='spectrum',
    mode='magnitude')[2][:, :n_frames]``.
    """
    x = np.asarray(x, dtype=np.float64)
    n_frames = x.size // hop if n_frames is None else n_frames
    n_bins = nfft // 2 + 1 if n_bins is None else n_bins
    padded = _padded(x, nperseg // 2, nperseg + n_frames * hop)
    return _magnitude(_frames(padded, 0, nperseg, hop, n_frames), nfft, n_bins).T


def standardize(x):
    """Zero-mean, unit-standard-deviation copy of a window (float64); a flat window stays zero."""
    centred = np.asarray(x, dtype=np.float64) - np.mean(x)
    sd = np.sqrt(np.dot(centred, centred) / max(centred.size, 1))
    return centred / sd if sd > 0 else centred


def spectrogram_image(x, cfg, standardized=False):
    """The model's input image of one window already at the model rate.

    Parameters
    ----------
    x : ndarray of shape (cfg.n_samples,), float, any amplitude unit.
    cfg : SpectrogramConfig.
    standardized : True when ``x`` is ``standardize`` of the window already (the device shares
        it with the rhythm features).

    Returns
    -------
    ndarray of shape cfg.image_shape (frequency, time, channel), float32, natural-log
    magnitude: channel c is ``log(stft_magnitude(standardize(x), *cfg.channels[c], cfg.hop,
    cfg.n_time, cfg.n_freq) + cfg.eps)``, computed from one padded copy of the window.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (cfg.n_samples,):
        raise EcgEdgeError(f"a window has {cfg.n_samples} samples at {cfg.fs} Hz, got shape {x.shape}")
    pad = max(nperseg for nperseg, _ in cfg.channels) // 2
    padded = _padded(x if standardized else standardize(x), pad, 2 * pad + cfg.n_time * cfg.hop)
    magnitude = np.empty((cfg.n_freq, cfg.n_time, len(cfg.channels)), dtype=np.float32)
    for c, (nperseg, nfft) in enumerate(cfg.channels):
        frames = _frames(padded, pad - nperseg // 2, nperseg, cfg.hop, cfg.n_time)
        magnitude[:, :, c] = _magnitude(frames, nfft, cfg.n_freq).T
    magnitude += np.float32(cfg.eps)
    return np.log(magnitude, out=magnitude)


def to_model_rate(x, fs_in, cfg):
    """Resample one raw window to ``cfg.fs`` and fit it to exactly ``cfg.n_samples`` samples.

    Parameters
    ----------
    x : ndarray of shape (round(cfg.window_s * fs_in),) -- a window at the input rate.
    fs_in : float, Hz.

    Returns
    -------
    ndarray of shape (cfg.n_samples,), float64, centred (zero mean before resampling): the
    same for ``x`` and ``a * x + b``, up to rounding, for any gain a > 0 and offset b; low-passed
    to ``cfg.lowpass_hz`` when set.
    """
    up, down = resample_ratio(fs_in, cfg.fs)
    # Centred first: the resampler pads with zeros, so an offset would ring at both ends and
    # a window's label would depend on its baseline (an ADC's zero, a DC offset).
    x = np.asarray(x, dtype=np.float64)
    y = resample_poly(x - np.mean(x), up, down)
    if abs(y.size - cfg.n_samples) > 1:
        raise EcgEdgeError(
            f"a {cfg.window_s} s window at {fs_in} Hz should have {int(round(cfg.window_s * fs_in))} "
            f"samples, got {np.size(x)}"
        )
    if y.size < cfg.n_samples:
        y = np.concatenate([y, np.zeros(cfg.n_samples - y.size)])
    y = y[: cfg.n_samples]
    return y if cfg.lowpass_hz is None else lowpass(y, cfg.lowpass_hz, cfg.fs)


def window_image(x, fs_in, cfg):
    """Raw window at ``fs_in`` -> model input image (shape cfg.image_shape, float32).

    This is the whole preprocessing, used by training and on the device alike.
    """
    return spectrogram_image(to_model_rate(x, fs_in, cfg), cfg)


def window_length(fs_in, cfg):
    """Samples of one window at the input rate ``fs_in``."""
    return int(round(cfg.window_s * fs_in))
