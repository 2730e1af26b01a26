"""Accuracy table: ``paper`` and ``records`` protocols, float vs int8, the baselines, the paper's 97.23 %.

Read from finished outputs, never retrained: a SOURCE is either an ``ecgedge pipeline`` folder
(``run/metrics.json`` plus ``verify.json`` of its int8 bundle) or a plain training run
(``metrics.json``; float numbers only). Cross-validated numbers are the float model's pooled
out-of-fold predictions; the int8 number is the deployable model's on its held-out test records,
where verification compared it with the float model window by window.
"""

import json
from pathlib import Path

from ecgedge.device.errors import EcgEdgeError

PAPER_ACCURACY = 0.9723  # Salem et al. (2018), DenseNet features + classifier, window-level 10-fold CV
COLUMNS = (
    ("cnn_rhythm_int8", "device: CNN int8 + rhythm head (CV)"), ("cnn_rhythm", "CNN + rhythm head (CV, float)"),
    ("cnn", "CNN (CV, float)"), ("cnn_int8", "CNN (CV, int8)"), ("svm_imagenet", "SVM baseline (CV)"),
    ("rr_gbm", "RR baseline (CV)"),
    ("test_float", "held-out float"), ("test_int8", "held-out int8"),
)


def _read(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def source_row(source):
    """One row of the table from a pipeline folder or a training run folder.

    Returns
    -------
    dict: source, protocol, n_folds, n_windows, and for each of :data:`COLUMNS` an
    {accuracy, macro_f1} dict or None; int8_agreement (None without verification).
    """
    source = Path(source)
    run_dir = source / "run" if (source / "run" / "metrics.json").is_file() else source
    metrics = _read(run_dir / "metrics.json")
    if not metrics or "cv" not in metrics:
        raise EcgEdgeError(f"{source} holds neither a pipeline output nor a finished training run (metrics.json)")
    verify = (_read(source / "verify.json") or {}).get("int8")
    cv = metrics["cv"]
    row = {"source": str(source), "protocol": metrics["protocol"], "n_folds": cv["n_folds"],
           "n_windows": cv["n_windows"]}
    for key in ("cnn_rhythm_int8", "cnn_rhythm", "cnn", "cnn_int8", "svm_imagenet", "rr_gbm"):
        row[key] = {k: cv[key][k] for k in ("accuracy", "macro_f1")} if key in cv else None
    row["test_float"] = {k: metrics["deploy"]["test"][k] for k in ("accuracy", "macro_f1")}
    row["test_int8"] = {"accuracy": verify["accuracy"]["tflite"], "macro_f1": None} if verify else None
    row["int8_agreement"] = verify["agreement"] if verify else None
    return row


def accuracy_table(sources):
    """The table of every source, with the paper's figure beside it (dict, JSON-ready)."""
    rows = [source_row(s) for s in sources]
    paper_rows = [r for r in rows if r["protocol"] == "paper" and r["cnn"]]
    paper_int8 = [r for r in paper_rows if r["cnn_int8"]]
    return {
        "paper_accuracy": PAPER_ACCURACY,
        "rows": rows,
        "paper_protocol_cnn_beats_paper": (max(r["cnn"]["accuracy"] for r in paper_rows) > PAPER_ACCURACY
                                           if paper_rows else None),
        "paper_protocol_int8_beats_paper": (max(r["cnn_int8"]["accuracy"] for r in paper_int8) > PAPER_ACCURACY
                                            if paper_int8 else None),
        "note": "CV columns: pooled out-of-fold; CV int8 converts each fold's model (calibrated on its own "
                "training windows). held-out: the deployable model on its test records (fixed patient "
                "split); agreement: its int8 vs float decisions, window by window.",
    }


def _cell(score):
    return "–" if score is None else f"{100 * score['accuracy']:.2f} %"


def markdown_table(results):
    """The table as Markdown (the README shows it)."""
    lines = ["| source | protocol | folds / windows | " + " | ".join(name for _, name in COLUMNS)
             + " | int8 agreement |", "| --- | --- | --- |" + " ---: |" * (len(COLUMNS) + 1)]
    for r in results["rows"]:
        agreement = "–" if r["int8_agreement"] is None else f"{100 * r['int8_agreement']:.2f} %"
        lines.append(f"| {r['source']} | {r['protocol']} | {r['n_folds']} / {r['n_windows']} | "
                     + " | ".join(_cell(r[key]) for key, _ in COLUMNS) + f" | {agreement} |")
    paper = ["–" if key != "cnn" else f"{100 * results['paper_accuracy']:.2f} %" for key, _ in COLUMNS]
    lines.append("| Salem et al. (2018) | paper | 10 / ~7000 | " + " | ".join(paper) + " | – |")
    return "\n".join(lines)


def plot(path, results):
    """Grouped accuracy bars per source, the paper's 97.23 % as a line."""
    import numpy as np

    from ecgedge.train.report import _pyplot

    plt = _pyplot()
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(COLUMNS)
    for k, (key, name) in enumerate(COLUMNS):
        values = [r[key]["accuracy"] if r[key] else np.nan for r in rows]
        ax.bar(np.arange(len(rows)) + (k - (len(COLUMNS) - 1) / 2) * width, values, width, label=name)
    ax.axhline(results["paper_accuracy"], color="k", ls="--", lw=1, label="paper 97.23 %")
    ax.set_xticks(range(len(rows)), [f"{Path(r['source']).name}\n({r['protocol']})" for r in rows])
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
