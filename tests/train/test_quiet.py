"""``ecgedge.train.quiet.chatter_to``: third-party chatter to the log, our lines to the terminal.

Each case runs in a fresh interpreter whose stdout and stderr are pipes, so the redirection of
file descriptors 1 and 2 is the real one (not pytest's capture), and C-level writes
(``os.write``, libc ``printf``) stand in for TensorFlow's C++ logs.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import ctypes, logging, os, sys, warnings
    from ecgedge.train.quiet import chatter_to

    log, verbose = sys.argv[1], sys.argv[2] == "verbose"
    if sys.argv[3] == "captured":  # as under click's CliRunner: sys.stderr is not fd 2
        import io
        captured = sys.stderr = io.StringIO()
    print("ours: before", file=sys.stderr)
    with chatter_to(log, verbose) as path:
        os.write(1, b"chatter: C-level fd 1\\n")
        os.write(2, b"chatter: C-level fd 2 cuInit\\n")
        ctypes.CDLL(None).printf(b"chatter: libc printf, buffered\\n")
        print("chatter: python print TensorSpec(shape=(), dtype=tf.resource)")
        warnings.warn("chatter: a library warning")
        logging.getLogger("absl").warning("chatter: absl logger")
        print("ours: stage line", file=sys.stderr)
        print("path", path, file=sys.stderr)
    print("ours: after", file=sys.stderr)
    print("ours: headline on stdout")
    if sys.argv[3] == "captured":
        sys.__stderr__.write("captured:" + captured.getvalue().replace("\\n", "|"))
""")


def run_script(tmp_path, verbose=False, captured=False):
    log = tmp_path / "out" / "pipeline.log"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log), "verbose" if verbose else "quiet",
         "captured" if captured else "terminal"],
        capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr, log


CHATTER = ["chatter: C-level fd 1", "chatter: C-level fd 2 cuInit", "chatter: libc printf, buffered",
           "chatter: python print TensorSpec", "chatter: a library warning", "chatter: absl logger"]


def test_chatter_goes_to_the_log_and_our_lines_to_the_terminal(tmp_path):
    stdout, stderr, log = run_script(tmp_path)
    assert stdout == "ours: headline on stdout\n"
    assert stderr.splitlines() == ["ours: before", "ours: stage line", f"path {log}", "ours: after"]
    text = log.read_text()
    assert text.startswith("--- ") and "ours" not in text
    for line in CHATTER:
        assert line in text, line


def test_a_second_block_appends_to_the_log(tmp_path):
    run_script(tmp_path)
    _, _, log = run_script(tmp_path)
    text = log.read_text()
    assert text.count("--- ") == 2 and text.count("chatter: C-level fd 2 cuInit") == 2


def test_verbose_redirects_nothing(tmp_path):
    stdout, stderr, log = run_script(tmp_path, verbose=True)
    assert not log.exists()
    assert "chatter: C-level fd 1" in stdout and "chatter: python print TensorSpec" in stdout
    assert "chatter: C-level fd 2 cuInit" in stderr and "chatter: a library warning" in stderr
    assert "path None" in stderr


def test_a_captured_stderr_keeps_our_lines(tmp_path):
    stdout, stderr, log = run_script(tmp_path, captured=True)
    assert stdout == "ours: headline on stdout\n"
    assert stderr == f"captured:ours: before|ours: stage line|path {log}|ours: after|"
    for line in CHATTER:
        assert line in log.read_text(), line
