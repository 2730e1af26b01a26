"""Evaluation protocols: no patient on both sides of a records fold, balanced paper subset, seeded splits."""

import numpy as np
import pytest

from ecgedge.device.errors import EcgEdgeError
from ecgedge.train import protocols


def _windows(seed=0):
    """Labels and patients shaped like mitdb-rhythm4: 20 patients, rare classes in few of them.

    Records 201 and 202 are one patient ("mitdb/201+202"), as in the task.
    """
    rng = np.random.default_rng(seed)
    y, groups = [], []
    for p in range(20):
        patient = "mitdb/201+202" if p in (0, 1) else f"mitdb/{100 + p}"
        classes = [0] + ([1] if p % 4 == 0 else []) + ([2] if p % 6 == 1 else []) + ([3] if p % 3 == 2 else [])
        for c in classes:
            n = int(rng.integers(5, 40))
            y += [c] * n
            groups += [patient] * n
    return np.array(y), np.array(groups)


def _patients(groups, positions):
    return set(groups[positions].tolist())


def test_records_folds_never_share_a_patient_between_parts():
    y, groups = _windows()
    folds = protocols.records_folds(y, groups, n_folds=4, seed=3)
    assert len(folds) == 4
    for fold in folds:
        train, val, test = (_patients(groups, p) for p in (fold.train, fold.val, fold.test))
        assert not train & test and not train & val and not val & test
        assert len(fold.val) > 0
    # Every window is tested exactly once, and 201/202 travel together.
    tested = np.sort(np.concatenate([f.test for f in folds]))
    np.testing.assert_array_equal(tested, np.arange(len(y)))
    for fold in folds:
        parts = [p for p in (fold.train, fold.val, fold.test) if "mitdb/201+202" in _patients(groups, p)]
        assert len(parts) == 1


def test_records_folds_are_a_function_of_the_seed():
    y, groups = _windows()
    a = protocols.records_folds(y, groups, 4, seed=1)
    b = protocols.records_folds(y, groups, 4, seed=1)
    c = protocols.records_folds(y, groups, 4, seed=2)
    assert all(np.array_equal(f.test, g.test) and np.array_equal(f.val, g.val) for f, g in zip(a, b))
    # StratifiedGroupKFold's shuffle only breaks ties between patients, so another seed may keep
    # the test folds; the validation patients drawn inside each fold change.
    assert not all(np.array_equal(f.val, g.val) for f, g in zip(a, c))


def test_split_patients_gives_every_part_every_class_and_no_shared_patient():
    y, groups = _windows()
    parts = protocols.split_patients(y, groups, (0.7, 0.15, 0.15), seed=0)
    assert sum(len(p) for p in parts) == len(y)
    names = [_patients(groups, p) for p in parts]
    assert not names[0] & names[1] and not names[0] & names[2] and not names[1] & names[2]
    for p in parts:
        assert set(y[p].tolist()) == {0, 1, 2, 3}
    assert len(parts[0]) > len(parts[1]) and len(parts[0]) > len(parts[2])
    again = protocols.split_patients(y, groups, (0.7, 0.15, 0.15), seed=0)
    assert all(np.array_equal(p, q) for p, q in zip(parts, again))


def test_paper_subset_is_class_balanced_and_folds_stratified():
    y, groups = _windows()
    subset = protocols.paper_subset(y, n_windows=200, seed=0)
    counts = np.bincount(y[subset])
    # 50 per class, or all of a class that has fewer.
    assert counts.tolist() == [min(50, int(np.sum(y == c))) for c in range(4)]
    folds = protocols.paper_folds(y[subset], n_folds=5, seed=0)
    tested = np.sort(np.concatenate([f.test for f in folds]))
    np.testing.assert_array_equal(tested, np.arange(len(subset)))
    for fold in folds:
        assert not set(fold.train) & set(fold.test) and not set(fold.val) & set(fold.test)
        assert set(y[subset][fold.val].tolist()) == {0, 1, 2, 3}


def test_bad_protocol_and_fold_counts_are_refused():
    y, groups = _windows()
    with pytest.raises(EcgEdgeError, match="protocol must be one of paper, records, databases, got 'lopo'"):
        protocols.make_folds("lopo", y, groups)
    with pytest.raises(EcgEdgeError, match="folds must be between 2 and the 19 patients, got 40"):
        protocols.records_folds(y, groups, n_folds=40)
    with pytest.raises(EcgEdgeError, match="sum to 1"):
        protocols.split_patients(y, groups, (0.5, 0.2))


def test_records_folds_refuse_a_fold_without_validation_patients():
    # Two patients, two folds: each training side is one patient, none is left for validation.
    y = np.array([0, 0, 1, 0, 1, 1])
    groups = np.array(["a", "a", "a", "b", "b", "b"])
    with pytest.raises(EcgEdgeError, match="too few to hold out validation patients"):
        protocols.records_folds(y, groups, n_folds=2)


def _two_databases(seed=0):
    """Shaped like multidb-rhythm5: many one-class handheld recordings, a few long Holter records."""
    rng = np.random.default_rng(seed)
    y, groups = [], []
    for r in range(600):  # 80 % NSR, 10 % AF, 10 % OTHER, 3 windows each
        c = 0 if r < 480 else (1 if r < 540 else 2)
        y += [c] * 3
        groups += [f"cinc2017/A{r:05d}"] * 3
    for r in range(12):  # every Holter record has NSR, every 3rd also AF
        classes = [0] + ([1] if r % 3 == 0 else [])
        for c in classes:
            n = int(rng.integers(50, 150))
            y += [c] * n
            groups += [f"mitdb/{100 + r}"] * n
    return np.array(y), np.array(groups)


def test_split_patients_shares_out_every_database_class_pair():
    # Balancing classes alone once let the Holter AF fill the test part's AF and left the
    # handheld's AF recordings all in training.
    y, groups = _two_databases()
    strata = protocols.strata_of(y, groups)
    parts = protocols.split_patients(y, groups, (0.7, 0.15, 0.15), seed=0, strata=strata)
    for s in sorted(set(strata.tolist())):
        share = np.array([np.sum(strata[p] == s) for p in parts]) / np.sum(strata == s)
        assert np.all(share > 0), s  # every part has some of it (each pair has >= 3 patients)
        if s.startswith("cinc2017"):  # many small patients: close to the fractions
            np.testing.assert_allclose(share, [0.7, 0.15, 0.15], atol=0.03)
    names = [_patients(groups, p) for p in parts]
    assert not names[0] & names[1] and not names[0] & names[2] and not names[1] & names[2]


def test_strata_are_database_and_class():
    strata = protocols.strata_of(np.array([0, 1, 1]), np.array(["mitdb/100", "cinc2017/A00001", "x"]))
    assert strata.tolist() == ["mitdb:0", "cinc2017:1", ":1"]


def test_deployable_split_of_cinc2017_shares_out_each_label(physionet_dir):
    # The real CinC 2017 labels, one unit per recording: every part gets about its fraction of
    # each label, AF included (the class-only split had put all but one AF recording in training).
    import csv

    rows = list(csv.reader(open(physionet_dir / "cinc2017" / "REFERENCE.csv")))
    groups = np.array([f"cinc2017/{name}" for name, _ in rows])
    y = np.array(["NAO~".index(label) for _, label in rows])
    parts = protocols.split_patients(y, groups, protocols.SPLIT_FRACTIONS, seed=0,
                                     strata=protocols.strata_of(y, groups))
    for c in range(4):
        share = np.array([np.sum(y[p] == c) for p in parts]) / np.sum(y == c)
        np.testing.assert_allclose(share, protocols.SPLIT_FRACTIONS, atol=0.02)
