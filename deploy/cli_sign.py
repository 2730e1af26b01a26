"""``ecgedge device keygen|sign``: the owner's Ed25519 key and bundle signatures.

Callbacks only parse options and call :mod:`ecgedge.device.signing`; ``deploy/cli.py`` lists
them in its ``COMMANDS``, which the root CLI adds to the ``device`` group. Keys are made and
bundles signed on the host; a device checks signatures with ``--trust`` or
``$ECGEDGE_TRUSTED_KEYS`` (``classifier_options`` in ``device/cli.py``).
"""

from pathlib import Path

import click


@click.command("keygen")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for bundle-signing.key (private, mode 0600) and bundle-signing.pub (public).")
def keygen(out):
    """Make an Ed25519 key pair to sign bundles with (never overwrites a key).

    Keep the private key on the machine that builds bundles; copy only the .pub file to devices.
    """
    from ecgedge.device.signing import generate_keypair

    private, public, key_id = generate_keypair(out)
    click.echo(f"wrote {private} (private, keep it secret) and {public} (public, for devices); key id {key_id}")


@click.command("sign")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--key", "key", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Private key made by 'ecgedge device keygen'.")
def sign(bundle, key):
    """Sign BUNDLE's digest: writes BUNDLE/model.sig, checked by devices that trust the key."""
    from ecgedge.device.signing import sign_bundle

    path, key_id = sign_bundle(bundle, key)
    click.echo(f"wrote {path} (key id {key_id})")


COMMANDS = (keygen, sign)
