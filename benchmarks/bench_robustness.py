"""Robustness of the device runtime: recorded noise at chosen SNRs, non-ECG input, units and
offset, recorders' sampling rates.

Four questions a user of a new recorder asks, answered with the int8 bundle through the
device runtime (``ecgedge.device.runtime.Classifier``), each record's windows in order, so that
a window's history (the rhythm head's context features) is the windows before it, as altered:

1. **Noise.** The MIT-BIH Noise Stress Test Database's recorded noise -- ``bw`` (baseline
   wander) and ``ma`` (muscle artifact) -- added to clean MIT-BIH windows at 24 to 0 dB SNR.
   SNR is the ratio of the window's signal power to the added noise's power (both centred),
   over the whole window; the noise is the noise record's same lead, from a seeded offset.
   Reported per noise and SNR: accuracy against the rhythm annotations, and the share of windows
   the device did not call a rhythm (refused by the quality checks, or NOISY).
2. **Non-ECG input.** White noise, mains hum, a random walk, a sawtooth, a flat line with a
   spike and muscle bursts: what the device answers (the wanted answer is never a rhythm).
3. **Units and offset.** The same windows in mV, uV, ADC counts and with a DC offset:
   the share of windows whose label stays the same.
4. **Sampling rate.** The same windows as a 125, 200, 250 or 500 Hz recorder would give them
   (resampled from MIT-BIH's 360 Hz): accuracy and the share of labels that stay the same.
"""

import numpy as np

NOISES = ("bw", "ma")
DEFAULT_SNRS_DB = (24.0, 18.0, 12.0, 6.0, 0.0)
DEFAULT_RECORDS = ("100", "103", "105", "119", "201", "203", "210", "219")
RECORDER_RATES = (125.0, 200.0, 250.0, 500.0)


def _not_a_rhythm(result, noise_class):
    return result.label is None or result.label == noise_class


def add_noise(x, noise, snr_db):
    """``x`` plus ``noise`` scaled to ``snr_db`` (power ratio of the centred signals)."""
    x = np.asarray(x, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64) - np.mean(noise)
    p_signal = np.var(x)
    p_noise = np.var(noise)
    if p_noise == 0:
        return x
    return x + noise * np.sqrt(p_signal / (p_noise * 10 ** (snr_db / 10)))


def _labelled_windows(classifier, data_root, records):
    from ecgedge.device.evaluate import label_source, record_windows

    db_dir = data_root / "mitdb"
    source = label_source(classifier.bundle.manifest, db_dir)
    label_map = classifier.bundle.label_map
    xs, ys, starts, fs = [], [], [], None
    for record in records:
        rw = record_windows(db_dir / record, label_map, classifier.window_s, classifier.hop_s,
                            classifier.bundle.manifest.get("lead") or ("MLII",), "first", source)
        xs.append(rw.x)
        ys += [label_map[lb] for lb in rw.labels]
        starts.append(rw.starts / rw.fs)
        fs = rw.fs
    return np.concatenate(xs), ys, fs, starts


def _by_record(x, starts):
    """The rows of ``x`` split into records (``starts``: each record's window starts)."""
    return np.split(x, np.cumsum([len(s) for s in starts])[:-1])


def _classify(classifier, x, fs, starts):
    """WindowResults of the rows of ``x``, record by record (``starts``: each record's window
    starts, seconds), so that each window has the history the windows before it give it."""
    return [r for rows, s in zip(_by_record(x, starts), starts) for r in classifier.classify_windows(rows, fs, s)]


def noise_stress(classifier, data_root, records, snrs_db=DEFAULT_SNRS_DB, seed=0):
    """Accuracy and not-a-rhythm share per noise record and SNR (see the module docstring)."""
    from ecgedge.device.wfdb_reader import read_signal

    x, y, fs, starts = _labelled_windows(classifier, data_root, records)
    noise_class = classifier.decision_rule.noise_class
    rng = np.random.default_rng(seed)

    def scores(windows):
        results = _classify(classifier, windows, fs, starts)
        return {"accuracy": float(np.mean([r.label == t for r, t in zip(results, y)])),
                "not_a_rhythm": float(np.mean([_not_a_rhythm(r, noise_class) for r in results]))}

    out = {"records": list(records), "n_windows": len(y), "clean": scores(x), "noise": {}}
    for name in NOISES:
        noise, noise_fs, _ = read_signal(data_root / "nstdb" / name, 0)
        if noise_fs != fs:
            raise ValueError(f"nstdb/{name} is at {noise_fs} Hz, the windows at {fs} Hz")
        offsets = rng.integers(0, len(noise) - x.shape[1], size=len(x))
        segments = np.stack([noise[o:o + x.shape[1]] for o in offsets])
        out["noise"][name] = {f"{snr:g}": scores(np.stack([add_noise(w, s, snr) for w, s in zip(x, segments)]))
                              for snr in snrs_db}
    return out


def non_ecg(classifier, fs=360.0, seed=0):
    """The device's answer to each non-ECG signal: {name: {"label", "reason"}}."""
    out = {}
    from ecgedge.device.quality import non_ecg_signals

    for name, x in non_ecg_signals(fs, classifier.window_s, seed).items():
        r = classifier.classify_window(x, fs)
        out[name] = {"label": r.label, "reason": r.reason,
                     "a_rhythm": not _not_a_rhythm(r, classifier.decision_rule.noise_class)}
    return out


def units_and_offset(classifier, data_root, records):
    """Share of windows whose label is unchanged in uV, ADC-count-like scale + offset, +20 mV, +1000 mV."""
    x, _, fs, starts = _labelled_windows(classifier, data_root, records)
    x = x.astype(np.float64)  # as the device's readers give them (float32 + 1000 mV loses bits)
    reference = [r.label for r in _classify(classifier, x, fs, starts)]
    variants = {"uV": x * 1000.0, "ADC counts (x200 + 1024)": x * 200.0 + 1024.0, "+20 mV": x + 20.0,
                "+1000 mV": x + 1000.0}
    return {name: float(np.mean([r.label == ref for r, ref in zip(_classify(classifier, v, fs, starts), reference)]))
            for name, v in variants.items()}


def recorder_rates(classifier, data_root, records, rates=RECORDER_RATES):
    """Per rate: accuracy and the share of labels unchanged when the windows come at that rate."""
    from ecgedge.device.dsp import resample_poly, resample_ratio

    x, y, fs, starts = _labelled_windows(classifier, data_root, records)
    x = x.astype(np.float64)
    reference = [r.label for r in _classify(classifier, x, fs, starts)]
    out = {"native_hz": float(fs), "native_accuracy": float(np.mean([a == b for a, b in zip(reference, y)]))}
    # Each record centred as a whole (the resampler pads with zeros): windows resampled one by one
    # then still join up into the history the windows after them read.
    centred = np.concatenate([rows - rows.mean() for rows in _by_record(x, starts)])
    for rate in rates:
        ratio = resample_ratio(fs, rate)
        at_rate = np.stack([resample_poly(w, *ratio) for w in centred])
        labels = [r.label for r in _classify(classifier, at_rate, rate, starts)]
        out[f"{rate:g}"] = {"accuracy": float(np.mean([a == b for a, b in zip(labels, y)])),
                            "same_label": float(np.mean([a == b for a, b in zip(labels, reference)]))}
    return out


def measure_robustness(bundle, data_dir=None, records=DEFAULT_RECORDS, snrs_db=DEFAULT_SNRS_DB, seed=0):
    """All four parts, JSON-ready."""
    from ecgedge.device.runtime import Classifier
    from ecgedge.train.data import data_root

    classifier = Classifier(bundle, num_threads=1)
    root = data_root(data_dir)
    return {"bundle": str(bundle), "task": classifier.bundle.manifest.get("task"),
            "noise_stress": noise_stress(classifier, root, records, snrs_db, seed),
            "non_ecg": non_ecg(classifier, seed=seed),
            "units_and_offset": units_and_offset(classifier, root, records),
            "recorder_rates": recorder_rates(classifier, root, records)}


def summary(results):
    """Lines for the terminal."""
    ns = results["noise_stress"]
    lines = [f"clean: accuracy {ns['clean']['accuracy']:.3f}, not a rhythm {ns['clean']['not_a_rhythm']:.3f} "
             f"({ns['n_windows']} windows of mitdb {', '.join(ns['records'])})"]
    for name, by_snr in ns["noise"].items():
        lines.append(f"{name}: " + "; ".join(f"{snr} dB acc {s['accuracy']:.3f} / not a rhythm {s['not_a_rhythm']:.3f}"
                                           for snr, s in by_snr.items()))
    lines += [f"{name}: {v['label'] or 'no label'}" + (f" ({v['reason']})" if v["reason"] else "")
              for name, v in results["non_ecg"].items()]
    lines.append("same label: " + ", ".join(f"{k} {v:.4f}" for k, v in results["units_and_offset"].items()))
    rates = results.get("recorder_rates")
    if rates:
        lines.append(f"sampling rate (native {rates['native_hz']:g} Hz, accuracy {rates['native_accuracy']:.3f}): "
                     + "; ".join(f"{k} Hz acc {v['accuracy']:.3f} / same label {v['same_label']:.3f}"
                                 for k, v in rates.items() if isinstance(v, dict)))
    return "\n".join(lines)


def plot(path, results):
    """Accuracy and not-a-rhythm share against SNR, one line per noise record."""
    from ecgedge.train.report import _pyplot

    plt = _pyplot()
    ns = results["noise_stress"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, by_snr in ns["noise"].items():
        snrs = [float(s) for s in by_snr]
        for ax, key in zip(axes, ("accuracy", "not_a_rhythm")):
            ax.plot(snrs, [by_snr[s][key] for s in by_snr], marker="o", label=f"nstdb {name}")
    for ax, key in zip(axes, ("accuracy", "not_a_rhythm")):
        ax.axhline(ns["clean"][key], color="grey", linestyle="--", label="clean")
        ax.set(ylim=(0, 1))
    save_snr_figure(plt, fig, path, ("accuracy", "not called a rhythm"),
                    f"{results['task']}: recorded noise added to {ns['n_windows']} MIT-BIH windows")


def save_snr_figure(plt, fig, path, titles, suptitle, legend_size=8):
    """Finish a figure of panels against SNR (noisiest on the right) and save it to ``path``."""
    for ax, title in zip(fig.axes, titles):
        ax.set(xlabel="SNR (dB)", title=title)
        ax.invert_xaxis()
    fig.axes[0].legend(fontsize=legend_size)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
