"""The on-device half of a pack: ``ecgedge device selftest`` classifies the windows that
``ecgedge device pack`` (:mod:`ecgedge.deploy.pack`) stored in ``selftest.npz`` and compares
with the labels and probabilities recorded on the host at pack time.

numpy and the device runtime only; the pack's installer runs it on the device before it makes a
release current.
"""

import time

import numpy as np

from ecgedge.device.bundle import load_bundle
from ecgedge.device.errors import EcgEdgeError


def classify_windows(bundle, x, fs):
    """Classify raw windows with the device runtime.

    Parameters
    ----------
    bundle : Bundle
    x : ndarray of shape (n, window_length(fs)), float32, raw signal at ``fs`` Hz.

    Returns
    -------
    labels : list of str (None where the runtime refused the window)
    probs : ndarray of shape (n, n_classes), float32, in ``bundle.classes`` order
    """
    from ecgedge.device.runtime import Classifier

    results = Classifier(bundle).classify_windows(np.asarray(x, dtype=np.float32), fs)
    nan = np.full(len(bundle.classes), np.nan, dtype=np.float32)
    probs = np.stack([nan if r.probs is None else np.asarray(r.probs, dtype=np.float32) for r in results])
    return [r.label for r in results], probs.reshape(len(results), len(bundle.classes))


def probability_tolerance(bundle):
    """How far a probability may move between machines: 16 output steps for int8, else 1e-3.

    Different CPUs run different kernels (NEON vs AVX, FMA) for the FFT and the model, so a
    spectrogram pixel can round to the neighbouring int8 value and the difference grows through
    the network's layers: arm64 under qemu vs x86_64 differed by up to 3 output steps (1/256
    each) with a small test model and by up to 7 with the 28-layer MobileNet of the demo
    bundle, labels equal. A broken runtime (wrong DSP, scale or zero point) moves
    probabilities by far more than 16 steps and changes labels.
    """
    scale = float(bundle.manifest.get("output", {}).get("scale") or 0.0)
    return max(16.0 * scale, 1e-3)


SELFTEST_MAX_MEMBER_BYTES = 64 << 20  # the pack's windows take well under 1 MB


def read_selftest(path, n_classes):
    """The arrays of a ``selftest.npz``, checked before any is used.

    Returns a dict: ``x`` (n, samples) float64 windows, ``fs`` float Hz, ``labels`` (n,) str,
    ``probs`` (n, n_classes) float64, ``classes`` (k,) str, ``bundle_sha256`` str. Raises
    EcgEdgeError naming the file and the array for anything else: not a zip of ``.npy`` files,
    a member over SELFTEST_MAX_MEMBER_BYTES uncompressed (a zip bomb), object arrays, a missing
    array, or one of the wrong kind or shape.
    """
    import zipfile

    names = ("x", "fs", "labels", "probs", "classes", "bundle_sha256")
    try:
        npz = np.load(path, allow_pickle=False)
        if not hasattr(npz, "files"):
            raise ValueError("it holds a single array, not an .npz archive")
        with npz:
            big = [i.filename for i in npz.zip.infolist() if i.file_size > SELFTEST_MAX_MEMBER_BYTES]
            if big:
                raise ValueError(f"{big} larger than {SELFTEST_MAX_MEMBER_BYTES} bytes uncompressed")
            missing = sorted(set(names) - set(npz.files))
            if missing:
                raise EcgEdgeError(f"{path} lacks {missing}: not a selftest.npz written by 'ecgedge device pack'")
            arrays = {}
            for name in names:
                try:
                    arrays[name] = npz[name]
                except ValueError as exc:
                    raise EcgEdgeError(f"{path}: array {name!r} can not be read ({exc})") from None
    except EcgEdgeError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise EcgEdgeError(f"can not read the self-test windows {path}: {exc}") from None

    def refuse(name, wanted):
        a = arrays[name]
        return EcgEdgeError(f"{path}: array {name!r} must be {wanted}, got dtype {a.dtype} and shape {a.shape}; "
                            "not a selftest.npz written by 'ecgedge device pack'")

    def numeric(a):
        return a.dtype.kind in "iuf"

    x, fs, probs = arrays["x"], arrays["fs"], arrays["probs"]
    if not (numeric(x) and x.ndim == 2 and x.shape[0] >= 1 and x.shape[1] >= 1):
        raise refuse("x", "a 2-D numeric array of windows")
    if not (numeric(fs) and fs.size == 1 and np.isfinite(fs).all() and float(fs.reshape(-1)[0]) > 0):
        raise refuse("fs", "one positive number of Hz")
    for name in ("labels", "classes"):
        if arrays[name].dtype.kind != "U" or arrays[name].ndim != 1:
            raise refuse(name, "a 1-D array of text")
    if arrays["labels"].shape[0] != x.shape[0]:
        raise refuse("labels", f"one label per window ({x.shape[0]})")
    if not (numeric(probs) and probs.shape == (x.shape[0], n_classes)):
        raise refuse("probs", f"numbers of shape ({x.shape[0]}, {n_classes})")
    if arrays["bundle_sha256"].dtype.kind != "U" or arrays["bundle_sha256"].size != 1:
        raise refuse("bundle_sha256", "one text")
    return {"x": x.astype(np.float64), "fs": float(fs.reshape(-1)[0]), "labels": arrays["labels"],
            "probs": probs.astype(np.float64), "classes": arrays["classes"],
            "bundle_sha256": str(arrays["bundle_sha256"].reshape(-1)[0])}


def run_selftest(bundle_dir, windows_path, trusted_keys=None):
    """Classify the stored windows again and compare with the results recorded at pack time.

    ``trusted_keys``: public keys the bundle's signature must match (``load_bundle``; None reads
    ``$ECGEDGE_TRUSTED_KEYS``).

    Returns a dict: ``ok`` (bool), ``n``, ``tolerance``, ``max_abs_diff``, ``labels_equal``,
    ``windows`` (list of {label_expected, label, max_abs_diff}), ``seconds``. A label may differ
    only where the recorded top two probabilities were within the tolerance (a tie).
    """
    bundle = load_bundle(bundle_dir, trusted_keys=trusted_keys)
    stored = read_selftest(windows_path, len(bundle.classes))
    if str(stored["bundle_sha256"]) != bundle.manifest["sha256"]:
        raise EcgEdgeError(
            f"{windows_path} was recorded for another model (sha256 {str(stored['bundle_sha256'])[:12]}, "
            f"bundle {bundle.manifest['sha256'][:12]}); use the pack's own bundle")
    if list(stored["classes"]) != bundle.classes:
        raise EcgEdgeError(f"{windows_path} classes {list(stored['classes'])} differ from the bundle's {bundle.classes}")
    start = time.perf_counter()
    labels, probs = classify_windows(bundle, stored["x"], float(stored["fs"]))
    seconds = time.perf_counter() - start
    tol = probability_tolerance(bundle)
    expected = stored["probs"]
    rows, ok = [], True
    for i, label in enumerate(labels):
        row = {"label_expected": str(stored["labels"][i]), "label": label}
        if label is None:  # the runtime's quality check refused a window it accepted at pack time
            row.update(max_abs_diff=None, ok=False)
        else:
            diff = float(np.max(np.abs(probs[i] - expected[i])))
            top2 = np.sort(expected[i])[-2:]
            tie = len(top2) == 2 and top2[1] - top2[0] <= tol
            row.update(max_abs_diff=diff, ok=bool(diff <= tol and (label == row["label_expected"] or tie)))
        ok &= row["ok"]
        rows.append(row)
    diffs = [r["max_abs_diff"] for r in rows if r["max_abs_diff"] is not None]
    return {"ok": bool(ok), "n": len(labels), "tolerance": tol,
            "max_abs_diff": max(diffs) if len(diffs) == len(rows) else None,
            "labels_equal": all(r["label"] == r["label_expected"] for r in rows),
            "windows": rows, "seconds": seconds, "bundle": str(bundle.path),
            "task": bundle.manifest.get("task")}
