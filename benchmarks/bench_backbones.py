"""Backbone sweep: each available ImageNet MobileNet through the whole pipeline on one small budget.

Every backbone runs :func:`ecgedge.pipeline.pipeline.run_pipeline` with the same records, epochs and
seed (so the same patient split), into ``WORK/<backbone>`` -- reused when up to date. The table
gives the int8 bundle's size, its device-runtime latency (one thread) and its held-out accuracy;
the Pareto plot shows which backbones no other beats on both latency and accuracy.
"""

from pathlib import Path

import numpy as np

from ecgedge.device.errors import EcgEdgeError

# Twelve records (11 patients: 201 and 202 are one) that hold every class of mitdb-rhythm4.
DEFAULT_RECORDS = ("106", "119", "200", "201", "202", "203", "207", "208", "217", "219", "222", "231")


def available_backbones(weights="imagenet"):
    """Registry names whose weights can be loaded (all of them for ``weights`` other than imagenet)."""
    from ecgedge.train.models import BACKBONES, resolve_weights

    names = []
    for name, backbone in BACKBONES.items():
        try:
            resolve_weights(backbone, weights)
        except EcgEdgeError:
            continue
        names.append(name)
    return names


def backbone_row(name, metrics):
    """One table row from a pipeline's metrics (dict)."""
    lat = metrics["latency"]["int8"]
    return {
        "backbone": name,
        "int8_bytes": metrics["bundle"]["bytes"],
        "dsp_ms": lat["dsp"]["median_ms"],
        "invoke_ms": lat["invoke"]["median_ms"],
        "end_to_end_ms": lat["end_to_end"]["median_ms"],
        "cv_accuracy": metrics["cross_validation"]["cnn"]["accuracy"],
        "test_float_accuracy": metrics["held_out_test"]["float"]["accuracy"],
        "test_int8_accuracy": metrics["held_out_test"]["int8"]["accuracy"],
        "int8_agreement": metrics["int8_vs_float"]["agreement"],
    }


def pareto_front(rows, cost="invoke_ms", gain="test_int8_accuracy"):
    """Backbones no other row beats on both ``cost`` (lower) and ``gain`` (higher): list of names."""
    front = []
    for r in rows:
        dominated = any(o[cost] <= r[cost] and o[gain] >= r[gain] and (o[cost] < r[cost] or o[gain] > r[gain])
                        for o in rows)
        if not dominated:
            front.append(r["backbone"])
    return front


def compare_backbones(names=None, weights="imagenet", epochs=3, records=DEFAULT_RECORDS, max_per_class=100,
                      n_folds=2, work_dir="runs/backbones", data_dir=None, seed=0):
    """Run the pipeline for each backbone on the budget; returns {budget, rows, pareto}."""
    from ecgedge.pipeline.pipeline import pipeline_config, run_pipeline

    names = names or available_backbones(weights)
    if not names:
        raise EcgEdgeError(f"no backbone has {weights} weights; set ECGEDGE_WEIGHTS or pass --weights none")
    budget = {"weights": weights, "epochs": epochs, "records": list(records), "max_per_class": max_per_class,
              "n_folds": n_folds, "seed": seed}
    rows = []
    for name in names:
        cfg = pipeline_config(backbone=name, weights=weights, epochs=epochs, records=tuple(records),
                              max_per_class=max_per_class, n_folds=n_folds, seed=seed, baselines=False)
        rows.append(backbone_row(name, run_pipeline(cfg, Path(work_dir) / name, data_dir)))
    return {"budget": budget, "rows": rows, "pareto": pareto_front(rows)}


def markdown_table(results):
    """The sweep as Markdown; Pareto-optimal backbones marked *."""
    lines = ["| backbone | int8 KiB | DSP ms | invoke ms | end to end ms | CV acc | test float | test int8 | agreement |",
             "| --- |" + " ---: |" * 8]
    for r in results["rows"]:
        mark = " *" if r["backbone"] in results["pareto"] else ""
        lines.append(f"| {r['backbone']}{mark} | {r['int8_bytes'] / 1024:.0f} | {r['dsp_ms']:.3f} | "
                     f"{r['invoke_ms']:.3f} | {r['end_to_end_ms']:.3f} | {100 * r['cv_accuracy']:.1f} % | "
                     f"{100 * r['test_float_accuracy']:.1f} % | {100 * r['test_int8_accuracy']:.1f} % | "
                     f"{100 * r['int8_agreement']:.1f} % |")
    return "\n".join(lines)


def plot(path, results):
    """Held-out int8 accuracy against int8 invoke time; marker area ~ model size; Pareto front joined."""
    from ecgedge.train.report import _pyplot

    plt = _pyplot()
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.array([r["invoke_ms"] for r in rows])
    y = np.array([r["test_int8_accuracy"] for r in rows])
    size = np.array([r["int8_bytes"] for r in rows]) / 1024
    ax.scatter(x, y, s=20 + size / 4, alpha=0.6)
    for r in rows:
        ax.annotate(f"{r['backbone']}\n{r['int8_bytes'] / 1024:.0f} KiB", (r["invoke_ms"], r["test_int8_accuracy"]),
                    fontsize=7, xytext=(4, 4), textcoords="offset points")
    front = sorted((r for r in rows if r["backbone"] in results["pareto"]), key=lambda r: r["invoke_ms"])
    ax.plot([r["invoke_ms"] for r in front], [r["test_int8_accuracy"] for r in front], "k--", lw=1,
            label="Pareto front")
    ax.set(xlabel="int8 invoke, median ms (one thread)", ylabel="held-out int8 accuracy",
           title=f"backbones, {results['budget']['epochs']} epochs on {len(results['budget']['records'])} records")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
