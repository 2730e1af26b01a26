"""Ed25519 signatures of bundles: the owner's key signs the bundle digest, the device checks it.

The bundle digest (``ecgedge.device.bundle.bundle_digest``) covers the manifest and every
file, but anyone who edits a bundle on purpose can recompute it. A signature can only be made
with the owner's private key, so a device given the matching public key (``load_bundle(...,
trusted_keys=...)``, ``--trust`` or ``$ECGEDGE_TRUSTED_KEYS``) refuses every bundle its owner
did not sign, unsigned ones included.

Files
-----
``KEYDIR/bundle-signing.key``
    the private key, PKCS#8 PEM, unencrypted, mode 0600 (``ecgedge device keygen``). Keep it off
    the device and out of version control; it is refused when others may read it.
``KEYDIR/bundle-signing.pub``
    the public key, SubjectPublicKeyInfo PEM: what a device trusts.
``BUNDLE/model.sig``
    JSON: format, version, algorithm ``ed25519``, ``key_id`` (first 16 hex digits of the
    sha256 of the raw 32-byte public key), the signed ``digest`` and the base64 ``signature``
    of ``b"ecgedge-bundle-signature-v1\\n" + digest`` (ASCII hex).

The ``cryptography`` package (``pip install 'ecgedge[sign]'``) is imported only when a key is
made, a bundle signed or a signature checked; without trusted keys the device never needs it.
"""

import base64
import hashlib
import json
import os
from pathlib import Path

from ecgedge.device.errors import BundleError, ConfigError

ENV_TRUSTED_KEYS = "ECGEDGE_TRUSTED_KEYS"
PRIVATE_KEY_FILE = "bundle-signing.key"
PUBLIC_KEY_FILE = "bundle-signing.pub"
PUBLIC_KEY_SUFFIX = ".pub"
SIGNATURE_FILE = "model.sig"
SIGNATURE_FORMAT = "ecgedge-bundle-signature"
MESSAGE_PREFIX = b"ecgedge-bundle-signature-v1\n"
MAX_KEY_BYTES = 16 << 10
MAX_SIGNATURE_BYTES = 16 << 10
MAX_TRUSTED_KEYS = 256
INSTALL_HINT = "pip install 'ecgedge[sign]'"


def _crypto(why):
    """(ed25519 module, serialization module, InvalidSignature) of ``cryptography``, or a BundleError."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise BundleError(f"{why} needs the cryptography package: {INSTALL_HINT}") from None
    return ed25519, serialization, InvalidSignature


def key_id(public_key):
    """First 16 hex digits of the sha256 of an Ed25519 public key's 32 raw bytes."""
    _, serialization, _ = _crypto("reading a key")
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(out_dir):
    """Write a new key pair into ``out_dir`` (created 0700 when new); refuse to replace one.

    Returns
    -------
    (private key path, public key path, key id).
    """
    ed25519, serialization, _ = _crypto("making a signing key")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"can not make the key folder {out_dir}: {exc.strerror or exc}") from None
    private_path, public_path = out_dir / PRIVATE_KEY_FILE, out_dir / PUBLIC_KEY_FILE
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise ConfigError(f"{path} exists; move it away or choose another --out (a key is never overwritten)")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        _write_new(private_path, private_pem, 0o600)
        _write_new(public_path, public_pem, 0o644)
    except OSError as exc:
        raise ConfigError(f"can not write a key into {out_dir}: {exc.strerror or exc}") from None
    return private_path, public_path, key_id(key.public_key())


def _write_new(path, data, mode):
    """Create ``path`` with ``mode`` from the start (never through a link, never over a file)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _read_small(path, limit, what):
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise BundleError(f"can not read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise BundleError(f"{path} is larger than {limit} bytes; it is not {what}")
    return data


def load_private_key(path):
    """The Ed25519 private key of a PEM file that only its owner may read."""
    ed25519, serialization, _ = _crypto("signing a bundle")
    path = Path(path)
    data = _read_small(path, MAX_KEY_BYTES, "a private key")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise BundleError(f"{path} may be read by others (mode {path.stat().st_mode & 0o777:o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise BundleError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path):
    """The Ed25519 public key of a PEM file."""
    ed25519, serialization, _ = _crypto("checking a bundle signature")
    data = _read_small(path, MAX_KEY_BYTES, "a public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path} is not a PEM public key ({str(exc).splitlines()[0]})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise BundleError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def trusted_key_paths(trusted_keys=None):
    """The public key files to trust, as a list of Paths ([] when no signature is required).

    Parameters
    ----------
    trusted_keys : iterable of paths (files, or folders whose ``*.pub`` files are keys); None
        reads ``$ECGEDGE_TRUSTED_KEYS`` (paths separated by ``os.pathsep``; unset or empty: none).

    A path that does not exist, or a folder without ``*.pub`` files, is a BundleError: trust
    that was asked for and found nothing must not quietly become "no signature needed".
    """
    source = "--trust"
    if trusted_keys is None:
        source = ENV_TRUSTED_KEYS
        trusted_keys = [p for p in os.environ.get(ENV_TRUSTED_KEYS, "").split(os.pathsep) if p.strip()]
    elif isinstance(trusted_keys, (str, Path)):
        trusted_keys = [trusted_keys]
    files = []
    for entry in trusted_keys:
        path = Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.name.endswith(PUBLIC_KEY_SUFFIX) and p.is_file())
            if not found:
                raise BundleError(f"{source}: {path} holds no *{PUBLIC_KEY_SUFFIX} public keys")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise BundleError(f"{source}: trusted key {path} not found")
    if len(files) > MAX_TRUSTED_KEYS:
        raise BundleError(f"{source}: {len(files)} trusted keys, at most {MAX_TRUSTED_KEYS}")
    return files


def signature_message(digest):
    """The bytes an Ed25519 bundle signature signs."""
    return MESSAGE_PREFIX + digest.encode("ascii")


def sign_bundle(bundle_dir, private_key_path):
    """Sign a bundle's digest with a private key; write ``model.sig``; return its path and the key id.

    The bundle is loaded and checked first (no signature asked); bundles of format version 1
    or 2 have no digest and are refused.
    """
    from ecgedge.device.bundle import load_bundle

    key = load_private_key(private_key_path)
    bundle = load_bundle(bundle_dir, trusted_keys=())
    if not bundle.verified_digest:
        raise BundleError(f"{bundle.path}: format version {bundle.manifest['format_version']} has no bundle "
                          "digest to sign; rebuild it with this ecgedge ('ecgedge convert quantize')")
    signature = {
        "format": SIGNATURE_FORMAT, "version": 1, "algorithm": "ed25519", "key_id": key_id(key.public_key()),
        "digest": bundle.digest, "signature": base64.b64encode(key.sign(signature_message(bundle.digest))).decode(),
    }
    path = bundle.path / SIGNATURE_FILE
    tmp = path.with_name(f".{SIGNATURE_FILE}.{os.getpid()}.tmp")
    try:
        _write_new(tmp, (json.dumps(signature, indent=2, sort_keys=True) + "\n").encode(), 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise BundleError(f"can not write {path}: {exc.strerror or exc}") from None
    return path, signature["key_id"]


def _read_signature(path):
    """The fields of ``model.sig`` after checking their types; BundleError otherwise."""
    if not path.is_file():
        raise BundleError(f"{path} not found: trusted keys are set and the bundle is not signed "
                          "(sign it with 'ecgedge device sign')")
    try:
        sig = json.loads(_read_small(path, MAX_SIGNATURE_BYTES, "a bundle signature").decode("utf-8"))
    except (ValueError, RecursionError):
        sig = None
    if not (isinstance(sig, dict) and sig.get("format") == SIGNATURE_FORMAT and sig.get("version") == 1
            and sig.get("algorithm") == "ed25519"
            and all(isinstance(sig.get(k), str) for k in ("key_id", "digest", "signature"))):
        raise BundleError(f"{path} is not an ecgedge ed25519 bundle signature (version 1)")
    try:
        raw = base64.b64decode(sig["signature"], validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 64:
        raise BundleError(f"{path}: signature must be 64 bytes of base64, got {len(raw)} bytes")
    return sig, raw


def verify_bundle_signature(bundle_dir, digest, trusted_key_files):
    """Check ``model.sig`` against a bundle's (recomputed) digest and the trusted keys.

    Returns the id of the key that signed. Raises BundleError when the signature is missing,
    malformed, made for another digest, by a key not trusted, or does not verify; or, with a
    line saying what to install, when ``cryptography`` is missing.
    """
    _, _, invalid = _crypto("checking a bundle signature (trusted keys are set)")
    path = Path(bundle_dir) / SIGNATURE_FILE
    sig, raw = _read_signature(path)
    if sig["digest"] != digest:
        raise BundleError(f"{path} signs another bundle digest ({sig['digest'][:16]}..., the bundle's is "
                          f"{digest[:16]}...): the bundle changed after signing; sign it again")
    keys = {}
    for file in trusted_key_files:
        key = load_public_key(file)
        keys[key_id(key)] = key
    key = keys.get(sig["key_id"])
    if key is None:
        raise BundleError(f"{path} is signed by key {sig['key_id']!r}, which is not trusted "
                          f"(trusted: {', '.join(sorted(keys))})")
    try:
        key.verify(raw, signature_message(digest))
    except invalid:
        raise BundleError(f"{path}: the signature does not verify with trusted key {sig['key_id']!r}; "
                          "the signature was forged or damaged") from None
    return sig["key_id"]
