"""A small numpy reader for WFDB records and MIT annotation files, so the device needs no wfdb.

Covered: single-segment headers (any number of signals, in one or several ``.dat`` files),
signal formats 16 and 212 (what PhysioNet's ECG databases use), conversion to physical units
by gain and baseline, and MIT-format annotation files (``.atr`` and friends) with their SKIP,
NUM, SUB, CHN and AUX codes. The ``wfdb`` package is the oracle of the tests, not a dependency.

A ``.dat`` shorter than its header says, or longer by more than one frame, is refused: either
the file was truncated or the header lies about the record's length. Only the bytes the header
announces are read (a header promising 10,000 samples never reads a 1 GB file).

Headers are read strictly: a sampling rate, gain or ADC zero that is not a number (``250x``,
``nan``, ``abc``), a gain that is negative or not finite, and a signal file named by an absolute
path or one with ``..`` (outside the record's folder) are refused with :class:`InputError`,
never replaced by a default. Annotation files that place an annotation before the record's
start (a negative SKIP) are refused too.
"""

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ecgedge.device.errors import InputError

SUPPORTED_FORMATS = (16, 212)
DEFAULT_GAIN = 200.0  # ADC units per physical unit when a header gives 0 or none (WFDB's DEFGAIN)
DEFAULT_FS = 250.0  # WFDB's default sampling rate when a header gives none
INVALID_SAMPLE = {16: -32768, 212: -2048}  # WFDB's marker of a missing sample, per format
MAX_FS = 1e6  # Hz; a header claiming more is not a physiological recording
MAX_HEADER_BYTES = 1 << 20  # a real header is a few kB, even with hundreds of signals

# MIT annotation codes (WFDB ecgcodes.h) 1..41 in order; "_" marks codes 15 and 17, undefined.
_SYMBOLS_FROM_1 = 'N L R a V F J A S E j / Q ~ _ | _ s T * D " = p B ^ t + u ? ! [ ] e n @ x f ( ) r'
ANNOTATION_SYMBOLS = (" ",) + tuple("" if s == "_" else s for s in _SYMBOLS_FROM_1.split())
NOTE_CODE = 22  # '"': comment annotation; at sample 0 it holds definitions, not an event
SKIP, NUM, SUB, CHN, AUX = 59, 60, 61, 62, 63

_RECORD_LINE = re.compile(
    r"^(?P<name>[^\s/]+)(?:/(?P<n_seg>\S+))?\s+(?P<n_sig>\S+)(?:\s+(?P<fs>\S+)(?:\s+(?P<n_samples>\S+))?)?"
)
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
# "fs", "fs/counter_freq", "fs/counter_freq(base_counter)"; only fs is used
_FREQUENCY = re.compile(rf"^(?P<fs>{_NUMBER})(?:/{_NUMBER}(?:\({_NUMBER}\))?)?$")
_FORMAT = re.compile(r"^(?P<fmt>\d+)(?:x(?P<spf>\d+))?(?::(?P<skew>\d+))?(?:\+(?P<offset>\d+))?$")
_GAIN = re.compile(rf"^(?P<gain>{_NUMBER})(?:\((?P<baseline>[+-]?\d+)\))?(?:/(?P<units>\S+))?$")
_INTEGER = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class SignalSpec:
    """One signal line of a header.

    Attributes
    ----------
    file_name : the ``.dat`` file, relative to the header's folder.
    fmt : storage format (16 or 212 are readable).
    byte_offset : bytes to skip at the start of the file.
    gain : ADC units per physical unit (float > 0).
    baseline : ADC value of physical zero (int).
    units : physical unit, e.g. ``"mV"``.
    name : the signal's description, e.g. ``"MLII"``.
    """

    file_name: str
    fmt: int
    byte_offset: int
    gain: float
    baseline: int
    units: str
    name: str


@dataclass(frozen=True)
class Header:
    """A parsed single-segment WFDB header.

    Attributes
    ----------
    path : the ``.hea`` file.
    record : record name.
    fs : sampling rate, Hz (per signal; all signals share it).
    n_samples : samples per signal the header announces (0 when it does not say).
    signals : tuple of SignalSpec, in header order.
    """

    path: Path
    record: str
    fs: float
    n_samples: int
    signals: tuple

    @property
    def names(self):
        """Signal names (descriptions), in header order."""
        return [s.name for s in self.signals]


@dataclass(frozen=True)
class Annotations:
    """An annotation file, as ``wfdb.rdann`` returns it (definition notes removed).

    Attributes
    ----------
    sample : ndarray of shape (n,), int64, sample index at the record's rate.
    symbol : list of n str, e.g. ``"N"``, ``"+"``.
    subtype, chan, num : ndarray of shape (n,), int64.
    aux_note : list of n str, NUL padding kept as stored (``"(AFIB\\x00"``).
    """

    sample: np.ndarray
    symbol: list
    subtype: np.ndarray
    chan: np.ndarray
    num: np.ndarray
    aux_note: list


def record_stem(path):
    """``dir/100``, ``dir/100.hea`` or ``dir/100.dat`` -> Path ``dir/100`` (no suffix)."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".hea", ".dat") else path


def _signal_file_name(name, header_path, index):
    """The signal file's name, refused unless it names a file inside the header's folder."""
    if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts or any(ord(c) < 32 for c in name):
        raise InputError(
            f"{header_path}: signal {index + 1} names the file {name!r}, outside the record's folder; "
            "a signal file must be named relative to the header (e.g. 100.dat)"
        )
    return name


def _parse_signal_line(line, header_path, index, record):
    fields = line.split(None, 8)
    if len(fields) < 2:
        raise InputError(f"{header_path}: signal line {index + 1} has no format: {line!r}")
    fmt = _FORMAT.match(fields[1])
    if fmt is None:
        raise InputError(f"{header_path}: signal {index + 1} has an unreadable format {fields[1]!r}")
    code = int(fmt["fmt"])
    if code not in SUPPORTED_FORMATS:
        raise InputError(
            f"{header_path}: signal {index + 1} is stored in format {code}; this reader handles "
            f"formats {', '.join(map(str, SUPPORTED_FORMATS))} (convert the record with WFDB's xform)"
        )
    if int(fmt["spf"] or 1) != 1 or int(fmt["skew"] or 0) != 0:
        raise InputError(
            f"{header_path}: signal {index + 1} uses {fields[1]!r} (several samples per frame or "
            "skew), which this reader does not handle"
        )
    gain, baseline, units = 0.0, None, "mV"
    if len(fields) > 2:
        match = _GAIN.match(fields[2])
        gain = float(match["gain"]) if match else float("nan")
        if not (np.isfinite(gain) and gain >= 0):
            raise InputError(
                f"{header_path}: signal {index + 1} has gain {fields[2]!r}; it must be a number >= 0 of "
                "ADC units per physical unit (0 for the default 200), optionally with (baseline)/units"
            )
        baseline, units = match["baseline"], match["units"] or "mV"
    adc_zero = 0
    if len(fields) > 4:
        if not _INTEGER.match(fields[4]):
            raise InputError(f"{header_path}: signal {index + 1} has ADC zero {fields[4]!r}; it must be an integer")
        adc_zero = int(fields[4])
    return SignalSpec(
        file_name=_signal_file_name(fields[0], header_path, index),
        fmt=code,
        byte_offset=int(fmt["offset"] or 0),
        gain=gain if gain > 0 else DEFAULT_GAIN,
        baseline=int(baseline) if baseline is not None else adc_zero,
        units=units,
        name=fields[8].strip() if len(fields) > 8 else f"record {record}, signal {index}",
    )


def _sampling_rate(token, header_path):
    """The record line's ``fs[/counter[(base)]]`` token -> Hz (DEFAULT_FS when absent)."""
    if token is None:
        return DEFAULT_FS
    match = _FREQUENCY.match(token)
    if match is None:
        raise InputError(f"{header_path} gives sampling rate {token!r}; it must be a number of Hz")
    fs = float(match["fs"])
    if not (np.isfinite(fs) and 0 < fs <= MAX_FS):
        raise InputError(f"{header_path} gives sampling rate {fs:g} Hz; it must be > 0 and at most {MAX_FS:g} Hz")
    return fs


def parse_header(text, header_path):
    """Parse the text of a single-segment WFDB header; return a Header.

    Parameters
    ----------
    text : str, the whole ``.hea`` file.
    header_path : Path it came from (named in messages and kept in the Header).

    Raises InputError for a missing or malformed record line, a multi-segment record, a
    sampling rate, sample count, gain or ADC zero that is not a valid number, a signal file
    outside the header's folder, or a signal stored in a format other than 16 or 212.
    """
    header_path = Path(header_path)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    head = _RECORD_LINE.match(lines[0]) if lines else None
    if head is None:
        raise InputError(f"{header_path} has no valid record line (got {lines[:1]})")
    if head["n_seg"] is not None:
        raise InputError(f"{header_path} is a multi-segment record, which this reader does not handle")
    if not head["n_sig"].isdigit() or not head["n_sig"].isascii():
        raise InputError(f"{header_path} gives {head['n_sig']!r} signals; it must be a whole number")
    n_sig = int(head["n_sig"])
    if len(lines) - 1 < n_sig:
        raise InputError(f"{header_path} announces {n_sig} signals but has {len(lines) - 1} signal lines")
    fs = _sampling_rate(head["fs"], header_path)
    n_samples = head["n_samples"] or "0"
    if not (n_samples.isdigit() and n_samples.isascii()):
        raise InputError(f"{header_path} gives {n_samples!r} samples per signal; it must be a whole number")
    signals = tuple(
        _parse_signal_line(lines[1 + i], header_path, i, head["name"]) for i in range(n_sig)
    )
    return Header(header_path, head["name"], fs, int(n_samples), signals)


def read_header(path):
    """Read and parse the ``.hea`` of a record path (with or without suffix); return a Header.

    Raises InputError for a missing, unreadable or oversized header and for everything
    :func:`parse_header` refuses.
    """
    header_path = record_stem(path).with_suffix(".hea")
    if not header_path.is_file():
        raise InputError(f"WFDB header {header_path} not found; give the record path without suffix")
    try:
        with open(header_path, "rb") as f:
            raw = f.read(MAX_HEADER_BYTES + 1)
    except OSError as exc:
        raise InputError(f"can not read {header_path}: {exc}") from None
    if len(raw) > MAX_HEADER_BYTES:
        raise InputError(f"{header_path} is larger than {MAX_HEADER_BYTES} bytes; it is not a WFDB header")
    return parse_header(raw.decode("latin-1"), header_path)


def _bytes_for(fmt, n_values):
    """Bytes that hold ``n_values`` samples of format ``fmt``."""
    return 2 * n_values if fmt == 16 else (3 * n_values + 1) // 2


def _decode(raw, fmt, n_values):
    """Bytes -> ndarray of shape (n_values,), int16, digital sample values."""
    if fmt == 16:
        return np.frombuffer(raw, dtype="<i2", count=n_values).astype(np.int16)
    b = np.frombuffer(raw, dtype=np.uint8)
    b = np.concatenate([b, np.zeros(-b.size % 3, dtype=np.uint8)]).reshape(-1, 3).astype(np.int16)
    # Each 3 bytes hold two 12-bit values: the low nibble of byte 1 tops the first, the high
    # nibble the second.
    values = np.empty((b.shape[0], 2), dtype=np.int16)
    values[:, 0] = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
    values[:, 1] = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
    values = values.reshape(-1)[:n_values]
    values[values > 2047] -= 4096
    return values


def _read_signal_file(data_path, fmt, byte_offset, n_sig, n_samples, header_path):
    """Read one ``.dat`` holding ``n_sig`` interleaved signals -> (n_samples, n_sig) int16.

    ``n_samples = 0`` means "as many as the file holds". The file's size is checked against the
    header before anything is read, and only the announced bytes are read.
    """
    if not data_path.is_file():
        problem = "not found" if not data_path.exists() else "is not a regular file"
        raise InputError(f"signal file {data_path} (named in {header_path}) {problem}")
    try:
        size = max(data_path.stat().st_size - byte_offset, 0)
    except OSError as exc:
        raise InputError(f"can not read signal file {data_path}: {exc}") from None
    frame_bytes = _bytes_for(fmt, n_sig)
    if n_samples == 0:
        n_samples = (size * 2 // 3 if fmt == 212 else size // 2) // n_sig
    needed = _bytes_for(fmt, n_samples * n_sig)
    if size < needed or size > needed + frame_bytes:
        problem = "is truncated" if size < needed else "is longer than its header says"
        raise InputError(
            f"signal file {data_path} {problem}: {header_path} announces {n_samples} samples x "
            f"{n_sig} signals in format {fmt} = {needed} bytes, the file holds {size} bytes "
            "after its offset; download the record again or fix the sample count in the header"
        )
    try:
        raw = np.fromfile(data_path, dtype=np.uint8, count=needed, offset=byte_offset)
    except (OSError, ValueError) as exc:
        raise InputError(f"can not read signal file {data_path}: {exc}") from None
    if raw.size < needed:
        raise InputError(f"signal file {data_path} shrank while it was read ({raw.size} of {needed} bytes)")
    return _decode(raw, fmt, n_samples * n_sig).reshape(n_samples, n_sig)


def read_digital(path, header=None):
    """All signals of a record in ADC units.

    Parameters
    ----------
    path : record path, with or without ``.hea``.
    header : a Header already read, or None to read it.

    Returns
    -------
    ndarray of shape (n_samples, n_signals), int16 -- equal to ``wfdb.rdrecord(path,
    physical=False).d_signal``.
    """
    header = header or read_header(path)
    folder = header.path.parent
    columns = [None] * len(header.signals)
    n_samples = header.n_samples
    files = {}
    for i, spec in enumerate(header.signals):
        files.setdefault(spec.file_name, []).append(i)
    for file_name, members in files.items():
        first = header.signals[members[0]]
        if any((header.signals[i].fmt, header.signals[i].byte_offset) != (first.fmt, first.byte_offset)
               for i in members):
            raise InputError(f"{header.path}: the signals of {file_name} mix formats or offsets")
        block = _read_signal_file(folder / file_name, first.fmt, first.byte_offset, len(members),
                                  n_samples, header.path)
        n_samples = block.shape[0]
        for j, i in enumerate(members):
            columns[i] = block[:, j]
    return np.stack(columns, axis=1) if columns else np.zeros((n_samples, 0), dtype=np.int16)


def to_physical(digital, header):
    """ADC units -> physical units: ``(d - baseline) / gain`` per signal; missing samples NaN.

    Parameters
    ----------
    digital : ndarray of shape (n_samples, n_signals), int.
    header : Header of the record.

    Returns
    -------
    ndarray of shape (n_samples, n_signals), float64, in each signal's units (usually mV).
    """
    baseline = np.array([s.baseline for s in header.signals], dtype=np.float64)
    gain = np.array([s.gain for s in header.signals], dtype=np.float64)
    invalid = np.array([INVALID_SAMPLE[s.fmt] for s in header.signals])
    physical = (digital.astype(np.float64) - baseline) / gain
    physical[digital == invalid] = np.nan
    return physical


def read_signal(path, lead=None, fallback="first"):
    """One signal of a record in physical units.

    Parameters
    ----------
    path : record path, with or without ``.hea``.
    lead : a signal name, an int index, a preference list of names, or None for signal 0.
    fallback : when a preference list matches no signal: ``"first"`` takes the first signal
        that may be ECG (:func:`lead_index`), ``"none"`` raises InputError.

    Returns
    -------
    (signal, fs, name) -- ndarray of shape (n_samples,), float64 in the signal's units (NaN
    where the record has gaps), the sampling rate in Hz, and the chosen signal's name.
    """
    header = read_header(path)
    channel = choose_signal(header, lead, fallback)
    physical = to_physical(read_digital(path, header), header)
    return physical[:, channel], header.fs, header.signals[channel].name


NON_ECG_SIGNALS = frozenset({
    "ABP", "ART", "AOBP", "PAP", "CVP", "ICP", "LAP", "RAP", "UAP", "NBP", "BP", "PLETH", "PPG", "SPO2",
    "SAO2", "RESP", "CO2", "ETCO2", "PULSE", "HR", "TEMP", "EEG", "EMG", "EOG",
})
"""Signal names (upper case) of bedside monitors' other channels: blood pressures, pleth, respiration."""
NON_ECG_UNITS = frozenset({"MMHG", "%", "BPM", "NU", "PM", "DEGC", "CMH2O"})


def is_ecg_signal(name, units="mV"):
    """False for a channel that is plainly not ECG by its name or units (an ICU record's ABP, PLETH, RESP)."""
    return (name.strip().upper().rstrip(".") not in NON_ECG_SIGNALS
            and (units or "mV").strip().upper() not in NON_ECG_UNITS)


def lead_index(names, leads, fallback="first", where="record", units=None):
    """Index of the first of ``leads`` among the signal ``names``, else the fallback.

    ``fallback="first"`` takes the first signal that may be ECG (:func:`is_ecg_signal`, with
    ``units`` per signal when known), so an ICU record whose first channel is ABP or PLETH is
    read from its first ECG lead; ``"none"`` refuses. InputError names the leads when none fits.
    """
    for lead in leads:
        if lead in names:
            return names.index(lead)
    units = list(units) if units is not None else ["mV"] * len(names)
    if fallback == "first":
        for i, (name, unit) in enumerate(zip(names, units)):
            if is_ecg_signal(name, unit):
                return i
        if names:
            raise InputError(f"{where} has signals {list(names)}, none of them ECG by name or units; "
                             "pass --lead NAME or INDEX")
    raise InputError(f"{where} has leads {list(names)}, none of {list(leads)}; add one of its leads to the "
                     "task's leads, pass --lead NAME or INDEX, or use lead_fallback \"first\"")


def choose_signal(header, lead, fallback="first"):
    """Index of the signal named or numbered by ``lead`` (see :func:`read_signal`)."""
    names = header.names
    if lead is None:
        return 0
    if isinstance(lead, (int, np.integer)) or (isinstance(lead, str) and lead.lstrip("-").isdigit()):
        index = int(lead)
        if not 0 <= index < len(names):
            raise InputError(f"{header.path} has signals 0..{len(names) - 1} ({names}), got lead {lead}")
        return index
    if isinstance(lead, str):  # one lead asked for by name: that one or an error
        return lead_index(names, [lead], "none", str(header.path))
    return lead_index(names, list(lead), fallback, str(header.path), [s.units for s in header.signals])


def _annotation_words(path):
    """The annotation file as ndarray of shape (n_words,), uint16 (little-endian words)."""
    raw = path.read_bytes()
    if len(raw) % 2:
        raise InputError(f"annotation file {path} has an odd number of bytes ({len(raw)}): it is truncated")
    return np.frombuffer(raw, dtype="<u2").astype(np.int64)


def _parse_annotations(words, path):
    """Walk the MIT annotation words; return lists (sample, code, subtype, chan, num, aux)."""
    sample, code, subtype, chan, num, aux = [], [], [], [], [], []
    time, i, n = 0, 0, len(words)
    while i < n and words[i] != 0:
        a, value = words[i] >> 10, words[i] & 0x3FF
        if a == SKIP:
            if i + 2 >= n:
                raise InputError(f"annotation file {path} ends inside a SKIP at word {i}")
            skip = (int(words[i + 1]) << 16) | int(words[i + 2])
            time += skip - (1 << 32) if skip >= 1 << 31 else skip
            i += 3
            continue
        if a in (NUM, SUB, CHN, AUX):
            if not code:
                raise InputError(f"annotation file {path} has a {a} field before any annotation")
            if a == AUX:
                n_words = (value + 1) // 2
                text = words[i + 1:i + 1 + n_words].astype("<u2").tobytes()[:value]
                aux[-1] = text.decode("latin-1")
                i += 1 + n_words
                continue
            # SUB and NUM are signed chars; CHN an unsigned char.
            byte = value & 0xFF
            signed = byte - 256 if byte > 127 else byte
            if a == CHN:
                chan[-1] = byte
            elif a == NUM:
                num[-1] = signed
            else:
                subtype[-1] = signed
            i += 1
            continue
        time += value
        if time < 0 and a != 0:  # wfdb itself skips to -1 before a code-0 entry; no annotation lies there
            raise InputError(
                f"annotation file {path}: the annotation at word {i} lies at sample {time}, before the "
                "record's start (a negative SKIP); the file is damaged"
            )
        sample.append(time)
        code.append(a)
        subtype.append(0)
        aux.append("")
        # NUM and CHN carry over from the previous annotation; SUB and AUX do not.
        chan.append(chan[-1] if chan else 0)
        num.append(num[-1] if num else 0)
        i += 1
    return sample, code, subtype, chan, num, aux


def read_annotations(path, extension="atr"):
    """Read an MIT-format annotation file (``record.<extension>``).

    Returns
    -------
    Annotations equal to ``wfdb.rdann(path, extension)``'s sample, symbol, subtype, chan, num
    and aux_note: annotations of code 0 and the definition notes at sample 0 are left out.
    """
    ann_path = record_stem(path).with_name(record_stem(path).name + f".{extension}")
    if not ann_path.is_file():
        raise InputError(f"annotation file {ann_path} not found")
    sample, code, subtype, chan, num, aux = _parse_annotations(_annotation_words(ann_path), ann_path)
    code = np.asarray(code, dtype=np.int64)
    sample = np.asarray(sample, dtype=np.int64)
    keep = (code != 0) & ~((code == NOTE_CODE) & (sample == 0))
    symbols = [ANNOTATION_SYMBOLS[c] if c < len(ANNOTATION_SYMBOLS) else "" for c in code[keep]]
    return Annotations(
        sample=sample[keep],
        symbol=symbols,
        subtype=np.asarray(subtype, dtype=np.int64)[keep],
        chan=np.asarray(chan, dtype=np.int64)[keep],
        num=np.asarray(num, dtype=np.int64)[keep],
        aux_note=[a for a, k in zip(aux, keep) if k],
    )
