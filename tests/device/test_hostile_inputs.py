"""Hostile and careless inputs to ``ecgedge device run|eval|selftest`` (issue 15, "Input that
crashes, hangs or misleads").

Every case ends in one of two ways, never in a traceback, a hang or a confident label on a
broken signal:

* ``error``: exit status 2 and exactly one line ``Error: ...`` matching the case's pattern;
* ``null``: exit status 0, a window with ``"label": null`` whose reason matches the pattern,
  and (for a stream) labelled windows after it: the stream went on.

The inputs are built in ``tmp_path`` by the case's builder: WFDB records written byte by byte
(header text and little-endian int16 ``.dat``; no wfdb needed), CSV and ``.npy`` files,
standard-input text and crafted ``selftest.npz`` files. Each case runs through click's
``CliRunner`` on the root command under a SIGALRM watchdog of ``TIMEOUT_S`` seconds (a hang
fails the case); the cases that need a real file descriptor (``/dev/full`` as stdout) or a
memory measurement run in a subprocess with ``timeout=``.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgedge.cli import cli
from ecgedge.device.benchmark import synthetic_ecg
from ecgedge.device.errors import EcgEdgeError

FS = 360  # Hz of every built input; the tiny bundle's windows are 2 s (720 samples), hop 1 s
WINDOW = 720
TIMEOUT_S = 60
REPO = Path(__file__).resolve().parents[2]
BUNDLE = object()  # stands for the bundle folder in a case's arguments


# --- building inputs -------------------------------------------------------------------------

def ecg(n_samples, seed=0):
    """Synthetic ECG, mV: ndarray of shape (n_samples,), float64."""
    return synthetic_ecg(n_samples, FS, seed=seed)


def write_record(folder, name="rec", seconds=4.0, fs="360", gain="1000", adc_zero="0", file_name=None,
                 n_samples=None, digital=None):
    """A one-lead (MLII) format-16 WFDB record whose header fields are given as text.

    Returns the record path without suffix. ``digital`` (int16 ADC values) defaults to
    ``ecg(seconds * 360) * 1000``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if digital is None:
        digital = np.round(ecg(int(seconds * FS)) * 1000).astype("<i2")
    file_name = file_name or f"{name}.dat"
    if not os.path.isabs(file_name) and ".." not in file_name:
        (folder / file_name).write_bytes(np.asarray(digital, dtype="<i2").tobytes())
    n = len(digital) if n_samples is None else n_samples
    (folder / f"{name}.hea").write_text(
        f"{name} 1 {fs} {n}\n{file_name} 16 {gain}/mV 16 {adc_zero} 0 0 0 MLII\n")
    return folder / name


def annotation_words(events):
    """MIT annotation file bytes from events: ("skip", n) or (samples later, code, aux text)."""
    words = []
    for event in events:
        if event[0] == "skip":
            value = event[1] & 0xFFFFFFFF
            words += [59 << 10, value >> 16, value & 0xFFFF]
            continue
        delta, code, aux = event
        words.append((code << 10) | delta)
        if aux:
            raw = aux.encode("latin-1") + (b"\0" if len(aux) % 2 else b"")
            words.append((63 << 10) | len(aux))
            words += list(np.frombuffer(raw, dtype="<u2"))
    words.append(0)
    return np.asarray(words, dtype="<u2").tobytes()


RHYTHM = 28  # "+": rhythm change, its aux the rhythm


def write_database(folder, atr=((0, RHYTHM, "(N"),), **record):
    """A database folder with one record ``rec`` (see :func:`write_record`), its ``.atr`` and RECORDS."""
    path = write_record(folder, **record)
    (Path(folder) / "rec.atr").write_bytes(annotation_words(atr))
    (Path(folder) / "RECORDS").write_text("rec\n")
    return Path(folder)


def write_csv(path, samples, header="MLII"):
    path.write_text(header + "\n" + "\n".join(f"{v:.6g}" for v in samples) + "\n")
    return path


def run_args(*extra):
    return ["device", "run", "--bundle", BUNDLE, *extra]


def selftest_npz(bundle, path, **overrides):
    """A selftest.npz for ``bundle`` with some arrays replaced (a value None drops the array)."""
    x = np.stack([ecg(WINDOW, seed) for seed in range(2)]).astype(np.float32)
    arrays = {"x": x, "fs": np.float64(FS), "labels": np.array(["NSR", "NSR"]),
              "probs": np.full((2, len(bundle.classes)), 0.25, dtype=np.float32),
              "classes": np.array(bundle.classes), "bundle_sha256": np.array(bundle.manifest["sha256"]),
              "seed": np.int64(0)}
    arrays.update(overrides)
    with open(path, "wb") as f:
        np.savez(f, **{k: v for k, v in arrays.items() if v is not None})
    return path


# --- the cases ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One hostile input: ``build(tmp_path, bundle) -> (args, stdin)``; ``expect`` "error" or "null"."""

    name: str
    build: object
    expect: str
    pattern: str
    goes_on: bool = True  # "null": a labelled window must follow the bad stretch


def _wfdb(**fields):
    return lambda tmp, bundle: (run_args("--input", write_record(tmp / "db", **fields)), None)


def _npy(samples):
    def build(tmp, bundle):
        np.save(tmp / "x.npy", samples)
        return run_args("--input", tmp / "x.npy", "--fs", FS), None
    return build


def _outside_dat(relative):
    def build(tmp, bundle):
        elsewhere = tmp / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "lib.dat").write_bytes(np.round(ecg(4 * FS) * 1000).astype("<i2").tobytes())
        name = str(elsewhere / "lib.dat") if not relative else "../elsewhere/lib.dat"
        return run_args("--input", write_record(tmp / "db", file_name=name, n_samples=4 * FS)), None
    return build


def _fifo_dat(tmp, bundle):
    path = write_record(tmp / "db")
    (tmp / "db" / "rec.dat").unlink()
    os.mkfifo(tmp / "db" / "rec.dat")
    return run_args("--input", path), None


def _csv_cell(cell):
    def build(tmp, bundle):
        path = tmp / "x.csv"
        text = "MLII\n" + cell + "\n" + "\n".join(f"{v:.6g}" for v in ecg(3 * WINDOW)) + "\n"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        return run_args("--input", path, "--fs", FS), None
    return build


def _hop(value):
    def build(tmp, bundle):
        return run_args("--input", write_csv(tmp / "x.csv", ecg(3 * WINDOW)), "--fs", FS, "--hop", value), None
    return build


def _stdin_lines(bad_line, bad_text, n_lines=20 * FS, lead=None):
    """Text stdin: ``n_lines`` ECG samples (two columns), line ``bad_line`` replaced by ``bad_text``."""
    def build(tmp, bundle):
        values = np.round(ecg(n_lines) * 1000).astype(int)
        rows = [f"{v},{v}".encode() for v in values]
        rows[bad_line - 1] = bad_text
        args = run_args("--input", "-", "--fs", FS, *(["--lead", lead] if lead is not None else []))
        return args, b"\n".join(rows) + b"\n"
    return build


def _eval(**database):
    def build(tmp, bundle):
        return ["device", "eval", "--bundle", BUNDLE, "--data", write_database(tmp / "db", **database)], None
    return build


def _eval_predictions(target):
    def build(tmp, bundle):
        return ["device", "eval", "--bundle", BUNDLE, "--data", write_database(tmp / "db"),
                "--predictions", target], None
    return build


def _selftest(**overrides):
    def build(tmp, bundle):
        path = selftest_npz(bundle, tmp / "selftest.npz", **overrides)
        return ["device", "selftest", "--bundle", BUNDLE, "--windows", path], None
    return build


def _selftest_bytes(content):
    def build(tmp, bundle):
        (tmp / "selftest.npz").write_bytes(content)
        return ["device", "selftest", "--bundle", BUNDLE, "--windows", tmp / "selftest.npz"], None
    return build


def _huge_middle(factor):
    x = ecg(6 * FS)
    x[2 * FS:4 * FS] *= factor  # windows 1..4 s and 2..4 s (and 3..5 s) see the huge stretch
    return x


CASES = [
    # WFDB headers: tracebacks and silent mistakes
    Case("header fs '1e'", _wfdb(fs="1e"), "error", r"rec\.hea.* sampling rate '1e'"),
    Case("header fs 'nan'", _wfdb(fs="nan"), "error", r"sampling rate 'nan'"),
    Case("header fs '250x'", _wfdb(fs="250x"), "error", r"sampling rate '250x'"),
    Case("header fs '1e308'", _wfdb(fs="1e308"), "error", r"sampling rate 1e\+308"),
    Case("header ADC zero 'xyz'", _wfdb(adc_zero="xyz"), "error", r"signal 1 has ADC zero 'xyz'"),
    Case("header gain '-200'", _wfdb(gain="-200"), "error", r"signal 1 has gain '-200/mV'"),
    Case("header gain 'abc'", _wfdb(gain="abc"), "error", r"signal 1 has gain 'abc/mV'"),
    Case("header gain '1e400' (inf)", _wfdb(gain="1e400"), "error", r"signal 1 has gain '1e400/mV'"),
    Case("header sample count 10**15", _wfdb(n_samples=10**15), "error", r"rec\.dat is truncated"),
    Case("signal file an absolute path", _outside_dat(False), "error", r"outside the record's folder"),
    Case("signal file '../' path", _outside_dat(True), "error", r"'\.\./elsewhere/lib\.dat'.* outside"),
    Case("signal file a FIFO (hang)", _fifo_dat, "error", r"rec\.dat .*not a regular file"),
    # Overflow: a NaN image must not be classified
    Case("header gain 1e-305", _wfdb(gain="1e-305"), "null", r"^(amplitude out of range|non-finite)", goes_on=False),
    Case("samples x1e300", _npy(_huge_middle(1e300)), "null", r"^amplitude out of range"),
    Case("samples x1e-300", _npy(_huge_middle(1e-300)), "null", r"^(amplitude out of range|non-finite)"),
    # CSV
    Case("CSV cell over 131,072 characters", _csv_cell("1" * 140_000), "error", r"x\.csv line 2: .*too long"),
    Case("CSV with a NUL byte", _csv_cell("0.1\0"), "error", r"x\.csv line 2: "),
    Case("CSV row wider than its header", _csv_cell("0.1,0.2"), "error",
         r"x\.csv: the header row names 1 columns, line 2 has 2 cells"),
    Case("CSV ragged data row", _csv_cell("0.1\n0.2,0.3"), "error", r"x\.csv line 3: 2 cells, the first data row has 1"),
    Case("CSV not UTF-8", _csv_cell("0.1\udcff"), "error", r"can not read .*x\.csv: it is not UTF-8"),
    # Options
    Case("--hop inf", _hop("inf"), "error", r"--hop must be .*got inf"),
    Case("--hop 1e308", _hop("1e308"), "error", r"--hop must be .*got 1e\+308"),
    Case("--hop nan", _hop("nan"), "error", r"--hop must be .*got nan"),
    # Text streams: a bad stretch is reported and the stream goes on
    Case("stdin 'abc' at line 5001", _stdin_lines(5001, b"abc"), "null",
         r"^unreadable input: line 5001 'abc'"),
    Case("stdin non-UTF-8 line", _stdin_lines(3001, b"\xff\xfe1"), "null",
         r"^unreadable input: line 3001 '\\xff\\xfe1'"),
    Case("stdin line without the --lead column", _stdin_lines(3001, b"5", lead="1"), "null",
         r"^unreadable input: line 3001 '5'"),
    Case("stdin 2 MB line", _stdin_lines(3001, b"7" * 2_000_000), "null", r"^unreadable input: line 3001 '7777"),
    # eval
    Case("eval header fs 1e308", _eval(fs="1e308"), "error", r"sampling rate 1e\+308"),
    Case("eval .atr with a negative SKIP", _eval(atr=(("skip", -1000), (0, RHYTHM, "(N"))), "error",
         r"rec\.atr.* before the record's start \(a negative SKIP\)"),
    Case("eval --predictions /dev/full", _eval_predictions("/dev/full"), "error",
         r"can not write .*/dev/full.*No space left"),
    Case("eval --predictions in a missing folder", lambda tmp, b: _eval_predictions(tmp / "no" / "p.jsonl")(tmp, b),
         "error", r"can not write .*p\.jsonl"),
    # selftest.npz (the reading side)
    Case("selftest x of objects", _selftest(x=np.array([{"a": 1}, None], dtype=object)), "error",
         r"selftest\.npz.*'x'"),
    Case("selftest fs 'abc'", _selftest(fs=np.array("abc")), "error", r"selftest\.npz.*'fs'"),
    Case("selftest x 1-D", _selftest(x=ecg(WINDOW).astype(np.float32)), "error", r"selftest\.npz.*'x'"),
    Case("selftest probs short", _selftest(probs=np.zeros((1, 4), np.float32)), "error",
         r"selftest\.npz.*'probs'"),
    Case("selftest labels missing", _selftest(labels=None), "error", r"selftest\.npz lacks \['labels'\]"),
    Case("selftest a broken zip", _selftest_bytes(b"PK\x03\x04" + b"\0" * 100), "error",
         r"can not read the self-test windows"),
]


class _Timeout(Exception):
    pass


@pytest.fixture
def watchdog():
    """Fail a case that runs longer than TIMEOUT_S seconds (SIGALRM interrupts blocking reads)."""
    def expire(signum, frame):
        raise _Timeout(f"no answer within {TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TIMEOUT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def invoke(args, bundle, stdin=None):
    args = [str(bundle.path) if a is BUNDLE else str(a) for a in args]
    return CliRunner().invoke(cli, args, input=stdin)


def outcome(result):
    """One line saying how a CLI call ended (for the issue's before/after table)."""
    if isinstance(result.exception, _Timeout):
        return "hang"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"traceback {type(result.exception).__name__}: {str(result.exception)[:80]}"
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error: ")]
    if result.exit_code == 2 and errors:
        return f"exit 2 {errors[0][:110]}"
    rows = [json.loads(ln) for ln in result.stdout.splitlines() if ln.startswith("{")]
    null = [r for r in rows if r.get("label", "x") is None and not r["reason"].startswith("too short")]
    labels = sorted({r["label"] for r in rows if r.get("label")})
    return f"exit {result.exit_code}, {len(rows)} windows, labels {labels}, " + (
        f"null: {null[0]['reason'][:70]}" if null else "no null window")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case, tiny_bundle, tmp_path, watchdog):
    args, stdin = case.build(tmp_path, tiny_bundle)
    result = invoke(args, tiny_bundle, stdin)
    print(f"HOSTILE | {case.name} | {outcome(result)}")
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if case.expect == "error":
        errors = [ln for ln in result.output.splitlines() if ln.startswith("Error: ")]
        assert result.exit_code == 2, result.output[-2000:]
        assert len(errors) == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert re.search(case.pattern, errors[0]), errors[0]
        return
    assert result.exit_code == 0, result.output[-2000:]
    rows = [json.loads(ln) for ln in result.stdout.splitlines()]
    bad = [i for i, r in enumerate(rows) if r["label"] is None and re.search(case.pattern, r["reason"])]
    assert bad, [r.get("reason") for r in rows]
    assert all(rows[i]["probs"] is None for i in bad)
    # No window whose signal overflowed or could not be read is given a label ...
    for r in rows:
        assert r["label"] is None or all(np.isfinite(p) for p in r["probs"].values())
    # ... and the stream goes on after the bad stretch.
    assert not case.goes_on or any(r["label"] is not None for r in rows[bad[-1] + 1:]), rows


# --- cases that need a real process ------------------------------------------------------------

# The peak RSS of this process (VmHWM). Not getrusage's ru_maxrss: on Linux a child started by
# fork + exec inherits the parent's high-water mark there, the whole pytest process's.
PEAK_RSS_KIB = textwrap.dedent("""
    def peak_rss_kib():
        with open("/proc/self/status") as f:
            return int(next(ln for ln in f if ln.startswith("VmHWM:")).split()[1])
""").replace("\n", "\n        ")


def _cli_code(args, rss_file):
    """Python code running ``ecgedge args`` and writing its peak-RSS growth (KiB) to ``rss_file``.

    The growth is counted from after the runtime's imports (numpy, LiteRT), so it is what the
    command itself allocated.
    """
    return textwrap.dedent(f"""
        import ecgedge.device.runtime, ecgedge.device.interpreter, ecgedge.device.inputs
        {PEAK_RSS_KIB}
        base = peak_rss_kib()
        from ecgedge.cli import cli
        try:
            cli({[str(a) for a in args]!r}, prog_name="ecgedge")
        finally:
            with open({str(rss_file)!r}, "w") as f:
                f.write(str(peak_rss_kib() - base))
    """)


def run_cli_process(args, tmp_path, stdout=subprocess.PIPE, stdin=None, timeout=TIMEOUT_S):
    """Run ``ecgedge args`` in a fresh interpreter: (returncode, stdout, stderr, peak RSS growth MiB).

    LiteRT's own "INFO: Created TensorFlow Lite XNNPACK delegate" line is left out of stderr.
    """
    rss_file = tmp_path / "rss.txt"
    proc = subprocess.run([sys.executable, "-c", _cli_code(args, rss_file)], stdout=stdout, stderr=subprocess.PIPE,
                          input=stdin, cwd=REPO, timeout=timeout)
    err = "".join(ln for ln in proc.stderr.decode().splitlines(True) if not ln.startswith("INFO: "))
    grew = rss_file.read_text() if rss_file.exists() else "0"
    return proc.returncode, proc.stdout, err, int(grew or 0) / 1024


def test_stdout_on_a_full_disk_is_one_error_line(tiny_bundle, tmp_path):
    path = write_csv(tmp_path / "x.csv", ecg(3 * WINDOW))
    with open("/dev/full", "wb") as full:
        rc, _, err, _ = run_cli_process(["device", "run", "--bundle", tiny_bundle.path, "--input", path,
                                         "--fs", FS], tmp_path, stdout=full)
    print(f"HOSTILE | stdout on /dev/full | rc {rc}: {err.strip()[-200:]}")
    assert rc == 2, err
    assert err.strip().splitlines() == [err.strip()] and err.startswith("Error: can not write"), err
    assert "No space left" in err and "Traceback" not in err and "Exception ignored" not in err


def test_header_promising_10000_samples_does_not_read_a_1gb_dat(tiny_bundle, tmp_path):
    """The .dat is a sparse 1 GiB file: only the header's 10,000 samples may be read."""
    path = write_record(tmp_path / "db", n_samples=10_000, digital=np.zeros(10_000, "<i2"))
    with open(tmp_path / "db" / "rec.dat", "r+b") as f:
        f.truncate(1 << 30)
    rc, _, err, grew_mib = run_cli_process(["device", "run", "--bundle", tiny_bundle.path, "--input", path], tmp_path)
    print(f"HOSTILE | header 10,000 samples, 1 GiB .dat | rc {rc}, RSS +{grew_mib:.0f} MiB: {err.strip()[-150:]}")
    assert rc == 2 and "rec.dat is longer than its header says" in err, err
    assert grew_mib < 50, f"peak RSS grew by {grew_mib:.0f} MiB"


def test_reading_an_hour_of_csv_costs_little_memory(tmp_path):
    """1 h at 360 Hz, two columns (1,296,000 rows): the reader keeps one float64 column (~10 MiB)."""
    n = 3600 * FS
    signal_ = np.round(np.tile(ecg(10 * FS), 360), 4)  # 10 s repeated (synthetic_ecg is slow at this length)
    path = tmp_path / "hour.csv"
    with open(path, "w") as f:
        f.write("time,MLII\n")
        np.savetxt(f, np.column_stack([np.arange(n) / FS, signal_]), fmt="%.6f", delimiter=",")
    code = textwrap.dedent(f"""
        import numpy as np
        from ecgedge.device.inputs import read_input
        {PEAK_RSS_KIB}
        base = peak_rss_kib()
        s = read_input({str(path)!r}, fs=360, lead="MLII")
        grew = peak_rss_kib() - base
        print(len(s.samples), s.samples.dtype, grew / 1024, float(s.samples[12345]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    count, dtype, grew_mib, sample = proc.stdout.split()
    print(f"HOSTILE | 1 h CSV | RSS +{float(grew_mib):.0f} MiB")
    assert int(count) == n and dtype == "float64" and float(sample) == signal_[12345]
    assert float(grew_mib) < 60, f"peak RSS grew by {float(grew_mib):.0f} MiB for 1 h of CSV"


# --- eval --predictions is written whole or not at all ---------------------------------------

def test_predictions_file_is_replaced_only_by_a_complete_run(tiny_bundle, tmp_path):
    db = write_database(tmp_path / "db")
    target = tmp_path / "pred.jsonl"
    target.write_text("old\n")
    args = ["device", "eval", "--bundle", BUNDLE, "--data", db, "--predictions", target]
    failed = invoke([*args, "--records", "rec,missing"], tiny_bundle)
    assert failed.exit_code == 2 and "missing" in failed.stderr
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db", "pred.jsonl"]  # no temporary left
    ok = invoke([*args, "--records", "rec"], tiny_bundle)
    assert ok.exit_code == 0, ok.output
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) == 3 and {r["record"] for r in rows} == {"rec"}  # 4 s record: windows at 0, 1, 2 s
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db", "pred.jsonl"]


def test_sigterm_during_eval_leaves_the_predictions_file_as_it_was(tiny_bundle, tmp_path):
    """SIGTERM half-way: one Error line, exit 2, F untouched and no temporary left behind."""
    import time

    db = tmp_path / "db"
    digital = np.round(ecg(180 * FS) * 1000).astype("<i2")
    # Enough records that the first rows reach the file (after the write buffer fills) long
    # before the end: with 30 the eval could finish between that moment and the signal.
    names = [f"r{i:03d}" for i in range(200)]
    for name in names:
        write_record(db, name, digital=digital)
        (db / f"{name}.atr").write_bytes(annotation_words([(0, RHYTHM, "(N")]))
    (db / "RECORDS").write_text("\n".join(names) + "\n")
    target = tmp_path / "pred.jsonl"
    target.write_text("old\n")
    code = f"from ecgedge.cli import cli; cli({['device', 'eval', '--bundle', str(tiny_bundle.path), '--data', str(db), '--predictions', str(target)]!r}, prog_name='ecgedge')"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        partial = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
        if partial and partial[0].stat().st_size > 0:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "eval ended before it could be terminated"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=TIMEOUT_S)
    err = "".join(ln for ln in err.decode().splitlines(True) if not ln.startswith("INFO: "))
    print(f"HOSTILE | SIGTERM during eval --predictions | rc {proc.returncode}: {err.strip()}")
    assert proc.returncode == 2 and err.startswith("Error: terminated (SIGTERM)") and len(err.splitlines()) == 1, err
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db", "pred.jsonl"]


# --- the episode list ---------------------------------------------------------------------------

def _results(labels, hop=1.0, window=2.0):
    from ecgedge.device.runtime import WindowResult

    return [WindowResult(i * hop, i * hop + window, label, None if label is None else np.ones(2) / 2, 0.0,
                         None if label is not None else "flat line (lead off?): 720 of 720")
            for i, label in enumerate(labels)]


def test_episode_tracker_without_the_list_keeps_the_same_times():
    from ecgedge.device.runtime import EpisodeTracker

    rng = np.random.default_rng(0)
    labels = [["NSR", "AF", None][i] for i in rng.integers(0, 3, 5000)]
    full, lean = EpisodeTracker(["NSR", "AF"], 2.0, 1.0), EpisodeTracker(["NSR", "AF"], 2.0, 1.0, max_episodes=0)
    for r in _results(labels):
        full.add(r)
        lean.add(r)
    a, b = full.summary(), lean.summary()
    assert b["episodes"] == [] and b["episodes_dropped"] == len(a["episodes"]) > 1000
    assert a["time_s"] == b["time_s"] and a["burden"] == b["burden"]
    assert sum(a["time_s"].values()) == pytest.approx(5000.0)


def test_episode_tracker_keeps_the_latest_episodes_when_capped():
    from ecgedge.device.runtime import EpisodeTracker

    labels = ["NSR", "NSR", "AF", "NSR", "AF", "AF", "NSR"]
    capped, full = EpisodeTracker(["NSR", "AF"], 2.0, 1.0, max_episodes=2), EpisodeTracker(["NSR", "AF"], 2.0, 1.0)
    for r in _results(labels):
        capped.add(r)
        full.add(r)
    assert capped.summary()["episodes"] == full.summary()["episodes"][-2:]
    assert capped.summary()["episodes_dropped"] == 3 and "episodes_dropped" not in full.summary()
    assert capped.summary()["time_s"] == full.summary()["time_s"] == {"NSR": 4.0, "AF": 3.0, "unclassified": 0.0}


# --- fuzzing the readers: EcgEdgeError or a sound result, nothing else ----------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_TOKENS = st.sampled_from(["rec", "1", "2", "360", "1e", "nan", "inf", "-1", "0", "250x", "1e308", "1e-305",
                           "rec.dat", "../x.dat", "/etc/passwd", "16", "212", "16x2", "16+7", "200",
                           "200(0)/mV", "-200", "abc", "(5)", "1/2", "360/2(0)", "xyz", "MLII", "#", "12",
                           "99999999999999999999", "\t", "é", ""])
_HEADER_LINES = st.lists(st.lists(_TOKENS, max_size=10).map(" ".join), max_size=5).map("\n".join)


@FUZZ
@given(text=st.one_of(_HEADER_LINES, st.text(max_size=300)))
def test_fuzz_header_parser(text):
    from ecgedge.device.wfdb_reader import parse_header

    try:
        header = parse_header(text, Path("/fuzz/rec.hea"))
    except EcgEdgeError:
        return
    assert np.isfinite(header.fs) and header.fs > 0 and header.n_samples >= 0
    for spec in header.signals:
        assert np.isfinite(spec.gain) and spec.gain > 0
        assert not os.path.isabs(spec.file_name) and ".." not in Path(spec.file_name).parts


@FUZZ
@given(data=st.one_of(
    st.binary(max_size=400),
    st.lists(st.lists(st.sampled_from(["1", "-2.5", "1e300", "nan", "MLII", "x", '"', "", " ", "\0", "\t",
                                       "é", "1" * 70]), max_size=4).map(",".join), max_size=8)
    .map(lambda rows: "\n".join(rows).encode()),
))
def test_fuzz_csv_reader(data, tmp_path_factory):
    from ecgedge.device.inputs import read_csv

    path = tmp_path_factory.mktemp("csv") / "x.csv"
    path.write_bytes(data)
    try:
        signal_ = read_csv(path, FS, preference=("MLII",))
    except EcgEdgeError:
        return
    assert signal_.samples.dtype == np.float64 and signal_.samples.ndim == 1 and signal_.fs == FS


@FUZZ
@given(lines=st.lists(st.one_of(st.binary(max_size=30), st.sampled_from([b"1", b"2,3", b"nan", b" ", b""])),
                      max_size=60),
       chunk=st.integers(1, 17), lead=st.sampled_from([None, "0", "1"]))
def test_fuzz_text_stream(lines, chunk, lead):
    """Every non-blank line is one sample (NaN when unreadable), and each unreadable one is reported."""
    import io

    from ecgedge.device.inputs import TextStream

    stream = TextStream(io.BytesIO(b"\n".join(lines)), chunk, lead)
    samples = np.concatenate([*stream, np.zeros(0)])
    physical = b"\n".join(lines).split(b"\n") if lines else []
    if physical and physical[0].startswith(b"\xef\xbb\xbf"):  # a byte order mark is no sample
        physical[0] = physical[0][3:]
    assert len(samples) == sum(1 for ln in physical if ln.strip())
    assert all(len(c) <= chunk for c in TextStream(io.BytesIO(b"\n".join(lines)), chunk, lead))
    problems = stream.problems_in(0, len(samples))
    assert np.count_nonzero(np.isnan(samples)) >= len(problems)
    assert all(np.isnan(samples[p.sample]) for p in problems)


@FUZZ
@given(words=st.lists(st.integers(0, 0xFFFF), max_size=80))
def test_fuzz_annotation_parser(words):
    from ecgedge.device.wfdb_reader import _parse_annotations

    try:
        sample, code, *_ = _parse_annotations(np.asarray(words, dtype=np.int64), "fuzz.atr")
    except EcgEdgeError:
        return
    assert len(sample) == len(code) and all(s >= 0 for s, c in zip(sample, code) if c != 0)
