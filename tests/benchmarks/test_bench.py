"""Result files of ``ecgedge bench`` on the tiny int8 bundle: schema, environment, command.

No timing is asserted (timings are noise on a shared machine); only what the files must say.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ecgedge.cli import cli
from ecgedge.device.errors import EcgEdgeError

PNG = b"\x89PNG\r\n\x1a\n"


def read_record(folder, name):
    record = json.loads((folder / f"{name}.json").read_text())
    assert record["benchmark"] == name
    assert set(record["machine"]) >= {"system", "machine", "cpu", "cpu_count", "python"}
    assert set(record["versions"]) >= {"tensorflow", "ai_edge_litert", "numpy", "ecgedge"}
    assert isinstance(record["command"], str) and record["command"]
    assert (folder / f"{name}.png").read_bytes()[:8] == PNG
    return record["results"]


def synthetic_latency(bundle, folder, n, warmup, batch):
    """``ecgedge bench latency`` of ``bundle`` alone on synthetic windows; its results."""
    result = CliRunner().invoke(cli, ["bench", "latency", "--pipeline", str(folder / "none"), "--bundle",
                                      str(bundle.path), "-n", str(n), "--warmup", str(warmup), "--batch", str(batch),
                                      "--windows", "synthetic", "--results", str(folder)])
    assert result.exit_code == 0, result.output
    return read_record(folder, "latency")


def test_latency_result_file_without_float_references(tiny_bundle, tmp_path):
    results = synthetic_latency(tiny_bundle, tmp_path, 5, 1, 4)
    assert results["windows"] == {"source": "synthetic", "n": 5, "warmup": 1, "fs": 360.0, "seed": 0, "batch": 4,
                                  "threads": 1}
    assert set(results["timings"]) == {"dsp", "tflite_int8"}
    assert set(results["timings"]["tflite_int8"]["end_to_end"]) == {"median_ms", "p90_ms"}
    assert results["ratios"] == {}  # nothing to compare the device with
    assert set(results["throughput_windows_per_s"]) == {"tflite_int8"}
    targets = results["targets"]
    assert targets["int8_bytes"] == tiny_bundle.manifest["bytes"] and targets["speedup_ok"] is None


def test_latency_of_a_bundle_with_a_rhythm_head_also_times_the_model_alone(rhythm_bundle, tmp_path):
    results = synthetic_latency(rhythm_bundle, tmp_path, 3, 1, 2)
    assert set(results["timings"]) == {"dsp", "tflite_int8", "tflite_int8_model_only"}
    model_only = results["timings"]["tflite_int8_model_only"]
    assert results["timings"]["tflite_int8"]["interpreter"]["rhythm_head"]
    assert not model_only["interpreter"]["rhythm_head"]
    assert results["targets"]["model_only_dsp_plus_invoke_ms"] == pytest.approx(
        model_only["dsp"]["median_ms"] + model_only["invoke"]["median_ms"], abs=1e-3)


def test_latency_windows_come_from_every_record_in_turns(wfdb_record, tmp_path):
    from ecgedge.device.benchmark import windows_of_records
    from ecgedge.benchmarks.bench_scaling import record_paths

    signals = [wfdb_record(tmp_path / "mitdb", name, 100.0, seconds, leads=("V1", "MLII"), seed=i)[:, 1]
               for i, (name, seconds) in enumerate([("r1", 30.0), ("r2", 4.0), ("r3", 50.0)])]
    windows, fs = windows_of_records(record_paths(tmp_path), 5.0, 5)
    assert fs == 100.0
    # ceil(5 / 3) = 2 windows per record, at its start and end; r2 is shorter than a window and
    # gives none, so the first of the others' four windows comes again as the fifth.
    r1, r3 = signals[0], signals[2]
    expected = [r1[:500], r3[:500], r1[2500:], r3[4500:], r1[:500]]
    assert len(windows) == len(expected)
    for got, want in zip(windows, expected):
        np.testing.assert_allclose(got, want, atol=1e-9)
    # with 28 s of history: r1 is too short now; r3's segments start at 0 and end at its end
    segments, _ = windows_of_records(record_paths(tmp_path), 5.0, 6, history_s=28.0)
    assert len(segments) == 6
    for got, want in zip(segments, [r3[:3300], r3[1700:]] * 3):
        np.testing.assert_allclose(got, want, atol=1e-9)


def test_latency_windows_refuse_records_shorter_than_a_window(wfdb_record, tmp_path):
    from ecgedge.device.benchmark import windows_of_records
    from ecgedge.benchmarks.bench_scaling import record_paths

    wfdb_record(tmp_path / "mitdb", "r1", 100.0, 4.0)
    with pytest.raises(EcgEdgeError, match="at least 5.0 s long"):
        windows_of_records(record_paths(tmp_path), 5.0, 3)


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
    assert results["rhythm_head"] is False  # the tiny bundle has none


def test_scaling_can_leave_the_rhythm_head_out(rhythm_bundle, physionet_dir, tmp_path):
    for flag, used in (("--rhythm-head", True), ("--no-rhythm-head", False)):
        result = CliRunner().invoke(cli, ["bench", "scaling", "--bundle", str(rhythm_bundle.path), "--data",
                                          str(physionet_dir), "--lengths", "10,20", flag, "--results", str(tmp_path)])
        assert result.exit_code == 0, result.output
        assert read_record(tmp_path, "scaling")["rhythm_head"] is used


def test_backbone_pareto_front_and_table():
    from ecgedge.benchmarks.bench_backbones import markdown_table, pareto_front

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


def test_interleaved_times_every_job_on_each_chunk_before_the_next():
    from ecgedge.device.benchmark import interleaved

    calls = []
    jobs = {name: (lambda name, i: calls.append((name, i)), [(name, i) for i in range(7)]) for name in "ab"}
    ms = interleaved(jobs, warmup=1, rounds=3)
    assert calls[:2] == [("a", 0), ("b", 0)]  # warm-up first, untimed
    timed = calls[2:]
    assert sorted(timed) == [(name, i) for name in "ab" for i in range(1, 7)]
    assert timed == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("a", 3), ("a", 4), ("b", 3), ("b", 4),
                     ("a", 5), ("a", 6), ("b", 5), ("b", 6)]
    assert {name: t.shape for name, t in ms.items()} == {"a": (6,), "b": (6,)} and (ms["a"] >= 0).all()


def test_interleaved_refuses_args_lists_of_different_lengths():
    from ecgedge.device.benchmark import interleaved

    with pytest.raises(ValueError, match="one length"):
        interleaved({"a": (print, [()] * 3), "b": (print, [()] * 4)})


def test_device_bench_times_the_windows_it_is_given(tiny_bundle):
    from ecgedge.device.benchmark import measure_window_latency, synthetic_ecg
    from ecgedge.device.runtime import Classifier

    classifier = Classifier(tiny_bundle, num_threads=1)
    seen = []
    preprocess = classifier.preprocess
    classifier.preprocess = lambda w, fs, history=None: seen.append(float(w[0])) or preprocess(w, fs, history)
    given = [synthetic_ecg(classifier.window_samples(250.0), 250.0, seed) for seed in (1, 2)]
    result = measure_window_latency(classifier, fs=250.0, n=3, warmup=1, windows=given)
    assert result["windows"] == "given" and result["n"] == 3 and result["fs_in"] == 250.0
    assert set(seen) == {float(w[0]) for w in given}  # only those windows, repeated to make 1 + 3
    with pytest.raises(EcgEdgeError, match="no windows"):
        measure_window_latency(classifier, fs=250.0, n=3, windows=[])


def test_device_bench_times_a_context_head_with_the_history_it_reads(rhythm_bundle):
    from ecgedge.device.benchmark import measure_window_latency
    from ecgedge.device.rhythm import CONTEXT_S
    from ecgedge.device.runtime import Classifier

    classifier = Classifier(rhythm_bundle, num_threads=1)
    seen = []
    preprocess = classifier.preprocess
    classifier.preprocess = lambda w, fs, history=None: seen.append((w.size, history.size)) or preprocess(w, fs, history)
    result = measure_window_latency(classifier, fs=250.0, n=3, warmup=1)
    assert set(seen) == {(classifier.window_samples(250.0), int(CONTEXT_S * 250.0))}
    assert result["history_s"] == CONTEXT_S


def test_recorder_rates_classify_the_same_windows_at_other_rates(rhythm_bundle, physionet_dir):
    from ecgedge.benchmarks.bench_robustness import recorder_rates, summary
    from ecgedge.device.runtime import Classifier

    classifier = Classifier(rhythm_bundle, num_threads=1)
    out = recorder_rates(classifier, physionet_dir, ("203",), rates=(360.0, 125.0))
    assert out["native_hz"] == 360.0
    # 360 -> 360 Hz is the identity: every label stays, at the native accuracy.
    assert out["360"] == {"accuracy": out["native_accuracy"], "same_label": 1.0}
    assert 0.0 <= out["125"]["same_label"] <= 1.0 and 0.0 <= out["125"]["accuracy"] <= 1.0
    text = summary({"noise_stress": {"clean": {"accuracy": 1.0, "not_a_rhythm": 0.0}, "n_windows": 1,
                                     "records": ["203"], "noise": {}},
                    "non_ecg": {}, "units_and_offset": {}, "recorder_rates": out})
    assert "125 Hz acc" in text


def test_robustness_defaults_to_the_records_the_deployable_model_held_out(tmp_path, monkeypatch):
    """Without --records the pipeline's held-out mitdb records are measured; records the model
    was trained on are named in a warning (their accuracy is not a held-out number)."""
    import json

    from ecgedge.benchmarks import bench_robustness

    (tmp_path / "run").mkdir()
    (tmp_path / "bundle").mkdir()
    split = {"train": ["mitdb/100", "cinc2017/A00002"], "val": ["mitdb/103"], "test": ["mitdb/101", "cinc2017/A00001", "mitdb/115"]}
    (tmp_path / "run" / "split.json").write_text(json.dumps(split))
    seen = []
    monkeypatch.setattr(bench_robustness, "measure_robustness", lambda bundle, data, records, seed: seen.append(records) or {})
    monkeypatch.setattr(bench_robustness, "summary", lambda results: "")
    monkeypatch.setattr(bench_robustness, "plot", lambda path, results: None)
    base = ["bench", "robustness", "--pipeline", str(tmp_path), "--results", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, base)
    assert result.exit_code == 0, result.output
    assert seen[-1] == ("101", "115") and "warning" not in result.output
    result = CliRunner().invoke(cli, base + ["--records", "101,100,103"])
    assert seen[-1] == ("101", "100", "103")
    assert "warning: the deployable model was trained on mitdb 100, 103" in result.output


def test_match_beats_pairs_within_the_tolerance():
    from ecgedge.benchmarks.bench_beats import match_beats

    assert match_beats([1.0, 2.05, 3.5], [1.02, 2.0, 3.0]) == (2, 1, 1)  # 3.0 missed, 3.5 extra
    assert match_beats([], [1.0]) == (0, 1, 0) and match_beats([1.0], []) == (0, 0, 1)
    assert match_beats([1.0, 1.05], [1.0]) == (1, 0, 1)  # two found beats for one reference beat: one is extra


def test_beats_on_a_real_record_clean_and_in_recorded_noise(physionet_dir, tmp_path):
    """Record 100 (sinus, MLII): every detector finds its beats; muscle artifact at 0 dB costs
    detector 2 positive predictivity (its +-8 ms slope passes the noise), detector 3 less."""
    if not (physionet_dir / "nstdb" / "ma.hea").is_file():
        pytest.skip("nstdb noise records not found")
    result = CliRunner().invoke(cli, ["bench", "beats", "--data", str(physionet_dir), "--records", "100",
                                      "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    results = read_record(tmp_path, "beats")
    assert results["records"] == ["100"] and results["leads"] == {"100": "MLII"} and results["n_windows"] == 180
    clean = results["clean"]
    assert set(clean) == {"1", "2", "3"} and clean["2"]["n_reference"] > 2000
    assert all(clean[d]["se"] > 0.99 and clean[d]["ppv"] > 0.99 for d in ("2", "3"))
    assert set(results["noise"]) == {"bw", "ma"} and set(results["noise"]["ma"]) == {"12", "6", "0"}
    muscle = results["noise"]["ma"]["0"]
    assert muscle["2"]["ppv"] < clean["2"]["ppv"] and muscle["2"]["ppv"] < muscle["3"]["ppv"]
