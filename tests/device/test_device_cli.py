"""``ecgedge device run|eval|bench``: JSON contracts and every bad input of the device issue."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ecgedge.cli import cli
from ecgedge.device.benchmark import synthetic_ecg

FS = 360.0
WINDOW = 720  # tiny bundle: 2 s windows, hop 1 s
REPO = Path(__file__).resolve().parents[2]


def invoke(*args, input=None):
    return CliRunner().invoke(cli, ["device", *map(str, args)], input=input)


def lines(result):
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def write_csv(path, columns, header=None):
    rows = ([",".join(header)] if header else []) + [",".join(map(str, r)) for r in np.column_stack(columns)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def ecg_csv(tmp_path):
    signal = np.round(synthetic_ecg(11 * WINDOW // 4, FS, seed=0), 5)  # 5.5 s
    return write_csv(tmp_path / "ecg.csv", [np.arange(signal.size) / FS, signal], header=["time", "MLII"]), signal


def test_run_json_lines_schema_and_summary(tiny_bundle, ecg_csv):
    path, signal = ecg_csv
    result = invoke("run", "--bundle", tiny_bundle.path, "--input", path, "--fs", FS, "--summary")
    assert result.exit_code == 0, result.output
    rows = lines(result)
    windows, summary = rows[:-1], rows[-1]["summary"]
    full = [w for w in windows if w["label"] is not None]
    assert len(full) == (signal.size - WINDOW) // 360 + 1 == 4  # MLII column chosen by the bundle's lead list
    for i, w in enumerate(full):
        assert set(w) == {"t_start", "t_end", "label", "probs", "latency_ms"}
        assert (w["t_start"], w["t_end"]) == (float(i), i + 2.0)
        assert w["label"] in tiny_bundle.classes and list(w["probs"]) == tiny_bundle.classes
        assert abs(sum(w["probs"].values()) - 1) < 0.05 and w["latency_ms"] > 0
    assert windows[-1]["label"] is None and windows[-1]["reason"].startswith("too short: 540 of 720")
    assert set(summary) == {"episodes", "time_s", "burden", "recording"}
    assert sum(e["n_windows"] for e in summary["episodes"]) == 4
    # The recording's one answer is the bundle's rule over the four windows.
    from ecgedge.device.decision import decide

    expected = decide([[w["probs"][c] for c in tiny_bundle.classes] for w in full], tiny_bundle.classes)
    assert summary["recording"]["label"] == expected.label and summary["recording"]["n_windows"] == 4


def test_run_stdin_text_and_int16_agree(tiny_bundle):
    digital = (synthetic_ecg(3 * WINDOW, FS, seed=4) * 1000).astype(np.int16)
    text = invoke("run", "--bundle", tiny_bundle.path, "--input", "-", "--fs", FS,
                  input="\n".join(map(str, digital)) + "\n")
    raw = invoke("run", "--bundle", tiny_bundle.path, "--input", "-", "--fs", FS, "--format", "int16",
                 input=digital.astype("<i2").tobytes())
    assert text.exit_code == raw.exit_code == 0, text.output + raw.output
    strip = [{k: v for k, v in r.items() if k != "latency_ms"} for r in lines(text)]
    assert strip == [{k: v for k, v in r.items() if k != "latency_ms"} for r in lines(raw)]
    assert len(strip) == 5


@pytest.mark.parametrize("edit, reason", [
    (lambda x: np.where(np.arange(x.size) == 100, np.nan, x), "non-finite samples (NaN or inf): 1 of 720"),
    (lambda x: np.where(np.arange(x.size) == 100, np.inf, x), "non-finite samples (NaN or inf): 1 of 720"),
    (lambda x: np.where(np.arange(x.size) < 720, 0.0, x), "flat line (lead off?): 720 of 720"),
    (lambda x: np.where(np.arange(x.size) < 720, np.clip(x, -0.05, 0.3), x), "clipping: "),
])
def test_bad_windows_give_null_label_and_the_stream_goes_on(tiny_bundle, tmp_path, edit, reason):
    x = edit(synthetic_ecg(2 * WINDOW, FS, seed=0))
    path = tmp_path / "x.npy"
    np.save(path, x)
    result = invoke("run", "--bundle", tiny_bundle.path, "--input", path, "--fs", FS)
    assert result.exit_code == 0, result.output
    rows = lines(result)
    assert rows[0]["label"] is None and rows[0]["probs"] is None and rows[0]["reason"].startswith(reason)
    assert rows[-1]["label"] in tiny_bundle.classes  # the last window (2..4 s) is clean


def test_input_shorter_than_a_window(tiny_bundle, tmp_path):
    np.save(tmp_path / "short.npy", synthetic_ecg(300, FS, seed=0))
    result = invoke("run", "--bundle", tiny_bundle.path, "--input", tmp_path / "short.npy", "--fs", FS)
    assert result.exit_code == 2
    assert "has 300 samples (0.833333 s at 360 Hz), shorter than half a 2 s window (720 samples)" in result.stderr
    # At least half a window: padded with its mean into one window, as training pads short recordings.
    x = synthetic_ecg(500, FS, seed=0)
    np.save(tmp_path / "short.npy", x)
    result = invoke("run", "--bundle", tiny_bundle.path, "--input", tmp_path / "short.npy", "--fs", FS)
    assert result.exit_code == 0, result.output
    (row,) = lines(result)
    from ecgedge.device.runtime import Classifier

    wrapped = Classifier(tiny_bundle).classify_window(np.concatenate([x, np.full(220, x.mean())]), FS)
    assert row["label"] == wrapped.label
    stdin = invoke("run", "--bundle", tiny_bundle.path, "--input", "-", "--fs", FS, input="1\n2\n3\n")
    assert stdin.exit_code == 2 and "the input had 3 samples" in stdin.stderr
    assert lines(stdin)[0]["reason"] == "too short: 3 of 720 samples left at the end of the input"


@pytest.mark.parametrize("fs, message", [
    (None, "does not say its sampling rate: pass --fs HZ"),
    ("abc", "--fs must be a number of Hz, got 'abc'"),
    ("0", "--fs must be between 50 and 20000 Hz for an ECG, got 0"),
    ("-360", "got -360"),
    ("nan", "got nan"),
    ("1e6", "got 1e6"),
    ("333.3331", "can not resample 333.3331 Hz to 128.0 Hz"),
])
def test_missing_or_wrong_fs(tiny_bundle, ecg_csv, fs, message):
    args = ["run", "--bundle", tiny_bundle.path, "--input", ecg_csv[0], "--lead", "MLII"]
    result = invoke(*args, *(["--fs", fs] if fs is not None else []))
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_wfdb_fs_disagreeing_with_header(tiny_bundle, tmp_path, wfdb_record):
    wfdb_record(tmp_path, "rec", FS, 4.0, leads=("MLII",))
    result = invoke("run", "--bundle", tiny_bundle.path, "--input", tmp_path / "rec", "--fs", 250)
    assert result.exit_code == 2 and "says 360 Hz but --fs 250 was given" in result.stderr
    ok = invoke("run", "--bundle", tiny_bundle.path, "--input", tmp_path / "rec")
    assert ok.exit_code == 0 and [r["t_start"] for r in lines(ok)] == [0.0, 1.0, 2.0]


def test_non_numeric_csv(tiny_bundle, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("MLII\n0.1\n0.2\nabc\n0.4\n")
    result = invoke("run", "--bundle", tiny_bundle.path, "--input", path, "--fs", FS)
    assert result.exit_code == 2 and "bad.csv line 4: 'abc' is not a number" in result.stderr


def test_csv_lead_by_index_and_unknown_name(tiny_bundle, ecg_csv):
    path, _ = ecg_csv
    by_index = invoke("run", "--bundle", tiny_bundle.path, "--input", path, "--fs", FS, "--lead", "1")
    assert by_index.exit_code == 0 and len(lines(by_index)) == 5
    unknown = invoke("run", "--bundle", tiny_bundle.path, "--input", path, "--fs", FS, "--lead", "V5")
    assert unknown.exit_code == 2 and "has no column named 'V5' (columns: ['time', 'MLII'])" in unknown.stderr


def test_truncated_dat_and_lying_header(tiny_bundle, tmp_path, wfdb_record):
    wfdb_record(tmp_path, "cut", FS, 4.0, leads=("MLII",))
    dat = tmp_path / "cut.dat"
    dat.write_bytes(dat.read_bytes()[:1000])
    cut = invoke("run", "--bundle", tiny_bundle.path, "--input", tmp_path / "cut")
    assert cut.exit_code == 2 and "cut.dat is truncated: " in cut.stderr and "file holds 1000 bytes" in cut.stderr
    wfdb_record(tmp_path, "lie", FS, 4.0, leads=("MLII",))
    hea = tmp_path / "lie.hea"
    hea.write_text(hea.read_text().replace(" 1440", " 99999", 1))
    lie = invoke("run", "--bundle", tiny_bundle.path, "--input", tmp_path / "lie")
    assert lie.exit_code == 2 and "announces 99999 samples" in lie.stderr


def copy_bundle(bundle, dest):
    dest.mkdir()
    for name in ("model.tflite", "model.json"):
        (dest / name).write_bytes((bundle.path / name).read_bytes())
    return dest


def test_missing_tampered_and_incompatible_bundles(tiny_bundle, ecg_csv, tmp_path):
    run = lambda b: invoke("run", "--bundle", b, "--input", ecg_csv[0], "--fs", FS)  # noqa: E731
    missing = run(tmp_path / "nowhere")
    assert missing.exit_code == 2 and "model.json not found" in missing.stderr
    tampered = copy_bundle(tiny_bundle, tmp_path / "tampered")
    model = bytearray((tampered / "model.tflite").read_bytes())
    model[-10] ^= 0xFF
    (tampered / "model.tflite").write_bytes(bytes(model))
    result = run(tampered)
    assert result.exit_code == 2 and "does not match its manifest" in result.stderr
    future = copy_bundle(tiny_bundle, tmp_path / "future")
    manifest = json.loads((future / "model.json").read_text())
    (future / "model.json").write_text(json.dumps({**manifest, "format_version": 99}))
    result = run(future)
    assert result.exit_code == 2 and "bundle format version 99, this ecgedge reads versions 1, 2" in result.stderr
    other = copy_bundle(tiny_bundle, tmp_path / "other")
    (other / "model.json").write_text(json.dumps({**manifest, "spectrogram": {**manifest["spectrogram"], "n_freq": 16}}))
    result = run(other)
    assert result.exit_code == 2 and "input.shape must be [1, 16, 32, 2] (from the spectrogram and classes), got " \
        "[1, 32, 32, 2]" in result.stderr


def expected_window_counts(mitdb_dir, records, bundle):
    """Windows the training task's data layer (wfdb-based) cuts with the bundle's settings."""
    from ecgedge.train.data import Interval, cut_windows, read_annotations, read_record, rhythm_intervals

    counted, skipped = 0, {}
    for record in records:
        rec = read_record(mitdb_dir, record, ("MLII",), "first")
        intervals = rhythm_intervals(read_annotations(mitdb_dir, record), rec.n)
        length, hop = int(round(bundle.window_s * rec.fs)), int(round(bundle.hop_s * rec.fs))
        counted += len(cut_windows(rec.signal, intervals, length, hop, set(bundle.label_map))[1])
        for iv in intervals:
            if iv.label not in bundle.label_map:
                n = len(cut_windows(rec.signal, [Interval(*iv)], length, hop, {iv.label})[1])
                skipped[iv.label] = skipped.get(iv.label, 0) + n
    return counted, {k: v for k, v in skipped.items() if v}


def test_eval_json_on_real_records(tiny_bundle, mitdb_dir, tmp_path):
    records = ["100", "203"]
    result = invoke("eval", "--bundle", tiny_bundle.path, "--data", mitdb_dir, "--records", ",".join(records),
                    "--json", "--predictions", tmp_path / "pred.jsonl")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"n_windows", "accuracy", "macro_f1", "per_class", "labels", "confusion", "skipped"} <= set(report)
    counted, skipped = expected_window_counts(mitdb_dir, records, tiny_bundle)
    assert report["n_windows"] + sum(report["skipped"]["quality"].values()) == counted
    assert report["skipped"]["labels"] == skipped
    assert report["labels"] == tiny_bundle.classes
    assert np.asarray(report["confusion"]).shape == (4, 4) and np.sum(report["confusion"]) == report["n_windows"]
    assert sum(pc["support"] for pc in report["per_class"].values()) == report["n_windows"]
    assert 0 <= report["accuracy"] <= 1 and 0 <= report["macro_f1"] <= 1
    assert report["records"]["100"]["lead"] == "MLII" and report["rhythm_head"] is False
    # Per record: the windows and correct decisions of each class add up to the pooled counts.
    confusion = np.asarray(report["confusion"])
    for i, c in enumerate(report["labels"]):
        per_record = [r["recall"][c] for r in report["records"].values() if c in r["recall"]]
        assert sum(p["windows"] for p in per_record) == confusion[i].sum()
        assert sum(p["correct"] for p in per_record) == confusion[i, i]
        assert sum(r["predicted"].get(c, 0) for r in report["records"].values()) == confusion[:, i].sum()
    for scores in report["records"].values():
        assert scores["classified"] == sum(p["windows"] for p in scores["recall"].values())
        assert scores["classified"] == sum(scores["predicted"].values())
        assert scores["accuracy"] == round(sum(p["correct"] for p in scores["recall"].values())
                                           / scores["classified"], 6)
    assert set(report["records"]["203"]["recall"]) >= {"AF"} and "AF" not in report["records"]["100"]["recall"]
    text = invoke("eval", "--bundle", tiny_bundle.path, "--data", mitdb_dir, "--records", "100").output
    assert re.search(r"^100\s+\d\.\d{4}\s+\d+/\d+\s+-\s+-\s+-$", text, re.M), text
    predictions = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(predictions) == counted and {p["record"] for p in predictions} == set(records)


def test_bench_json(tiny_bundle):
    result = invoke("bench", "--bundle", tiny_bundle.path, "--json", "-n", 20)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for part in ("dsp", "invoke", "end_to_end"):
        assert 0 < report[part]["median_ms"] <= report[part]["p90_ms"]
    assert report["windows_per_s"] > 0 and 0 < report["real_time_factor"] < 1
    assert report["model_bytes"] == tiny_bundle.manifest["bytes"] and report["peak_rss_mib"] > 0


def test_device_run_works_with_heavy_modules_blocked(tiny_bundle, ecg_csv):
    """As on a Raspberry Pi: numpy, click and LiteRT only."""
    heavy = ["tensorflow", "scipy", "sklearn", "wfdb", "keras", "pandas", "matplotlib"]
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {heavy!r}:
                    raise ImportError("blocked: " + name, name=name)
        sys.meta_path.insert(0, Block())
        from ecgedge.cli import cli
        cli(["device", "run", "--bundle", {str(tiny_bundle.path)!r}, "--input", {str(ecg_csv[0])!r},
             "--fs", "360"], prog_name="ecgedge")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 5
