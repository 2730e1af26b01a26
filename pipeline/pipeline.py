"""``ecgedge pipeline``: the main job, from PhysioNet records to a verified int8 bundle and a report.

Stages, each skipped when its outputs exist and were made from the same inputs (``--force``
redoes them all)::

    data     labelled windows and their images (ecgedge.train.data, cached on disk)
    train    cross-validation and the deployable model on a fixed patient split (train_run)
    convert  int8 bundle (the deliverable) and a float32 bundle of the same model (quantize_run)
    verify   float Keras vs each bundle on the held-out test records (verify_bundle)
    device   the device runtime (int8) against the test records' rhythm annotations (evaluate)
    latency  timings of both bundles on test-record windows, one thread (device.benchmark.measure_window_latency)
    report   report.md with its PNG plots

Files in OUT::

    data.json  run/  bundle/  bundle-float32/  verify.json  device_eval.json  latency.json
    report.md  confusion_float_int8.png  examples.png  latency.png  metrics.json  stages.json

``stages.json`` holds each finished stage's key: the SHA-256 of its settings and of the files it
read (the Keras model, the bundles' hashes), so a stage reruns exactly when something it depends
on changed. It has a room of its own because it drives ``train``, ``convert`` and ``device``
(imports go ``pipeline`` -> ``device``, ``train``, ``convert``); the heavy imports happen inside
the stage functions.
"""

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import click

from ecgedge.device.errors import EcgEdgeError
# numpy and our training modules only (TensorFlow is imported by the stages that train).
from ecgedge.train.tasks import DEFAULT_TASK
from ecgedge.train.train import TrainConfig

BUNDLE_DIR = "bundle"
FLOAT_BUNDLE_DIR = "bundle-float32"
RUN_DIR = "run"
LOG_FILE = "pipeline.log"  # TensorFlow's and the converter's output (ecgedge.train.quiet)
STAGES = ("data", "train", "convert", "verify", "device", "latency", "report")


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of the main job: the training config it holds, and its own.

    Attributes
    ----------
    task : task preset name or TOML path.
    train : ecgedge.train.train.TrainConfig -- what the train stage trains (backbone, weights,
        protocol, epochs, fine-tuning, seed, folds, records, ...), with its defaults, which are
        those of ``make demo`` (tuned for < 30 min on 2 cores). Its seed also seeds the split,
        the calibration sample and the example windows.
    n_representative : int8 calibration windows, class-balanced from the training split.
    verify_threshold : least top-1 agreement of int8 with float on the test records.
    bench_windows : timed windows per bundle in the latency stage.
    """

    task: str = DEFAULT_TASK
    train: TrainConfig = field(default_factory=TrainConfig)
    n_representative: int = 1000
    verify_threshold: float = 0.99
    bench_windows: int = 200

    def to_dict(self):
        return {**asdict(self), "train": self.train.to_dict()}

    def train_key_settings(self):
        """The training settings of the train stage's key.

        The fields the key has always held, and any other field set away from its default, so a
        stage finished with the same settings keeps its key and any changed setting retrains.
        """
        always = ("backbone", "protocol", "epochs", "fine_tune", "seed", "weights", "n_folds", "max_per_class",
                  "max_val_per_class", "records", "baselines", "patience", "fine_tune_learning_rate", "int8_grid",
                  "rhythm_head", "augment")
        defaults = TrainConfig()
        settings = {f.name: getattr(self.train, f.name) for f in fields(TrainConfig)
                    if f.name in always or getattr(self.train, f.name) != getattr(defaults, f.name)}
        settings["records"] = list(settings["records"])
        return settings


# ``--quick``: a smoke configuration for tests, mitdb-rhythm4 on four small MIT-BIH records that
# hold all four of its classes between them, a couple of minutes on two cores.
QUICK = {
    "task": "mitdb-rhythm4", "records": ("119", "200", "201", "217"), "epochs": 1, "n_folds": 2, "max_per_class": 16,
    "fine_tune": 0, "patience": 0, "baselines": False, "n_representative": 32, "bench_windows": 20,
}
TRAIN_SETTINGS = frozenset(f.name for f in fields(TrainConfig))
PIPELINE_SETTINGS = frozenset(f.name for f in fields(PipelineConfig)) - {"train"}


def pipeline_config(quick=False, **overrides):
    """The demo defaults, then the ``--quick`` settings when asked, then ``overrides`` that are not None.

    ``overrides`` (and QUICK) name fields of PipelineConfig or of its TrainConfig, flat
    (``epochs=2``, ``n_representative=32``); they go to the config that holds them.
    """
    known = TRAIN_SETTINGS | PIPELINE_SETTINGS
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise EcgEdgeError(f"unknown pipeline settings {unknown}; known: {sorted(known)}")
    settings = {**(QUICK if quick else {}), **{k: v for k, v in overrides.items() if v is not None}}
    if "records" in settings:
        settings["records"] = tuple(str(r) for r in settings["records"])
    train = replace(TrainConfig(), **{k: v for k, v in settings.items() if k in TRAIN_SETTINGS})
    return PipelineConfig(train=train, **{k: v for k, v in settings.items() if k in PIPELINE_SETTINGS})


# ---------------------------------------------------------------------------------------------
# Stage bookkeeping


def digest(obj):
    """SHA-256 hex of ``obj`` as canonical JSON (the key of a stage)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def read_json(path):
    """Parsed JSON of ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(path, obj):
    """Write ``obj`` as indented JSON (through ``ecgedge.train.runs.write_json``: atomic)."""
    from ecgedge.train.runs import write_json as atomic_write

    atomic_write(path, obj)


class StageLog:
    """Which stages finished from which inputs (``OUT/stages.json``), and this run's timings.

    Parameters
    ----------
    out_dir : Path of OUT.
    force : redo every stage whatever ``stages.json`` says.
    progress : one line per stage on stderr.
    """

    def __init__(self, out_dir, force=False, progress=True):
        self.path = Path(out_dir) / "stages.json"
        self.saved = {} if force else (read_json(self.path) or {})
        self.force = force
        self.progress = progress
        self.timings = {}

    def previous_key(self, name):
        """The key ``name`` last finished with, or None."""
        return self.saved.get(name, {}).get("key")

    def run_stage(self, name, key, outputs_valid, compute):
        """Run ``compute()`` unless stage ``name`` finished with ``key`` and ``outputs_valid()``.

        Returns
        -------
        bool, True when the stage was skipped (cached).
        """
        number = STAGES.index(name) + 1
        started = time.perf_counter()
        cached = not self.force and self.previous_key(name) == key and outputs_valid()
        if not cached:
            self._log(f"[{number}/{len(STAGES)}] {name} ...")
            compute()
            self.saved[name] = {"key": key, "seconds": round(time.perf_counter() - started, 3),
                                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            write_json(self.path, self.saved)
        seconds = round(time.perf_counter() - started, 3)
        self.timings[name] = {"cached": cached, "seconds": seconds}
        self._log(f"[{number}/{len(STAGES)}] {name}: {'cached' if cached else 'done'} in {seconds:.1f} s")
        return cached

    def _log(self, message):
        if self.progress:
            click.echo(message, err=True)


def _loads(loader, *args):
    """True when ``loader(*args)`` returns without an EcgEdgeError (an output is valid)."""
    try:
        loader(*args)
    except (EcgEdgeError, OSError, KeyError, ValueError):
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Stages


@dataclass
class Context:
    """What every stage reads: settings, task, folders, and the stage log."""

    cfg: PipelineConfig
    task: object
    out: Path
    data_dir: object
    log: StageLog
    progress: bool
    windows: object = None  # the data stage's windows, handed to training when it runs next

    def path(self, name):
        return self.out / name


def data_key(ctx):
    from ecgedge.train.data import data_root

    return digest({"task": ctx.task.to_dict(), "records": list(ctx.cfg.train.records),
                   "data": str(data_root(ctx.data_dir).resolve())})


def data_stage(ctx):
    """Labelled windows and images of the task (cached by the data layer); writes data.json."""
    from ecgedge.train.data import load_windows, summarize, window_images

    def compute():
        windows = load_windows(ctx.task, ctx.data_dir, list(ctx.cfg.train.records) or None, ctx.progress)
        window_images(windows, ctx.task.spectrogram, ctx.progress)
        ctx.windows = windows
        write_json(ctx.path("data.json"), summarize(windows, ctx.task, per_record=True))

    ctx.log.run_stage("data", data_key(ctx), lambda: ctx.path("data.json").is_file(), compute)


def train_key(ctx):
    from ecgedge.device import rhythm
    from ecgedge.train import rhythm_head

    key = {"data": data_key(ctx), "train": ctx.cfg.train_key_settings(), "int8_folds": ctx.cfg.n_representative}
    if ctx.cfg.train.rhythm_head:  # the head: the features this version computes, its weights
        key["rhythm_features"] = list(rhythm.FEATURE_NAMES)
        key["beat_detector"] = rhythm.BEAT_DETECTOR
        key["rhythm_record_share"] = rhythm_head.RECORD_SHARE
    return digest(key)


def train_stage(ctx):
    """The training run in OUT/run: cross-validation (each fold also as int8) and the deployable model."""
    from ecgedge.convert.folds import fold_int8_evaluator
    from ecgedge.train.runs import load_run
    from ecgedge.train.train import train_run

    key = train_key(ctx)
    # Settings changed since the last finished training: that run is no longer valid.
    retrain = ctx.log.force or ctx.log.previous_key("train") not in (None, key)

    def compute():
        train_run(ctx.task, ctx.path(RUN_DIR), ctx.cfg.train, data_dir=ctx.data_dir, force=retrain,
                  progress=ctx.progress, windows=ctx.windows,
                  int8_eval=fold_int8_evaluator(ctx.cfg.n_representative, ctx.cfg.train.seed))

    ctx.log.run_stage("train", key, lambda: _loads(load_run, ctx.path(RUN_DIR)), compute)


def model_sha256(ctx):
    from ecgedge.device.bundle import sha256_file

    return sha256_file(ctx.path(RUN_DIR) / "model.keras")


def bundle_sha256(path):
    """The model hash of a bundle's manifest (load_bundle has checked it)."""
    from ecgedge.device.bundle import load_bundle

    return load_bundle(path).manifest["sha256"]


def convert_stage(ctx):
    """int8 bundle (the deliverable) and float32 bundle of the run's model."""
    from ecgedge.convert.quantize import quantize_run
    from ecgedge.device.bundle import load_bundle

    key = digest({"model": model_sha256(ctx), "n_representative": ctx.cfg.n_representative,
                  "seed": ctx.cfg.train.seed})

    def compute():
        quantize_run(ctx.path(RUN_DIR), ctx.path(BUNDLE_DIR), "int8", ctx.cfg.n_representative,
                     ctx.cfg.train.seed, ctx.data_dir)
        quantize_run(ctx.path(RUN_DIR), ctx.path(FLOAT_BUNDLE_DIR), "float32", ctx.cfg.n_representative,
                     ctx.cfg.train.seed, ctx.data_dir)

    def valid():
        return _loads(load_bundle, ctx.path(BUNDLE_DIR)) and _loads(load_bundle, ctx.path(FLOAT_BUNDLE_DIR))

    ctx.log.run_stage("convert", key, valid, compute)


def bundles_key(ctx):
    return {"int8": bundle_sha256(ctx.path(BUNDLE_DIR)), "float32": bundle_sha256(ctx.path(FLOAT_BUNDLE_DIR))}


def verify_stage(ctx):
    """verify.json: float Keras vs the int8 and the float32 bundle on the test records."""
    from ecgedge.convert.verify import verify_bundle

    key = digest({"model": model_sha256(ctx), "bundles": bundles_key(ctx),
                  "threshold": ctx.cfg.verify_threshold})

    def compute():
        write_json(ctx.path("verify.json"), {
            quant: verify_bundle(ctx.path(folder), ctx.path(RUN_DIR), ctx.cfg.verify_threshold, ctx.data_dir)
            for quant, folder in (("int8", BUNDLE_DIR), ("float32", FLOAT_BUNDLE_DIR))
        })

    ctx.log.run_stage("verify", key, lambda: set(read_json(ctx.path("verify.json")) or {}) == {"int8", "float32"},
                compute)


def test_records(ctx):
    """``[(DatabaseSpec, db_dir, record)]`` of the run's held-out test split."""
    from ecgedge.train.data import task_records
    from ecgedge.train.runs import load_run

    return task_records(ctx.task, ctx.data_dir, load_run(ctx.path(RUN_DIR)).split["test"])


def device_eval(bundle_path, records, progress=True, total=None):
    """The device runtime's ``evaluate`` on ``records`` ([(db, db_dir, record)]), per database.

    Returns
    -------
    dict {database name: ``ecgedge.device.evaluate.evaluate`` report}.
    """
    from tqdm import tqdm

    from ecgedge.device.evaluate import evaluate
    from ecgedge.device.runtime import Classifier

    classifier = Classifier(bundle_path)
    by_database = {}
    for db, db_dir, record in records:
        by_database.setdefault((db.name, str(db_dir)), []).append(record)
    reports = {}
    with tqdm(total=total, desc="device eval", unit="window", disable=not progress) as bar:
        for (name, db_dir), names in by_database.items():
            reports[name] = evaluate(classifier, db_dir, names, on_window=lambda *_: bar.update())
    return reports


def device_stage(ctx):
    """device_eval.json: the int8 bundle through the device runtime on the test records."""
    from ecgedge.train.runs import load_run

    records = test_records(ctx)
    key = digest({"bundle": bundle_sha256(ctx.path(BUNDLE_DIR)),
                  "records": [f"{db.name}/{r}" for db, _, r in records], "scores": "per record"})

    def compute():
        total = load_run(ctx.path(RUN_DIR)).metrics["deploy"]["split"]["test"]["windows"]
        write_json(ctx.path("device_eval.json"), device_eval(ctx.path(BUNDLE_DIR), records, ctx.progress, total))

    ctx.log.run_stage("device", key, lambda: read_json(ctx.path("device_eval.json")) is not None, compute)


def bundle_latency(bundle_path, windows, fs, n):
    """``ecgedge.device.benchmark.measure_window_latency`` of a bundle on one interpreter thread, on ``windows``
    (dict)."""
    from ecgedge.device.benchmark import measure_window_latency
    from ecgedge.device.runtime import Classifier

    return {**measure_window_latency(Classifier(bundle_path, num_threads=1), fs=fs, n=n, windows=windows),
            "windows": "held-out test records"}


def latency_stage(ctx):
    """latency.json: DSP, invoke and end-to-end times of both bundles, one thread, on real windows
    of the held-out test records (real ECG costs the DSP more than a synthetic one)."""
    from ecgedge.device.benchmark import windows_of_records
    from ecgedge.device.runtime import Classifier

    key = digest({"bundles": bundles_key(ctx), "n": ctx.cfg.bench_windows, "windows": "test records with history"})

    def compute():
        records = test_records(ctx)
        # One database's records: one sampling rate (a task may mix databases of different rates).
        paths = [str(Path(db_dir) / record) for db, db_dir, record in records if db == records[0][0]]
        history_s = Classifier(ctx.path(BUNDLE_DIR), num_threads=1).context_s
        windows, fs = windows_of_records(paths, ctx.task.window_s, ctx.cfg.bench_windows, history_s)
        write_json(ctx.path("latency.json"), {
            quant: bundle_latency(ctx.path(folder), windows, fs, ctx.cfg.bench_windows)
            for quant, folder in (("int8", BUNDLE_DIR), ("float32", FLOAT_BUNDLE_DIR))
        })

    ctx.log.run_stage("latency", key, lambda: set(read_json(ctx.path("latency.json")) or {}) == {"int8", "float32"},
                compute)


def report_stage(ctx, metrics):
    """report.md and its plots (ecgedge.pipeline.report)."""
    from ecgedge.pipeline import report as pipeline_report

    key = digest({name: ctx.log.saved.get(name, {}).get("key") for name in STAGES if name != "report"})

    def valid():
        return all(ctx.path(name).is_file() for name in ("report.md", *pipeline_report.PLOTS))

    def compute():
        pipeline_report.write_report(ctx.out, ctx.task, metrics, ctx.path(BUNDLE_DIR), ctx.data_dir, ctx.cfg.train.seed)

    ctx.log.run_stage("report", key, valid, compute)


# ---------------------------------------------------------------------------------------------
# metrics.json


def _scores(m):
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


CV_MODELS = ("cnn_rhythm_int8", "cnn_rhythm", "cnn_int8", "cnn", "cnn_plain_kernels", "rhythm_head",
             "svm_imagenet", "rr_gbm")
"""The cross-validated models of a run, the device's decision (int8 CNN + rhythm head) first."""


def cross_validation_summary(run_metrics):
    """Accuracy and macro-F1 of the CNN and each baseline, pooled out-of-fold, with fold mean/sd."""
    cv = run_metrics["cv"]
    out = {"n_folds": cv["n_folds"], "n_windows": cv["n_windows"]}
    for name in CV_MODELS:
        if name in cv:
            out[name] = {**_scores(cv[name]), "fold_accuracy": cv[name]["fold_accuracy"],
                         "fold_macro_f1": cv[name]["fold_macro_f1"],
                         "recall": {c: v["recall"] for c, v in cv[name]["per_class"].items()}}
            for key in ("agreement_with_float", "agreement_with_plain_kernels"):
                if key in cv[name]:
                    out[name][key] = cv[name][key]
    return out


def device_summary(reports, verify_int8):
    """Pooled device-eval scores over databases, and how they compare with verify's int8 run."""
    import numpy as np

    confusion = sum(np.asarray(r["confusion"]) for r in reports.values())
    n = int(confusion.sum())
    accuracy = float(np.trace(confusion) / n) if n else 0.0
    return {
        "n_windows": n,
        "accuracy": accuracy,
        "macro_f1": next(iter(reports.values()))["macro_f1"] if len(reports) == 1 else None,
        "confusion": confusion.tolist(),
        "skipped": {name: r["skipped"] for name, r in reports.items()},
        "records": {f"{name}/{record}": scores for name, r in reports.items() for record, scores in r["records"].items()},
        # the device decides with the rhythm head when the bundle has one
        "verify_int8_accuracy": verify_int8.get("with_rhythm_head", verify_int8)["accuracy"]["tflite"],
        "verify_n_windows": verify_int8["n"],
    }


def _with_rhythm_head(deploy, verify_int8):
    """The deployable model's test scores with its rhythm head, float and int8 (empty without a head)."""
    if "with_rhythm_head" not in verify_int8:
        return {}
    return {"float_with_rhythm_head": _scores(deploy["test_combined"]),
            "int8_with_rhythm_head": {"accuracy": verify_int8["with_rhythm_head"]["accuracy"]["tflite"]}}


def _agreement(report):
    out = {k: report[k] for k in ("n", "agreement", "threshold", "passed", "relative_rms_error")} | {
        "accuracy_float": report["accuracy"]["float"], "accuracy_tflite": report["accuracy"]["tflite"]}
    if "with_rhythm_head" in report:
        out["with_rhythm_head_agreement"] = report["with_rhythm_head"]["agreement"]
    return out


def assemble_metrics(ctx, command):
    """metrics.json: the protocol's (patient-wise) numbers first, then int8 vs float, device, latency."""
    from ecgedge.device.bundle import load_bundle
    from ecgedge.train.runs import load_run

    run = load_run(ctx.path(RUN_DIR))
    verify = read_json(ctx.path("verify.json"))
    latency = read_json(ctx.path("latency.json"))
    bundle = load_bundle(ctx.path(BUNDLE_DIR)).manifest
    keep = ("dsp", "invoke", "end_to_end", "windows_per_s", "real_time_factor", "model_bytes", "n", "windows")
    levels = run.metrics.get("levels", {})
    return {
        "headline": run.metrics.get("headline"),
        "per_database": {model: scores["per_database"] for model, scores in levels.items()},
        "task": ctx.task.name,
        "protocol": run.metrics["protocol"],
        "protocol_note": run.metrics["protocol_note"],
        "cross_validation": cross_validation_summary(run.metrics),
        "held_out_test": {"records": run.split["test"], "windows": run.metrics["deploy"]["split"]["test"]["windows"],
                          "float": _scores(run.metrics["deploy"]["test"]),
                          **({"float_plain_kernels": _scores(run.metrics["deploy"]["test_plain_kernels"])}
                             if "test_plain_kernels" in run.metrics["deploy"] else {}),
                          **_with_rhythm_head(run.metrics["deploy"], verify["int8"]),
                          "int8": {"accuracy": verify["int8"]["accuracy"]["tflite"]}},
        "int8_vs_float": _agreement(verify["int8"]),
        "float32_vs_float": _agreement(verify["float32"]),
        "device_eval": device_summary(read_json(ctx.path("device_eval.json")), verify["int8"]),
        "latency": {quant: {k: latency[quant][k] for k in keep} for quant in ("int8", "float32")},
        "bundle": {"path": str(ctx.path(BUNDLE_DIR)), "bytes": bundle["bytes"], "sha256": bundle["sha256"],
                   "quantization": bundle["quantization"], "classes": bundle["classes"]},
        "split": run.split,
        "config": ctx.cfg.to_dict(),
        "command": command,
        "versions": run.metrics["versions"],
    }


def run_pipeline(cfg, out_dir, data_dir=None, force=False, progress=True, command=None, verbose=False):
    """Run every stage of the main job into ``out_dir``; reuse the stages that are up to date.

    Parameters
    ----------
    cfg : PipelineConfig.
    out_dir : OUT folder (created).
    data_dir : folder of PhysioNet databases (default ECGEDGE_DATA).
    force : redo every stage.
    progress : progress bars and one line per stage on stderr.
    command : the command line, recorded in metrics.json and the report.
    verbose : show TensorFlow's and the converter's output instead of appending it to
        ``out_dir/pipeline.log`` (:func:`ecgedge.train.quiet.chatter_to`).

    Returns
    -------
    dict, the metrics written to ``out_dir/metrics.json``, with ``stages`` {name: {cached, seconds}}.
    """
    from ecgedge.train.quiet import chatter_to
    from ecgedge.train.tasks import load_task

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = command or invoked_command()
    ctx = Context(cfg, load_task(cfg.task), out, data_dir, StageLog(out, force, progress), progress)
    with chatter_to(out / LOG_FILE, verbose):
        for stage in (data_stage, train_stage, convert_stage, verify_stage, device_stage, latency_stage):
            stage(ctx)
        metrics = assemble_metrics(ctx, command)
        report_stage(ctx, metrics)
    metrics["stages"] = ctx.log.timings
    write_json(out / "metrics.json", metrics)
    return metrics


# ---------------------------------------------------------------------------------------------
# Command line


def invoked_command():
    """The command line of this process as a user would type it (``ecgedge ...`` or ``python x.py ...``)."""
    import shlex

    program = Path(sys.argv[0]).name if sys.argv else "ecgedge"
    head = ["ecgedge"] if program == "ecgedge" else ["python", sys.argv[0]]
    return shlex.join(head + sys.argv[1:])


def headline_lines(metrics):
    """The device's headline and its per-database scores, as the terminal shows them first."""
    from ecgedge.pipeline.report import rate_text

    h = metrics.get("headline")
    if not h:
        return []
    lines = [f"the device (int8), {h['protocol']} protocol, {h['level']} level over {', '.join(h['databases'])}: "
             f"accuracy {h['accuracy']:.4f}, macro-F1 {h['macro_f1']:.4f}, AF Se {rate_text(h['af_se'])} / "
             f"Sp {rate_text(h['af_sp'])}, inconclusive {h['inconclusive_rate']:.3f}"
             + (f", Challenge F1 {h['challenge_f1']:.4f}" if "challenge_f1" in h else "")]
    for name, d in (metrics.get("per_database") or {}).get("device", {}).items():
        lines.append(f"  {name:<9} {d['level']:<6} n {d['n_recordings']:>6}  accuracy {d['accuracy']:.4f}  "
                     f"macro-F1 {d['macro_f1']:.4f}  AF Se {rate_text(d.get('af_se'))} Sp {rate_text(d.get('af_sp'))}"
                     + (f"  Challenge F1 {d['challenge_f1']:.4f}" if "challenge_f1" in d else ""))
    return lines


def summary_lines(metrics):
    """A few lines for the terminal: the protocol's numbers, int8 agreement, device, latency."""
    cv, test = metrics["cross_validation"], metrics["held_out_test"]
    lat = metrics["latency"]["int8"]
    device = cv.get("cnn_rhythm_int8")
    return headline_lines(metrics) + [
        f"{metrics['protocol']} protocol CV ({cv['n_folds']} folds, {cv['n_windows']} windows): "
        + (f"int8 CNN + rhythm head (the device) accuracy {device['accuracy']:.4f}, macro-F1 "
           f"{device['macro_f1']:.4f}; CNN alone " if device else "")
        + f"accuracy {cv['cnn']['accuracy']:.4f}, macro-F1 {cv['cnn']['macro_f1']:.4f}"
        + (f"; int8 accuracy {cv['cnn_int8']['accuracy']:.4f}, macro-F1 {cv['cnn_int8']['macro_f1']:.4f}, "
           f"agreement {cv['cnn_int8']['agreement_with_float']:.4f}" if "cnn_int8" in cv else ""),
        f"held-out test records ({test['windows']} windows): float {test['float']['accuracy']:.4f}, "
        f"int8 {test['int8']['accuracy']:.4f}; int8 vs float agreement {metrics['int8_vs_float']['agreement']:.4f}",
        f"device runtime: accuracy {metrics['device_eval']['accuracy']:.4f} on {metrics['device_eval']['n_windows']} "
        f"windows; {metrics['bundle']['bytes']} bytes; median DSP {lat['dsp']['median_ms']:.3f} ms + invoke "
        f"{lat['invoke']['median_ms']:.3f} ms",
    ]


def _default(name):
    """The default of a setting, from PipelineConfig or the TrainConfig it holds."""
    cfg = PipelineConfig()
    return getattr(cfg.train if name in TRAIN_SETTINGS else cfg, name)


@click.command()
@click.option("--task", default=None, help=f"Task preset or TOML path [default: {_default('task')}].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/demo", show_default=True,
              help="Output folder.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of PhysioNet databases [default: $ECGEDGE_DATA].")
@click.option("--weights", default=None, help=f"imagenet, none or an .h5 path [default: {_default('weights')}].")
@click.option("--backbone", default=None, help=f"ImageNet MobileNet [default: {_default('backbone')}].")
@click.option("--protocol", type=click.Choice(["records", "paper", "databases"]), default=None,
              help=f"Cross-validation protocol [default: {_default('protocol')}].")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help=f"[default: {_default('epochs')}]")
@click.option("--fine-tune", default=None, help=f"Last backbone blocks to train, or 'all' [default: {_default('fine_tune')}].")
@click.option("--folds", "n_folds", type=click.IntRange(min=2), default=None,
              help="Cross-validation folds [default: records 5, paper 10].")
@click.option("--max-per-class", type=click.IntRange(min=1), default=None,
              help=f"Training windows per class per epoch [default: {_default('max_per_class')}].")
@click.option("--records", default=None, help="Comma-separated records (default: all of the task).")
@click.option("--representative", "n_representative", type=click.IntRange(min=1), default=None,
              help=f"int8 calibration windows [default: {_default('n_representative')}].")
@click.option("--seed", type=int, default=None, help=f"[default: {_default('seed')}]")
@click.option("--rhythm-head/--no-rhythm-head", default=None,
              help="Train the rhythm head (gradient boosting on the beats the device detects and the "
                   "signal's sharpness) and combine it "
                   f"with the CNN on the device [default: {_default('rhythm_head')}].")
@click.option("--int8-grid/--no-int8-grid", default=None,
              help="Round the backbone's kernels to the int8 grid after training, so the float model "
                   f"holds its int8 conversion's weights [default: {_default('int8_grid')}].")
@click.option("--no-baselines", is_flag=True, help="Skip the SVM and RR-interval baselines.")
@click.option("--quick", is_flag=True,
              help=f"Smoke configuration: {QUICK['task']} on records {','.join(QUICK['records'])}, {QUICK['epochs']} epoch, "
                   f"{QUICK['n_folds']} folds, {QUICK['n_representative']} calibration windows.")
@click.option("--force", is_flag=True, help="Redo every stage, even those whose outputs are up to date.")
@click.option("--verbose", is_flag=True,
              help=f"Show TensorFlow's and the converter's output instead of appending it to OUT/{LOG_FILE}.")
def pipeline(task, out_dir, data_dir, weights, backbone, protocol, epochs, fine_tune, n_folds, max_per_class,
             records, n_representative, seed, rhythm_head, int8_grid, no_baselines, quick, force, verbose):
    """The main job: data -> train -> int8 bundle -> verify -> device eval -> report, into --out.

    Writes OUT/bundle (model.tflite + model.json), OUT/metrics.json and OUT/report.md with PNG
    plots. A second run reuses every stage whose inputs did not change. The terminal shows one
    line per stage, progress bars and the headline; TensorFlow's output goes to OUT/pipeline.log.
    """
    cfg = pipeline_config(
        quick, task=task, weights=weights, backbone=backbone, protocol=protocol, epochs=epochs,
        fine_tune=fine_tune, n_folds=n_folds, max_per_class=max_per_class, seed=seed,
        n_representative=n_representative, rhythm_head=rhythm_head, int8_grid=int8_grid,
        baselines=False if no_baselines else None,
        records=tuple(r for r in records.split(",") if r) if records else None,
    )
    if not verbose:
        click.echo(f"TensorFlow's output: {Path(out_dir) / LOG_FILE} (--verbose shows it)", err=True)
    metrics = run_pipeline(cfg, out_dir, data_dir, force, progress=True, command=invoked_command(), verbose=verbose)
    for line in summary_lines(metrics):
        click.echo(line)
    click.echo(f"report: {Path(out_dir) / 'report.md'}")
