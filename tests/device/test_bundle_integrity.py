"""Integrity of the bundle (issue 15): one digest over manifest and files, manifest values checked
by type and range, bounded tree files, Ed25519 signatures, and the pack installer's own check.

Every tamper case below was accepted before the bundle digest (format version 2) and gave a
wrong answer or a traceback; each now ends in one BundleError line naming the key.
"""

import importlib.util
import io
import json
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgedge.cli import cli
from ecgedge.device import signing
from ecgedge.device.benchmark import synthetic_ecg
from ecgedge.device.bundle import (
    DIGEST_KEY, MANIFEST_FILE, MAX_MANIFEST_BYTES, bundle_digest, check_manifest, load_bundle, sha256_file,
    write_manifest,
)
from ecgedge.device.errors import BundleError, EcgEdgeError
from ecgedge.device.rhythm import FEATURE_NAMES
from ecgedge.device.trees import MAX_TREE_BYTES, Trees, load_trees

REPO = Path(__file__).resolve().parents[2]
FS = 360.0


def invoke(*args, env=None):
    return CliRunner().invoke(cli, ["device", *map(str, args)], env=env)


def copy(bundle, dest):
    shutil.copytree(bundle.path, dest)
    return dest


def read(path):
    return json.loads((path / MANIFEST_FILE).read_text())


def write_raw(path, manifest):
    """Write model.json as an editor would: the digest is left as it was."""
    (path / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))


def install_module():
    spec = importlib.util.spec_from_file_location("ecgedge_install", REPO / "deploy" / "packfiles" / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def no_trusted_keys_from_the_environment(monkeypatch):
    monkeypatch.delenv(signing.ENV_TRUSTED_KEYS, raising=False)


# --- the digest --------------------------------------------------------------------------------

def test_write_bundle_seals_manifest_and_files_in_one_digest(rhythm_bundle):
    manifest = read(rhythm_bundle.path)
    assert manifest["format_version"] == 3 and rhythm_bundle.verified_digest
    files = {"model.tflite": sha256_file(rhythm_bundle.model_path),
             "rhythm_head.npz": sha256_file(rhythm_bundle.rhythm_head_path)}
    assert manifest[DIGEST_KEY]["sha256"] == rhythm_bundle.digest == bundle_digest(manifest, files)
    # The installer's standard-library copy computes the same digest.
    assert install_module().bundle_digest(manifest, files) == rhythm_bundle.digest
    # Any change of a value or of a file's hash changes it.
    assert bundle_digest({**manifest, "hop_s": 1.5}, files) != rhythm_bundle.digest
    assert bundle_digest(manifest, {**files, "model.tflite": "0" * 64}) != rhythm_bundle.digest


def _swap_classes(m):
    m["classes"][0], m["classes"][1] = m["classes"][1], m["classes"][0]


def _set(*path_and_value):
    *path, value = path_and_value

    def edit(m):
        target = m
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value
    return edit


# Edits an editor or a careless tool would make, the digest left as it was: each is a value of
# the right type and range, so only the digest can tell. Before: every one was accepted (class
# order: record 100, normal, came out AF p 0.997; fs 256 / hop 40: AF became VENT).
DIGEST_TAMPERS = [
    ("class order", _swap_classes, "classes"),
    ("input scale", _set("input", "scale", lambda v: v * 2), "input"),
    ("input zero point", _set("input", "zero_point", lambda v: v - 1), "input"),
    ("output scale", _set("output", "scale", lambda v: v / 2), "output"),
    ("spectrogram fs and hop", lambda m: m["spectrogram"].update(fs=256.0, hop=16), "spectrogram"),  # same shape
    ("spectrogram eps", _set("spectrogram", "eps", lambda v: v * 10), "spectrogram"),
    ("bundle hop_s", _set("hop_s", 0.5), "hop_s"),
    ("label map", _set("label_map", "(AFIB", "NSR"), "label_map"),
    ("lead", _set("lead", ["V1"]), "lead"),
    ("rhythm head features", _set("rhythm_head", "features", lambda v: v[::-1]), "rhythm_head"),
    ("a new key", _set("notes", {"rule": "anything"}), "notes"),
]


@pytest.mark.parametrize("name, edit, key", DIGEST_TAMPERS, ids=[t[0] for t in DIGEST_TAMPERS])
def test_an_edited_manifest_is_refused_naming_the_key(rhythm_bundle, tmp_path, name, edit, key):
    path = copy(rhythm_bundle, tmp_path / "b")
    manifest = read(path)
    edit(manifest)
    write_raw(path, manifest)
    with pytest.raises(BundleError) as err:
        load_bundle(path)
    message = str(err.value)
    assert "does not match its bundle digest" in message and "\n" not in message
    assert f"changed after it was written: {key})" in message
    # The digest is what refused it: re-sealed, the same manifest loads.
    write_manifest(path, manifest)
    assert load_bundle(path).manifest[key] == manifest[key]


def test_a_file_swapped_from_another_bundle_is_refused(rhythm_bundle, tiny_bundle, tmp_path):
    path = copy(rhythm_bundle, tmp_path / "b")
    with np.load(path / "rhythm_head.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["value"] = arrays["value"] * 2  # another head with the same shape
    np.savez_compressed(path / "rhythm_head.npz", **arrays)
    with pytest.raises(BundleError, match=r"rhythm_head.npz does not match its manifest .*taken from another"):
        load_bundle(path)
    # A manifest of one bundle with the files of another: the head it names is not there.
    mixed = copy(tiny_bundle, tmp_path / "mixed")
    shutil.copy(rhythm_bundle.path / MANIFEST_FILE, mixed / MANIFEST_FILE)
    with pytest.raises(BundleError, match="rhythm_head.npz not found; the bundle is incomplete"):
        load_bundle(mixed)


def test_a_bundle_of_format_version_2_loads_unverified_and_is_refused_when_keys_are_trusted(tiny_bundle, tmp_path,
                                                                                             keypair):
    path = copy(tiny_bundle, tmp_path / "old")
    manifest = read(path)
    del manifest[DIGEST_KEY]
    write_raw(path, {**manifest, "format_version": 2})
    old = load_bundle(path)
    assert not old.verified_digest and old.signed_by is None and old.classes == tiny_bundle.classes
    with pytest.raises(BundleError, match="format version 2, which has no bundle digest to sign"):
        load_bundle(path, trusted_keys=[keypair[1]])
    write_raw(path, manifest)  # version 3 must carry its digest
    with pytest.raises(BundleError, match=r"lacks \['bundle_digest'\]"):
        load_bundle(path)


# --- manifest values by type and range -----------------------------------------------------------

# Values that were accepted or crashed before; each now says which key and what it got. The
# manifest is re-sealed, as a deliberate editor would: the checks do not rely on the digest.
VALUE_TAMPERS = [
    (_set("input", "scale", "abc"), "input.scale must be a finite number > 0 and <= 1e+30, got 'abc'"),
    (_set("input", "scale", 0), "input.scale must be a finite number > 0"),
    (_set("input", "zero_point", 300), "input.zero_point must be an integer in -128..127, got 300"),
    (_set("input", "zero_point", 1.5), "input.zero_point must be an integer in -128..127, got 1.5"),
    (_set("output", "dtype", "int16"), "output.dtype must be one of ['int8', 'uint8', 'float32'], got 'int16'"),
    (_set("classes", "NSR"), "classes must be a list of 2..256 strings, got 'NSR'"),
    (_set("classes", ["NSR", "NSR", "VENT", "OTHER"]), "classes must be a list of unique names"),
    (_set("classes", ["NSR", "", "VENT", "OTHER"]), "classes[1] must be a non-empty string"),
    (_set("classes", ["NSR", "AF", "VENT", "unclassified"]), "classes must be names other than ['unclassified']"),
    (_set("label_map", "(AFIB", "ATRIAL"), "label_map['(AFIB'] must be one of the classes"),
    (_set("label_map", []), "label_map must be an object, got []"),
    (_set("lead", 5), "lead must be a lead name or a list of lead names, got 5"),
    (_set("spectrogram", None), "spectrogram must be an object, got None"),
    (_set("spectrogram", "hop", 4), "input.shape must be [1, 32, 64, 2] (from the spectrogram and classes)"),
    (_set("spectrogram", "hop", 0), "spectrogram.hop must be an integer in 1..4194304, got 0"),
    (_set("spectrogram", "window_s", 1e9), "spectrogram.window_s must be a finite number > 0 and <= 600, got 1000000000.0"),
    (_set("spectrogram", "fs", float("nan")), "spectrogram.fs must be a finite number > 0 and <= 20000, got nan"),
    (_set("spectrogram", "channels", [[64, 32]]), "spectrogram.channels[0][1] must be an integer in 64..65536"),
    (_set("spectrogram", "n_freq", True), "spectrogram.n_freq must be an integer in 1..32769, got True"),
    (_set("spectrogram", "lowpass_hz", 70.0), "spectrogram.lowpass_hz must be a finite number > 0 and <= 64, got 70.0"),
    (_set("spectrogram", "lowpass_hz", "40"), "spectrogram.lowpass_hz must be a finite number"),
    (_set("hop_s", 0), "hop_s must be a finite number >= 0.02 and <= 600, got 0"),
    (_set("hop_s", float("inf")), "hop_s must be a finite number >= 0.02 and <= 600, got inf"),
    (_set("window_s", 3.0), "window_s must be the spectrogram's window_s 2, got 3.0"),
    (_set("lead_fallback", "any"), "lead_fallback must be 'first' or 'none', got 'any'"),
    (_set("bytes", -1), "bytes must be an integer in 0..1099511627776, got -1"),
]


@pytest.mark.parametrize("edit, message", VALUE_TAMPERS, ids=[m.split(" must")[0] for _, m in VALUE_TAMPERS])
def test_a_manifest_value_of_the_wrong_type_or_range_is_refused(tiny_bundle, tmp_path, edit, message):
    path = copy(tiny_bundle, tmp_path / "b")
    manifest = read(path)
    edit(manifest)
    write_manifest(path, manifest)
    with pytest.raises(BundleError) as err:
        load_bundle(path)
    assert message in str(err.value) and str(err.value).startswith(str(path / MANIFEST_FILE))


def test_a_low_passed_spectrogram_loads_and_one_without_the_setting_reads_as_before(tiny_bundle, tmp_path):
    assert "lowpass_hz" not in read(tiny_bundle.path)["spectrogram"]  # made as before the setting
    assert load_bundle(tiny_bundle.path).spectrogram.lowpass_hz is None
    path = copy(tiny_bundle, tmp_path / "b")
    manifest = read(path)
    manifest["spectrogram"]["lowpass_hz"] = 3.0
    write_manifest(path, manifest)
    assert load_bundle(path).spectrogram.lowpass_hz == 3.0


def test_a_head_reads_the_beats_of_the_detector_it_was_trained_on(rhythm_bundle, tmp_path):
    """New bundles name their head's beat detector; one made before (no such key) gets detector 1,
    the beats its head was trained on; a detector this ecgedge lacks is refused by name."""
    from ecgedge.device.rhythm import BEAT_DETECTOR, window_rhythm_features
    from ecgedge.device.runtime import Classifier

    assert read(rhythm_bundle.path)["rhythm_head"]["beat_detector"] == BEAT_DETECTOR == 3
    path = copy(rhythm_bundle, tmp_path / "old")
    manifest = read(path)
    del manifest["rhythm_head"]["beat_detector"]
    write_manifest(path, manifest)
    old, new = Classifier(path), Classifier(rhythm_bundle.path)
    assert (old.bundle.beat_detector, new.bundle.beat_detector) == (1, 3)
    fs = 360.0
    t = np.arange(new.window_samples(fs)) / fs  # QRS spikes with tall T waves: the detectors differ
    window = sum(np.exp(-0.5 * ((t - b) / 0.012) ** 2) + 0.9 * np.exp(-0.5 * ((t - b - 0.3) / 0.06) ** 2)
                 for b in np.arange(0.1, t[-1], 0.7))
    old_features, new_features = old.preprocess(window, fs)[1], new.preprocess(window, fs)[1]
    np.testing.assert_array_equal(old_features, window_rhythm_features(window, fs, old.cfg, detector=1))
    np.testing.assert_array_equal(new_features, window_rhythm_features(window, fs, new.cfg, detector=3))
    assert not np.array_equal(old_features, new_features, equal_nan=True)
    for value, message in ((4, "trained on the beats of detector 4, which this ecgedge does not have"),
                           ("2", "rhythm_head.beat_detector must be an integer")):
        manifest["rhythm_head"]["beat_detector"] = value
        write_manifest(path, manifest)
        with pytest.raises(BundleError, match=message):
            load_bundle(path)


def test_unknown_keys_are_kept(tiny_bundle, tmp_path):
    path = copy(tiny_bundle, tmp_path / "b")
    manifest = read(path)
    manifest["training"] = {"note": "metrics and versions live here", "nested": {"a": [1, 2.5, None]}}
    write_manifest(path, manifest)
    assert load_bundle(path).manifest["training"] == manifest["training"]


def test_huge_or_deeply_nested_manifests_are_refused(tiny_bundle, tmp_path):
    path = copy(tiny_bundle, tmp_path / "b")
    manifest = read(path)
    write_raw(path, {**manifest, "padding": "x" * MAX_MANIFEST_BYTES})
    with pytest.raises(BundleError, match=r"model.json is larger than 1048576 bytes"):
        load_bundle(path)
    (path / MANIFEST_FILE).write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(BundleError, match=r"is not valid JSON \(nested too deeply\)"):
        load_bundle(path)
    nested = {"x": 1}
    for _ in range(40):
        nested = {"x": nested}
    write_raw(path, {**manifest, "extra": nested})
    with pytest.raises(BundleError, match="nests deeper than 32 levels"):
        load_bundle(path)
    (path / MANIFEST_FILE).write_bytes(b'{"format": "\xff"}')
    with pytest.raises(BundleError, match="is not valid JSON"):
        load_bundle(path)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
# Every key and nested field the device reads.
FUZZED_PATHS = [
    ("format_version",), ("task",), ("classes",), ("classes", 0), ("label_map",), ("label_map", "(N"), ("lead",),
    ("lead_fallback",), ("spectrogram",), ("spectrogram", "fs"), ("spectrogram", "window_s"),
    ("spectrogram", "hop"), ("spectrogram", "channels"), ("spectrogram", "channels", 0),
    ("spectrogram", "n_freq"), ("spectrogram", "eps"), ("window_s",), ("hop_s",), ("input",), ("input", "shape"),
    ("input", "dtype"), ("input", "scale"), ("input", "zero_point"), ("output",), ("output", "scale"),
    ("output", "zero_point"), ("quantization",), ("model_file",), ("sha256",), ("bytes",), ("rhythm_head",),
    ("rhythm_head", "file"), ("rhythm_head", "features"), ("rhythm_head", "bytes"), ("rhythm_head", "combine"),
    (DIGEST_KEY,), (DIGEST_KEY, "sha256"), (DIGEST_KEY, "parts"),
]


def _put(manifest, path, value):
    target = manifest
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(FUZZED_PATHS), value=JSON)
def test_fuzzed_manifest_values_end_only_in_bundle_errors(rhythm_bundle, path, value):
    manifest = json.loads(json.dumps(rhythm_bundle.manifest))
    _put(manifest, path, value)
    try:
        check_manifest(manifest)
    except EcgEdgeError as exc:
        assert "\n" not in str(exc)


@pytest.fixture(scope="module")
def fuzz_dir(rhythm_bundle, tmp_path_factory):
    return copy(rhythm_bundle, tmp_path_factory.mktemp("fuzz") / "b")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(FUZZED_PATHS), value=JSON, sealed=st.booleans())
def test_fuzzed_bundles_on_disk_load_or_end_in_one_error_line(rhythm_bundle, fuzz_dir, path, value, sealed):
    manifest = json.loads(json.dumps(rhythm_bundle.manifest))
    _put(manifest, path, value)
    text = json.dumps(manifest)
    (fuzz_dir / MANIFEST_FILE).write_text(text)
    if sealed:
        try:
            write_manifest(fuzz_dir, manifest)  # may fail on a fuzzed file name: then the raw text stays
        except (OSError, KeyError, TypeError, AttributeError):
            (fuzz_dir / MANIFEST_FILE).write_text(text)
    try:
        load_bundle(fuzz_dir)
    except EcgEdgeError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_fuzzed_manifest_bytes_end_only_in_bundle_errors(fuzz_dir, raw):
    (fuzz_dir / MANIFEST_FILE).write_bytes(raw)
    with pytest.raises(EcgEdgeError):
        load_bundle(fuzz_dir)


# --- the rhythm head's tree file ------------------------------------------------------------------

@pytest.fixture
def head_arrays(rhythm_bundle):
    with np.load(rhythm_bundle.rhythm_head_path) as data:
        return {k: data[k] for k in data.files}


def _reseal_head(path, arrays):
    """Write new tree arrays and re-hash them in a re-sealed manifest, as a deliberate editor would."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    (path / "rhythm_head.npz").write_bytes(buffer.getvalue())
    manifest = read(path)
    manifest["rhythm_head"].update(sha256=sha256_file(path / "rhythm_head.npz"), bytes=len(buffer.getvalue()))
    write_manifest(path, manifest)


def _splits(arrays):
    return np.flatnonzero(~arrays["is_leaf"])


TREE_TAMPERS = [
    ("negative feature", lambda a: a["feature"].__setitem__(_splits(a)[0], -1),
     "tree splits read features -1.."),
    ("feature beyond the manifest's", lambda a: a["feature"].__setitem__(_splits(a)[0], 900),
     "features; "),
    ("negative child", lambda a: a["left"].__setitem__(_splits(a)[0], -5), "point left outside"),
    ("cycle", lambda a: a["right"].__setitem__(_splits(a)[0], _splits(a)[0]), "not a forest"),
    ("short array", lambda a: a.__setitem__("threshold", a["threshold"][:-3]), "tree array threshold has shape"),
    ("NaN leaf", lambda a: a["value"].__setitem__(0, np.nan), "tree array value holds NaN"),
    ("float indices", lambda a: a.__setitem__("left", a["left"].astype(float)), "tree array left must be of kind"),
    ("wrong class count", lambda a: a.__setitem__("baseline", a["baseline"][:3]), "tree roots of shape"),
]


@pytest.mark.parametrize("name, edit, message", TREE_TAMPERS, ids=[t[0] for t in TREE_TAMPERS])
def test_a_rehashed_head_with_bad_trees_is_refused(rhythm_bundle, head_arrays, tmp_path, name, edit, message):
    path = copy(rhythm_bundle, tmp_path / "b")
    arrays = {k: v.copy() for k, v in head_arrays.items()}
    edit(arrays)
    _reseal_head(path, arrays)
    with pytest.raises(BundleError) as err:
        load_bundle(path)
    assert message in str(err.value) and "rhythm_head.npz" in str(err.value)


def test_the_exported_trees_pass_the_checks(head_arrays):
    trees = Trees(head_arrays)
    assert trees.n_classes == 4 and 0 < trees.n_features <= len(FEATURE_NAMES) and trees.depth > 0


def _npy_header(shape, dtype="<f8"):
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
    return out.getvalue()


def test_a_zip_bomb_head_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("value.npy", "w") as f:
        f.write(_npy_header((10_000_000,)))
        for _ in range(MAX_TREE_BYTES // (1 << 20) + 16):
            f.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 20  # under 1 MB on disk, 80 MB inflated
    tracemalloc.start()
    try:
        with pytest.raises(BundleError, match=r"declares 1 members of \d+ bytes uncompressed; a tree file may hold"):
            load_trees(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_an_npy_header_larger_than_its_data_is_refused_without_allocating(head_arrays, tmp_path):
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in head_arrays.items():
            data = io.BytesIO()
            np.save(data, array)
            archive.writestr(name + ".npy", data.getvalue())
        # 8 TB declared, 8 bytes given: numpy would ask for the 8 TB before reading.
        archive.writestr("value.npy", _npy_header((10**12,)) + bytes(8))
    with pytest.raises(BundleError, match=r"value.npy declares shape \(1000000000000,\) of float64 "
                                          r"\(8000000000000 bytes\) but holds 8 bytes"):
        load_trees(path)


# --- signatures -----------------------------------------------------------------------------------

@pytest.fixture
def keypair(tmp_path):
    pytest.importorskip("cryptography")
    private, public, key_id = signing.generate_keypair(tmp_path / "keys")
    return private, public, key_id


def test_keygen_sign_and_verify_round_trip_with_the_cli(tiny_bundle, tmp_path):
    pytest.importorskip("cryptography")
    made = invoke("keygen", "--out", tmp_path / "keys")
    assert made.exit_code == 0, made.output
    private, public = tmp_path / "keys" / "bundle-signing.key", tmp_path / "keys" / "bundle-signing.pub"
    assert private.stat().st_mode & 0o777 == 0o600 and public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again = invoke("keygen", "--out", tmp_path / "keys")
    assert again.exit_code == 2 and again.stderr.count("\n") == 1 and "exists; move it away" in again.stderr

    path = copy(tiny_bundle, tmp_path / "b")
    signed = invoke("sign", path, "--key", private)
    assert signed.exit_code == 0, signed.output
    key_id = json.loads((path / "model.sig").read_text())["key_id"]
    assert f"(key id {key_id})" in signed.output
    assert load_bundle(path, trusted_keys=[public]).signed_by == key_id
    assert load_bundle(path, trusted_keys=[tmp_path / "keys"]).signed_by == key_id  # a folder of *.pub
    assert load_bundle(path).signed_by is None  # no trust configured: not checked


def test_unsigned_wrongly_signed_and_forged_bundles_are_refused(tiny_bundle, rhythm_bundle, tmp_path, keypair):
    private, public, _ = keypair
    _, other_public, other_id = signing.generate_keypair(tmp_path / "other")
    path = copy(tiny_bundle, tmp_path / "b")
    with pytest.raises(BundleError, match="model.sig not found: trusted keys are set and the bundle is not signed"):
        load_bundle(path, trusted_keys=[public])
    signing.sign_bundle(path, private)
    with pytest.raises(BundleError, match=r"signed by key '[0-9a-f]{16}', which is not trusted \(trusted: " + other_id):
        load_bundle(path, trusted_keys=[other_public])
    sig = json.loads((path / "model.sig").read_text())
    forged = bytearray(__import__("base64").b64decode(sig["signature"]))
    forged[0] ^= 1
    (path / "model.sig").write_text(json.dumps({**sig, "signature": __import__("base64").b64encode(forged).decode()}))
    with pytest.raises(BundleError, match="the signature does not verify with trusted key"):
        load_bundle(path, trusted_keys=[public])
    # A valid signature of another bundle does not vouch for this one.
    other = copy(rhythm_bundle, tmp_path / "other_bundle")
    signing.sign_bundle(other, private)
    shutil.copy(other / "model.sig", path / "model.sig")
    with pytest.raises(BundleError, match="signs another bundle digest"):
        load_bundle(path, trusted_keys=[public])
    # Re-sealing an edited manifest drops the old signature, so the edit needs the private key.
    signing.sign_bundle(path, private)
    manifest = read(path)
    _swap_classes(manifest)
    write_manifest(path, manifest)
    with pytest.raises(BundleError, match="model.sig not found"):
        load_bundle(path, trusted_keys=[public])


def test_trusted_keys_from_the_environment(tiny_bundle, tmp_path, keypair, monkeypatch):
    private, public, key_id = keypair
    path = copy(tiny_bundle, tmp_path / "b")
    monkeypatch.setenv(signing.ENV_TRUSTED_KEYS, str(public.parent))
    with pytest.raises(BundleError, match="model.sig not found"):
        load_bundle(path)
    signing.sign_bundle(path, private)
    assert load_bundle(path).signed_by == key_id
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(signing.ENV_TRUSTED_KEYS, str(empty))
    with pytest.raises(BundleError, match=r"ECGEDGE_TRUSTED_KEYS: .*empty holds no \*.pub public keys"):
        load_bundle(path)
    monkeypatch.setenv(signing.ENV_TRUSTED_KEYS, str(tmp_path / "nowhere.pub"))
    with pytest.raises(BundleError, match="trusted key .*nowhere.pub not found"):
        load_bundle(path)


def test_a_private_key_others_may_read_is_refused(tiny_bundle, tmp_path, keypair):
    private, _, _ = keypair
    private.chmod(0o644)
    with pytest.raises(BundleError, match=r"may be read by others \(mode 644\); chmod 600 it"):
        signing.sign_bundle(copy(tiny_bundle, tmp_path / "b"), private)


def test_without_cryptography_a_required_signature_says_what_to_install(tiny_bundle, tmp_path, keypair, monkeypatch):
    _, public, _ = keypair
    for name in ("cryptography", "cryptography.exceptions", "cryptography.hazmat.primitives",
                 "cryptography.hazmat.primitives.asymmetric"):
        monkeypatch.setitem(__import__("sys").modules, name, None)
    assert load_bundle(tiny_bundle.path).verified_digest  # no trust configured: runs without it
    with pytest.raises(BundleError) as err:
        load_bundle(tiny_bundle.path, trusted_keys=[public])
    assert str(err.value) == ("checking a bundle signature (trusted keys are set) needs the cryptography "
                              "package: pip install 'ecgedge[sign]'")


def test_device_run_with_trust_refuses_an_unsigned_bundle_with_exit_2(tiny_bundle, tmp_path, keypair):
    private, public, _ = keypair
    np.save(tmp_path / "ecg.npy", synthetic_ecg(3 * 720, FS, seed=0))
    path = copy(tiny_bundle, tmp_path / "b")
    run = ("run", "--bundle", path, "--input", tmp_path / "ecg.npy", "--fs", FS)
    refused = invoke(*run, "--trust", public)
    assert refused.exit_code == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("Error: ") and "model.sig not found" in \
        refused.stderr
    by_env = invoke(*run, env={signing.ENV_TRUSTED_KEYS: str(public)})
    assert by_env.exit_code == 2 and "model.sig not found" in by_env.stderr
    signing.sign_bundle(path, private)
    accepted = invoke(*run, "--trust", public)
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(accepted.stdout.splitlines()[0])["label"] in tiny_bundle.classes
    tampered = read(path)
    tampered["input"]["zero_point"] += 1
    write_raw(path, tampered)
    for command in (run, ("bench", "--bundle", path, "-n", 1), ("eval", "--bundle", path, "--data", tmp_path)):
        result = invoke(*command)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1
        assert "does not match its bundle digest (changed after it was written: input)" in result.stderr


def test_selftest_with_trust_checks_the_signature(tiny_bundle, tmp_path, keypair):
    from ecgedge.device.selftest import classify_windows

    private, public, _ = keypair
    path = copy(tiny_bundle, tmp_path / "b")
    x = np.stack([synthetic_ecg(int(round(tiny_bundle.window_s * FS)), FS, seed=s) for s in range(2)])
    labels, probs = classify_windows(load_bundle(path), x, FS)
    np.savez(tmp_path / "selftest.npz", x=x.astype(np.float32), fs=np.float64(FS), labels=np.array(labels),
             probs=probs, classes=np.array(tiny_bundle.classes),
             bundle_sha256=np.array(tiny_bundle.manifest["sha256"]), seed=np.int64(0))
    selftest = ("selftest", "--bundle", path, "--windows", tmp_path / "selftest.npz")
    assert invoke(*selftest).exit_code == 0  # no keys trusted: no signature needed
    refused = invoke(*selftest, "--trust", public)
    assert refused.exit_code == 2 and "model.sig not found" in refused.stderr
    signing.sign_bundle(path, private)
    accepted = invoke(*selftest, "--trust", public)
    assert accepted.exit_code == 0 and "selftest: PASS" in accepted.stdout, accepted.output


# --- the pack installer -----------------------------------------------------------------------------

def test_the_installer_checks_the_bundle_digest(rhythm_bundle, tmp_path):
    install = install_module()
    pack = tmp_path / "pack"
    copy(rhythm_bundle, pack / "bundle")
    assert install.check_bundle(pack)["classes"] == rhythm_bundle.classes
    manifest = read(pack / "bundle")
    manifest["spectrogram"]["hop"] = 4
    write_raw(pack / "bundle", manifest)
    with pytest.raises(install.InstallError, match="bundle/model.json does not match its bundle digest"):
        install.check_bundle(pack)
    write_manifest(pack / "bundle", manifest)  # re-sealed: the installer accepts what load_bundle would digest
    install.check_bundle(pack)
    (pack / "bundle" / "rhythm_head.npz").write_bytes(b"PK")
    with pytest.raises(install.InstallError, match="bundle/rhythm_head.npz does not match the sha256"):
        install.check_bundle(pack)
    manifest["model_file"] = "../../etc/passwd"
    write_raw(pack / "bundle", manifest)
    with pytest.raises(install.InstallError, match="names the file '../../etc/passwd' outside the bundle"):
        install.check_bundle(pack)
