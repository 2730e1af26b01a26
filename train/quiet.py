"""TensorFlow's chatter to a log file; our own lines and progress bars stay on the terminal.

TensorFlow, the TFLite converter and Keras talk on every channel a process has: C++ logs written
straight to file descriptors 1 and 2 (``cuInit`` errors on a machine without a GPU, the oneDNN
banner, ``node_def_util`` errors, ``fully_quantize: ...``), Python prints on ``sys.stdout``
(the converter's ``Saved artifact ... TensorSpec(...)`` listing, Keras' per-epoch fit lines),
Python warnings and the ``tensorflow``/``absl`` loggers. :func:`chatter_to` sends all of them to
one log file and keeps ``sys.stderr`` -- where our stage lines, per-epoch lines and tqdm bars go
-- on the terminal.

This module imports nothing heavy: it lives in ``train`` so that ``train`` and ``convert`` (and
the main job above them) can use it; ``device`` never needs it.
"""

import contextlib
import logging
import os
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}
"""Environment defaults set before TensorFlow is imported (a value the user set wins).

``TF_CPP_MIN_LOG_LEVEL=2`` drops C++ INFO and WARNING lines once absl's log is initialised; the
lines TensorFlow writes before that (the oneDNN banner, "Could not find cuda drivers") and its
errors still reach file descriptor 2, hence the redirection. ``TF_ENABLE_ONEDNN_OPTS`` is left
alone: setting it to 0 would silence the banner by changing which kernels run, and so the
numbers a run produces.
"""

_terminals = {}  # (st_dev, st_ino) of a terminal fd -> a text stream on a private duplicate of it


def quiet_tensorflow_env():
    """Set :data:`QUIET_ENV` where the environment does not already say otherwise."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)


def _terminal_stream(fd, like):
    """A line-buffered text stream on a private duplicate of ``fd`` (what fd 1 or 2 is now).

    Kept for the life of the process, one per file: tqdm bars and handlers created while the
    chatter is redirected hold on to it, and must still write somewhere valid afterwards.
    """
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    if key not in _terminals:
        _terminals[key] = open(os.dup(fd), "w", buffering=1, encoding=getattr(like, "encoding", None) or "utf-8",
                               errors=getattr(like, "errors", None) or "backslashreplace")
    return _terminals[key]


def _is_fd(stream, fd):
    """True when ``stream`` writes to file descriptor ``fd`` (not a pytest or CliRunner capture)."""
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


def _flush_c_stdio():
    """Flush the C library's stdio buffers, so C++ output written so far lands in the log."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library to ask (not Linux or macOS)
        pass


@contextlib.contextmanager
def chatter_to(log_path, verbose=False):
    """Send TensorFlow's and the converter's output to ``log_path`` for the duration of the block.

    Inside the block, file descriptors 1 and 2 (C and C++ output), ``sys.stdout`` (Python
    prints), Python warnings and the root logger (``absl``, ``tensorflow``) go to the log file;
    ``sys.stderr`` -- our own lines and tqdm bars -- keeps writing to the terminal it wrote to
    before. When ``sys.stderr`` is not file descriptor 2 (pytest's or click's capture) it is left
    as it is.

    Parameters
    ----------
    log_path : path of the log file; appended to, with a header line per block.
    verbose : True: redirect nothing, everything shows where it would without this block.

    Yields
    ------
    Path of the log file, or None when ``verbose``.
    """
    if verbose:
        yield None
        return
    quiet_tensorflow_env()
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:  # absl, when installed, attaches its handler to the root logger on import; do it before
        import absl.logging  # noqa: F401  (we swap the root logger's handlers below)
    except ImportError:
        pass
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    _flush_c_stdio()
    terminal_err = _terminal_stream(2, sys.stderr) if _is_fd(sys.stderr, 2) else sys.stderr
    saved_fds = (os.dup(1), os.dup(2))
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = (sys.stdout, sys.stderr, warnings.showwarning, logging.root.handlers[:])
    try:
        os.write(log_fd, f"--- {datetime.now(timezone.utc).isoformat(timespec='seconds')} "
                         f"pid {os.getpid()}\n".encode())
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        # On fd 1, not a duplicate: whoever keeps a reference past the block writes to our stdout.
        log_stream = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
        sys.stdout, sys.stderr = log_stream, terminal_err

        def show_warning(message, category, filename, lineno, file=None, line=None):
            log_stream.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = show_warning
        handler = logging.StreamHandler(log_stream)
        handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
        logging.root.handlers = [handler]
        yield log_path
    finally:
        sys.stdout.flush()
        _flush_c_stdio()
        sys.stdout, sys.stderr, warnings.showwarning, logging.root.handlers = saved
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in (*saved_fds, log_fd):
            os.close(fd)
