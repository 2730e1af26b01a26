"""Reading the device's inputs: a WFDB record, a CSV, a ``.npy`` or samples on standard input.

Every reader returns samples in the input's own rate and units; the runtime resamples to the
model's rate. Rates come from the WFDB header, or from ``--fs`` for formats that do not carry
one; a missing, non-positive or implausible rate is refused, never guessed.

Files are read in bounded memory: a CSV is parsed row by row into one growing float64 column
(about 8 bytes per sample, not the text), and no line may be longer than ``MAX_LINE_CHARS``.
A file input that is unreadable anywhere is refused with :class:`InputError`; a text stream
instead turns an unreadable line (not a number, not UTF-8, too long, missing the ``--lead``
column) into a NaN sample and remembers it (:class:`TextStream`), so the window that covers it
gets a null label with the reason and the stream goes on.
"""

import csv
import math
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgedge.device.errors import EcgEdgeError, InputError

FORMATS = ("auto", "wfdb", "csv", "npy", "text", "int16")
MIN_FS, MAX_FS = 50.0, 20000.0  # Hz; ECG below 50 Hz loses the QRS, above 20 kHz is not ECG
STDIN = "-"
MAX_LINE_CHARS = 1 << 16  # a row of samples is a few numbers; a longer line is not ECG data
EXCERPT_CHARS = 40  # how much of an unreadable line a reason quotes


@dataclass(frozen=True)
class Signal:
    """One lead of an input, whole.

    Attributes
    ----------
    samples : ndarray of shape (n,), float64, the input's units (mV for WFDB records).
    fs : sampling rate, Hz.
    lead : the chosen lead's name or index as text ("0" for a one-column input).
    source : what was read (path or "stdin").
    """

    samples: np.ndarray
    fs: float
    lead: str
    source: str


def check_fs(fs, source):
    """Return ``fs`` as float after checking it is a plausible ECG rate (MIN_FS..MAX_FS Hz)."""
    if fs is None:
        raise EcgEdgeError(f"{source} does not say its sampling rate: pass --fs HZ (e.g. --fs 360)")
    try:
        value = float(fs)
    except (TypeError, ValueError):
        raise EcgEdgeError(f"--fs must be a number of Hz, got {fs!r}") from None
    if not (math.isfinite(value) and MIN_FS <= value <= MAX_FS):
        raise EcgEdgeError(
            f"--fs must be between {MIN_FS:g} and {MAX_FS:g} Hz for an ECG, got {fs} (for {source})"
        )
    return value


def detect_format(path, fmt="auto"):
    """The input format of ``path``: ``fmt`` unless "auto", else from the suffix or stdin."""
    if fmt not in FORMATS:
        raise EcgEdgeError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    if str(path) == STDIN:
        return "text"
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".hea", ".dat") or (not path.exists() and path.with_suffix(".hea").is_file()):
        return "wfdb"
    if suffix in (".csv", ".txt", ".tsv"):
        return "csv"
    if suffix == ".npy":
        return "npy"
    raise EcgEdgeError(
        f"can not tell the format of {path}: name a WFDB record (100 or 100.hea), a .csv, "
        "a .npy, or '-' for stdin, or pass --format"
    )


def pick_column(names, n_columns, lead, preference, source):
    """Index of the column to read.

    Parameters
    ----------
    names : list of column names, or None when the input has no header row.
    n_columns : int.
    lead : ``--lead`` value (name or index as text/int) or None.
    preference : names to try when ``lead`` is None (the bundle's lead list).
    """
    if lead is not None:
        text = str(lead)
        if text.lstrip("-").isdigit():
            index = int(text)
            if not 0 <= index < n_columns:
                raise EcgEdgeError(f"{source} has columns 0..{n_columns - 1}, got --lead {lead}")
            return index
        if names and text in names:
            return names.index(text)
        raise EcgEdgeError(f"{source} has no column named {text!r} (columns: {names or n_columns})")
    if n_columns == 1:
        return 0
    for name in preference or ():
        if names and name in names:
            return names.index(name)
    raise EcgEdgeError(
        f"{source} has {n_columns} columns ({names or 'no header row'}): pass --lead NAME or INDEX"
    )


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _bounded_lines(f, source):
    """The lines of text file ``f``, refusing one longer than MAX_LINE_CHARS (bounded memory)."""
    for number, line in enumerate(iter(lambda: f.readline(MAX_LINE_CHARS + 1), ""), start=1):
        if len(line) > MAX_LINE_CHARS:
            raise InputError(
                f"{source} line {number}: the line is too long (over {MAX_LINE_CHARS} characters); a CSV "
                "row holds a few numeric samples"
            )
        yield line


class _Column:
    """A float64 column that grows by doubling: ndarray of the values so far from :meth:`values`."""

    def __init__(self):
        self._data = np.empty(1 << 14, dtype=np.float64)
        self.n = 0

    def append(self, value):
        if self.n == len(self._data):
            self._data = np.concatenate([self._data, np.empty_like(self._data)])
        self._data[self.n] = value
        self.n += 1

    def values(self):
        return self._data[:self.n].copy()


def _row_values(row, source, line, width):
    """Cells of one data row -> list of float; refuses a wrong width or a non-number."""
    if len(row) != width:
        raise InputError(f"{source} line {line}: {len(row)} cells, the first data row has {width}")
    try:
        return [float(cell) for cell in row]
    except ValueError:
        bad = next(cell for cell in row if not _is_number(cell))
        raise InputError(
            f"{source} line {line}: {bad[:EXCERPT_CHARS]!r} is not a number; the CSV must hold numeric "
            "samples (one header row of lead names is allowed)"
        ) from None


def _csv_column(f, source, lead, preference):
    """(names or None, chosen column index, _Column of its values) from an open CSV file."""
    lines = _bounded_lines(f, source)
    first = next(lines, "")
    dialect = csv.excel_tab if "\t" in first else csv.excel
    reader = csv.reader(_chain(first, lines), dialect)
    names, width, column, values = None, None, None, _Column()
    for row in reader:
        row = [c.strip() for c in row]
        if not any(row):
            continue
        if names is None and width is None and not all(_is_number(c) for c in row):
            names = row
            continue
        if width is None:
            width = len(row)
            if names is not None and len(names) != width:
                raise InputError(f"{source}: the header row names {len(names)} columns, line "
                                 f"{reader.line_num} has {width} cells")
            column = pick_column(names, width, lead, preference, source)
        values.append(_row_values(row, source, reader.line_num, width)[column])
    if width is None and names is None:
        raise InputError(f"{source} is empty")
    if column is None:
        column = pick_column(names, len(names), lead, preference, source)
    return names, column, values


def _chain(first, rest):
    if first:
        yield first
    yield from rest


def read_csv(path, fs, lead=None, preference=()):
    """One column of a CSV file (optionally with a header row of lead names).

    The file is parsed row by row; every cell must be a number (besides the header row) and
    every row as wide as the first data row, but only the chosen column is kept.

    Returns
    -------
    Signal, samples float64 in the file's units.
    """
    source = str(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            names, column, values = _csv_column(f, source, lead, preference)
    except UnicodeDecodeError as exc:
        raise InputError(f"can not read {source}: it is not UTF-8 text ({exc.reason} at byte {exc.start} of a "
                         "block)") from None
    except csv.Error as exc:
        raise InputError(f"can not read {source} as CSV: {exc}") from None
    except OSError as exc:
        raise InputError(f"can not read {source}: {exc.strerror or exc}") from None
    label = names[column] if names else str(column)
    return Signal(values.values(), check_fs(fs, source), label, source)


def read_npy(path, fs, lead=None):
    """A ``.npy`` of shape (n,) or (n, n_leads) (``--lead`` picks the column) -> Signal."""
    source = str(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EcgEdgeError(f"can not read {source} as a numpy array: {exc}") from None
    if not (np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array)) or array.ndim not in (1, 2):
        raise EcgEdgeError(
            f"{source} must hold a real numeric array of shape (n,) or (n, leads), got dtype "
            f"{array.dtype} and shape {array.shape}"
        )
    if array.ndim == 1:
        array = array[:, None]
    column = pick_column(None, array.shape[1], lead, (), source)
    return Signal(array[:, column].astype(np.float64), check_fs(fs, source), str(column), source)


def read_wfdb(path, fs=None, lead=None, preference=(), fallback="first"):
    """One lead of a WFDB record, by ``--lead`` or the bundle's preference list -> Signal (mV)."""
    from ecgedge.device.wfdb_reader import choose_signal, read_digital, read_header, to_physical

    header = read_header(path)
    if fs is not None and not math.isclose(float(fs), header.fs, rel_tol=1e-9):
        raise EcgEdgeError(
            f"{header.path} says {header.fs:g} Hz but --fs {fs} was given: leave --fs out for WFDB "
            "records, or fix the header"
        )
    check_fs(header.fs, header.path)
    channel = choose_signal(header, lead if lead is not None else list(preference) or None, fallback)
    samples = to_physical(read_digital(path, header), header)[:, channel]
    return Signal(samples, header.fs, header.signals[channel].name, str(header.path.with_suffix("")))


def read_input(path, fs=None, lead=None, fmt="auto", preference=()):
    """Read a whole file input (not stdin) as one Signal; see the readers for each format."""
    fmt = detect_format(path, fmt)
    if fmt == "wfdb":
        return read_wfdb(path, fs, lead, preference)
    if not Path(path).is_file():
        raise InputError(f"input file {path} {'is not a regular file' if Path(path).exists() else 'not found'}")
    if fmt == "csv":
        return read_csv(path, fs, lead, preference)
    if fmt == "npy":
        return read_npy(path, fs, lead)
    raise EcgEdgeError(f"--format {fmt} is for standard input ('--input -'), not for the file {path}")


@dataclass(frozen=True)
class Unreadable:
    """A line of a text stream that gave no sample (it stands in the stream as one NaN sample).

    Attributes
    ----------
    sample : int, index of the NaN sample in the stream.
    line : int, line number (from 1, blank lines counted).
    excerpt : str, the line's start as a Python bytes literal without the b, e.g. ``'abc'``.
    """

    sample: int
    line: int
    excerpt: str


def _as_bytes(line):
    return line.encode("utf-8", "surrogateescape") if isinstance(line, str) else line


class TextStream:
    """Samples from text lines, one per non-blank line, in chunks; unreadable lines become NaN.

    Iterating yields ndarray chunks of up to ``chunk`` samples (float64). Lines may hold several
    comma- or space-separated values; ``lead`` (a column index) picks one. A line that can not
    give a sample -- not a number, not UTF-8, longer than MAX_LINE_CHARS, without the
    ``lead`` column -- gives a NaN sample, and :meth:`problems_in` says which line it was.

    Parameters
    ----------
    stream : binary or text file object (standard input's ``buffer`` by default in the CLI).
    chunk : int >= 1, samples per yielded chunk.
    lead : column index (int or digits), or None for the first value of each line.
    max_pending : most unreadable lines remembered and not yet asked for (bounded memory).
    """

    def __init__(self, stream, chunk, lead=None, max_pending=1 << 16):
        if lead is not None and not (str(lead).isascii() and str(lead).isdigit()):
            raise InputError(f"--lead for stdin must be a column index, got {lead!r}")
        self.stream, self.chunk = stream, int(chunk)
        self.column = int(lead) if lead is not None else 0
        self._pending = deque(maxlen=max_pending)

    def _lines(self):
        """(bytes of one line, without its end) for each line; an over-long line is cut to its start."""
        while True:
            line = self.stream.readline(MAX_LINE_CHARS + 1)
            if not line:
                return
            line = _as_bytes(line)
            if len(line) > MAX_LINE_CHARS and not line.endswith(b"\n"):
                rest = line
                while rest and not rest.endswith(b"\n"):  # skip to the line's end, a piece at a time
                    rest = _as_bytes(self.stream.readline(MAX_LINE_CHARS + 1))
                yield line, True
            else:
                yield line.rstrip(b"\r\n"), False

    def _value(self, raw, too_long):
        """The sample of one non-blank line, or None when the line gives none."""
        if too_long:
            return None
        try:
            cells = raw.decode("utf-8").replace(",", " ").split()
            return float(cells[self.column])
        except (UnicodeDecodeError, ValueError, IndexError):
            return None

    def __iter__(self):
        buffer = np.empty(self.chunk, dtype=np.float64)
        n = n_samples = 0
        for number, (raw, too_long) in enumerate(self._lines(), start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte order mark
            if not raw.strip():
                continue
            value = self._value(raw, too_long)
            if value is None:
                self._pending.append(Unreadable(n_samples, number, repr(raw[:EXCERPT_CHARS])[1:]))
                value = np.nan
            buffer[n] = value
            n += 1
            n_samples += 1
            if n == self.chunk:
                yield buffer.copy()
                n = 0
        if n:
            yield buffer[:n].copy()

    def problems_in(self, start, stop):
        """Unreadable lines whose samples lie in ``[start, stop)``; forgets those before ``start``.

        Windows are asked for in time order, so what lies before a window's start is never
        asked for again.
        """
        while self._pending and self._pending[0].sample < start:
            self._pending.popleft()
        return [p for p in self._pending if p.sample < stop]


def stream_text(stream, chunk, lead=None):
    """A :class:`TextStream` of ``stream`` (kept for callers of the generator of old)."""
    return TextStream(stream, chunk, lead)


def stream_int16(stream, chunk):
    """Yield ndarray chunks of up to ``chunk`` samples (float64) from raw little-endian int16 bytes."""
    tail = b""
    while True:
        block = stream.read(2 * chunk)
        if not block:
            break
        block = tail + block
        usable = len(block) - len(block) % 2
        tail = block[usable:]
        if usable:
            yield np.frombuffer(block[:usable], dtype="<i2").astype(np.float64)
    if tail:
        raise EcgEdgeError("stdin ended inside an int16 sample (an odd number of bytes)")


def stream_stdin(fmt, chunk, lead=None, stdin=None):
    """Chunks of samples from standard input in ``fmt`` ("text" or "int16")."""
    if fmt == "int16":
        stream = stdin if stdin is not None else sys.stdin.buffer
        return stream_int16(stream, chunk)
    if fmt == "text":
        # Bytes, not text: a line that is not UTF-8 is one unreadable sample, not the end of the stream.
        return TextStream(stdin if stdin is not None else getattr(sys.stdin, "buffer", sys.stdin), chunk, lead)
    raise EcgEdgeError(f"standard input is read as --format text or int16, got {fmt!r}")


def chunks_of(samples, chunk):
    """Yield consecutive views of ``samples`` of ``chunk`` samples (the last may be shorter)."""
    for start in range(0, len(samples), chunk):
        yield samples[start:start + chunk]
