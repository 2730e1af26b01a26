"""WFDB data layer: PhysioNet records -> labelled intervals -> raw windows -> images.

The data root holds one folder per PhysioNet database (``$ECGEDGE_DATA/mitdb``). A task
(:mod:`ecgedge.train.tasks`) says which databases, labels and windows to use.

Windows are cut at the record's own sampling rate and lie entirely inside one labelled
interval. When a task sets ``fs`` (databases of different rates), each raw window is resampled
with the device's own :func:`ecgedge.device.dsp.to_model_rate`, so its image equals the one the
device computes from the raw window. Images come from :func:`ecgedge.device.dsp.window_image`
only.

Computed windows (per record) and images are cached on disk, keyed by the SHA-256 of the task
settings and of the content of every input file (header, signal, annotations), so a second run
reads the cache and a changed setting or file recomputes. The cache lives in ``--cache``,
``$ECGEDGE_CACHE`` or ``~/.cache/ecgedge/cache``.
"""

import hashlib
import json
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ecgedge.device import labels
from ecgedge.device.dsp import to_model_rate, window_image, window_length
from ecgedge.device.errors import EcgEdgeError
from ecgedge.device.evaluate import list_records
from ecgedge.device.rhythm import BEAT_DETECTOR, FEATURE_NAMES, window_histories, window_rhythm_features
from ecgedge.device.wfdb_reader import lead_index

CACHE_VERSION = 3  # raise when windows, images or rhythm features would come out differently
DEFAULT_DATA = Path("~/.cache/ecgedge/physionet")
DEFAULT_CACHE = Path("~/.cache/ecgedge/cache")
# Beat annotation symbols (wfdb's ``is_qrs`` codes): what an RR-interval baseline needs.
BEAT_SYMBOLS = labels.BEAT_SYMBOLS


# ---------------------------------------------------------------------------------------------
# Folders


def data_root(path=None):
    """The folder of PhysioNet databases: ``path``, else ``$ECGEDGE_DATA``, else the default.

    Returns
    -------
    Path, user-expanded; it need not exist (see :func:`database_dir`).
    """
    return Path(path or os.environ.get("ECGEDGE_DATA") or DEFAULT_DATA).expanduser()


def cache_root(path=None):
    """The cache folder: ``path``, else ``$ECGEDGE_CACHE``, else ``~/.cache/ecgedge/cache``."""
    return Path(path or os.environ.get("ECGEDGE_CACHE") or DEFAULT_CACHE).expanduser()


def database_dir(root, name):
    """``root/name`` if it is a folder; EcgEdgeError saying how to get it otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise EcgEdgeError(
            f"data folder {root} does not exist; set ECGEDGE_DATA or --data to the folder "
            "holding one sub-folder per PhysioNet database"
        )
    folder = root / name
    if not folder.is_dir():
        raise EcgEdgeError(
            f"database folder {folder} does not exist; run 'ecgedge data download {name} "
            f"--data {root}'"
        )
    return folder


# ---------------------------------------------------------------------------------------------
# Signals and annotations


@dataclass(frozen=True, eq=False)
class Record:
    """One lead of one WFDB record.

    Attributes
    ----------
    name : record name, e.g. ``"201"``.
    signal : ndarray of shape (n,), float64, physical units (mV for PhysioNet ECG).
    fs : sampling rate, Hz.
    lead : name of the chosen signal, e.g. ``"MLII"``.
    """

    name: str
    signal: np.ndarray
    fs: float
    lead: str

    @property
    def n(self):
        """Number of samples."""
        return int(self.signal.size)


class Annotations(NamedTuple):
    """Annotations of one record: ``sample`` (n,) int64, ``symbol`` and ``aux`` (n,) str."""

    sample: np.ndarray
    symbol: np.ndarray
    aux: np.ndarray


class Interval(NamedTuple):
    """Samples ``start <= t < stop`` of one record that carry ``label`` (e.g. ``"(AFIB"``)."""

    start: int
    stop: int
    label: str


def _wfdb_call(what, path, fn, *args, **kwargs):
    """Run a wfdb reader; any failure becomes one EcgEdgeError line naming ``path``."""
    try:
        return fn(*args, **kwargs)
    except EcgEdgeError:
        raise
    except Exception as exc:  # wfdb raises many types (ValueError, IndexError, OSError, ...)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EcgEdgeError(
            f"can not read {what} {path} ({detail}); it may be truncated or corrupt: "
            "download the database again"
        ) from None


def _check_record(db_dir, record):
    header = Path(db_dir) / f"{record}.hea"
    if not header.is_file():
        raise EcgEdgeError(
            f"unknown record {record!r}: {header} does not exist; "
            f"'ecgedge data summary' lists the records of a task"
        )
    return header


def read_header(db_dir, record):
    """The wfdb header (``wfdb.Record`` without signals) of ``db_dir/record``."""
    import wfdb

    header = _check_record(db_dir, record)
    return _wfdb_call("header", header, wfdb.rdheader, str(Path(db_dir) / record))


def read_record(db_dir, record, leads=("MLII",), fallback="first"):
    """Read one lead of a WFDB record.

    Parameters
    ----------
    db_dir : folder of the database.
    record : record name, e.g. ``"201"``.
    leads, fallback : the lead preference and what to do without one
        (:func:`ecgedge.device.wfdb_reader.lead_index`, as the device chooses).

    Returns
    -------
    Record, signal float64 in physical units at the record's own rate.
    """
    import wfdb

    header = read_header(db_dir, record)
    names = list(header.sig_name or [])
    channel = lead_index(names, leads, fallback, f"record {Path(db_dir) / record}", header.units)
    data_file = Path(db_dir) / (header.file_name[channel] if header.file_name else f"{record}.dat")
    rec = _wfdb_call(
        "signal file", data_file, wfdb.rdrecord, str(Path(db_dir) / record), channels=[channel]
    )
    signal = np.asarray(rec.p_signal[:, 0], dtype=np.float64)
    if signal.size == 0 or not np.isfinite(signal).any():
        raise EcgEdgeError(f"signal file {data_file} holds no samples for lead {names[channel]}")
    # Gaps (NaN in wfdb's physical signal) become 0: flat, and standardised away per window.
    return Record(record, np.nan_to_num(signal), float(header.fs), names[channel])


def read_annotations(db_dir, record, annotator="atr"):
    """All annotations of ``db_dir/record.<annotator>``.

    Returns
    -------
    Annotations: sample int64 (n,), symbol str (n,), aux str (n,) with NUL padding removed.
    """
    import wfdb

    _check_record(db_dir, record)
    path = Path(db_dir) / f"{record}.{annotator}"
    if not path.is_file():
        raise EcgEdgeError(f"annotation file {path} does not exist; check the task's annotator")
    ann = _wfdb_call("annotation file", path, wfdb.rdann, str(Path(db_dir) / record), annotator)
    n = len(ann.sample)
    aux = [(a or "").replace("\x00", "").strip() for a in (ann.aux_note or [""] * n)]
    return Annotations(
        np.asarray(ann.sample, dtype=np.int64),
        np.asarray(ann.symbol, dtype=str).reshape(n),
        np.asarray(aux, dtype=str).reshape(n),
    )


def read_beats(db_dir, record, annotator="atr"):
    """Beat annotations of a record, for RR-interval features.

    Returns
    -------
    samples : ndarray of shape (n_beats,), int64, sample index at the record's rate.
    symbols : ndarray of shape (n_beats,), str, beat type (``N``, ``V``, ``A``, ...).
    """
    ann = read_annotations(db_dir, record, annotator)
    beat = np.isin(ann.symbol, sorted(BEAT_SYMBOLS))
    return ann.sample[beat], ann.symbol[beat]


# ---------------------------------------------------------------------------------------------
# Labelled intervals


def _intervals(triples):
    return [Interval(int(a), int(b), str(label)) for a, b, label in triples]


def rhythm_intervals(ann, n_samples):
    """Rhythm intervals from rhythm-change annotations (symbol ``+``, aux ``(LABEL``).

    :func:`ecgedge.device.labels.rhythm_intervals` on wfdb's annotations: each rhythm runs from
    its annotation to the next change or the record's end; consecutive equal rhythms are joined.

    Returns
    -------
    list of Interval in samples, sorted.
    """
    return _intervals(labels.rhythm_intervals(ann.sample, ann.symbol, ann.aux, n_samples))


def episode_intervals(ann, n_samples, symbol="s", prefix="(ST"):
    """Episodes opened by aux ``(ST0-`` and closed by ``ST0-)`` (:func:`ecgedge.device.labels.episode_intervals`).

    Returns
    -------
    list of Interval in samples, sorted, label ``prefix``.
    """
    return _intervals(labels.episode_intervals(ann.sample, ann.symbol, ann.aux, n_samples, symbol, prefix))


@lru_cache(maxsize=8)
def _reference(path, mtime_ns):
    return labels.read_reference(path)


def labelled_intervals(db, db_dir, record, n_samples):
    """Labelled intervals of one record as database ``db`` (DatabaseSpec) defines them
    (:func:`ecgedge.device.labels.record_intervals`)."""
    label, ann = None, None
    if db.labels == "record":
        label = db.record_label
    elif db.labels == "reference":
        path = Path(db_dir) / db.reference
        table = _reference(str(path), path.stat().st_mtime_ns if path.is_file() else 0)
        label = labels.reference_label(table, record, db.reference_labels, path)
    else:
        a = read_annotations(db_dir, record, db.annotator)
        ann = (a.sample, a.symbol, a.aux)
    return _intervals(labels.record_intervals(db.labels, n_samples, ann, label, db.brackets,
                                              (db.episode_symbol, db.episode_prefix)))


def window_starts(interval, length, hop):
    """Start samples of the windows of ``length`` samples, ``hop`` apart, inside ``interval``.

    Returns
    -------
    ndarray of shape (k,), int64: ``interval.start + hop * i`` with ``start + length <= stop``.
    """
    return labels.window_starts(interval.start, interval.stop, length, hop)


def cut_windows(signal, intervals, length, hop, keep, pad_short=False):
    """Windows of ``signal`` lying entirely inside one interval whose label is in ``keep``
    (:func:`ecgedge.device.labels.cut_windows`; with ``pad_short``, a recording shorter than a
    window gives one padded window).

    Returns
    -------
    x : ndarray of shape (k, length), float32.
    starts : ndarray of shape (k,), int64, samples.
    label : ndarray of shape (k,), str.
    """
    x, starts, label, _ = labels.cut_windows(signal, intervals, length, hop, keep, pad_short)
    return x, starts, label


# ---------------------------------------------------------------------------------------------
# Work in forked processes


PARALLEL_MIN_ROWS = 2000
"""Row sets at least this large are computed by one forked worker per CPU (:func:`_forked_map`);
smaller ones in this process, where forking costs more than it saves."""
CHUNK_ROWS = 500
PARALLEL_MIN_RECORDS = 200  # records from which load_windows reads them with forked workers

_WORK = None  # the function the forked workers of _forked_map run; they inherit it


def cpu_workers():
    """Worker processes for row computations: the CPUs this process may use, 1 without ``fork``."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def _work(arg):
    return _WORK(arg)


def _forked_map(fn, args, workers, chunksize=1):
    """``fn(a)`` for each of ``args``, in order; by ``workers`` forked processes when more than one.

    For numpy work only: a fork inherits ``fn`` and the arrays it reads without pickling them
    (only ``args`` and the results travel), and the results are those of this process.
    """
    global _WORK
    if workers <= 1:
        yield from map(fn, args)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _WORK = fn
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    try:
        yield from pool.map(_work, args, chunksize=chunksize)
    finally:
        # an error (here or in a worker) or an interrupt drops the chunks not yet started
        pool.shutdown(wait=True, cancel_futures=True)
        _WORK = None


def _computed_items(item_of, n, workers, desc, unit, progress):
    """``[item_of(i) for i in range(n)]`` with a progress bar, by ``workers`` forked processes."""
    from tqdm import tqdm

    items = []
    with tqdm(total=n, desc=desc, unit=unit, disable=not progress) as bar:
        for item in _forked_map(item_of, range(n), workers, chunksize=16):
            items.append(item)
            bar.update(1)
    return items


# ---------------------------------------------------------------------------------------------
# Windows of a task


@dataclass(frozen=True, eq=False)
class Windows:
    """Labelled raw windows of a task.

    Attributes
    ----------
    x : ndarray of shape (n, window_len), float32, physical units at ``fs``.
    fs : sampling rate of ``x``, Hz.
    y : ndarray of shape (n,), int64, index into ``class_names``.
    record : ndarray of shape (n,), str, ``"<database>/<record>"``, e.g. ``"mitdb/201"``.
    patient : ndarray of shape (n,), str, e.g. ``"mitdb/201+202"``.
    start_s : ndarray of shape (n,), float64, window start in the record, seconds.
    label : ndarray of shape (n,), str, the annotation label, e.g. ``"(AFIB"``.
    class_names : tuple of str, model output order.
    """

    x: np.ndarray
    fs: float
    y: np.ndarray
    record: np.ndarray
    patient: np.ndarray
    start_s: np.ndarray
    label: np.ndarray
    class_names: tuple

    def __len__(self):
        return int(self.y.size)

    def subset(self, index):
        """Windows at ``index`` (int array or boolean mask), same ``fs`` and classes."""
        pick = {k: getattr(self, k)[index] for k in ("x", "y", "record", "patient", "start_s", "label")}
        return replace(self, **pick)


class FileDigests:
    """SHA-256 of file contents, remembered by (path, size, mtime) in ``cache/file-sha256.json``.

    Content hashing is what makes the cache correct (a rewritten file with the same size and
    time is still noticed when its timestamp changes); the memo keeps repeat runs fast.
    """

    def __init__(self, cache_dir):
        self.path = Path(cache_dir) / "file-sha256.json"
        try:
            self.memo = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.memo = {}
        self.changed = False
        self.added = {}  # entries computed since it was last emptied (what a forked worker reports)

    def __call__(self, path):
        path = Path(path).resolve()
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        entry = self.memo.get(str(path))
        if entry and entry[:2] == stamp:
            return entry[2]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        self.memo[str(path)] = self.added[str(path)] = stamp + [digest.hexdigest()]
        self.changed = True
        return digest.hexdigest()

    def remember(self, entries):
        """Take over entries computed elsewhere (by a forked worker's copy)."""
        if entries:
            self.memo.update(entries)
            self.changed = True

    def save(self):
        if self.changed:
            _atomic_write_text(self.path, json.dumps(self.memo))
            self.changed = False


def _atomic_write_text(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def record_files(db, db_dir, record):
    """Input files of one record for database ``db``: header, signal files, annotations."""
    header = read_header(db_dir, record)
    files = [Path(db_dir) / f"{record}.hea"]
    files += [Path(db_dir) / name for name in sorted(set(header.file_name or []))]
    if db.labels == "reference":
        files.append(Path(db_dir) / db.reference)
    elif db.labels != "record":
        files.append(Path(db_dir) / f"{record}.{db.annotator}")
    for path in files:
        if not path.is_file():
            raise EcgEdgeError(f"record {record} needs {path}, which does not exist")
    return files


def _window_settings(task):
    """The task settings that decide windows (not the spectrogram, name or description)."""
    d = task.to_dict()
    return {k: v for k, v in d.items() if k not in ("spectrogram", "name", "description")}


def _digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _record_key(settings, db, db_dir, record, digests):
    """The cache key of one record's windows; ``settings``: :func:`_window_settings` of the task."""
    files = {p.name: digests(p) for p in record_files(db, db_dir, record)}
    return _digest({"v": CACHE_VERSION, "task": settings, "db": db.name, "record": record, "files": files})


def _compute_record_windows(task, db, db_dir, record):
    """Raw windows of one record: dict of x (k, L) float32, fs, start_s (k,), label (k,)."""
    rec = read_record(db_dir, record, task.leads_for(db), task.lead_fallback)
    intervals = labelled_intervals(db, db_dir, record, rec.n)
    length = int(round(task.window_s * rec.fs))
    hop = max(int(round(task.hop_s * rec.fs)), 1)
    x, starts, label = cut_windows(rec.signal, intervals, length, hop, task.labels_for(db),
                                   pad_short=db.labels in ("reference", "record"))
    if db.abnormal_sinus and len(label):
        a = read_annotations(db_dir, record, db.annotator)
        label = labels.abnormal_sinus(label, starts, length, a.sample, a.symbol, db.abnormal_sinus)
    fs = rec.fs
    if task.fs and task.fs != rec.fs:
        # Resample each window exactly as the device would resample its raw window (the model's
        # low-pass comes later, at the model rate, on the device and in training alike).
        target = replace(task.spectrogram, fs=task.fs, lowpass_hz=None)
        x = np.stack([to_model_rate(w, rec.fs, target) for w in x]).astype(np.float32) if len(x) \
            else np.zeros((0, window_length(task.fs, target)), dtype=np.float32)
        fs = task.fs
    return {"x": x, "fs": np.float64(fs), "start_s": starts / rec.fs, "label": label}


def _record_windows(task, db, db_dir, record, path):
    """Windows of one record, from the cache file ``path`` when it exists, else computed and cached."""
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    arrays = _compute_record_windows(task, db, db_dir, record)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return arrays


def task_records(task, data_dir=None, records=None):
    """``[(DatabaseSpec, db_dir, record)]`` of a task, optionally only ``records``.

    ``records`` names records as ``"mitdb/201"`` or, when one database has it, ``"201"``.
    """
    root = data_root(data_dir)
    available = []
    for db in task.databases:
        db_dir = database_dir(root, db.name)
        names = db.records or list_records(db_dir)
        available += [(db, db_dir, r) for r in names if r not in db.exclude]
    if records is None:
        return available
    return [_find_record(name, available, task) for name in records]


def _find_record(name, available, task):
    db_name, _, rec = str(name).rpartition("/")
    hits = [a for a in available if a[2] == rec and db_name in ("", a[0].name)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise EcgEdgeError(
            f"unknown record {name!r} in task {task.name} (databases "
            f"{', '.join(db.name for db in task.databases)}); give a record listed in RECORDS"
        )
    raise EcgEdgeError(f"record {name!r} is in several databases; write it as DATABASE/{rec}")


def load_windows(task, data_dir=None, records=None, progress=True, cache_dir=None):
    """The labelled raw windows of a task, from the disk cache when up to date.

    Parameters
    ----------
    task : Task.
    data_dir : data root (folder of database folders); default ``$ECGEDGE_DATA``.
    records : list of record names (``"mitdb/201"`` or ``"201"``); default every record.
    progress : show a tqdm bar on stderr.
    cache_dir : cache folder; default ``$ECGEDGE_CACHE`` or ``~/.cache/ecgedge/cache``.

    Returns
    -------
    Windows (see its attributes), windows in record order then time order.
    """
    chosen = task_records(task, data_dir, records)
    cache_dir = cache_root(cache_dir)
    digests = FileDigests(cache_dir)
    settings = _window_settings(task)

    def record_windows(i):
        """(windows of record i, the file digests this call computed): keyed by the content of the
        record's files, read from the cache or computed; a worker sends its new digests home."""
        db, db_dir, rec = chosen[i]
        digests.added = {}
        key = _record_key(settings, db, db_dir, rec, digests)
        return _record_windows(task, db, db_dir, rec, cache_dir / "windows" / f"{key}.npz"), digests.added

    # Many records are read (headers parsed, files hashed) and cut by forked workers.
    workers = cpu_workers() if len(chosen) >= PARALLEL_MIN_RECORDS else 1
    try:
        parts = []
        for (db, _, rec), (arrays, added) in zip(chosen, _computed_items(
                record_windows, len(chosen), workers, desc=f"windows {task.name}", unit="record", progress=progress)):
            digests.remember(added)
            parts.append((db, rec, arrays))
    finally:
        digests.save()
    return _assemble(task, parts)


def _assemble(task, parts):
    """One Windows from per-record arrays; EcgEdgeError on mixed rates or no windows at all."""
    rates = sorted({float(a["fs"]) for _, _, a in parts})
    if len(rates) > 1:
        raise EcgEdgeError(
            f"task {task.name} reads records at {rates} Hz; set fs = <Hz> in the task so that "
            "every window is resampled to one rate"
        )
    classes = task.label_map
    n = sum(len(a["label"]) for _, _, a in parts)
    if n == 0:
        names = ", ".join(f"{db.name}/{rec}" for db, rec, _ in parts[:5])
        raise EcgEdgeError(
            f"task {task.name} gives no windows from records {names}{'...' if len(parts) > 5 else ''}: "
            f"no interval labelled {sorted(classes)} is {task.window_s} s long"
        )
    label = np.concatenate([a["label"] for _, _, a in parts]).astype(str)
    index = {name: i for i, name in enumerate(task.class_names)}
    return Windows(
        x=np.concatenate([a["x"] for _, _, a in parts]).astype(np.float32, copy=False),
        fs=rates[0],
        y=np.array([index[classes[lb]] for lb in label], dtype=np.int64),
        record=np.concatenate([[f"{db.name}/{rec}"] * len(a["label"]) for db, rec, a in parts]).astype(str),
        patient=np.concatenate([[db.patient_of(rec)] * len(a["label"]) for db, rec, a in parts]).astype(str),
        start_s=np.concatenate([a["start_s"] for _, _, a in parts]).astype(np.float64),
        label=label,
        class_names=tuple(task.class_names),
    )


# ---------------------------------------------------------------------------------------------
# Images


def _cache_key(windows, cfg, kind="images", detector=None):
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(windows.x).tobytes())
    extra = {} if kind == "images" else {"kind": kind, "features": list(FEATURE_NAMES),
                                         "beat_detector": detector or BEAT_DETECTOR}
    digest.update(json.dumps({"v": CACHE_VERSION, "fs": windows.fs, "cfg": cfg.to_dict(), **extra},
                             sort_keys=True).encode())
    return digest.hexdigest()


def _check_window_length(windows, cfg):
    cfg.validate()
    expected = window_length(windows.fs, cfg)
    if windows.x.shape[1:] != (expected,):
        raise EcgEdgeError(
            f"windows have {windows.x.shape[1:]} samples at {windows.fs} Hz, but a "
            f"{cfg.window_s} s spectrogram window needs {expected}; use the task's spectrogram"
        )


def _cached_rows(path, n, row_shape, dtype, row_of, desc, progress, chunks=None, workers=None):
    """``row_of(i)`` for i < n as one ``.npy`` memory map at ``path``, computed once (atomically).

    ``chunks``: lists of row indices covering 0..n-1 that are best computed together (default:
    runs of ``CHUNK_ROWS``); ``workers``: processes (default :func:`cpu_workers` from
    ``PARALLEL_MIN_ROWS`` rows on, else 1).
    """
    from tqdm import tqdm

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        if chunks is None:
            chunks = [np.arange(a, min(a + CHUNK_ROWS, n)) for a in range(0, n, CHUNK_ROWS)]
        if workers is None:
            workers = cpu_workers() if n >= PARALLEL_MIN_ROWS else 1
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, *row_shape))
        def stacked(rows):
            return rows, np.stack([row_of(i) for i in rows])

        try:
            with tqdm(total=n, desc=desc, unit="window", disable=not progress) as bar:
                for rows, values in _forked_map(stacked, list(chunks), workers):
                    out[rows] = values
                    bar.update(len(rows))
            out.flush()
        except BaseException:
            del out
            tmp.unlink(missing_ok=True)
            raise
        del out
        os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def window_images(windows, cfg, progress=True, cache_dir=None):
    """Model input images of every window, through :func:`ecgedge.device.dsp.window_image`.

    Parameters
    ----------
    windows : Windows.
    cfg : SpectrogramConfig (its ``window_s`` must match the windows).
    progress : show a tqdm bar on stderr.
    cache_dir : cache folder; default ``$ECGEDGE_CACHE`` or ``~/.cache/ecgedge/cache``.

    Returns
    -------
    ndarray of shape (n, *cfg.image_shape), float32, natural-log magnitude; a read-only
    memory map of the cached ``.npy`` file.
    """
    _check_window_length(windows, cfg)
    path = cache_root(cache_dir) / "images" / f"{_cache_key(windows, cfg)}.npy"
    return _cached_rows(path, len(windows), cfg.image_shape, np.float32,
                        lambda i: window_image(windows.x[i], windows.fs, cfg), "images", progress)


def rhythm_features_of(windows, cfg, progress=True, cache_dir=None, detector=None, workers=None):
    """Rhythm features (:func:`ecgedge.device.rhythm.window_rhythm_features`) of every window.

    Same parameters as :func:`window_images`; ``detector``: the beat detector (None: the one of
    new heads, ``BEAT_DETECTOR``; a bundle's ``beat_detector`` to read what its head reads);
    ``workers``: processes (default: one per CPU for large sets), each given whole records.

    Returns
    -------
    ndarray of shape (n, len(ecgedge.device.rhythm.FEATURE_NAMES)), float64, NaN where a
    feature is undefined; a read-only memory map of the cached ``.npy`` file.
    """
    _check_window_length(windows, cfg)
    path = cache_root(cache_dir) / "rhythm" / f"{_cache_key(windows, cfg, 'rhythm', detector)}.npy"
    histories = _RecordHistories(windows)
    return _cached_rows(path, len(windows), (len(FEATURE_NAMES),), np.float64,
                        lambda i: window_rhythm_features(windows.x[i], windows.fs, cfg, history=histories(i),
                                                         detector=detector),
                        "rhythm features", progress, chunks=histories.chunks(CHUNK_ROWS), workers=workers)


class _RecordHistories:
    """The history of window ``i`` as the device has it (``window_histories``): what the windows
    of its record before it cover without a gap. One record's histories are held at a time."""

    def __init__(self, windows):
        self.windows = windows
        order = np.lexsort((windows.start_s, windows.record))
        cuts = np.flatnonzero(windows.record[order][1:] != windows.record[order][:-1]) + 1
        self.rows = {str(windows.record[rows[0]]): rows for rows in np.split(order, cuts) if rows.size}
        self.record, self.held = None, {}

    def chunks(self, size):
        """Row indices of whole records, in record order, about ``size`` rows per chunk."""
        chunks, current, count = [], [], 0
        for rows in self.rows.values():
            current.append(rows)
            count += len(rows)
            if count >= size:
                chunks.append(np.concatenate(current))
                current, count = [], 0
        return chunks + ([np.concatenate(current)] if current else [])

    def __call__(self, i):
        record = str(self.windows.record[i])
        if record != self.record:
            rows = self.rows[record]
            found = window_histories(self.windows.x[rows], self.windows.fs, self.windows.start_s[rows])
            self.record, self.held = record, dict(zip(rows.tolist(), found))
        return self.held[int(i)]


# ---------------------------------------------------------------------------------------------
# One window, for plots


class WindowView(NamedTuple):
    """One raw window of a record, with its label.

    ``x`` (window_len,) float32 physical units at ``fs`` Hz; ``record`` ``"db/record"``;
    ``start_s`` seconds; ``lead``; ``label`` the interval's annotation label (``"mixed"`` when
    the window crosses a change, ``"unlabelled"`` when any of it lies outside every interval); ``class_name`` the
    task class of that label, or None.
    """

    record: str
    start_s: float
    x: np.ndarray
    fs: float
    lead: str
    label: str
    class_name: object


def window_at(task, record, at_s, data_dir=None):
    """The window of ``record`` starting at ``at_s`` seconds, labelled as the task labels it.

    Returns
    -------
    WindowView; EcgEdgeError when the window does not fit inside the record.
    """
    db, db_dir, name = task_records(task, data_dir, [record])[0]
    rec = read_record(db_dir, name, task.leads_for(db), task.lead_fallback)
    length = window_length(rec.fs, task.spectrogram)
    start = int(round(at_s * rec.fs))
    if not 0 <= start <= rec.n - length:
        raise EcgEdgeError(
            f"--at {at_s} s: a {task.window_s} s window must start between 0 and "
            f"{(rec.n - length) / rec.fs:.1f} s in record {record}"
        )
    touching = [iv for iv in labelled_intervals(db, db_dir, name, rec.n)
                if iv.start < start + length and start < iv.stop]
    if len(touching) > 1:
        label = "mixed"
    elif touching and touching[0].start <= start and start + length <= touching[0].stop:
        label = touching[0].label
    else:
        label = "unlabelled"
    x = rec.signal[start:start + length].astype(np.float32)
    return WindowView(f"{db.name}/{name}", start / rec.fs, x, rec.fs, rec.lead, label,
                      task.labels_for(db).get(label))


# ---------------------------------------------------------------------------------------------
# Summary


def covered_seconds(starts, window_s):
    """Seconds covered by the union of windows ``[s, s + window_s)`` (starts in seconds)."""
    s = np.sort(np.asarray(starts, dtype=np.float64))
    if s.size == 0:
        return 0.0
    return float(np.minimum(np.diff(s), window_s).sum() + window_s)


def summarize(windows, task, per_record=False):
    """Per class: windows, minutes covered by them, records that have any.

    Returns
    -------
    dict ``{"task", "window_s", "classes": {NAME: {"windows": int, "minutes": float,
    "records": int}}}``, plus ``"per_record": {record: {NAME: windows}}`` when asked.
    """
    names = list(task.class_names)
    records, row_record = np.unique(windows.record, return_inverse=True)
    y = np.asarray(windows.y)
    counts = np.zeros((len(records), len(names)), dtype=np.int64)
    np.add.at(counts, (row_record, y), 1)
    # the windows of each (record, class), records in name order: each class's minutes add up
    # record by record
    order = np.lexsort((y, row_record))
    group = row_record[order] * len(names) + y[order]
    seconds = [0.0] * len(names)
    for rows in np.split(order, np.flatnonzero(np.diff(group)) + 1):
        if rows.size:
            seconds[int(y[rows[0]])] += covered_seconds(windows.start_s[rows], task.window_s)
    classes = {name: {"windows": int(counts[:, i].sum()), "minutes": round(seconds[i] / 60.0, 2),
                      "records": int(np.count_nonzero(counts[:, i]))}
               for i, name in enumerate(names)}
    out = {"task": task.name, "window_s": float(task.window_s), "classes": classes}
    if per_record:
        out["per_record"] = {str(r): {name: int(c) for name, c in zip(names, row)} for r, row in zip(records, counts)}
    return out
