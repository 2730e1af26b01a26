"""The numpy WFDB reader (ecgedge.device.wfdb_reader) against the wfdb package, its oracle."""

import numpy as np
import pytest

from ecgedge.device.errors import EcgEdgeError
from ecgedge.device.wfdb_reader import read_annotations, read_digital, read_header, read_signal, to_physical

wfdb = pytest.importorskip("wfdb")

# 201 and 203 hold AF and many rhythm changes; 207 ventricular flutter; 232 long pauses
# (SKIP codes); 102 has no MLII.
MITDB_RECORDS = ["100", "102", "201", "203", "207", "232"]


@pytest.mark.parametrize("record", MITDB_RECORDS)
def test_signals_equal_wfdb(mitdb_dir, record):
    path = mitdb_dir / record
    header = read_header(path)
    digital = read_digital(path, header)
    expected = wfdb.rdrecord(str(path), physical=False)
    assert header.names == expected.sig_name
    assert header.fs == expected.fs
    np.testing.assert_array_equal(digital, expected.d_signal)
    np.testing.assert_allclose(to_physical(digital, header), wfdb.rdrecord(str(path)).p_signal, rtol=0, atol=1e-12)


@pytest.mark.parametrize("record", MITDB_RECORDS)
def test_annotations_equal_wfdb(mitdb_dir, record):
    ours = read_annotations(mitdb_dir / record, "atr")
    theirs = wfdb.rdann(str(mitdb_dir / record), "atr")
    np.testing.assert_array_equal(ours.sample, theirs.sample)
    assert ours.symbol == theirs.symbol
    assert ours.aux_note == theirs.aux_note
    for field in ("subtype", "chan", "num"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(theirs, field))
    assert any(a.startswith("(") for a in ours.aux_note)


def test_synthetic_format16_record_with_aux_notes(tmp_path, wfdb_record):
    written = wfdb_record(tmp_path, "syn", 250.0, 8.0, leads=("I", "II", "V1"),
                          annotations=[(0.5, "+", "(N"), (1.0, "N", ""), (4.0, "+", "(AFIB"), (6.5, "V", "")])
    signal, fs, name = read_signal(tmp_path / "syn", ["II"])
    assert (fs, name) == (250.0, "II")
    np.testing.assert_allclose(signal, written[:, 1], atol=1e-12)
    ann = read_annotations(tmp_path / "syn")
    theirs = wfdb.rdann(str(tmp_path / "syn"), "atr")
    assert ann.symbol == theirs.symbol == ["+", "N", "+", "V"]
    assert ann.aux_note == theirs.aux_note
    np.testing.assert_array_equal(ann.sample, [125, 250, 1000, 1625])


def test_gaps_become_nan_in_physical_units(tmp_path, wfdb_record):
    wfdb_record(tmp_path, "gap", 100.0, 2.0, leads=("II",))
    dat = tmp_path / "gap.dat"
    raw = bytearray(dat.read_bytes())
    raw[20:22] = (-32768).to_bytes(2, "little", signed=True)  # sample 10: WFDB's "no sample"
    dat.write_bytes(bytes(raw))
    signal, _, _ = read_signal(tmp_path / "gap")
    assert np.isnan(signal[10]) and np.isfinite(np.delete(signal, 10)).all()


def test_truncated_dat_is_refused(tmp_path, wfdb_record):
    wfdb_record(tmp_path, "cut", 100.0, 3.0, leads=("II",))
    dat = tmp_path / "cut.dat"
    dat.write_bytes(dat.read_bytes()[:-50])
    with pytest.raises(EcgEdgeError, match=r"cut.dat is truncated: .* 300 samples .* 600 bytes, the file holds 550"):
        read_digital(tmp_path / "cut")


@pytest.mark.parametrize("claimed, problem", [(5000, "is truncated"), (100, "is longer than its header says")])
def test_header_lying_about_length_is_refused(tmp_path, wfdb_record, claimed, problem):
    wfdb_record(tmp_path, "lie", 100.0, 3.0, leads=("II",))
    hea = tmp_path / "lie.hea"
    lines = hea.read_text().splitlines()
    fields = lines[0].split()
    fields[3] = str(claimed)
    hea.write_text("\n".join([" ".join(fields)] + lines[1:]) + "\n")
    with pytest.raises(EcgEdgeError, match=f"{problem}: .*announces {claimed} samples"):
        read_digital(tmp_path / "lie")


def test_unsupported_format_and_missing_header(tmp_path, wfdb_record):
    wfdb_record(tmp_path, "f80", 100.0, 1.0, leads=("II",))
    hea = tmp_path / "f80.hea"
    hea.write_text(hea.read_text().replace(" 16 ", " 80 "))
    with pytest.raises(EcgEdgeError, match="format 80; this reader handles formats 16, 212"):
        read_header(tmp_path / "f80")
    with pytest.raises(EcgEdgeError, match="nope.hea not found"):
        read_header(tmp_path / "nope")


@pytest.mark.parametrize("record_line, signal_line, message", [
    ("r 1 1e 10", "r.dat 16 200 16 0", r"sampling rate '1e'; it must be a number of Hz"),
    ("r 1 nan 10", "r.dat 16 200 16 0", r"sampling rate 'nan'"),
    ("r 1 250x 10", "r.dat 16 200 16 0", r"sampling rate '250x'"),
    ("r 1 1e308 10", "r.dat 16 200 16 0", r"sampling rate 1e\+308 Hz; it must be > 0 and at most 1e\+06 Hz"),
    ("r 1 360 10x", "r.dat 16 200 16 0", r"'10x' samples per signal"),
    ("r 1x 360 10", "r.dat 16 200 16 0", r"'1x' signals"),
    ("r 1 360 10", "r.dat 16 -200 16 0", r"signal 1 has gain '-200'"),
    ("r 1 360 10", "r.dat 16 abc 16 0", r"signal 1 has gain 'abc'"),
    ("r 1 360 10", "r.dat 16 1e400/mV 16 0", r"signal 1 has gain '1e400/mV'"),
    ("r 1 360 10", "r.dat 16 200 16 xyz", r"signal 1 has ADC zero 'xyz'"),
    ("r 1 360 10", "/usr/lib/libc.so.6 16 200 16 0", r"names the file '/usr/lib/libc.so.6', outside"),
    ("r 1 360 10", "../r.dat 16 200 16 0", r"names the file '\.\./r\.dat', outside"),
    ("r 1 360 10", "sub/../../r.dat 16 200 16 0", r"outside the record's folder"),
])
def test_header_values_are_read_strictly(record_line, signal_line, message):
    """A field that is not what WFDB allows is refused by name, never replaced by a default."""
    from pathlib import Path

    from ecgedge.device.wfdb_reader import parse_header

    with pytest.raises(EcgEdgeError, match=message):
        parse_header(f"{record_line}\n{signal_line}\n", Path("db/r.hea"))


def test_header_defaults_that_wfdb_defines():
    """Gain 0 or absent is WFDB's 200; a counter frequency and base are allowed after fs."""
    from pathlib import Path

    from ecgedge.device.wfdb_reader import DEFAULT_GAIN, parse_header

    header = parse_header("r 2 360/1.5(2) 10\nr.dat 16 0 16 7\nsub/r2.dat 16\n", Path("db/r.hea"))
    assert header.fs == 360.0 and header.n_samples == 10
    assert [s.gain for s in header.signals] == [DEFAULT_GAIN, DEFAULT_GAIN]
    assert header.signals[0].baseline == 7 and header.signals[1].file_name == "sub/r2.dat"


def test_only_the_announced_bytes_are_read_after_the_offset(tmp_path):
    """Format 16 with a byte offset: the values after the offset, as many as the header says."""
    values = np.arange(-50, 50, dtype="<i2")
    (tmp_path / "r.dat").write_bytes(b"\xAA" * 6 + values.tobytes())
    (tmp_path / "r.hea").write_text("r 1 360 100\nr.dat 16+6 100(3)/mV 16 0 0 0 0 II\n")
    digital = read_digital(tmp_path / "r")
    np.testing.assert_array_equal(digital[:, 0], values)
    physical, fs, name = read_signal(tmp_path / "r")
    np.testing.assert_allclose(physical, (values - 3) / 100.0)
    assert (fs, name) == (360.0, "II")


def test_annotation_before_the_record_start_is_refused(tmp_path):
    """A negative SKIP that puts an annotation at sample -1000 (wfdb's own SKIP to -1 is fine)."""
    skip = (-1000) & 0xFFFFFFFF
    words = [59 << 10, skip >> 16, skip & 0xFFFF, 1 << 10, 0]
    (tmp_path / "r.atr").write_bytes(np.asarray(words, dtype="<u2").tobytes())
    with pytest.raises(EcgEdgeError, match=r"r\.atr: the annotation at word 3 lies at sample -1000"):
        read_annotations(tmp_path / "r")


def test_the_fallback_lead_is_the_first_ecg_channel_of_an_icu_record(tmp_path):
    """A bedside monitor's record may start with ABP or PLETH; the device reads its first ECG lead
    (before: signal 0, a blood pressure curve called a rhythm)."""
    from ecgedge.device.wfdb_reader import lead_index

    fs, n = 125, 1250
    t = np.arange(n) / fs
    signals = np.column_stack([80 + 20 * np.sin(2 * np.pi * t), 0.5 + 0.1 * np.sin(t), np.sin(7 * t), np.cos(7 * t)])
    wfdb.wrsamp("icu", fs=fs, units=["mmHg", "NU", "mV", "mV"], sig_name=["ABP", "PLETH", "II", "V"],
                p_signal=signals, fmt=["16"] * 4, write_dir=str(tmp_path))
    assert read_signal(tmp_path / "icu", ["MLII", "ECG"])[2] == "II"  # no preferred lead: first ECG
    assert read_signal(tmp_path / "icu", ["V"])[2] == "V"
    assert lead_index(["RESP", "X1", "X2"], ["MLII"], units=["NU", "mmHg", "mV"]) == 2  # by units
    with pytest.raises(EcgEdgeError, match=r"none of them ECG by name or units"):
        lead_index(["ABP", "PLETH"], ["MLII"])
    with pytest.raises(EcgEdgeError, match=r"has leads \['ABP', 'II'\], none of \['MLII'\]"):
        lead_index(["ABP", "II"], ["MLII"], fallback="none")
