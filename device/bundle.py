"""The model bundle: ``model.tflite`` plus ``model.json``, a manifest that says everything the
device needs (DSP, rates, window, classes, quantization) and the hash of the model; and, when
the run trained one, ``rhythm_head.npz``, the trees the device combines with the model; and,
when its owner signed it, ``model.sig`` (``ecgedge.device.signing``).

``convert`` writes bundles with :func:`write_bundle`; the device reads them with
:func:`load_bundle`, which treats every byte of the folder as untrusted:

1. ``model.json`` is read only up to MAX_MANIFEST_BYTES and MAX_JSON_DEPTH levels of nesting;
2. every key the device reads is checked by type and range (:func:`check_manifest`), and a
   bundle can not ask for absurd memory (a hop of 0, a 10^9 s window, a 2 GB rhythm head);
   a mistake is one line naming the key and the value received;
3. each file the manifest names must have its sha256 and size;
4. the **bundle digest** (format version 3), one sha256 over the canonical JSON of the whole
   manifest and every file's sha256 (:func:`bundle_digest`), must match the one
   ``write_bundle`` wrote, so an edited class order, scale, spectrogram or label map, or files
   mixed from two bundles, are refused; the message names the keys that changed;
5. with trusted keys (``trusted_keys=`` or ``ECGEDGE_TRUSTED_KEYS``), ``model.sig`` must be a
   valid Ed25519 signature of that digest by one of them.

Format versions 1 and 2 (no digest) still load, with ``Bundle.verified_digest`` False, and
pass every check but 4: the digest guards against accidents, not attackers (anyone who edits
a manifest on purpose can recompute an unsigned digest), so refusing bundles already on
devices would cost an upgrade without buying safety; the safety against deliberate edits is
the signature, and a device that trusts keys refuses them, since they can not be signed.
"""

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgedge.device.decision import rule_from_manifest
from ecgedge.device.dsp import SpectrogramConfig
from ecgedge.device.errors import BundleError, EcgEdgeError
from ecgedge.device.rhythm import (BEAT_DETECTOR, BEAT_DETECTORS, COMBINE_RULE, COMBINE_RULES, FEATURE_NAMES,
                                   GEOMETRIC_MEAN_WEIGHT, cnn_weights)

FORMAT = "ecgedge-bundle"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
MODEL_FILE = "model.tflite"
RHYTHM_HEAD_FILE = "rhythm_head.npz"
MANIFEST_FILE = "model.json"
SIGNATURE_FILE = "model.sig"
DIGEST_KEY = "bundle_digest"

# Keys every manifest has; write_bundle fills format, format_version, model_file, sha256, bytes
# and, from format version 3, bundle_digest.
REQUIRED_KEYS = (
    "format", "format_version", "task", "classes", "label_map", "lead", "spectrogram",
    "window_s", "hop_s", "input", "output", "quantization", "model_file", "sha256", "bytes",
)
FILLED_BY_WRITE = ("format", "format_version", "model_file", "sha256", "bytes", DIGEST_KEY)

# What a manifest may ask of a device. The shipped tasks use 128-360 Hz, 10 s windows, 128x128x3
# images and 4 classes: these bounds leave room for other ECG tasks, not for absurd memory.
MAX_MANIFEST_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
MAX_SECONDS = 600.0  # window_s and hop_s
MIN_HOPS_PER_WINDOW = 100  # hop_s >= window_s / 100: at most 100 windows overlap a sample
MAX_MODEL_FS = 20_000.0  # Hz
MAX_WINDOW_SAMPLES = 1 << 22  # window_s * fs
MAX_NFFT = 1 << 16
MAX_CHANNELS = 16
MAX_IMAGE_VALUES = 1 << 22  # n_freq x n_time x channels (16 MiB of float32)
MAX_STFT_VALUES = 1 << 23  # n_time x nfft of one channel
MAX_CLASSES = 256
MAX_NAME_CHARS = 256
MAX_LABELS = 4096
MAX_TENSOR_VALUES = 1 << 24
RESERVED_CLASSES = ("unclassified",)  # the episode summary's name for time without a label
IO_DTYPES = {"int8": (-128, 127), "uint8": (0, 255), "float32": (-(1 << 31), (1 << 31) - 1)}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path):
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def canonical_json(obj):
    """The bytes the digest is taken over: sorted keys, no spaces, ASCII (Python's float repr)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def bundle_digest(manifest, file_sha256):
    """The bundle digest: hex sha256 of ``canonical_json({"files": ..., "manifest": ...})``.

    Parameters
    ----------
    manifest : dict, the parsed ``model.json``; its ``bundle_digest`` entry is left out.
    file_sha256 : dict {file name in the bundle: hex sha256 of its bytes} of every file the
        manifest names (the model, the rhythm head).

    ``deploy/packfiles/install.py`` computes the same with the standard library on the device.
    """
    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    return hashlib.sha256(canonical_json({"files": dict(file_sha256), "manifest": body})).hexdigest()


def _part_hashes(manifest):
    """{key: 12 hex digits of its value's sha256}: says which keys changed when the digest differs."""
    return {k: hashlib.sha256(canonical_json(v)).hexdigest()[:12] for k, v in manifest.items() if k != DIGEST_KEY}


def bundle_files(manifest):
    """{file name: role} of the files a (checked) manifest names."""
    files = {manifest["model_file"]: "model"}
    if manifest.get("rhythm_head") is not None:
        files[manifest["rhythm_head"]["file"]] = "rhythm head"
    return files


@dataclass(frozen=True)
class Bundle:
    """A loaded, checked bundle.

    Attributes
    ----------
    path : the bundle directory.
    manifest : the parsed, checked ``model.json`` (dict; a ``lead`` given as one name is a list).
    digest : hex sha256 of the whole bundle (:func:`bundle_digest`), recomputed on load.
    verified_digest : True when the manifest carried a digest and it matched (format version 3);
        False for versions 1 and 2, which have none.
    signed_by : id of the trusted key whose signature was verified, or None (no keys trusted).
    """

    path: Path
    manifest: dict
    digest: str = ""
    verified_digest: bool = False
    signed_by: object = None

    @property
    def model_path(self):
        return self.path / self.manifest["model_file"]

    @property
    def classes(self):
        return list(self.manifest["classes"])

    @property
    def spectrogram(self):
        return SpectrogramConfig.from_dict(self.manifest["spectrogram"])

    @property
    def window_s(self):
        return float(self.manifest["window_s"])

    @property
    def hop_s(self):
        return float(self.manifest["hop_s"])

    @property
    def rhythm_head_path(self):
        """The rhythm head's tree file, or None for a bundle without one."""
        head = self.manifest.get("rhythm_head")
        return None if head is None else self.path / head["file"]

    @property
    def rhythm_features(self):
        """Names of the rhythm features the head was trained on, in its column order (None without a head)."""
        head = self.manifest.get("rhythm_head")
        return None if head is None else list(head["features"])

    @property
    def beat_detector(self):
        """The beat detector whose beats the rhythm head was trained on (``rhythm.detect_beats``;
        1 for bundles made before the manifest named it), or None without a rhythm head."""
        head = self.manifest.get("rhythm_head")
        return None if head is None else head.get("beat_detector", 1)

    @property
    def cnn_weights(self):
        """The CNN's weight per class in ``ecgedge.device.rhythm.combine`` (ndarray, float64; 0.5
        each for a ``geometric_mean`` bundle), or None without a rhythm head."""
        head = self.manifest.get("rhythm_head")
        if head is None:
            return None
        return np.asarray(head.get("cnn_weights", [GEOMETRIC_MEAN_WEIGHT] * len(self.classes)), dtype=np.float64)

    @property
    def label_map(self):
        """Rhythm annotation label (e.g. ``(AFIB``) -> class name."""
        return dict(self.manifest["label_map"])


def write_manifest(out_dir, manifest):
    """Write ``model.json`` with a fresh bundle digest over ``manifest`` and the files it names.

    ``write_bundle`` ends here; tools (and tests) that change a manifest on purpose call it to
    re-seal the bundle. A signature made before no longer matches and must be made again.
    """
    out_dir = Path(out_dir)
    full = json.loads(json.dumps({k: v for k, v in manifest.items() if k != DIGEST_KEY}))  # as load reads it
    files = {name: sha256_file(out_dir / name) for name in bundle_files(full)}
    full[DIGEST_KEY] = {"sha256": bundle_digest(full, files), "parts": _part_hashes(full)}
    (out_dir / MANIFEST_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    signature = out_dir / SIGNATURE_FILE
    if signature.is_file():
        signature.unlink()  # it signed another digest


def write_bundle(out_dir, tflite_bytes, manifest, rhythm_head=None, beat_detector=BEAT_DETECTOR):
    """Write ``model.tflite`` and ``model.json`` into ``out_dir`` and return the loaded Bundle.

    ``manifest`` holds every key of REQUIRED_KEYS except those filled here (FILLED_BY_WRITE:
    format, format_version, model_file, sha256, bytes, bundle_digest); extra keys (training
    metrics, versions, representative set) are kept as given. ``rhythm_head``, the bytes of a
    tree file (``ecgedge.train.rhythm_head``), is written as ``rhythm_head.npz`` and described in
    the manifest's ``rhythm_head`` (file, sha256, bytes, feature names, how it is combined, and
    ``beat_detector``, the detector whose beats its features were computed from).
    The bundle is loaded back with :func:`load_bundle` (no signature asked: it has none yet).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    model_path.write_bytes(tflite_bytes)
    full = {k: v for k, v in manifest.items() if k not in FILLED_BY_WRITE}
    full.pop("rhythm_head", None)
    head_path = out_dir / RHYTHM_HEAD_FILE
    if rhythm_head is not None:
        head_path.write_bytes(rhythm_head)
        full["rhythm_head"] = {"file": RHYTHM_HEAD_FILE, "sha256": sha256_file(head_path),
                               "bytes": head_path.stat().st_size, "features": list(FEATURE_NAMES),
                               "combine": COMBINE_RULE, "cnn_weights": cnn_weights(full["classes"]).tolist(),
                               "beat_detector": int(beat_detector)}
    elif head_path.exists():
        head_path.unlink()  # a rhythm head of an earlier bundle in this folder
    full.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        model_file=MODEL_FILE,
        sha256=sha256_file(model_path),
        bytes=model_path.stat().st_size,
    )
    missing = [k for k in REQUIRED_KEYS if k not in full]
    if missing:
        raise ValueError(f"bundle manifest lacks {missing}")
    write_manifest(out_dir, full)
    return load_bundle(out_dir, trusted_keys=())


def load_bundle(path, trusted_keys=None):
    """Read and check a bundle directory (or its ``model.json``); return a Bundle.

    Parameters
    ----------
    path : bundle folder, or its ``model.json``.
    trusted_keys : paths of Ed25519 public keys (files, or folders of ``*.pub`` files) whose
        signature the bundle must carry; ``()`` asks for none; None (the default) reads them
        from ``$ECGEDGE_TRUSTED_KEYS`` (``os.pathsep``-separated), no signature when unset.

    Raises BundleError, in one line naming the file or key, when the manifest is missing, too
    large, not JSON, of another format or version, lacks keys or has a value of the wrong type
    or range; when a file differs from its sha256 or size; when the bundle digest differs; when
    trusted keys are given and ``model.sig`` is missing or not a valid signature by one of them.
    """
    from ecgedge.device import signing

    path = Path(path)
    if path.name == MANIFEST_FILE:
        path = path.parent
    manifest_path = path / MANIFEST_FILE
    keys = signing.trusted_key_paths(trusted_keys)
    manifest = check_manifest(read_manifest(manifest_path), manifest_path)
    file_sha256 = {name: _checked_file_sha256(path, manifest, name, role)
                   for name, role in bundle_files(manifest).items()}
    digest = bundle_digest(manifest, file_sha256)
    verified = DIGEST_KEY in manifest
    if verified and digest != manifest[DIGEST_KEY]["sha256"]:
        changed = [k for k, h in _part_hashes(manifest).items() if manifest[DIGEST_KEY]["parts"].get(k) != h]
        changed += [k for k in manifest[DIGEST_KEY]["parts"] if k not in manifest]
        raise BundleError(
            f"{manifest_path} does not match its bundle digest (changed after it was written: "
            f"{', '.join(sorted(changed)) or 'bundle_digest'}): the bundle was edited or mixed with "
            "another's; copy or rebuild it"
        )
    if manifest.get("rhythm_head") is not None:
        _check_trees(path / manifest["rhythm_head"]["file"], manifest, manifest_path)
    signed_by = None
    if keys:
        if not verified:
            raise BundleError(
                f"{manifest_path} is of format version {manifest['format_version']}, which has no bundle "
                f"digest to sign, and trusted keys are set; rebuild the bundle and sign it "
                "('ecgedge device sign')"
            )
        signed_by = signing.verify_bundle_signature(path, digest, keys)
    if isinstance(manifest["lead"], str):
        manifest["lead"] = [manifest["lead"]]
    return Bundle(path=path, manifest=manifest, digest=digest, verified_digest=verified, signed_by=signed_by)


# ---------------------------------------------------------------------------------------------
# Reading and checking the manifest


def read_manifest(manifest_path):
    """The parsed ``model.json`` (dict), read as untrusted: size, encoding, JSON and depth checked."""
    manifest_path = Path(manifest_path)
    try:
        with open(manifest_path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise BundleError(
            f"{manifest_path} not found: a bundle is a folder with {MODEL_FILE} and {MANIFEST_FILE}, "
            "made by 'ecgedge convert quantize'"
        ) from None
    except OSError as exc:
        raise BundleError(f"can not read {manifest_path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path} is larger than {MAX_MANIFEST_BYTES} bytes; a manifest is a few KB")
    try:
        # RecursionError: JSON nested deeper than the parser's stack; ValueError covers bad
        # UTF-8 and integers of more than 4300 digits.
        manifest = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
        raise BundleError(f"{manifest_path} is not valid JSON ({reason}); rebuild the bundle") from None
    if _depth(manifest) > MAX_JSON_DEPTH:
        raise BundleError(f"{manifest_path} nests deeper than {MAX_JSON_DEPTH} levels; a manifest is flat")
    return manifest


def _depth(obj):
    """Nesting depth of parsed JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_JSON_DEPTH:
            children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
            stack.extend((c, depth + 1) for c in children)
    return deepest


def _show(value):
    """The value as the message echoes it: repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Checker:
    """Type and range checks of one manifest; each failure is one BundleError naming the key."""

    def __init__(self, manifest_path):
        self.where = manifest_path

    def fail(self, key, wanted, value):
        raise BundleError(f"{self.where}: {key} must be {wanted}, got {_show(value)}")

    def number(self, key, value, low, high, low_open=True):
        """A finite int or float in (low, high] (or [low, high] with low_open False), as float."""
        bound = f"{'>' if low_open else '>='} {low:g} and <= {high:g}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"a finite number {bound}", value)
        try:
            f = float(value)
        except OverflowError:
            f = math.inf
        if not (math.isfinite(f) and (f > low if low_open else f >= low) and f <= high):
            self.fail(key, f"a finite number {bound}", value)
        return f

    def integer(self, key, value, low, high):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(key, f"an integer in {low}..{high}", value)
        return value

    def name(self, key, value, what="a non-empty string"):
        if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS:
            self.fail(key, f"{what} of at most {MAX_NAME_CHARS} characters", value)
        return value

    def file_name(self, key, value):
        self.name(key, value)
        if value in (".", "..", MANIFEST_FILE, SIGNATURE_FILE) or "/" in value or "\\" in value or "\0" in value:
            raise BundleError(f"{self.where}: {key} {value!r} must be a file name in the bundle folder "
                              "(it must sit in the bundle folder)")
        return value

    def sha256(self, key, value):
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            self.fail(key, "64 lowercase hex digits (a sha256)", value)
        return value

    def mapping(self, key, value):
        if not isinstance(value, dict):
            self.fail(key, "an object", value)
        return value

    def names(self, key, value, low, high, unique=True):
        if not isinstance(value, list) or not low <= len(value) <= high:
            self.fail(key, f"a list of {low}..{high} strings", value)
        for i, item in enumerate(value):
            self.name(f"{key}[{i}]", item)
        if unique and len(set(value)) != len(value):
            self.fail(key, "a list of unique names", value)
        return value


def check_manifest(manifest, manifest_path=MANIFEST_FILE):
    """Check every key of a parsed manifest the device reads, by type and range; return it.

    Keys the device does not read (training metrics, versions, ``decision``, whose own module
    checks it) are kept as they are. Raises BundleError naming the key and the value received.
    """
    c = _Checker(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path} is not an ecgedge bundle manifest (format != {FORMAT!r})")
    version = manifest.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise BundleError(
            f"{manifest_path} has bundle format version {_show(version)}, this ecgedge reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}: rebuild the bundle with this version's "
            "'ecgedge convert quantize' or install the ecgedge that made it"
        )
    required = REQUIRED_KEYS + ((DIGEST_KEY,) if version >= 3 else ())
    missing = [k for k in required if k not in manifest]
    if missing:
        raise BundleError(f"{manifest_path} lacks {missing}; rebuild the bundle")
    c.name("task", manifest["task"])
    classes = c.names("classes", manifest["classes"], 2, MAX_CLASSES)
    reserved = sorted(set(classes) & set(RESERVED_CLASSES))
    if reserved:
        c.fail("classes", f"names other than {list(RESERVED_CLASSES)}", classes)
    labels = c.mapping("label_map", manifest["label_map"])
    if len(labels) > MAX_LABELS:
        c.fail("label_map", f"an object of at most {MAX_LABELS} labels", f"{len(labels)} labels")
    for label, cls in labels.items():
        c.name("label_map key", label)
        if cls not in classes:
            c.fail(f"label_map[{label!r}]", f"one of the classes {classes}", cls)
    lead = manifest["lead"]
    if isinstance(lead, str):
        c.name("lead", lead)
    elif isinstance(lead, list):
        c.names("lead", lead, 0, 64)
    else:
        c.fail("lead", "a lead name or a list of lead names", lead)
    if "lead_fallback" in manifest and manifest["lead_fallback"] not in ("first", "none"):
        c.fail("lead_fallback", "'first' or 'none'", manifest["lead_fallback"])
    c.name("quantization", manifest["quantization"])
    cfg = _check_spectrogram(c, manifest["spectrogram"])
    window_s = c.number("window_s", manifest["window_s"], 0, MAX_SECONDS)
    if abs(window_s - cfg.window_s) > 1e-9:
        c.fail("window_s", f"the spectrogram's window_s {cfg.window_s:g}", manifest["window_s"])
    c.number("hop_s", manifest["hop_s"], window_s / MIN_HOPS_PER_WINDOW, MAX_SECONDS, low_open=False)
    _check_tensor_spec(c, "input", manifest["input"], [1, *cfg.image_shape])
    _check_tensor_spec(c, "output", manifest["output"], [1, len(classes)])
    c.file_name("model_file", manifest["model_file"])
    c.sha256("sha256", manifest["sha256"])
    c.integer("bytes", manifest["bytes"], 0, 1 << 40)
    if "rhythm_head" in manifest:
        _check_head_entry(c, manifest["rhythm_head"], manifest["model_file"], manifest_path, len(manifest["classes"]))
    if "decision" in manifest:  # the recording-level rule (ecgedge.device.decision checks its own)
        rule_from_manifest(manifest["decision"], classes, manifest_path)
    if DIGEST_KEY in manifest:
        entry = c.mapping(DIGEST_KEY, manifest[DIGEST_KEY])
        c.sha256(f"{DIGEST_KEY}.sha256", entry.get("sha256"))
        parts = c.mapping(f"{DIGEST_KEY}.parts", entry.get("parts"))
        if not all(isinstance(v, str) for v in parts.values()):
            c.fail(f"{DIGEST_KEY}.parts", "an object of strings", parts)
    return manifest


OPTIONAL_SPECTROGRAM = ("lowpass_hz",)
"""Spectrogram settings a manifest may leave out (bundles made before them)."""


def _check_spectrogram(c, spec):
    """The manifest's spectrogram as a validated SpectrogramConfig within the memory bounds."""
    c.mapping("spectrogram", spec)
    fields = list(SpectrogramConfig.__dataclass_fields__)
    missing = [k for k in fields if k not in spec and k not in OPTIONAL_SPECTROGRAM]
    unknown = sorted(set(spec) - set(fields))
    if missing or unknown:
        c.fail("spectrogram", f"an object of exactly {fields}", spec)
    fs = c.number("spectrogram.fs", spec["fs"], 0, MAX_MODEL_FS)
    window_s = c.number("spectrogram.window_s", spec["window_s"], 0, MAX_SECONDS)
    if fs * window_s > MAX_WINDOW_SAMPLES:
        c.fail("spectrogram.fs x window_s", f"at most {MAX_WINDOW_SAMPLES} samples", fs * window_s)
    hop = c.integer("spectrogram.hop", spec["hop"], 1, MAX_WINDOW_SAMPLES)
    channels = spec["channels"]
    if not isinstance(channels, list) or not 1 <= len(channels) <= MAX_CHANNELS:
        c.fail("spectrogram.channels", f"a list of 1..{MAX_CHANNELS} [nperseg, nfft] pairs", channels)
    for i, pair in enumerate(channels):
        if not isinstance(pair, list) or len(pair) != 2:
            c.fail(f"spectrogram.channels[{i}]", "an [nperseg, nfft] pair", pair)
        nperseg = c.integer(f"spectrogram.channels[{i}][0]", pair[0], 2, MAX_NFFT)
        c.integer(f"spectrogram.channels[{i}][1]", pair[1], nperseg, MAX_NFFT)
    c.integer("spectrogram.n_freq", spec["n_freq"], 1, MAX_NFFT // 2 + 1)
    c.number("spectrogram.eps", spec["eps"], 0, 1e6)
    if spec.get("lowpass_hz") is not None:
        c.number("spectrogram.lowpass_hz", spec["lowpass_hz"], 0, fs / 2)
    try:
        cfg = SpectrogramConfig.from_dict(spec)
    except EcgEdgeError as exc:
        raise BundleError(f"{c.where}: spectrogram: {exc}") from None
    n_time = cfg.n_samples // cfg.hop
    if math.prod(cfg.image_shape) > MAX_IMAGE_VALUES:
        c.fail("spectrogram", f"an image of at most {MAX_IMAGE_VALUES} values", f"shape {cfg.image_shape}")
    if n_time * max(nfft for _, nfft in cfg.channels) > MAX_STFT_VALUES:
        c.fail("spectrogram.hop", f"a hop giving at most {MAX_STFT_VALUES} STFT values per channel", hop)
    return cfg


def _check_tensor_spec(c, key, spec, shape):
    """``input``/``output``: shape as the model implies, dtype, scale and zero point in range."""
    c.mapping(key, spec)
    for field in ("shape", "dtype", "scale", "zero_point"):
        if field not in spec:
            c.fail(key, "an object with shape, dtype, scale and zero_point", spec)
    if spec["shape"] != shape:
        c.fail(f"{key}.shape", f"{shape} (from the spectrogram and classes)", spec["shape"])
    dtype = spec["dtype"]
    if not isinstance(dtype, str) or dtype not in IO_DTYPES:
        c.fail(f"{key}.dtype", f"one of {list(IO_DTYPES)}", dtype)
    if dtype == "float32":  # a float tensor is not quantized: TFLite reports scale 0, zero point 0
        c.number(f"{key}.scale", spec["scale"], 0, 1e30, low_open=False)
    else:
        c.number(f"{key}.scale", spec["scale"], 0, 1e30)
    c.integer(f"{key}.zero_point", spec["zero_point"], *IO_DTYPES[dtype])


def _check_head_entry(c, head, model_file, manifest_path, n_classes):
    """The manifest's ``rhythm_head`` entry: file, sha256, bytes, features this ecgedge computes, rule."""
    if not isinstance(head, dict) or not {"file", "sha256", "bytes", "features", "combine"} <= set(head):
        raise BundleError(f"{manifest_path}: its rhythm_head entry is incomplete; rebuild the bundle")
    c.file_name("rhythm_head.file", head["file"])
    if head["file"] == model_file:
        c.fail("rhythm_head.file", "a file other than the model", head["file"])
    c.sha256("rhythm_head.sha256", head["sha256"])
    c.integer("rhythm_head.bytes", head["bytes"], 0, 1 << 40)
    features = c.names("rhythm_head.features", head["features"], 1, 4 * len(FEATURE_NAMES))
    detector = head.get("beat_detector", 1)
    c.integer("rhythm_head.beat_detector", detector, 1, 1 << 20)
    if detector not in BEAT_DETECTORS:
        raise BundleError(f"{manifest_path}: its rhythm head was trained on the beats of detector {detector}, which "
                          f"this ecgedge does not have (it has {list(BEAT_DETECTORS)}); install the ecgedge version "
                          f"that made the bundle, or rebuild the bundle with this one")
    if not isinstance(head["combine"], str):
        c.fail("rhythm_head.combine", repr(COMBINE_RULE), head["combine"])
    if head["combine"] == COMBINE_RULE:
        weights = head.get("cnn_weights")
        if not isinstance(weights, list) or len(weights) != n_classes:
            c.fail("rhythm_head.cnn_weights", f"a list of {n_classes} numbers in [0, 1], one per class", weights)
        for i, w in enumerate(weights):
            c.number(f"rhythm_head.cnn_weights[{i}]", w, 0, 1, low_open=False)
    unknown = sorted(set(features) - set(FEATURE_NAMES))
    if unknown or head["combine"] not in COMBINE_RULES:
        raise BundleError(
            f"{manifest_path}: its rhythm head was trained on rhythm features this ecgedge does not compute "
            f"({unknown}) or combines differently ({head['combine']!r}); install the ecgedge version that made "
            "the bundle or rebuild it"
        )


def _checked_file_sha256(path, manifest, name, role):
    """sha256 of one file the manifest names, after checking it against the manifest's size and hash."""
    entry = manifest if role == "model" else manifest["rhythm_head"]
    file_path = path / name
    if not file_path.is_file():
        raise BundleError(f"{file_path} not found; the bundle is incomplete (copy the whole folder)")
    size = file_path.stat().st_size
    digest = sha256_file(file_path)
    if size != entry["bytes"] or digest != entry["sha256"]:
        raise BundleError(
            f"{file_path} does not match its manifest (sha256 or size differs: {size} bytes, manifest says "
            f"{entry['bytes']}): the file was changed, truncated or taken from another bundle; copy the "
            "bundle again"
        )
    return digest


def _check_trees(head_path, manifest, manifest_path):
    """Load the rhythm head's trees once (bounded, checked) and match them to the manifest."""
    from ecgedge.device.trees import load_trees

    trees = load_trees(head_path)
    n_features = len(manifest["rhythm_head"]["features"])
    if trees.n_classes != len(manifest["classes"]) or trees.n_features > n_features:
        raise BundleError(
            f"{head_path} scores {trees.n_classes} classes from {trees.n_features} features; {manifest_path} "
            f"says {len(manifest['classes'])} classes (classes) and {n_features} features (rhythm_head.features)"
        )
