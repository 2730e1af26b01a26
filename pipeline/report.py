"""``report.md`` of ``ecgedge pipeline`` and its PNG plots (matplotlib, Agg backend).

The numbers come from the pipeline's own files (metrics, verify.json, latency.json); the example
windows are classified again here by the device runtime, so their labels are what the device says.
"""

from pathlib import Path

import numpy as np

from ecgedge.device.evaluate import recall_cells
from ecgedge.device.rhythm import CNN_CLASS_WEIGHTS, CNN_WEIGHT
from ecgedge.train.report import _pyplot, plot_confusion_matrices

PLOTS = ("confusion_float_int8.png", "examples.png", "latency.png")
LATENCY_PARTS = (("dsp", "DSP"), ("invoke", "invoke"), ("end_to_end", "end to end"))
MODEL_NAMES = {"cnn_rhythm_int8": "**the device**: int8 CNN + rhythm head, each fold converted",
               "cnn_rhythm": "CNN + rhythm head (float)",
               "cnn_int8": "MobileNet CNN alone, each fold converted to int8",
               "cnn": "MobileNet CNN alone (float)",
               "cnn_plain_kernels": "MobileNet CNN alone (float, before rounding its kernels to the int8 grid)",
               "rhythm_head": ("rhythm head alone (gradient boosting on the beats the device detects and "
                               "the signal's sharpness)"),
               "svm_imagenet": "SVM on ImageNet features (paper's recipe)",
               "rr_gbm": "RR intervals + gradient boosting (reads reference beats and their types)"}


def _read(path):
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Plots


def plot_latency_bars(path, timings, title="median per window (whisker: p90), one thread"):
    """Grouped bars of DSP, invoke and end-to-end medians with p90 whiskers.

    Parameters
    ----------
    path : output PNG path.
    timings : {label: {"dsp"|"invoke"|"end_to_end": {"median_ms", "p90_ms"}}}; a part a label
        lacks is left out of its group.
    title : axes title.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(timings), 1)
    for k, (label, parts) in enumerate(timings.items()):
        xs, medians, p90 = [], [], []
        for i, (key, _) in enumerate(LATENCY_PARTS):
            if key in parts:
                xs.append(i + (k - (len(timings) - 1) / 2) * width)
                medians.append(parts[key]["median_ms"])
                p90.append(parts[key]["p90_ms"] - parts[key]["median_ms"])
        bars = ax.bar(xs, medians, width, label=label, yerr=[np.zeros(len(p90)), p90], capsize=3)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks(range(len(LATENCY_PARTS)), [name for _, name in LATENCY_PARTS])
    ax.set_ylabel("ms")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def example_windows(task, records, bundle_path, data_dir=None, seed=0):
    """One seeded held-out window per class, classified by the device runtime.

    Parameters
    ----------
    task : Task.
    records : the test records (``"mitdb/201"``).
    bundle_path : the int8 bundle.
    data_dir : folder of PhysioNet databases.
    seed : int, picks the windows.

    Returns
    -------
    list of dicts {class, record, start_s, x (window_len,) float32, fs, image (*image_shape)
    float32, spectrogram (the bundle's SpectrogramConfig), result
    (ecgedge.device.runtime.WindowResult)}, classes without test windows left out.
    """
    from ecgedge.device.dsp import window_image
    from ecgedge.device.runtime import Classifier
    from ecgedge.train.data import load_windows

    windows = load_windows(task, data_dir, records, progress=False)
    classifier = Classifier(bundle_path)
    rng = np.random.default_rng(seed)
    examples = []
    for c, name in enumerate(task.class_names):
        members = np.flatnonzero(windows.y == c)
        if len(members) == 0:
            continue
        i = int(rng.choice(members))
        x = np.asarray(windows.x[i])
        examples.append({
            "class": name, "record": str(windows.record[i]), "start_s": float(windows.start_s[i]), "x": x,
            "fs": windows.fs, "image": window_image(x, windows.fs, classifier.cfg), "spectrogram": classifier.cfg,
            "result": classifier.classify_window(x, windows.fs, float(windows.start_s[i])),
        })
    return examples


def _prediction_text(result):
    if result.label is None:
        return f"not classified ({result.reason})"
    return f"predicted {result.label} ({float(np.max(result.probs)):.2f})"


def channel_titles(spectrogram):
    """What each image channel is: its STFT window length in seconds, e.g. ``"0.5 s STFT"``.

    ``spectrogram`` is an ``ecgedge.device.dsp.SpectrogramConfig``; a channel's window is
    ``nperseg / fs`` seconds at the model's sampling rate.
    """
    return [f"{nperseg / spectrogram.fs:g} s STFT" for nperseg, _ in spectrogram.channels]


def plot_examples(path, examples):
    """One row per example: the raw trace, then each spectrogram channel; titled true vs predicted."""
    plt = _pyplot()
    n_ch = examples[0]["image"].shape[2]
    titles = channel_titles(examples[0]["spectrogram"])
    fig, axes = plt.subplots(len(examples), 1 + n_ch, figsize=(12, 2.4 * len(examples)), squeeze=False,
                             gridspec_kw={"width_ratios": [3] + [1] * n_ch})
    for row, ex in zip(axes, examples):
        t = ex["start_s"] + np.arange(len(ex["x"])) / ex["fs"]
        row[0].plot(t, ex["x"], lw=0.6, color="k")
        row[0].set(xlim=(t[0], t[-1]), ylabel="mV")
        row[0].set_title(f"{ex['record']} @ {ex['start_s']:.0f} s: true {ex['class']}, "
                         f"{_prediction_text(ex['result'])}", fontsize=9, loc="left")
        for c in range(n_ch):
            row[1 + c].imshow(ex["image"][:, :, c], origin="lower", aspect="auto", cmap="magma")
            row[1 + c].set(xticks=[], yticks=[], title=titles[c])
    axes[-1][0].set_xlabel("time in record (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Markdown


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.2f} %"


def results_section(metrics):
    """The protocol's cross-validated table and the held-out test records: the report's first numbers."""
    cv, test = metrics["cross_validation"], metrics["held_out_test"]
    heading = ("Patient-wise results (records protocol)" if metrics["protocol"] == "records"
               else f"Results ({metrics['protocol']} protocol)")
    classes = metrics["bundle"]["classes"]
    lines = [f"## {heading}", "", f"Cross-validation: {metrics['protocol_note']}; {cv['n_folds']} folds, "
             f"{cv['n_windows']} windows, out-of-fold predictions pooled.", "",
             f"| model | accuracy | macro-F1 | recall {' / '.join(classes)} | fold accuracy (mean ± sd) |",
             "| --- | ---: | ---: | --- | ---: |"]
    for key, name in MODEL_NAMES.items():
        if key in cv:
            m = cv[key]
            recall = " / ".join(f"{m['recall'][c]:.2f}" for c in classes) if "recall" in m else "-"
            lines.append(f"| {name} | {_pct(m['accuracy'])} | {m['macro_f1']:.4f} | {recall} | "
                         f"{_pct(m['fold_accuracy']['mean'])} ± {_pct(m['fold_accuracy']['sd'])} |")
    if "cnn_rhythm_int8" in cv:
        lines += ["", f"The device's decision combines the int8 CNN's class probabilities with the rhythm head's "
                      f"(geometric mean, weighted per class: the CNN {CNN_WEIGHT:g}, for AF "
                      f"{CNN_CLASS_WEIGHTS['AF']:g}, the rhythm head the rest); it agrees with the "
                      f"float CNN + rhythm head on "
                      f"{_pct(cv['cnn_rhythm_int8']['agreement_with_float'])} of the windows."]
    if "cnn_int8" in cv:
        lines += ["", f"Each fold's model converted to int8 (calibrated on that fold's training windows) "
                      f"agrees with its float self on {_pct(cv['cnn_int8']['agreement_with_float'])} of the "
                      f"{cv['n_windows']} test windows"
                      + (f" ({_pct(cv['cnn_int8']['agreement_with_plain_kernels'])} with the float model before "
                         "its kernels were rounded to the int8 grid)." if "agreement_with_plain_kernels" in cv["cnn_int8"]
                         else ".")]
    lines += ["", f"Deployable model, trained on a fixed seeded patient split and tested on the held-out "
                  f"records {held_out_records(test['records'])} ({test['windows']} windows): float accuracy "
                  f"{_pct(test['float']['accuracy'])} (macro-F1 {test['float']['macro_f1']:.4f}), int8 accuracy "
                  f"{_pct(test['int8']['accuracy'])}"
                  + (f"; before its kernels were rounded to the int8 grid the float model scored "
                     f"{_pct(test['float_plain_kernels']['accuracy'])} (macro-F1 "
                     f"{test['float_plain_kernels']['macro_f1']:.4f})." if "float_plain_kernels" in test else ".")
                  + (f" With the rhythm head: float {_pct(test['float_with_rhythm_head']['accuracy'])} (macro-F1 "
                     f"{test['float_with_rhythm_head']['macro_f1']:.4f}), int8 (the device) "
                     f"{_pct(test['int8_with_rhythm_head']['accuracy'])}." if "int8_with_rhythm_head" in test else ""),
          ""]
    return lines


def _by_database(records):
    """{database: [record, ...]} of ``"<database>/<record>"`` names, in their order ("" without a database)."""
    by_database = {}
    for record in records:
        by_database.setdefault(record.rpartition("/")[0], []).append(record)
    return by_database


def held_out_records(records, max_names=12):
    """Records by database, named where a database has at most ``max_names``, else counted (the
    full list is RUN_DIR/split.json): "cinc2017: 1,224 recordings; mitdb: 103, 115"."""
    parts = [", ".join(names) if len(names) <= max_names
             else f"{database}: {len(names):,} recordings (listed in run/split.json)"
             for database, names in _by_database(records).items()]
    return "; ".join(parts)


def quantization_section(metrics):
    q, f = metrics["int8_vs_float"], metrics["float32_vs_float"]
    verdict = "passes" if q["passed"] else "FAILS"
    return [
        "## int8 vs float", "",
        f"Top-1 agreement of the int8 bundle with the float Keras model on the {q['n']} held-out windows: "
        f"{_pct(q['agreement'])} ({verdict} the {_pct(q['threshold'])} threshold); relative RMS error of the "
        f"scores {q['relative_rms_error']:.4f}. The float32 bundle agrees {_pct(f['agreement'])}."
        + (f" With the rhythm head, the device's decisions agree with the float model's on "
           f"{_pct(q['with_rhythm_head_agreement'])}." if "with_rhythm_head_agreement" in q else ""), "",
        "![confusion matrices, float vs int8](confusion_float_int8.png)", "",
    ]


def device_section(metrics):
    d = metrics["device_eval"]
    same = "the same windows" if d["n_windows"] == d["verify_n_windows"] else \
        f"{d['verify_n_windows']} windows in verification (the device skips windows that fail its quality checks)"
    return [
        "## Device runtime", "",
        f"`ecgedge device eval` path (numpy DSP + LiteRT, int8) on the held-out records against their rhythm "
        f"annotations: accuracy {_pct(d['accuracy'])} on {d['n_windows']} windows; verification measured "
        f"{_pct(d['verify_int8_accuracy'])} on {same}. Windows skipped: {skipped_text(d['skipped'])}.", "",
    ] + record_table(d["records"], metrics["bundle"]["classes"])


def skipped_text(skipped):
    """The device's skipped windows ({database: {"labels"|"quality": {reason: count}}}) in words."""
    parts = [f"{database}: {count} for {kind} '{reason}'" for database, kinds in skipped.items()
             for kind, reasons in kinds.items() for reason, count in reasons.items() if count]
    return "; ".join(parts) if parts else "none"


def record_table(records, classes, max_rows=30):
    """Per database, then per held-out record (the ``max_rows`` worst where there are more; all are
    in device_eval.json): accuracy and correct / windows of each annotated class."""
    columns = f"| {' | '.join(classes)} |", " ---: |" * len(classes)
    lines = ["Per database (correct / windows of each annotated class):", "",
             f"| database | records | accuracy {columns[0]}", f"| --- | ---: | ---: |{columns[1]}"]
    for database, names in _by_database(records).items():
        rows = [records[name] for name in names]
        counts = {c: [s["recall"][c] for s in rows if c in s["recall"]] for c in classes}
        cells = [f"{sum(n['correct'] for n in counts[c])}/{sum(n['windows'] for n in counts[c])}"
                 if counts[c] else "-" for c in classes]
        correct = sum(n["correct"] for c in classes for n in counts[c])
        windows = sum(n["windows"] for c in classes for n in counts[c])
        accuracy = _pct(correct / windows) if windows else "-"
        lines.append(f"| {database or '-'} | {len(rows)} | {accuracy} | {' | '.join(cells)} |")
    shown = list(records.items())
    if len(shown) > max_rows:
        # the worst first, and among equals the longest
        shown = sorted(shown, key=lambda item: (-1 if item[1]["accuracy"] is None else item[1]["accuracy"],
                                                -item[1]["classified"]))[:max_rows]
    cut = f" (the {max_rows} worst of {len(records)}; all in device_eval.json)" if len(records) > max_rows else ""
    lines += ["", f"Per record: which patients the device fails{cut}.", "",
              f"| record | accuracy {columns[0]}", f"| --- | ---: |{columns[1]}"]
    for record, scores in shown:
        accuracy = "-" if scores["accuracy"] is None else _pct(scores["accuracy"])
        lines.append(f"| {record} | {accuracy} | {' | '.join(recall_cells(scores, classes))} |")
    return lines + [""]


def latency_section(metrics):
    int8 = metrics["latency"]["int8"]
    lines = ["## Latency (device runtime, one thread)", "",
             f"Medians and 90th percentiles over {int8['n']} windows ({int8['windows']}), "
             "the parts timed in turns.", "",
             "| bundle | bytes | DSP median / p90 (ms) | invoke median / p90 (ms) | end to end median / p90 (ms) | real-time factor |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for quant, t in metrics["latency"].items():
        parts = " | ".join(f"{t[k]['median_ms']:.3f} / {t[k]['p90_ms']:.3f}" for k, _ in LATENCY_PARTS)
        lines.append(f"| {quant} | {t['model_bytes']} | {parts} | {t['real_time_factor']:.2e} |")
    return lines + ["", "![latency bars](latency.png)", ""]


def rate_text(value):
    """A rate (Se, Sp, F1) with three decimals, "-" where it is undefined (no such class)."""
    return "-" if value is None else f"{value:.3f}"


def headline_section(metrics):
    """The device's headline (recording level where the task labels recordings) and its scores per
    database, for the device (int8 CNN + rhythm head), the rhythm head alone and the CNN alone."""
    h = metrics.get("headline")
    if not h:
        return []
    lines = [f"## The device, per database ({h['protocol']} protocol)", "",
             f"Headline: {h['level']} level over {', '.join(h['databases'])}: accuracy {_pct(h['accuracy'])}, "
             f"macro-F1 {h['macro_f1']:.4f}, AF sensitivity {rate_text(h['af_se'])}, specificity {rate_text(h['af_sp'])}, "
             f"inconclusive {_pct(h['inconclusive_rate'])}"
             + (f", Challenge F1 (mean of NSR, AF, OTHER) {h['challenge_f1']:.4f}" if "challenge_f1" in h else "")
             + ".", "",
             "A database that labels whole recordings is scored per recording (the bundle's decision rule "
             "over the recording's windows; an inconclusive answer counts as not AF, and as NOISY in the "
             "F1); the others per window.", "",
             "| model | database | level | n | accuracy | macro-F1 | AF Se | AF Sp | inconclusive | Challenge F1 |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model, tables in (metrics.get("per_database") or {}).items():
        for name, d in tables.items():
            lines.append(f"| {model} | {name} | {d['level']} | {d['n_recordings']} | {_pct(d['accuracy'])} | "
                         f"{d['macro_f1']:.4f} | {rate_text(d.get('af_se'))} | {rate_text(d.get('af_sp'))} | "
                         f"{_pct(d['inconclusive_rate'])} | {rate_text(d.get('challenge_f1'))} |")
    return lines + [""]


def report_markdown(metrics):
    """The whole report.md text."""
    b = metrics["bundle"]
    lines = [f"# ecgedge pipeline: {metrics['task']}", "", f"Command: `{metrics['command']}`", ""]
    lines += headline_section(metrics)
    lines += results_section(metrics) + quantization_section(metrics) + device_section(metrics)
    lines += latency_section(metrics)
    lines += ["## Example held-out windows", "",
              "One window per class from the test records: the raw trace and the spectrogram channels the "
              "model sees, with the device runtime's prediction.", "", "![example windows](examples.png)", "",
              "## Bundle", "", f"`{b['path']}`: {b['quantization']}, {b['bytes']} bytes, sha256 `{b['sha256']}`, "
              f"classes {', '.join(b['classes'])}.", ""]
    return "\n".join(lines)


def write_report(out, task, metrics, bundle_path, data_dir=None, seed=0):
    """Write ``out/report.md`` and the PNGs of :data:`PLOTS` from the pipeline's files in ``out``.

    ``bundle_path`` is the int8 bundle that classifies the example windows.
    """
    out = Path(out)
    classes = list(task.class_names)
    verify = _read(out / "verify.json")["int8"]["confusion"]
    plot_confusion_matrices(out / PLOTS[0], {
        "float Keras (held-out records)": verify["float"],
        "int8 TFLite (same windows)": verify["tflite"],
        "int8 on the device runtime": metrics["device_eval"]["confusion"],
    }, classes)
    examples = example_windows(task, metrics["held_out_test"]["records"], bundle_path, data_dir, seed)
    plot_examples(out / PLOTS[1], examples)
    latency = _read(out / "latency.json")
    plot_latency_bars(out / PLOTS[2], {f"{q} ({latency[q]['model_bytes']} B)": latency[q] for q in latency})
    (out / "report.md").write_text(report_markdown(metrics), encoding="utf-8")
