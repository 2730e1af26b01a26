"""The one spectrogram (ecgedge.device.dsp) against scipy.signal, plus its properties.

scipy is the oracle here only; device/ never imports it.
"""

import json

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from ecgedge.device.dsp import (
    SpectrogramConfig,
    lowpass,
    lowpass_taps,
    resample_poly,
    resample_ratio,
    stft_magnitude,
    window_image,
    window_length,
)
from ecgedge.device.errors import EcgEdgeError
from ecgedge.train.data import Interval, cut_windows

# float32 image of log magnitudes: values of order 1..10, float32 has ~7 digits.
IMAGE_ATOL = 1e-4

# Every default of SpectrogramConfig overridden.
ODD_CFG = SpectrogramConfig(fs=100.0, window_s=6.0, hop=7, channels=((50, 128), (101, 101)),
                            n_freq=40, eps=1e-2)


def scipy_stft_magnitude(x, nperseg, nfft, hop, n_frames):
    """The magnitude STFT by scipy.signal.spectrogram, with every default spelled out."""
    _, _, mag = scipy.signal.spectrogram(
        np.pad(x, nperseg // 2), fs=1.0, window=("hann"), nperseg=nperseg,
        noverlap=nperseg - hop, nfft=nfft, detrend=False, return_onesided=True,
        scaling="spectrum", axis=-1, mode="magnitude",
    )
    return mag[:, :n_frames]


def scipy_lowpass(x, cutoff_hz, fs):
    """firwin's filter run causally by lfilter, its delay of (numtaps - 1) / 2 samples taken back."""
    numtaps = int(round(0.5 * fs)) // 2 * 2 + 1
    taps = scipy.signal.firwin(numtaps, cutoff_hz, fs=fs, window=("kaiser", 5.0))
    delay = (numtaps - 1) // 2
    return scipy.signal.lfilter(taps, 1.0, np.pad(x, (0, delay)))[delay:]


def scipy_window_image(x, fs_in, cfg):
    """window_image rebuilt from scipy.signal.resample_poly and scipy.signal.spectrogram
    (the window centred before resampling, so no offset rings at its ends)."""
    up, down = resample_ratio(fs_in, cfg.fs)
    x = np.asarray(x, dtype=np.float64)
    y = scipy.signal.resample_poly(x - x.mean(), up, down, axis=0,
                                   window=("kaiser", 5.0), padtype="constant", cval=0.0)
    y = np.pad(y, (0, max(0, cfg.n_samples - y.size)))[: cfg.n_samples]
    if cfg.lowpass_hz is not None:
        y = scipy_lowpass(y, cfg.lowpass_hz, cfg.fs)
    z = y - y.mean()
    z = z / z.std()
    channels = [
        np.log(scipy_stft_magnitude(z, nperseg, nfft, cfg.hop, cfg.n_time)[: cfg.n_freq] + cfg.eps)
        for nperseg, nfft in cfg.channels
    ]
    return np.stack(channels, axis=-1)


def ecg_like(n, fs, seed):
    """Seeded ECG-like test signal (n,) float64, mV: spikes at ~75 bpm, baseline wander, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    beats = np.cumsum(rng.uniform(0.7, 0.9, size=int(t[-1] / 0.7) + 2))
    spikes = sum(np.exp(-(((t - b) / 0.02) ** 2)) for b in beats)
    return spikes + 0.2 * np.sin(2 * np.pi * 0.3 * t) + 0.02 * rng.standard_normal(n)


@pytest.mark.parametrize("fs_in", [250.0, 360.0, 100.0, 128.0])
def test_window_image_equals_scipy_pipeline(fs_in):
    x = ecg_like(window_length(fs_in, ODD_CFG), fs_in, seed=1)
    image = window_image(x, fs_in, ODD_CFG)
    assert image.shape == (40, 600 // 7, 2) and image.dtype == np.float32
    np.testing.assert_allclose(image, scipy_window_image(x, fs_in, ODD_CFG), rtol=0, atol=IMAGE_ATOL)


@pytest.mark.parametrize("fs_in", [250.0, 360.0, 125.0])
def test_low_passed_window_image_equals_scipy_pipeline(fs_in):
    cfg = SpectrogramConfig(fs=128.0, hop=20, channels=((32, 128), (512, 512)), n_freq=64, lowpass_hz=40.0)
    x = ecg_like(window_length(fs_in, cfg), fs_in, seed=4)
    np.testing.assert_allclose(window_image(x, fs_in, cfg), scipy_window_image(x, fs_in, cfg), rtol=0, atol=IMAGE_ATOL)


@pytest.mark.parametrize("cutoff,fs", [(40.0, 128.0), (40.0, 360.0), (25.0, 100.0)])
def test_lowpass_equals_scipy_firwin_without_delay(cutoff, fs):
    numtaps = int(round(0.5 * fs)) // 2 * 2 + 1
    np.testing.assert_allclose(lowpass_taps(cutoff, fs),
                               scipy.signal.firwin(numtaps, cutoff, fs=fs, window=("kaiser", 5.0)), atol=1e-15)
    x = np.random.default_rng(5).standard_normal(1000)
    np.testing.assert_allclose(lowpass(x, cutoff, fs), scipy_lowpass(x, cutoff, fs), atol=1e-12)


def test_lowpass_keeps_the_ecg_band_and_removes_what_lies_above():
    fs = 128.0
    t = np.arange(1280) / fs
    inner = slice(64, -64)  # away from the zero-padded ends
    for f, gain in [(5.0, 1.0), (30.0, 1.0), (45.0, 0.0), (60.0, 0.0)]:
        y = lowpass(np.sin(2 * np.pi * f * t), 40.0, fs)
        assert np.sqrt(2 * np.mean(y[inner] ** 2)) == pytest.approx(gain, abs=0.01), f


@pytest.mark.parametrize("lowpass_hz", [0.0, -5.0, 64.0, 100.0])
def test_config_refuses_a_lowpass_outside_the_band(lowpass_hz):
    with pytest.raises(EcgEdgeError, match="lowpass_hz"):
        SpectrogramConfig(lowpass_hz=lowpass_hz).validate()


def test_default_config_image_equals_scipy_on_mitdb_rate():
    cfg = SpectrogramConfig()
    x = ecg_like(window_length(360.0, cfg), 360.0, seed=2)
    image = window_image(x, 360.0, cfg)
    assert image.shape == (128, 128, 3)
    np.testing.assert_allclose(image, scipy_window_image(x, 360.0, cfg), rtol=0, atol=IMAGE_ATOL)


@pytest.mark.parametrize("nperseg,nfft,hop", [(64, 256, 10), (101, 128, 7), (32, 32, 32)])
def test_stft_magnitude_equals_scipy_spectrogram(nperseg, nfft, hop):
    x = np.random.default_rng(3).standard_normal(1000)
    ours = stft_magnitude(x, nperseg, nfft, hop)
    np.testing.assert_allclose(ours, scipy_stft_magnitude(x, nperseg, nfft, hop, 1000 // hop),
                               rtol=1e-10, atol=1e-13)


def test_hann_is_periodic_not_symmetric():
    # np.hanning is symmetric and differs from scipy's periodic Hann by ~1e-2: a wrong window
    # would be caught by this test, not only by the tolerance of the others.
    x = np.zeros(256)
    x[128] = 1.0
    mag = stft_magnitude(x, 16, 16, 1)
    periodic = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(16) / 16)
    # Frame k is centred on sample k, so it sees the impulse at window position 128 - k + 8.
    k = np.arange(121, 137)
    np.testing.assert_allclose(mag[0, k], periodic[136 - k] / periodic.sum(), atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Properties

FS = st.sampled_from([50.0, 64.0, 100.0, 128.0])
WINDOW_S = st.sampled_from([1.0, 2.0, 2.5, 4.0])


@st.composite
def configs(draw):
    """Arbitrary valid SpectrogramConfig of small size."""
    fs, window_s = draw(FS), draw(WINDOW_S)
    n_samples = int(round(fs * window_s))
    pairs = draw(st.lists(
        st.integers(2, 64).flatmap(lambda p: st.tuples(st.just(p), st.integers(p, 128))),
        min_size=1, max_size=3,
    ))
    n_freq = draw(st.integers(1, min(nfft // 2 + 1 for _, nfft in pairs)))
    return SpectrogramConfig(fs=fs, window_s=window_s, hop=draw(st.integers(1, n_samples)),
                             channels=tuple(pairs), n_freq=n_freq,
                             eps=draw(st.floats(1e-6, 1.0)),
                             lowpass_hz=draw(st.one_of(st.none(), st.floats(1.0, fs / 2 - 1.0)))).validate()


@settings(max_examples=40, deadline=None)
@given(cfg=configs(), fs_in=st.sampled_from([100.0, 128.0, 250.0, 360.0]))
def test_image_shape_formula(cfg, fs_in):
    x = np.random.default_rng(0).standard_normal(window_length(fs_in, cfg))
    image = window_image(x, fs_in, cfg)
    assert image.shape == (cfg.n_freq, int(round(cfg.window_s * cfg.fs)) // cfg.hop, len(cfg.channels))
    assert image.dtype == np.float32 and np.isfinite(image).all()


@settings(max_examples=40, deadline=None)
@given(cfg=configs())
def test_config_json_round_trip(cfg):
    text = cfg.to_json()
    back = SpectrogramConfig.from_json(text)
    assert back == cfg
    assert json.loads(text) == cfg.to_dict()
    assert back.to_json() == text


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(64, 600),
    nperseg=st.integers(2, 64),
    extra=st.integers(0, 64),
    hop=st.integers(1, 32),
    a=st.floats(-1e3, 1e3).filter(lambda v: abs(v) > 1e-3),
    seed=st.integers(0, 2**16),
)
def test_stft_magnitude_scales_by_abs_a(n, nperseg, extra, hop, a, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal(n), rng.standard_normal(n)
    mag = stft_magnitude(x, nperseg, nperseg + extra, hop)
    np.testing.assert_allclose(stft_magnitude(a * x, nperseg, nperseg + extra, hop), abs(a) * mag,
                               rtol=1e-9, atol=1e-12 * abs(a))
    # The complex STFT is linear, so its magnitude obeys the triangle inequality.
    both = stft_magnitude(x + y, nperseg, nperseg + extra, hop)
    assert (both <= mag + stft_magnitude(y, nperseg, nperseg + extra, hop) + 1e-12).all()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), up=st.integers(1, 50), down=st.integers(1, 50),
       seed=st.integers(0, 2**16))
def test_resample_poly_equals_scipy(n, up, down, seed):
    x = np.random.default_rng(seed).standard_normal(n)
    np.testing.assert_allclose(resample_poly(x, up, down), scipy.signal.resample_poly(x, up, down),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fs_in,fs_out,expected", [(360, 128, (16, 45)), (250, 128, (64, 125)),
                                                   (128, 128, (1, 1)), (250.5, 128, (256, 501))])
def test_resample_ratio(fs_in, fs_out, expected):
    assert resample_ratio(fs_in, fs_out) == expected


@pytest.mark.parametrize("fs_in", [0, -5, float("nan"), 1234.567])
def test_resample_ratio_refuses_bad_rates(fs_in):
    with pytest.raises(EcgEdgeError, match=str(fs_in)):
        resample_ratio(fs_in, 128.0)


def stream_windows(chunks, length, hop):
    """A minimal streaming consumer: emit each window of ``length`` samples, ``hop`` apart."""
    buffer, next_start, consumed = np.zeros(0), 0, 0
    for chunk in chunks:
        buffer = np.concatenate([buffer, chunk])
        while next_start + length <= consumed + buffer.size:
            offset = next_start - consumed
            yield buffer[offset:offset + length]
            next_start += hop
        drop = min(next_start - consumed, buffer.size)
        buffer, consumed = buffer[drop:], consumed + drop


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 4000), min_size=1, max_size=12), seed=st.integers(0, 99))
def test_chunked_stream_equals_batch_windows(cuts, seed):
    fs_in, cfg = 250.0, SpectrogramConfig(fs=100.0, window_s=2.0, hop=5, channels=((32, 64),), n_freq=20)
    length, hop = window_length(fs_in, cfg), 300
    signal = ecg_like(6000, fs_in, seed)
    chunks = np.split(signal, sorted({c % signal.size for c in cuts} - {0}))
    streamed = np.array([window_image(w, fs_in, cfg) for w in stream_windows(chunks, length, hop)])
    x, starts, _ = cut_windows(signal, [Interval(0, signal.size, "(N")], length, hop, {"(N"})
    batch = np.array([window_image(w, fs_in, cfg) for w in x])
    assert streamed.shape == batch.shape == ((6000 - length) // hop + 1, *cfg.image_shape)
    np.testing.assert_allclose(streamed, batch, rtol=0, atol=IMAGE_ATOL)
    # ... and each equals the image of its slice of the long signal.
    for s, image in zip(starts, batch):
        np.testing.assert_array_equal(image, window_image(signal[s:s + length].astype(np.float32), fs_in, cfg))
