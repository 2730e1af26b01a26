"""``ecgedge pipeline --quick`` end to end on four real MIT-BIH records (random weights), its
settings, and the accuracy benchmark read from its output.

The quick run takes about two minutes on two cores; it is the one test of the whole main job.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ecgedge.device.errors import EcgEdgeError
from ecgedge.pipeline.pipeline import QUICK, STAGES, PipelineConfig, pipeline_config

PNG = b"\x89PNG\r\n\x1a\n"


def test_quick_settings_then_explicit_options_override_the_demo_defaults():
    from ecgedge.train.train import TrainConfig

    demo = pipeline_config()
    assert demo.train == TrainConfig() and demo == PipelineConfig()  # one set of training defaults
    assert demo.train.records == () and demo.train.protocol == "records" and demo.train.epochs >= 5
    quick = pipeline_config(True, epochs=2, seed=None)
    assert quick.train.records == QUICK["records"] and quick.train.epochs == 2 and quick.train.seed == demo.train.seed
    assert quick.n_representative == QUICK["n_representative"] and quick.task == QUICK["task"]
    assert quick.train.fine_tune == 0 and quick.train.batch_size == TrainConfig.batch_size
    with pytest.raises(EcgEdgeError, match=r"unknown pipeline settings \['epoch'\]"):
        pipeline_config(epoch=3)


def test_train_stage_key_settings_are_those_of_before_the_nesting():
    """The train stage's key holds the settings it held when PipelineConfig copied them, so a
    finished stage is reused; a setting it did not hold joins the key once it leaves its default."""
    from ecgedge.train.augment import AugmentConfig

    before = {"backbone": "mobilenet_v1_0.25_128", "protocol": "records", "epochs": 12, "fine_tune": "all", "seed": 0,
              "weights": "imagenet", "n_folds": None, "max_per_class": 600, "records": [], "baselines": True,
              # joined when early stopping began to score a capped draw of the validation windows
              "max_val_per_class": 1000,
              "patience": 3, "fine_tune_learning_rate": 5e-4, "int8_grid": True, "rhythm_head": True,
              "augment": AugmentConfig().to_dict()}
    assert pipeline_config().train_key_settings() == before
    quick = pipeline_config(True).train_key_settings()
    assert quick == {**before, **{k: list(v) if k == "records" else v for k, v in QUICK.items()
                                  if k not in ("task", "n_representative", "bench_windows")}}
    assert pipeline_config(batch_size=64).train_key_settings() == {**before, "batch_size": 64}


@pytest.fixture(scope="module")
def quick_runs(physionet_dir, tmp_path_factory):
    """The quick pipeline run twice into one folder: (out, first CliResult, second CliResult)."""
    from ecgedge.cli import cli

    root = tmp_path_factory.mktemp("pipeline")
    out = root / "demo"
    args = ["pipeline", "--quick", "--weights", "none", "--out", str(out), "--data", str(physionet_dir)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ECGEDGE_CACHE", str(root / "cache"))
        mp.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
        first = CliRunner().invoke(cli, args)
        second = CliRunner().invoke(cli, args)
    return out, first, second


def test_quick_pipeline_writes_a_working_int8_bundle(quick_runs, mitdb_dir):
    from ecgedge.device.bundle import load_bundle
    from ecgedge.device.runtime import Classifier
    from ecgedge.device.wfdb_reader import read_signal

    out, first, _ = quick_runs
    assert first.exit_code == 0, first.output
    bundle = load_bundle(out / "bundle")
    assert bundle.manifest["quantization"] == "int8" and bundle.manifest["input"]["dtype"] == "int8"
    assert bundle.classes == ["NSR", "AF", "VENT", "OTHER"]
    assert load_bundle(out / "bundle-float32").manifest["quantization"] == "float32"
    signal, fs, _ = read_signal(mitdb_dir / "200", ["MLII"])
    classifier = Classifier(out / "bundle")
    result = classifier.classify_window(signal[: classifier.window_samples(fs)], fs)
    assert result.label in bundle.classes and result.probs.shape == (4,)


def test_metrics_lead_with_the_records_protocol_and_agree_with_the_device(quick_runs):
    out, first, _ = quick_runs
    assert first.exit_code == 0, first.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics)[:6] == ["headline", "per_database", "task", "protocol", "protocol_note", "cross_validation"]
    assert metrics["protocol"] == "records" and "patient" in metrics["protocol_note"]
    cv = metrics["cross_validation"]
    assert cv["n_folds"] == 2 and 0 <= cv["cnn"]["accuracy"] <= 1 and "svm_imagenet" not in cv
    # Every fold was also converted to int8 and run on its own test windows.
    run_cv = json.loads((out / "run" / "metrics.json").read_text())["cv"]
    assert len(cv["cnn_int8"]["fold_accuracy"]) == 2 and 0 <= cv["cnn_int8"]["agreement_with_float"] <= 1
    assert run_cv["cnn_int8"]["n"] == run_cv["cnn"]["n"] == cv["n_windows"]
    fold = json.loads(next((out / "run" / "folds").glob("cnn-0.json")).read_text())
    assert len(fold["int8"]["y_pred"]) == len(fold["y_pred"]) and fold["int8"]["bytes"] > 0
    assert fold["int8"]["agreement"] == pytest.approx(np.mean(np.array(fold["int8"]["y_pred"]) == fold["y_pred"]))
    # Kernels rounded to the int8 grid (the default): the float model before the rounding is
    # scored too, and the int8 model is compared with it.
    assert len(fold["plain_kernels"]["y_pred"]) == len(fold["y_pred"])
    assert run_cv["cnn_plain_kernels"]["n"] == cv["n_windows"]
    folds = [json.loads(f.read_text()) for f in sorted((out / "run" / "folds").glob("cnn-*.json"))]
    int8_pred = np.concatenate([f["int8"]["y_pred"] for f in folds])
    plain_pred = np.concatenate([f["plain_kernels"]["y_pred"] for f in folds])
    assert cv["cnn_int8"]["agreement_with_plain_kernels"] == pytest.approx(np.mean(int8_pred == plain_pred))
    assert set(metrics["held_out_test"]["float_plain_kernels"]) == {"accuracy", "macro_f1"}
    # The rhythm head (default on): alone and combined with each fold's float and int8 CNN; the
    # bundle carries it, so the device's accuracy below is the combined decision's.
    assert {"rhythm_head", "cnn_rhythm", "cnn_rhythm_int8"} <= set(cv)
    assert 0 <= cv["cnn_rhythm_int8"]["agreement_with_float"] <= 1
    rhythm_folds = json.loads((out / "run" / "folds" / "rhythm.json").read_text())["folds"]
    assert [len(f["proba"]) for f in rhythm_folds] == [len(f["y_pred"]) for f in folds]
    assert (out / "bundle" / "rhythm_head.npz").is_file() and metrics["held_out_test"]["int8_with_rhythm_head"]
    assert 0 <= metrics["int8_vs_float"]["with_rhythm_head_agreement"] <= 1
    test = metrics["held_out_test"]
    assert set(test["records"]) < {f"mitdb/{r}" for r in QUICK["records"]}
    assert metrics["int8_vs_float"]["n"] == test["windows"] > 0
    assert 0 <= metrics["int8_vs_float"]["agreement"] <= 1
    assert metrics["float32_vs_float"]["agreement"] > 0.95
    # The device runtime and the converter's verification run the same int8 model on the same
    # windows of the held-out records: same count, same accuracy.
    device = metrics["device_eval"]
    assert device["n_windows"] == device["verify_n_windows"] == test["windows"]
    assert device["accuracy"] == pytest.approx(device["verify_int8_accuracy"], abs=1e-12)
    assert np.array(device["confusion"]).sum() == device["n_windows"]
    assert set(device["records"]) == set(test["records"])
    assert sum(s["classified"] for s in device["records"].values()) == device["n_windows"]
    for quant in ("int8", "float32"):
        lat = metrics["latency"][quant]
        assert set(lat) >= {"dsp", "invoke", "end_to_end", "model_bytes"} and lat["invoke"]["median_ms"] > 0
        assert lat["windows"] == "held-out test records"  # real ECG, not the synthetic default
    assert metrics["bundle"]["bytes"] == metrics["latency"]["int8"]["model_bytes"]
    assert metrics["config"]["train"]["epochs"] == QUICK["epochs"] and metrics["command"].startswith(("ecgedge", "python"))


def test_metrics_headline_is_the_machine_readable_contract(quick_runs):
    out, _, _ = quick_runs
    metrics = json.loads((out / "metrics.json").read_text())
    h = metrics["headline"]
    assert {"task", "protocol", "level", "accuracy", "macro_f1", "af_se", "af_sp", "inconclusive_rate",
            "challenge_f1"} <= set(h)
    assert (h["task"], h["protocol"], h["level"]) == ("mitdb-rhythm4", "records", "window")  # mitdb labels time
    device = metrics["per_database"]["device"]["mitdb"]
    assert h["accuracy"] == device["accuracy"] and h["n"] == device["n_recordings"] == metrics["cross_validation"]["n_windows"]
    # The headline is the int8 device's decision: its accuracy is the CV table's int8 CNN + rhythm head.
    assert h["accuracy"] == pytest.approx(metrics["cross_validation"]["cnn_rhythm_int8"]["accuracy"])
    report = (out / "report.md").read_text()
    assert report.index("The device, per database") < report.index("Patient-wise results")


def test_report_starts_with_the_patient_wise_numbers_and_has_its_plots(quick_runs):
    out, first, _ = quick_runs
    assert first.exit_code == 0, first.output
    report = (out / "report.md").read_text()
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    assert headings[:2] == ["## The device, per database (records protocol)", "## Patient-wise results (records protocol)"]
    assert headings[2:] == ["## int8 vs float", "## Device runtime", "## Latency (device runtime, one thread)",
                            "## Example held-out windows", "## Bundle"]
    assert "| **the device**: int8 CNN + rhythm head, each fold converted |" in report
    metrics = json.loads((out / "metrics.json").read_text())
    for record, scores in metrics["device_eval"]["records"].items():  # the per-record table
        assert f"| {record} | {100 * scores['accuracy']:.2f} % |" in report
    for name in ("confusion_float_int8.png", "examples.png", "latency.png"):
        assert f"]({name})" in report
        assert (out / name).read_bytes()[:8] == PNG


def test_second_run_reuses_every_stage(quick_runs):
    out, first, second = quick_runs
    assert second.exit_code == 0, second.output
    stages = json.loads((out / "metrics.json").read_text())["stages"]
    assert list(stages) == list(STAGES)
    assert all(s["cached"] for s in stages.values()), stages
    assert sum(s["seconds"] for s in stages.values()) < 30
    assert "train: cached" in second.output and "train: done" in first.output


def test_accuracy_benchmark_reads_the_pipeline_output(quick_runs, tmp_path):
    from ecgedge.cli import cli

    out, first, _ = quick_runs
    assert first.exit_code == 0, first.output
    result = CliRunner().invoke(cli, ["bench", "accuracy", str(out), "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "accuracy.json").read_text())
    assert record["benchmark"] == "accuracy" and set(record["versions"]) >= {"tensorflow", "ai_edge_litert", "numpy"}
    assert record["machine"]["cpu_count"] >= 1 and "command" in record
    row = record["results"]["rows"][0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert row["protocol"] == "records" and row["cnn"]["accuracy"] == metrics["cross_validation"]["cnn"]["accuracy"]
    assert row["test_int8"]["accuracy"] == metrics["held_out_test"]["int8"]["accuracy"]
    assert row["svm_imagenet"] is None and record["results"]["paper_accuracy"] == 0.9723
    assert row["cnn_int8"]["accuracy"] == metrics["cross_validation"]["cnn_int8"]["accuracy"]
    assert "| Salem et al. (2018) | paper |" in result.output
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == PNG


def test_the_training_stage_is_redone_when_the_beat_detector_or_the_head_weights_change(tmp_path, monkeypatch):
    """A finished run's rhythm head read the beats of the detector of its day, weighted as that
    day's code weighed them: a new default must retrain it, not reuse it under a bundle that names
    the new one."""
    from types import SimpleNamespace

    from ecgedge.device import rhythm
    from ecgedge.pipeline.pipeline import train_key
    from ecgedge.train import rhythm_head
    from ecgedge.train.tasks import load_task

    ctx = SimpleNamespace(task=load_task("multidb-rhythm5"), cfg=pipeline_config(), data_dir=tmp_path)
    assert ctx.cfg.train.rhythm_head
    before = train_key(ctx)
    monkeypatch.setattr(rhythm_head, "RECORD_SHARE", 0.0)
    weighted_before = train_key(ctx)
    monkeypatch.setattr(rhythm, "BEAT_DETECTOR", 1)
    assert len({before, weighted_before, train_key(ctx)}) == 3
