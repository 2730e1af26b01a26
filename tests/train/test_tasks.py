"""Task presets and task validation (ecgedge.train.tasks)."""

import textwrap

import pytest

from ecgedge.device.dsp import SpectrogramConfig
from ecgedge.device.errors import EcgEdgeError
from ecgedge.train.tasks import load_task, preset_names, task_from_dict

MINIMAL = """
name = "tiny"
[databases.mitdb]
[classes]
NSR = ["(N"]
AF = ["(AFIB"]
"""


def write_task(tmp_path, text):
    path = tmp_path / "task.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_presets_are_shipped():
    assert preset_names() == ["cinc2017", "mitdb-rhythm4", "multidb-rhythm5", "salem2018"]


def test_cinc2017_and_multidb_presets_name_every_label():
    cinc = load_task("cinc2017")
    assert cinc.class_names == ["NSR", "AF", "OTHER", "NOISY"]
    db = cinc.database("cinc2017")
    assert db.labels == "reference" and db.reference == "REFERENCE.csv"
    assert dict(db.reference_labels) == {"N": "(N", "A": "(AFIB", "O": "(OTHER", "~": "(NOISE"}
    multi = load_task("multidb-rhythm5")
    assert multi.class_names == ["NSR", "AF", "OTHER", "VENT", "NOISY"]
    assert [d.name for d in multi.databases] == ["mitdb", "cinc2017", "vfdb", "cudb"]
    assert multi.fs == 360.0 and multi.database("cudb").brackets == "(VF"
    labels = multi.label_map
    # Both VF spellings (vfdb), cudb's "(AF", and the noise of vfdb and CinC, each in its class.
    assert labels["(VF"] == labels["(VFIB"] == labels["(VFL"] == labels["(VT"] == "VENT"
    assert labels["(AF"] == labels["(AFIB"] == labels["(AFL"] == "AF"
    assert labels["(NOISE"] == "NOISY" and labels["(OTHER"] == "OTHER" and labels["(B"] == "OTHER"
    # Every preset names its atrial fibrillation class AF.
    for name in preset_names():
        assert "AF" in load_task(name).class_names


def test_reference_labels_must_be_known_rhythm_labels(tmp_path):
    text = MINIMAL.replace("[databases.mitdb]", '[databases.mitdb]\nlabels = "reference"\n'
                                                  'reference_labels = { A = "(AFIBB" }')
    with pytest.raises(EcgEdgeError, match="unknown rhythm label '\\(AFIBB'"):
        load_task(write_task(tmp_path, text))


def test_mitdb_rhythm4_class_map_is_the_issues():
    task = load_task("mitdb-rhythm4")
    assert task.class_names == ["NSR", "AF", "VENT", "OTHER"]
    assert dict(task.classes) == {
        "NSR": ("(N",),
        "AF": ("(AFIB", "(AFL"),
        "VENT": ("(B", "(T", "(VT", "(VFL", "(IVR"),
        "OTHER": ("(SBR", "(SVTA", "(NOD", "(AB", "(BII", "(PREX", "(P"),
    }
    assert task.label_map["(AFL"] == "AF" and task.label_map["(IVR"] == "VENT"
    assert len(task.label_map) == 15
    assert (task.window_s, task.hop_s, task.fs) == (10.0, 5.0, 0.0)
    assert task.leads == ("MLII",) and task.lead_fallback == "first"
    assert task.spectrogram == SpectrogramConfig(fs=128.0, window_s=10.0, hop=20, n_freq=64,
                                                 channels=((32, 128), (128, 128), (512, 512)))
    assert task.spectrogram.image_shape == (64, 64, 3)


def test_mitdb_patients_201_and_202_are_one():
    db = load_task("mitdb-rhythm4").database("mitdb")
    assert db.patient_of("201") == db.patient_of("202") == "mitdb/201+202"
    assert db.patient_of("203") == "mitdb/203"
    assert db.labels == "rhythm" and db.annotator == "atr"


def test_salem2018_databases():
    task = load_task("salem2018")
    assert task.class_names == ["NSR", "AF", "VF", "ST"]
    assert task.fs == 128.0 and task.window_s == 10.0
    nsrdb, afdb, vfdb, edb = (task.database(n) for n in ("nsrdb", "afdb", "vfdb", "edb"))
    assert (nsrdb.labels, nsrdb.record_label) == ("record", "(N")
    assert afdb.labels == vfdb.labels == "rhythm"
    assert (edb.labels, edb.episode_symbol, edb.episode_prefix) == ("episode", "s", "(ST")
    # Each class comes from its own database only.
    assert task.labels_for(nsrdb) == {"(N": "NSR"}
    assert task.labels_for(afdb) == {"(AFIB": "AF"}
    assert task.labels_for(vfdb) == {"(VF": "VF", "(VFIB": "VF", "(VFL": "VF"}
    cudb = task.database("cudb")
    assert (cudb.labels, cudb.brackets) == ("rhythm", "(VF")
    assert task.labels_for(cudb) == {"(VF": "VF", "(VFL": "VF"}
    assert task.labels_for(edb) == {"(ST": "ST"}
    assert "00735" in afdb.exclude


@pytest.mark.parametrize("name", ["mitdb-rhythm4", "salem2018"])
def test_task_dict_round_trip(name):
    task = load_task(name)
    assert task_from_dict(task.to_dict()) == task


def test_task_loads_from_path_and_spectrogram_overrides(tmp_path):
    # Top-level keys go before the first table, as TOML requires.
    path = write_task(tmp_path, "window_s = 5\nhop_s = 2.5\n" + MINIMAL
                      + "[spectrogram]\nhop = 5\nn_freq = 64\nchannels = [[64, 128]]\n")
    task = load_task(str(path))
    assert task.spectrogram == SpectrogramConfig(window_s=5.0, hop=5, n_freq=64, channels=((64, 128),))
    assert task.spectrogram.image_shape == (64, 128, 1)
    assert (task.window_s, task.hop_s) == (5.0, 2.5)


BAD = [
    ("unknown-task", None, "unknown task 'unknown-task'"),
    ("missing.toml", None, "task file missing.toml does not exist"),
    (None, "name = [", "is not valid TOML"),
    (None, MINIMAL.replace('"(AFIB"', '"(AFIBB"'), "unknown rhythm label '(AFIBB' in class AF"),
    (None, MINIMAL.replace('"(AFIB"', '"(N"'), "label '(N' is in both class NSR and AF"),
    (None, "window_s = -2\n" + MINIMAL, "window_s must be > 0, got -2.0"),
    (None, 'hop_s = "five"\n' + MINIMAL, "hop_s must be a number, got 'five'"),
    (None, "fs = -1\n" + MINIMAL, "fs must be >= 0, got -1.0"),
    (None, "colour = 1\n" + MINIMAL, "unknown setting(s) ['colour']"),
    (None, 'lead_fallback = "any"\n' + MINIMAL, "lead_fallback must be one of ['first', 'none'], got 'any'"),
    (None, MINIMAL.replace("[databases.mitdb]", '[databases.mitdb]\nlabels = "beats"'),
     "labels must be one of ['rhythm', 'record', 'episode', 'reference'], got 'beats'"),
    (None, MINIMAL.replace("[databases.mitdb]", '[databases.mitdb]\nlabels = "record"'),
     "needs a known record_label such as \"(N\", got ''"),
    (None, MINIMAL.replace("[databases.mitdb]", '[databases.mitdb]\nuse = ["(VF"]'),
     "use lists '(VF', which no class has"),
    (None, MINIMAL.replace("[databases.mitdb]", '[databases.mitdb]\npatients = [["201"]]'),
     "a patients group lists >= 2 records, got ['201']"),
    (None, MINIMAL.replace("[databases.mitdb]", "[databases.mitdb]\nspeed = 3"),
     "[databases.mitdb]: unknown setting(s) ['speed']"),
    (None, MINIMAL + "[spectrogram]\nn_freq = 500\n", "n_freq=500 is more than the 129 bins of nfft=256"),
    (None, MINIMAL + "[spectrogram]\nwindow_s = 5\n", "spectrogram window_s=5 differs from the task's window_s=10.0"),
    (None, MINIMAL + "[spectrogram]\ncolour = 5\n", "unknown spectrogram settings ['colour']"),
    (None, MINIMAL.replace('AF = ["(AFIB"]', ""), "a task needs at least 2 classes, got ['NSR']"),
    (None, MINIMAL.replace('AF = ["(AFIB"]', "AF = []"), "class AF has no labels"),
    (None, 'name = "bad name"\n[databases.mitdb]\n[classes]\nA = ["(N"]\nB = ["(T"]',
     "name must be a name of letters, digits"),
]


@pytest.mark.parametrize("name,text,message", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_tasks_are_one_line_errors(tmp_path, monkeypatch, name, text, message):
    monkeypatch.chdir(tmp_path)
    if text is not None:
        name = str(write_task(tmp_path, text))
    with pytest.raises(EcgEdgeError) as info:
        load_task(name)
    assert message in info.value.message
    assert "\n" not in info.value.message
    assert info.value.exit_code == 2
