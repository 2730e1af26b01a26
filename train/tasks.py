"""Tasks: which PhysioNet records, which rhythm labels, which classes, which windows.

A task is a TOML file (presets ship in ``train/tasks/``) loaded into a frozen :class:`Task`.
Values are checked here, where they enter the program, and every error names the file and the
value received, as one line (:class:`~ecgedge.device.errors.EcgEdgeError`, exit status 2).

How each database gives labelled time (``[databases.NAME] labels = ...``):

``"rhythm"``
    Rhythm-change annotations (symbol ``+``) whose aux note is the new rhythm, e.g. ``(AFIB``;
    each rhythm runs until the next change or the end of the record (MIT-BIH, AFDB, VFDB).
``"record"``
    The whole record is one rhythm, ``record_label`` (NSRDB has beat annotations only; its
    subjects "had no significant arrhythmias", so every record is ``(N``).
``"episode"``
    Episodes opened and closed by annotations of one symbol (``episode_symbol``): an aux note
    ``(ST0-`` opens an episode that the note ``ST0-)`` closes (the European ST-T database marks
    ST episodes this way, per lead). The episode's label is ``episode_prefix`` (``(ST``); time
    outside episodes is not used.
``"reference"``
    One label per recording from a CSV file (``reference``, default ``REFERENCE.csv``) in the
    database folder, mapped to rhythm labels by ``reference_labels`` (CinC 2017: ``N`` ->
    ``(N``, ``A`` -> ``(AFIB``, ``O`` -> ``(OTHER``, ``~`` -> ``(NOISE``). Recordings count as
    independent patients, as the Challenge treats them.

With ``labels = "rhythm"``, ``brackets = "(VF"`` lays the episodes between ``[`` and ``]``
annotations over the rhythm notes (CUDB marks ventricular flutter/fibrillation so). The
functions that apply all this live in :mod:`ecgedge.device.labels`, shared with the device.
"""

import json
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

from ecgedge.device.dsp import SpectrogramConfig
from ecgedge.device.errors import EcgEdgeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

DEFAULT_TASK = "multidb-rhythm5"
"""The task the main job (``ecgedge pipeline``) and ``ecgedge train`` train when none is named."""
EXPLORE_TASK = "mitdb-rhythm4"
"""The task ``ecgedge data`` reads when none is named: MIT-BIH alone, the database users get first."""

LABEL_MODES = ("rhythm", "record", "episode", "reference")
LEAD_FALLBACKS = ("first", "none")

# Rhythm labels used by PhysioNet databases (MIT-BIH Arrhythmia, AFDB, VFDB, CUDB -- whose
# atrial fibrillation is ``(AF`` --, LTAFDB), the ``(ST`` episode label of this module, and
# ``(OTHER`` for "any other rhythm" (CinC 2017's ``O``). A label outside this list is almost
# always a typo ("(AFIBB") that would silently give an empty class, so it is refused.
KNOWN_LABELS = frozenset(
    "(AB (AF (AFIB (AFL (ASYS (B (BI (BII (HGEA (IVR (J (N (NOD (NOISE (NSR (OTHER (P (PM (PREX "
    "(SAB (SBR (SVTA (T (VER (VF (VFIB (VFL (VT (ST".split()
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class DatabaseSpec:
    """How one PhysioNet database (a sub-folder of the data root) gives labelled windows.

    Attributes
    ----------
    name : database slug and sub-folder name, e.g. ``"mitdb"``.
    labels : ``"rhythm"``, ``"record"`` or ``"episode"`` (see the module docstring).
    annotator : annotation file extension, e.g. ``"atr"``.
    record_label : the label of every record, for ``labels = "record"``.
    episode_symbol, episode_prefix : the annotation symbol and aux prefix that open an episode,
        for ``labels = "episode"``.
    leads : lead names in order of preference; empty means the task's ``leads``.
    use : the labels this database contributes; empty means every label of the task's classes
        (so the same label, e.g. ``(N``, can be taken from one database and not another).
    records : the records to use; empty means all (the ``RECORDS`` file or every ``*.hea``).
    exclude : records never used (e.g. AFDB records distributed without signal files).
    patients : groups of records that come from one patient; every other record is its own.
    brackets : with ``labels = "rhythm"``, the label of the episodes between ``[`` and ``]``
        annotations, laid over the rhythm notes (``"(VF"`` for CUDB); empty: none.
    reference : the CSV file of recording labels, for ``labels = "reference"``.
    reference_labels : ``((label in the CSV, rhythm label), ...)``, e.g. ``(("A", "(AFIB"),)``;
        a recording whose CSV label is not listed gives no windows.
    abnormal_sinus : with typed beat annotations, the label of sinus windows with frequent
        ectopic or bundle-branch-block beats (:func:`ecgedge.device.labels.abnormal_sinus`);
        empty: none.
    """

    name: str
    labels: str = "rhythm"
    annotator: str = "atr"
    record_label: str = ""
    episode_symbol: str = "s"
    episode_prefix: str = "(ST"
    use: tuple = ()
    leads: tuple = ()
    records: tuple = ()
    exclude: tuple = ()
    patients: tuple = ()
    brackets: str = ""
    reference: str = "REFERENCE.csv"
    reference_labels: tuple = ()
    abnormal_sinus: str = ""

    def __post_init__(self):
        for name in ("use", "leads", "records", "exclude"):
            object.__setattr__(self, name, tuple(str(v) for v in getattr(self, name)))
        pairs = self.reference_labels
        pairs = pairs.items() if isinstance(pairs, dict) else pairs
        object.__setattr__(self, "reference_labels", tuple((str(k), str(v)) for k, v in pairs))
        object.__setattr__(
            self, "patients", tuple(tuple(str(r) for r in group) for group in self.patients)
        )

    def patient_of(self, record):
        """Patient id of ``record``: ``"<db>/<record>"``, or ``"<db>/<a>+<b>"`` for a group."""
        for group in self.patients:
            if record in group:
                return f"{self.name}/{'+'.join(group)}"
        return f"{self.name}/{record}"


@dataclass(frozen=True)
class Task:
    """A classification task: databases, class map, patients, windows and spectrogram.

    Attributes
    ----------
    name : task name, e.g. ``"mitdb-rhythm4"``.
    description : one paragraph for humans.
    databases : tuple of DatabaseSpec.
    classes : ``((class, (label, ...)), ...)`` in model output order.
    leads : default lead preference for every database, e.g. ``("MLII",)``.
    lead_fallback : ``"first"``: a record without any preferred lead uses its first signal;
        ``"none"``: such a record is an error.
    window_s, hop_s : window length and hop between window starts, seconds.
    fs : Hz to resample every record to before cutting windows; 0 keeps the records' own rate
        (they must then share one rate, as MIT-BIH's 360 Hz records do).
    spectrogram : SpectrogramConfig of the model input (its ``window_s`` equals the task's).
    """

    name: str
    description: str
    databases: tuple
    classes: tuple
    leads: tuple = ("MLII",)
    lead_fallback: str = "first"
    window_s: float = 10.0
    hop_s: float = 5.0
    fs: float = 0.0
    spectrogram: SpectrogramConfig = field(default_factory=SpectrogramConfig)

    @property
    def class_names(self):
        """Class names in model output order (list of str)."""
        return [name for name, _ in self.classes]

    @property
    def label_map(self):
        """``{annotation label: class name}``, e.g. ``{"(AFIB": "AF"}``."""
        return {label: name for name, labels in self.classes for label in labels}

    def database(self, name):
        """The DatabaseSpec called ``name``; EcgEdgeError naming the known ones otherwise."""
        for db in self.databases:
            if db.name == name:
                return db
        known = ", ".join(db.name for db in self.databases)
        raise EcgEdgeError(f"task {self.name} has no database {name!r}; it uses: {known}")

    def labels_for(self, db):
        """``{label: class}`` that database ``db`` (DatabaseSpec) contributes."""
        return {k: v for k, v in self.label_map.items() if not db.use or k in db.use}

    def leads_for(self, db):
        """Lead preference of database ``db`` (DatabaseSpec): its own, else the task's."""
        return db.leads or self.leads

    def to_dict(self):
        """JSON-ready dict that :func:`task_from_dict` turns back into an equal Task."""
        d = asdict(self)
        d["classes"] = {name: list(labels) for name, labels in self.classes}
        d["databases"] = {db["name"]: _db_dict(db) for db in d["databases"]}
        d["spectrogram"] = self.spectrogram.to_dict()
        d["leads"] = list(self.leads)
        return d

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)


def _db_dict(d):
    d = {k: v for k, v in d.items() if k != "name"}
    d["patients"] = [list(g) for g in d["patients"]]
    d["reference_labels"] = dict(d["reference_labels"])
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def preset_names():
    """Names of the task presets shipped with ecgedge (sorted list of str)."""
    folder = resources.files("ecgedge.train") / "tasks"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_task(name_or_path):
    """Load a task preset by name (``"mitdb-rhythm4"``) or a task TOML file by path.

    Returns
    -------
    Task, validated.

    Raises
    ------
    EcgEdgeError : unknown task, unreadable TOML, or an invalid value (the message names it).
    """
    text, source = _task_text(str(name_or_path))
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EcgEdgeError(f"task file {source} is not valid TOML: {exc}") from None
    return task_from_dict(raw, source)


def _task_text(name_or_path):
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists() or "/" in name_or_path:
        if not path.is_file():
            raise EcgEdgeError(f"task file {path} does not exist; give a preset name or a .toml path")
        return path.read_text(encoding="utf-8"), str(path)
    if name_or_path not in preset_names():
        raise EcgEdgeError(
            f"unknown task {name_or_path!r}; presets: {', '.join(preset_names())}, "
            "or give the path of a task .toml file"
        )
    resource = resources.files("ecgedge.train") / "tasks" / f"{name_or_path}.toml"
    return resource.read_text(encoding="utf-8"), f"{name_or_path}.toml"


def task_from_dict(raw, source="task"):
    """Build and validate a Task from the TOML table (or :meth:`Task.to_dict` output).

    ``source`` names the file in error messages.
    """
    raw = dict(raw)
    _refuse_unknown(raw, {f.name for f in fields(Task)}, f"{source}")
    for key in ("name", "databases", "classes"):
        if key not in raw:
            raise EcgEdgeError(f"{source} has no '{key}'; every task needs name, databases and classes")
    window_s = _positive(raw.get("window_s", 10.0), "window_s", source)
    spectrogram = _spectrogram(raw.get("spectrogram", {}), window_s, source)
    task = Task(
        name=_name(raw["name"], "name", source),
        description=str(raw.get("description", "")).strip(),
        databases=_databases(raw["databases"], source),
        classes=_classes(raw["classes"], source),
        leads=tuple(str(v) for v in _list(raw.get("leads", ["MLII"]), "leads", source)),
        lead_fallback=_choice(raw.get("lead_fallback", "first"), LEAD_FALLBACKS, "lead_fallback", source),
        window_s=window_s,
        hop_s=_positive(raw.get("hop_s", 5.0), "hop_s", source),
        fs=_non_negative(raw.get("fs", 0.0), "fs", source),
        spectrogram=spectrogram,
    )
    return _check_use(task, source)


def _refuse_unknown(table, allowed, where):
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise EcgEdgeError(f"{where}: unknown setting(s) {unknown}; allowed: {sorted(allowed)}")


def _name(value, what, source):
    if not isinstance(value, str) or not _NAME.match(value):
        raise EcgEdgeError(f"{source}: {what} must be a name of letters, digits, '.', '_' or '-', got {value!r}")
    return value


def _number(value, what, source):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EcgEdgeError(f"{source}: {what} must be a number, got {value!r}")
    return float(value)


def _positive(value, what, source):
    value = _number(value, what, source)
    if not value > 0:
        raise EcgEdgeError(f"{source}: {what} must be > 0, got {value}")
    return value


def _non_negative(value, what, source):
    value = _number(value, what, source)
    if not value >= 0:
        raise EcgEdgeError(f"{source}: {what} must be >= 0, got {value}")
    return value


def _choice(value, choices, what, source):
    if value not in choices:
        raise EcgEdgeError(f"{source}: {what} must be one of {list(choices)}, got {value!r}")
    return value


def _list(value, what, source):
    if not isinstance(value, (list, tuple)):
        raise EcgEdgeError(f"{source}: {what} must be a list, got {value!r}")
    return list(value)


def _table(value, what, source):
    if not isinstance(value, dict) or not value:
        raise EcgEdgeError(f"{source}: {what} must be a non-empty table, got {value!r}")
    return value


def _spectrogram(overrides, window_s, source):
    """SpectrogramConfig from the ``[spectrogram]`` table; its window is the task's window."""
    if not isinstance(overrides, dict):
        raise EcgEdgeError(f"{source}: [spectrogram] must be a table of settings, got {overrides!r}")
    overrides = dict(overrides)
    if "window_s" in overrides and float(overrides["window_s"]) != window_s:
        raise EcgEdgeError(
            f"{source}: spectrogram window_s={overrides['window_s']} differs from the task's "
            f"window_s={window_s}; set window_s once, at the top of the task"
        )
    overrides["window_s"] = window_s
    try:
        return SpectrogramConfig.from_dict(overrides)
    except EcgEdgeError as exc:
        raise EcgEdgeError(f"{source}: [spectrogram] {exc.message}") from None
    except (TypeError, ValueError) as exc:
        raise EcgEdgeError(f"{source}: [spectrogram] has an invalid value: {exc}") from None


def _classes(table, source):
    """``((class, (label, ...)), ...)`` from ``[classes]``; labels known and used once."""
    table = _table(table, "classes", source)
    owner = {}
    classes = []
    for name, labels in table.items():
        _name(name, "class name", source)
        labels = _list(labels, f"class {name}", source)
        if not labels:
            raise EcgEdgeError(f"{source}: class {name} has no labels; give at least one, e.g. \"(N\"")
        for label in labels:
            if label not in KNOWN_LABELS:
                raise EcgEdgeError(
                    f"{source}: unknown rhythm label {label!r} in class {name}; "
                    f"known labels: {' '.join(sorted(KNOWN_LABELS))}"
                )
            if label in owner:
                raise EcgEdgeError(f"{source}: label {label!r} is in both class {owner[label]} and {name}")
            owner[label] = name
        classes.append((name, tuple(labels)))
    if len(classes) < 2:
        raise EcgEdgeError(f"{source}: a task needs at least 2 classes, got {[n for n, _ in classes]}")
    return tuple(classes)


def _databases(table, source):
    """Tuple of DatabaseSpec from ``[databases.NAME]`` tables."""
    table = _table(table, "databases", source)
    allowed = {f.name for f in fields(DatabaseSpec)} - {"name"}
    specs = []
    for name, settings in table.items():
        where = f"{source} [databases.{name}]"
        _name(name, "database name", source)
        if not isinstance(settings, dict):
            raise EcgEdgeError(f"{where} must be a table of settings, got {settings!r}")
        _refuse_unknown(settings, allowed, where)
        for key in ("use", "leads", "records", "exclude", "patients"):
            _list(settings.get(key, []), key, where)
        if not isinstance(settings.get("reference_labels", {}), dict):
            raise EcgEdgeError(f"{where}: reference_labels must be a table such as {{ A = \"(AFIB\" }}, "
                               f"got {settings['reference_labels']!r}")
        for group in settings.get("patients", []):
            if len(_list(group, "each patients group", where)) < 2:
                raise EcgEdgeError(f"{where}: a patients group lists >= 2 records, got {group!r}")
        spec = DatabaseSpec(name=name, **settings)
        _choice(spec.labels, LABEL_MODES, "labels", where)
        if spec.labels == "record" and spec.record_label not in KNOWN_LABELS:
            raise EcgEdgeError(
                f"{where}: labels = \"record\" needs a known record_label such as \"(N\", "
                f"got {spec.record_label!r}"
            )
        if spec.abnormal_sinus and spec.labels != "rhythm":
            raise EcgEdgeError(f"{where}: abnormal_sinus needs labels = \"rhythm\" (sinus windows and typed "
                               f"beat annotations), got labels = {spec.labels!r}")
        extra = [spec.brackets, spec.abnormal_sinus]
        for label in [v for _, v in spec.reference_labels] + [v for v in extra if v]:
            if label not in KNOWN_LABELS:
                raise EcgEdgeError(f"{where}: unknown rhythm label {label!r}; known labels: "
                                   f"{' '.join(sorted(KNOWN_LABELS))}")
        if spec.labels == "reference" and not spec.reference_labels:
            raise EcgEdgeError(f"{where}: labels = \"reference\" needs reference_labels, e.g. "
                               "{ N = \"(N\", A = \"(AFIB\" }")
        if spec.labels == "episode" and not (spec.episode_symbol and spec.episode_prefix.startswith("(")):
            raise EcgEdgeError(
                f"{where}: labels = \"episode\" needs episode_symbol and an episode_prefix "
                f"starting with '(', got {spec.episode_symbol!r}, {spec.episode_prefix!r}"
            )
        specs.append(spec)
    return tuple(specs)


def _check_use(task, source):
    """Every ``use`` (and ``abnormal_sinus``) label of a database is a label of some class; return task."""
    labels = task.label_map
    for db in task.databases:
        for label in db.use + ((db.abnormal_sinus,) if db.abnormal_sinus else ()):
            if label not in labels:
                raise EcgEdgeError(
                    f"{source} [databases.{db.name}]: {'use lists' if label in db.use else 'abnormal_sinus is'} "
                    f"{label!r}, which no class has; "
                    f"class labels: {' '.join(labels)}"
                )
    return task
