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
