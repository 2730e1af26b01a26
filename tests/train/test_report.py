"""``ecgedge.train.report.classification_metrics`` (built on ``ecgedge.device.metrics``) against
scikit-learn, the oracle it replaced, on random labels where some classes never occur in
``y_true`` and some never in ``y_pred``."""

import numpy as np
import pytest

from ecgedge.train.report import classification_metrics, cross_validation_metrics

CLASSES = ["N", "S", "V", "F", "Q"]


def sklearn_metrics(y_true, y_pred, class_names):
    """The JSON-ready dict as train/report.py computed it with scikit-learn before it used device/metrics."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    labels = list(range(len(class_names)))
    present = sorted(set(y_true.tolist()))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(class_names)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


@pytest.mark.parametrize("seed", range(20))
def test_classification_metrics_equal_sklearn_with_absent_classes(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    # Class 4 never occurs in y_true, class 3 never in y_pred; seed-dependent sizes make some
    # further classes absent by chance.
    y_true = rng.choice([0, 1, 2, 3], size=n, p=[0.6, 0.2, 0.15, 0.05])
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.choice([0, 1, 2, 4], size=n))
    y_pred = np.where(y_pred == 3, 0, y_pred)
    ours, ref = classification_metrics(y_true, y_pred, CLASSES), sklearn_metrics(y_true, y_pred, CLASSES)
    assert set(ours) == set(ref) and ours["n"] == ref["n"]
    assert ours["confusion_matrix"] == ref["confusion_matrix"]
    assert ours["accuracy"] == pytest.approx(ref["accuracy"], rel=1e-12, abs=0)
    assert ours["macro_f1"] == pytest.approx(ref["macro_f1"], rel=1e-12, abs=1e-15)
    for name in CLASSES:
        assert ours["per_class"][name]["support"] == ref["per_class"][name]["support"]
        for key in ("precision", "recall", "f1"):
            assert ours["per_class"][name][key] == pytest.approx(ref["per_class"][name][key], rel=1e-12, abs=1e-15)


def test_macro_f1_leaves_out_classes_only_predicted():
    # Class 2 only in y_pred: the mean is over classes 0 and 1 (F1 2/3 and 1), not over three.
    m = classification_metrics([0, 0, 1], [0, 2, 1], ["a", "b", "c"])
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["confusion_matrix"] == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]


def test_cross_validation_metrics_pool_folds_and_keep_the_keys():
    folds = [{"fold": 1, "y_true": np.array([0, 1]), "y_pred": np.array([0, 0])},
             {"fold": 0, "y_true": np.array([0, 1, 1]), "y_pred": np.array([0, 1, 1])}]
    m = cross_validation_metrics(folds, ["a", "b"])
    assert m["n"] == 5 and m["accuracy"] == pytest.approx(0.8)
    assert [f["fold"] for f in m["per_fold"]] == [0, 1]
    assert m["fold_accuracy"] == {"mean": pytest.approx(0.75), "sd": pytest.approx(0.25)}
    assert set(m) == {"n", "accuracy", "macro_f1", "per_class", "confusion_matrix", "per_fold", "fold_accuracy",
                      "fold_macro_f1"}
