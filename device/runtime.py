"""The on-device classifier: raw window -> spectrogram -> int8 model -> class probabilities.

Everything comes from the bundle's manifest: the spectrogram, window and hop, classes and the
input/output quantization. A bundle with a rhythm head also has the window's rhythm features
(``ecgedge.device.rhythm``) classified by its trees, and the two probability vectors combined.
:class:`Classifier` handles one window at a time; :class:`StreamingClassifier` cuts windows from
a stream of any length with a preallocated ring buffer; :class:`EpisodeTracker` merges
consecutive windows into rhythm episodes and sums the time per class (e.g. AF burden).

Windows that can not be classified (non-finite samples, a flat line, clipping, too short, or
not ECG at all: :mod:`ecgedge.device.quality`) get ``label=None`` and a ``reason``; they never
raise, so a stream goes on.
"""

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from ecgedge.device.bundle import load_bundle
from ecgedge.device.decision import rule_from_manifest
from ecgedge.device.dsp import spectrogram_image, standardize, to_model_rate, window_length
from ecgedge.device.errors import EcgEdgeError
from ecgedge.device import quant
from ecgedge.device.interpreter import invoke as invoke_model
from ecgedge.device.quality import not_ecg
from ecgedge.device.rhythm import (CONTEXT_NAMES, CONTEXT_S, combine, feature_columns, window_histories,
                                   window_rhythm_features)
from ecgedge.device.trees import load_trees

# Quality limits of one window, calibrated on MIT-BIH (48 records, 10 s windows, MLII): the
# longest run of equal samples is at most 10 in 99.9 % of windows, and samples sitting at the
# window's extreme value in runs of 3 or more are at most 0.11 % in 99.9 % of windows.
FLAT_RUN_FRACTION = 0.5  # a constant stretch longer than this part of the window: lead off
CLIP_RUN = 3  # consecutive samples at the extreme value that count as a clipped plateau
CLIP_FRACTION = 0.02  # more than this part of the window on clipped plateaus: clipping
# Peak to peak of a window in any units (V, mV, uV, ADC counts are all well inside): beyond it
# float64 squares overflow or underflow and the spectrogram is NaN or meaningless.
AMPLITUDE_SPAN = (1e-100, 1e100)
MAX_EPISODES = 100_000  # episodes an EpisodeTracker lists (the latest); times stay exact beyond


@dataclass(frozen=True)
class WindowResult:
    """The classification of one window.

    Attributes
    ----------
    t_start, t_end : float, seconds from the start of the input.
    label : class name, or None when the window could not be classified.
    probs : ndarray of shape (n_classes,), float32, in the bundle's class order; None with
        label None.
    latency_ms : wall time of quality check, DSP and inference, milliseconds.
    reason : why label is None; None otherwise.
    """

    t_start: float
    t_end: float
    label: object
    probs: object
    latency_ms: float
    reason: object = None

    def to_json(self, classes):
        """The ``device run`` JSON object of this window (probabilities rounded to 6 digits)."""
        out = {
            "t_start": round(self.t_start, 6),
            "t_end": round(self.t_end, 6),
            "label": self.label,
            "probs": None if self.probs is None else {c: round(float(p), 6) for c, p in zip(classes, self.probs)},
            "latency_ms": round(self.latency_ms, 3),
        }
        if self.reason is not None:
            out["reason"] = self.reason
        return out


def _runs(mask):
    """Lengths of the runs of True in a boolean array (ndarray of int)."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def window_problem(window, expected_length):
    """Why a raw window can not be classified, or None when it can.

    Parameters
    ----------
    window : ndarray of shape (n,), float, any units.
    expected_length : int, samples of a full window at the input rate.

    Returns
    -------
    str or None -- one of "too short: ...", "non-finite samples: ...", "flat line (lead
    off?): ...", "amplitude out of range: ...", "clipping: ...".
    """
    n = len(window)
    if n < expected_length:
        return f"too short: {n} of {expected_length} samples"
    finite = np.isfinite(window)
    if not finite.all():
        return f"non-finite samples (NaN or inf): {n - int(finite.sum())} of {n}"
    # Run lengths are only worked out when the counts allow a failing run (the usual window
    # passes on two counts).
    flat = np.diff(window) == 0
    if np.count_nonzero(flat) + 1 > FLAT_RUN_FRACTION * n:
        longest_flat = _runs(flat).max(initial=0) + 1
        if longest_flat > FLAT_RUN_FRACTION * n:
            return f"flat line (lead off?): {longest_flat} of {n} samples constant"
    high, low = window.max(), window.min()
    # Squares of a wider (or narrower) swing overflow (or vanish) in float64, and the
    # standardised window, its spectrogram and the model's answer with them.
    span = float(high) - float(low)
    if not AMPLITUDE_SPAN[0] <= span <= AMPLITUDE_SPAN[1]:
        return (f"amplitude out of range: peak to peak {span:.3g}, outside {AMPLITUDE_SPAN[0]:g}.."
                f"{AMPLITUDE_SPAN[1]:g} of the input's units")
    extremes = (window == high, window == low)
    if sum(np.count_nonzero(e) for e in extremes) > CLIP_FRACTION * n:
        clipped = sum(int(runs[runs >= CLIP_RUN].sum()) for runs in map(_runs, extremes))
        if clipped > CLIP_FRACTION * n:
            return f"clipping: {clipped} of {n} samples on plateaus at the signal's extremes"
    return None


def non_finite(what, values):
    """``"non-finite <what>: k of n values"`` when ``values`` hold NaN or inf, else None (cheap)."""
    values = np.asarray(values)
    if np.isfinite(values).all():
        return None
    return f"non-finite {what}: {values.size - int(np.isfinite(values).sum())} of {values.size} values"


def _check_tensor(detail, expected_shape, manifest_part, what, model_path):
    """Refuse a bundle whose model tensor disagrees with its manifest or spectrogram."""
    shape = tuple(int(v) for v in detail["shape"])
    if shape != tuple(expected_shape):
        raise EcgEdgeError(
            f"{model_path}: the model's {what} has shape {shape}, the manifest implies "
            f"{tuple(expected_shape)}; the bundle is inconsistent, rebuild it"
        )
    dtype = np.dtype(detail["dtype"]).name
    if dtype != manifest_part["dtype"]:
        raise EcgEdgeError(
            f"{model_path}: the model's {what} is {dtype}, the manifest says {manifest_part['dtype']}; "
            "rebuild the bundle"
        )


class Classifier:
    """Classify raw ECG windows with a bundle's model.

    Parameters
    ----------
    bundle : Bundle (from ``load_bundle``) or a path to one.
    edgetpu, cpu_fallback, num_threads : see ``interpreter.make_interpreter``.
    rhythm_head : False decides with the model alone even when the bundle has a rhythm head: no
        beat detection, rhythm features or trees (on mitdb-rhythm4's real 10 s windows: DSP
        0.4-0.5 ms instead of 0.9-1.4 ms per window, at the accuracy of the CNN alone).

    Attributes
    ----------
    classes : list of str, the model's output order.
    cfg : SpectrogramConfig of the model input.
    window_s, hop_s : float, seconds.
    info : dict, which interpreter module and delegate run the model (and ``rhythm_head``:
        whether the bundle's rhythm head is combined with it).
    trees : ecgedge.device.trees.Trees of the rhythm head, or None (none in the bundle, or
        ``rhythm_head=False``).
    decision_rule : ecgedge.device.decision.DecisionRule, how a recording's windows become one
        answer (the manifest's ``decision``; bundles made before it get the default rule).
    """

    def __init__(self, bundle, edgetpu=None, cpu_fallback=False, num_threads=None, rhythm_head=True):
        from ecgedge.device.interpreter import make_interpreter

        self.bundle = load_bundle(bundle) if not hasattr(bundle, "manifest") else bundle
        manifest = self.bundle.manifest
        self.classes = self.bundle.classes
        self.cfg = self.bundle.spectrogram
        self.window_s = self.bundle.window_s
        self.hop_s = self.bundle.hop_s
        if abs(self.cfg.window_s - self.window_s) > 1e-9:
            raise EcgEdgeError(
                f"{self.bundle.path}: window_s {self.window_s} differs from the spectrogram's "
                f"{self.cfg.window_s}; rebuild the bundle"
            )
        self.interpreter, self.info = make_interpreter(self.bundle.model_path, edgetpu, cpu_fallback, num_threads)
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        _check_tensor(self._input, (1, *self.cfg.image_shape), manifest["input"], "input", self.bundle.model_path)
        _check_tensor(self._output, (1, len(self.classes)), manifest["output"], "output", self.bundle.model_path)
        self._in_q = (float(manifest["input"]["scale"]), int(manifest["input"]["zero_point"]))
        self._out_q = (float(manifest["output"]["scale"]), int(manifest["output"]["zero_point"]))
        self._in_dtype = np.dtype(manifest["input"]["dtype"])
        head = self.bundle.rhythm_head_path if rhythm_head else None
        self.trees = load_trees(head) if head is not None else None
        if self.trees is not None and self.trees.n_classes != len(self.classes):
            raise EcgEdgeError(f"{head} scores {self.trees.n_classes} classes, the model {len(self.classes)}; "
                               "rebuild the bundle")
        # A head trained by an earlier version reads the features it knows, by name.
        self._head_columns = np.array(feature_columns(self.bundle.rhythm_features)) if self.trees is not None else None
        # Seconds of signal before a window that the head reads (its context features), else 0.
        reads_context = self.trees is not None and bool(set(self.bundle.rhythm_features) & set(CONTEXT_NAMES))
        self.context_s = CONTEXT_S if reads_context else 0.0
        self._beat_detector = self.bundle.beat_detector  # the beats the head was trained on
        self._cnn_weights = self.bundle.cnn_weights  # the CNN's weight per class in combine
        self.info = {**self.info, "rhythm_head": self.trees is not None}
        self.decision_rule = rule_from_manifest(manifest.get("decision"), self.classes, self.bundle.path / "model.json")

    def window_samples(self, fs):
        """Samples of one window at the input rate ``fs`` (Hz)."""
        return window_length(fs, self.cfg)

    def model_input(self, image):
        """Image (cfg.image_shape, float32) -> the model's input tensor (1, *image_shape).

        Quantized with the manifest's input scale and zero point for integer models.
        """
        return quant.model_input(image, *self._in_q, self._in_dtype)

    def invoke(self, model_input):
        """Run the model on one input tensor; return its raw output row (n_classes,)."""
        return invoke_model(self.interpreter, self._input, self._output, model_input)

    def probabilities(self, raw_output):
        """Raw output row -> probabilities (n_classes,), float32 (dequantized for int8)."""
        return quant.model_output(raw_output, *self._out_q)

    def classify_image(self, image):
        """The model's probabilities (n_classes,), float32, of one input image (no rhythm head)."""
        return self.probabilities(self.invoke(self.model_input(image)))

    def preprocess(self, window, fs, history=None):
        """All the DSP of one raw window: (model input image, rhythm features or None).

        The image and the rhythm features come from one resampled and standardised copy of the
        window; the features only when the bundle has a rhythm head. ``history``: the samples just
        before the window, for the head's context features (``context_s`` seconds are read).
        """
        z = standardize(to_model_rate(window, fs, self.cfg))
        image = spectrogram_image(z, self.cfg, standardized=True)
        if self.trees is None:
            return image, None
        return image, window_rhythm_features(window, fs, self.cfg, z, history if self.context_s else None,
                                             self._beat_detector)

    def with_rhythm(self, probs, features):
        """The model's probabilities combined with the rhythm head's (``combine``); as given without a head."""
        if features is None or self.trees is None:
            return probs
        head = self.trees.predict_proba(features[self._head_columns])
        return combine(probs, head, self._cnn_weights).astype(np.float32)

    def classify_window(self, window, fs, t_start=0.0, history=None):
        """Classify one raw window.

        Parameters
        ----------
        window : ndarray of shape (window_samples(fs),), float, any amplitude units.
        fs : float, Hz, the window's sampling rate.
        t_start : float, seconds, where the window starts in its input.
        history : ndarray, the input's samples just before the window (None: none), read by a
            rhythm head with context features (the last ``context_s`` seconds).

        Returns
        -------
        WindowResult (label None with a reason when the window fails the quality checks).
        """
        began = time.perf_counter()
        expected = self.window_samples(fs)
        t_end = t_start + len(window) / fs
        problem = window_problem(window, expected)
        if problem is None:  # then refuse what is not ECG at all (noise, mains hum, test signals)
            problem = not_ecg(window, fs)
        if problem is not None:
            return WindowResult(t_start, t_end, None, None, (time.perf_counter() - began) * 1e3, problem)
        image, features = self.preprocess(window, fs, history)
        # A NaN image still quantizes to some int8 input and a confident label: never classify it.
        problem = non_finite("spectrogram", image)
        if problem is None:
            probs = self.with_rhythm(self.classify_image(image), features)
            problem = non_finite("probabilities", probs)
        if problem is not None:
            return WindowResult(t_start, t_end, None, None, (time.perf_counter() - began) * 1e3, problem)
        label = self.classes[int(np.argmax(probs))]
        return WindowResult(t_start, t_end, label, probs, (time.perf_counter() - began) * 1e3)

    def classify_windows(self, windows, fs, starts_s=None):
        """Classify the rows of ``windows`` (n, window_samples(fs)); return a list of WindowResult.

        With ``starts_s`` (seconds, ascending: windows of one input) a window's history is what
        the windows before it cover without a gap (``window_histories``), as a stream has it;
        without, the windows are independent.
        """
        if starts_s is None:
            return [self.classify_window(w, fs) for w in windows]
        histories = window_histories(windows, fs, starts_s) if self.context_s else [None] * len(windows)
        return [self.classify_window(w, fs, float(s), h) for w, s, h in zip(windows, starts_s, histories)]


class StreamingClassifier:
    """One result per hop from a sample stream of any length, in constant memory.

    The last ``window_samples(fs)`` samples, and the ``context_s`` seconds before them that a
    rhythm head with context features reads, live in a preallocated ring buffer; whenever the
    stream has passed the end of the next window (``window + k * hop`` samples), that window
    (and its history) is copied out of the ring and classified. Results equal
    ``Classifier.classify_window`` on the same slices of the whole signal, each with the samples
    before it as history.

    Parameters
    ----------
    classifier : Classifier.
    fs : float, Hz, the stream's sampling rate.
    hop_s : float, seconds between window starts; default the bundle's hop_s.
    """

    def __init__(self, classifier, fs, hop_s=None):
        self.classifier = classifier
        self.fs = float(fs)
        self.length = classifier.window_samples(self.fs)
        hop_s = classifier.hop_s if hop_s is None else float(hop_s)
        if not hop_s > 0:
            raise EcgEdgeError(f"--hop must be > 0 seconds, got {hop_s}")
        self.hop = max(int(round(hop_s * self.fs)), 1)
        self.context = int(round(classifier.context_s * self.fs))
        self.size = self.length + self.context  # ring buffer: the window and the history before it
        self._ring = np.zeros(self.size, dtype=np.float64)
        self._window = np.zeros(self.size, dtype=np.float64)
        self.n_seen = 0  # samples received so far
        self.next_end = self.length  # stream position where the next window ends

    def _write(self, samples):
        """Append samples (at most ring length) to the ring buffer."""
        pos = self.n_seen % self.size
        first = min(len(samples), self.size - pos)
        self._ring[pos:pos + first] = samples[:first]
        self._ring[: len(samples) - first] = samples[first:]
        self.n_seen += len(samples)

    def _current_window(self):
        """(window, history): the last ``length`` samples and the at most ``context`` samples seen
        before them, in time order, views of the preallocated copy of the ring."""
        pos = self.n_seen % self.size
        self._window[: self.size - pos] = self._ring[pos:]
        self._window[self.size - pos:] = self._ring[:pos]
        n_history = min(self.n_seen - self.length, self.context)
        return self._window[self.context:], self._window[self.context - n_history:self.context]

    def push(self, chunk):
        """Feed samples (ndarray (k,), float); yield a WindowResult for each window completed."""
        chunk = np.asarray(chunk, dtype=np.float64).reshape(-1)
        done = 0
        while done < len(chunk):
            # Never more than one ring length at a time: older samples would be overwritten
            # before the window that needs them is cut.
            take = min(len(chunk) - done, self.next_end - self.n_seen, self.size)
            self._write(chunk[done:done + take])
            done += take
            if self.n_seen == self.next_end:
                t_start = (self.next_end - self.length) / self.fs
                window, history = self._current_window()
                yield self.classifier.classify_window(window, self.fs, t_start, history)
                self.next_end += self.hop

    def finish(self):
        """At the stream's end: a "too short" result for samples no window covered, if any.

        Returns a list of zero or one WindowResult.
        """
        start = max(self.next_end - self.length, 0)
        n_tail = self.n_seen - start
        last_end = self.next_end - self.hop if self.next_end > self.length else 0  # last window's end
        if n_tail <= 0 or self.n_seen <= last_end:
            return []
        reason = f"too short: {n_tail} of {self.length} samples left at the end of the input"
        return [WindowResult(start / self.fs, self.n_seen / self.fs, None, None, 0.0, reason)]


@dataclass
class Episode:
    """Consecutive windows with the same label (None: unclassifiable), seconds."""

    label: object
    t_start: float
    t_end: float
    n_windows: int

    def to_json(self):
        return {"label": self.label, "t_start": round(self.t_start, 6), "t_end": round(self.t_end, 6),
                "n_windows": self.n_windows}


class EpisodeTracker:
    """Merge consecutive window results into episodes and sum time per class.

    Each window stands for the ``min(hop, window)`` seconds centred in it, so overlapping
    windows tile time without double counting; an episode spans the time of its windows.
    Memory is bounded: the times per class are summed as episodes close, and only the latest
    ``max_episodes`` episodes are listed (0 lists none: what a stream without a summary needs).

    Parameters
    ----------
    classes : list of str.
    window_s, hop_s : float, seconds.
    max_episodes : int >= 0, episodes kept for :meth:`summary` (the latest; MAX_EPISODES).
    """

    def __init__(self, classes, window_s, hop_s, max_episodes=MAX_EPISODES):
        self.classes = list(classes)
        self.share = min(hop_s, window_s)
        self.max_episodes = int(max_episodes)
        self._closed = deque(maxlen=max(self.max_episodes - 1, 0))  # the latest closed episodes
        self._current = None  # the open episode
        self._closed_time = {c: 0.0 for c in [*self.classes, "unclassified"]}
        self.n_episodes = 0  # episodes so far, listed or not

    def add(self, result):
        """Account one WindowResult (results must come in time order)."""
        if result.reason is not None and result.reason.startswith("too short"):
            return
        centre = (result.t_start + result.t_end) / 2
        start, end = centre - self.share / 2, centre + self.share / 2
        last = self._current
        if last is not None and last.label == result.label and start <= last.t_end + 1e-9:
            last.t_end, last.n_windows = end, last.n_windows + 1
            return
        if last is not None:
            self._closed_time[_time_key(last.label)] += last.t_end - last.t_start
            if self._closed.maxlen:
                self._closed.append(last)
        self._current = Episode(result.label, start, end, 1)
        self.n_episodes += 1

    @property
    def episodes(self):
        """The listed episodes, oldest first: list of Episode (at most ``max_episodes``)."""
        if self.max_episodes == 0 or self._current is None:
            return []
        return [*self._closed, self._current]

    def summary(self):
        """Episodes, seconds per class and each class's share of classified time (burden).

        Returns
        -------
        dict with ``episodes`` (list of dicts, the latest ``max_episodes``), ``time_s`` {class or
        "unclassified": s}, ``burden`` {class: fraction of classified time, 0..1}, and
        ``episodes_dropped`` (episodes not listed) when some were left out.
        """
        time_s = dict(self._closed_time)
        if self._current is not None:
            time_s[_time_key(self._current.label)] += self._current.t_end - self._current.t_start
        classified = sum(time_s[c] for c in self.classes)
        burden = {c: (time_s[c] / classified if classified else 0.0) for c in self.classes}
        episodes = self.episodes
        out = {
            "episodes": [ep.to_json() for ep in episodes],
            "time_s": {k: round(v, 6) for k, v in time_s.items()},
            "burden": {k: round(v, 6) for k, v in burden.items()},
        }
        if self.n_episodes > len(episodes):
            out["episodes_dropped"] = self.n_episodes - len(episodes)
        return out


def _time_key(label):
    return label if label is not None else "unclassified"
