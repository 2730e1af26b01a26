"""Edge TPU readiness: a known Edge-TPU model (Coral's MobileNet V1 0.25@128), the tiny int8 and
float bundles, and parsing of edgetpu_compiler's log."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ecgedge.cli import cli
from ecgedge.convert.edgetpu import MAX_OP_VERSIONS, SUPPORTED_OPS, check_edgetpu, parse_compiler_log

REPO = Path(__file__).resolve().parents[2]
CORAL = REPO.parent / "shared" / "weights" / "imagenet" / "coral-tflite"


@pytest.fixture
def coral_model():
    path = CORAL / "mobilenet_v1_0.25_128_quant.tflite"
    if not path.is_file():
        pytest.skip(f"Coral test model not found at {path}")
    return path


def test_coral_mobilenet_is_ready(coral_model):
    report = check_edgetpu(coral_model, run_compiler=False)
    assert report.ready and report.errors == [] and report.warnings == []
    assert report.subgraphs == 1
    assert report.ops == {
        "AVERAGE_POOL_2D": {"count": 1, "version": 1, "max_version": 3},
        "CONV_2D": {"count": 15, "version": 1, "max_version": 5},
        "DEPTHWISE_CONV_2D": {"count": 13, "version": 1, "max_version": 6},
        "RESHAPE": {"count": 1, "version": 1, "max_version": 1},
        "SOFTMAX": {"count": 1, "version": 1, "max_version": 3},
    }
    assert report.input == {"name": "input", "dtype": "UINT8", "shape": [1, 128, 128, 3]}


def test_compiled_coral_model_is_recognised(coral_model):
    report = check_edgetpu(coral_model.with_name("mobilenet_v1_0.25_128_quant_edgetpu.tflite"), run_compiler=False)
    assert any("already compiled for the Edge TPU" in w for w in report.warnings)
    assert report.ready


def test_tiny_int8_bundle_is_ready_and_float_is_not(tiny_bundles):
    int8 = check_edgetpu(tiny_bundles["int8"].path, run_compiler=False)
    assert int8.ready, int8.errors
    assert set(int8.ops) <= SUPPORTED_OPS
    assert int8.input["dtype"] == "INT8"
    float32 = check_edgetpu(tiny_bundles["float32"].path, run_compiler=False)
    assert not float32.ready
    assert any("is FLOAT32, not int8/uint8" in e for e in float32.errors)


def test_cli_check_edgetpu_json_and_exit_codes(tiny_bundles, coral_model):
    runner = CliRunner()
    ok = runner.invoke(cli, ["convert", "check-edgetpu", str(coral_model), "--json"])
    assert ok.exit_code == 0, ok.output
    body = json.loads(ok.output)
    assert body["ready"] and body["ops"]["CONV_2D"]["count"] == 15
    assert body["compiler"]["installed"] is False or "ops" in body["compiler"]
    bad = runner.invoke(cli, ["convert", "check-edgetpu", str(tiny_bundles["float32"].path)])
    assert bad.exit_code == 1
    assert bad.output.startswith("NOT READY for the Edge TPU")


def test_newer_op_versions_are_warned(tiny_bundles, monkeypatch):
    monkeypatch.setitem(MAX_OP_VERSIONS, "CONV_2D", 0)
    report = check_edgetpu(tiny_bundles["int8"].path, run_compiler=False)
    assert report.ready
    assert any(w.startswith("op CONV_2D has version") for w in report.warnings)


def test_compiler_log_is_parsed():
    # The table edgetpu_compiler -s prints (format of compiler 16).
    log = """Edge TPU Compiler version 16.0.384591198
Input: model.tflite
Output: model_edgetpu.tflite

Operator                       Count      Status

DEPTHWISE_CONV_2D              13         Mapped to Edge TPU
CONV_2D                        15         Mapped to Edge TPU
SOFTMAX                        1          Mapped to Edge TPU
DEQUANTIZE                     1          Operation is working on an unsupported data type
"""
    parsed = parse_compiler_log(log)
    assert parsed["version"] == "16.0.384591198"
    assert parsed["mapped"] == 29 and parsed["total"] == 30
    assert parsed["ops"][-1] == {"op": "DEQUANTIZE", "count": 1,
                                 "status": "Operation is working on an unsupported data type"}
