"""``ecgedge bench``: benchmarks of the device runtime against the desktop reference.

Benchmarks are run on purpose, never as tests. Each writes ``<name>.json`` and ``<name>.png``
into ``--results`` (default ``benchmarks/results``); every JSON records the machine, the versions
(TensorFlow, LiteRT, numpy) and the exact command. The logic lives in ``bench_*.py`` beside
this file; ``python -m ecgedge.benchmarks NAME`` is the same as ``ecgedge bench NAME``.
"""

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import click

DEFAULT_RESULTS = "benchmarks/results"
DEFAULT_PIPELINE = "runs/demo"


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment():
    """Machine and library versions of this process, JSON-ready.

    Returns
    -------
    dict {"machine": {system, release, machine, cpu, cpu_count, python}, "versions":
    {ecgedge, tensorflow, keras, ai_edge_litert, numpy}}.
    """
    import numpy

    from ecgedge.convert.quantize import versions

    return {
        "machine": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
                    "cpu": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "versions": {**versions(), "numpy": numpy.__version__},
    }


def write_result(results_dir, name, results, plot):
    """Write ``name.json`` (results + environment + command) and ``name.png`` into ``results_dir``.

    Parameters
    ----------
    results_dir : folder (created).
    name : file stem, e.g. "latency".
    results : JSON-ready dict, the benchmark's numbers.
    plot : callable(png_path, results) that draws the plot.

    Returns
    -------
    (json_path, png_path).
    """
    from ecgedge.pipeline.pipeline import invoked_command, write_json

    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "command": invoked_command(),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **environment(),
              "results": results}
    write_json(out / f"{name}.json", record)
    plot(out / f"{name}.png", results)
    return out / f"{name}.json", out / f"{name}.png"


def pipeline_path(explicit, pipeline_dir, name):
    """``explicit`` if given, else ``pipeline_dir/name`` when it exists, else None."""
    if explicit:
        return Path(explicit)
    candidate = Path(pipeline_dir) / name
    return candidate if candidate.exists() else None


def _split(pipeline_dir):
    """The deployable model's patient split of a pipeline folder (``run/split.json``), or None."""
    path = Path(pipeline_dir) / "run" / "split.json"
    return json.loads(path.read_text()) if path.is_file() else None


RESULTS_OPTION = click.option("--results", "results_dir", type=click.Path(file_okay=False),
                              default=DEFAULT_RESULTS, show_default=True, help="Folder for the JSON and PNG.")


def _done(paths):
    for path in paths:
        click.echo(f"wrote {path}")


@click.group()
def bench():
    """Benchmarks of the device against the desktop reference (JSON + PNG in benchmarks/results)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@bench.command()
@click.option("--pipeline", "pipeline_dir", default=DEFAULT_PIPELINE, show_default=True,
              help="Output folder of 'ecgedge pipeline'; gives the defaults of the three options below.")
@click.option("--bundle", default=None, help="int8 bundle [default: PIPELINE/bundle].")
@click.option("--float-bundle", default=None, help="float32 bundle [default: PIPELINE/bundle-float32, if any].")
@click.option("--run", "run_dir", default=None, help="Training run with model.keras [default: PIPELINE/run, if any].")
@click.option("-n", "n", type=click.IntRange(min=1), default=300, show_default=True, help="Timed windows.")
@click.option("--warmup", type=click.IntRange(min=0), default=30, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True, help="Batch of the throughput runs.")
@click.option("--windows", "source", type=click.Choice(["mitdb", "synthetic"]), default="mitdb", show_default=True,
              help="Real MIT-BIH windows spread over all records, or a seeded synthetic ECG (no data needed).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of PhysioNet databases, for --windows mitdb [default: $ECGEDGE_DATA].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic windows.")
@RESULTS_OPTION
def latency(pipeline_dir, bundle, float_bundle, run_dir, n, warmup, batch, source, data_dir, seed, results_dir):
    """Per-window latency on one core: Keras float (tf.function, batch 1) vs TFLite float32 vs int8."""
    from ecgedge.benchmarks import bench_latency

    results = bench_latency.measure_latency(
        pipeline_path(bundle, pipeline_dir, "bundle"), pipeline_path(float_bundle, pipeline_dir, "bundle-float32"),
        pipeline_path(run_dir, pipeline_dir, "run"), n=n, warmup=warmup, batch=batch, seed=seed, source=source,
        data_dir=data_dir)
    click.echo(bench_latency.summary(results))
    _done(write_result(results_dir, "latency", results, bench_latency.plot))


@bench.command()
@click.argument("sources", nargs=-1)
@RESULTS_OPTION
def accuracy(sources, results_dir):
    """Accuracy table of pipeline outputs or training runs (SOURCES; default runs/demo and runs/paper)."""
    from ecgedge.benchmarks import bench_accuracy

    sources = sources or tuple(p for p in (DEFAULT_PIPELINE, "runs/paper") if Path(p).exists()) or (DEFAULT_PIPELINE,)
    results = bench_accuracy.accuracy_table(sources)
    click.echo(bench_accuracy.markdown_table(results))
    _done(write_result(results_dir, "accuracy", results, bench_accuracy.plot))


@bench.command()
@click.option("--backbones", default=None, help="Comma-separated registry names [default: every one with weights].")
@click.option("--weights", default="imagenet", show_default=True, help="imagenet, none or an .h5 path.")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--records", default=None, help="Comma-separated records [default: a fixed 12-record subset].")
@click.option("--max-per-class", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--folds", "n_folds", type=click.IntRange(min=2), default=2, show_default=True)
@click.option("--work", "work_dir", default="runs/backbones", show_default=True,
              help="Folder of the per-backbone pipeline runs (reused when up to date).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@RESULTS_OPTION
def backbones(backbones, weights, epochs, records, max_per_class, n_folds, work_dir, data_dir, seed, results_dir):
    """Backbone sweep on a fixed small split: int8 size, latency, accuracy; table and Pareto plot."""
    from ecgedge.benchmarks import bench_backbones

    results = bench_backbones.compare_backbones(
        names=[b for b in backbones.split(",") if b] if backbones else None, weights=weights, epochs=epochs,
        records=tuple(r for r in records.split(",") if r) if records else bench_backbones.DEFAULT_RECORDS,
        max_per_class=max_per_class, n_folds=n_folds, work_dir=work_dir, data_dir=data_dir, seed=seed)
    click.echo(bench_backbones.markdown_table(results))
    _done(write_result(results_dir, "backbones", results, bench_backbones.plot))


@bench.command()
@click.option("--pipeline", "pipeline_dir", default=DEFAULT_PIPELINE, show_default=True)
@click.option("--bundle", default=None, help="int8 bundle [default: PIPELINE/bundle].")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of PhysioNet databases [default: $ECGEDGE_DATA]; mitdb records are concatenated.")
@click.option("--lengths", default=None, help="Comma-separated signal lengths in seconds [default: 1 min .. 24 h].")
@click.option("--rhythm-head/--no-rhythm-head", default=True, show_default=True,
              help="Combine the model with the bundle's rhythm head, when it has one, or time the model alone.")
@RESULTS_OPTION
def scaling(pipeline_dir, bundle, data_dir, lengths, rhythm_head, results_dir):
    """Cost against signal length (real mitdb records concatenated, streamed): time, memory, real-time factor."""
    from ecgedge.benchmarks import bench_scaling

    lengths = [float(v) for v in lengths.split(",")] if lengths else bench_scaling.DEFAULT_LENGTHS_S
    results = bench_scaling.measure_scaling(pipeline_path(bundle, pipeline_dir, "bundle"), lengths, data_dir,
                                            rhythm_head)
    click.echo(json.dumps(results["fit"]))
    _done(write_result(results_dir, "scaling", results, bench_scaling.plot))


@bench.command()
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of PhysioNet databases (mitdb and nstdb) [default: $ECGEDGE_DATA].")
@click.option("--records", default=None, help="Comma-separated mitdb records [default: all of them].")
@click.option("--task", default="multidb-rhythm5", show_default=True,
              help="Task preset whose model rate and low-pass the windows go through.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the offsets into the noise records.")
@RESULTS_OPTION
def beats(data_dir, records, task, seed, results_dir):
    """Beat detection against MIT-BIH's reference beats, each detector, clean and in nstdb noise."""
    from ecgedge.benchmarks import bench_beats

    records = tuple(r for r in records.split(",") if r) if records else None
    results = bench_beats.measure_beats(data_dir, records, task, seed=seed)
    click.echo(bench_beats.summary(results))
    _done(write_result(results_dir, "beats", results, bench_beats.plot))


@bench.command()
@click.option("--pipeline", "pipeline_dir", default=DEFAULT_PIPELINE, show_default=True)
@click.option("--bundle", default=None, help="int8 bundle [default: PIPELINE/bundle].")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of PhysioNet databases (mitdb and nstdb) [default: $ECGEDGE_DATA].")
@click.option("--records", default=None,
              help="Comma-separated mitdb records [default: the mitdb records the pipeline's deployable model "
                   "held out, else 8 records, sinus and AF].")
@click.option("--seed", type=int, default=0, show_default=True)
@RESULTS_OPTION
def robustness(pipeline_dir, bundle, data_dir, records, seed, results_dir):
    """Recorded noise (nstdb bw, ma) at 24..0 dB SNR, non-ECG input, units and offset."""
    from ecgedge.benchmarks import bench_robustness

    split = _split(pipeline_dir) if bundle is None else None
    if records:
        records = tuple(r for r in records.split(",") if r)
    elif split and split.get("test"):
        records = tuple(r.split("/", 1)[1] for r in split["test"] if r.startswith("mitdb/"))
    records = records or bench_robustness.DEFAULT_RECORDS
    trained_on = sorted(set(records) & {r.split("/", 1)[1] for k in ("train", "val") for r in (split or {}).get(k, [])
                                        if r.startswith("mitdb/")})
    if trained_on:
        click.echo(f"warning: the deployable model was trained on mitdb {', '.join(trained_on)}: "
                   f"their accuracy is not a held-out number", err=True)
    results = bench_robustness.measure_robustness(pipeline_path(bundle, pipeline_dir, "bundle"), data_dir, records,
                                                  seed=seed)
    click.echo(bench_robustness.summary(results))
    _done(write_result(results_dir, "robustness", results, bench_robustness.plot))


@bench.command()
@click.option("--pipeline", "pipeline_dir", default=DEFAULT_PIPELINE, show_default=True)
@click.option("--bundle", default=None, help="int8 bundle [default: PIPELINE/bundle].")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of PhysioNet databases; mitdb records are streamed [default: $ECGEDGE_DATA].")
@click.option("--hours", type=click.FloatRange(min=0.01), default=24.0, show_default=True,
              help="Hours of signal to stream.")
@RESULTS_OPTION
def stream(pipeline_dir, bundle, data_dir, hours, results_dir):
    """Memory of 'ecgedge device run --input -' over a long stdin stream (hours of real ECG as text)."""
    from ecgedge.benchmarks import bench_stream
    from ecgedge.benchmarks.bench_scaling import record_paths

    results = bench_stream.measure_stream_memory(pipeline_path(bundle, pipeline_dir, "bundle"), record_paths(data_dir),
                                                 hours)
    click.echo(bench_stream.summary(results))
    _done(write_result(results_dir, "stream", results, bench_stream.plot))
