"""WFDB data layer (ecgedge.train.data): real MIT-BIH records, synthetic records, cache, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import wfdb
from click.testing import CliRunner

from ecgedge.cli import cli
from ecgedge.device.dsp import SpectrogramConfig, to_model_rate, window_image
from ecgedge.device.errors import EcgEdgeError
from ecgedge.train import data
from ecgedge.train.data import (
    Interval,
    episode_intervals,
    load_windows,
    read_annotations,
    read_beats,
    read_record,
    rhythm_features_of,
    rhythm_intervals,
    summarize,
    window_images,
)
from ecgedge.train.tasks import load_task

MITDB_TASK = load_task("mitdb-rhythm4")


# ---------------------------------------------------------------------------------------------
# Real MIT-BIH records


def test_read_record_prefers_mlii(mitdb_dir):
    rec = read_record(mitdb_dir, "100", ("MLII",))
    assert (rec.lead, rec.fs, rec.n) == ("MLII", 360.0, 650000)
    assert rec.signal.dtype == np.float64
    reference = wfdb.rdrecord(str(mitdb_dir / "100"), channels=[0], sampto=1000).p_signal[:, 0]
    np.testing.assert_array_equal(rec.signal[:1000], reference)


def test_read_record_lead_fallback(mitdb_dir):
    # Record 102 was recorded on V5 and V2: no MLII.
    assert read_record(mitdb_dir, "102", ("MLII",), "first").lead == "V5"
    assert read_record(mitdb_dir, "102", ("MLII", "V2"), "first").lead == "V2"
    with pytest.raises(EcgEdgeError, match=r"has leads \['V5', 'V2'\], none of \['MLII'\]"):
        read_record(mitdb_dir, "102", ("MLII",), "none")


def test_rhythm_intervals_of_201(mitdb_dir):
    intervals = rhythm_intervals(read_annotations(mitdb_dir, "201"), 650000)
    assert intervals[:3] == [Interval(60, 136226, "(AFIB"), Interval(136226, 138552, "(NOD"),
                             Interval(138552, 171815, "(N")]
    assert intervals[-1].stop == 650000
    assert all(a.stop == b.start for a, b in zip(intervals, intervals[1:]))
    assert all(a.label != b.label for a, b in zip(intervals, intervals[1:]))


def test_read_beats_of_100(mitdb_dir):
    samples, symbols = read_beats(mitdb_dir, "100")
    assert samples.dtype == np.int64 and samples.shape == symbols.shape == (2273,)
    assert dict(zip(*np.unique(symbols, return_counts=True))) == {"A": 33, "N": 2239, "V": 1}
    assert (np.diff(samples) > 0).all()


@pytest.fixture(scope="module")
def af_windows(physionet_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return load_windows(MITDB_TASK, physionet_dir, ["201", "202", "mitdb/203"], progress=False,
                        cache_dir=cache), cache


def test_windows_lie_inside_one_labelled_interval(af_windows, mitdb_dir):
    windows, _ = af_windows
    assert windows.x.shape[1] == 3600 and windows.x.dtype == np.float32 and windows.fs == 360.0
    assert set(np.unique(windows.label)) == {"(AFIB", "(AFL", "(N", "(T"}
    assert (np.array(windows.class_names)[windows.y] == [MITDB_TASK.label_map[lb] for lb in windows.label]).all()
    for record in ("201", "203"):
        signal = read_record(mitdb_dir, record).signal
        intervals = rhythm_intervals(read_annotations(mitdb_dir, record), signal.size)
        mine = np.flatnonzero(windows.record == f"mitdb/{record}")
        assert mine.size > 100
        for i in mine[::7]:
            start = int(round(windows.start_s[i] * 360))
            inside = [iv for iv in intervals if iv.start <= start and start + 3600 <= iv.stop]
            assert [iv.label for iv in inside] == [windows.label[i]]
            np.testing.assert_array_equal(windows.x[i], signal[start:start + 3600].astype(np.float32))
    # Record 203 is atrial fibrillation/flutter with runs of ventricular tachycardia, all shorter
    # than a window: a window never straddles a rhythm change, so none is labelled (VT.
    vt = [iv for iv in rhythm_intervals(read_annotations(mitdb_dir, "203"), 650000) if iv.label == "(VT"]
    assert len(vt) > 5 and max(iv.stop - iv.start for iv in vt) < 3600
    assert set(windows.label[windows.record == "mitdb/203"]) == {"(AFIB", "(AFL"}


def test_patient_grouping_201_202(af_windows):
    windows, _ = af_windows
    patients = {r: set(windows.patient[windows.record == r]) for r in np.unique(windows.record)}
    assert patients == {"mitdb/201": {"mitdb/201+202"}, "mitdb/202": {"mitdb/201+202"},
                        "mitdb/203": {"mitdb/203"}}


def test_second_load_reads_the_cache(af_windows, physionet_dir, monkeypatch):
    windows, cache = af_windows
    monkeypatch.setattr(data, "_compute_record_windows", _must_not_run)
    again = load_windows(MITDB_TASK, physionet_dir, ["201", "202", "203"], progress=False, cache_dir=cache)
    for name in ("x", "y", "record", "patient", "start_s", "label"):
        np.testing.assert_array_equal(getattr(again, name), getattr(windows, name))


def test_window_images_equal_window_image_and_are_cached(af_windows, monkeypatch):
    windows, cache = af_windows
    few = windows.subset(np.arange(0, len(windows), 97))
    cfg = MITDB_TASK.spectrogram
    images = window_images(few, cfg, progress=False, cache_dir=cache)
    assert images.shape == (len(few), 64, 64, 3) and images.dtype == np.float32
    for i in (0, len(few) - 1):
        np.testing.assert_array_equal(images[i], window_image(few.x[i], few.fs, cfg))
    monkeypatch.setattr(data, "window_image", _must_not_run)
    np.testing.assert_array_equal(window_images(few, cfg, progress=False, cache_dir=cache), images)


def test_rhythm_features_give_each_window_the_history_a_stream_has(af_windows, mitdb_dir):
    """Training's rhythm features read, as the device does, the signal just before each window
    (its context features): here the real record 201 itself, where earlier windows cover it."""
    from ecgedge.device.rhythm import CONTEXT_S, FEATURE_NAMES, window_rhythm_features

    windows, cache = af_windows
    rows = np.flatnonzero(windows.record == "mitdb/201")
    rows = rows[np.argsort(windows.start_s[rows])]
    # A stretch of windows one hop apart (no gap between them) long enough to fill the context.
    first = next(i for i in range(rows.size - 8)
                 if np.allclose(np.diff(windows.start_s[rows[i:i + 8]]), MITDB_TASK.hop_s))
    few = windows.subset(rows[first:first + 8])
    features = rhythm_features_of(few, MITDB_TASK.spectrogram, progress=False, cache_dir=cache)
    signal = read_record(mitdb_dir, "201").signal.astype(np.float32)
    fs, begin = few.fs, int(round(few.start_s[0] * few.fs))
    context = [FEATURE_NAMES.index(n) for n in FEATURE_NAMES if n.startswith("context_")]
    for i in range(len(few)):
        start = int(round(few.start_s[i] * fs))
        history = signal[max(begin, start - int(CONTEXT_S * fs)):start]
        np.testing.assert_allclose(features[i], window_rhythm_features(few.x[i], fs, MITDB_TASK.spectrogram,
                                                                       history=history), rtol=1e-9)
    assert not np.allclose(features[7, context], window_rhythm_features(few.x[7], fs, MITDB_TASK.spectrogram)[context])


def test_rows_computed_by_forked_workers_equal_those_of_one_process(af_windows, physionet_dir, tmp_path,
                                                                    monkeypatch):
    """Windows, images and rhythm features come out the same from two forked workers as from this
    process (three real records; the rhythm features' chunks hold whole records, so each window
    still gets its history)."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    windows, _ = af_windows
    monkeypatch.setattr(data, "PARALLEL_MIN_RECORDS", 2)
    monkeypatch.setattr(data, "cpu_workers", lambda: 2)
    forked = load_windows(MITDB_TASK, physionet_dir, ["201", "202", "203"], progress=False, cache_dir=tmp_path / "w")
    for name in ("x", "y", "record", "patient", "start_s", "label"):
        np.testing.assert_array_equal(getattr(forked, name), getattr(windows, name))
    assert len(list((tmp_path / "w" / "windows").glob("*.npz"))) == 3
    # The file digests the workers computed reached the memo of the parent.
    memo = json.loads((tmp_path / "w" / "file-sha256.json").read_text())
    assert {Path(p).name for p in memo} == {f"{r}.{ext}" for r in ("201", "202", "203") for ext in ("hea", "dat", "atr")}
    few = windows.subset(np.arange(0, len(windows), 7))
    cfg = MITDB_TASK.spectrogram
    one = rhythm_features_of(few, cfg, progress=False, cache_dir=tmp_path / "one", workers=1)
    two = rhythm_features_of(few, cfg, progress=False, cache_dir=tmp_path / "two", workers=2)
    np.testing.assert_array_equal(one, two)
    assert np.isfinite(one).any(axis=1).all()
    chunks = [np.arange(a, min(a + 50, len(few))) for a in range(0, len(few), 50)]
    images = data._cached_rows(tmp_path / "images.npy", len(few), cfg.image_shape, np.float32,
                               lambda i: window_image(few.x[i], few.fs, cfg), "images", False, chunks, workers=2)
    for i in (0, len(few) // 2, len(few) - 1):
        np.testing.assert_array_equal(images[i], window_image(few.x[i], few.fs, cfg))
    # A failing row stops the computation with its error and leaves no cache file behind.
    with pytest.raises(ZeroDivisionError):
        data._cached_rows(tmp_path / "bad.npy", len(few), (1,), np.float64, lambda i: np.array([1 // (int(i) - 60)]),
                          "bad", False, chunks, workers=2)
    assert not list(tmp_path.glob("*bad*"))


def test_summary_counts_each_record_and_class_as_a_plain_loop_does(af_windows):
    """The grouped summary (one pass over the windows) against the plain per-record loop it replaced."""
    from ecgedge.train.data import covered_seconds

    windows, _ = af_windows
    summary = summarize(windows, MITDB_TASK, per_record=True)
    for i, name in enumerate(MITDB_TASK.class_names):
        mine = windows.y == i
        records = np.unique(windows.record[mine])
        seconds = sum(covered_seconds(windows.start_s[mine & (windows.record == r)], MITDB_TASK.window_s)
                      for r in records)
        assert summary["classes"][name] == {"windows": int(mine.sum()), "minutes": round(seconds / 60.0, 2),
                                            "records": records.size}
        for r in np.unique(windows.record):
            assert summary["per_record"][r][name] == int((mine & (windows.record == r)).sum())
    assert summary["classes"]["AF"]["records"] == 3 and summary["classes"]["NSR"]["records"] == 2


def _must_not_run(*args, **kwargs):
    raise AssertionError("the cache should have answered")


# ---------------------------------------------------------------------------------------------
# Synthetic records: cache invalidation, salem2018, episodes


def test_cache_recomputes_on_changed_config_or_file(tmp_path, wfdb_record, monkeypatch):
    db = tmp_path / "data" / "mitdb"
    wfdb_record(db, "100", 360, 60, [(0, "+", "(N"), (30, "+", "(AFIB")], leads=("MLII", "V1"))
    cache = tmp_path / "cache"
    calls = []
    compute = data._compute_record_windows
    monkeypatch.setattr(data, "_compute_record_windows", lambda *a: calls.append(1) or compute(*a))

    def load(task):
        return load_windows(task, tmp_path / "data", progress=False, cache_dir=cache)

    first = load(MITDB_TASK)
    assert list(first.label) == ["(N"] * 5 + ["(AFIB"] * 5 and len(calls) == 1
    load(MITDB_TASK)
    assert len(calls) == 1  # cache hit
    from dataclasses import replace
    assert len(load(replace(MITDB_TASK, hop_s=10.0))) == 6 and len(calls) == 2  # config changed
    # Same file size, new content: the rhythm now changes at 40 s.
    wfdb.wrann("100", "atr", np.array([0, 40 * 360]), symbol=["+", "+"], aux_note=["(N", "(AFIB"],
               write_dir=str(db), fs=360)
    changed = load(MITDB_TASK)
    assert len(calls) == 3
    assert list(changed.label) == ["(N"] * 7 + ["(AFIB"] * 3


@pytest.fixture
def salem_data(tmp_path, wfdb_record):
    """Tiny nsrdb, afdb, vfdb, cudb and edb databases in tmp_path (see each comment)."""
    root = tmp_path / "physionet"
    # nsrdb: beat annotations only, 128 Hz, 40 s: whole record is (N -> 7 windows.
    wfdb_record(root / "nsrdb", "16265", 128, 40, [(t, "N", "") for t in np.arange(0.5, 40, 0.8)])
    # afdb: (AFIB from 20 s to 45 s -> 4 windows; its (N is not used.
    wfdb_record(root / "afdb", "04015", 250, 60, [(0, "+", "(N"), (20, "+", "(AFIB"), (45, "+", "(N")])
    (root / "afdb" / "RECORDS").write_text("00735\n04015\n")  # 00735 has no files: excluded
    # vfdb: (VF 10-30 s and (VFL 30-50 s -> 3 + 3 windows; (N is not used.
    wfdb_record(root / "vfdb", "418", 250, 60,
                [(0, "+", "(N"), (10, "+", "(VF"), (30, "+", "(VFL"), (50, "+", "(N")], leads=("ECG", "ECG-2"))
    # cudb: "[" at 5 s, "]" at 40 s: VF 5-40 s under a (VT note from 0 s -> 6 windows;
    # the (N after 40 s is not used.
    wfdb_record(root / "cudb", "cu01", 250, 50, [(0, "+", "(VT"), (5, "[", ""), (40, "]", ""), (40, "+", "(N")],
                leads=("ECG",))
    # edb: ST episodes 5-27 s (lead 0) and 20-30 s (lead 1) join into 5-30 s (4 windows);
    # (ST0+ from 65 s never closes (to 80 s: 2 windows); T episodes and rhythm are ignored.
    wfdb_record(root / "edb", "e0103", 250, 80,
                [(0, "+", "(N"), (5, "s", "(ST0-"), (20, "s", "(ST1+"), (27, "s", "ST0-)"),
                 (30, "s", "ST1+)"), (40, "T", "(T0+"), (60, "T", "T0+)"), (65, "s", "(ST0+")],
                leads=("MLIII", "V4"))
    return root


def test_salem2018_label_mapping(salem_data, tmp_path):
    task = load_task("salem2018")
    windows = load_windows(task, salem_data, progress=False, cache_dir=tmp_path / "cache")
    assert windows.fs == 128.0 and windows.x.shape == (len(windows), 1280)
    counts = {r: dict(zip(*np.unique(windows.label[windows.record == r], return_counts=True)))
              for r in np.unique(windows.record)}
    assert counts == {"nsrdb/16265": {"(N": 7}, "afdb/04015": {"(AFIB": 4},
                      "vfdb/418": {"(VF": 3, "(VFL": 3}, "cudb/cu01": {"(VF": 6}, "edb/e0103": {"(ST": 6}}
    assert windows.start_s[windows.record == "cudb/cu01"].tolist() == [5, 10, 15, 20, 25, 30]
    assert windows.start_s[windows.record == "edb/e0103"].tolist() == [5, 10, 15, 20, 65, 70]
    assert windows.start_s[windows.record == "afdb/04015"].tolist() == [20, 25, 30, 35]
    summary = summarize(windows, task)
    assert summary["classes"]["VF"] == {"windows": 12, "minutes": round((40 + 35) / 60, 2), "records": 2}
    assert summary["classes"]["NSR"] == {"windows": 7, "minutes": round(40 / 60, 2), "records": 1}
    # 250 Hz windows were resampled as the device resamples: their image is the raw window's.
    raw = read_record(salem_data / "afdb", "04015", ("ECG1",)).signal[20 * 250:30 * 250]
    target = SpectrogramConfig(fs=128.0)
    np.testing.assert_allclose(windows.x[windows.record == "afdb/04015"][0],
                               to_model_rate(raw, 250.0, target), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(window_image(windows.x[windows.label == "(AFIB"][0], 128.0, task.spectrogram),
                               window_image(raw, 250.0, task.spectrogram), atol=1e-4)


def test_episode_close_matches_lead_when_text_differs():
    ann = data.Annotations(np.array([10, 20, 30]), np.array(["s", "s", "s"]),
                           np.array(["(ST0-", "ST0)", "(ST1+"]))
    assert episode_intervals(ann, 100) == [Interval(10, 20, "(ST"), Interval(30, 100, "(ST")]


# ---------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit status 2, no traceback


@pytest.fixture
def tiny_mitdb(tmp_path, wfdb_record):
    root = tmp_path / "physionet"
    wfdb_record(root / "mitdb", "100", 360, 30, [(0, "+", "(N")], leads=("MLII", "V1"))
    return root


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_summary_of_tiny_database(tiny_mitdb, cache_dir):
    result = run_cli("data", "summary", "--data", tiny_mitdb, "--json")
    assert result.exit_code == 0, result.output
    import json
    summary = json.loads(result.stdout)
    assert summary["classes"]["NSR"] == {"windows": 5, "minutes": 0.5, "records": 1}


def test_missing_data_dir(tmp_path, cache_dir):
    result = run_cli("data", "summary", "--data", tmp_path / "nowhere")
    assert_one_line_error(result, f"data folder {tmp_path / 'nowhere'} does not exist")


def test_missing_database_dir(tmp_path, cache_dir):
    result = run_cli("data", "summary", "--data", tmp_path)
    assert_one_line_error(result, f"{tmp_path / 'mitdb'} does not exist", "ecgedge data download mitdb")


def test_unknown_record(tiny_mitdb, tmp_path):
    result = run_cli("data", "show", "999", "--at", 0, "--data", tiny_mitdb, "--out", tmp_path / "x.png")
    assert_one_line_error(result, "unknown record '999' in task mitdb-rhythm4")


def test_window_outside_record(tiny_mitdb, tmp_path):
    result = run_cli("data", "show", "100", "--at", 25, "--data", tiny_mitdb, "--out", tmp_path / "x.png")
    assert_one_line_error(result, "--at 25.0 s", "between 0 and 20.0 s")


def test_missing_lead(tiny_mitdb, tmp_path, cache_dir):
    task = tmp_path / "t.toml"
    task.write_text('name = "t"\nleads = ["V9"]\nlead_fallback = "none"\n[databases.mitdb]\n'
                    '[classes]\nA = ["(N"]\nB = ["(T"]\n')
    result = run_cli("data", "summary", "--task", task, "--data", tiny_mitdb)
    assert_one_line_error(result, "has leads ['MLII', 'V1'], none of ['V9']")


def test_unreadable_header(tiny_mitdb, cache_dir):
    (tiny_mitdb / "mitdb" / "100.hea").write_text("this is not a header\n")
    result = run_cli("data", "summary", "--data", tiny_mitdb)
    assert_one_line_error(result, "can not read header", "100.hea")


def test_truncated_signal(tiny_mitdb, cache_dir):
    (tiny_mitdb / "mitdb" / "100.dat").write_bytes(b"\x01\x02\x03")
    result = run_cli("data", "summary", "--data", tiny_mitdb)
    assert_one_line_error(result, "can not read signal file", "100.dat")


def test_missing_signal_file(tiny_mitdb, cache_dir):
    (tiny_mitdb / "mitdb" / "100.dat").unlink()
    result = run_cli("data", "summary", "--data", tiny_mitdb)
    assert_one_line_error(result, "record 100 needs", "100.dat, which does not exist")


def test_no_windows_is_an_error_not_an_empty_result(tiny_mitdb, tmp_path, cache_dir):
    task = tmp_path / "t.toml"
    task.write_text('name = "t"\nwindow_s = 60\n[databases.mitdb]\n[classes]\nA = ["(N"]\nB = ["(T"]\n')
    result = run_cli("data", "summary", "--task", task, "--data", tiny_mitdb)
    assert_one_line_error(result, "task t gives no windows from records mitdb/100")


@pytest.mark.parametrize("text,message", [
    (None, "unknown task 'nope'"),
    ('name = "t"\n[databases.mitdb]\n[classes]\nA = ["(N"]\nB = ["(AFIBB"]\n', "unknown rhythm label '(AFIBB'"),
    ('name = "t"\nhop_s = -1\n[databases.mitdb]\n[classes]\nA = ["(N"]\nB = ["(T"]\n', "hop_s must be > 0, got -1.0"),
])
def test_bad_task(tiny_mitdb, tmp_path, cache_dir, text, message):
    task = "nope"
    if text:
        task = tmp_path / "t.toml"
        task.write_text(text)
    assert_one_line_error(run_cli("data", "summary", "--task", task, "--data", tiny_mitdb), message)
