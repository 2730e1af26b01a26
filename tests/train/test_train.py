"""train_run end to end on tiny images: files, metrics.json fields, seeded reproducibility,
refuse-overwrite, resume, load_run, and ``ecgedge train --protocol paper`` on real MIT-BIH records
with both baselines.

Weights are random (``weights="none"``): these tests are about the machinery, not accuracy.
"""

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ecgedge.device.dsp import SpectrogramConfig
from ecgedge.device.errors import EcgEdgeError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY = SpectrogramConfig(fs=128.0, window_s=4.0, hop=16, channels=((64, 64),), n_freq=32)
CLASSES = ("NSR", "AF", "VENT", "OTHER")
DATA = Path(os.environ.get("ECGEDGE_DATA") or Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "physionet")
RECORDS = ["201", "202", "203", "208", "210", "219", "221", "222"]
# A frozen backbone on every window: the tiny runs train the head only, whatever the defaults.
QUICK = dict(epochs=1, n_folds=2, batch_size=16, progress=False, weights="none", fine_tune=0, max_per_class=None)


def synthetic_windows(n_per_class=3, seed=0):
    """Pulse trains at 128 Hz, 4 s windows, four classes in each of 6 patients (201/202 one patient)."""
    from ecgedge.train.data import Windows

    rng = np.random.default_rng(seed)
    t = np.arange(512) / 128.0
    x, y, record, patient = [], [], [], []
    for rec in ("100", "101", "103", "105", "201", "202", "203"):
        for c in range(len(CLASSES)):
            for _ in range(n_per_class):
                rr = rng.uniform(0.4, 1.2, 12) if c == 1 else np.full(12, [0.9, 0.5, 0.35, 1.4][c])
                beats = np.cumsum(rr) - rng.uniform(0, 1)
                x.append(sum(np.exp(-((t - b) * 25) ** 2) for b in beats) + 0.05 * rng.standard_normal(512))
                y.append(c)
                record.append(f"mitdb/{rec}")
                patient.append("mitdb/201+202" if rec in ("201", "202") else f"mitdb/{rec}")
    n = len(y)
    return Windows(np.array(x, np.float32), 128.0, np.array(y), np.array(record), np.array(patient),
                   np.arange(n) * 4.0, np.array(["(N"] * n), CLASSES)


@pytest.fixture(scope="module")
def tiny_task():
    from ecgedge.train.tasks import load_task

    return replace(load_task("mitdb-rhythm4"), window_s=4.0, spectrogram=TINY)


@pytest.fixture(scope="module")
def first_run(tiny_task, tmp_path_factory):
    from ecgedge.train.train import train_run

    out = tmp_path_factory.mktemp("runs") / "a"
    windows = synthetic_windows()
    metrics = train_run(tiny_task, out, backbone="mobilenet_v1_0.25_128", protocol="records", seed=3, baselines=False,
                        cache_dir=tmp_path_factory.mktemp("cache"), windows=windows, **QUICK)
    return out, metrics, windows


def test_run_directory_has_every_file_and_a_working_model(first_run, tiny_task):
    from ecgedge.train.runs import load_run

    out, metrics, windows = first_run
    for name in ("model.keras", "config.json", "split.json", "metrics.json",
                 "confusion_matrix.png", "training_curves.png", "folds/cnn-0.json", "folds/cnn-1.json",
                 "folds/deploy.json"):
        assert (out / name).is_file(), name
    run = load_run(out)
    assert run.task == tiny_task
    assert run.config["backbone"] == "mobilenet_v1_0.25_128" and run.config["seed"] == 3
    assert run.config["protocol"] == "records" and run.config["image_shape"] == [32, 32, 1]
    model = run.load_model()
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 4)
    # int8_grid (default on): the saved backbone kernels lie on their int8 grids.
    from ecgedge.train.int8_grid import kernel_axes, snap_kernel

    convs = [layer for layer in model.get_layer("backbone").layers if "conv" in type(layer).__name__.lower()]
    assert len(convs) == 27
    for layer in convs:
        kernel = layer.get_weights()[0]
        np.testing.assert_array_equal(snap_kernel(kernel, kernel_axes(layer)), kernel)
    # The split covers the records without sharing one between parts.
    parts = [set(run.split[k]) for k in ("train", "val", "test")]
    assert set().union(*parts) == set(windows.record.tolist())
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]


def test_metrics_json_fields(first_run):
    out, metrics, windows = first_run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["summary"] == metrics["summary"]
    assert on_disk["protocol"] == "records" and "patient" in on_disk["protocol_note"]
    assert on_disk["class_names"] == list(CLASSES)
    cnn = on_disk["cv"]["cnn"]
    assert cnn["n"] == len(windows.y) == on_disk["cv"]["n_windows"]
    assert set(cnn["per_class"]["AF"]) == {"precision", "recall", "f1", "support"}
    assert sum(c["support"] for c in cnn["per_class"].values()) == len(windows.y)
    assert np.array(cnn["confusion_matrix"]).shape == (4, 4)
    assert np.array(cnn["confusion_matrix"]).sum() == len(windows.y)
    assert [f["fold"] for f in cnn["per_fold"]] == [0, 1]
    assert 0 <= cnn["accuracy"] <= 1 and 0 <= cnn["macro_f1"] <= 1
    assert set(on_disk["versions"]) == {"tensorflow", "keras", "numpy", "sklearn", "ecgedge"}
    assert on_disk["seed"] == 3 and on_disk["config"]["train"]["n_folds"] == 2
    deploy = on_disk["deploy"]
    assert sum(p["windows"] for p in deploy["split"].values()) == len(windows.y)
    assert deploy["best_epoch"] == 1 and "confusion_matrix" in deploy["test"]
    assert on_disk["timing"]["train_images_per_s_median"] > 0


def test_same_seed_gives_identical_predictions(first_run, tiny_task, tmp_path):
    from ecgedge.train.train import train_run

    out, metrics, windows = first_run
    again = train_run(tiny_task, tmp_path / "b", backbone="mobilenet_v1_0.25_128", protocol="records", seed=3,
                      baselines=False, cache_dir=tmp_path / "cache", windows=windows, **QUICK)
    assert again["cv"]["cnn"] == metrics["cv"]["cnn"]
    assert again["deploy"]["test"] == metrics["deploy"]["test"]
    for name in ("cnn-0", "cnn-1", "deploy"):
        a = json.loads((out / "folds" / f"{name}.json").read_text())
        b = json.loads((tmp_path / "b" / "folds" / f"{name}.json").read_text())
        assert a["history"]["loss"] == b["history"]["loss"]
    assert json.loads((out / "split.json").read_text()) == json.loads((tmp_path / "b" / "split.json").read_text())


def test_a_finished_run_is_refused_and_an_unfinished_one_resumes(first_run, tiny_task, tmp_path, monkeypatch):
    import shutil

    from ecgedge.train import train as train_module

    out, metrics, windows = first_run
    with pytest.raises(EcgEdgeError, match="already holds a finished run .*--force"):
        train_module.train_run(tiny_task, out, backbone="mobilenet_v1_0.25_128", protocol="records", seed=3,
                               baselines=False, windows=windows, **QUICK)
    # An interrupted copy: no metrics.json, fold 1 missing. Only fold 1 is trained again.
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "metrics.json").unlink()
    (copy / "folds" / "cnn-1.json").unlink()
    fitted = []
    real_fit = train_module.fit_model
    monkeypatch.setattr(train_module, "fit_model", lambda *a, **k: fitted.append(k.get("label", a[-1])) or real_fit(*a, **k))
    resumed = train_module.train_run(tiny_task, copy, backbone="mobilenet_v1_0.25_128", protocol="records", seed=3,
                                     baselines=False, cache_dir=tmp_path / "cache", windows=windows, **QUICK)
    assert fitted == ["fold 1"]
    assert resumed["cv"]["cnn"] == metrics["cv"]["cnn"]
    # Another configuration may not resume it.
    (copy / "metrics.json").unlink()
    with pytest.raises(EcgEdgeError, match=r"unfinished run with another configuration \(differs in: seed, train\)"):
        train_module.train_run(tiny_task, copy, backbone="mobilenet_v1_0.25_128", protocol="records", seed=4,
                               baselines=False, cache_dir=tmp_path / "cache", windows=windows, **QUICK)


@pytest.mark.skipif(not (DATA / "mitdb" / "201.hea").is_file(), reason=f"no MIT-BIH records at {DATA}")
def test_cli_paper_protocol_on_real_records_with_both_baselines_on_the_cnn_folds(tmp_path):
    from ecgedge.cli import cli

    task = tmp_path / "tiny.toml"
    task.write_text(
        'name = "tiny-rhythm4"\nwindow_s = 4.0\nhop_s = 20.0\nleads = ["MLII"]\n'
        '[databases.mitdb]\npatients = [["201", "202"]]\n'
        '[classes]\nNSR = ["(N"]\nAF = ["(AFIB", "(AFL"]\nVENT = ["(B", "(T", "(VT", "(VFL", "(IVR"]\n'
        'OTHER = ["(SBR", "(SVTA", "(NOD", "(AB", "(BII", "(PREX", "(P"]\n'
        '[spectrogram]\nfs = 128.0\nhop = 16\nchannels = [[64, 64]]\nn_freq = 32\n'
    )
    out = tmp_path / "run"
    args = ["train", "--task", str(task), "--protocol", "paper", "--paper-windows", "200", "--out", str(out), "--epochs", "1",
            "--fine-tune", "0", "--folds", "2", "--max-per-class", "20", "--max-val-per-class", "1", "--weights", "none",
            "--seed", "1", "--data", str(DATA), "--cache", str(tmp_path / "cache"), "--records", ",".join(RECORDS)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "svm_imagenet" in result.output and "rr_gbm" in result.output and "deployable (test)" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["cv"]) >= {"cnn", "svm_imagenet", "rr_gbm"}
    # The paper's balanced subset: 50 windows per class, or all of a smaller class.
    assert metrics["protocol"] == "paper" and "window level" in metrics["protocol_note"]
    totals = [sum(p["class_counts"][c] for p in metrics["deploy"]["split"].values()) for c in range(4)]
    assert metrics["cv"]["class_counts"] == [min(50, n) for n in totals]
    # The baselines were fitted on exactly the CNN's folds.
    for name in ("svm_imagenet", "rr_gbm"):
        baseline = json.loads((out / "folds" / f"baseline-{name}.json").read_text())["folds"]
        for fold in baseline:
            cnn = json.loads((out / "folds" / f"cnn-{fold['fold']}.json").read_text())
            assert fold["test"] == cnn["test"] and fold["y_true"] == cnn["y_true"]
    # Early stopping scored one validation window of each class (each fold validates on more).
    for name in ("cnn-0", "cnn-1"):
        fold = json.loads((out / "folds" / f"{name}.json").read_text())
        assert fold["history"]["val_windows_scored"] == [1, 1, 1, 1] and fold["n_val"] >= 8
    # RR peer on reference beats separates these rhythms well even on two folds.
    assert metrics["cv"]["rr_gbm"]["accuracy"] > 0.6
    assert (out / "model.keras").is_file() and (out / "confusion_matrix.png").stat().st_size > 10_000
    # Refused the second time, exit 2 with a one-line message.
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and "already holds a finished run" in again.output


@pytest.mark.parametrize("argv, expected", [([], "all"), (["--fine-tune", "0"], "0"), (["--fine-tune"], "all"),
                                            (["--fine-tune", "3"], "3")])
def test_cli_fine_tune_takes_an_optional_block_count(argv, expected):
    from ecgedge.train.cli import train

    ctx = train.make_context("train", ["--out", "run", *argv])
    assert ctx.params["fine_tune"] == expected
    assert ctx.params["protocol"] == "records" and ctx.params["weights"] == "imagenet"


def test_cli_defaults_are_the_train_configs():
    """``ecgedge train`` writes no default of its own: each option's default is TrainConfig's."""
    from ecgedge.train.cli import train
    from ecgedge.train.train import TrainConfig

    ctx = train.make_context("train", ["--out", "run"])
    config, params = TrainConfig(), ctx.params
    option_of = {"paper_n_windows": "paper_windows"}
    for name in ("backbone", "protocol", "epochs", "seed", "weights", "n_folds", "max_per_class", "max_val_per_class",
                 "paper_n_windows",
                 "baselines", "batch_size", "learning_rate", "fine_tune_learning_rate", "head_epochs", "patience",
                 "quant_noise", "rhythm_head", "int8_grid"):
        assert params[option_of.get(name, name)] == getattr(config, name), name
    assert params["fine_tune"] == str(config.fine_tune) and params["no_augment"] is False
    # ecgedge train and ecgedge pipeline train the same task when none is named.
    from ecgedge.pipeline.pipeline import PipelineConfig
    from ecgedge.train.tasks import DEFAULT_TASK

    assert params["task_name"] == PipelineConfig().task == DEFAULT_TASK == "multidb-rhythm5"
    # The main job's measured settings are the defaults of both commands.
    measured = (config.epochs, config.fine_tune, config.max_per_class, config.fine_tune_learning_rate)
    assert measured == (12, "all", 600, 5e-4)
