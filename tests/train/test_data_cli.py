"""The ``ecgedge data`` command line contracts."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ecgedge.cli import cli
from ecgedge.train.data import window_at
from ecgedge.train.tasks import load_task


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_root_help_lists_every_room():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("data", "train", "convert", "device", "bench", "pipeline"):
        assert f"  {command} " in result.stdout


def test_data_help_lists_its_commands():
    result = invoke("data", "--help")
    assert result.exit_code == 0
    for command in ("download", "summary", "show"):
        assert f"  {command} " in result.stdout


def test_summary_json_contract_on_mitdb(physionet_dir, cache_dir):
    result = invoke("data", "summary", "--task", "mitdb-rhythm4", "--data", physionet_dir, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # exactly one JSON object, nothing else on stdout
    assert list(summary) == ["task", "window_s", "classes"]
    assert summary["task"] == "mitdb-rhythm4" and summary["window_s"] == 10.0
    assert list(summary["classes"]) == ["NSR", "AF", "VENT", "OTHER"]
    for name, c in summary["classes"].items():
        assert list(c) == ["windows", "minutes", "records"]
        assert isinstance(c["windows"], int) and isinstance(c["minutes"], float)
        assert isinstance(c["records"], int)
        assert c["windows"] > 0 and c["records"] > 0, name
        # Windows overlap by half: they cover between window_s/2 and window_s each.
        assert c["windows"] * 5 / 60 <= c["minutes"] <= c["windows"] * 10 / 60 + 1e-9
    # Sinus rhythm is the bulk of MIT-BIH (about 1056 of its 1440 annotated minutes).
    assert 950 < summary["classes"]["NSR"]["minutes"] < 1060
    assert summary["classes"]["NSR"]["records"] > 30
    assert summary["classes"]["AF"]["records"] == 8


def test_summary_per_record_and_table(tmp_path, wfdb_record, cache_dir):
    root = tmp_path / "physionet"
    wfdb_record(root / "mitdb", "100", 360, 40, [(0, "+", "(N"), (20, "+", "(AFIB")], leads=("MLII", "V1"))
    wfdb_record(root / "mitdb", "101", 360, 20, [(0, "+", "(SBR")], leads=("MLII", "V1"))
    result = invoke("data", "summary", "--data", root, "--json", "--per-record")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["per_record"] == {"mitdb/100": {"NSR": 3, "AF": 3, "VENT": 0, "OTHER": 0},
                                     "mitdb/101": {"NSR": 0, "AF": 0, "VENT": 0, "OTHER": 3}}
    assert summary["classes"]["VENT"] == {"windows": 0, "minutes": 0.0, "records": 0}
    table = invoke("data", "summary", "--data", root)
    assert table.exit_code == 0
    assert table.stdout.splitlines()[2].split() == ["NSR", "3", "0.3", "1"]


def test_show_writes_png(mitdb_dir, physionet_dir, tmp_path):
    out = tmp_path / "w.png"
    result = invoke("data", "show", "201", "--at", 100, "--data", physionet_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_window_at_labels(physionet_dir):
    task = load_task("mitdb-rhythm4")
    view = window_at(task, "201", 100.0, physionet_dir)
    assert (view.record, view.label, view.class_name, view.lead) == ("mitdb/201", "(AFIB", "AF", "MLII")
    assert view.x.shape == (3600,) and view.x.dtype == np.float32
    # 201 changes from (AFIB to (NOD at sample 136226 (378.4 s).
    assert window_at(task, "201", 375.0, physionet_dir).label == "mixed"
    assert window_at(task, "201", 0.0, physionet_dir).label == "unlabelled"  # the first label is at sample 60
    with pytest.raises(Exception, match="between 0 and 1795.6 s"):
        window_at(task, "201", 1800.0, physionet_dir)
