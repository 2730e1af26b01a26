"""Labelled time from every label source, on the real PhysioNet records (ecgedge.device.labels,
through ecgedge.train.data and ecgedge.device.evaluate)."""

import numpy as np
import pytest

from ecgedge.device import labels
from ecgedge.device.errors import DataError
from ecgedge.train.data import load_windows, read_annotations, read_record, summarize
from ecgedge.train.tasks import load_task


@pytest.fixture(scope="session")
def cinc_dir(physionet_dir):
    if not (physionet_dir / "cinc2017" / "REFERENCE.csv").is_file():
        pytest.skip("CinC 2017 not found beside mitdb")
    return physionet_dir / "cinc2017"


def test_cinc2017_reference_has_the_published_counts(cinc_dir):
    table = labels.read_reference(cinc_dir / "REFERENCE.csv")
    assert len(table) == 8528
    counts = {k: sum(v == k for v in table.values()) for k in "NAO~"}
    assert counts == {"N": 5050, "A": 738, "O": 2456, "~": 284}
    assert (table["A00001"], table["A00004"]) == ("N", "A")


def test_cinc2017_windows_per_recording_and_short_recordings_wrapped(cinc_dir, cache_dir):
    task = load_task("cinc2017")
    # A00001 N, 30 s -> 5 windows; A00004 A, 30 s -> 5; A00592 (A, 2,996 samples, 9.99 s) and
    # A05493 (N, 2,714 samples, 9.05 s) are shorter than a window: one window each, padded with
    # its mean.
    names = ["A00001", "A00004", "A00592", "A05493"]
    windows = load_windows(task, cinc_dir.parent, names, progress=False, cache_dir=cache_dir)
    per = {r: int((windows.record == f"cinc2017/{r}").sum()) for r in names}
    assert per == {"A00001": 5, "A00004": 5, "A00592": 1, "A05493": 1}
    assert windows.fs == 300.0 and windows.x.shape[1] == 3000
    assert set(windows.label[windows.record == "cinc2017/A00004"]) == {"(AFIB"}
    short = read_record(cinc_dir, "A05493", ("ECG",)).signal
    np.testing.assert_array_equal(windows.x[windows.record == "cinc2017/A05493"][0],
                                  np.concatenate([short, np.full(3000 - short.size, short.mean())]).astype(np.float32))
    # Each recording is its own patient (the Challenge publishes no patient ids).
    assert len(set(windows.patient)) == 4
    summary = summarize(windows, task)
    assert summary["classes"]["AF"]["records"] == 2 and summary["classes"]["NSR"]["records"] == 2
    assert summary["classes"]["AF"]["windows"] == 6


def test_pad_to_window_refuses_less_than_half_a_window():
    assert labels.pad_to_window(np.arange(4), 10) is None
    np.testing.assert_array_equal(labels.pad_to_window(np.arange(6.0), 10), [0, 1, 2, 3, 4, 5, 2.5, 2.5, 2.5, 2.5])


def test_reference_file_errors(tmp_path):
    (tmp_path / "REFERENCE.csv").write_text("A1,N\nA1,A\n")
    with pytest.raises(DataError, match="record 'A1' is listed twice"):
        labels.read_reference(tmp_path / "REFERENCE.csv")
    (tmp_path / "REFERENCE.csv").write_text("A1,N,extra\n")
    with pytest.raises(DataError, match="line 1: expected 'record,label'"):
        labels.read_reference(tmp_path / "REFERENCE.csv")
    with pytest.raises(DataError, match="do not exist"):
        labels.read_reference(tmp_path / "missing.csv")


def test_cudb_brackets_mark_vf_on_the_real_record(physionet_dir):
    cudb = physionet_dir / "cudb"
    ann = read_annotations(cudb, "cu01")
    n = read_record(cudb, "cu01", ("ECG",)).n
    rhythm = labels.rhythm_intervals(ann.sample, ann.symbol, ann.aux, n)
    vf = labels.bracket_intervals(ann.sample, ann.symbol, n, "(VF")
    # cu01: "(VF" note at 53,541, "[" at 53,546, "]" at 127,231, record of 127,232 samples.
    assert rhythm == [(53541, n, "(VF")] and vf == [(53546, 127231, "(VF")]
    assert labels.overlay(rhythm, vf) == [(53541, n, "(VF")]
    # Episodes override whatever rhythm note is in force, and rhythm time outside them stays.
    assert labels.overlay([(0, 100, "(N")], [(20, 30, "(VF")]) == [(0, 20, "(N"), (20, 30, "(VF"), (30, 100, "(N")]


def test_multidb_labels_on_real_records(physionet_dir, cache_dir):
    task = load_task("multidb-rhythm5")
    windows = load_windows(task, physionet_dir, ["cudb/cu01", "vfdb/424", "mitdb/203"], progress=False,
                           cache_dir=cache_dir)
    assert windows.fs == 360.0
    classes = task.class_names
    by = {r: {classes[c]: int(((windows.record == r) & (windows.y == c)).sum()) for c in range(len(classes))}
          for r in ("cudb/cu01", "vfdb/424", "mitdb/203")}
    # cu01: VF from 53,541 (214.16 s) to the end at 508.93 s -> (508.93 - 10 - 214.16) // 5 + 1 windows.
    assert by["cudb/cu01"] == {"NSR": 0, "AF": 0, "OTHER": 0, "VENT": 57, "NOISY": 0}
    # vfdb 424 writes VF as "(VFIB" (and "(VFL"), and labels noise "(NOISE": both are learned.
    assert set(windows.label[windows.record == "vfdb/424"]) >= {"(VFIB", "(NOISE"}
    assert by["vfdb/424"]["VENT"] > 0 and by["vfdb/424"]["NOISY"] > 0
    assert by["mitdb/203"]["AF"] > 0


def test_device_eval_cuts_the_windows_training_cuts(physionet_dir, cache_dir):
    from ecgedge.convert.rundir import label_source
    from ecgedge.device.evaluate import record_windows

    task = load_task("multidb-rhythm5")
    for db_name, record in (("cudb", "cu01"), ("cinc2017", "A05493"), ("cinc2017", "A00004"), ("mitdb", "215")):
        db = task.database(db_name)
        source = label_source(db)  # as the bundle carries it
        rw = record_windows(physionet_dir / db_name / record, task.label_map, task.window_s, task.hop_s,
                            task.leads, "first", source)
        ours = load_windows(task, physionet_dir, [f"{db_name}/{record}"], progress=False, cache_dir=cache_dir)
        assert rw.labels == ours.label.tolist()
        np.testing.assert_allclose(rw.starts / rw.fs, ours.start_s)


def test_abnormal_sinus_relabels_sinus_windows_with_frequent_abnormal_beats():
    length = 1000
    starts = np.array([0, 1000, 2000, 3000, 4000])
    window_labels = ["(N", "(N", "(N", "(AFIB", "(N"]
    # window 0: one PVC; 1: two (a PVC and an APC); 2: 6 of 10 beats RBBB; 3: AF with PVCs;
    # 4: 4 of 10 beats LBBB. Rhythm notes ("+") are not beats.
    beats = [(0, "N"), (100, "V"), (200, "+"), (1100, "V"), (1500, "A"),
             *[(2000 + 90 * i, "R" if i < 6 else "N") for i in range(10)],
             (3100, "V"), (3500, "V"), *[(4000 + 90 * i, "L" if i < 4 else "N") for i in range(10)]]
    samples, symbols = zip(*beats)
    out = labels.abnormal_sinus(window_labels, starts, length, np.array(samples), list(symbols), "(OTHER")
    assert out.tolist() == ["(N", "(OTHER", "(OTHER", "(AFIB", "(N"]


def test_abnormal_sinus_on_real_mitdb_records(physionet_dir, cache_dir):
    """118 (sinus rhythm, right bundle branch block throughout) is OTHER in multidb-rhythm5;
    100 (sinus rhythm, 33 premature atrial beats and one PVC in 30 min) stays NSR but for the
    windows with two of them; mitdb-rhythm4 keeps MIT-BIH's own labels."""
    multidb = load_windows(load_task("multidb-rhythm5"), physionet_dir, ["mitdb/118", "mitdb/100"],
                           progress=False, cache_dir=cache_dir)
    assert set(multidb.label[multidb.record == "mitdb/118"]) == {"(OTHER"}
    labels_100 = multidb.label[multidb.record == "mitdb/100"]
    assert 0 < np.sum(labels_100 == "(OTHER") < 0.05 * len(labels_100)
    mitdb = load_windows(load_task("mitdb-rhythm4"), physionet_dir, ["mitdb/118"], progress=False,
                         cache_dir=cache_dir)
    assert set(mitdb.label) == {"(N"}


def test_abnormal_sinus_needs_rhythm_notes(tmp_path):
    from ecgedge.device.errors import EcgEdgeError
    from ecgedge.train.tasks import load_task as load

    path = tmp_path / "t.toml"
    path.write_text('name = "t"\nwindow_s = 10.0\nhop_s = 5.0\n[databases.nsrdb]\nlabels = "record"\n'
                    'record_label = "(N"\nabnormal_sinus = "(OTHER"\n[classes]\nNSR = ["(N"]\nOTHER = ["(OTHER"]\n')
    with pytest.raises(EcgEdgeError, match="abnormal_sinus needs labels"):
        load(str(path))
