"""Microcontroller export: the model as a C array, and the tflite-micro arena size."""

import shutil
import subprocess

import pytest
from click.testing import CliRunner

from ecgedge.cli import cli
from ecgedge.convert.export_c import c_identifier, export_c, measure_arena, parse_c_array


def test_c_identifier():
    assert c_identifier("ecg-model v1") == "ecg_model_v1"
    assert c_identifier("1model") == "_1model"


def test_export_c_array_holds_the_model_bytes(tiny_bundles, tmp_path):
    bundle = tiny_bundles["int8"]
    data = bundle.model_path.read_bytes()
    result = export_c(bundle.path, tmp_path, name="ecg_model")
    source = (tmp_path / "ecg_model.cc").read_text()
    header = (tmp_path / "ecg_model.h").read_text()
    assert result["bytes"] == len(data) == bundle.manifest["bytes"]
    assert parse_c_array(source) == data
    assert f"const unsigned int ecg_model_len = {len(data)};" in source
    assert "alignas(16) const unsigned char ecg_model[]" in source
    assert f"ecg_model_input_zero_point = {bundle.manifest['input']['zero_point']};" in header
    assert 'ecg_model_classes[] = {"NSR", "AF", "VENT", "OTHER"}' in header


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_exported_c_compiles_and_reports_the_length(tiny_bundles, tmp_path):
    export_c(tiny_bundles["int8"].path, tmp_path)
    main = tmp_path / "main.cc"
    main.write_text('#include <cstdio>\n#include <cstdint>\n#include "ecgedge_model.h"\n'
                    "int main() { std::printf(\"%u %d\\n\", ecgedge_model_len, "
                    "(int)(reinterpret_cast<std::uintptr_t>(ecgedge_model) % 16)); }\n")
    exe = tmp_path / "a.out"
    subprocess.run(["g++", "-std=c++17", "-o", str(exe), str(main), str(tmp_path / "ecgedge_model.cc")],
                   check=True, capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    assert out == [str(tiny_bundles["int8"].manifest["bytes"]), "0"]


def test_arena_is_the_smallest_that_allocates(tiny_bundles):
    pytest.importorskip("tflite_micro", reason="tflite-micro not installed (pip install 'ecgedge[micro]')")
    from tflite_micro.python.tflite_micro import runtime

    data = tiny_bundles["int8"].model_path.read_bytes()
    arena = measure_arena(data)
    assert arena["installed"] and arena["arena_bytes"] > 0
    assert arena["recommended_bytes"] % 1024 == 0 and arena["recommended_bytes"] >= arena["arena_bytes"]
    runtime.Interpreter.from_bytes(data, arena_size=arena["arena_bytes"])
    with pytest.raises(RuntimeError):
        runtime.Interpreter.from_bytes(data, arena_size=arena["arena_bytes"] - 64)


def test_cli_export_c_prints_files_and_arena(tiny_bundles, tmp_path):
    result = CliRunner().invoke(cli, ["convert", "export-c", str(tiny_bundles["int8"].path), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"({tiny_bundles['int8'].manifest['bytes']} bytes)" in result.output
    assert "tensor arena:" in result.output or "tflite-micro is not installed" in result.output
    assert "rhythm head" not in result.output


def test_cli_export_c_says_the_rhythm_head_stays_behind(rhythm_bundle, tmp_path):
    result = CliRunner().invoke(cli, ["convert", "export-c", str(rhythm_bundle.path), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "rhythm head (numpy trees) is not exported to C" in result.output
