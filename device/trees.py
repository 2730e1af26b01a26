"""Gradient-boosted trees in numpy: the rhythm head's classifier on the device.

Training fits scikit-learn's ``HistGradientBoostingClassifier``; ``ecgedge.train.rhythm_head``
exports its trees into the flat arrays below (an ``.npz`` in the bundle), and :class:`Trees`
decides every split of every tree for a window in one step, then walks all trees at once, one
gather per level, so a window costs a few numpy calls more than the deepest tree is deep. The
rule at each split is scikit-learn's: a missing value (NaN) goes where the split sent the
missing values in training, any other value goes left when ``<= threshold``.
"""

import numpy as np

from ecgedge.device.errors import EcgEdgeError

ROWS_AT_ONCE = 64  # rows whose every split is decided in one step (64 x nodes booleans and ints)
ARRAYS = ("feature", "threshold", "missing_left", "left", "right", "value", "is_leaf", "roots", "baseline")


class Trees:
    """A multiclass gradient-boosted tree ensemble.

    Parameters
    ----------
    arrays : mapping with the keys of :data:`ARRAYS`:
        ``feature`` (int, per node), ``threshold`` (float), ``missing_left`` (bool), ``left`` and
        ``right`` (int, indices into the node arrays), ``value`` (float, leaf output), ``is_leaf``
        (bool); ``roots`` (int, shape (n_iterations, n_classes), each tree's root node);
        ``baseline`` (float, shape (n_classes,), the raw score before any tree).
    """

    def __init__(self, arrays):
        missing = [k for k in ARRAYS if k not in arrays]
        if missing:
            raise EcgEdgeError(f"tree arrays lack {missing}")
        feature = np.asarray(arrays["feature"], dtype=np.int64)
        self.threshold = np.asarray(arrays["threshold"], dtype=np.float64)
        missing_left = np.asarray(arrays["missing_left"], dtype=bool)
        left = np.asarray(arrays["left"], dtype=np.int64)
        right = np.asarray(arrays["right"], dtype=np.int64)
        self.value = np.asarray(arrays["value"], dtype=np.float64)
        is_leaf = np.asarray(arrays["is_leaf"], dtype=bool)
        self.roots = np.asarray(arrays["roots"], dtype=np.int64)
        self.baseline = np.asarray(arrays["baseline"], dtype=np.float64).reshape(-1)
        n_nodes = feature.size
        if self.roots.ndim != 2 or self.roots.shape[1] != self.baseline.size:
            raise EcgEdgeError(f"tree roots of shape {self.roots.shape} do not match {self.baseline.size} classes")
        for name, child in (("left", left[~is_leaf]), ("right", right[~is_leaf]), ("roots", self.roots)):
            if child.size and (child.min() < 0 or child.max() >= n_nodes):
                raise EcgEdgeError(f"tree arrays point {name} outside their {n_nodes} nodes")
        self.n_features = int(feature[~is_leaf].max()) + 1 if (~is_leaf).any() else 0
        # Walking without branches: a leaf is its own child, so every tree may take the same number
        # of steps; each split reads column ``column`` of [x with NaN as -inf, x as it is], so a
        # missing value goes left (-inf <= threshold) or right (NaN <= threshold is False) as trained.
        index = np.arange(n_nodes)
        self.left = np.where(is_leaf, index, left)
        self.right = np.where(is_leaf, index, right)
        self.column = np.where(is_leaf, 0, feature + np.where(missing_left, 0, self.n_features))
        self.depth = self._max_depth(is_leaf)

    def _max_depth(self, is_leaf):
        frontier, depth = self.roots.reshape(-1), 0
        while True:
            frontier = frontier[~is_leaf[frontier]]
            if frontier.size == 0:
                return depth
            frontier = np.concatenate([self.left[frontier], self.right[frontier]])
            depth += 1

    @property
    def n_classes(self):
        return self.baseline.size

    def raw_scores(self, x):
        """Raw (pre-softmax) class scores.

        Parameters
        ----------
        x : ndarray of shape (n, n_features) or (n_features,), float; NaN marks a missing value.

        Returns
        -------
        ndarray of shape (n, n_classes) (or (n_classes,) for one row), float64.
        """
        x = np.asarray(x, dtype=np.float64)
        rows = np.atleast_2d(x)
        if rows.shape[1] < self.n_features:
            raise EcgEdgeError(f"the trees read {self.n_features} features, got rows of {rows.shape[1]}")
        starts = range(0, max(rows.shape[0], 1), ROWS_AT_ONCE)  # one (empty) chunk for zero rows
        raw = np.concatenate([self._raw_scores(rows[i:i + ROWS_AT_ONCE]) for i in starts])
        return raw if x.ndim == 2 else raw[0]

    def _raw_scores(self, rows):
        """:meth:`raw_scores` of a few rows: decide every split of every tree at once, then walk."""
        n_nodes = self.left.size
        both = np.concatenate([np.where(np.isnan(rows), -np.inf, rows), rows], axis=1)
        go_left = both[:, self.column] <= self.threshold
        offset = (np.arange(rows.shape[0]) * n_nodes)[:, None]
        child = (np.where(go_left, self.left, self.right) + offset).reshape(-1)
        node = self.roots.reshape(-1) + offset
        for _ in range(self.depth):
            node = child[node]
        leaves = self.value[node - offset]
        return self.baseline + leaves.reshape(rows.shape[0], *self.roots.shape).sum(axis=1)

    def predict_proba(self, x):
        """Class probabilities (softmax of :meth:`raw_scores`), same shapes."""
        return softmax(self.raw_scores(x))


def softmax(raw):
    """``exp(raw)`` normalised over the last axis (float64), computed without overflow."""
    e = np.exp(raw - raw.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def load_trees(path):
    """:class:`Trees` from an ``.npz`` file written by ``ecgedge.train.rhythm_head``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return Trees({k: data[k] for k in data.files})
    except (OSError, ValueError) as exc:
        raise EcgEdgeError(f"can not read the tree file {path}: {exc}") from None
