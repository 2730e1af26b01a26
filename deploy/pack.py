"""One deployable archive for the device: ``ecgedge device pack``.

A pack is a ``.tar.gz`` with one top folder, ``ecgedge-pack/``::

    install.sh, install.py      the installer (POSIX sh front, standard-library Python)
    pack.json                   manifest: versions, target, bundle, sha256 + size of every file
    requirements.txt            pinned device requirements (numpy, ai-edge-litert, ...)
    wheels/                     the ecgedge wheel; with --offline also pip and every dependency
                                for the target platform and Python
    bundle/                     model.tflite + model.json (hash checked here and at install)
    selftest.npz                raw windows with the labels and probabilities the device
                                runtime gave them at pack time
    trusted-keys/               with ``--trust``: the Ed25519 public keys the device requires a
                                bundle signature of (the self-test at install and the systemd
                                unit set ``ECGEDGE_TRUSTED_KEYS`` to it; ``cryptography`` is added
                                to the requirements)
    systemd/                    unit and logrotate templates for ``ecgedge device run``
    README.txt

``install.sh`` (see ``packfiles/install.py``) verifies all of it on the device, installs into a
new release folder, runs ``ecgedge device selftest`` and only then makes the release current.
Packing runs on the desktop: it builds the wheel with pip from the source tree (an editable
install) or rebuilds it from the installed files and their RECORD (an ordinary ``pip install``),
and downloads target wheels with ``pip download --platform ... --only-binary=:all:``. This module imports neither TensorFlow nor
any other heavy package; the self-test that runs on the device is :mod:`ecgedge.device.selftest`.
"""

import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from ecgedge.device import signing
from ecgedge.device.bundle import load_bundle, sha256_file
from ecgedge.device.errors import EcgEdgeError
from ecgedge.device.selftest import classify_windows

PACK_FORMAT = "ecgedge-pack"
PACK_FORMAT_VERSION = 1
TOP = "ecgedge-pack"
PACKFILES = Path(__file__).resolve().parent / "packfiles"

# Target -> (pip --platform tags, oldest glibc those wheels need). The manylinux_2_27 wheels
# run on Raspberry Pi OS buster (glibc 2.28) and later; pip takes the newest tag that matches.
TARGETS = {
    "linux-aarch64": ([f"manylinux_2_{v}_aarch64" for v in range(27, 16, -1)] + ["manylinux2014_aarch64"], "2.27"),
    "linux-x86_64": ([f"manylinux_2_{v}_x86_64" for v in range(28, 16, -1)]
                     + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"], "2.28"),
}
# What the device needs besides ecgedge's own dependencies, pinned to the versions the bundle
# was checked with on this machine. tflite-runtime is the fallback where ai-edge-litert has no
# wheel (32-bit ARM, old Python): the runtime imports it when ai_edge_litert is missing.
DEVICE_PACKAGES = ("numpy", "ai-edge-litert")
FALLBACK_NOTE = ("# Fallback where ai-edge-litert has no wheel (e.g. 32-bit Raspberry Pi OS):\n"
                 "#   replace the ai-edge-litert line with tflite-runtime; ecgedge imports\n"
                 "#   ai_edge_litert, then tflite_runtime, then tensorflow.lite.\n")
# Files of the repository that are not part of the wheel's source (kept out of the copy the
# wheel is built from, so a build never writes into the working tree). benchmarks/ is a package
# (ecgedge.benchmarks); only its committed results stay out.
SOURCE_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".hypothesis", "tests", "results", "runs", ".cache", ".whl", ".gl", "*.tar.gz", ".ci")
SELFTEST_WINDOWS = 6
SELFTEST_FS = 360.0
TRUSTED_KEYS_DIR = "trusted-keys"
SIGNATURE_PACKAGE = "cryptography"  # what the device needs to check an Ed25519 signature


def host_platform():
    """The pack target name of this machine (``linux-x86_64``, ``linux-aarch64``, ...)."""
    return sysconfig.get_platform()


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def _run_pip(args, what):
    """Run ``python -m pip ARGS`` quietly; a failure becomes an EcgEdgeError with pip's last lines."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise EcgEdgeError(f"{what} failed (pip exit {proc.returncode}): {tail}")
    return proc.stdout


def source_root():
    """The ecgedge source tree (the folder with pyproject.toml) this package runs from, or None.

    None for an ordinary (non-editable) install, whose package folder is in site-packages.
    """
    import ecgedge

    root = Path(ecgedge.__file__).resolve().parent
    return root if (root / "pyproject.toml").is_file() else None


# Files of an installed dist-info folder that describe the project (kept in the rebuilt wheel);
# INSTALLER, REQUESTED, direct_url.json and RECORD describe the install and are left out.
WHEEL_METADATA = ("METADATA", "entry_points.txt", "top_level.txt")


def _record_hash(data):
    """RECORD's hash field: sha256, urlsafe base64 without padding (PEP 376 / 427)."""
    import base64

    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def installed_wheel(out_dir, dist=None):
    """Rebuild the ecgedge wheel from an ordinary install's files and return its path.

    Takes the files of the installed ``ecgedge`` package and its project metadata as listed in
    the distribution's RECORD, checks each against RECORD's sha256 (an installed file edited
    since is refused), leaves out byte code, scripts and install-only metadata, and writes
    ``ecgedge-VERSION-py3-none-any.whl`` with a new WHEEL and RECORD. Nothing is downloaded:
    a package index may hold a different project under the same name.

    Parameters
    ----------
    out_dir : folder the wheel is written to.
    dist : importlib.metadata.Distribution (default: the installed ``ecgedge``).
    """
    import zipfile

    dist = dist if dist is not None else metadata.distribution("ecgedge")
    version = dist.version
    hint = "reinstall ecgedge (pip install --force-reinstall ecgedge) or pass a built wheel with --wheel FILE"
    if not dist.files:
        raise EcgEdgeError(f"the installed ecgedge {version} lists no files (no RECORD); {hint}")
    info = f"ecgedge-{version}.dist-info"
    members = {}
    for entry in dist.files:
        parts = entry.parts
        keep = (parts[0] == "ecgedge" and "__pycache__" not in parts and entry.suffix != ".pyc") or \
            (len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] in WHEEL_METADATA)
        if not keep:
            continue
        if entry.suffix in (".so", ".pyd"):
            raise EcgEdgeError(f"the installed ecgedge holds a compiled module {entry}; {hint}")
        try:
            data = Path(dist.locate_file(entry)).read_bytes()
        except OSError as exc:
            raise EcgEdgeError(f"cannot read the installed file {entry}: {exc.strerror}; {hint}") from None
        if entry.hash is None or _record_hash(data) != f"{entry.hash.mode}={entry.hash.value}":
            raise EcgEdgeError(f"the installed file {entry} differs from its sha256 in RECORD "
                               f"(edited after install?); {hint}")
        name = entry.as_posix() if parts[0] == "ecgedge" else f"{info}/{parts[1]}"
        members[name] = data
    if "ecgedge/__init__.py" not in members or f"{info}/METADATA" not in members:
        raise EcgEdgeError(f"the installed ecgedge {version} lacks ecgedge/__init__.py or METADATA; {hint}")
    members[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: ecgedge device pack\n"
                                b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    names = sorted(n for n in members if not n.startswith(info)) + sorted(n for n in members if n.startswith(info))
    record = "".join(f"{n},{_record_hash(members[n])},{len(members[n])}\n" for n in names) + f"{info}/RECORD,,\n"
    path = Path(out_dir) / f"ecgedge-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
        for n in names + [f"{info}/RECORD"]:
            zinfo = zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0))
            zinfo.external_attr = 0o644 << 16
            zinfo.compress_type = zipfile.ZIP_DEFLATED
            whl.writestr(zinfo, members[n] if n in members else record.encode())
    return path


def build_wheel(out_dir, wheel=None):
    """Return the path of the ecgedge wheel in ``out_dir``: ``wheel`` copied, built from the
    source tree (an editable install), or rebuilt from the installed files (an ordinary install,
    :func:`installed_wheel`).

    The source is copied to a temporary folder first so the build writes nothing into the
    working tree (others may be using it); build isolation is off when setuptools is installed,
    so no network is needed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if wheel is not None:
        wheel = Path(wheel)
        if not re.fullmatch(r"ecgedge-[^-]+-py3-none-any\.whl", wheel.name) or not wheel.is_file():
            raise EcgEdgeError(f"--wheel {wheel}: not an ecgedge-VERSION-py3-none-any.whl file")
        return Path(shutil.copy2(wheel, out_dir / wheel.name))
    root = source_root()
    if root is None:
        import ecgedge

        dist = metadata.distribution("ecgedge")
        imported = Path(ecgedge.__file__).resolve()
        if Path(dist.locate_file("ecgedge/__init__.py")).resolve() != imported:
            raise EcgEdgeError(
                f"the ecgedge imported here ({imported.parent}) is not the one whose metadata "
                f"pip recorded ({dist.locate_file('')}); pass a built wheel with --wheel FILE")
        return installed_wheel(out_dir, dist)
    with tempfile.TemporaryDirectory(prefix="ecgedge-wheel-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(root, src, ignore=SOURCE_IGNORE, symlinks=False)
        # Without setuptools here (Python >= 3.12 venvs), pip fetches it into an isolated build.
        isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
        _run_pip(["wheel", "--no-deps", *isolation, "--no-cache-dir", "-q",
                  "-w", str(out_dir), str(src)], f"building the ecgedge wheel from {root}")
    found = sorted(out_dir.glob("ecgedge-*-py3-none-any.whl"))
    if not found:
        raise EcgEdgeError(f"pip built no ecgedge wheel into {out_dir}")
    return found[-1]


def installed_version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def top_requirements(requirements_file=None):
    """The pinned top-level device requirements: from ``requirements_file`` or this machine."""
    if requirements_file is not None:
        lines = [ln.split("#")[0].strip() for ln in Path(requirements_file).read_text().splitlines()]
        return [ln for ln in lines if ln]
    pins = []
    for name in DEVICE_PACKAGES:
        version = installed_version(name)
        if version is None:
            raise EcgEdgeError(
                f"{name} is not installed here, so its version cannot be pinned: "
                "pip install 'ecgedge[device]' or pass --requirements FILE")
        pins.append(f"{name}=={version}")
    return pins


def _wheel_name_version(path):
    """(normalised project name, version) from a wheel file name."""
    name, version = Path(path).name.split("-")[:2]
    return re.sub(r"[-_.]+", "-", name).lower(), version


def download_wheels(out_dir, target, python, requirements, ecgedge_wheel):
    """Download pip and every wheel ``ecgedge[device]`` needs on ``target`` / ``python``.

    Returns the exact pins (``name==version``) of the dependency wheels downloaded, the whole
    resolved set, which becomes requirements.txt.
    """
    platforms, _ = TARGETS[target]
    common = ["download", "--only-binary=:all:", "--python-version", python,
              "--implementation", "cp", "--no-cache-dir", "-q", "-d", str(out_dir)]
    for tag in platforms:
        common += ["--platform", tag]
    what = f"downloading the {target} / Python {python} wheels"
    _run_pip(common + [*requirements, f"ecgedge[device] @ {Path(ecgedge_wheel).resolve().as_uri()}"], what)
    pip_pin = f"pip=={installed_version('pip')}" if installed_version("pip") else "pip"
    _run_pip(common + ["--no-deps", pip_pin], what + " (pip)")
    pins = []
    for whl in sorted(Path(out_dir).glob("*.whl")):
        name, version = _wheel_name_version(whl)
        if name not in ("ecgedge", "pip"):
            pins.append(f"{name}=={version}")
    return pins


def synthetic_ecg(n_windows, seconds, fs, seed):
    """Seeded ECG-like windows for the self-test (regular and irregular rhythms).

    Returns
    -------
    ndarray of shape (n_windows, round(seconds * fs)), float32, millivolts: Gaussian P, QRS and
    T waves on a wandering baseline with noise; odd windows have irregular RR intervals.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fs))
    t = np.arange(n) / fs
    out = np.empty((n_windows, n), dtype=np.float32)
    for i in range(n_windows):
        rr_mean = rng.uniform(0.6, 1.0)
        jitter = 0.25 if i % 2 else 0.03
        beats, b = [], rng.uniform(0, rr_mean)
        while b < seconds + 1:
            beats.append(b)
            b += rr_mean * (1 + jitter * rng.standard_normal())
        x = 0.15 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t)
        for b in beats:
            x += 0.12 * np.exp(-0.5 * ((t - b + 0.16) / 0.025) ** 2) * (i % 2 == 0)
            x += 1.1 * np.exp(-0.5 * ((t - b) / 0.010) ** 2)
            x -= 0.2 * np.exp(-0.5 * ((t - b - 0.03) / 0.012) ** 2)
            x += 0.3 * np.exp(-0.5 * ((t - b - 0.28) / 0.05) ** 2)
        x += 0.03 * rng.standard_normal(n)
        out[i] = x
    return out


def record_selftest(bundle, path, n_windows=SELFTEST_WINDOWS, fs=SELFTEST_FS, seed=0):
    """Write ``selftest.npz``: seeded raw windows and what the runtime says of them here.

    The windows are at ``fs`` (360 Hz, MIT-BIH's rate, so the device also resamples); the
    saved arrays are ``x`` (n, samples) float32, ``fs``, ``labels`` (str), ``probs`` (n, C)
    float32, ``classes``, ``bundle_sha256``, ``seed``.
    """
    x = synthetic_ecg(n_windows, bundle.window_s, fs, seed)
    labels, probs = classify_windows(bundle, x, fs)
    if any(label is None for label in labels):
        raise EcgEdgeError("the runtime refused a self-test window at pack time; the bundle cannot run")
    buf = io.BytesIO()
    np.savez(buf, x=x, fs=np.float64(fs), labels=np.array(labels), probs=probs,
             classes=np.array(bundle.classes), bundle_sha256=np.array(bundle.manifest["sha256"]),
             seed=np.int64(seed))
    Path(path).write_bytes(buf.getvalue())
    return labels, probs


def _readme(manifest):
    target, python = manifest["target"]["platform"], manifest["target"]["python"]
    mode = "offline (all wheels included)" if manifest["offline"] else "online (pip fetches dependencies)"
    return f"""ecgedge pack {manifest['pack_id']}: task {manifest['bundle']['task']}, ecgedge {manifest['versions']['ecgedge']}
Target: {target}, Python {python}; install {mode}.

Install on the device (Debian / Raspberry Pi OS: needs python3 and python3-venv):

    tar -xzf PACK.tar.gz && sh ecgedge-pack/install.sh --prefix /opt/ecgedge

or from the desktop: ecgedge device push PACK.tar.gz --host pi@raspberrypi.local
install.sh checks every file's sha256 against pack.json, the platform and Python version and
the free space, installs into PREFIX/releases/<release>, runs `ecgedge device selftest`, and
only then points PREFIX/current at it. `sh ecgedge-pack/install.sh --help` lists the options.

Classify a stream as a service (optional): add
    --systemd --source /dev/ttyACM0 --fs 250 [--baud 115200]
to install /etc/systemd/system/ecgedge.service (runs `ecgedge device run` on the serial device
or FIFO, one JSON line per window, appended to /var/log/ecgedge/rhythm.jsonl) and
/etc/logrotate.d/ecgedge (rotates that log by size), then:
    sudo systemctl daemon-reload && sudo systemctl enable --now ecgedge

No ai-edge-litert wheel for this device (32-bit ARM, other Python)? Install tflite-runtime in
the virtualenv instead (see requirements.txt); ecgedge falls back to it.
""" + ("""
Signed: the bundle is signed by {}. The self-test at install checks the signature against
trusted-keys/ and the systemd unit sets ECGEDGE_TRUSTED_KEYS to the release's trusted-keys/, so
the service refuses a bundle that is not signed by one of them.
""".format(manifest["bundle"]["signed_by"]) if manifest["trusted_keys"] else "")


def _tar_filter(info):
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = int(time.time())
    return info


def signature_requirement(pins):
    """``pins`` with ``cryptography`` pinned to this machine's version, unless already there."""
    if any(re.split(r"[=<>!~\[ ;]", pin, maxsplit=1)[0].lower() == SIGNATURE_PACKAGE for pin in pins):
        return list(pins)
    version = installed_version(SIGNATURE_PACKAGE)
    if version is None:
        raise EcgEdgeError(f"--trust needs {SIGNATURE_PACKAGE} here to check the signature and pin its "
                           "version for the device: pip install 'ecgedge[sign]'")
    return [*pins, f"{SIGNATURE_PACKAGE}=={version}"]


def build_pack(bundle_dir, out, target=None, python=None, offline=False, wheel=None,
               requirements_file=None, selftest_windows=SELFTEST_WINDOWS, trusted_keys=()):
    """Build the pack archive ``out`` (``.tar.gz``) and return its manifest (dict).

    Parameters
    ----------
    bundle_dir : bundle folder (hash checked here with load_bundle).
    target : ``linux-aarch64`` or ``linux-x86_64`` (default: this machine).
    python : ``MAJOR.MINOR`` of the device's Python (default: this interpreter's).
    offline : include pip and every dependency wheel for target / python.
    wheel : a prebuilt ecgedge wheel to ship instead of building one from the source tree.
    requirements_file : top-level device requirements to pin instead of this machine's versions.
    trusted_keys : Ed25519 public keys (files, or folders of ``*.pub``); when given, the bundle's
        signature must verify with one of them here, the keys go into ``trusted-keys/``, and the
        device checks the signature at install (self-test) and in the systemd unit.

    The archive is written to a new temporary file next to ``out`` (exclusive create, never
    through a symlink) and renamed, so ``out`` is either the previous file or the complete new
    one.
    """
    target = target or host_platform()
    if target not in TARGETS:
        raise EcgEdgeError(f"--target {target!r} is not supported; use one of {sorted(TARGETS)}")
    python = python or f"{sys.version_info[0]}.{sys.version_info[1]}"
    if not re.fullmatch(r"3\.\d+", python):
        raise EcgEdgeError(f"--python must be MAJOR.MINOR such as 3.11, got {python!r}")
    keys = signing.trusted_key_paths(list(trusted_keys)) if trusted_keys else []
    bundle = load_bundle(bundle_dir, trusted_keys=keys)
    out = Path(out)
    if not out.name.endswith((".tar.gz", ".tgz")):
        raise EcgEdgeError(f"--out {out}: the pack is a gzip tar archive; name it *.tar.gz")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ecgedge-pack-") as tmp:
        root = Path(tmp) / TOP
        (root / "wheels").mkdir(parents=True)
        ecgedge_wheel = build_wheel(root / "wheels", wheel)
        ecgedge_version = _wheel_name_version(ecgedge_wheel)[1]
        requirements = top_requirements(requirements_file)
        if keys:
            requirements = signature_requirement(requirements)
        if offline:
            pins = download_wheels(root / "wheels", target, python, requirements, ecgedge_wheel)
        else:
            pins = requirements
        (root / "requirements.txt").write_text(
            f"# Device requirements of ecgedge {ecgedge_version} for {target} / Python {python}"
            f"{' (the wheels in wheels/)' if offline else ''}.\n" + FALLBACK_NOTE + "\n".join(pins) + "\n")
        keep = {bundle.manifest["model_file"], "model.json", "model.sig"} | \
            ({bundle.rhythm_head_path.name} if bundle.rhythm_head_path else set())  # model.sig: when signed
        shutil.copytree(bundle.path, root / "bundle", ignore=lambda d, names: [n for n in names if n not in keep])
        labels, _ = record_selftest(bundle, root / "selftest.npz", n_windows=selftest_windows)
        if keys:
            (root / TRUSTED_KEYS_DIR).mkdir()
            for i, key in enumerate(keys):
                shutil.copyfile(key, root / TRUSTED_KEYS_DIR / f"{i:02d}-{key.stem}.pub")
        (root / "systemd").mkdir()
        for name in ("ecgedge.service", "ecgedge.logrotate"):
            shutil.copy2(PACKFILES / name, root / "systemd" / name)
        for name in ("install.sh", "install.py"):
            shutil.copy2(PACKFILES / name, root / name)
        (root / "install.sh").chmod(0o755)
        versions = {"ecgedge": ecgedge_version, "python_packed_with": sys.version.split()[0]}
        for pin in pins:
            name, version = pin.split("==", 1) if "==" in pin else (pin, None)
            if name in DEVICE_PACKAGES and version:
                versions[name] = version
        manifest = {
            "format": PACK_FORMAT, "format_version": PACK_FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "target": {"platform": target, "python": python, "glibc_min": TARGETS[target][1],
                       "pip_platforms": TARGETS[target][0]},
            "offline": bool(offline), "versions": versions, "requirements": pins,
            "bundle": {"task": bundle.manifest.get("task"), "classes": bundle.classes,
                       "quantization": bundle.manifest.get("quantization"),
                       "model_file": bundle.manifest["model_file"], "sha256": bundle.manifest["sha256"],
                       "bytes": bundle.manifest["bytes"], "signed_by": bundle.signed_by},
            "trusted_keys": sorted(p.name for p in (root / TRUSTED_KEYS_DIR).glob("*.pub")),
            "selftest": {"file": "selftest.npz", "n": len(labels), "fs": SELFTEST_FS, "labels": labels},
        }
        files = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            if rel not in ("pack.json", "README.txt"):
                files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        manifest["pack_id"] = sha256_bytes(json.dumps(files, sort_keys=True).encode())[:12]
        readme = _readme(manifest).encode()
        (root / "README.txt").write_bytes(readme)
        files["README.txt"] = {"sha256": sha256_bytes(readme), "bytes": len(readme)}
        manifest["files"] = dict(sorted(files.items()))
        (root / "pack.json").write_text(json.dumps(manifest, indent=2) + "\n")
        manifest["archive"] = _write_archive(root, out)
    return manifest


def _write_archive(root, out):
    """Write the tar.gz of ``root`` to ``out`` through a new temporary file beside it.

    The temporary file is created exclusively (mkstemp: O_EXCL, so a file or symlink planted
    under any name there is never written through) and renamed over ``out``; a rename replaces
    a symlink at ``out`` itself, not its target. Returns {path, bytes, sha256} of what was
    written, hashed from the temporary file before the rename.
    """
    fd, partial = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w+b") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.add(root, arcname=TOP, filter=_tar_filter)
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(raw.fileno(), 0o666 & ~umask)  # mkstemp makes 0600; a pack is shared
            raw.seek(0)
            digest = hashlib.sha256()
            for block in iter(lambda: raw.read(1 << 20), b""):
                digest.update(block)
            size = raw.tell()
        os.replace(partial, out)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return {"path": str(out), "bytes": size, "sha256": digest.hexdigest()}


def read_pack_manifest(pack):
    """Return ``pack.json`` of a pack archive after checking the whole archive.

    The gzip stream is read to its end (its CRC catches a flipped byte that still inflates),
    and every file's sha256 and size are checked against the manifest, so a corrupted pack is
    refused here, before it is copied anywhere. Raises EcgEdgeError for a missing, truncated
    or corrupted archive or one without a manifest.
    """
    import zlib

    pack = Path(pack)
    if not pack.is_file():
        raise EcgEdgeError(f"{pack} not found: build one with 'ecgedge device pack BUNDLE --out {pack.name}'")
    manifest, seen = None, {}
    try:
        with gzip.open(pack, "rb") as gz:
            while gz.read(1 << 20):
                pass
        with tarfile.open(pack, "r:gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                data = tar.extractfile(member).read()
                if member.name == f"{TOP}/pack.json":
                    manifest = json.loads(data)
                elif member.name.startswith(f"{TOP}/"):
                    seen[member.name[len(TOP) + 1:]] = {"sha256": sha256_bytes(data), "bytes": len(data)}
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise EcgEdgeError(f"{pack} is not a readable pack archive ({exc}); copy or build it again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
        raise EcgEdgeError(f"{pack} has no {TOP}/pack.json: not an ecgedge pack")
    files = manifest.get("files", {})
    bad = sorted(rel for rel in set(files) | set(seen) if files.get(rel) != seen.get(rel))
    if bad:
        raise EcgEdgeError(
            f"{pack}: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} do not match pack.json "
            "(corrupted or edited); copy or build it again")
    return manifest
