"""The two baselines, run on the CNN's own folds and reported beside it.

(a) The paper's recipe: pooled features of the frozen ImageNet backbone -> standardised RBF SVM.
(b) A classical rhythm-analysis peer: RR-interval statistics and beat-type fractions per window,
    from the *reference* beat annotations -> gradient boosting. Reading reference beats makes it
    an upper bound for RR-based tools, which must detect beats themselves.

Both are fitted on each fold's train and validation parts together (neither needs early
stopping) and predict its test part, so their numbers compare with the CNN's fold by fold.
"""

import numpy as np

from ecgedge.device.rhythm import rr_statistics

# AAMI beat families of the MIT-BIH beat symbols. "!" (ventricular flutter wave) counts as
# ventricular: in ventricular flutter it is the only "beat" annotated.
BEAT_FAMILIES = {
    "N": "NLRej",
    "S": "AaJS",
    "V": "VE!",
    "F": "F",
    "Q": "/fQ",
}
BEAT_SYMBOLS = frozenset("".join(BEAT_FAMILIES.values()))

RR_FEATURE_NAMES = (
    "n_beats", "heart_rate_bpm", "mean_rr_s", "sd_rr_s", "rmssd_s", "pnn50", "cv_rr", "nrmssd",
    "median_abs_diff_ratio", "frac_large_diff", "rr_range_ratio",
    "frac_N", "frac_S", "frac_V", "frac_F", "frac_Q", "frac_ectopic",
)


def beat_fractions(symbols):
    """Fractions of the beats in each AAMI family, then the ectopic (non-N) fraction.

    Parameters
    ----------
    symbols : sequence of str, beat annotation symbols of one window (non-beats excluded).

    Returns
    -------
    ndarray of shape (len(BEAT_FAMILIES) + 1,), float64; NaN when the window has no beat.
    """
    n = len(symbols)
    if n == 0:
        return np.full(len(BEAT_FAMILIES) + 1, np.nan)
    fracs = [sum(s in members for s in symbols) / n for members in BEAT_FAMILIES.values()]
    return np.array(fracs + [1.0 - fracs[0]])


def window_rr_features(beat_s, symbols, starts_s, window_s):
    """RR features of the windows of one record.

    Parameters
    ----------
    beat_s : ndarray of shape (b,), float, beat times in seconds from the record start, sorted.
    symbols : sequence of b str, the beat symbols (annotations that are not beats are dropped).
    starts_s : ndarray of shape (w,), float, window start times, seconds.
    window_s : float, window length, seconds.

    Returns
    -------
    ndarray of shape (w, len(RR_FEATURE_NAMES)), float64: the beat count, :func:`rr_statistics`
    of the intervals between the beats inside ``[start, start + window_s)``, and
    :func:`beat_fractions` of those beats.
    """
    symbols = np.asarray(list(symbols), dtype=object)
    keep = np.array([s in BEAT_SYMBOLS for s in symbols], dtype=bool)
    beat_s = np.asarray(beat_s, dtype=np.float64)[keep]
    symbols = symbols[keep]
    starts_s = np.asarray(starts_s, dtype=np.float64)
    lo = np.searchsorted(beat_s, starts_s, side="left")
    hi = np.searchsorted(beat_s, starts_s + window_s, side="left")
    rows = []
    for a, b in zip(lo, hi):
        rr = np.diff(beat_s[a:b])
        rows.append(np.concatenate([[b - a], rr_statistics(rr), beat_fractions(list(symbols[a:b]))]))
    return np.array(rows, dtype=np.float64).reshape(len(starts_s), len(RR_FEATURE_NAMES))


def svm_classifier(seed):
    """The paper's classifier: standardise, then an RBF SVM with balanced class weights."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(StandardScaler(), SVC(kernel="rbf", class_weight="balanced", random_state=seed))


def rr_classifier(seed):
    """Gradient boosting on RR features, balanced class weights (NaN features allowed)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(class_weight="balanced", random_state=seed)


SVM_MAX_PER_CLASS = 1500
"""The SVM baseline fits on at most this many windows of each class (seeded): an RBF SVM's cost
grows with the square of its training set (the paper fitted about 7000 windows), and 57,000
windows of multidb-rhythm5 would take hours on two cores."""


def _capped(positions, y, max_per_class, seed):
    """At most ``max_per_class`` positions of each class, drawn with ``seed``; sorted."""
    if max_per_class is None:
        return positions
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(positions[y[positions] == c])[:max_per_class] for c in np.unique(y[positions])]
    return np.sort(np.concatenate(keep))


def predict_folds(make_classifier, features, y, folds, seed=0, max_per_class=None):
    """Fit a fresh classifier per fold on train + val (at most ``max_per_class`` windows of each
    class when given), predict the test part.

    Parameters
    ----------
    make_classifier : callable(seed) -> unfitted sklearn classifier.
    features : ndarray of shape (n, d), float.
    y : ndarray of shape (n,), int class indices.
    folds : list of protocols.Fold over the same n windows.
    seed : int.

    Returns
    -------
    list of dicts, one per fold: ``{"fold", "test" (positions), "y_true", "y_pred"}`` (int lists).
    """
    features, y = np.asarray(features), np.asarray(y)
    results = []
    for fold in folds:
        fit_on = _capped(np.concatenate([fold.train, fold.val]), y, max_per_class, seed)
        classifier = make_classifier(seed).fit(features[fit_on], y[fit_on])
        results.append({
            "fold": fold.index,
            "test": fold.test.tolist(),
            "y_true": y[fold.test].tolist(),
            "y_pred": classifier.predict(features[fold.test]).astype(int).tolist(),
        })
    return results
