"""Classification metrics in numpy: the one definition of accuracy, macro-F1 and the confusion
matrix, used by the device's evaluation, the recording-level decisions, training's reports
(``ecgedge.train.report``) and the conversion check (``ecgedge.convert.verify``).

Macro-F1, as every ecgedge report gives it: the unweighted mean of the per-class F1 over the
classes present in ``y_true`` (scikit-learn's ``f1_score(y_true, y_pred, labels=present,
average="macro", zero_division=0)``). A class that occurs only in ``y_pred`` is left out of the
mean (the windows wrongly given to it still lower the recall of their true classes); a present
class never predicted correctly counts with F1 0.
"""

import numpy as np


def classification_metrics(y_true, y_pred, n_classes):
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

    Parameters
    ----------
    y_true, y_pred : ndarray of shape (n,), int class indices.
    n_classes : int.

    Returns
    -------
    dict: accuracy (float, 0.0 when n is 0), macro_f1 (float, as the module docstring defines it;
    0.0 when n is 0),
    confusion (ndarray (n_classes, n_classes), int64, rows true, columns predicted),
    precision, recall, f1, support (ndarray (n_classes,)).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    return {
        "accuracy": float(tp.sum() / len(y_true)) if len(y_true) else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "confusion": confusion,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
    }
