"""Latency of the device runtime against the desktop reference, in one run on the same windows.

Per window, on one core (TensorFlow intra/inter-op threads 1, interpreter ``num_threads=1``):

- DSP alone: ``Classifier.preprocess`` (resampling, standardisation, three STFTs and, for a
  bundle with a rhythm head, the beat detection and rhythm features);
- Keras float model through ``tf.function`` at batch 1 (on a GPU when TensorFlow sees one);
- TFLite float32 and TFLite int8 through the device runtime (``Classifier``); for a bundle
  with a rhythm head, also int8 without it (``tflite_int8_model_only``: its own DSP, no rhythm
  features or trees), the faster and less accurate choice of ``--no-rhythm-head``.

The windows are real MIT-BIH ECG spread over all records (:func:`windows_of_records`; real ECG
costs the DSP more than a synthetic one: more beats, less regular), or a seeded synthetic ECG
when no data is at hand. Each comes with the seconds of signal before it that a head with
context features reads (``Classifier.context_s``), as in a stream.

Each implementation is timed for its model call ("invoke") and end to end (DSP + model),
after a warm-up, as median and p90. The device's parts are timed in turns, chunk by chunk
(``ecgedge.device.benchmark.interleaved``), so a change of the machine's pace hits them alike.
The Keras reference runs after them, because TensorFlow at work in the same process slows the
numpy DSP (measured on synthetic windows: 1.2-1.7 ms instead of 0.9-1.0 ms). Ratios reference /
device come from the same run on the same windows; compare runs by their ratios rather than
their milliseconds. Throughput runs batches of ``batch`` windows per invoke.
"""

import os
import time
from pathlib import Path

import numpy as np

from ecgedge.benchmarks.bench_scaling import record_paths
from ecgedge.device.benchmark import (_stats, _timed, interleaved, split_history, synthetic_ecg, window_jobs,
                                      windows_of_records)
from ecgedge.device.errors import EcgEdgeError

FS = 360.0
TARGETS = {"int8_bytes_max": 300_000, "dsp_plus_invoke_ms_max": 1.0, "speedup_min": 10.0}


def seeded_windows(fs, length, n, seed):
    """``n`` windows of ``length`` samples, consecutive slices of one seeded synthetic ECG (list of ndarray)."""
    signal = synthetic_ecg(length * n, fs, seed)
    return [signal[i * length:(i + 1) * length] for i in range(n)]


def single_core_tensorflow():
    """Import TensorFlow limited to one intra- and one inter-op thread (before it starts); returns tf."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process: the settings can no longer change
        pass
    return tf


def _timed_after_warmup(fn, args_list, warmup):
    for args in args_list[:warmup]:
        fn(*args)
    return _timed(fn, args_list[warmup:])


def keras_reference(run_dir, windows, fs, classifier, warmup):
    """Keras float model of ``run_dir`` via tf.function at batch 1: invoke and end-to-end stats.

    End to end is the device's job with Keras in place of the interpreter: the same numpy DSP
    (``classifier.preprocess``) and, with a rhythm head, the same trees and combination.
    """
    from ecgedge.convert.rundir import load_keras_model

    tf = single_core_tensorflow()
    model = load_keras_model(run_dir / "model.keras")
    call = tf.function(lambda x: model(x, training=False))
    pairs = [split_history(w, classifier, fs) for w in windows]
    images = [(tf.constant(classifier.preprocess(w, fs, h)[0][None]),) for w, h in pairs]
    invoke = _timed_after_warmup(lambda x: call(x).numpy(), images, warmup)

    def end_to_end(window, history):
        image, features = classifier.preprocess(window, fs, history)
        return classifier.with_rhythm(call(tf.constant(image[None])).numpy()[0], features)

    e2e = _timed_after_warmup(end_to_end, pairs, warmup)
    gpus = tf.config.list_physical_devices("GPU")
    return {"invoke": _stats(invoke), "end_to_end": _stats(e2e), "device": "GPU" if gpus else "CPU",
            "model": str(run_dir / "model.keras")}, call


def device_timings(classifiers, windows, fs, warmup):
    """Every device classifier's dsp, invoke and end-to-end stats, all timed in turns (``interleaved``).

    Parameters
    ----------
    classifiers : {name: Classifier}.

    Returns
    -------
    {name: {dsp, invoke, end_to_end: {median_ms, p90_ms}, bytes, bundle, interpreter}}.
    """
    jobs = {(name, part): job for name, c in classifiers.items() for part, job in window_jobs(c, windows, fs).items()}
    ms = interleaved(jobs, warmup)
    return {name: {**{part: _stats(ms[(name, part)]) for part in ("dsp", "invoke", "end_to_end")},
                   "bytes": c.bundle.manifest["bytes"], "bundle": str(c.bundle.path), "interpreter": c.info}
            for name, c in classifiers.items()}


def tflite_throughput(classifier, images, batch, repeats=3):
    """Windows per second of the bundle's model resized to ``batch`` windows per invoke, one thread.

    Returns None when the interpreter refuses the batched shape (some static-shape models).
    """
    from ecgedge.device.interpreter import make_interpreter

    interpreter, _ = make_interpreter(classifier.bundle.model_path, num_threads=1)
    index = interpreter.get_input_details()[0]["index"]
    try:
        interpreter.resize_tensor_input(index, [batch, *classifier.cfg.image_shape], strict=False)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError):
        return None
    x = np.concatenate([classifier.model_input(images[i % len(images)]) for i in range(batch)])
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    began = time.perf_counter()
    for _ in range(repeats):
        interpreter.invoke()
    return round(batch * repeats / (time.perf_counter() - began), 2)


def keras_throughput(call, images, batch, repeats=3):
    """Windows per second of the Keras model at ``batch`` windows per call."""
    import tensorflow as tf

    x = tf.constant(np.stack([images[i % len(images)] for i in range(batch)]))
    call(x).numpy()
    began = time.perf_counter()
    for _ in range(repeats):
        call(x).numpy()
    return round(batch * repeats / (time.perf_counter() - began), 2)


def ratios(timings):
    """Reference / device time ratios of the implementations present."""
    out = {}
    for ref in ("keras_float", "tflite_float32"):
        for dev in ("tflite_int8", "tflite_float32"):
            if ref in timings and dev in timings and ref != dev:
                for part in ("invoke", "end_to_end"):
                    out[f"{ref}_over_{dev}_{part}"] = round(
                        timings[ref][part]["median_ms"] / timings[dev][part]["median_ms"], 3)
    return out


def targets(results):
    """The issue's latency and size targets, measured in this run (None where not measurable)."""
    int8 = results["timings"]["tflite_int8"]
    dsp_invoke = results["timings"]["dsp"]["median_ms"] + int8["invoke"]["median_ms"]
    speedup = results["ratios"].get("keras_float_over_tflite_int8_end_to_end")
    out = {
        "int8_bytes": int8["bytes"], "int8_bytes_ok": int8["bytes"] <= TARGETS["int8_bytes_max"],
        "dsp_plus_invoke_ms": round(dsp_invoke, 4), "dsp_plus_invoke_ok": dsp_invoke <= TARGETS["dsp_plus_invoke_ms_max"],
        "speedup_end_to_end": speedup, "speedup_ok": None if speedup is None else speedup >= TARGETS["speedup_min"],
        "limits": TARGETS,
    }
    model_only = results["timings"].get("tflite_int8_model_only")
    if model_only is not None:
        ms = model_only["dsp"]["median_ms"] + model_only["invoke"]["median_ms"]
        out.update(model_only_dsp_plus_invoke_ms=round(ms, 4),
                   model_only_dsp_plus_invoke_ok=ms <= TARGETS["dsp_plus_invoke_ms_max"])
    return out


def measure_latency(bundle, float_bundle=None, run_dir=None, n=300, warmup=30, batch=32, seed=0, fs=FS,
                    source="mitdb", data_dir=None):
    """Time DSP, Keras float, TFLite float32 and int8 on the same windows.

    Parameters
    ----------
    bundle : int8 bundle folder (required).
    float_bundle : float32 bundle folder or None (left out).
    run_dir : training run with model.keras or None (the Keras reference is left out).
    n, warmup : timed and untimed windows per measurement.
    batch : windows per invoke in the throughput runs.
    source : "mitdb" (real windows of every record, :func:`windows_of_records`, from ``data_dir`` or
        $ECGEDGE_DATA)
        or "synthetic" (a seeded synthetic ECG at ``fs``, with ``seed``). Real ECG costs the
        DSP more than the synthetic one: more beats, and less regular ones.
    fs : sampling rate of the synthetic windows, Hz (resampling is part of the DSP).

    Returns
    -------
    dict: windows {source, n, warmup, fs, seed, batch, threads}, timings {dsp, keras_float,
    tflite_float32, tflite_int8, tflite_int8_model_only (each {invoke, end_to_end} {median_ms,
    p90_ms}; tflite_float32 and tflite_int8_model_only also their own dsp)}, ratios, throughput
    {implementation: windows/s}, targets.
    """
    from ecgedge.device.runtime import Classifier

    if bundle is None:
        raise EcgEdgeError("no int8 bundle: run 'ecgedge pipeline' first or pass --bundle")
    if run_dir is not None:
        single_core_tensorflow()  # before anything else starts TensorFlow's thread pools
    timings, throughput = {}, {}
    classifier = Classifier(bundle, num_threads=1)
    if source == "mitdb":
        windows, fs = windows_of_records(record_paths(data_dir), classifier.window_s, n + warmup, classifier.context_s)
    elif source == "synthetic":
        windows = seeded_windows(fs, classifier.window_samples(fs) + int(round(classifier.context_s * fs)),
                                 n + warmup, seed)
    else:
        raise EcgEdgeError(f"latency windows come from 'mitdb' or 'synthetic', got {source!r}")
    images = [classifier.preprocess(w, fs, h)[0] for w, h in (split_history(s, classifier, fs) for s in windows[:batch])]
    classifiers = {"tflite_int8": classifier}
    if classifier.trees is not None:  # the same bundle deciding without its rhythm head
        classifiers["tflite_int8_model_only"] = Classifier(bundle, num_threads=1, rhythm_head=False)
    if float_bundle is not None:
        classifiers["tflite_float32"] = Classifier(float_bundle, num_threads=1)
    timings.update(device_timings(classifiers, windows, fs, warmup))
    timings["dsp"] = timings["tflite_int8"].pop("dsp")
    throughput.update({name: tflite_throughput(classifiers[name], images, batch)
                       for name in ("tflite_int8", "tflite_float32") if name in classifiers})
    if run_dir is not None:  # after the device's timings: TensorFlow at work slows numpy in this process
        timings["keras_float"], call = keras_reference(Path(run_dir), windows, fs, classifier, warmup)
        throughput["keras_float"] = keras_throughput(call, images, batch)
    results = {"windows": {"source": source, "n": n, "warmup": warmup, "fs": fs, "seed": seed, "batch": batch,
                           "threads": 1},
               "timings": timings, "ratios": ratios(timings), "throughput_windows_per_s": throughput}
    results["targets"] = targets(results)
    return results


def summary(results):
    """Lines for the terminal: medians, ratios, targets."""
    lines = [f"DSP median {results['timings']['dsp']['median_ms']:.3f} ms"]
    for name in ("keras_float", "tflite_float32", "tflite_int8", "tflite_int8_model_only"):
        t = results["timings"].get(name)
        if t:
            lines.append(f"{name:<22} invoke {t['invoke']['median_ms']:.3f} ms  end to end "
                         f"{t['end_to_end']['median_ms']:.3f} ms (p90 {t['end_to_end']['p90_ms']:.3f})")
    lines.append(f"ratios {results['ratios']}")
    lines.append(f"throughput (windows/s) {results['throughput_windows_per_s']}")
    lines.append(f"targets {results['targets']}")
    return "\n".join(lines)


def plot(path, results):
    """Latency bars of each implementation (DSP, invoke, end to end)."""
    from ecgedge.pipeline.report import plot_latency_bars

    t = results["timings"]
    bars = {name: {"dsp": t["dsp"], **t[name]}
            for name in ("keras_float", "tflite_float32", "tflite_int8", "tflite_int8_model_only") if name in t}
    plot_latency_bars(path, bars, title=f"median per window (whisker: p90), one core, "
                       f"{results['windows']['n']} {results['windows']['source']} windows")
