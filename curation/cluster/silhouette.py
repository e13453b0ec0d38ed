"""Silhouette scores and choosing k by silhouette (Yu et al. 2024, §4.3: a cheap proxy).

The silhouette of a point is ``(b - a) / max(a, b)``: a = mean distance to its own cluster,
b = mean distance to the nearest other cluster; the score is the mean over points, in [-1, 1],
higher = tighter, better separated clusters. Computing it is O(n²), so it is estimated on a
random sample (``sample`` points; cosine distance for spherical clustering).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curation.memory import take
from curation.random import int_seed


def silhouette_score(X: np.ndarray, labels: np.ndarray, metric: str = "euclidean") -> float:
    """The mean silhouette of the rows of ``X`` (what ``sklearn.metrics.silhouette_score``
    computes, to float rounding), from the (m, m) distance matrix: O(m² d) for m rows.

    ``metric``: ``"euclidean"`` or ``"cosine"`` (1 - cosine similarity; a zero row is at
    distance 1 from every other). A point alone in its cluster scores 0, as in sklearn. Written
    here rather than imported: scikit-learn's import alone costs the cluster stage about 1.5 s.
    """
    X = np.asarray(X, dtype=np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        U = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
        D = np.clip(1.0 - U @ U.T, 0.0, 2.0)
    elif metric == "euclidean":
        sq = (X**2).sum(axis=1)
        D = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (X @ X.T), 0.0))
    else:
        raise ValueError(f"silhouette: metric must be 'euclidean' or 'cosine'; got {metric!r}")
    np.fill_diagonal(D, 0.0)
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(-1)
    counts = np.bincount(codes)
    sums = D @ np.eye(len(counts))[codes]  # sums[i, c]: the distances of row i to cluster c's rows
    own = counts[codes]
    a = sums[np.arange(len(X)), codes] / np.maximum(own - 1, 1)
    means = sums / counts
    means[np.arange(len(X)), codes] = np.inf
    b = means.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.nan_to_num((b - a) / np.maximum(a, b))
    return float(np.where(own > 1, s, 0.0).mean())


def silhouette(X: np.ndarray, labels: np.ndarray, *, rng: np.random.Generator, sample: int = 2000,
               metric: str = "euclidean") -> float | None:
    """Sampled silhouette score; None when fewer than 2 clusters appear in the sample."""
    n = len(X)
    idx = rng.choice(n, size=min(sample, n), replace=False) if n > sample else np.arange(n)
    lab = labels[idx]
    if len(np.unique(lab)) < 2 or len(np.unique(lab)) >= len(idx):
        return None
    return silhouette_score(take(X, idx), lab, metric=metric)


def choose_k(X: np.ndarray, grid: Sequence[int], *, rng: np.random.Generator, spherical: bool,
             sample: int = 2000, fit_sample: int = 20_000, niter: int = 20,
             nredo: int = 3) -> tuple[int, dict[int, float | None]]:
    """The k of ``grid`` with the highest sampled silhouette, and every k's score.

    Each candidate is fitted on at most ``fit_sample`` points (k-means on a sample finds the
    same structure at a fraction of the cost) and scored on the same ``sample`` points, so the
    scores are comparable; ``nredo`` restarts keep one bad start from sinking a good k.
    Candidates with k >= the number of fitted points are skipped.
    """
    from curation.cluster.faiss_kmeans import FaissKMeans

    n = len(X)
    fit_idx = rng.choice(n, size=min(fit_sample, n), replace=False) if n > fit_sample else np.arange(n)
    Xf = take(X, fit_idx)
    score_seed = int_seed(rng)
    metric = "cosine" if spherical else "euclidean"
    scores: dict[int, float | None] = {}
    for k in sorted(set(int(k) for k in grid)):
        if k < 2 or k >= len(Xf):
            continue
        km = FaissKMeans(k, niter=niter, spherical=spherical, nredo=nredo).fit(Xf, rng=rng)
        scores[k] = silhouette(Xf, km.labels_, rng=np.random.default_rng(score_seed), sample=sample, metric=metric)
    valid = {k: s for k, s in scores.items() if s is not None}
    if not valid:
        raise ValueError(f"no k in {list(grid)} could be scored on {n} items; give cluster.k explicitly")
    best = max(valid, key=lambda k: (valid[k], -k))  # ties: the smaller k
    return best, scores
