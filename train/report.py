"""Classification metrics of a run and its PNG plots (matplotlib, Agg backend)."""

import numpy as np

from ecgedge.device import metrics as device_metrics


def classification_metrics(y_true, y_pred, class_names):
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix, JSON-ready.

    The numbers are :func:`ecgedge.device.metrics.classification_metrics`'s (which states the
    macro-F1 definition), in the layout of a run's ``metrics.json``.

    Parameters
    ----------
    y_true, y_pred : sequences of int class indices (positions in ``class_names``).
    class_names : list of str, model output order.

    Returns
    -------
    dict, JSON-ready: ``n``, ``accuracy`` (NaN when there are no predictions), ``macro_f1``,
    ``per_class`` {name: {precision, recall, f1, support}}, ``confusion_matrix``
    (rows: true class, columns: predicted, in ``class_names`` order).
    """
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    m = device_metrics.classification_metrics(y_true, y_pred, len(class_names))
    per_class = {
        name: {"precision": float(m["precision"][i]), "recall": float(m["recall"][i]), "f1": float(m["f1"][i]),
               "support": int(m["support"][i])}
        for i, name in enumerate(class_names)
    }
    return {
        "n": int(len(y_true)),
        "accuracy": m["accuracy"] if len(y_true) else float("nan"),
        "macro_f1": m["macro_f1"],
        "per_class": per_class,
        "confusion_matrix": m["confusion"].tolist(),
    }


def cross_validation_metrics(fold_results, class_names):
    """Pooled out-of-fold metrics plus per-fold accuracy and macro-F1.

    Parameters
    ----------
    fold_results : list of dicts with ``fold``, ``y_true``, ``y_pred`` (as written per fold).
    class_names : list of str.

    Returns
    -------
    dict: the :func:`classification_metrics` of all test predictions pooled, and ``per_fold``
    (list of {fold, n, accuracy, macro_f1}), ``fold_accuracy`` and ``fold_macro_f1``
    ({mean, sd} over folds).
    """
    y_true = np.concatenate([r["y_true"] for r in fold_results]).astype(int)
    y_pred = np.concatenate([r["y_pred"] for r in fold_results]).astype(int)
    pooled = classification_metrics(y_true, y_pred, class_names)
    per_fold = []
    for r in sorted(fold_results, key=lambda r: r["fold"]):
        m = classification_metrics(r["y_true"], r["y_pred"], class_names)
        per_fold.append({"fold": r["fold"], "n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]})
    pooled["per_fold"] = per_fold
    for key in ("accuracy", "macro_f1"):
        values = np.array([f[key] for f in per_fold])
        pooled[f"fold_{key}"] = {"mean": float(values.mean()), "sd": float(values.std())}
    return pooled


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrices(path, matrices, class_names):
    """Save row-normalised confusion matrices side by side.

    Parameters
    ----------
    path : output PNG path.
    matrices : {title: square list/ndarray of counts, rows true, columns predicted}.
    class_names : list of str.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 4), squeeze=False)
    for ax, (title, counts) in zip(axes[0], matrices.items()):
        counts = np.asarray(counts, dtype=float)
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(class_names)):
            for j in range(len(class_names)):
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, f"{rates[i, j]:.2f}\n{int(counts[i, j])}", ha="center", va="center",
                        fontsize=8, color=color)
        ax.set_xticks(range(len(class_names)), class_names)
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curves(path, histories):
    """Save loss and accuracy per epoch of each fitted model.

    Parameters
    ----------
    path : output PNG path.
    histories : {label: {"loss": [...], "val_loss": [...], "accuracy": [...], "val_accuracy": [...]}}.
    """
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for label, h in histories.items():
        epochs = np.arange(1, len(h.get("loss", [])) + 1)
        line, = ax_loss.plot(epochs, h.get("loss", []), label=f"{label} train")
        ax_acc.plot(epochs, h.get("accuracy", []), color=line.get_color())
        if h.get("val_loss"):
            ax_loss.plot(epochs, h["val_loss"], "--", color=line.get_color(), label=f"{label} val")
            ax_acc.plot(epochs, h["val_accuracy"], "--", color=line.get_color())
    ax_loss.set_ylabel("loss")
    ax_acc.set_ylabel("accuracy")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
