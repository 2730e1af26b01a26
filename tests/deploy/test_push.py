"""``ecgedge device push`` against a real OpenSSH server on 127.0.0.1.

The test starts Debian's ``sshd`` on a free port with a throwaway host key and user key in
tmp_path (no system configuration is used or changed, apart from creating sshd's privilege
separation folder /run/sshd when it is missing, as the ssh service would), pushes an offline
x86_64 pack and checks that it is installed into a temporary prefix through ssh.
"""

import getpass
import glob
import os
import shutil
import socket
import subprocess
import sysconfig
import time
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from ecgedge.cli import cli
from ecgedge.deploy.push import push, remote_install_command
from ecgedge.device.errors import EcgEdgeError

SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd",) if os.path.exists(p)), None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A running sshd on 127.0.0.1 that accepts only a throwaway key for the current user."""
    if SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server or client not installed (Debian: apt install openssh-server openssh-client)")
    d = tmp_path_factory.mktemp("sshd")
    keygen(d / "host_key")
    keygen(d / "user_key")
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    port, user = free_port(), getpass.getuser()
    (d / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
""")
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        os.makedirs("/run/sshd", mode=0o755)
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    if proc.poll() is not None:
        message = (d / "sshd.log").read_text().strip()
        if os.geteuid() != 0:
            pytest.skip(f"sshd could not start as a normal user: {message}")
        pytest.fail(f"sshd did not start: {message}")
    host_key = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    yield SimpleNamespace(port=port, host=f"{user}@127.0.0.1", identity=d / "user_key",
                          options=(f"UserKnownHostsFile={d}/known_hosts", "StrictHostKeyChecking=yes"), log=d / "sshd.log")
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="module")
def pack_x86(tiny_bundles, tmp_path_factory):
    """An offline pack for this machine's system python3 (the interpreter sshd's shell finds)."""
    from ecgedge.deploy.pack import build_pack

    if sysconfig.get_platform() != "linux-x86_64":
        pytest.skip("the loopback push installs an x86_64 pack")
    system_python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if system_python is None:
        pytest.skip("no python3 in /usr/local/bin:/usr/bin:/bin for install.sh on the ssh side")
    version = subprocess.run([system_python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    out = tmp_path_factory.mktemp("push_pack") / "pack.tar.gz"
    try:
        build_pack(tiny_bundles["int8"].path, out, target="linux-x86_64", python=version, offline=True)
    except EcgEdgeError as exc:
        if "downloading" in str(exc):
            pytest.skip(f"cannot download the Python {version} wheels for the pack: {exc}")
        raise
    return out


def leftovers():
    return set(glob.glob("/tmp/ecgedge-push.*"))


def test_push_installs_over_ssh(sshd, pack_x86, tmp_path, capfd):
    prefix = tmp_path / "device" / "opt" / "ecgedge"
    before = leftovers()
    res = CliRunner().invoke(cli, ["device", "push", str(pack_x86), "--host", sshd.host, "--port", str(sshd.port),
                                   "--identity", str(sshd.identity), "--prefix", str(prefix),
                                   *[a for o in sshd.options for a in ("-o", o)]])
    streamed = capfd.readouterr()
    output = res.output + streamed.out + streamed.err
    assert res.exit_code == 0, output + sshd.log.read_text()
    assert "push: copied to" in res.output
    assert "selftest: PASS: 6 windows" in output  # install.sh's output, streamed through ssh
    current = prefix / "current"
    assert current.is_symlink() and (current / ".complete").is_file()
    assert (current / "venv" / "bin" / "ecgedge").is_file()
    assert leftovers() == before  # the remote temporary folder is gone


def test_push_returns_install_status(sshd, pack_x86, tmp_path):
    """install.sh's failure is push's exit status; nothing is installed and nothing left over."""
    prefix = tmp_path / "prefix"
    before = leftovers()
    status = push(pack_x86, sshd.host, prefix=str(prefix), port=sshd.port, identity=sshd.identity,
                  options=sshd.options, install_args=["--python-is-not-an-option"], echo=lambda m: None)
    assert status == 2
    assert not prefix.exists()
    assert leftovers() == before


def test_push_unreachable_host(pack_x86, tmp_path):
    if shutil.which("ssh") is None:
        pytest.skip("no OpenSSH client")
    port = free_port()  # nothing listens there
    res = CliRunner().invoke(cli, ["device", "push", str(pack_x86), "--host", "nobody@127.0.0.1",
                                   "--port", str(port), "--timeout", "5", "-o", "StrictHostKeyChecking=no",
                                   "-o", f"UserKnownHostsFile={tmp_path / 'kh'}"])
    assert res.exit_code == 2
    assert f"Error: cannot reach nobody@127.0.0.1 over ssh port {port}:" in res.output
    assert "Connection refused" in res.output


def test_push_rejects_wrong_key(sshd, pack_x86, tmp_path):
    keygen(tmp_path / "other_key")
    with pytest.raises(EcgEdgeError, match="cannot reach .* Permission denied"):
        push(pack_x86, sshd.host, port=sshd.port, identity=tmp_path / "other_key", options=sshd.options,
             echo=lambda m: None)
    with pytest.raises(EcgEdgeError, match="no such key file"):
        push(pack_x86, sshd.host, port=sshd.port, identity=tmp_path / "missing_key", echo=lambda m: None)


def test_remote_command_quotes_arguments():
    cmd = remote_install_command("/tmp/ecgedge-push.abc", prefix="/opt/my dir", install_args=["--fs", "250"])
    assert cmd == ("cd /tmp/ecgedge-push.abc && tar -xzf pack.tar.gz && sh /tmp/ecgedge-push.abc/ecgedge-pack/install.sh "
                   "--prefix '/opt/my dir' --fs 250; status=$?; cd / && rm -rf /tmp/ecgedge-push.abc; exit $status")

