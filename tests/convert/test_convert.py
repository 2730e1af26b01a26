"""The converter: run -> bundle (int8/float16/float32), manifest, bad input, verification.

Uses the tiny trained run of ``tests/conftest.py`` (synthetic 4-class windows, no PhysioNet).
"""

import hashlib
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from ecgedge.cli import cli
from ecgedge.convert.quantize import (calibration_indices, check_per_channel, check_quantizable, quantize_run,
                                     records_digest)
from ecgedge.convert.tflite import keras_to_tflite
from ecgedge.convert.tflite_model import op_code_name, parse_model, serialize_model, tensor_name
from ecgedge.convert.verify import compare, verify_bundle
from ecgedge.device.bundle import MANIFEST_FILE, load_bundle, write_bundle
from ecgedge.device.errors import EcgEdgeError

FILLED_BY_WRITE = ("format", "format_version", "model_file", "sha256", "bytes")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def copy_bundle(bundle, dest):
    shutil.copytree(bundle.path, dest)
    return dest


# --- the representative set --------------------------------------------------------------

def test_calibration_indices_are_balanced_seeded_and_share_out_a_rare_class():
    y = np.array([0] * 500 + [1] * 300 + [2] * 10 + [3] * 190)
    idx = calibration_indices(y, 100, seed=3)
    assert np.bincount(y[idx], minlength=4).tolist() == [30, 30, 10, 30]
    assert np.array_equal(idx, calibration_indices(y, 100, seed=3))
    assert not np.array_equal(idx, calibration_indices(y, 100, seed=4))
    assert len(np.unique(idx)) == 100
    assert np.array_equal(calibration_indices(y, 5000), np.arange(1000))


def test_calibration_indices_refuses_empty_requests():
    with pytest.raises(EcgEdgeError, match="n > 0 windows, got 0"):
        calibration_indices(np.array([0, 1]), 0)


# --- one interpreter factory: file or bytes -----------------------------------------------

@pytest.mark.parametrize("quant", ["int8", "float32"])
def test_predict_from_bytes_equals_the_device_classifier_bit_for_bit(tiny_bundles, tiny_run, cache_dir, quant):
    from ecgedge.convert import rundir
    from ecgedge.convert.runtime import predict
    from ecgedge.device.runtime import Classifier

    bundle = tiny_bundles[quant]
    images = np.asarray(rundir.images_of(tiny_run.windows["test"], bundle.spectrogram))[:40]
    scores = predict(bundle.model_path.read_bytes(), images)
    classifier = Classifier(bundle, rhythm_head=False)
    expected = np.stack([classifier.classify_image(image) for image in images])
    assert scores.dtype == np.float32 and scores.shape == (len(images), len(bundle.classes))
    np.testing.assert_array_equal(scores, expected)
    if quant == "int8":  # dequantized outputs lie on the output scale's grid
        out = bundle.manifest["output"]
        steps = scores.astype(np.float64) / out["scale"] + out["zero_point"]
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)


def test_make_interpreter_takes_a_path_or_bytes_and_names_them_in_errors(tiny_bundles, tmp_path):
    from ecgedge.device.interpreter import make_interpreter

    path = tiny_bundles["int8"].model_path
    from_path, info = make_interpreter(path)
    from_bytes, info_bytes = make_interpreter(model_content=path.read_bytes())
    assert info == info_bytes and info["delegate"] is None
    assert from_path.get_input_details()[0]["quantization"] == from_bytes.get_input_details()[0]["quantization"]
    for kwargs in ({}, {"model_path": path, "model_content": b"x"}):
        with pytest.raises(EcgEdgeError, match="a model_path or a model_content, exactly one"):
            make_interpreter(**kwargs)
    with pytest.raises(EcgEdgeError, match=r"^candidate\.tflite could not be loaded by "):
        make_interpreter(model_content=b"not a model", source="candidate.tflite")
    (tmp_path / "bad.tflite").write_bytes(b"not a model")
    with pytest.raises(EcgEdgeError, match="bad.tflite could not be loaded by .*corrupt"):
        make_interpreter(tmp_path / "bad.tflite")


# --- conversion and manifest -------------------------------------------------------------

def test_int8_bundle_manifest_has_every_key_and_the_model_io(tiny_bundles, tiny_run):
    m = tiny_bundles["int8"].manifest
    task = tiny_run.task
    assert m["format"] == "ecgedge-bundle" and m["format_version"] == 3 and tiny_bundles["int8"].verified_digest
    assert m["task"] == "synthetic4" and m["classes"] == task.class_names
    assert m["label_map"] == task.label_map and m["lead"] == ["MLII"]
    assert m["spectrogram"] == task.spectrogram.to_dict()
    assert (m["window_s"], m["hop_s"]) == (2.0, 2.0)
    assert m["input"]["dtype"] == "int8" and m["input"]["shape"] == [1, 32, 32, 2]
    assert m["output"]["dtype"] == "int8" and m["output"]["shape"] == [1, 4]
    # softmax output: TFLite fixes int8 probabilities to scale 1/256, zero point -128
    assert (m["output"]["scale"], m["output"]["zero_point"]) == (1 / 256, -128)
    assert 0 < m["input"]["scale"] < 1
    assert m["quantization"] == "int8"
    assert m["training"] == {"deployable": {"accuracy": pytest.approx(1.0, abs=0.1)}}  # lists dropped
    assert set(m["versions"]) >= {"tensorflow", "keras", "ecgedge"} and m["versions"]["tensorflow"]
    rep = m["representative"]
    assert rep["seed"] == 0 and rep["n"] == 100 == len(rep["indices"])
    assert rep["n_records"] == 3 and rep["records_sha256"] == records_digest(["syn/train0", "syn/train1", "syn/train2"])
    assert rep["records_sha256"] == hashlib.sha256(b"syn/train0\nsyn/train1\nsyn/train2").hexdigest()
    assert rep["class_counts"] == {c: 25 for c in task.class_names}
    y = tiny_run.windows["train"].y
    assert np.bincount(y[rep["indices"]]).tolist() == [25, 25, 25, 25]


def test_manifest_round_trips_exactly(tiny_bundles):
    bundle = tiny_bundles["int8"]
    on_disk = json.loads((bundle.path / MANIFEST_FILE).read_text())
    assert load_bundle(bundle.path).manifest == on_disk == bundle.manifest
    rewritten = write_bundle(bundle.path.parent / "again", bundle.model_path.read_bytes(),
                             {k: v for k, v in on_disk.items() if k not in FILLED_BY_WRITE})
    assert rewritten.manifest == on_disk


def test_int8_convolutions_are_quantized_per_channel(tiny_bundles):
    assert check_per_channel(tiny_bundles["int8"].model_path.read_bytes()) == 3


def test_float_variants_keep_float_io_and_sizes_order(tiny_bundles):
    sizes = {q: b.manifest["bytes"] for q, b in tiny_bundles.items()}
    for q in ("float16", "float32"):
        m = tiny_bundles[q].manifest
        assert m["quantization"] == q and "representative" not in m
        assert m["input"] == {"dtype": "float32", "shape": [1, 32, 32, 2], "scale": 0.0, "zero_point": 0}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]


def test_cli_quantize_writes_a_bundle_with_the_seeded_representative_set(tiny_run, tiny_windows, tmp_path,
                                                                         tiny_bundles):
    result = invoke("convert", "quantize", tiny_run.path, "--out", tmp_path / "b", "--representative", 100)
    assert result.exit_code == 0, result.output
    assert "representative set: 100 training windows, seed 0" in result.output
    again = load_bundle(tmp_path / "b").manifest["representative"]
    assert again == tiny_bundles["int8"].manifest["representative"]


# --- bad input: exit 2 with a message ----------------------------------------------------

def test_tampered_tflite_is_refused(tiny_bundles, tmp_path):
    path = copy_bundle(tiny_bundles["int8"], tmp_path / "b")
    data = bytearray((path / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(EcgEdgeError, match="does not match its manifest"):
        load_bundle(path)
    result = invoke("convert", "check-edgetpu", path)
    assert result.exit_code == 2
    assert "Error:" in result.output and "does not match its manifest" in result.output


def test_truncated_tflite_is_refused_by_bundle_and_parser(tiny_bundles, tmp_path):
    path = copy_bundle(tiny_bundles["int8"], tmp_path / "b")
    data = (path / "model.tflite").read_bytes()
    (path / "model.tflite").write_bytes(data[: len(data) // 2])
    result = invoke("convert", "export-c", path)
    assert result.exit_code == 2
    assert "Error:" in result.output and "truncated" in result.output
    with pytest.raises(EcgEdgeError, match="corrupt or truncated|is truncated"):
        parse_model(data[: len(data) - 300], "short.tflite")
    with pytest.raises(EcgEdgeError, match="not a TFLite model"):
        parse_model(data[:4] + b"PK\x03\x04" + data[8:], "zip.tflite")


def test_manifest_of_another_format_version_exits_2(tiny_bundles, tiny_run, tmp_path):
    path = copy_bundle(tiny_bundles["int8"], tmp_path / "b")
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["format_version"] = 99
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    result = invoke("convert", "verify", path, "--run", tiny_run.path)
    assert result.exit_code == 2
    assert "format version 99" in result.output and "reads versions 1, 2" in result.output


def test_run_dir_without_model_exits_2(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    (run / "model.keras").unlink()
    result = invoke("convert", "quantize", run, "--out", tmp_path / "b")
    assert result.exit_code == 2
    assert "model.keras does not exist" in result.output


def test_representative_set_of_wrong_shape_is_refused(tiny_run):
    import keras

    model = keras.models.load_model(tiny_run.path / "model.keras")
    with pytest.raises(EcgEdgeError, match=r"shape \(n, 32, 32, 2\).*got \(5, 32, 32\)"):
        keras_to_tflite(model, "int8", np.zeros((5, 32, 32), np.float32))


def test_normalization_layer_is_refused_for_int8():
    import keras

    inputs = keras.Input((4,))
    norm = keras.layers.Normalization(mean=0.0, variance=1.0, name="norm")
    model = keras.Model(inputs, keras.layers.Dense(2)(norm(inputs)))
    with pytest.raises(EcgEdgeError, match=r"Normalization layer\(s\) \['norm'\]"):
        check_quantizable(model)


# --- verification ------------------------------------------------------------------------

def test_compare_counts_agreement_accuracy_and_confusion():
    f = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    q = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.3, 0.7]])
    r = compare(f, q, np.array([0, 1, 0, 0]), ["A", "B"], ["r1"] * 4, [0.0, 5.0, 10.0, 15.0], threshold=0.8, top_k=1)
    assert r["agreement"] == 0.75 and not r["passed"]
    assert r["accuracy"] == {"float": 0.75, "tflite": 0.5, "delta": -0.25}
    assert r["confusion"]["float"] == [[2, 1], [0, 1]] and r["confusion"]["tflite"] == [[1, 2], [0, 1]]
    assert r["largest_differences"][0]["start_s"] == 10.0
    assert r["largest_differences"][0]["max_abs_diff"] == pytest.approx(0.2)
    assert r["relative_rms_error"] == pytest.approx(np.sqrt(np.mean((q - f) ** 2) / np.mean(f**2)))


def test_int8_bundle_passes_verification(tiny_bundles, tiny_run, tiny_windows):
    report = verify_bundle(tiny_bundles["int8"].path, tiny_run.path, threshold=0.98)
    assert report["n"] == 120 and report["passed"]
    assert report["agreement"] >= 0.98
    assert abs(report["accuracy"]["delta"]) <= 0.02
    assert report["relative_rms_error"] < 0.1
    assert sum(map(sum, report["confusion"]["tflite"])) == 120
    assert len(report["largest_differences"]) == 10


def _break_internal_scale(bundle, dest, factor=8.0):
    """A copy of the bundle whose first convolution's output scale is multiplied by ``factor``."""
    model = parse_model(bundle.model_path.read_bytes())
    sg = model.subgraphs[0]
    conv = next(op for op in sg.operators if op_code_name(model.operatorCodes[op.opcodeIndex]) == "CONV_2D")
    tensor = sg.tensors[conv.outputs[0]]
    tensor.quantization.scale = np.asarray(tensor.quantization.scale) * factor
    manifest = {k: v for k, v in bundle.manifest.items() if k not in FILLED_BY_WRITE}
    return write_bundle(dest, serialize_model(model), manifest), tensor_name(tensor)


def test_verification_fails_with_exit_1_when_a_quantization_scale_is_broken(tiny_bundles, tiny_run, tiny_windows,
                                                                             tmp_path):
    broken, _ = _break_internal_scale(tiny_bundles["int8"], tmp_path / "broken")
    result = invoke("convert", "verify", broken.path, "--run", tiny_run.path, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["agreement"] < 0.98 and not report["passed"]
    good = invoke("convert", "verify", tiny_bundles["int8"].path, "--run", tiny_run.path)
    assert good.exit_code == 0 and good.output.startswith("PASS: top-1 agreement")


def test_verify_refuses_a_manifest_whose_input_scale_differs_from_the_model(tiny_bundles, tiny_run, tiny_windows,
                                                                            tmp_path):
    bundle = tiny_bundles["int8"]
    manifest = {k: v for k, v in bundle.manifest.items() if k not in FILLED_BY_WRITE}
    manifest["input"] = dict(manifest["input"], scale=manifest["input"]["scale"] * 2)
    wrong = write_bundle(tmp_path / "wrong", bundle.model_path.read_bytes(), manifest)
    result = invoke("convert", "verify", wrong.path, "--run", tiny_run.path)
    assert result.exit_code == 2
    assert "differs from the model's own" in result.output



def test_short_tensor_names_keep_io_names_and_outputs(tiny_bundles):
    """Intermediate names are debug text: replaced by t<index>, outputs bit for bit the same."""
    import keras
    import tensorflow as tf

    from ecgedge.convert.tflite import short_tensor_names
    from ecgedge.convert.tflite_model import parse_model
    from ecgedge.device.interpreter import interpreter_module

    inputs = keras.Input((8, 8, 2), name="spectrogram")
    x = keras.layers.Conv2D(4, 3, name="a_rather_long_layer_name_that_the_converter_repeats")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))
    original = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs)).convert()
    short = short_tensor_names(original)
    assert len(short) < len(original)

    subgraph = parse_model(short).subgraphs[0]
    io = set(subgraph.inputs) | set(subgraph.outputs)
    names = [tensor_name(t) for t in subgraph.tensors]
    assert all(names[i] == f"t{i}" for i in range(len(names)) if i not in io)
    assert [names[i] for i in sorted(io)] == [tensor_name(parse_model(original).subgraphs[0].tensors[i])
                                               for i in sorted(io)]
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 2)).astype(np.float32)
    results = []
    for model in (original, short):
        interpreter = interpreter_module()[0].Interpreter(model_content=model)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        results.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(*results)
    shipped = parse_model(tiny_bundles["int8"].model_path.read_bytes())
    assert short_tensor_names(serialize_model(shipped)) == serialize_model(shipped)  # already short


@pytest.mark.parametrize("recorded, expected", [(None, 1), (2, 2)])
def test_a_bundle_names_the_beat_detector_its_run_trained_the_head_on(tiny_run, rhythm_bundle, tmp_path, recorded,
                                                                        expected):
    """The detector comes from the run's config.json (a run from before detector 2 names none: 1),
    not from the ecgedge that converts it."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.path, run_dir)
    shutil.copy(rhythm_bundle.rhythm_head_path, run_dir / "rhythm_head.npz")
    config = json.loads((run_dir / "config.json").read_text())
    config.pop("beat_detector", None)
    if recorded is not None:
        config["beat_detector"] = recorded
    (run_dir / "config.json").write_text(json.dumps(config))
    bundle = quantize_run(run_dir, tmp_path / "bundle", quant="float32")
    assert bundle.beat_detector == expected and bundle.manifest["rhythm_head"]["beat_detector"] == expected
