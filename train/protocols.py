"""The two evaluation protocols and the fixed patient split of the deployable model.

``paper``
    As Salem et al. (2018): a class-balanced subset of about 7000 windows, stratified 10-fold
    cross-validation at the window level. Windows of one patient land in training and test
    folds alike, so the number flatters; it is kept to compare with the paper's 97.23 %.
``records``
    Grouped cross-validation by patient (``StratifiedGroupKFold``) over all windows: no patient
    is ever on both sides of a fold. This is the honest number.
``databases``
    Leave one database out: each fold tests on every window of one database (another device,
    rate, lead and population) and trains on the others. This is the number for new hardware.
    A task of one database can not be cross-validated so.

Every fold also holds out a validation part of its training side (windows for ``paper``,
patients for ``records``) for early stopping, so the test side is never looked at while
training. All splits are pure functions of the labels, groups and seed.
"""

from dataclasses import dataclass

import numpy as np

from ecgedge.device.errors import EcgEdgeError

PROTOCOLS = ("paper", "records", "databases")
PAPER_N_WINDOWS = 7000
DEFAULT_FOLDS = {"paper": 10, "records": 5, "databases": None}  # databases: one fold per database
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


@dataclass(frozen=True)
class Fold:
    """Positions (into the protocol's window set) of one fold's train, validation and test parts.

    Attributes
    ----------
    index : fold number, 0-based.
    train, val, test : ndarray of int64 positions, sorted, pairwise disjoint.
    """

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def check_protocol(protocol):
    """Return ``protocol`` if it is known; EcgEdgeError listing the known ones otherwise."""
    if protocol not in PROTOCOLS:
        raise EcgEdgeError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return protocol


def paper_subset(y, n_windows=PAPER_N_WINDOWS, seed=0):
    """Positions of the paper's class-balanced subset: ``n_windows // n_classes`` windows per class.

    Parameters
    ----------
    y : ndarray of shape (n,), int class indices.
    n_windows : total wanted; a class with fewer windows contributes all it has.
    seed : int.

    Returns
    -------
    ndarray of int64 positions into ``y``, sorted.
    """
    y = np.asarray(y)
    classes = np.unique(y)
    per_class = max(1, int(n_windows) // max(1, len(classes)))
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(y == c), size=min(per_class, int(np.sum(y == c))), replace=False)
        for c in classes
    ]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def _stratified_holdout(positions, y, fraction, seed):
    """Split ``positions`` into (kept, held out) with about ``fraction`` of each class held out."""
    if fraction <= 0 or len(positions) == 0:
        return np.sort(positions), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(y[positions]):
        members = positions[y[positions] == c]
        k = int(round(fraction * len(members)))
        if len(members) > 1:
            held.append(rng.choice(members, size=max(1, min(k, len(members) - 1)), replace=False))
    held = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    return np.setdiff1d(positions, held), held


def paper_folds(y, n_folds=10, seed=0, val_fraction=0.1):
    """Stratified K-fold at the window level, with a stratified validation part of each training side.

    Parameters
    ----------
    y : ndarray of shape (n,), int class indices (usually of :func:`paper_subset`).
    n_folds : int >= 2.
    seed : int.
    val_fraction : part of each training side held out for early stopping.

    Returns
    -------
    list of Fold.
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    _check_n_folds(n_folds, np.min(np.bincount(y)[np.unique(y)]), "windows of the smallest class")
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for k, (train, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
        train, val = _stratified_holdout(train.astype(np.int64), y, val_fraction, seed + 1000 + k)
        folds.append(Fold(k, train, val, np.sort(test).astype(np.int64)))
    return folds


def records_folds(y, groups, n_folds=5, seed=0, val_fraction=0.15):
    """K-fold grouped by patient, stratified by (database, class), with validation patients held
    out of each training side.

    Parameters
    ----------
    y : ndarray of shape (n,), int class indices.
    groups : ndarray of shape (n,), patient id of each window.
    n_folds : int, 2 <= n_folds <= number of patients.
    seed : int.
    val_fraction : part of each training side's windows (whole patients) held out for early stopping.

    Returns
    -------
    list of Fold; no patient appears in two parts of a fold.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y, groups = np.asarray(y), np.asarray(groups)
    _check_n_folds(n_folds, len(np.unique(groups)), "patients")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    strata = strata_of(y, groups)
    for k, (train, test) in enumerate(splitter.split(np.zeros(len(y)), strata, groups)):
        parts = split_patients(y[train], groups[train], (1 - val_fraction, val_fraction), seed + 1000 + k,
                               strata=strata[train])
        if len(parts[0]) == 0 or len(parts[1]) == 0:
            raise EcgEdgeError(
                f"fold {k} has {len(np.unique(groups[train]))} training patients, too few to hold "
                "out validation patients for early stopping; use more records or fewer folds"
            )
        folds.append(Fold(k, np.sort(train[parts[0]]), np.sort(train[parts[1]]), np.sort(test).astype(np.int64)))
    return folds


def _check_n_folds(n_folds, n_units, what):
    if not 2 <= n_folds <= n_units:
        raise EcgEdgeError(f"folds must be between 2 and the {n_units} {what}, got {n_folds}")


def strata_of(y, groups):
    """What the splits balance: each window's (database, class), as ``"<database>:<class>"``.

    Balancing the class alone let one database fill a part's quota of a class: the deployable
    split of multidb-rhythm5 tested 1,594 CinC NSR recordings and not one CinC AF recording, and
    validated early stopping on 5 AF windows. Patient ids without a database (no "/") give the
    class alone.
    """
    groups = np.asarray(groups).astype(str)
    database = np.where(np.char.count(groups, "/") > 0, database_of(groups), "")
    return np.array([f"{d}:{c}" for d, c in zip(database.tolist(), np.asarray(y).tolist())])


def _assign_patients(order, rarest, counts, targets):
    """Greedy assignment of patients (in ``order``) to parts.

    Returns (part of each patient, windows per part and stratum).

    A patient goes to the part furthest below its share of the patient's rarest stratum (filled
    / wanted there), ties to the part furthest below its share of all windows, then the largest
    part. So the first patient of a stratum lands in the largest part, the next ones fill the
    others in proportion.
    """
    open_parts = np.flatnonzero(targets.sum(axis=1) > 0)
    wanted = np.maximum(targets, 1e-12)
    size_wanted = np.maximum(targets.sum(axis=1), 1e-12)
    filled = np.zeros_like(targets)
    size = np.zeros(len(targets))
    part_of = np.empty(len(order), dtype=np.int64)
    for p in order:
        z = rarest[p]
        part = max(open_parts, key=lambda s: (1 - filled[s, z] / wanted[s, z], 1 - size[s] / size_wanted[s],
                                              size_wanted[s]))
        part_of[p] = part
        filled[part] += counts[p]
        size[part] += counts[p].sum()
    return part_of, filled


def split_patients(y, groups, fractions=SPLIT_FRACTIONS, seed=0, n_tries=50, strata=None):
    """Seeded split of patients into parts of about ``fractions`` of each stratum's windows.

    Parameters
    ----------
    y : ndarray of shape (n,), int class indices.
    groups : ndarray of shape (n,), patient id of each window.
    fractions : part sizes (fractions of windows), summing to 1; e.g. (train, val, test).
    seed : int.
    n_tries : random patient orders tried; the split that misses the fewest (part, stratum)
        pairs, then deviates least from ``fractions`` (summed over strata, each stratum's
        deviation as a share of its windows), wins.
    strata : ndarray of shape (n,) of labels to balance (:func:`strata_of`); default ``y``.
        Every part gets a share of every stratum that has enough patients.

    Returns
    -------
    tuple of ndarrays of int64 positions into ``y``, one per part, sorted; together they cover
    every window and no patient is in two parts.
    """
    y, groups = np.asarray(y), np.asarray(groups)
    fractions = np.asarray(fractions, dtype=np.float64)
    if np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise EcgEdgeError(f"split fractions must be >= 0 and sum to 1, got {fractions.tolist()}")
    patients, inverse = np.unique(groups, return_inverse=True)
    _, stratum = np.unique(y if strata is None else np.asarray(strata), return_inverse=True)
    counts = np.zeros((len(patients), int(stratum.max()) + 1 if len(y) else 0))
    np.add.at(counts, (inverse, stratum), 1)
    totals = counts.sum(axis=0)
    # A patient is placed by its rarest stratum (over the whole set), so rare strata spread first.
    rarest = [int(np.flatnonzero(row)[np.argmin(totals[row > 0])]) for row in counts]
    targets = fractions[:, None] * totals[None, :]
    wanted = targets > 0
    rarity = totals[rarest]
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(n_tries):
        order = rng.permutation(len(patients))
        order = order[np.argsort(rarity[order], kind="stable")]
        part_of, filled = _assign_patients(order, rarest, counts, targets)
        score = (int(np.sum(wanted & (filled == 0))), float(np.sum(np.abs(filled - targets) / totals)))
        if best is None or score < best[0]:
            best = (score, part_of)
    part_of = best[1][inverse]
    return tuple(np.flatnonzero(part_of == s).astype(np.int64) for s in range(len(fractions)))


def database_of(groups):
    """Database of each window from its patient id ``"<database>/<record>"`` (ndarray of str)."""
    return np.array([str(g).split("/", 1)[0] for g in groups], dtype=str)


def databases_folds(y, groups, seed=0, val_fraction=0.15):
    """Leave-one-database-out folds, with validation patients held out of each training side.

    Parameters
    ----------
    y : ndarray of shape (n,), int class indices.
    groups : ndarray of shape (n,), patient ids ``"<database>/<record>"``.
    seed : int.
    val_fraction : part of each training side's windows (whole patients) held out for early stopping.

    Returns
    -------
    list of Fold, one per database in sorted order (fold k tests on the k-th database).
    """
    y, groups = np.asarray(y), np.asarray(groups)
    database = database_of(groups)
    names = sorted(set(database.tolist()))
    if len(names) < 2:
        raise EcgEdgeError(f"the databases protocol leaves one database out; this task has only {names}")
    folds = []
    for k, name in enumerate(names):
        test = np.flatnonzero(database == name).astype(np.int64)
        train = np.flatnonzero(database != name).astype(np.int64)
        parts = split_patients(y[train], groups[train], (1 - val_fraction, val_fraction), seed + 1000 + k,
                               strata=strata_of(y[train], groups[train]))
        folds.append(Fold(k, np.sort(train[parts[0]]), np.sort(train[parts[1]]), test))
    return folds


def make_folds(protocol, y, groups, n_folds=None, seed=0):
    """Folds of ``protocol`` over windows with labels ``y`` and patients ``groups``.

    ``n_folds`` defaults to 10 (paper) or 5 (records); the databases protocol has one fold per
    database and refuses another ``n_folds``. For "paper", ``y`` should already be the balanced
    subset (:func:`paper_subset`).
    """
    check_protocol(protocol)
    if protocol == "databases":
        folds = databases_folds(y, groups, seed)
        if n_folds not in (None, len(folds)):
            raise EcgEdgeError(f"the databases protocol has one fold per database ({len(folds)}), got folds={n_folds}")
        return folds
    n_folds = n_folds or DEFAULT_FOLDS[protocol]
    if protocol == "paper":
        return paper_folds(y, n_folds, seed)
    return records_folds(y, groups, n_folds, seed)
