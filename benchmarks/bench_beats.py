"""Beat detection against MIT-BIH's reference beats: each detector, clean and in recorded noise.

Every interval, atrial and context feature of the rhythm head starts from the beats the device
finds (``ecgedge.device.rhythm.detect_beats``), so a change of detector is measured here first:
sensitivity (reference beats found) and positive predictivity (found beats that are reference
beats) of every detector in ``rhythm.BEAT_DETECTORS``, on the 10-s windows of MIT-BIH records
(MLII where the record has it, else its first ECG lead) as the device sees them (resampled to the
task's model rate, low-passed, standardised), clean and with the Noise Stress Test Database's
``bw`` and ``ma`` noise added at chosen SNRs (as ``ecgedge bench robustness`` adds it). A beat
matches when one is found within ``TOLERANCE_S``; the first and last ``MARGIN_S`` of a window
are not scored (a beat cut by the window's edge).
"""

import numpy as np

from ecgedge.benchmarks.bench_robustness import NOISES, add_noise, save_snr_figure

TOLERANCE_S = 0.1
MARGIN_S = 0.3
DEFAULT_SNRS_DB = (12.0, 6.0, 0.0)
PREFERRED_LEAD = "MLII"


def match_beats(found_s, reference_s, tolerance_s=TOLERANCE_S):
    """(matched, missed, extra): reference beats with a found beat within ``tolerance_s``, the
    reference beats without one, the found beats that match none (counts, ints)."""
    found_s, reference_s = np.asarray(found_s, dtype=np.float64), np.asarray(reference_s, dtype=np.float64)
    near = np.abs(found_s[:, None] - reference_s[None, :]) <= tolerance_s
    matched = int(min(near.any(axis=0).sum(), near.any(axis=1).sum()))
    return matched, reference_s.size - matched, found_s.size - matched


def _scores(counts):
    matched, missed, extra = (int(c) for c in counts)
    return {"se": matched / max(matched + missed, 1), "ppv": matched / max(matched + extra, 1),
            "n_reference": matched + missed, "n_found": matched + extra}


def _record(db_dir, record):
    """(signal in mV, fs, reference beat times in s, lead name) of one MIT-BIH record."""
    from ecgedge.device.wfdb_reader import read_signal
    from ecgedge.train.data import read_beats

    signal, fs, lead = read_signal(db_dir / record, [PREFERRED_LEAD])
    return signal, float(fs), read_beats(db_dir, record)[0] / fs, lead


def measure_beats(data_dir=None, records=None, task="multidb-rhythm5", snrs_db=DEFAULT_SNRS_DB, seed=0,
                  progress=True):
    """Se / PPV per detector, clean and per noise and SNR, pooled over the records' windows.

    Parameters
    ----------
    data_dir : folder of PhysioNet databases (mitdb, nstdb) or None (``ECGEDGE_DATA``).
    records : mitdb record names, or None for every record there.
    task : task preset whose spectrogram settings (model rate, low-pass) the device uses.
    snrs_db : SNRs of the added noise.
    seed : seeds the offsets into the noise records.

    Returns
    -------
    JSON-ready dict: task, records, leads, n_windows, tolerance_s, detectors, and ``clean``
    {detector: scores} and ``noise`` {noise: {snr: {detector: scores}}}, scores being
    {se, ppv, n_reference, n_found}.
    """
    from tqdm import tqdm

    from ecgedge.device import rhythm
    from ecgedge.device.dsp import standardize, to_model_rate
    from ecgedge.device.wfdb_reader import read_signal
    from ecgedge.train.data import data_root
    from ecgedge.train.tasks import load_task

    root = data_root(data_dir)
    cfg = load_task(task).spectrogram
    if records is None:
        records = sorted(p.stem for p in (root / "mitdb").glob("*.hea"))
    if not records:
        raise FileNotFoundError(f"no mitdb records in {root / 'mitdb'}")
    noises = {name: read_signal(root / "nstdb" / name, 0)[:2] for name in NOISES}
    conditions = [("clean", None)] + [(name, snr) for name in NOISES for snr in snrs_db]
    detectors = tuple(rhythm.BEAT_DETECTORS)
    counts = {(c, d): np.zeros(3, dtype=np.int64) for c in conditions for d in detectors}
    rng = np.random.default_rng(seed)
    leads, n_windows = {}, 0
    for record in tqdm(records, desc="beats", unit="record", disable=not progress):
        signal, fs, reference, leads[record] = _record(root / "mitdb", record)
        for name, (_, noise_fs) in noises.items():
            if noise_fs != fs:
                raise ValueError(f"nstdb/{name} is at {noise_fs} Hz, mitdb/{record} at {fs} Hz")
        n = int(round(cfg.window_s * fs))
        for start in range(0, signal.size - n + 1, n):
            window, t0 = signal[start:start + n], start / fs
            ref = reference[(reference >= t0 + MARGIN_S) & (reference < t0 + cfg.window_s - MARGIN_S)] - t0
            for name, snr in conditions:
                noisy = window
                if snr is not None:
                    noise = noises[name][0]
                    offset = rng.integers(0, noise.size - n)
                    noisy = add_noise(window, noise[offset:offset + n], snr)
                z = standardize(to_model_rate(noisy, fs, cfg))
                for detector in detectors:
                    found = rhythm.detect_beats(z, cfg.fs, detector) / cfg.fs
                    found = found[(found >= MARGIN_S) & (found < cfg.window_s - MARGIN_S)]
                    counts[(name, snr), detector] += match_beats(found, ref)
            n_windows += 1
    out = {"task": task, "records": list(records), "leads": leads, "n_windows": n_windows,
           "tolerance_s": TOLERANCE_S, "detectors": list(detectors),
           "clean": {str(d): _scores(counts[("clean", None), d]) for d in detectors}, "noise": {}}
    for name, snr in conditions[1:]:
        out["noise"].setdefault(name, {})[f"{snr:g}"] = {str(d): _scores(counts[(name, snr), d]) for d in detectors}
    return out


def summary(results):
    """Lines for the terminal."""
    def line(label, by_detector):
        return f"{label:>12}: " + "; ".join(f"detector {d} Se {s['se']:.3f} PPV {s['ppv']:.3f}"
                                            for d, s in by_detector.items())

    n_ref = next(iter(results["clean"].values()))["n_reference"]
    lines = [f"{n_ref} reference beats in {results['n_windows']} windows of {len(results['records'])} mitdb records "
             f"(+-{results['tolerance_s'] * 1000:g} ms)", line("clean", results["clean"])]
    lines += [line(f"{name} {snr} dB", by_detector) for name, by_snr in results["noise"].items()
              for snr, by_detector in by_snr.items()]
    return "\n".join(lines)


def plot(path, results):
    """Se and PPV against SNR, one line per detector and noise; the clean values dashed."""
    from ecgedge.train.report import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, detector in enumerate(str(d) for d in results["detectors"]):
        color = colors[i % len(colors)]
        for ax, key in zip(axes, ("se", "ppv")):
            ax.axhline(results["clean"][detector][key], color=color, linestyle="--", linewidth=0.8)
            for name, marker in zip(results["noise"], "os^v"):
                by_snr = results["noise"][name]
                ax.plot([float(s) for s in by_snr], [by_snr[s][detector][key] for s in by_snr], marker=marker,
                        color=color, label=f"detector {detector}, nstdb {name}")
    save_snr_figure(plt, fig, path, ("sensitivity (dashed: clean)", "positive predictivity (dashed: clean)"),
                    f"beats found in {results['n_windows']} MIT-BIH windows", legend_size=7)
