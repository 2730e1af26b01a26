"""The device runtime: interpreter oracle, int8 arithmetic, streaming, quality checks, episodes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecgedge.device.benchmark import synthetic_ecg
from ecgedge.device.dsp import SpectrogramConfig, spectrogram_image, standardize, stft_magnitude
from ecgedge.device.quant import dequantize, quantize
from ecgedge.device.runtime import Classifier, EpisodeTracker, StreamingClassifier, WindowResult, window_problem

FS = 360.0


@pytest.fixture(scope="module")
def classifier(tiny_bundle):
    return Classifier(tiny_bundle)


def test_runtime_output_equals_tf_lite_interpreter(classifier, tiny_bundle):
    tf = pytest.importorskip("tensorflow")
    reference = tf.lite.Interpreter(model_path=str(tiny_bundle.model_path))
    reference.allocate_tensors()
    inp, out = reference.get_input_details()[0], reference.get_output_details()[0]
    signal = synthetic_ecg(20 * 720, FS, seed=3)
    for i in range(20):
        model_input = classifier.model_input(classifier_image(classifier, signal[i * 720:(i + 1) * 720]))
        assert model_input.dtype == np.int8 and model_input.shape == (1, 32, 32, 2)
        reference.set_tensor(inp["index"], model_input)
        reference.invoke()
        expected = reference.get_tensor(out["index"])[0]
        np.testing.assert_array_equal(classifier.invoke(model_input), expected)
        np.testing.assert_array_equal(classifier.probabilities(expected), dequantize(expected, *out["quantization"]))


def classifier_image(classifier, window):
    from ecgedge.device.dsp import window_image

    return window_image(window, FS, classifier.cfg)


def test_quantize_rounds_clips_and_does_not_wrap():
    x = np.array([130.2, -200.0, 1.5, 2.5, -0.4])
    q = quantize(x, 1.0, 0)
    np.testing.assert_array_equal(q, np.array([127, -128, 2, 2, 0], dtype=np.int8))
    np.testing.assert_array_equal(x, [130.2, -200.0, 1.5, 2.5, -0.4])  # worked in place on a copy only
    np.testing.assert_array_equal(quantize([0.5], 0.5, 126), np.array([127], dtype=np.int8))
    # -128 - 100 overflows int8 arithmetic; widening first gives the right -28 * scale.
    np.testing.assert_allclose(dequantize(np.array([-128, 127], dtype=np.int8), 0.5, 100), [-114.0, 13.5])


def test_streaming_equals_batch(classifier):
    signal = synthetic_ecg(720 * 6 + 123, FS, seed=1)
    hop = 0.75
    stream = StreamingClassifier(classifier, FS, hop_s=hop)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.integers(1, signal.size, size=15))
    streamed = [r for chunk in np.split(signal, cuts) for r in stream.push(chunk)]
    step = int(round(hop * FS))
    starts = np.arange(0, signal.size - 720 + 1, step)
    batch = classifier.classify_windows(np.stack([signal[s:s + 720] for s in starts]), FS, starts / FS)
    assert len(streamed) == len(batch) == len(starts) == 14
    for s, b in zip(streamed, batch):
        assert (s.t_start, s.t_end, s.label) == (b.t_start, b.t_end, b.label)
        np.testing.assert_array_equal(s.probs, b.probs)
    tail = stream.finish()
    assert len(tail) == 1 and tail[0].label is None and tail[0].reason.startswith("too short")


def test_streaming_gives_a_context_head_the_history_batch_windows_give_it(rhythm_bundle):
    from ecgedge.device.rhythm import CONTEXT_NAMES, CONTEXT_S

    classifier = Classifier(rhythm_bundle)
    assert classifier.context_s == CONTEXT_S and set(CONTEXT_NAMES) <= set(classifier.bundle.rhythm_features)
    n = classifier.window_samples(FS)
    hop_s = classifier.window_s / 2  # windows overlap: the batch's histories are whole
    signal = synthetic_ecg(int((CONTEXT_S + 5 * classifier.window_s) * FS) + 77, FS, seed=2)
    stream = StreamingClassifier(classifier, FS, hop_s=hop_s)
    cuts = np.sort(np.random.default_rng(1).integers(1, signal.size, size=9))
    streamed = [r for chunk in np.split(signal, cuts) for r in stream.push(chunk)]
    starts = np.arange(0, signal.size - n + 1, int(round(hop_s * FS)))
    batch = classifier.classify_windows(np.stack([signal[s:s + n] for s in starts]), FS, starts / FS)
    assert len(streamed) == len(batch) == len(starts) and stream._ring.size == n + int(round(CONTEXT_S * FS))
    for s, b in zip(streamed, batch):
        np.testing.assert_array_equal(s.probs, b.probs)
    late = starts[-1]
    _, with_history = classifier.preprocess(signal[late:late + n], FS, signal[:late])
    _, alone = classifier.preprocess(signal[late:late + n], FS)
    assert not np.array_equal(with_history, alone)


def test_streaming_memory_is_flat(classifier):
    stream = StreamingClassifier(classifier, FS, hop_s=2.0)
    ring = stream._ring
    for chunk in range(200):
        for _ in stream.push(synthetic_ecg(2000, FS, seed=chunk)):
            pass
    assert stream._ring is ring and ring.size == 720 and stream.n_seen == 400_000


@pytest.mark.parametrize("edit, reason", [
    (lambda x: np.where(np.arange(x.size) == 7, np.nan, x), "non-finite samples (NaN or inf): 1 of 720"),
    (lambda x: np.where(np.arange(x.size) == 9, np.inf, x), "non-finite samples (NaN or inf): 1 of 720"),
    (lambda x: np.full_like(x, 0.3), "flat line (lead off?): 720 of 720 samples constant"),
    (lambda x: np.where(np.arange(x.size) < 500, 0.0, x), "flat line (lead off?): 500 of 720"),
    (lambda x: np.clip(x, -0.1, 0.4), "clipping: "),
    (lambda x: x[:700], "too short: 700 of 720 samples"),
])
def test_window_quality_reasons(classifier, edit, reason):
    window = edit(synthetic_ecg(720, FS, seed=2))
    result = classifier.classify_window(window, FS, t_start=4.0)
    assert result.label is None and result.probs is None
    assert result.reason.startswith(reason)
    assert window_problem(synthetic_ecg(720, FS, seed=2), 720) is None


def _longest_and_clipped(window):
    """The quality check's two run statistics, worked out the slow, obvious way."""
    def runs(mask):
        out, length = [], 0
        for v in list(mask) + [False]:
            if v:
                length += 1
            elif length:
                out.append(length)
                length = 0
        return out

    longest_flat = max(runs(np.diff(window) == 0), default=0) + 1
    clipped = sum(r for e in (window.max(), window.min()) for r in runs(window == e) if r >= 3)
    return longest_flat, clipped


@given(st.integers(0, 60), st.integers(0, 900), st.integers(0, 700), st.integers(0, 300), st.booleans())
@settings(max_examples=150, deadline=None)
def test_window_problem_agrees_with_the_plain_definition(plateau, at, flat, flat_at, low):
    """Plateaus at an extreme and flat stretches of every length around the two thresholds."""
    from ecgedge.device.runtime import CLIP_FRACTION, FLAT_RUN_FRACTION

    window = synthetic_ecg(1000, FS, seed=3)
    window[at:at + plateau] = window.min() - 0.1 if low else window.max() + 0.1
    window[flat_at:flat_at + flat] = window[flat_at]
    longest_flat, clipped = _longest_and_clipped(window)
    problem = window_problem(window, window.size)
    if longest_flat > FLAT_RUN_FRACTION * window.size:
        assert problem == f"flat line (lead off?): {longest_flat} of {window.size} samples constant"
    elif clipped > CLIP_FRACTION * window.size:
        assert problem.startswith(f"clipping: {clipped} of {window.size}")
    else:
        assert problem is None


def test_episodes_and_burden():
    tracker = EpisodeTracker(["NSR", "AF"], window_s=10.0, hop_s=5.0)
    labels = ["NSR", "NSR", "AF", "AF", "AF", None, "NSR"]
    for i, label in enumerate(labels):
        tracker.add(WindowResult(5.0 * i, 5.0 * i + 10, label, None, 0.0, None if label else "clipping: x"))
    summary = tracker.summary()
    assert [(e["label"], e["t_start"], e["t_end"], e["n_windows"]) for e in summary["episodes"]] == [
        ("NSR", 2.5, 12.5, 2), ("AF", 12.5, 27.5, 3), (None, 27.5, 32.5, 1), ("NSR", 32.5, 37.5, 1)]
    assert summary["time_s"] == {"NSR": 15.0, "AF": 15.0, "unclassified": 5.0}
    assert summary["burden"] == {"NSR": 0.5, "AF": 0.5}


@pytest.mark.parametrize("cfg", [
    SpectrogramConfig(),
    SpectrogramConfig(fs=100.0, window_s=6.0, hop=7, channels=((50, 128), (101, 101), (64, 128)), n_freq=40),
])
def test_fast_spectrogram_equals_float64_formula(cfg):
    x = synthetic_ecg(cfg.n_samples, cfg.fs, seed=5) * 80 + 12
    z = standardize(x)
    expected = np.stack([np.log(stft_magnitude(z, p, n, cfg.hop, cfg.n_time)[: cfg.n_freq] + cfg.eps)
                         for p, n in cfg.channels], axis=-1)
    image = spectrogram_image(x, cfg)
    assert image.dtype == np.float32 and image.shape == cfg.image_shape
    np.testing.assert_allclose(image, expected, rtol=0, atol=1e-4)
    # A caller that has standardised the window (the device, for its rhythm features) gets the same bits.
    np.testing.assert_array_equal(spectrogram_image(z, cfg, standardized=True), image)
