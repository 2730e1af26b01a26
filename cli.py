"""The ``ecgedge`` command line.

Each room owns its commands; this root only names them and imports a room when its command
runs, so ``ecgedge --help`` is fast and ``ecgedge device ...`` works without TensorFlow.
"""

import importlib

import click

from ecgedge import __version__
from ecgedge.device.errors import EcgEdgeError

# command name -> (module, attribute, one-line help shown by ``ecgedge --help``)
COMMANDS = {
    "data": ("ecgedge.train.cli", "data", "Read PhysioNet records: download, summarise, show windows."),
    "train": ("ecgedge.train.cli", "train", "Train a MobileNet spectrogram classifier and cross-validate it."),
    "convert": ("ecgedge.convert.cli", "convert", "Quantize to TFLite bundles, verify, check Edge TPU, export C."),
    "device": ("ecgedge.device.cli", "device", "The on-device runtime: run, eval, bench, pack, push."),
    "bench": ("ecgedge.benchmarks.cli", "bench", "Benchmarks of the device against the desktop reference."),
    "pipeline": ("ecgedge.pipeline.pipeline", "pipeline", "The main job: data -> train -> convert -> device eval -> report."),
}
# group name -> (module, attribute): commands of another room that join a group when it runs.
# `ecgedge device pack|push|keygen|sign` run on the host, so they live in deploy/ and device/
# imports none of them; the user-facing CLI is the same.
GROUP_EXTRAS = {
    "device": ("ecgedge.deploy.cli", "COMMANDS"),
}


class _CliError(click.ClickException):
    exit_code = 2


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when they are invoked."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        try:
            command = getattr(importlib.import_module(module), attr)
            if name in GROUP_EXTRAS:
                extra_module, extra_attr = GROUP_EXTRAS[name]
                for extra in getattr(importlib.import_module(extra_module), extra_attr):
                    command.add_command(extra)
            return command
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)
            extra = "device" if module.startswith("ecgedge.device") else "train"
            raise click.ClickException(
                f"'ecgedge {name}' needs {missing}, which is not installed: "
                f"pip install 'ecgedge[{extra}]'"
            ) from exc

    def invoke(self, ctx):
        # The one boundary: a library error becomes "Error: <message>" and exit status 2.
        try:
            return super().invoke(ctx)
        except EcgEdgeError as exc:
            raise _CliError(exc.message) from None
        except SystemError as exc:
            # An error raised by a signal handler (SIGTERM during `device eval --predictions`)
            # while C code calls back into Python comes wrapped in a SystemError.
            inner = exc.__cause__ or exc.__context__
            if isinstance(inner, EcgEdgeError):
                raise _CliError(inner.message) from None
            raise

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, _, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="ecgedge")
def cli():
    """ECG rhythm classification from PhysioNet records to an int8 model on an edge device.

    Data and weights are found through ECGEDGE_DATA (a folder of PhysioNet databases, one
    sub-folder each, e.g. $ECGEDGE_DATA/mitdb) and ECGEDGE_WEIGHTS (ImageNet MobileNet .h5
    files); each command also takes them as options.
    """


def main():
    cli(prog_name="ecgedge")
