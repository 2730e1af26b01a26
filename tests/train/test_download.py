"""``ecgedge data download`` against a PhysioNet-shaped HTTP server on 127.0.0.1."""

import functools
import http.server
import socket
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from ecgedge.cli import cli
from ecgedge.device.errors import EcgEdgeError
from ecgedge.train.data import load_windows, read_record
from ecgedge.train.download import download_database
from ecgedge.train.tasks import task_from_dict


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """requests must reach 127.0.0.1 directly, whatever proxy the environment names."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def physionet_server(tmp_path, wfdb_record):
    """Serve tmp_path/site like physionet.org: the project pages content/tinydb/ (naming the
    version) and content/tinydb/1.0.0/, and the files under files/tinydb/1.0.0/."""
    site = tmp_path / "site"
    files = site / "files" / "tinydb" / "1.0.0"
    wfdb_record(files, "r1", 250, 30, [(0, "+", "(N"), (12, "+", "(AFIB")], leads=("MLII", "V1"))
    wfdb_record(files, "r2", 250, 20, [(0, "+", "(AFIB")], leads=("MLII", "V1"), seed=1)
    (files / "ANNOTATORS").write_text("atr\treference annotations\n")
    page = site / "content" / "tinydb"
    (page / "1.0.0").mkdir(parents=True)
    (page / "index.html").write_text("<html><p>Version: 1.0.0</p></html>\n")
    (page / "1.0.0" / "index.html").write_text("<html><p>tinydb 1.0.0</p></html>\n")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", files
    server.shutdown()
    server.server_close()
    thread.join()


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def test_download_fetches_every_file(physionet_server, tmp_path):
    url, served = physionet_server
    data = tmp_path / "data"
    result = CliRunner().invoke(cli, ["data", "download", "tinydb", "--data", str(data), "--url", url])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"tinydb: {data / 'tinydb'}\n"
    got = sorted(p.name for p in (data / "tinydb").iterdir())
    assert got == ["r1.atr", "r1.dat", "r1.hea", "r2.atr", "r2.dat", "r2.hea"]
    for name in got:
        assert (data / "tinydb" / name).read_bytes() == (served / name).read_bytes()
    assert [p.name for p in data.iterdir()] == ["tinydb"]  # no staging folder left
    rec = read_record(data / "tinydb", "r1")
    assert (rec.fs, rec.n, rec.lead) == (250.0, 7500, "MLII")
    # The downloaded database is usable by a task straight away.
    task = task_from_dict({"name": "tiny", "databases": {"tinydb": {}},
                           "classes": {"NSR": ["(N"], "AF": ["(AFIB"]}})
    windows = load_windows(task, data, progress=False, cache_dir=tmp_path / "cache")
    assert dict(zip(*np.unique(windows.label, return_counts=True))) == {"(AFIB": 2 + 3, "(N": 1}


def test_each_file_is_fetched_once(physionet_server, tmp_path, monkeypatch):
    """wfdb lists a two-lead record's .dat twice; two threads fetching it at once used to
    append one copy to the other (a CI run caught r1.dat longer than the server's)."""
    from wfdb.io import download

    fetched, real = [], download.dl_pn_file

    def counting(inputs):
        fetched.append(inputs[0])
        return real(inputs)

    monkeypatch.setattr(download, "dl_pn_file", counting)
    url, _ = physionet_server
    download_database("tinydb", tmp_path / "data", url)
    assert sorted(fetched) == ["r1.atr", "r1.dat", "r1.hea", "r2.atr", "r2.dat", "r2.hea"]


def test_unreachable_server_is_exit_2_and_leaves_nothing(tmp_path):
    data = tmp_path / "data"
    url = closed_port_url()
    result = CliRunner().invoke(cli, ["data", "download", "tinydb", "--data", str(data), "--url", url])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: could not download tinydb from {url}")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert list(data.iterdir()) == []


def test_failure_mid_download_leaves_no_partial_files(physionet_server, tmp_path):
    url, served = physionet_server
    (served / "r2.dat").unlink()  # r2's header names a signal file the server does not have
    data = tmp_path / "data"
    with pytest.raises(EcgEdgeError, match=r"could not download tinydb from .*404.*/r2.dat"):
        download_database("tinydb", data, url)
    assert list(data.iterdir()) == []


def test_unknown_database_is_a_clear_error(physionet_server, tmp_path):
    url, _ = physionet_server
    with pytest.raises(EcgEdgeError, match="could not download nosuchdb .*404"):
        download_database("nosuchdb", tmp_path, url)
    with pytest.raises(EcgEdgeError, match="PhysioNet slugs such as 'afdb', got '../etc'"):
        download_database("../etc", tmp_path, url)


def test_cinc2017_is_fetched_from_its_challenge_project_with_its_labels(tmp_path, wfdb_record):
    """cinc2017 lives in challenge-2017/<version>/training/ with REFERENCE.csv beside its records."""
    site = tmp_path / "site"
    files = site / "files" / "challenge-2017" / "1.0.0"
    training = files / "training"
    wfdb_record(training, "A00001", 300, 12, leads=("ECG",))
    wfdb_record(training, "A00002", 300, 12, leads=("ECG",), seed=1)
    (training / "REFERENCE.csv").write_text("A00001,N\nA00002,A\n")
    (files / "RECORDS").write_text("training/\n")
    page = site / "content" / "challenge-2017"
    (page / "1.0.0" / "training").mkdir(parents=True)
    (page / "index.html").write_text("<html><p>Version: 1.0.0</p></html>\n")
    (page / "1.0.0" / "index.html").write_text("<html></html>\n")
    (page / "1.0.0" / "training" / "index.html").write_text("<html></html>\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        folder = download_database("cinc2017", tmp_path / "data", f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert folder == tmp_path / "data" / "cinc2017"
    assert sorted(p.name for p in folder.iterdir()) == ["A00001.dat", "A00001.hea", "A00002.dat", "A00002.hea",
                                                        "REFERENCE.csv"]
    from ecgedge.train.tasks import load_task

    windows = load_windows(load_task("cinc2017"), tmp_path / "data", progress=False, cache_dir=tmp_path / "cache")
    assert windows.label.tolist() == ["(N", "(AFIB"]  # 12 s recordings: one 10 s window each
