"""``ecgedge data ...`` commands (and, later, ``ecgedge train``).

Callbacks parse options and call library functions; heavy modules (wfdb, matplotlib) are
imported inside the callbacks so that ``ecgedge --help`` stays fast.
"""

import json
import sys
from dataclasses import replace

import click

# numpy and our training modules only (no TensorFlow): the option defaults are TrainConfig's.
from ecgedge.train.tasks import DEFAULT_TASK, EXPLORE_TASK
from ecgedge.train.train import TrainConfig

DATA_OPTION = click.option(
    "--data", "data_dir", type=click.Path(file_okay=False), default=None,
    help="Folder of PhysioNet databases (one sub-folder each). Default: $ECGEDGE_DATA, "
         "else ~/.cache/ecgedge/physionet.",
)
CACHE_OPTION = click.option(
    "--cache", "cache_dir", type=click.Path(file_okay=False), default=None,
    help="Cache folder. Default: $ECGEDGE_CACHE, else ~/.cache/ecgedge/cache.",
)
TASK_OPTION = click.option(
    "--task", "task_name", default=EXPLORE_TASK, show_default=True,
    help="Task preset name or path of a task .toml file.",
)
TRAIN_TASK_OPTION = click.option(
    "--task", "task_name", default=DEFAULT_TASK, show_default=True,
    help="Task preset name or path of a task .toml file (the main job's by default).",
)


@click.group()
def data():
    """Read PhysioNet records: download, summarise, show windows."""


@data.command()
@click.argument("databases", nargs=-1, required=True)
@DATA_OPTION
@click.option("--url", default=None,
              help="PhysioNet root URL (a mirror). Default: $ECGEDGE_PHYSIONET_URL, else "
                   "https://physionet.org/.")
def download(databases, data_dir, url):
    """Download PhysioNet DATABASES (e.g. mitdb afdb) into the data folder."""
    from ecgedge.train.data import data_root
    from ecgedge.train.download import download_database

    root = data_root(data_dir)
    for name in databases:
        folder = download_database(name, root, url)
        click.echo(f"{name}: {folder}")


@data.command()
@TASK_OPTION
@DATA_OPTION
@CACHE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, nothing else.")
@click.option("--per-record", is_flag=True, help="Also count windows per record and class.")
def summary(task_name, data_dir, cache_dir, as_json, per_record):
    """Windows, minutes and records per class of a task."""
    from ecgedge.train.data import load_windows, summarize
    from ecgedge.train.tasks import load_task

    task = load_task(task_name)
    windows = load_windows(task, data_dir, progress=_stderr_is_terminal(), cache_dir=cache_dir)
    result = summarize(windows, task, per_record=per_record)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(_summary_table(result))


def _stderr_is_terminal():
    """Progress bars only for a person watching: not in logs, pipes or tests."""
    return sys.stderr.isatty()


def _summary_table(result):
    """Plain-text table of :func:`ecgedge.train.data.summarize` output."""
    lines = [f"task {result['task']}, {result['window_s']:g} s windows",
             f"{'class':<10}{'windows':>10}{'minutes':>10}{'records':>10}"]
    for name, c in result["classes"].items():
        lines.append(f"{name:<10}{c['windows']:>10}{c['minutes']:>10.1f}{c['records']:>10}")
    for record, counts in result.get("per_record", {}).items():
        lines.append(f"{record:<16}" + "  ".join(f"{k}={v}" for k, v in counts.items()))
    return "\n".join(lines)


@data.command()
@click.argument("record")
@click.option("--at", "at_s", type=float, required=True, help="Window start, seconds.")
@TASK_OPTION
@DATA_OPTION
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="PNG file to write.")
def show(record, at_s, task_name, data_dir, out):
    """Plot the window of RECORD starting --at SECONDS: trace above its spectrogram channels."""
    from ecgedge.train.data import window_at
    from ecgedge.train.tasks import load_task

    task = load_task(task_name)
    _plot_window(window_at(task, record, at_s, data_dir), task.spectrogram, out)
    click.echo(out)


def _plot_window(view, cfg, out):
    """Write ``out`` (PNG): the raw trace on top, one spectrogram image per channel below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ecgedge.device.dsp import window_image

    image = window_image(view.x, view.fs, cfg)
    n_ch = image.shape[2]
    fig, axes = plt.subplots(1 + n_ch, 1, figsize=(10, 2.2 * (1 + n_ch)), constrained_layout=True)
    t = view.start_s + np.arange(view.x.size) / view.fs
    axes[0].plot(t, view.x, lw=0.7, color="k")
    axes[0].set(xlim=(t[0], t[-1]), xlabel="time in record (s)", ylabel=f"{view.lead} (mV)")
    for c, (nperseg, nfft) in enumerate(cfg.channels):
        top = cfg.n_freq * cfg.fs / nfft  # the image keeps the lowest n_freq bins
        axes[1 + c].imshow(image[:, :, c], origin="lower", aspect="auto", cmap="magma",
                           extent=(view.start_s, view.start_s + cfg.window_s, 0, top))
        axes[1 + c].set(ylabel="Hz", title=f"channel {c}: nperseg={nperseg}, nfft={nfft}")
    label = f"{view.class_name} {view.label}" if view.class_name else view.label
    fig.suptitle(f"{view.record} at {view.start_s:.1f} s: {label}")
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _backbone_names():
    from ecgedge.train.models import BACKBONES

    return list(BACKBONES)


@click.command()
@TRAIN_TASK_OPTION
@click.option("--backbone", type=click.Choice(_backbone_names()), default=TrainConfig.backbone,
              show_default=True, help="ImageNet MobileNet of the registry.")
@click.option("--protocol", type=click.Choice(["paper", "records", "databases"]), default=TrainConfig.protocol,
              show_default=True,
              help="paper: balanced ~7000 windows, 10-fold window CV; records: folds grouped by patient; "
                   "databases: leave one database out.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="RUN_DIR to write.")
@click.option("--epochs", type=int, default=TrainConfig.epochs, show_default=True, help="Most epochs per model.")
@click.option("--fine-tune", "fine_tune", is_flag=False, flag_value="all", default=str(TrainConfig.fine_tune),
              show_default=True,
              help="Train the last N backbone blocks ('--fine-tune' alone: all; 0: frozen backbone); "
                   "BatchNorm stays frozen.")
@click.option("--seed", type=int, default=TrainConfig.seed, show_default=True)
@click.option("--weights", default=TrainConfig.weights, show_default=True,
              help="imagenet (from $ECGEDGE_WEIGHTS, sha256-checked), none (random init), or an .h5 path.")
@DATA_OPTION
@CACHE_OPTION
@click.option("--folds", "n_folds", type=int, default=TrainConfig.n_folds,
              help="Cross-validation folds [paper 10, records 5].")
@click.option("--max-per-class", type=int, default=TrainConfig.max_per_class, show_default=True,
              help="Training windows per class per epoch.")
@click.option("--max-val-per-class", type=int, default=TrainConfig.max_val_per_class, show_default=True,
              help="Validation windows per class that early stopping scores after each epoch.")
@click.option("--records", default=None, help="Comma-separated records to use, e.g. 201,202,203 (default all).")
@click.option("--paper-windows", type=int, default=TrainConfig.paper_n_windows, show_default=True,
              help="Size of the paper protocol's class-balanced subset.")
@click.option("--baselines/--no-baselines", default=TrainConfig.baselines, show_default=True,
              help="Also cross-validate the SVM and RR-interval baselines.")
@click.option("--no-augment", is_flag=True, help="Train on the windows as recorded.")
@click.option("--batch-size", type=int, default=TrainConfig.batch_size, show_default=True)
@click.option("--learning-rate", type=float, default=TrainConfig.learning_rate, show_default=True,
              help="Head learning rate.")
@click.option("--fine-tune-learning-rate", type=float, default=TrainConfig.fine_tune_learning_rate,
              show_default=True)
@click.option("--head-epochs", type=int, default=TrainConfig.head_epochs, show_default=True,
              help="With --fine-tune: epochs that train the head alone first.")
@click.option("--patience", type=int, default=TrainConfig.patience, show_default=True,
              help="Epochs without better validation macro-F1 before stopping.")
@click.option("--quant-noise", type=float, default=TrainConfig.quant_noise, show_default=True,
              help="Gaussian noise after each backbone ReLU6 while training, in units of int8 rounding "
                   "noise (MobileNet V1 only; 0: none). On mitdb-rhythm4 it raised neither int8 agreement nor "
                   "the records CV score (README).")
@click.option("--rhythm-head/--no-rhythm-head", default=TrainConfig.rhythm_head, show_default=True,
              help="Also fit the rhythm head (gradient boosting on beats and intervals the device detects) "
                   "and report it alone and combined with the CNN.")
@click.option("--int8-grid/--no-int8-grid", default=TrainConfig.int8_grid, show_default=True,
              help="After training, round the backbone's kernels to the int8 grid: the saved float model "
                   "then holds the weights of its int8 conversion exactly.")
@click.option("--force", is_flag=True, help="Discard a run already in --out and train afresh.")
@click.option("--verbose", is_flag=True,
              help="Show TensorFlow's and Keras' output instead of appending it to RUN_DIR/train.log.")
def train(task_name, backbone, protocol, out_dir, epochs, fine_tune, seed, weights, data_dir, cache_dir,
          n_folds, max_per_class, max_val_per_class, records, paper_windows, baselines, no_augment, batch_size, learning_rate,
          fine_tune_learning_rate, head_epochs, patience, quant_noise, rhythm_head, int8_grid, force, verbose):
    """Cross-validate a MobileNet spectrogram classifier (and the baselines) and train the deployable model.

    Writes RUN_DIR/model.keras, config.json, split.json, metrics.json and PNG plots; TensorFlow's
    and Keras' output goes to RUN_DIR/train.log. A finished
    RUN_DIR is refused without --force; an interrupted one resumes from its finished folds.
    """
    from pathlib import Path

    from ecgedge.train.quiet import chatter_to
    from ecgedge.train.train import train_run

    config = TrainConfig(
        backbone=backbone, protocol=protocol, epochs=epochs, fine_tune=fine_tune, seed=seed, weights=weights,
        n_folds=n_folds, max_per_class=max_per_class, max_val_per_class=max_val_per_class,
        records=tuple(r for r in (records or "").split(",") if r),
        baselines=baselines, batch_size=batch_size, learning_rate=learning_rate,
        fine_tune_learning_rate=fine_tune_learning_rate, head_epochs=head_epochs, patience=patience,
        paper_n_windows=paper_windows, quant_noise=quant_noise, rhythm_head=rhythm_head, int8_grid=int8_grid,
    )
    if no_augment:
        config = replace(config, augment=None)
    with chatter_to(Path(out_dir) / "train.log", verbose):
        metrics = train_run(task_name, out_dir, config, data_dir=data_dir, cache_dir=cache_dir, force=force)
    click.echo(_metrics_table(metrics))
    click.echo(f"run written to {out_dir}")


def _metrics_table(metrics):
    """Plain-text summary of a run's metrics.json: accuracy, macro-F1 and per-class recall."""
    names = metrics["class_names"]
    lines = [f"task {metrics['task']}, protocol {metrics['protocol']} ({metrics['cv']['n_folds']} folds, "
             f"{metrics['cv']['n_windows']} windows)",
             f"{'model':<24}{'accuracy':>10}{'macro-F1':>10}" + "".join(f"{'R ' + n:>10}" for n in names)]
    rows = {k: v for k, v in metrics["cv"].items() if isinstance(v, dict) and "per_class" in v}
    rows["deployable (test)"] = metrics["deploy"]["test"]
    for label, m in rows.items():
        recalls = "".join(f"{m['per_class'][n]['recall']:>10.3f}" for n in names)
        lines.append(f"{label:<24}{m['accuracy']:>10.3f}{m['macro_f1']:>10.3f}{recalls}")
    return "\n".join(lines)
