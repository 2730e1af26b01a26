"""``ecgedge device pack|push|keygen|sign``: the host-side commands of the device group.

Callbacks only parse options and call :mod:`ecgedge.deploy.pack`, :mod:`ecgedge.deploy.push`
and :mod:`ecgedge.device.signing` (``cli_sign``). They run on the machine that builds bundles,
not on the device, so ``device/`` does not import them: the root CLI (``ecgedge.cli``) adds
:data:`COMMANDS` to the ``device`` group when that group is invoked. ``ecgedge device
selftest``, which runs on the device, stays in ``device/cli.py``.
"""

import json
from pathlib import Path

import click

from ecgedge.deploy.cli_sign import keygen, sign


def _human_bytes(n):
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


@click.command("pack")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="archive to write (PACK.tar.gz; written to a new temporary file beside it, then renamed)")
@click.option("--target", type=click.Choice(["linux-aarch64", "linux-x86_64"]), default=None,
              help="device platform (default: this machine's; a Raspberry Pi with 64-bit OS is linux-aarch64)")
@click.option("--python", "python", default=None, metavar="X.Y",
              help="the device's Python version (default: this one's; Debian bookworm / Raspberry Pi OS 12: 3.11)")
@click.option("--offline", is_flag=True,
              help="include pip and every dependency wheel for the target, for a device without internet")
@click.option("--wheel", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ship this ecgedge wheel (default: built from the source tree of an editable "
                   "install, or rebuilt from the installed files of an ordinary one)")
@click.option("--requirements", "requirements_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="top-level device requirements to pin (default: numpy and ai-edge-litert at this machine's versions)")
@click.option("--trust", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Ed25519 public key (a .pub file, or a folder of them) the device will require a bundle "
                   "signature of; the bundle must already be signed by one (ecgedge device sign). Repeatable")
@click.option("--json", "as_json", is_flag=True, help="print the pack manifest as JSON")
def pack(bundle, out, target, python, offline, wheel, requirements_file, trust, as_json):
    """Build one archive to install BUNDLE on a device (wheel, bundle, installer, self-test).

    Install it with `ecgedge device push PACK --host USER@HOST`, or on the device with
    `tar -xzf PACK && sh ecgedge-pack/install.sh`.
    """
    from ecgedge.deploy.pack import build_pack

    manifest = build_pack(bundle, out, target=target, python=python, offline=offline,
                          wheel=wheel, requirements_file=requirements_file, trusted_keys=trust)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    archive = manifest["archive"]
    click.echo(f"wrote {archive['path']} ({_human_bytes(archive['bytes'])}, sha256 {archive['sha256'][:16]}...)")
    click.echo(f"pack {manifest['pack_id']}: {manifest['target']['platform']} / Python {manifest['target']['python']}, "
               f"{'offline' if manifest['offline'] else 'online'}, {len(manifest['files'])} files, "
               f"task {manifest['bundle']['task']} ({manifest['bundle']['quantization']})")
    click.echo("requirements: " + ", ".join(manifest["requirements"]))
    click.echo(f"self-test labels: {', '.join(manifest['selftest']['labels'])}")
    if manifest["trusted_keys"]:
        click.echo(f"signed by {manifest['bundle']['signed_by']}; the device will require a signature by one of "
                   f"{len(manifest['trusted_keys'])} trusted key(s)")


@click.command("push")
@click.argument("pack", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--host", required=True, metavar="[USER@]HOST", help="the device, as ssh takes it")
@click.option("--prefix", default=None, help="install folder on the device (default: install.sh's)")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="ssh port")
@click.option("--identity", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ssh private key file")
@click.option("-o", "--ssh-option", "options", multiple=True, metavar="OPTION",
              help="extra ssh/scp -o option, e.g. StrictHostKeyChecking=accept-new (repeatable)")
@click.option("--timeout", type=click.IntRange(1, 600), default=10, help="ssh connect timeout, seconds")
@click.argument("install_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def push(ctx, pack, host, prefix, port, identity, options, timeout, install_args):
    """Copy PACK to a device over SSH and run its install.sh there, streaming the output.

    Arguments after `--` go to install.sh (e.g. `-- --systemd --source /dev/ttyACM0 --fs 250`).
    The exit status is install.sh's; an unreachable host is exit 2.
    """
    from ecgedge.deploy.push import push as push_pack

    status = push_pack(pack, host, prefix=prefix, port=port, identity=identity, options=options,
                       install_args=install_args, connect_timeout=timeout, echo=click.echo)
    if status != 0:
        click.echo(f"push: install.sh on {host} failed with exit status {status}", err=True)
    ctx.exit(status)


COMMANDS = (pack, push, keygen, sign)
