"""``ecgedge convert``: quantize a training run into a bundle, verify it, check Edge TPU
readiness, export a C array. Callbacks parse options and call the library; TensorFlow is
imported only inside the commands that need it."""

import json

import click

QUANT_CHOICES = ("int8", "float16", "float32")


def _echo_json(obj):
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


@click.group()
def convert():
    """Quantize to TFLite bundles, verify, check Edge TPU, export C."""


@convert.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--quant", type=click.Choice(QUANT_CHOICES), default="int8", show_default=True)
@click.option("--representative", "n_representative", type=click.IntRange(min=1), default=None,
              help="Calibration windows for int8, class-balanced from the training split [default: 1000].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration sample.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of PhysioNet databases (default: ECGEDGE_DATA).")
@click.option("--verbose", is_flag=True,
              help="Show TensorFlow's and the converter's output instead of appending it to RUN_DIR/convert.log.")
def quantize(run_dir, out_dir, quant, n_representative, seed, data_dir, verbose):
    """Convert RUN_DIR's model.keras into a bundle (model.tflite + model.json).

    TensorFlow's and the converter's output goes to RUN_DIR/convert.log (the bundle folder holds
    only what ships)."""
    from pathlib import Path

    from ecgedge.convert.quantize import DEFAULT_REPRESENTATIVE, quantize_run
    from ecgedge.train.quiet import chatter_to

    # A RUN_DIR that does not exist is refused at once; no log folder is made for it.
    with chatter_to(Path(run_dir) / "convert.log", verbose or not Path(run_dir).is_dir()):
        bundle = quantize_run(run_dir, out_dir, quant=quant,
                              n_representative=n_representative or DEFAULT_REPRESENTATIVE, seed=seed, data_dir=data_dir)
    m = bundle.manifest
    click.echo(f"wrote {bundle.path}: {m['quantization']} {m['bytes']} bytes, input {m['input']['dtype']} "
               f"scale {m['input']['scale']:.6g} zero point {m['input']['zero_point']}, classes {', '.join(m['classes'])}")
    if "representative" in m:
        click.echo(f"representative set: {m['representative']['n']} training windows, seed {m['representative']['seed']}, "
                   f"per class {m['representative']['class_counts']}")


@convert.command()
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="The training run.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.98, show_default=True,
              help="Minimum top-1 agreement; below it the command exits 1.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of PhysioNet databases (default: ECGEDGE_DATA).")
@click.option("--top", "top_k", type=click.IntRange(min=0), default=10, show_default=True,
              help="Windows with the largest score differences to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(bundle, run_dir, threshold, data_dir, top_k, as_json):
    """Float Keras model vs BUNDLE's TFLite model on the run's test windows."""
    from ecgedge.convert.verify import format_report, verify_bundle

    report = verify_bundle(bundle, run_dir, threshold=threshold, data_dir=data_dir, top_k=top_k)
    _echo_json(report) if as_json else click.echo(format_report(report))
    if not report["passed"]:
        raise SystemExit(1)


@convert.command("check-edgetpu")
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_edgetpu_cmd(bundle, as_json):
    """Static Edge TPU readiness of BUNDLE (folder or .tflite); exit 1 when not ready."""
    from ecgedge.convert.edgetpu import check_edgetpu, format_report

    report = check_edgetpu(bundle)
    _echo_json(report.to_dict()) if as_json else click.echo(format_report(report))
    if not report.ready:
        raise SystemExit(1)


@convert.command("export-c")
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: BUNDLE/c].")
@click.option("--name", default="ecgedge_model", show_default=True, help="C name of the model array.")
def export_c_cmd(bundle, out_dir, name):
    """Write BUNDLE's model as a C array (.h + .cc) with the measured tensor arena size."""
    from ecgedge.convert.export_c import export_c

    result = export_c(bundle, out_dir, name)
    click.echo(f"wrote {result['header']} and {result['source']} ({result['bytes']} bytes)")
    click.echo(result["arena"]["message"])
    if result["rhythm_head"]:
        click.echo("note: the bundle's rhythm head (numpy trees) is not exported to C; a microcontroller "
                   "running this array decides with the CNN alone, as 'CNN alone' in the run's report")
