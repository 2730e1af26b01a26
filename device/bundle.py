"""The model bundle: ``model.tflite`` plus ``model.json``, a manifest that says everything the
device needs (DSP, rates, window, classes, quantization) and the hash of the model; and, when
the run trained one, ``rhythm_head.npz``, the trees the device combines with the model (format
version 2; version 1 bundles have no rhythm head and still load).

``convert`` writes bundles with :func:`write_bundle`; the device reads them with
:func:`load_bundle`, which refuses a missing file, a hash mismatch or another format version.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ecgedge.device.dsp import SpectrogramConfig
from ecgedge.device.errors import EcgEdgeError
from ecgedge.device.rhythm import COMBINE_RULE, FEATURE_NAMES

FORMAT = "ecgedge-bundle"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MODEL_FILE = "model.tflite"
RHYTHM_HEAD_FILE = "rhythm_head.npz"
MANIFEST_FILE = "model.json"

# Keys every manifest has; write_bundle fills format, format_version, model_file, sha256, bytes.
REQUIRED_KEYS = (
    "format", "format_version", "task", "classes", "label_map", "lead", "spectrogram",
    "window_s", "hop_s", "input", "output", "quantization", "model_file", "sha256", "bytes",
)


def sha256_file(path):
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A loaded, hash-checked bundle.

    Attributes
    ----------
    path : the bundle directory.
    manifest : the parsed ``model.json`` (dict).
    """

    path: Path
    manifest: dict

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
    def label_map(self):
        """Rhythm annotation label (e.g. ``(AFIB``) -> class name."""
        return dict(self.manifest["label_map"])


def write_bundle(out_dir, tflite_bytes, manifest, rhythm_head=None):
    """Write ``model.tflite`` and ``model.json`` into ``out_dir`` and return the loaded Bundle.

    ``manifest`` holds every key of REQUIRED_KEYS except those filled here (format,
    format_version, model_file, sha256, bytes); extra keys (training metrics, versions,
    representative set) are kept as given. ``rhythm_head``, the bytes of a tree file
    (``ecgedge.train.rhythm_head``), is written as ``rhythm_head.npz`` and described in the
    manifest's ``rhythm_head`` (file, sha256, bytes, feature names, how it is combined).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    model_path.write_bytes(tflite_bytes)
    full = dict(manifest)
    full.pop("rhythm_head", None)
    head_path = out_dir / RHYTHM_HEAD_FILE
    if rhythm_head is not None:
        head_path.write_bytes(rhythm_head)
        full["rhythm_head"] = {"file": RHYTHM_HEAD_FILE, "sha256": sha256_file(head_path),
                               "bytes": head_path.stat().st_size, "features": list(FEATURE_NAMES),
                               "combine": COMBINE_RULE}
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
    (out_dir / MANIFEST_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return load_bundle(out_dir)


def load_bundle(path):
    """Read and check a bundle directory (or its ``model.json``); return a Bundle.

    Raises EcgEdgeError, naming the file and what to do, when the manifest is missing or not
    JSON, comes from another format or version, lacks keys, or the model's sha256 or size
    differs from the manifest's.
    """
    path = Path(path)
    if path.name == MANIFEST_FILE:
        path = path.parent
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise EcgEdgeError(
            f"{manifest_path} not found: a bundle is a folder with {MODEL_FILE} and {MANIFEST_FILE}, "
            "made by 'ecgedge convert quantize'"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EcgEdgeError(f"{manifest_path} is not valid JSON ({exc}); rebuild the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EcgEdgeError(f"{manifest_path} is not an ecgedge bundle manifest (format != {FORMAT!r})")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise EcgEdgeError(
            f"{manifest_path} has bundle format version {version}, this ecgedge reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}: rebuild the bundle with this version's "
            "'ecgedge convert quantize' or install the ecgedge that made it"
        )
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise EcgEdgeError(f"{manifest_path} lacks {missing}; rebuild the bundle")
    model_path = path / manifest["model_file"]
    if not model_path.is_file():
        raise EcgEdgeError(f"{model_path} not found; the bundle is incomplete")
    size = model_path.stat().st_size
    if size != manifest["bytes"] or sha256_file(model_path) != manifest["sha256"]:
        raise EcgEdgeError(
            f"{model_path} does not match its manifest (sha256 or size differs: {size} bytes, "
            f"manifest says {manifest['bytes']}): the file was changed or truncated; copy the "
            "bundle again"
        )
    if "rhythm_head" in manifest:
        _check_rhythm_head(path, manifest["rhythm_head"], manifest_path)
    return Bundle(path=path, manifest=manifest)


def _check_rhythm_head(path, head, manifest_path):
    """Refuse a rhythm head whose file, hash, features or combination rule this runtime does not match."""
    if not isinstance(head, dict) or not {"file", "sha256", "bytes", "features", "combine"} <= set(head):
        raise EcgEdgeError(f"{manifest_path}: its rhythm_head entry is incomplete; rebuild the bundle")
    if Path(str(head["file"])).name != head["file"]:
        raise EcgEdgeError(f"{manifest_path}: the rhythm head file {head['file']!r} must sit in the bundle folder")
    head_path = path / head["file"]
    if not head_path.is_file():
        raise EcgEdgeError(f"{head_path} not found; the bundle is incomplete (copy the whole folder)")
    if head_path.stat().st_size != head["bytes"] or sha256_file(head_path) != head["sha256"]:
        raise EcgEdgeError(f"{head_path} does not match its manifest (sha256 or size differs); copy the bundle again")
    unknown = sorted(set(head["features"]) - set(FEATURE_NAMES))
    if unknown or head["combine"] != COMBINE_RULE:
        raise EcgEdgeError(
            f"{manifest_path}: its rhythm head was trained on rhythm features this ecgedge does not compute "
            f"({unknown}) or combines differently ({head['combine']!r}); install the ecgedge version that made "
            "the bundle or rebuild it"
        )
