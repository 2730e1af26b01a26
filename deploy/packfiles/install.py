"""Install an unpacked ecgedge pack on the device (started by install.sh; standard library only).

Steps, each of which stops the install with a one-line ``install: error: ...`` and exit status 2:

1. read ``pack.json`` and refuse a pack built for another platform or Python version;
2. check the sha256 of every file in the pack against ``pack.json`` (a corrupted or edited file,
   a missing file or an extra file refuses the install) and the model against its bundle
   manifest;
3. check the free space under the prefix;
4. build ``PREFIX/releases/<release>``: a virtualenv, the wheels (only those in the pack with
   ``--offline``), the bundle and the self-test windows, then run ``ecgedge device selftest``
   (for a pack built with ``--trust``, with ``ECGEDGE_TRUSTED_KEYS`` set to the release's
   ``trusted-keys/``: the release's own ``cryptography`` checks the bundle's Ed25519 signature,
   which the standard library can not);
5. only then point ``PREFIX/current`` at the new release (an atomic symlink swap) and, after
   that, remove releases beyond ``--keep``.

A failure or an interrupt at any step removes the new release folder, so nothing is left half
installed and the previous ``current`` keeps working. The virtualenv is built at its final path
because virtualenvs cannot be moved; the "move into place" is the switch of ``current``.

What the installer writes and removes under PREFIX (the folder the user named is followed if it
is a symlink; nothing inside it is):

- ``releases/`` must be a real folder, never a symlink; each release folder is made with one
  ``mkdir`` (a name that exists already is never reused: time to the microsecond, process id
  and a random suffix) and gets a ``.ecgedge-release`` marker holding its own name at once;
- old releases are pruned only after a successful install and switch, and only folders that
  carry that marker (``lstat``, no symlink followed); the new release and the one that was live
  before it are never removed; folders the installer did not make are left alone and named;
- ``.install.lock`` is opened with ``O_NOFOLLOW`` and without ``O_TRUNC`` (nothing is written
  to it), so a symlink or hard link there changes no other file;
- ``current`` is replaced by renaming a freshly made symlink over it; the systemd unit and the
  logrotate rule are written to exclusively created temporary files in their folder and renamed;
- the values put into the systemd unit are checked before anything is installed: a user name,
  absolute paths of plain characters, ``--run-args`` without control characters, quoted by
  systemd's rules (``%%``, ``$$``, double quotes), so no value can add a line to the unit.

Environment: ``ECGEDGE_EXEC_PREFIX`` is put in front of every program this script starts (for
user-mode emulation without binfmt_misc, e.g. ``/usr/bin/qemu-aarch64-static``).
"""

import argparse
import errno
import fcntl
import glob
import hashlib
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import unicodedata
import venv

PACK_FORMAT = "ecgedge-pack"
PACK_FORMAT_VERSION = 1
HERE = os.path.dirname(os.path.abspath(__file__))
COMPLETE_MARK = ".complete"
RELEASE_MARK = ".ecgedge-release"  # written by this installer into each release it makes
LOCK_NAME = ".install.lock"
TRUSTED_KEYS_DIR = "trusted-keys"  # in a pack built with --trust: the keys a bundle must be signed by
MARK_MAX_BYTES = 4096


class InstallError(Exception):
    """A reason to stop the install, said in one line."""


def say(message):
    print("install: " + message, flush=True)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(pack_dir):
    """Return pack.json as a dict, refusing anything that is not a pack this script knows."""
    path = os.path.join(pack_dir, "pack.json")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise InstallError("cannot read {}: {}; unpack the archive again".format(path, exc))
    if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
        raise InstallError("{} is not an ecgedge pack manifest".format(path))
    if manifest.get("format_version") != PACK_FORMAT_VERSION:
        raise InstallError(
            "{} has format_version {!r}; this installer reads {}".format(
                path, manifest.get("format_version"), PACK_FORMAT_VERSION))
    return manifest


def glibc_version():
    name, version = platform.libc_ver()
    if name != "glibc" or not version:
        return None
    return tuple(int(part) for part in version.split(".")[:2])


def check_platform(manifest):
    """Refuse a pack whose target platform, Python or glibc differs from this interpreter's."""
    target = manifest["target"]
    here_platform = sysconfig.get_platform()
    if here_platform != target["platform"]:
        raise InstallError(
            "this pack is for {} but this Python runs on {} ({}); build one with "
            "`ecgedge device pack ... --target {}`".format(
                target["platform"], here_platform, sys.executable, here_platform))
    here_python = "{}.{}".format(*sys.version_info[:2])
    if here_python != target["python"]:
        raise InstallError(
            "this pack is for Python {} but {} is Python {}; build one with "
            "`ecgedge device pack ... --python {}` or set ECGEDGE_PYTHON".format(
                target["python"], sys.executable, here_python, here_python))
    needed = target.get("glibc_min")
    if needed and manifest.get("offline"):
        have = glibc_version()
        want = tuple(int(p) for p in needed.split("."))
        if have is not None and have < want:
            raise InstallError(
                "the wheels in this pack need glibc >= {} but this system has {}".format(
                    needed, ".".join(map(str, have))))


def check_files(pack_dir, manifest):
    """Check every file of the pack against the manifest: present, same size and sha256, no extras."""
    listed = manifest.get("files", {})
    for rel, entry in sorted(listed.items()):
        path = os.path.join(pack_dir, rel)
        if not os.path.isfile(path):
            raise InstallError("{} is missing from the pack; unpack the archive again".format(rel))
        if os.path.getsize(path) != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise InstallError(
                "{} does not match the sha256 in pack.json: the pack is corrupted or was "
                "edited; copy the archive again".format(rel))
    for root, dirs, files in os.walk(pack_dir):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), pack_dir)
            if rel != "pack.json" and rel not in listed:
                raise InstallError(
                    "{} is in the pack folder but not in pack.json; refusing files the pack "
                    "did not ship (remove it or unpack the archive into an empty folder)".format(rel))


BUNDLE_DIGEST_KEY = "bundle_digest"
MAX_BUNDLE_MANIFEST_BYTES = 1 << 20


def bundle_digest(model, file_sha256):
    """The bundle digest, as ``ecgedge.device.bundle.bundle_digest`` computes it (a test holds the
    two equal): sha256 of the canonical JSON of {"files": {name: sha256}, "manifest": model.json
    without its bundle_digest}."""
    body = {k: v for k, v in model.items() if k != BUNDLE_DIGEST_KEY}
    text = json.dumps({"files": file_sha256, "manifest": body}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def check_bundle(pack_dir):
    """Every file of the bundle must match its manifest, and the manifest its bundle digest.

    The model (and the rhythm head, when there is one) must have the sha256 and size written in
    ``bundle/model.json``; a bundle of format version 3 or later must carry a bundle digest equal
    to :func:`bundle_digest`, so an edited manifest (class order, scales, spectrogram) is refused
    here as the device's ``load_bundle`` refuses it. Signatures are checked by the self-test's
    ``load_bundle`` when the device trusts keys (they need the ``cryptography`` package).
    """
    bundle = os.path.join(pack_dir, "bundle")
    try:
        with open(os.path.join(bundle, "model.json"), "rb") as f:
            raw = f.read(MAX_BUNDLE_MANIFEST_BYTES + 1)
        if len(raw) > MAX_BUNDLE_MANIFEST_BYTES:
            raise ValueError("model.json is larger than {} bytes".format(MAX_BUNDLE_MANIFEST_BYTES))
        model = json.loads(raw.decode("utf-8"))
        files = {model["model_file"]: model}
        if model.get("rhythm_head") is not None:
            files[model["rhythm_head"]["file"]] = model["rhythm_head"]
        file_sha256 = {}
        for name, entry in files.items():
            if not isinstance(name, str) or name in ("", ".", "..") or os.path.basename(name) != name:
                raise ValueError("bundle/model.json names the file {!r} outside the bundle".format(name))
            path = os.path.join(bundle, name)
            file_sha256[name] = sha256_file(path)
            if os.path.getsize(path) != entry["bytes"] or file_sha256[name] != entry["sha256"]:
                raise InstallError(
                    "bundle/{} does not match the sha256 in bundle/model.json: refusing a "
                    "tampered model".format(name))
        version = model.get("format_version")
        if isinstance(version, int) and version >= 3 or BUNDLE_DIGEST_KEY in model:
            if bundle_digest(model, file_sha256) != model[BUNDLE_DIGEST_KEY]["sha256"]:
                raise InstallError(
                    "bundle/model.json does not match its bundle digest: the bundle was edited "
                    "after it was built; refusing it")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise InstallError("cannot check the bundle in {}: {}".format(bundle, exc))
    return model


def default_prefix():
    if os.geteuid() == 0:
        return "/opt/ecgedge"
    return os.path.join(os.path.expanduser("~"), ".local", "share", "ecgedge")


def existing_ancestor(path):
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_space(prefix, manifest):
    """Refuse early when the prefix's file system cannot hold the release.

    Installed wheels take about three times their compressed size; 64 MiB covers pip's
    temporary files, the bundle and the virtualenv itself.
    """
    wheel_bytes = sum(e["bytes"] for rel, e in manifest["files"].items() if rel.endswith(".whl"))
    if not manifest.get("offline"):
        wheel_bytes += manifest.get("online_download_bytes", 48 << 20)
    need = 3 * wheel_bytes + (64 << 20)
    free = shutil.disk_usage(existing_ancestor(prefix)).free
    if free < need:
        raise InstallError(
            "no space left: {} has {:.0f} MiB free and the install needs about {:.0f} MiB; "
            "free some space or choose another --prefix".format(
                existing_ancestor(prefix), free / 2**20, need / 2**20))


def exec_prefix():
    return shlex.split(os.environ.get("ECGEDGE_EXEC_PREFIX", ""))


def run_checked(cmd, what, env=None):
    """Run a command with output streamed to ours; a failure becomes an InstallError."""
    full = exec_prefix() + [str(c) for c in cmd]
    say("{}: {}".format(what, " ".join(shlex.quote(c) for c in full)))
    try:
        code = subprocess.call(full, env=env)
    except OSError as exc:
        raise InstallError("{} failed: cannot start {}: {}".format(what, full[0], exc))
    if code != 0:
        raise InstallError("{} failed with exit status {}".format(what, code))


def find_pip_wheel(pack_dir):
    """A pip wheel to run pip from: the pack's own, else the system's ensurepip copy."""
    candidates = sorted(glob.glob(os.path.join(pack_dir, "wheels", "pip-*.whl")))
    candidates += sorted(glob.glob("/usr/share/python-wheels/pip-*.whl"))  # Debian's ensurepip
    candidates += sorted(glob.glob(os.path.join(
        sysconfig.get_paths()["stdlib"], "ensurepip", "_bundled", "pip-*.whl")))
    if not candidates:
        raise InstallError(
            "no pip wheel found (none in the pack, no ensurepip): install python3-venv "
            "(sudo apt install python3-venv) or use a pack built with --offline")
    return candidates[0]


def install_release(pack_dir, manifest, release_dir, offline, index_url):
    """Build the release folder (made by :func:`make_release_dir`): virtualenv, packages, bundle."""
    venv_dir = os.path.join(release_dir, "venv")
    say("creating the virtualenv {}".format(venv_dir))
    # In-process and without pip: ensurepip would start the new interpreter itself, which
    # user-mode emulation without binfmt cannot do; pip runs from a wheel below instead.
    venv.EnvBuilder(with_pip=False, symlinks=True).create(venv_dir)
    python = os.path.join(venv_dir, "bin", "python")
    pip = [python, os.path.join(find_pip_wheel(pack_dir), "pip"), "install",
           "--no-cache-dir", "--disable-pip-version-check", "--no-warn-script-location", "--progress-bar", "off",
           "--only-binary", ":all:", "--find-links", os.path.join(pack_dir, "wheels")]
    if offline:
        pip += ["--no-index"]
    elif index_url:
        pip += ["--index-url", index_url]
    pip += ["-r", os.path.join(pack_dir, "requirements.txt"),
            "ecgedge[device]=={}".format(manifest["versions"]["ecgedge"])]
    env = None
    if offline:
        # Only the pack's wheels: no pip.conf or PIP_* variable may add an index or a folder.
        env = dict((k, v) for k, v in os.environ.items() if not k.startswith("PIP_"))
        env["PIP_CONFIG_FILE"] = os.devnull
    try:
        run_checked(pip, "installing ecgedge[device] {}".format(
            "from the pack's wheels" if offline else "(registry + pack)"), env=env)
    except InstallError as exc:
        free = shutil.disk_usage(release_dir).free
        if free < (64 << 20):
            raise InstallError("{} (only {:.0f} MiB free under {}: no space left?)".format(
                exc, free / 2**20, release_dir))
        raise
    for rel in ("bundle", "systemd", TRUSTED_KEYS_DIR):
        src = os.path.join(pack_dir, rel)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(release_dir, rel))
    for rel in ("pack.json", "requirements.txt", "selftest.npz"):
        shutil.copy2(os.path.join(pack_dir, rel), os.path.join(release_dir, rel))
    return python


def run_selftest(release_dir):
    """``ecgedge device selftest`` of the release; with the pack's trusted keys it also checks the
    bundle's Ed25519 signature (with the release's own ``cryptography``: this script has only the
    standard library, which has no Ed25519)."""
    python = os.path.join(release_dir, "venv", "bin", "python")
    keys = os.path.join(release_dir, TRUSTED_KEYS_DIR)
    env = dict(os.environ, ECGEDGE_TRUSTED_KEYS=keys) if os.path.isdir(keys) else None
    run_checked([python, os.path.join(release_dir, "venv", "bin", "ecgedge"), "device", "selftest",
         "--bundle", os.path.join(release_dir, "bundle"),
         "--windows", os.path.join(release_dir, "selftest.npz")],
        "self-test" + (" and bundle signature" if env else ""), env=env)


def real_dir(path, what):
    """Make ``path`` if missing and refuse anything there but a real folder (no symlink)."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise InstallError(
            "{} ({}) is a symlink to {}; the installer does not write or delete through links: "
            "remove the link (rm {}) or choose another --prefix".format(
                path, what, os.readlink(path), shlex.quote(path)))
    if not stat.S_ISDIR(st.st_mode):
        raise InstallError("{} ({}) is not a folder; move it away or choose another --prefix".format(path, what))
    return path


def create_file(path, text, mode=0o644):
    """Write a new file; fails if anything (a file, a symlink) is already at ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def read_small_file(path):
    """The text of a regular file of at most MARK_MAX_BYTES, or None (missing, symlink, other)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        data = f.read(MARK_MAX_BYTES + 1)
    if len(data) > MARK_MAX_BYTES:
        return None
    return data.decode("utf-8", "replace")


def take_lock(prefix):
    """Hold an exclusive lock on PREFIX/.install.lock; return its descriptor.

    Opened with O_NOFOLLOW and without O_TRUNC, and never written: a symlink or a hard link
    planted there cannot make the installer change another file.
    """
    path = os.path.join(prefix, LOCK_NAME)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InstallError(
                "{} is a symlink; the installer does not open files through links: remove it "
                "(rm {}) and run again".format(path, shlex.quote(path)))
        raise InstallError("cannot open the lock file {}: {}".format(path, exc.strerror))
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise InstallError(
            "{} is not a plain file of its own (a device, FIFO or hard link); remove it and "
            "run again".format(path))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise InstallError("another install is running in {}".format(prefix))
    return fd


def name_part(value):
    """A manifest value made safe for a folder name (no separators, no leading dot)."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(value)).lstrip(".") or "x"


def make_release_dir(releases, manifest):
    """Make a new, empty release folder with its marker; return its path.

    The name is the ecgedge version, pack id, local time to the microsecond, process id and a
    random suffix; ``mkdir`` fails on a name that exists, and then another suffix is tried, so
    an install can never reuse (and later remove) a folder it did not make.
    """
    for _ in range(100):
        now = time.time()
        name = "{}-{}-{}.{:06d}-{}-{}".format(
            name_part(manifest["versions"]["ecgedge"]), name_part(manifest["pack_id"]),
            time.strftime("%Y%m%dT%H%M%S", time.localtime(now)), int(now % 1 * 1e6),
            os.getpid(), secrets.token_hex(3))
        path = os.path.join(releases, name)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            continue
        try:
            create_file(os.path.join(path, RELEASE_MARK), json.dumps(
                {"release": name, "pack_id": manifest["pack_id"],
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now))}) + "\n")
        except BaseException:
            os.rmdir(path)
            raise
        return path
    raise InstallError("cannot find an unused release name under {}".format(releases))


def release_id(path):
    """The name recorded in ``path``'s marker when this installer made ``path``, else None."""
    text = read_small_file(os.path.join(path, RELEASE_MARK))
    try:
        mark = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return mark.get("release") if isinstance(mark, dict) else None


def switch_current(prefix, release_dir):
    """Point PREFIX/current at the release with one rename (atomic on POSIX).

    The new link is made under a fresh random name (``symlink`` fails on an existing name) and
    renamed over ``current``; a rename replaces a symlink itself, never what it points to.
    """
    link = os.path.join(prefix, "current")
    target = os.path.relpath(release_dir, prefix)
    for _ in range(100):
        tmp = os.path.join(prefix, ".current.{}.{}".format(os.getpid(), secrets.token_hex(4)))
        try:
            os.symlink(target, tmp)
            break
        except FileExistsError:
            continue
    else:
        raise InstallError("cannot make a temporary link in {}".format(prefix))
    try:
        os.replace(tmp, link)
    except OSError:
        os.unlink(tmp)
        raise


def check_current_link(prefix):
    """Refuse a PREFIX/current that is not a symlink: the switch would fail after the install."""
    link = os.path.join(prefix, "current")
    if os.path.lexists(link) and not os.path.islink(link):
        raise InstallError(
            "{} is not a symlink; the installer only replaces the link it made: move it away "
            "and run again".format(link))


def current_release(prefix):
    link = os.path.join(prefix, "current")
    if os.path.islink(link):
        return os.path.realpath(link)
    return None


def same_folder(st, protected):
    return any((st.st_dev, st.st_ino) == (p.st_dev, p.st_ino) for p in protected)


def prune_releases(releases, keep, protect):
    """Remove releases this installer made beyond the ``keep`` newest, after a successful install.

    Only real folders (``lstat``; a symlink is never followed) whose ``.ecgedge-release`` marker
    names the folder itself are candidates. Those in ``protect`` (the new release and the one
    that was live before it; a running service may still use it) are never removed and count
    towards ``keep``; marked folders without ``.complete`` are leftovers of a killed install
    (the lock is held, so no other install is writing). Returns (removed, foreign) lists of
    paths; foreign folders are left alone.
    """
    st = os.lstat(releases)
    if not stat.S_ISDIR(st.st_mode):  # a symlink was refused earlier; never delete through one
        return [], []
    protected = []
    for path in protect:
        try:
            protected.append(os.stat(path))
        except OSError:
            pass
    finished, removed, foreign = [], [], []
    for name in sorted(os.listdir(releases)):
        path = os.path.join(releases, name)
        st = os.lstat(path)
        if same_folder(st, protected):
            continue
        if not stat.S_ISDIR(st.st_mode) or release_id(path) != name:
            foreign.append(path)
            continue
        try:
            done = os.lstat(os.path.join(path, COMPLETE_MARK))
        except OSError:
            done = None
        if done is None or not stat.S_ISREG(done.st_mode):
            removed.append(path)
        else:
            finished.append((done.st_mtime, name, path))
    spare = max(keep - len(protected), 0)
    removed += [path for _, _, path in sorted(finished, reverse=True)[spare:]]
    for path in removed:
        say("removing the old release {}".format(path))
        try:
            shutil.rmtree(path)  # refuses a symlink; descends with file descriptors
        except OSError as exc:
            say("warning: cannot remove {}: {}".format(path, exc))
    return removed, foreign


def render_template(path, values):
    """The template with each ``@KEY@`` replaced in one pass (a value is never scanned again)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return re.sub(r"@([A-Z_]+)@", lambda m: values.get(m.group(1), m.group(0)), text)


# systemd's own user name rule (valid_user_group_name, strict) or a numeric uid.
USER_NAME = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_-]{0,30}|[0-9]{1,10})\Z")
# Paths that mean the same in a unit file, a command line and a logrotate rule, unquoted.
PLAIN_PATH = re.compile(r"/[A-Za-z0-9_@+=:,./-]*\Z")
PLAIN_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+\Z")
LOG_SIZE = re.compile(r"[0-9]{1,9}[kMG]?\Z")


def has_control_characters(text):
    """True for any C0/C1 control character (newline, CR, tab, NUL, ...) or line separator."""
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text)


def systemd_word(word):
    r"""One word of an ``Exec*=`` line, quoted so systemd passes exactly ``word`` on.

    ``%`` starts a specifier and ``$`` a variable in systemd's command lines, so both are
    doubled; anything but plain characters goes into double quotes, with a backslash written
    ``\\`` and a double quote ``\"`` (systemd unescapes C-style inside quotes). A lone ``;``
    separates commands unless written ``\;``. Control characters are refused before this is
    called.
    """
    text = word.replace("%", "%%").replace("$", "$$")
    if word == ";":
        return "\\;"
    if PLAIN_WORD.match(word):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_values(args, prefix):
    """The checked values of the systemd unit and logrotate rule, or an InstallError.

    Called before anything is installed, so a bad value costs nothing.
    """
    if not args.source:
        raise InstallError("--systemd needs --source (a serial device such as /dev/ttyACM0 or a FIFO)")
    for option, value in (("--source", args.source), ("--log-dir", args.log_dir), ("--prefix", prefix)):
        if not PLAIN_PATH.match(value) or "/../" in value + "/":
            raise InstallError(
                "{} {!r} cannot go into the systemd unit: give an absolute path of letters, "
                "digits and _@+=:,./- only".format(option, value))
    if not USER_NAME.match(args.user):
        raise InstallError(
            "--user {!r} is not a user name (letters, digits, _ and -, not starting with a "
            "digit or -, at most 31 characters) or a numeric uid".format(args.user))
    if has_control_characters(args.run_args):
        raise InstallError(
            "--run-args {!r} holds a control character (newline, tab, ...); a unit file line "
            "cannot carry one".format(args.run_args))
    try:
        run_args = shlex.split(args.run_args)
    except ValueError as exc:
        raise InstallError("--run-args {!r} cannot be split into words: {}".format(args.run_args, exc))
    if not (args.fs > 0 and args.fs < float("inf")):
        raise InstallError("--fs must be a finite rate in Hz > 0, got {!r}".format(args.fs))
    if args.baud is not None and args.baud <= 0:
        raise InstallError("--baud must be > 0, got {}".format(args.baud))
    if not LOG_SIZE.match(args.log_size):
        raise InstallError("--log-size must be a number with k, M or G, such as 10M, got {!r}".format(args.log_size))
    if args.log_keep < 0:
        raise InstallError("--log-keep must be >= 0, got {}".format(args.log_keep))
    current = os.path.join(prefix, "current")
    trust = ""
    if os.path.isdir(os.path.join(HERE, TRUSTED_KEYS_DIR)):
        trust = "Environment=ECGEDGE_TRUSTED_KEYS={}/{}".format(current, TRUSTED_KEYS_DIR)
    stty = ""
    if args.baud:
        stty = "ExecStartPre=/bin/stty -F {} {} raw -echo".format(args.source, args.baud)
    return {
        "PREFIX": prefix, "CURRENT": current, "SOURCE": args.source, "FS": str(args.fs),
        "LOG_DIR": args.log_dir, "USER": args.user, "STTY": stty, "TRUST": trust,
        "RUN_ARGS": " ".join(systemd_word(w) for w in run_args), "LOGROTATE_KEEP": str(args.log_keep),
        "LOGROTATE_SIZE": args.log_size,
    }


def install_systemd(args, prefix):
    """Write the systemd unit and the logrotate rule for ``ecgedge device run`` on args.source."""
    values = unit_values(args, prefix)
    current = values["CURRENT"]
    templates = os.path.join(current, "systemd")
    unit = render_template(os.path.join(templates, "ecgedge.service"), values)
    rotate = render_template(os.path.join(templates, "ecgedge.logrotate"), values)
    for folder in (args.systemd_dir, args.logrotate_dir, args.log_dir):
        os.makedirs(folder, exist_ok=True)
    write_file(os.path.join(args.systemd_dir, "ecgedge.service"), unit)
    write_file(os.path.join(args.logrotate_dir, "ecgedge"), rotate)
    say("wrote {} and {}".format(os.path.join(args.systemd_dir, "ecgedge.service"),
                                 os.path.join(args.logrotate_dir, "ecgedge")))
    say("enable it with: sudo systemctl daemon-reload && sudo systemctl enable --now ecgedge; "
        "results go to {}/rhythm.jsonl".format(args.log_dir))


def write_file(path, text):
    """Replace ``path`` with a file holding ``text``: written to an exclusively created
    temporary file in the same folder (mkstemp: O_EXCL, mode 0600) and renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".{}.".format(os.path.basename(path)))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            os.fchmod(f.fileno(), 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="install.sh", description="Install this ecgedge pack into a virtualenv under PREFIX.")
    parser.add_argument("--prefix", default=os.environ.get("ECGEDGE_PREFIX") or default_prefix(),
                        help="install folder (default: /opt/ecgedge as root, else "
                             "~/.local/share/ecgedge; or $ECGEDGE_PREFIX)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--offline", action="store_true",
                      help="install only from the wheels in the pack (the default when it has them)")
    mode.add_argument("--online", action="store_true",
                      help="install from the package registry (the pack's wheels are still preferred)")
    parser.add_argument("--index-url", help="package registry for --online (pip's default otherwise)")
    parser.add_argument("--force", action="store_true",
                        help="install again even when this pack is already the current release")
    parser.add_argument("--keep", type=int, default=2,
                        help="finished releases to keep, the current one included (default 2; "
                             "the release that was current before is kept in any case)")
    unit = parser.add_argument_group("systemd service (optional)")
    unit.add_argument("--systemd", action="store_true",
                      help="install a unit that runs `ecgedge device run` on --source")
    unit.add_argument("--source", help="serial device or FIFO giving samples as text lines")
    unit.add_argument("--fs", type=float, default=250.0, help="sampling rate of --source in Hz (default 250)")
    unit.add_argument("--baud", type=int, help="set this baud rate (stty) on a serial --source")
    unit.add_argument("--run-args", default="",
                      help="extra options for `ecgedge device run`, split as a shell would (quotes "
                           "kept by systemd's rules; no control characters)")
    unit.add_argument("--user", default="root",
                      help="user the service runs as: a user name or numeric uid (default root)")
    unit.add_argument("--log-dir", default="/var/log/ecgedge", help="JSON-lines log folder")
    unit.add_argument("--log-size", default="10M", help="rotate the log at this size (default 10M)")
    unit.add_argument("--log-keep", type=int, default=7, help="rotated logs to keep (default 7)")
    unit.add_argument("--systemd-dir", default="/etc/systemd/system", help=argparse.SUPPRESS)
    unit.add_argument("--logrotate-dir", default="/etc/logrotate.d", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def interrupted(signum, frame):
    raise KeyboardInterrupt()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    prefix = os.path.abspath(os.path.expanduser(args.prefix))
    release_dir = lock = None
    try:
        if args.keep < 1:
            raise InstallError("--keep must be >= 1 (the current release), got {}".format(args.keep))
        if args.systemd:
            unit_values(args, prefix)  # refuse a bad unit value before anything is installed
        manifest = load_manifest(HERE)
        say("pack {} for {} / Python {} (ecgedge {}, task {})".format(
            manifest["pack_id"], manifest["target"]["platform"], manifest["target"]["python"],
            manifest["versions"]["ecgedge"], manifest["bundle"]["task"]))
        check_platform(manifest)
        check_files(HERE, manifest)
        check_bundle(HERE)
        say("all {} files match pack.json; bundle sha256 {}".format(
            len(manifest["files"]), manifest["bundle"]["sha256"][:16]))
        offline = args.offline or (manifest.get("offline") and not args.online)
        if offline and not manifest.get("offline"):
            raise InstallError("--offline needs a pack built with `ecgedge device pack --offline`")
        check_space(prefix, manifest)
        os.makedirs(prefix, exist_ok=True)
        lock = take_lock(prefix)
        check_current_link(prefix)
        current = current_release(prefix)
        if current and not args.force and os.path.exists(os.path.join(current, "pack.json")):
            with open(os.path.join(current, "pack.json"), encoding="utf-8") as f:
                if json.load(f).get("pack_id") == manifest["pack_id"]:
                    say("this pack is already the current release {}; checking it".format(current))
                    run_selftest(current)
                    if args.systemd:
                        install_systemd(args, prefix)
                    return 0
        releases = real_dir(os.path.join(prefix, "releases"), "the release folder")
        release_dir = make_release_dir(releases, manifest)
        install_release(HERE, manifest, release_dir, offline, args.index_url)
        run_selftest(release_dir)
        create_file(os.path.join(release_dir, COMPLETE_MARK), time.strftime("%Y-%m-%dT%H:%M:%S%z\n"))
        switch_current(prefix, release_dir)
        done, release_dir = release_dir, None
        # Only now, with the new release live: old releases this installer made, beyond --keep.
        _, foreign = prune_releases(releases, keep=args.keep, protect=[done] + ([current] if current else []))
        if foreign:
            say("left alone in {} (not made by this installer): {}".format(
                releases, ", ".join(os.path.basename(p) for p in foreign)))
        if args.systemd:
            install_systemd(args, prefix)
        say("installed {} -> {}".format(os.path.join(prefix, "current"), done))
        say("run it with: {}/current/venv/bin/ecgedge device run --bundle {}/current/bundle --input ...".format(prefix, prefix))
        return 0
    except InstallError as exc:
        print("install: error: {}".format(exc), file=sys.stderr, flush=True)
        return 2
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            print("install: error: no space left on device while writing under {}; free some "
                  "space or choose another --prefix".format(prefix), file=sys.stderr, flush=True)
        else:
            print("install: error: {}".format(exc), file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("install: error: interrupted", file=sys.stderr, flush=True)
        return 130
    finally:
        # release_dir is set only once this process has made the folder (mkdir, never reused).
        if release_dir is not None and os.path.isdir(release_dir) and not os.path.islink(release_dir):
            say("removing the unfinished release {}".format(release_dir))
            shutil.rmtree(release_dir, ignore_errors=True)
        if lock is not None:
            os.close(lock)


if __name__ == "__main__":
    sys.exit(main())
