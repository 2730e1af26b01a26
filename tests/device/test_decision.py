"""One decision per recording (ecgedge.device.decision) and the scores built on it."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecgedge.device.decision import (
    DecisionRule, RecordingAccumulator, decide, default_rule, recording_metrics, rule_from_manifest,
)
from ecgedge.device.errors import BundleError

CLASSES = ["NSR", "AF", "OTHER", "NOISY"]
RULE = DecisionRule(noise_class="NOISY")


def test_mean_log_probability_decides():
    # Two windows fairly sure of NSR, one very sure of AF: the product of evidence says AF.
    rows = [[0.6, 0.3, 0.05, 0.05], [0.6, 0.3, 0.05, 0.05], [0.01, 0.97, 0.01, 0.01]]
    d = decide(rows, CLASSES, RULE)
    expected = np.exp(np.log(np.array(rows)).mean(axis=0))
    np.testing.assert_allclose(d.probs, expected / expected.sum())
    assert d.label == "AF" and d.reason is None and (d.n_windows, d.n_classified) == (3, 3)


def test_unreadable_and_uncertain_recordings_are_inconclusive():
    ok = [0.7, 0.1, 0.1, 0.1]
    assert decide([None, None, ok], CLASSES, RULE).reason == "unreadable: 2 of 3 windows failed the quality checks"
    assert decide([], CLASSES, RULE).label is None
    assert decide([None, ok, ok], CLASSES, RULE).label == "NSR"  # 1 of 3 unreadable: allowed
    unsure = decide([[0.4, 0.3, 0.2, 0.1]], CLASSES, DecisionRule(min_probability=0.5, noise_class="NOISY"))
    assert unsure.label is None and unsure.reason.startswith("uncertain: NSR p 0.40 < 0.5")


def test_sinus_rhythm_is_said_only_when_no_window_is_confidently_another_rhythm():
    rule = default_rule(CLASSES)
    assert (rule.normal_class, rule.abnormal_class, rule.abnormal_window_probability) == ("NSR", "OTHER", 0.6)
    sinus, abnormal = [0.9, 0.04, 0.04, 0.02], [0.3, 0.05, 0.62, 0.03]
    assert decide([sinus, sinus, sinus], CLASSES, rule).label == "NSR"
    d = decide([sinus, abnormal, sinus], CLASSES, rule)
    assert d.label == "OTHER" and d.probs.argmax() == 0  # the mean still says NSR; one window vetoes it
    assert decide([sinus, abnormal, sinus], CLASSES, RULE).label == "NSR"  # without step 4
    assert decide([sinus, [0.4, 0.05, 0.55, 0.0], sinus], CLASSES, rule).label == "NSR"  # below 0.6
    fib = [0.05, 0.9, 0.03, 0.02]
    assert decide([fib, abnormal, fib], CLASSES, rule).label == "AF"  # only NSR answers change
    assert default_rule(["NSR", "AF", "VENT"]) == DecisionRule()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4)), max_size=12),
       st.sampled_from([RULE, default_rule(CLASSES)]))
def test_streaming_accumulator_equals_decide(rows, rule):
    acc = RecordingAccumulator(CLASSES, rule)
    for r in rows:
        acc.add(r)
    a, b = acc.decision(), decide(rows, CLASSES, rule)
    assert (a.label, a.reason, a.n_windows, a.n_classified) == (b.label, b.reason, b.n_windows, b.n_classified)


def test_recording_metrics_challenge_f1_and_af_rates():
    from sklearn.metrics import f1_score

    truth = ["NSR", "NSR", "AF", "AF", "OTHER", "NOISY"]
    rows = {"NSR": [0.9, 0.05, 0.03, 0.02], "AF": [0.05, 0.9, 0.03, 0.02], "OTHER": [0.05, 0.05, 0.88, 0.02]}
    called = ["NSR", "AF", "AF", None, "OTHER", "NSR"]  # None: an unreadable recording
    decisions = [decide([None] if c is None else [rows[c]], CLASSES, RULE) for c in called]
    m = recording_metrics(truth, decisions, CLASSES, RULE)
    scored = [c or "NOISY" for c in called]  # inconclusive counts as the noise class
    f1 = f1_score(truth, scored, labels=CLASSES, average=None, zero_division=0)
    assert m["challenge_f1"] == pytest.approx(np.mean(f1[:3]))
    assert m["af_se"] == 0.5 and m["af_sp"] == 0.75  # 1 of 2 AF found; 1 of 4 others called AF
    assert m["inconclusive_rate"] == pytest.approx(1 / 6)
    assert m["macro_f1"] == pytest.approx(f1_score(truth, scored, labels=CLASSES, average="macro", zero_division=0))


def test_rule_from_manifest_checks_types_and_ranges():
    assert rule_from_manifest(None, CLASSES) == DecisionRule(noise_class="NOISY")
    assert rule_from_manifest(None, ["NSR", "AF"]).noise_class is None
    assert rule_from_manifest(default_rule(CLASSES).to_dict(), CLASSES) == default_rule(CLASSES)
    # A bundle made before step 4 (its manifest without the keys) keeps its rule.
    assert rule_from_manifest({"rule": "mean_log_proba", "noise_class": "NOISY"}, CLASSES) == RULE
    for bad, message in [({"min_probability": 2}, "decision.min_probability must be a number in [0, 1], got 2"),
                         ({"rule": "vote"}, "decision.rule must be one of ['mean_log_proba'], got 'vote'"),
                         ({"noise_class": "JUNK"}, "decision.noise_class must be one of the classes"),
                         ({"max_unreadable": "x"}, "decision.max_unreadable must be a number in [0, 1]"),
                         ({"extra": 1}, "decision has unknown keys ['extra']"), ([], "decision must be an object"),
                         ({"normal_class": "NSR"}, "decision.normal_class and abnormal_class go together and differ"),
                         ({"normal_class": "NSR", "abnormal_class": "JUNK"}, "decision.abnormal_class must be one of"),
                         ({"abnormal_window_probability": -1}, "decision.abnormal_window_probability must be a number")]:
        with pytest.raises(BundleError, match=message.replace("[", r"\[").replace("]", r"\]")):
            rule_from_manifest(bad, CLASSES)
