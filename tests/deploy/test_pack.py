"""``ecgedge device pack`` and the pack's install.sh: contents, hashes, and every refusal.

The packs are built from the tiny int8 bundle of conftest (``tiny_bundles``). The refusal tests
run install.sh only as far as its checks (no wheel is installed), so they are fast; the real
offline install on this x86_64 machine downloads the x86_64 wheels once and is marked slow.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ecgedge.cli import cli
from ecgedge.deploy.pack import TOP, build_pack, read_pack_manifest, synthetic_ecg
from ecgedge.device.errors import EcgEdgeError
from ecgedge.device.selftest import run_selftest

HOST = sysconfig.get_platform()
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def int8_bundle(tiny_bundles):
    return tiny_bundles["int8"]


@pytest.fixture(scope="session")
def online_pack(int8_bundle, tmp_path_factory):
    """A pack for this machine without dependency wheels (no network needed to build it)."""
    out = tmp_path_factory.mktemp("online_pack") / "pack.tar.gz"
    if HOST not in ("linux-x86_64", "linux-aarch64"):
        pytest.skip(f"packs target Linux x86_64 or aarch64, this is {HOST}")
    manifest = build_pack(int8_bundle.path, out)
    return out, manifest


@pytest.fixture
def unpacked(online_pack, tmp_path):
    """The online pack unpacked into tmp_path; returns the ecgedge-pack folder."""
    with tarfile.open(online_pack[0], "r:gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    return tmp_path / "x" / TOP


def install_sh(pack_dir, prefix, *args, env=None):
    """Run the pack's install.sh with this interpreter; return the CompletedProcess."""
    full_env = dict(os.environ, ECGEDGE_PYTHON=sys.executable, **(env or {}))
    return subprocess.run(["sh", str(pack_dir / "install.sh"), "--prefix", str(prefix), *args],
                          capture_output=True, text=True, env=full_env, timeout=600)


def assert_nothing_installed(prefix):
    """No current link and no release folder left behind under prefix."""
    assert not (prefix / "current").exists()
    releases = prefix / "releases"
    assert not releases.exists() or list(releases.iterdir()) == []


def test_pack_contents_and_hashes(online_pack, int8_bundle):
    path, manifest = online_pack
    with tarfile.open(path, "r:gz") as tar:
        names = {m.name for m in tar.getmembers() if m.isfile()}
        data = {n: tar.extractfile(n).read() for n in names}
    rel = {n[len(TOP) + 1:] for n in names}
    wheel = f"wheels/ecgedge-{manifest['versions']['ecgedge']}-py3-none-any.whl"
    assert {"install.sh", "install.py", "pack.json", "requirements.txt", "selftest.npz", "README.txt",
            "bundle/model.tflite", "bundle/model.json", "systemd/ecgedge.service",
            "systemd/ecgedge.logrotate", wheel} == rel
    listed = json.loads(data[f"{TOP}/pack.json"])
    assert set(listed["files"]) == rel - {"pack.json"}
    for name, entry in listed["files"].items():
        blob = data[f"{TOP}/{name}"]
        assert entry == {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}, name
    assert listed["bundle"]["sha256"] == int8_bundle.manifest["sha256"] == hashlib.sha256(
        data[f"{TOP}/bundle/model.tflite"]).hexdigest()
    assert listed["target"] == {**listed["target"], "platform": HOST, "python": PYTHON}
    assert listed["offline"] is False
    from importlib.metadata import version
    assert listed["requirements"] == [f"numpy=={version('numpy')}", f"ai-edge-litert=={version('ai-edge-litert')}"]
    assert "tflite-runtime" in data[f"{TOP}/requirements.txt"].decode()
    # The wheel is the package with the device extra and the installer files.
    import io
    import zipfile
    with zipfile.ZipFile(io.BytesIO(data[f"{TOP}/{wheel}"])) as whl:
        files = set(whl.namelist())
        meta = next(n for n in files if n.endswith(".dist-info/METADATA"))
        assert "Provides-Extra: device" in whl.read(meta).decode()
    assert {"ecgedge/device/runtime.py", "ecgedge/deploy/packfiles/install.py"} <= files
    assert not any(n.startswith(("tests/", "ecgedge/tests/")) for n in files)


def test_pack_of_a_bundle_with_a_rhythm_head_carries_the_head(rhythm_bundle, tmp_path):
    if HOST not in ("linux-x86_64", "linux-aarch64"):
        pytest.skip(f"packs target Linux x86_64 or aarch64, this is {HOST}")
    build_pack(rhythm_bundle.path, tmp_path / "pack.tar.gz")
    with tarfile.open(tmp_path / "pack.tar.gz", "r:gz") as tar:
        head = tar.extractfile(f"{TOP}/bundle/rhythm_head.npz").read()
    assert head == rhythm_bundle.rhythm_head_path.read_bytes()


def test_selftest_windows_match_the_runtime(online_pack, int8_bundle, tmp_path):
    """selftest.npz holds what the runtime says of its windows, and selftest agrees exactly."""
    from ecgedge.device.runtime import Classifier

    path, manifest = online_pack
    with tarfile.open(path, "r:gz") as tar:
        tar.extract(f"{TOP}/selftest.npz", tmp_path, filter="data")
    stored = np.load(tmp_path / TOP / "selftest.npz")
    assert stored["x"].shape == (6, int(round(int8_bundle.window_s * 360)))
    np.testing.assert_array_equal(stored["x"], synthetic_ecg(6, int8_bundle.window_s, 360.0, 0))
    results = Classifier(int8_bundle).classify_windows(stored["x"], 360.0)
    assert [r.label for r in results] == list(stored["labels"]) == manifest["selftest"]["labels"]
    np.testing.assert_array_equal(np.stack([r.probs for r in results]), stored["probs"])
    report = run_selftest(int8_bundle.path, tmp_path / TOP / "selftest.npz")
    assert report["ok"] and report["labels_equal"] and report["max_abs_diff"] == 0.0 and report["n"] == 6


def test_selftest_reports_mismatch_and_foreign_windows(online_pack, int8_bundle, tmp_path):
    with tarfile.open(online_pack[0], "r:gz") as tar:
        tar.extract(f"{TOP}/selftest.npz", tmp_path, filter="data")
    stored = dict(np.load(tmp_path / TOP / "selftest.npz"))
    shifted = dict(stored, probs=stored["probs"] + 0.2)  # far beyond the 16-step tolerance
    np.savez(tmp_path / "shifted.npz", **shifted)
    runner = CliRunner()
    res = runner.invoke(cli, ["device", "selftest", "--bundle", str(int8_bundle.path),
                              "--windows", str(tmp_path / "shifted.npz")])
    assert res.exit_code == 1, res.output
    assert "MISMATCH" in res.output and "selftest: FAIL: 6 windows" in res.output
    np.savez(tmp_path / "foreign.npz", **dict(stored, bundle_sha256=np.array("0" * 64)))
    res = runner.invoke(cli, ["device", "selftest", "--bundle", str(int8_bundle.path),
                              "--windows", str(tmp_path / "foreign.npz")])
    assert res.exit_code == 2 and "recorded for another model" in res.output


def test_pack_refuses_tampered_bundle(int8_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(int8_bundle.path, bundle)
    model = bundle / "model.tflite"
    blob = bytearray(model.read_bytes())
    blob[-1] ^= 0xFF
    model.write_bytes(bytes(blob))
    res = CliRunner().invoke(cli, ["device", "pack", str(bundle), "--out", str(tmp_path / "p.tar.gz")])
    assert res.exit_code == 2
    assert "does not match its manifest" in res.output
    assert not (tmp_path / "p.tar.gz").exists()


def test_pack_rejects_bad_options(int8_bundle, tmp_path):
    with pytest.raises(EcgEdgeError, match="--python must be MAJOR.MINOR"):
        build_pack(int8_bundle.path, tmp_path / "p.tar.gz", python="3")
    with pytest.raises(EcgEdgeError, match="name it \\*.tar.gz"):
        build_pack(int8_bundle.path, tmp_path / "p.zip")


def test_install_refuses_tampered_model(unpacked, tmp_path):
    """A model swapped together with its bundle manifest still fails the pack's own hashes."""
    model = unpacked / "bundle" / "model.tflite"
    blob = bytearray(model.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    model.write_bytes(bytes(blob))
    meta = json.loads((unpacked / "bundle" / "model.json").read_text())
    meta["sha256"] = sha256(model)
    (unpacked / "bundle" / "model.json").write_text(json.dumps(meta))
    res = install_sh(unpacked, tmp_path / "prefix")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "install: error: bundle/model.json does not match the sha256 in pack.json" in res.stderr
    assert_nothing_installed(tmp_path / "prefix")


def test_install_refuses_extra_wheel(unpacked, tmp_path):
    (unpacked / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"PK")
    res = install_sh(unpacked, tmp_path / "prefix")
    assert res.returncode == 2
    assert "wheels/evil-1.0-py3-none-any.whl is in the pack folder but not in pack.json" in res.stderr
    assert_nothing_installed(tmp_path / "prefix")


@pytest.mark.parametrize("key, value, message", [
    ("platform", "linux-armv7l", f"this pack is for linux-armv7l but this Python runs on {HOST}"),
    ("python", "3.9", f"this pack is for Python 3.9 but {sys.executable} is Python {PYTHON}"),
])
def test_install_refuses_wrong_platform_or_python(unpacked, tmp_path, key, value, message):
    manifest = json.loads((unpacked / "pack.json").read_text())
    manifest["target"][key] = value
    (unpacked / "pack.json").write_text(json.dumps(manifest))
    res = install_sh(unpacked, tmp_path / "prefix")
    assert res.returncode == 2
    assert message in res.stderr
    assert_nothing_installed(tmp_path / "prefix")


def test_install_offline_needs_offline_pack(unpacked, tmp_path):
    res = install_sh(unpacked, tmp_path / "prefix", "--offline")
    assert res.returncode == 2
    assert "--offline needs a pack built with `ecgedge device pack --offline`" in res.stderr


def test_install_sh_without_python(unpacked, tmp_path):
    res = subprocess.run(["/bin/sh", str(unpacked / "install.sh")], capture_output=True, text=True,
                         env={"PATH": str(tmp_path)})  # a PATH without python3
    assert res.returncode == 2
    assert "python3 not found" in res.stderr


def test_install_refuses_when_no_space(unpacked, tmp_path):
    """A prefix on a 4 MiB tmpfs: refused before anything is written, nothing left behind."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        res = install_sh(unpacked, mnt / "prefix")
        assert res.returncode == 2
        assert "install: error: no space left:" in res.stderr and "MiB free" in res.stderr
        assert not (mnt / "prefix").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_corrupted_archive_is_refused(online_pack, tmp_path):
    blob = bytearray(online_pack[0].read_bytes())
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(bytes(blob[: len(blob) // 2]))
    flipped = tmp_path / "flipped.tar.gz"
    blob[len(blob) // 3] ^= 0xFF
    flipped.write_bytes(bytes(blob))
    for bad in (truncated, flipped):
        with pytest.raises(EcgEdgeError, match="is not a readable pack archive"):
            read_pack_manifest(bad)
        res = CliRunner().invoke(cli, ["device", "push", str(bad), "--host", "nobody@127.0.0.1"])
        assert res.exit_code == 2 and "is not a readable pack archive" in res.output
    with pytest.raises(EcgEdgeError, match="not found"):
        read_pack_manifest(tmp_path / "missing.tar.gz")


def test_edited_archive_is_refused(online_pack, tmp_path):
    """A well-formed archive whose model was swapped fails the manifest check before any copy."""
    with tarfile.open(online_pack[0], "r:gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    model = tmp_path / "x" / TOP / "bundle" / "model.tflite"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    edited = tmp_path / "edited.tar.gz"
    with tarfile.open(edited, "w:gz") as tar:
        tar.add(tmp_path / "x" / TOP, arcname=TOP)
    with pytest.raises(EcgEdgeError, match="bundle/model.tflite do not match pack.json"):
        read_pack_manifest(edited)


@pytest.fixture(scope="session")
def offline_pack(int8_bundle, tmp_path_factory):
    """An offline pack for this machine: downloads this platform's wheels (registry needed)."""
    if HOST != "linux-x86_64":
        pytest.skip(f"the offline install test targets linux-x86_64, this is {HOST}")
    out = tmp_path_factory.mktemp("offline_pack") / "pack-x86_64.tar.gz"
    try:
        manifest = build_pack(int8_bundle.path, out, target="linux-x86_64", python=PYTHON, offline=True)
    except EcgEdgeError as exc:
        if "downloading" in str(exc) and ("connection" in str(exc).lower() or "resolve" in str(exc).lower()):
            pytest.skip(f"no package registry reachable to download wheels: {exc}")
        raise
    return out, manifest


@pytest.mark.slow
def test_offline_install_x86_64(offline_pack, tmp_path):
    """Install from the pack's wheels only (index off), self-test, reinstall, systemd files."""
    path, manifest = offline_pack
    wheels = sorted(n for n in manifest["files"] if n.startswith("wheels/"))
    assert any(n.startswith("wheels/numpy-") for n in wheels) and any(n.startswith("wheels/ai_edge_litert-") for n in wheels)
    assert any(n.startswith("wheels/pip-") for n in wheels)
    with tarfile.open(path, "r:gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    pack_dir, prefix = tmp_path / "x" / TOP, tmp_path / "prefix"
    # An unreachable index proves nothing comes from the network.
    res = install_sh(pack_dir, prefix, env={"PIP_INDEX_URL": "http://127.0.0.1:9/simple"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "selftest: PASS: 6 windows" in res.stdout
    current = prefix / "current"
    assert current.is_symlink() and (current / ".complete").is_file()
    assert (current / "bundle" / "model.tflite").read_bytes() == (pack_dir / "bundle" / "model.tflite").read_bytes()
    ecgedge = current / "venv" / "bin" / "ecgedge"
    out = subprocess.run([str(ecgedge), "device", "selftest", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["n"] == 6 and report["max_abs_diff"] == 0.0
    # The venv is isolated from this one: ecgedge and numpy come from the release.
    probe = subprocess.run([str(current / "venv" / "bin" / "python"), "-c",
                            "import ecgedge, numpy, ai_edge_litert; print(ecgedge.__file__); print(numpy.__version__)"],
                           capture_output=True, text=True)
    assert str(prefix) in Path(probe.stdout.splitlines()[0]).resolve().as_posix()
    assert f"numpy=={probe.stdout.splitlines()[1]}" in manifest["requirements"]
    # Installing the same pack again only checks it; with --systemd it writes the unit.
    units = tmp_path / "units"
    res = install_sh(pack_dir, prefix, "--systemd", "--source", "/dev/ttyACM0", "--fs", "250", "--baud", "115200",
                     "--systemd-dir", str(units / "systemd"), "--logrotate-dir", str(units / "logrotate"),
                     "--log-dir", str(units / "log"))
    assert res.returncode == 0, res.stderr
    assert "already the current release" in res.stdout
    unit = (units / "systemd" / "ecgedge.service").read_text()
    assert f"ExecStart={prefix}/current/venv/bin/ecgedge device run --bundle {prefix}/current/bundle --input - --fs 250.0" in unit
    assert "StandardInput=file:/dev/ttyACM0" in unit and f"StandardOutput=append:{units}/log/rhythm.jsonl" in unit
    assert "ExecStartPre=/bin/stty -F /dev/ttyACM0 115200 raw -echo" in unit and "@" not in unit
    assert f"{units}/log/rhythm.jsonl {{" in (units / "logrotate" / "ecgedge").read_text()
    # --force builds a second release; a failing self-test leaves the first one current.
    first = current.resolve()
    stored = np.load(pack_dir / "selftest.npz")
    np.savez(pack_dir / "selftest.npz", **dict(stored, probs=stored["probs"] + 0.5))
    entry = json.loads((pack_dir / "pack.json").read_text())
    entry["files"]["selftest.npz"] = {"sha256": sha256(pack_dir / "selftest.npz"),
                                      "bytes": (pack_dir / "selftest.npz").stat().st_size}
    (pack_dir / "pack.json").write_text(json.dumps(entry))
    res = install_sh(pack_dir, prefix, "--force")
    assert res.returncode == 2 and "install: error: self-test failed with exit status 1" in res.stderr
    assert current.resolve() == first and [p.resolve() for p in (prefix / "releases").iterdir()] == [first]


def test_pack_out_is_not_written_through_links(online_pack, int8_bundle, tmp_path):
    """Before: the archive went to a fixed ``.NAME.partial`` opened with open("wb"): a symlink
    planted there had its target overwritten, and the rename made ``out`` that symlink."""
    path, manifest = online_pack
    wheel_name = f"ecgedge-{manifest['versions']['ecgedge']}-py3-none-any.whl"
    with tarfile.open(path, "r:gz") as tar:
        (tmp_path / wheel_name).write_bytes(tar.extractfile(f"{TOP}/wheels/{wheel_name}").read())
    shared = tmp_path / "shared"
    shared.mkdir()
    victims = {name: tmp_path / f"victim-{name}" for name in ("partial", "out")}
    for victim in victims.values():
        victim.write_bytes(b"do not touch\n")
    os.symlink(victims["partial"], shared / ".pack.tar.gz.partial")
    os.symlink(victims["out"], shared / "pack.tar.gz")
    res = CliRunner().invoke(cli, ["device", "pack", str(int8_bundle.path), "--out", str(shared / "pack.tar.gz"),
                                   "--wheel", str(tmp_path / wheel_name), "--json"])
    assert res.exit_code == 0, res.output
    assert all(v.read_bytes() == b"do not touch\n" for v in victims.values())
    out = shared / "pack.tar.gz"
    assert not out.is_symlink() and read_pack_manifest(out)["pack_id"] == json.loads(res.output)["pack_id"]
    archive = json.loads(res.output)["archive"]
    assert archive == {"path": str(out), "bytes": out.stat().st_size, "sha256": sha256(out)}
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert sorted(p.name for p in shared.iterdir()) == [".pack.tar.gz.partial", "pack.tar.gz"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fake_install(site, files, record_extra=()):
    """An installed distribution as pip leaves it: files under ``site`` and a RECORD with their hashes."""
    from ecgedge.deploy.pack import _record_hash

    info = "ecgedge-9.8.7.dist-info"
    files = {**files, f"{info}/METADATA": b"Metadata-Version: 2.1\nName: ecgedge\nVersion: 9.8.7\n",
             f"{info}/INSTALLER": b"pip\n", f"{info}/direct_url.json": b'{"url": "file:///src"}',
             f"{info}/entry_points.txt": b"[console_scripts]\necgedge = ecgedge.cli:main\n",
             f"{info}/top_level.txt": b"ecgedge\n", f"{info}/WHEEL": b"Wheel-Version: 1.0\nTag: py3-none-any\n"}
    lines = []
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
        lines.append(f"{rel},{_record_hash(data)},{len(data)}")
    lines += [*record_extra, f"{info}/RECORD,,"]
    (site / info / "RECORD").write_text("\n".join(lines) + "\n")
    return site / info


def test_installed_wheel_rebuilds_the_package_from_its_record(tmp_path):
    import zipfile
    from importlib import metadata

    from ecgedge.deploy.pack import installed_wheel

    site = tmp_path / "site"
    package = {"ecgedge/__init__.py": b"", "ecgedge/cli.py": b"def main():\n    return 0\n",
               "ecgedge/device/runtime.py": b"X = 1\n", "ecgedge/deploy/packfiles/install.sh": b"#!/bin/sh\n",
               "ecgedge/__pycache__/cli.cpython-311.pyc": b"\x00bytecode",
               "other_project/__init__.py": b"# not ours\n"}
    info = _fake_install(site, package, record_extra=["../../../bin/ecgedge,sha256=abc,10"])
    (tmp_path / "out").mkdir()
    wheel = installed_wheel(tmp_path / "out", metadata.Distribution.at(info))
    assert wheel.name == "ecgedge-9.8.7-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        blobs = {n: whl.read(n) for n in names}
    meta = "ecgedge-9.8.7.dist-info"
    assert names == ["ecgedge/__init__.py", "ecgedge/cli.py", "ecgedge/deploy/packfiles/install.sh",
                     "ecgedge/device/runtime.py", f"{meta}/METADATA", f"{meta}/WHEEL",
                     f"{meta}/entry_points.txt", f"{meta}/top_level.txt", f"{meta}/RECORD"]
    for rel in ("ecgedge/cli.py", "ecgedge/device/runtime.py"):
        assert blobs[rel] == package[rel]
    assert b"Tag: py3-none-any\n" in blobs[f"{meta}/WHEEL"] and b"Root-Is-Purelib: true\n" in blobs[f"{meta}/WHEEL"]
    record = blobs[f"{meta}/RECORD"].decode().splitlines()
    assert record[-1] == f"{meta}/RECORD,,"
    import base64
    for line in record[:-1]:
        name, digest, size = line.split(",")
        data = blobs[name]
        assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert int(size) == len(data)
    assert sorted(line.split(",")[0] for line in record) == sorted(names)
    # The same install gives the same bytes; an installed file edited since is refused.
    (tmp_path / "out2").mkdir()
    again = installed_wheel(tmp_path / "out2", metadata.Distribution.at(info))
    assert again.read_bytes() == wheel.read_bytes()
    (site / "ecgedge" / "device" / "runtime.py").write_bytes(b"X = 2\n")
    with pytest.raises(EcgEdgeError, match="installed file ecgedge/device/runtime.py differs from its sha256 in RECORD"):
        installed_wheel(tmp_path / "out", metadata.Distribution.at(info))
    (info / "RECORD").unlink()
    with pytest.raises(EcgEdgeError, match="lists no files"):
        installed_wheel(tmp_path / "out", metadata.Distribution.at(info))


def test_pack_from_a_non_editable_install(int8_bundle, tmp_path):
    """``pip install ecgedge`` (not editable) into a fresh virtualenv, then ``ecgedge device pack``.

    About 2 s here (no download: the project is built without isolation, the dependencies come
    from this environment), so it is part of the default suite.

    Before: "ecgedge is not installed from a source tree; pass a built wheel with --wheel FILE".
    The virtualenv sees this one's dependencies through a .pth line (no network), not its
    editable ecgedge; the project is built from a copy of the tree (nothing written into it).
    """
    from ecgedge.deploy.pack import SOURCE_IGNORE, source_root

    if HOST not in ("linux-x86_64", "linux-aarch64"):
        pytest.skip(f"packs target Linux x86_64 or aarch64, this is {HOST}")
    src = tmp_path / "src"
    shutil.copytree(source_root(), src, ignore=SOURCE_IGNORE)
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = sysconfig.get_paths()["purelib"]
    (site / "zz_host_dependencies.pth").write_text(deps + "\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    # --ignore-installed: pip must not look at (or try to remove) the editable ecgedge it sees
    # through the .pth line.
    res = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--ignore-installed", "--disable-pip-version-check", str(src)],
                         capture_output=True, text=True, env=clean, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    where = subprocess.run([str(python), "-c", "import ecgedge; print(ecgedge.__file__)"],
                           capture_output=True, text=True, env=clean, check=True).stdout.strip()
    assert Path(where) == site / "ecgedge" / "__init__.py"  # the ordinary install, not the tree
    out = tmp_path / "pack.tar.gz"
    res = subprocess.run([str(env_dir / "bin" / "ecgedge"), "device", "pack", str(int8_bundle.path),
                          "--out", str(out), "--json"], capture_output=True, text=True, env=clean, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    manifest = read_pack_manifest(out)
    wheel = f"wheels/ecgedge-{manifest['versions']['ecgedge']}-py3-none-any.whl"
    assert wheel in manifest["files"]
    import io
    import zipfile
    with tarfile.open(out, "r:gz") as tar:
        blob = tar.extractfile(f"{TOP}/{wheel}").read()
    with zipfile.ZipFile(io.BytesIO(blob)) as whl:
        files = set(whl.namelist())
        assert whl.read("ecgedge/deploy/packfiles/install.py") == (src / "deploy/packfiles/install.py").read_bytes()
        assert whl.read("ecgedge/device/runtime.py") == (src / "device/runtime.py").read_bytes()
    assert not any(n.endswith(".pyc") or "__pycache__" in n for n in files)
    # The rebuilt wheel installs and runs (pip checks its RECORD and WHEEL).
    target = tmp_path / "target"
    whl_path = tmp_path / Path(wheel).name
    whl_path.write_bytes(blob)
    res = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                          "--disable-pip-version-check", "--target", str(target), str(whl_path)],
                         capture_output=True, text=True, env=clean, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    probe = subprocess.run([str(python), "-c", "import ecgedge.deploy.pack as p; print(p.__file__)"],
                           capture_output=True, text=True, env=dict(clean, PYTHONPATH=str(target)), check=True)
    assert Path(probe.stdout.strip()).is_relative_to(target)


def test_a_pack_with_trust_carries_the_keys_and_cryptography_and_refuses_an_unsigned_bundle(int8_bundle, tmp_path):
    """--trust: the bundle must be signed by a given key; the pack then holds the keys, pins
    cryptography for the device and says so in its manifest and README."""
    pytest.importorskip("cryptography")
    if HOST not in ("linux-x86_64", "linux-aarch64"):
        pytest.skip(f"packs target Linux x86_64 or aarch64, this is {HOST}")
    from ecgedge.device import signing

    private, public, key_id = signing.generate_keypair(tmp_path / "keys")
    bundle = tmp_path / "bundle"
    shutil.copytree(int8_bundle.path, bundle)
    refused = CliRunner().invoke(cli, ["device", "pack", str(bundle), "--out", str(tmp_path / "p.tar.gz"),
                                       "--trust", str(public)])
    assert refused.exit_code == 2 and "model.sig not found" in refused.output
    assert not (tmp_path / "p.tar.gz").exists()
    signing.sign_bundle(bundle, private)
    manifest = build_pack(bundle, tmp_path / "p.tar.gz", trusted_keys=[public])
    assert manifest["bundle"]["signed_by"] == key_id and manifest["trusted_keys"] == [f"00-{public.stem}.pub"]
    assert any(pin.startswith("cryptography==") for pin in manifest["requirements"])
    with tarfile.open(tmp_path / "p.tar.gz", "r:gz") as tar:
        assert tar.extractfile(f"{TOP}/trusted-keys/00-{public.stem}.pub").read() == public.read_bytes()
        assert tar.extractfile(f"{TOP}/bundle/model.sig") is not None
        assert "cryptography==" in tar.extractfile(f"{TOP}/requirements.txt").read().decode()
        assert f"signed by {key_id}" in tar.extractfile(f"{TOP}/README.txt").read().decode()
