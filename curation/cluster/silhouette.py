"""Silhouette scores and choosing k by silhouette (Yu et al. 2024, §4.3: a cheap proxy).

The silhouette of a point is ``(b - a) / max(a, b)``: a = mean distance to its own cluster,
b = mean distance to the nearest other cluster; the score is the mean over points, in [-1, 1],
higher = tighter, better separated clusters. Computing it is O(n²), so it is estimated on a
random sample (``sample`` points; cosine distance for spherical clustering).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curation.random import int_seed


def silhouette(X: np.ndarray, labels: np.ndarray, *, rng: np.random.Generator, sample: int = 2000,
               metric: str = "euclidean") -> float | None:
    """Sampled silhouette score; None when fewer than 2 clusters appear in the sample."""
    from sklearn.metrics import silhouette_score

    n = len(X)
    idx = rng.choice(n, size=min(sample, n), replace=False) if n > sample else np.arange(n)
    lab = labels[idx]
    if len(np.unique(lab)) < 2 or len(np.unique(lab)) >= len(idx):
        return None
    return float(silhouette_score(X[idx], lab, metric=metric))


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
    Xf = X[fit_idx]
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
