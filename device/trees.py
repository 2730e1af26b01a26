"""Gradient-boosted trees in numpy: the rhythm head's classifier on the device.

Training fits scikit-learn's ``HistGradientBoostingClassifier``; ``ecgedge.train.rhythm_head``
exports its trees into the flat arrays below (an ``.npz`` in the bundle), and :class:`Trees`
decides every split of every tree for a window in one step, then walks all trees at once, one
gather per level, so a window costs a few numpy calls more than the deepest tree is deep. The
rule at each split is scikit-learn's: a missing value (NaN) goes where the split sent the
missing values in training, any other value goes left when ``<= threshold``.

The tree file comes from a bundle, so it is read as untrusted: :func:`load_trees` checks the
sizes its zip members declare before reading any, reads each ``.npy`` header itself (no
array larger than its bytes is ever allocated, no pickles), and :class:`Trees` refuses arrays
of the wrong kind or length, negative or out-of-range feature and child indices, and links
that are not a forest (a node with two parents could make a cycle the walk never leaves).
"""

import io
import math
import zipfile
import zlib

import numpy as np

from ecgedge.device.errors import BundleError, EcgEdgeError

ROWS_AT_ONCE = 64  # rows whose every split is decided in one step (64 x nodes booleans and ints)
ARRAYS = ("feature", "threshold", "missing_left", "left", "right", "value", "is_leaf", "roots", "baseline")
NODE_ARRAYS = ARRAYS[:7]
# What a tree file may ask for. The demo's head (multidb-rhythm5) has about 30,000 nodes in 1.3 MB
# of arrays (320 KB compressed); these limits are 50-150 times that and keep a hostile file to tens of MB.
MAX_TREE_BYTES = 64 << 20  # all members together, uncompressed, as their zip entries declare
MAX_MEMBERS = 64
MAX_NODES = 1 << 22
MAX_FEATURES = 1024  # feature columns a split may read
MAX_TREES = 1 << 16  # iterations x classes
_KINDS = {"feature": "iu", "left": "iu", "right": "iu", "roots": "iu", "missing_left": "b", "is_leaf": "b",
          "threshold": "fiu", "value": "fiu", "baseline": "fiu"}


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
        a = _checked_arrays(arrays)
        feature, missing_left, left, right, is_leaf = (a[k] for k in ("feature", "missing_left", "left", "right",
                                                                       "is_leaf"))
        self.threshold, self.value, self.roots, self.baseline = a["threshold"], a["value"], a["roots"], a["baseline"]
        n_nodes = feature.size
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
        # Terminates: _checked_arrays made the links a forest, so no walk from a root repeats a node.
        frontier, depth = np.unique(self.roots), 0
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


def _checked_arrays(arrays):
    """The tree arrays as int64 / float64 / bool ndarrays; BundleError naming the first bad one.

    Node arrays are 1-D and equally long; ``roots`` is (n_iterations, n_classes) and ``baseline``
    (n_classes,); split features are in ``0..MAX_FEATURES - 1``; children of splits and roots
    are node indices; no node is the child of two splits or both a child and a root; thresholds
    are not NaN; leaf values and the baseline are finite.
    """
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        raise BundleError(f"tree arrays lack {missing}")
    out = {}
    for name in ARRAYS:
        a = np.asarray(arrays[name])
        if a.dtype.kind not in _KINDS[name]:
            raise BundleError(f"tree array {name} must be of kind {_KINDS[name]!r} (numpy dtype.kind), got {a.dtype}")
        out[name] = a.astype(bool if name in ("missing_left", "is_leaf") else
                             np.int64 if "f" not in _KINDS[name] else np.float64)
    n_nodes = out["feature"].size
    if not 1 <= n_nodes <= MAX_NODES:
        raise BundleError(f"tree arrays must hold 1..{MAX_NODES} nodes, got {n_nodes}")
    for name in NODE_ARRAYS:
        if out[name].shape != (n_nodes,):
            raise BundleError(f"tree array {name} has shape {out[name].shape}, the other node arrays ({n_nodes},)")
    roots, baseline = out["roots"], out["baseline"]
    if baseline.ndim != 1 or baseline.size < 1:
        raise BundleError(f"tree baseline must be one score per class, got shape {baseline.shape}")
    if roots.ndim != 2 or roots.shape[1] != baseline.size or not 1 <= roots.size <= MAX_TREES:
        raise BundleError(f"tree roots of shape {roots.shape} do not match {baseline.size} classes "
                          f"(1..{MAX_TREES} trees)")
    split = ~out["is_leaf"]
    feature = out["feature"][split]
    if feature.size and (feature.min() < 0 or feature.max() >= MAX_FEATURES):
        raise BundleError(f"tree splits read features {feature.min()}..{feature.max()}, must be in "
                          f"0..{MAX_FEATURES - 1}")
    children = np.concatenate([out["left"][split], out["right"][split]])
    for name, index in (("left", out["left"][split]), ("right", out["right"][split]), ("roots", roots)):
        if index.size and (index.min() < 0 or index.max() >= n_nodes):
            raise BundleError(f"tree arrays point {name} outside their {n_nodes} nodes")
    parents = np.bincount(children, minlength=n_nodes)
    if parents.max(initial=0) > 1 or parents[roots.reshape(-1)].any():
        raise BundleError("tree arrays are not a forest: a node is the child of two splits, or a root is a child")
    if np.isnan(out["threshold"]).any():
        raise BundleError("tree thresholds hold NaN")
    for name in ("value", "baseline"):
        if not np.isfinite(out[name]).all():
            raise BundleError(f"tree array {name} holds NaN or infinite numbers")
    return out


def _read_npy(data, name, path):
    """One ``.npy`` member's bytes -> ndarray, checking its header against its size first."""
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise BundleError(f"{path}: {name} is an .npy of version {version}, expected 1.0 or 2.0")
    if dtype.hasobject or dtype.kind not in "biuf":
        raise BundleError(f"{path}: {name} holds {dtype} values; trees are numbers and booleans")
    count = math.prod(shape)
    if count * dtype.itemsize != len(data) - f.tell():
        raise BundleError(f"{path}: {name} declares shape {shape} of {dtype} ({count * dtype.itemsize} bytes) "
                          f"but holds {len(data) - f.tell()} bytes")
    return np.frombuffer(data, dtype=dtype, count=count, offset=f.tell()).reshape(shape, order="F" if fortran else "C")


def load_trees(path):
    """:class:`Trees` from an ``.npz`` file written by ``ecgedge.train.rhythm_head``.

    Raises BundleError when the file is not a readable zip of ``.npy`` arrays, declares more
    than MAX_TREE_BYTES uncompressed or MAX_MEMBERS members, or its arrays do not make trees.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            declared = sum(m.file_size for m in members)
            if len(members) > MAX_MEMBERS or declared > MAX_TREE_BYTES:
                raise BundleError(
                    f"{path} declares {len(members)} members of {declared} bytes uncompressed; a tree file may "
                    f"hold {MAX_MEMBERS} members of {MAX_TREE_BYTES} bytes"
                )
            by_name = {m.filename: m for m in members}
            arrays = {}
            for name in ARRAYS:
                member = by_name.get(name + ".npy")
                if member is None:
                    continue
                with archive.open(member) as f:
                    data = f.read(member.file_size + 1)  # zipfile stops at the declared size
                arrays[name] = _read_npy(data, member.filename, path)
    # zipfile and zlib report a damaged archive in these; RuntimeError is an encrypted member.
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError, ValueError,
            NotImplementedError, RuntimeError) as exc:
        raise BundleError(f"can not read the tree file {path}: {exc}") from None
    try:
        return Trees(arrays)
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from None
