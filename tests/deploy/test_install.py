"""The pack's installer (``packfiles/install.py``): what it may write and remove under PREFIX.

Most tests load install.py in-process from a fake pack folder with its two slow steps replaced
(``install_release``: virtualenv + pip; ``run_selftest``), so the lock, the release names, the
switch of ``current``, the pruning and the systemd files run for real in a temporary prefix in
well under a second. ``test_failing_pip_install_*`` runs the real install.sh of a real pack
(the tiny int8 bundle of conftest) until pip fails, as a device would.

Every test that plants a symlink checks that its target is unchanged byte for byte.
"""

import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import ecgedge.deploy

PACKFILES = Path(ecgedge.deploy.__file__).resolve().parent / "packfiles"
INSTALL_PY = PACKFILES / "install.py"
HOST = sysconfig.get_platform()
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
PACK_ID = "0123456789ab"
FAKE_MANIFEST = {
    "format": "ecgedge-pack", "format_version": 1, "pack_id": PACK_ID,
    "target": {"platform": HOST, "python": PYTHON}, "offline": False,
    "versions": {"ecgedge": "0.1.0"}, "bundle": {"task": "fake", "sha256": "0" * 64}, "files": {},
}


def snapshot(root):
    """Everything under ``root`` without following links: {relpath: ("dir",) | ("link", target) | ("file", bytes)}."""
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", path.read_bytes())
    return out


def our_release(releases, name, complete=True, age_s=0):
    """A release folder as this installer makes it: the marker naming the folder, maybe .complete."""
    path = releases / name
    (path / "venv").mkdir(parents=True)
    (path / ".ecgedge-release").write_text(json.dumps({"release": name, "pack_id": "old"}) + "\n")
    (path / "pack.json").write_text(json.dumps({"pack_id": "old" + name[-4:]}))
    if complete:
        (path / ".complete").write_text("done\n")
        stamp = time.time() - age_s
        os.utime(path / ".complete", (stamp, stamp))
    return path


def legacy_release(releases, name, complete=True):
    """A release of the previous installer (no marker) or any folder someone put there."""
    path = releases / name
    (path / "venv").mkdir(parents=True)
    (path / "data.bin").write_bytes(b"precious\x00\x01")
    if complete:
        (path / ".complete").write_text("done\n")
    return path


@pytest.fixture
def installer(tmp_path, monkeypatch, capsys):
    """install.py of this tree run from a fake pack; returns a namespace with ``install(prefix, *args)``.

    ``fail`` ("pip" or "selftest") makes that step fail as it does on a device; ``installs``
    lists the release folders the fake pip step was given.
    """
    spec = importlib.util.spec_from_file_location("ecgedge_pack_install_under_test", INSTALL_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "pack.json").write_text(json.dumps(FAKE_MANIFEST))
    state = SimpleNamespace(module=module, pack=pack, fail=None, installs=[], real_run_selftest=module.run_selftest)

    def fake_install_release(pack_dir, manifest, release_dir, offline, index_url):
        state.installs.append(release_dir)
        os.mkdir(os.path.join(release_dir, "venv"))
        shutil.copy2(pack / "pack.json", os.path.join(release_dir, "pack.json"))
        os.mkdir(os.path.join(release_dir, "systemd"))
        for name in ("ecgedge.service", "ecgedge.logrotate"):
            shutil.copy2(PACKFILES / name, os.path.join(release_dir, "systemd", name))
        if state.fail == "pip":
            raise module.InstallError("installing ecgedge[device] (registry + pack) failed with exit status 1")
        return os.path.join(release_dir, "venv", "bin", "python")

    def fake_selftest(release_dir):
        if state.fail == "selftest":
            raise module.InstallError("self-test failed with exit status 1")

    monkeypatch.setattr(module, "HERE", str(pack))
    monkeypatch.setattr(module, "check_bundle", lambda pack_dir: {})  # the bundle's own tests are elsewhere
    monkeypatch.setattr(module, "install_release", fake_install_release)
    monkeypatch.setattr(module, "run_selftest", fake_selftest)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}

    def install(prefix, *args):
        capsys.readouterr()
        code = module.main(["--prefix", str(prefix), *map(str, args)])
        out, err = capsys.readouterr()
        return SimpleNamespace(code=code, out=out, err=err)

    state.install = install
    yield state
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def live(prefix):
    """The release PREFIX/current points at, checked to be a finished release."""
    current = prefix / "current"
    assert current.is_symlink(), "current is not a symlink"
    target = current.resolve()
    assert target.is_dir() and (target / ".complete").is_file() and (target / "pack.json").is_file(), \
        f"current -> {os.readlink(current)} is not a finished release"
    return target


def test_install_then_reinstall_is_a_noop(installer, tmp_path):
    prefix = tmp_path / "prefix"
    res = installer.install(prefix)
    assert res.code == 0, res.err
    release = live(prefix)
    assert os.readlink(prefix / "current") == f"releases/{release.name}"
    mark = json.loads((release / ".ecgedge-release").read_text())
    assert mark["release"] == release.name and mark["pack_id"] == PACK_ID
    res = installer.install(prefix)
    assert res.code == 0 and "already the current release" in res.out
    assert live(prefix) == release and len(installer.installs) == 1


@pytest.mark.parametrize("step", ["pip", "selftest"])
def test_failing_install_leaves_every_release_and_foreign_folder(installer, tmp_path, step):
    """Before: the prune ran first and removed every folder without .complete, ours or not."""
    prefix = tmp_path / "prefix"
    releases = prefix / "releases"
    live_one = our_release(releases, "0.1.0-aaaa-20250101T000000.000001-1-aaaaaa", age_s=100)
    our_release(releases, "0.1.0-bbbb-20240101T000000.000001-1-bbbbbb", age_s=200)
    our_release(releases, "0.1.0-cccc-20230101T000000.000001-1-cccccc", age_s=300)
    our_release(releases, "0.1.0-dddd-20250101T000000.000001-9-dddddd", complete=False)
    legacy_release(releases, "0.0.9-eeee-20240101T000000", complete=False)
    legacy_release(releases, "my-backup", complete=False)
    os.symlink("releases/" + live_one.name, prefix / "current")
    (prefix / ".install.lock").write_bytes(b"")
    before = snapshot(prefix)
    installer.fail = step
    res = installer.install(prefix, "--keep", "1")
    assert res.code == 2
    assert res.err.startswith("install: error: ") and res.err.count("\n") == 1
    assert len(installer.installs) == 1
    assert snapshot(prefix) == before  # the failed release is gone, nothing else changed
    assert live(prefix) == live_one.resolve()


def test_success_prunes_only_releases_this_installer_made(installer, tmp_path):
    prefix = tmp_path / "prefix"
    releases = prefix / "releases"
    outside = tmp_path / "outside"
    decoy = our_release(outside, "0.1.0-ffff-20200101T000000.000001-1-ffffff", complete=False)
    live_one = our_release(releases, "0.1.0-aaaa-20200101T000000.000001-1-aaaaaa", age_s=900)  # oldest, yet live
    newer = our_release(releases, "0.1.0-bbbb-20240101T000000.000001-1-bbbbbb", age_s=100)
    older = our_release(releases, "0.1.0-cccc-20230101T000000.000001-1-cccccc", age_s=300)
    killed = our_release(releases, "0.1.0-dddd-20250101T000000.000001-9-dddddd", complete=False)
    copied = our_release(releases, "copy-of-a-release", age_s=1000)  # marker names another folder
    shutil.rmtree(copied)
    shutil.copytree(older, copied)
    legacy = legacy_release(releases, "0.0.9-eeee-20240101T000000")
    os.symlink(outside / decoy.name, releases / decoy.name)
    os.symlink("releases/" + live_one.name, prefix / "current")
    outside_before = snapshot(outside)
    res = installer.install(prefix, "--keep", "2", "--force")
    assert res.code == 0, res.err
    new = live(prefix)
    left = sorted(p.name for p in releases.iterdir())
    # Kept: the new release, the one that was live (a service may still run from it), and
    # everything the installer did not make. Removed: its own older and unfinished releases.
    assert left == sorted([new.name, live_one.name, copied.name, legacy.name, decoy.name])
    assert not newer.exists() and not older.exists() and not killed.exists()
    assert snapshot(outside) == outside_before
    assert "left alone in" in res.out and legacy.name in res.out


def test_keep_counts_the_new_and_the_previous_release(installer, tmp_path):
    prefix = tmp_path / "prefix"
    names = []
    for _ in range(4):
        assert installer.install(prefix, "--force", "--keep", "3").code == 0
        names.append(live(prefix).name)
    assert len(set(names)) == 4
    assert sorted(p.name for p in (prefix / "releases").iterdir()) == sorted(names[1:])


def test_symlinked_releases_is_refused_and_its_target_untouched(installer, tmp_path):
    """Before: the prune listed the link's target and removed its folders without .complete."""
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    elsewhere = tmp_path / "elsewhere"
    our_release(elsewhere, "0.1.0-aaaa-20250101T000000.000001-1-aaaaaa", complete=False)
    our_release(elsewhere, "0.1.0-bbbb-20240101T000000.000001-1-bbbbbb", age_s=1000)
    our_release(elsewhere, "0.1.0-cccc-20230101T000000.000001-1-cccccc", age_s=2000)
    legacy_release(elsewhere, "photos", complete=False)
    os.symlink(elsewhere, prefix / "releases")
    before = snapshot(elsewhere)
    for args in ((), ("--force", "--keep", "1")):
        res = installer.install(prefix, *args)
        assert snapshot(elsewhere) == before
        assert res.code == 2
        assert f"install: error: {prefix}/releases (the release folder) is a symlink to {elsewhere}" in res.err
    assert installer.installs == [] and not (prefix / "current").exists()


def test_symlinked_or_hard_linked_lock_changes_no_other_file(installer, tmp_path):
    """Before: open(".install.lock", "w") followed the link and truncated its target."""
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    victim = tmp_path / "victim.conf"
    victim.write_bytes(b"important = yes\n" * 10)
    os.symlink(victim, prefix / ".install.lock")
    res = installer.install(prefix)
    assert victim.read_bytes() == b"important = yes\n" * 10
    assert res.code == 2 and "install: error: " in res.err and ".install.lock is a symlink" in res.err
    assert installer.installs == []
    (prefix / ".install.lock").unlink()
    os.link(victim, prefix / ".install.lock")
    res = installer.install(prefix)
    assert res.code == 2 and "is not a plain file of its own" in res.err
    assert victim.read_bytes() == b"important = yes\n" * 10
    # A lock file left by an earlier install keeps its bytes too (no O_TRUNC).
    (prefix / ".install.lock").unlink()
    (prefix / ".install.lock").write_bytes(b"left by pid 42\n")
    assert installer.install(prefix).code == 0
    assert (prefix / ".install.lock").read_bytes() == b"left by pid 42\n"


def test_lock_is_exclusive(installer, tmp_path):
    import fcntl

    prefix = tmp_path / "prefix"
    prefix.mkdir()
    with open(prefix / ".install.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        res = installer.install(prefix)
    assert res.code == 2 and f"another install is running in {prefix}" in res.err
    assert installer.installs == []


def test_same_second_force_reinstall_keeps_current_valid(installer, tmp_path, monkeypatch):
    """Before: both installs got the same folder name; the second failed on it and removed the
    live release, leaving ``current`` dangling."""
    real = installer.module.time
    frozen = 1_750_000_000.25
    monkeypatch.setattr(installer.module, "time", SimpleNamespace(
        time=lambda: frozen, localtime=real.localtime,
        strftime=lambda fmt, t=None: real.strftime(fmt, real.localtime(frozen) if t is None else t)))
    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb", "bbbbbb", "cccccc"])  # every name tried twice
    monkeypatch.setattr(installer.module, "secrets", SimpleNamespace(
        token_hex=lambda n: next(suffixes) if n == 3 else secrets.token_hex(n)), raising=False)
    prefix = tmp_path / "prefix"
    assert installer.install(prefix).code == 0
    first = live(prefix)
    res = installer.install(prefix, "--force")
    assert res.code == 0, res.err
    second = live(prefix)
    assert second != first and first.is_dir() and second.name.endswith("-bbbbbb")
    installer.fail = "selftest"
    res = installer.install(prefix, "--force")
    assert res.code == 2 and "self-test failed" in res.err
    assert live(prefix) == second and first.is_dir()
    assert len(installer.installs) == 3 and not Path(installer.installs[-1]).exists()


def test_current_that_is_not_a_link_is_refused_before_installing(installer, tmp_path):
    prefix = tmp_path / "prefix"
    (prefix / "current").mkdir(parents=True)
    (prefix / "current" / "notes.txt").write_text("mine")
    res = installer.install(prefix)
    assert res.code == 2 and f"{prefix}/current is not a symlink" in res.err
    assert installer.installs == [] and (prefix / "current" / "notes.txt").read_text() == "mine"


def systemd_args(tmp_path, **values):
    units = tmp_path / "units"
    options = {"source": "/dev/ttyACM0", "fs": "250", "systemd-dir": units / "systemd",
               "logrotate-dir": units / "logrotate", "log-dir": units / "log"}
    options.update({k.replace("_", "-"): v for k, v in values.items()})
    args = ["--systemd"]
    for key, value in options.items():
        args.append(f"--{key}={value}")  # one word, so a value may start with "-"
    return args, units


@pytest.mark.parametrize("option, value, message", [
    ("user", "root\nExecStartPre=/bin/touch /tmp/pwned", "--user 'root\\nExecStartPre=/bin/touch"),
    ("user", "-rf", "is not a user name"),
    ("user", "a" * 40, "is not a user name"),
    ("run_args", "--summary\nExecStartPost=/bin/rm -rf /", "--run-args '--summary\\nExecStartPost="),
    ("run_args", "--summary\rUser=root", "holds a control character"),
    ("run_args", "--tag \x00x", "holds a control character"),
    ("run_args", "--tag \u2028x", "holds a control character"),
    ("run_args", "--tag 'unclosed", "cannot be split into words"),
    ("source", "/dev/ttyACM0\nUser=root", "--source '/dev/ttyACM0\\nUser=root' cannot go into the systemd unit"),
    ("source", "ttyACM0", "give an absolute path"),
    ("source", "/dev/../etc/shadow", "give an absolute path"),
    ("log_dir", "/var/log/ecg edge", "--log-dir '/var/log/ecg edge' cannot go into the systemd unit"),
    ("log_size", "10M\n    postrotate", "--log-size must be a number"),
    ("fs", "nan", "--fs must be a finite rate"),
    ("fs", "inf", "--fs must be a finite rate"),
])
def test_unit_values_are_checked_before_anything_is_installed(installer, tmp_path, option, value, message):
    """Before: a newline in a value became another directive of the unit (and the install ran)."""
    args, units = systemd_args(tmp_path, **{option: value})
    prefix = tmp_path / "prefix"
    res = installer.install(prefix, *args)
    assert res.code == 2
    assert res.err.startswith("install: error: ") and res.err.count("\n") == 1, res.err
    assert message in res.err
    assert installer.installs == [] and not prefix.exists() and not units.exists()


def test_run_args_are_quoted_by_systemd_rules(installer, tmp_path):
    run_args = """--summary --predictions "/var/log/a b.jsonl" --tag 50%$HOME --note 'say "hi" \\o/' ;"""
    args, units = systemd_args(tmp_path, run_args=run_args, baud="115200", user="ecg-user")
    prefix = tmp_path / "prefix"
    res = installer.install(prefix, *args)
    assert res.code == 0, res.err
    unit = (units / "systemd" / "ecgedge.service").read_text()
    template = (PACKFILES / "ecgedge.service").read_text()
    assert len(unit.splitlines()) == len(template.splitlines())  # no value added a line
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start == (
        f"ExecStart={prefix}/current/venv/bin/ecgedge device run --bundle {prefix}/current/bundle "
        "--input - --fs 250.0 --summary --predictions \"/var/log/a b.jsonl\" --tag \"50%%$$HOME\" "
        "--note \"say \\\"hi\\\" \\\\o/\" \\;")
    assert "User=ecg-user\n" in unit and "ExecStartPre=/bin/stty -F /dev/ttyACM0 115200 raw -echo\n" in unit
    assert "@" not in unit
    rotate = (units / "logrotate" / "ecgedge").read_text()
    assert f"{units}/log/rhythm.jsonl {{" in rotate and "size 10M" in rotate


def test_a_pack_with_trusted_keys_makes_the_unit_and_the_selftest_require_a_signature(installer, tmp_path,
                                                                                      monkeypatch):
    args, units = systemd_args(tmp_path)
    prefix = tmp_path / "prefix"
    assert installer.install(prefix, *args).code == 0
    assert "ECGEDGE_TRUSTED_KEYS" not in (units / "systemd" / "ecgedge.service").read_text()
    (installer.pack / "trusted-keys").mkdir()
    assert installer.install(prefix, "--force", *args).code == 0
    unit = (units / "systemd" / "ecgedge.service").read_text()
    assert f"Environment=ECGEDGE_TRUSTED_KEYS={prefix}/current/trusted-keys\n" in unit
    # The real self-test step: the release's ecgedge checks the signature against its trusted-keys/.
    calls = []
    monkeypatch.setattr(installer.module, "run_checked", lambda cmd, what, env=None: calls.append((what, env)))
    release = tmp_path / "release"
    release.mkdir()
    installer.real_run_selftest(str(release))
    (release / "trusted-keys").mkdir()
    installer.real_run_selftest(str(release))
    assert calls[0] == ("self-test", None)
    assert calls[1][0] == "self-test and bundle signature"
    assert calls[1][1]["ECGEDGE_TRUSTED_KEYS"] == str(release / "trusted-keys")


def test_values_are_substituted_once(installer, tmp_path):
    """A value that looks like a placeholder stays as it is (before: later keys replaced it)."""
    args, units = systemd_args(tmp_path, source="/dev/@RUN_ARGS@", run_args="--summary")
    res = installer.install(tmp_path / "prefix", *args)
    assert res.code == 0, res.err
    unit = (units / "systemd" / "ecgedge.service").read_text()
    assert "StandardInput=file:/dev/@RUN_ARGS@\n" in unit


def test_unit_files_are_not_written_through_links(installer, tmp_path):
    """Before: the unit went to ``ecgedge.service.tmp`` opened with open("w"), link followed."""
    args, units = systemd_args(tmp_path)
    systemd_dir = units / "systemd"
    systemd_dir.mkdir(parents=True)
    victims = {name: tmp_path / f"victim-{name}" for name in ("tmp", "unit")}
    for victim in victims.values():
        victim.write_bytes(b"do not touch\n")
    os.symlink(victims["tmp"], systemd_dir / "ecgedge.service.tmp")
    os.symlink(victims["unit"], systemd_dir / "ecgedge.service")
    res = installer.install(tmp_path / "prefix", *args)
    assert res.code == 0, res.err
    assert all(v.read_bytes() == b"do not touch\n" for v in victims.values())
    unit = systemd_dir / "ecgedge.service"
    assert not unit.is_symlink() and unit.read_text().startswith("# ecgedge rhythm")
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in systemd_dir.iterdir()) == ["ecgedge.service", "ecgedge.service.tmp"]


# --- the real install.sh of a real pack --------------------------------------------------------

@pytest.fixture(scope="module")
def real_pack(tiny_bundle, tmp_path_factory):
    """A pack of the tiny int8 bundle for this machine (no dependency wheels)."""
    if HOST not in ("linux-x86_64", "linux-aarch64"):
        pytest.skip(f"packs target Linux x86_64 or aarch64, this is {HOST}")
    from ecgedge.deploy.pack import build_pack

    out = tmp_path_factory.mktemp("install_pack") / "pack.tar.gz"
    build_pack(tiny_bundle.path, out)
    return out


def test_failing_pip_install_leaves_releases_intact(real_pack, tmp_path):
    """install.sh as on a device: pip finds no numpy among the pack's wheels (--offline) and fails."""
    with tarfile.open(real_pack, "r:gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    pack_dir = tmp_path / "x" / "ecgedge-pack"
    manifest = json.loads((pack_dir / "pack.json").read_text())
    manifest["offline"] = True  # pack.json itself is not hashed; pip now gets --no-index
    (pack_dir / "pack.json").write_text(json.dumps(manifest))
    prefix = tmp_path / "prefix"
    releases = prefix / "releases"
    live_one = our_release(releases, "0.1.0-aaaa-20250101T000000.000001-1-aaaaaa", age_s=100)
    our_release(releases, "0.1.0-dddd-20250101T000000.000001-9-dddddd", complete=False)
    legacy_release(releases, "0.0.9-eeee-20240101T000000", complete=False)
    legacy_release(releases, "my-backup", complete=False)
    os.symlink("releases/" + live_one.name, prefix / "current")
    (prefix / ".install.lock").write_bytes(b"")
    before = snapshot(prefix)
    env = dict(os.environ, ECGEDGE_PYTHON=sys.executable, PIP_CONFIG_FILE=os.devnull)
    res = subprocess.run(["sh", str(pack_dir / "install.sh"), "--prefix", str(prefix), "--keep", "1"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "install: error: installing ecgedge[device] from the pack's wheels failed" in res.stderr
    assert "removing the unfinished release" in res.stdout
    assert snapshot(prefix) == before
