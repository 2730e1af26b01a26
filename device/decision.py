"""One decision per recording: the rule that turns a recording's window probabilities into its
label, or into an inconclusive answer.

The Challenge (CinC 2017), a wearable's "AF / sinus rhythm / inconclusive" answer and a Holter
report score recordings, not windows. The rule travels in the model bundle (manifest key
``decision``) and is applied alike by training's evaluation, ``ecgedge device eval`` and
``ecgedge device run --summary``.

The rule (``"mean_log_proba"``):

1. Windows the quality checks refused (label None: flat line, clipping, non-finite samples)
   take no part. When more than ``max_unreadable`` of the recording's windows were refused, or
   none is left, the recording is **inconclusive** ("unreadable").
2. The recording's probabilities are the softmax of the mean of its windows' log-probabilities
   (a product of the windows' evidence; probabilities clipped at 1e-6).
3. Its label is the most probable class. When that probability is below ``min_probability``
   the recording is **inconclusive** ("uncertain").
4. Sinus rhythm is said only of a recording no part of which is confidently another rhythm: a
   recording labelled ``normal_class`` (NSR) becomes ``abnormal_class`` (OTHER) when any of its
   windows gives that class at least ``abnormal_window_probability``. CinC 2017 labels a
   recording "Other rhythm" for an abnormal stretch of it, which the mean of step 2 dilutes. Only
   NSR answers change, so AF's sensitivity and specificity do not. Measured on the out-of-fold
   windows of multidb-rhythm5 (``runs/multidb7``, CinC recordings, thresholds 0.4 / 0.5 / 0.6 /
   0.7 tried, 0.6 kept): Challenge F1 0.754 -> 0.774 with patients held out (OTHER's F1 0.613 ->
   0.666), 0.608 -> 0.607 with CinC held out entirely. A long recording has more chances for one
   abnormal window: over a day of Holter windows, expect OTHER rather than NSR.

A recording labelled with the noise class (``noise_class``, e.g. NOISY) is an answer too: "too
noisy to classify". Scores that need one of the classes (the Challenge's F1) count an
inconclusive recording as the noise class (the Challenge's ``~``); rates report both:
``inconclusive_rate`` is the part of recordings without a rhythm, i.e. inconclusive or noisy.
"""

from dataclasses import asdict, dataclass

import numpy as np

from ecgedge.device.errors import BundleError

RULES = ("mean_log_proba",)
LOG_CLIP = 1e-6


@dataclass(frozen=True)
class DecisionRule:
    """How a recording's windows become one answer (see the module docstring).

    Attributes
    ----------
    rule : "mean_log_proba".
    min_probability : a recording whose top class is less probable than this is inconclusive.
    max_unreadable : a recording with more than this part of its windows refused by the quality
        checks is inconclusive.
    noise_class : the class that means "too noisy" (counted with the inconclusive answers in
        ``inconclusive_rate``), or None.
    """

    rule: str = "mean_log_proba"
    min_probability: float = 0.0
    max_unreadable: float = 0.5
    noise_class: object = None
    normal_class: object = None
    abnormal_class: object = None
    abnormal_window_probability: float = 1.0

    def to_dict(self):
        return asdict(self)


ABNORMAL_WINDOW_PROBABILITY = 0.6
"""Step 4's threshold in the default rule of a task with NSR and OTHER (see the module docstring)."""


def default_rule(classes):
    """The rule of a task's new bundles: its noise class NOISY, and step 4 when it has NSR and OTHER."""
    noise = "NOISY" if "NOISY" in classes else None
    if {"NSR", "OTHER"} <= set(classes):
        return DecisionRule(noise_class=noise, normal_class="NSR", abnormal_class="OTHER",
                            abnormal_window_probability=ABNORMAL_WINDOW_PROBABILITY)
    return DecisionRule(noise_class=noise)


def rule_from_manifest(value, classes, where="model.json"):
    """The bundle's DecisionRule from its manifest value (None: the rule of bundles made before
    decision rules travelled in them: noise class NOISY, no step 4). A manifest without step 4's
    keys (bundles made before it) gets none.

    Raises
    ------
    BundleError : naming the key and the value received, for anything out of type or range.
    """
    if value is None:
        return DecisionRule(noise_class=default_rule(classes).noise_class)
    if not isinstance(value, dict):
        raise BundleError(f"{where}: decision must be an object, got {type(value).__name__}")
    unknown = sorted(set(value) - {"rule", "min_probability", "max_unreadable", "noise_class", "normal_class",
                                   "abnormal_class", "abnormal_window_probability"})
    if unknown:
        raise BundleError(f"{where}: decision has unknown keys {unknown}")
    if value.get("rule", "mean_log_proba") not in RULES:
        raise BundleError(f"{where}: decision.rule must be one of {list(RULES)}, got {value.get('rule')!r}")
    for key in ("min_probability", "max_unreadable", "abnormal_window_probability"):
        v = value.get(key, getattr(DecisionRule, key))
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise BundleError(f"{where}: decision.{key} must be a number in [0, 1], got {v!r}")
    noise = value.get("noise_class")
    if noise is not None and noise not in classes:
        raise BundleError(f"{where}: decision.noise_class must be one of the classes {classes} or null, got {noise!r}")
    pair = [value.get("normal_class"), value.get("abnormal_class")]
    for key, v in zip(("normal_class", "abnormal_class"), pair):
        if v is not None and v not in classes:
            raise BundleError(f"{where}: decision.{key} must be one of the classes {classes} or null, got {v!r}")
    if (pair[0] is None) != (pair[1] is None) or (pair[0] is not None and pair[0] == pair[1]):
        raise BundleError(f"{where}: decision.normal_class and abnormal_class go together and differ, got {pair}")
    return DecisionRule(rule=value.get("rule", "mean_log_proba"),
                        min_probability=float(value.get("min_probability", 0.0)),
                        max_unreadable=float(value.get("max_unreadable", 0.5)), noise_class=noise,
                        normal_class=pair[0], abnormal_class=pair[1],
                        abnormal_window_probability=float(value.get("abnormal_window_probability", 1.0)))


@dataclass(frozen=True)
class RecordingDecision:
    """The answer for one recording.

    Attributes
    ----------
    label : class name, or None when inconclusive.
    probs : ndarray of shape (n_classes,), float64, the recording's probabilities (None when no
        window could be classified).
    reason : why the recording is inconclusive ("unreadable: ...", "uncertain: ..."), else None.
    n_windows : windows of the recording.
    n_classified : windows that passed the quality checks.
    """

    label: object
    probs: object
    reason: object
    n_windows: int
    n_classified: int

    def to_json(self, classes):
        return {"label": self.label, "reason": self.reason, "n_windows": self.n_windows,
                "n_classified": self.n_classified,
                "probs": None if self.probs is None else {c: round(float(p), 6) for c, p in zip(classes, self.probs)}}


class RecordingAccumulator:
    """The running state of :func:`decide` for a stream: constant memory, any length.

    ``add`` each window's probabilities (None for a window the quality checks refused) in any
    order; ``decision()`` gives the recording's answer so far.
    """

    def __init__(self, classes, rule=DecisionRule()):
        self.classes, self.rule = list(classes), rule
        self.log_sum = np.zeros(len(self.classes))
        self.max_probs = np.zeros(len(self.classes))
        self.n_windows = self.n_classified = 0

    def add(self, probs):
        self.n_windows += 1
        if probs is not None:
            probs = np.asarray(probs, dtype=np.float64)
            self.log_sum += np.log(np.clip(probs, LOG_CLIP, None))
            np.maximum(self.max_probs, probs, out=self.max_probs)
            self.n_classified += 1

    def decision(self):
        """RecordingDecision of the windows added so far."""
        n, k, rule = self.n_windows, self.n_classified, self.rule
        if k == 0 or (n - k) > rule.max_unreadable * n:
            return RecordingDecision(None, None, f"unreadable: {n - k} of {n} windows failed the quality checks", n, k)
        mean_log = self.log_sum / k
        probs = np.exp(mean_log - mean_log.max())
        probs /= probs.sum()
        top = int(np.argmax(probs))
        if probs[top] < rule.min_probability:
            return RecordingDecision(None, probs, f"uncertain: {self.classes[top]} p {probs[top]:.2f} < "
                                                  f"{rule.min_probability}", n, k)
        label = self.classes[top]
        if (label == rule.normal_class and rule.abnormal_class is not None
                and self.max_probs[self.classes.index(rule.abnormal_class)] >= rule.abnormal_window_probability):
            label = rule.abnormal_class
        return RecordingDecision(label, probs, None, n, k)


def decide(window_probs, classes, rule=DecisionRule()):
    """One recording's answer from its windows.

    Parameters
    ----------
    window_probs : sequence of (n_classes,) probability rows, None for a window the quality
        checks refused.
    classes : list of class names, in the probability order.
    rule : DecisionRule.

    Returns
    -------
    RecordingDecision.
    """
    acc = RecordingAccumulator(classes, rule)
    for p in window_probs:
        acc.add(p)
    return acc.decision()


def scored_label(decision, rule):
    """The class a score counts for a decision: its label, or the noise class when inconclusive
    (None when the task has no noise class)."""
    return decision.label if decision.label is not None else rule.noise_class


def recording_metrics(true_labels, decisions, classes, rule):
    """Recording-level scores: accuracy, macro-F1, AF sensitivity/specificity, inconclusive rate,
    and the Challenge's F1 when the classes hold NSR, AF and OTHER.

    Parameters
    ----------
    true_labels : list of class names, one per recording.
    decisions : list of RecordingDecision, same order.
    classes : list of class names.
    rule : DecisionRule (its noise class stands in for inconclusive answers).

    Returns
    -------
    dict: n_recordings, accuracy, macro_f1 (:func:`ecgedge.device.metrics.classification_metrics`'s
    definition), per_class F1, confusion (rows true, columns predicted; a last column
    "inconclusive" when the task has no noise class), af_se and af_sp (inconclusive counts as
    "not called AF"), inconclusive_rate (inconclusive or noise class), and challenge_f1 (mean F1
    of NSR, AF and OTHER) when those classes exist.
    """
    from ecgedge.device.metrics import classification_metrics

    index = {c: i for i, c in enumerate(classes)}
    n_cols = len(classes) + (1 if rule.noise_class is None else 0)  # last column: inconclusive
    y_true = np.array([index[t] for t in true_labels], dtype=np.int64)
    y_pred = np.array([index.get(scored_label(d, rule), len(classes)) for d in decisions], dtype=np.int64)
    m = classification_metrics(y_true, y_pred, n_cols)
    out = {
        "n_recordings": int(len(y_true)),
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "f1": {c: float(m["f1"][i]) for i, c in enumerate(classes)},
        "labels": list(classes) + (["inconclusive"] if n_cols > len(classes) else []),
        "confusion": m["confusion"].tolist(),
        "inconclusive_rate": float(np.mean([d.label is None or d.label == rule.noise_class for d in decisions]))
        if decisions else 0.0,
    }
    if "AF" in index:
        af = y_true == index["AF"]
        called = y_pred == index["AF"]
        out["af_se"] = float(called[af].mean()) if af.any() else None
        out["af_sp"] = float((~called[~af]).mean()) if (~af).any() else None
    if {"NSR", "AF", "OTHER"} <= set(index):
        out["challenge_f1"] = float(np.mean([m["f1"][index[c]] for c in ("NSR", "AF", "OTHER")]))
    return out
