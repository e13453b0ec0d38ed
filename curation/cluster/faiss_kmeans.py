"""k-means with faiss: a sampled fit for large pools, then assignment of every point.

faiss fits on at most ``k * max_points_per_centroid`` points, drawn with the given seed, then
every point is assigned to its nearest centroid (inner product for spherical k-means on
normalised vectors, L2 otherwise). Same data + same seed = same clusters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from curation.exceptions import DataError
from curation.memory import blocks, take
from curation.random import int_seed
from curation.validation import Interval, Options, TypeOf, validate_params

PLUSPLUS_MAX_WORK = 2e9
#: Rows per assignment block: in this process one block is read (and released) at a time; with a
#: ``map_fn`` each block is one task. Fixed, so labels never depend on where blocks ran.
ASSIGN_ROWS = 65_536
MapFn = Callable[[Callable[[Any], Any], Iterable[Any]], list]


def nearest_centroids(args: tuple[np.ndarray, bool, np.ndarray]) -> np.ndarray:
    """``(centroids, spherical, rows)`` -> each row's nearest centroid (inner product when
    spherical, L2 otherwise): one assignment block, in this process or as a task elsewhere."""
    import faiss

    centroids, spherical, rows = args
    index = faiss.IndexFlatIP(centroids.shape[1]) if spherical else faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    _, idx = index.search(np.ascontiguousarray(rows, dtype=np.float32), 1)
    return idx[:, 0].astype(np.int64)


def kmeans_plusplus(X: np.ndarray, k: int, *, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centre is drawn with
    probability proportional to its squared distance to the nearest centre chosen so far."""
    n = len(X)
    X = np.asarray(X, dtype=np.float32)
    sq = np.einsum("ij,ij->i", X, X, dtype=np.float64)

    def dist2(c: np.ndarray) -> np.ndarray:  # |x - c|² = |x|² - 2 x·c + |c|², one product per centre
        return np.maximum(sq - 2.0 * (X @ c).astype(np.float64) + float(c.astype(np.float64) @ c), 0.0)

    centers = np.empty((k, X.shape[1]), dtype=np.float32)
    centers[0] = X[rng.integers(n)]
    d2 = dist2(centers[0])
    for j in range(1, k):
        total = d2.sum()
        i = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centers[j] = X[i]
        d2 = np.minimum(d2, dist2(centers[j]))
    return centers


class FaissKMeans:
    """faiss k-means with an explicit seed.

    Args:
        k: number of clusters (1 <= k <= n).
        niter: Lloyd iterations.
        spherical: normalise centroids and assign by inner product (for unit-norm embeddings).
        max_points_per_centroid: fit on a sample of at most ``k * this`` points.
        nredo: restarts; the best objective wins.
        init: ``"k-means++"`` (D² sampling on the fit sample, when that costs at most
            ``PLUSPLUS_MAX_WORK`` multiply-adds; faiss's random init otherwise) or ``"random"``.
            Random init often puts two centroids in one well-separated blob and none in
            another, and Lloyd iterations cannot move them apart.

    Fitted attributes: ``centroids_`` (k, d), ``labels_`` (n,), ``inertia_`` (final objective).

    >>> X = np.array([[0, 0], [0, 1], [10, 10], [10, 11]], np.float32)
    >>> km = FaissKMeans(2).fit(X, rng=np.random.default_rng(0))
    >>> len(set(km.labels_[:2])) == 1 and km.labels_[0] != km.labels_[2]
    True
    """

    _constraints = {
        "k": Interval(1, None, integer=True),
        "niter": Interval(1, None, integer=True),
        "spherical": TypeOf((bool,)),
        "max_points_per_centroid": Interval(1, None, integer=True),
        "nredo": Interval(1, None, integer=True),
        "init": Options({"k-means++", "random"}),
    }

    def __init__(self, k: int, *, niter: int = 20, spherical: bool = False,
                 max_points_per_centroid: int = 256, nredo: int = 1, init: str = "k-means++") -> None:
        self.k = k
        self.niter = niter
        self.spherical = spherical
        self.max_points_per_centroid = max_points_per_centroid
        self.nredo = nredo
        self.init = init

    def fit(self, X: np.ndarray, *, rng: np.random.Generator,
            progress: Callable[[int], None] | None = None, map_fn: MapFn | None = None) -> FaissKMeans:
        """Fit centroids (on a sample when the pool is large) and assign every row
        (:meth:`assign`; ``map_fn`` spreads its blocks)."""
        import faiss

        validate_params(self)
        X = np.ascontiguousarray(X, dtype=np.float32)
        n, d = X.shape
        if self.k > n:
            raise DataError(
                f"cluster.k={self.k} is larger than the pool ({n} items). Set cluster.k to at most {n}."
            )
        km = faiss.Kmeans(d, int(self.k), niter=self.niter, seed=int_seed(rng), spherical=self.spherical,
                          max_points_per_centroid=self.max_points_per_centroid, nredo=self.nredo,
                          verbose=False)
        km.cp.min_points_per_centroid = 1  # small pools are fine: don't warn about them
        # faiss would scan all of X for NaNs at once, leaving a memory-mapped pool resident;
        # the same check block by block (curation.memory) keeps one block resident
        km.cp.check_input_data_for_NaNs = False
        for rows, Xb in blocks(X):
            if not np.isfinite(Xb).all():
                bad = rows.start + int(np.flatnonzero(~np.isfinite(Xb).all(axis=1))[0])
                raise DataError(f"the vector of row {bad} is not finite (NaN or inf): the embedder or the "
                                "features produced it; fix the input or the model before clustering")
        m = min(n, self.k * self.max_points_per_centroid)
        # the rows faiss fits on: its own subsample (the first m of rand_perm(n, seed), as in
        # faiss's clustering.cpp), gathered here block by block so that a memory-mapped pool
        # does not stay resident; faiss fits on exactly these rows either way
        fit_rows = X
        if m < n:
            perm = np.empty(n, dtype=np.int32)
            faiss.rand_perm(faiss.swig_ptr(perm), n, km.cp.seed)
            fit_rows = take(X, perm[:m])
        if self.init == "k-means++" and m * self.k * d <= PLUSPLUS_MAX_WORK:
            # seed from the same kind of sample as faiss fits on (an independent draw)
            sample = take(X, rng.choice(n, size=m, replace=False)) if m < n else X
            best = None
            for _ in range(self.nredo):
                km.cp.nredo = 1
                km.train(fit_rows, init_centroids=kmeans_plusplus(sample, self.k, rng=rng))
                if best is None or km.obj[-1] < best[1]:
                    best = (km.centroids.copy(), float(km.obj[-1]))
            km.centroids[:] = best[0]
            km.obj = [best[1]]
        else:
            km.train(fit_rows)
        del fit_rows
        self.centroids_ = km.centroids.copy()
        self.inertia_ = float(km.obj[-1]) if len(km.obj) else float("nan")
        self.labels_ = self.assign(X, progress=progress, map_fn=map_fn)
        return self

    def assign(self, X: np.ndarray, *, chunk: int | None = None, progress: Callable[[int], None] | None = None,
               map_fn: MapFn | None = None) -> np.ndarray:
        """Nearest centroid of each row, in blocks of ``chunk`` (default :data:`ASSIGN_ROWS`)
        rows; progress is called with rows done.

        ``map_fn(func, args)`` (e.g. Ray tasks on a cluster) gets one block per argument, handed
        over lazily so that a bounded ``map_fn`` holds only the blocks in flight; a pool of one
        block is assigned here. The blocks are the same either way, so are the labels."""
        chunk = chunk or ASSIGN_ROWS
        centroids = np.ascontiguousarray(self.centroids_, dtype=np.float32)
        if map_fn is not None and len(X) > chunk:
            # a memory-mapped X: each block is read (and released) as map_fn asks for it
            parts = map_fn(nearest_centroids, ((centroids, self.spherical, np.array(Xb, dtype=np.float32))
                                               for _, Xb in blocks(X, chunk)))
            if progress:
                progress(len(X))
            return np.concatenate(parts)
        labels = np.empty(len(X), dtype=np.int64)
        for rows, Xb in blocks(X, chunk):  # a memory-mapped X is read, and released, block by block
            labels[rows] = nearest_centroids((centroids, self.spherical, Xb))
            if progress:
                progress(rows.stop - rows.start)
        return labels
