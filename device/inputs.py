"""Reading the device's inputs: a WFDB record, a CSV, a ``.npy`` or samples on standard input.

Every reader returns samples in the input's own rate and units; the runtime resamples to the
model's rate. Rates come from the WFDB header, or from ``--fs`` for formats that do not carry
one; a missing, non-positive or implausible rate is refused, never guessed.
"""

import csv
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgedge.device.errors import EcgEdgeError

FORMATS = ("auto", "wfdb", "csv", "npy", "text", "int16")
MIN_FS, MAX_FS = 50.0, 20000.0  # Hz; ECG below 50 Hz loses the QRS, above 20 kHz is not ECG
STDIN = "-"


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


def _parse_rows(rows, source, first_line):
    """Rows of text cells -> ndarray of shape (n_rows, n_columns), float64; refuses non-numbers."""
    n_columns = len(rows[0]) if rows else 0
    values = np.empty((len(rows), n_columns), dtype=np.float64)
    for i, row in enumerate(rows):
        if len(row) != n_columns:
            raise EcgEdgeError(
                f"{source} line {first_line + i}: {len(row)} cells, the first data row has {n_columns}"
            )
        try:
            values[i] = [float(cell) for cell in row]
        except ValueError:
            bad = next(cell for cell in row if not _is_number(cell))
            raise EcgEdgeError(
                f"{source} line {first_line + i}: {bad!r} is not a number; the CSV must hold numeric "
                "samples (one header row of lead names is allowed)"
            ) from None
    return values


def read_csv(path, fs, lead=None, preference=()):
    """One column of a CSV file (optionally with a header row of lead names).

    Returns
    -------
    Signal, samples float64 in the file's units.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise EcgEdgeError(f"can not read {source}: {exc}") from None
    dialect = csv.excel_tab if "\t" in text.partition("\n")[0] else csv.excel
    rows = [[c.strip() for c in row] for row in csv.reader(io.StringIO(text), dialect) if any(c.strip() for c in row)]
    if not rows:
        raise EcgEdgeError(f"{source} is empty")
    names = None
    if not all(_is_number(c) for c in rows[0]):
        names, rows = rows[0], rows[1:]
    values = _parse_rows(rows, source, 2 if names else 1)
    column = pick_column(names, values.shape[1] if values.size else len(names or [0]), lead, preference, source)
    label = names[column] if names else str(column)
    return Signal(values[:, column] if values.size else np.zeros(0), check_fs(fs, source), label, source)


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
        raise EcgEdgeError(f"input file {path} not found")
    if fmt == "csv":
        return read_csv(path, fs, lead, preference)
    if fmt == "npy":
        return read_npy(path, fs, lead)
    raise EcgEdgeError(f"--format {fmt} is for standard input ('--input -'), not for the file {path}")


def _text_values(line, number, lead):
    cells = line.replace(",", " ").split()
    column = int(lead) if lead is not None else 0
    if column >= len(cells):
        raise EcgEdgeError(f"stdin line {number}: {len(cells)} values, --lead asks for column {column}")
    try:
        return float(cells[column])
    except ValueError:
        raise EcgEdgeError(f"stdin line {number}: {cells[column]!r} is not a number") from None


def stream_text(stream, chunk, lead=None):
    """Yield ndarray chunks of up to ``chunk`` samples (float64) from text lines, one sample each.

    Lines may hold several comma- or space-separated values; ``lead`` (an int index) picks one.
    Blank lines are skipped; a non-numeric value raises EcgEdgeError naming the line.
    """
    if lead is not None and not str(lead).isdigit():
        raise EcgEdgeError(f"--lead for stdin must be a column index, got {lead!r}")
    buffer = np.empty(chunk, dtype=np.float64)
    n = 0
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        buffer[n] = _text_values(line, number, lead)
        n += 1
        if n == chunk:
            yield buffer.copy()
            n = 0
    if n:
        yield buffer[:n].copy()


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
        return stream_text(stdin if stdin is not None else sys.stdin, chunk, lead)
    raise EcgEdgeError(f"standard input is read as --format text or int16, got {fmt!r}")


def chunks_of(samples, chunk):
    """Yield consecutive views of ``samples`` of ``chunk`` samples (the last may be shorter)."""
    for start in range(0, len(samples), chunk):
        yield samples[start:start + chunk]
