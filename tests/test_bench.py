"""Result files of ``ecgedge bench`` on the tiny int8 bundle: schema, environment, command.

No timing is asserted (timings are noise on a shared machine); only what the files must say.
"""

import json

import pytest
from click.testing import CliRunner

from ecgedge.cli import cli

PNG = b"\x89PNG\r\n\x1a\n"


def read_record(folder, name):
    record = json.loads((folder / f"{name}.json").read_text())
    assert record["benchmark"] == name
    assert set(record["machine"]) >= {"system", "machine", "cpu", "cpu_count", "python"}
    assert set(record["versions"]) >= {"tensorflow", "ai_edge_litert", "numpy", "ecgedge"}
    assert isinstance(record["command"], str) and record["command"]
    assert (folder / f"{name}.png").read_bytes()[:8] == PNG
    return record["results"]


def test_latency_result_file_without_float_references(tiny_bundle, tmp_path):
    result = CliRunner().invoke(cli, ["bench", "latency", "--pipeline", str(tmp_path / "none"), "--bundle",
                                      str(tiny_bundle.path), "-n", "5", "--warmup", "1", "--batch", "4",
                                      "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    results = read_record(tmp_path, "latency")
    assert results["windows"] == {"n": 5, "warmup": 1, "fs": 360.0, "seed": 0, "batch": 4, "threads": 1}
    assert set(results["timings"]) == {"dsp", "tflite_int8"}
    assert set(results["timings"]["tflite_int8"]["end_to_end"]) == {"median_ms", "p90_ms"}
    assert results["ratios"] == {}  # nothing to compare the device with
    assert set(results["throughput_windows_per_s"]) == {"tflite_int8"}
    targets = results["targets"]
    assert targets["int8_bytes"] == tiny_bundle.manifest["bytes"] and targets["speedup_ok"] is None


def test_latency_refuses_a_missing_bundle(tmp_path):
    result = CliRunner().invoke(cli, ["bench", "latency", "--pipeline", str(tmp_path), "--results", str(tmp_path)])
    assert result.exit_code == 2 and "no int8 bundle" in result.output


def test_scaling_result_file_on_real_records(tiny_bundle, physionet_dir, tmp_path):
    result = CliRunner().invoke(cli, ["bench", "scaling", "--bundle", str(tiny_bundle.path), "--data",
                                      str(physionet_dir), "--lengths", "20,40", "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    results = read_record(tmp_path, "scaling")
    points = results["points"]
    assert [p["seconds"] for p in points] == [20.0, 40.0]
    # The tiny bundle's 2 s windows with a 1 s hop: one window per second after the first.
    assert [p["windows"] for p in points] == [19, 39]
    for p in points:
        assert p["peak_rss_mib"] >= p["rss_before_mib"] > 0
        assert p["real_time_factor"] == pytest.approx(p["wall_s"] / p["seconds"])
    assert set(results["fit"]) == {"time_vs_length", "peak_rss_spread_mib", "max_real_time_factor", "seconds_for_24h"}


def test_backbone_pareto_front_and_table():
    from ecgedge.convert.bench_backbones import markdown_table, pareto_front

    rows = [
        {"backbone": "a", "invoke_ms": 0.2, "test_int8_accuracy": 0.80},
        {"backbone": "b", "invoke_ms": 0.5, "test_int8_accuracy": 0.90},
        {"backbone": "c", "invoke_ms": 0.6, "test_int8_accuracy": 0.85},  # slower and worse than b
        {"backbone": "d", "invoke_ms": 0.2, "test_int8_accuracy": 0.70},  # as fast as a, worse
    ]
    assert pareto_front(rows) == ["a", "b"]
    full = [dict(r, int8_bytes=2048, dsp_ms=0.1, end_to_end_ms=0.4, cv_accuracy=0.5, test_float_accuracy=0.8,
                 int8_agreement=1.0) for r in rows]
    table = markdown_table({"rows": full, "pareto": ["a", "b"]}).splitlines()
    assert table[2].startswith("| a * | 2 |") and table[4].startswith("| c | 2 |")


def test_bench_help_lists_the_four_benchmarks():
    result = CliRunner().invoke(cli, ["bench", "--help"])
    assert result.exit_code == 0
    for name in ("latency", "accuracy", "backbones", "scaling"):
        assert f"  {name} " in result.output
