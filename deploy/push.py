"""Copy a pack to a device over SSH and install it there: ``ecgedge device push``.

Uses the OpenSSH client programs (``ssh``, ``scp``) through subprocess, so it needs no Python
package and honours ``~/.ssh/config``, agents and jump hosts like any other SSH command. Three
connections: make a private temporary folder on the device, copy the pack into it, then unpack
it and run ``install.sh`` with the output streamed here; the folder is removed afterwards
whatever the result. ``BatchMode=yes`` makes a missing key fail at once instead of waiting
for a password prompt.
"""

import shlex
import shutil
import subprocess
from pathlib import Path

from ecgedge.deploy.pack import TOP, read_pack_manifest
from ecgedge.device.errors import EcgEdgeError

SSH_UNREACHABLE = 255  # ssh's own exit status for connection and authentication errors


def ssh_options(port=None, identity=None, options=(), connect_timeout=10):
    """Options shared by ssh and scp (``-P`` vs ``-p`` for the port is added by the callers)."""
    opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(connect_timeout)}"]
    if identity is not None:
        identity = Path(identity).expanduser()
        if not identity.is_file():
            raise EcgEdgeError(f"--identity {identity}: no such key file")
        opts += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
    for opt in options:
        opts += ["-o", opt]
    return opts


def _client(name):
    path = shutil.which(name)
    if path is None:
        raise EcgEdgeError(f"'{name}' not found: install the OpenSSH client (Debian: apt install openssh-client)")
    return path


def remote_install_command(remote_dir, prefix=None, install_args=()):
    """The shell command run on the device: unpack, install, clean up, keep install.sh's status."""
    d = shlex.quote(remote_dir)
    args = []
    if prefix is not None:
        args += ["--prefix", prefix]
    args += list(install_args)
    install = " ".join(shlex.quote(a) for a in ["sh", f"{remote_dir}/{TOP}/install.sh", *args])
    return (f"cd {d} && tar -xzf pack.tar.gz && {install}; status=$?; "
            f"cd / && rm -rf {d}; exit $status")


def push(pack, host, prefix=None, port=None, identity=None, options=(), install_args=(),
         connect_timeout=10, echo=print):
    """Copy ``pack`` to ``host`` and run its install.sh there; return install.sh's exit status.

    Parameters
    ----------
    pack : the ``.tar.gz`` made by ``ecgedge device pack`` (read fully here first, so a corrupted
        archive is refused before anything is copied).
    host : ``[USER@]HOST`` as ssh takes it.
    prefix : install folder on the device (install.sh's default when None).
    options : extra ``-o`` options for ssh and scp, e.g. ``StrictHostKeyChecking=accept-new``.
    install_args : further install.sh options (``--offline``, ``--systemd``, ...).

    Raises EcgEdgeError when the host cannot be reached or the copy fails (install.sh's own
    failures are its exit status, its messages already streamed).
    """
    manifest = read_pack_manifest(pack)
    ssh, scp = _client("ssh"), _client("scp")
    opts = ssh_options(port, identity, options, connect_timeout)
    ssh_cmd = [ssh, *opts] + (["-p", str(port)] if port else [])
    scp_cmd = [scp, "-q", *opts] + (["-P", str(port)] if port else [])
    echo(f"push: pack {manifest['pack_id']} ({manifest['target']['platform']}, Python "
         f"{manifest['target']['python']}) -> {host}")
    made = subprocess.run([*ssh_cmd, host, "mktemp -d /tmp/ecgedge-push.XXXXXX"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if made.returncode != 0 or not made.stdout.strip().startswith("/tmp/ecgedge-push."):
        reason = (made.stderr.strip().splitlines() or [f"exit status {made.returncode}"])[-1]
        raise EcgEdgeError(f"cannot reach {host} over ssh{f' port {port}' if port else ''}: {reason}")
    remote_dir = made.stdout.strip().splitlines()[-1]
    copied = subprocess.run([*scp_cmd, str(pack), f"{host}:{remote_dir}/pack.tar.gz"],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if copied.returncode != 0:
        subprocess.run([*ssh_cmd, host, f"rm -rf {shlex.quote(remote_dir)}"],
                       capture_output=True, stdin=subprocess.DEVNULL)
        reason = (copied.stderr.strip().splitlines() or [f"exit status {copied.returncode}"])[-1]
        raise EcgEdgeError(f"copying {pack} to {host}:{remote_dir} failed: {reason}")
    echo(f"push: copied to {host}:{remote_dir}; running install.sh")
    status = subprocess.call([*ssh_cmd, host, remote_install_command(remote_dir, prefix, install_args)],
                             stdin=subprocess.DEVNULL)
    if status == SSH_UNREACHABLE:
        raise EcgEdgeError(f"the ssh connection to {host} failed while installing (exit 255)")
    return status
