"""KNN-Shapley (Jia et al., VLDB 2019): exact Data Shapley values of a K-nearest-neighbour classifier.

For one test point t with label y_t and the training points α_1..α_N sorted by distance to
x_t (stable: ties keep training order), the utility ``U_t(S) = (1/K)·Σ_{k ≤ min(K,|S|)}
1[y_{α_k(S)} = y_t]`` has the closed-form Shapley values (docs/methods/valuation.md#knn-shapley)

    s_{α_N} = 1[y_{α_N} = y_t] / max(N, K)
    s_{α_i} = s_{α_{i+1}} + (1[y_{α_i} = y_t] − 1[y_{α_{i+1}} = y_t]) / K · min(K, i) / i

and the value of a training point is the mean over test points. The ``max(N, K)`` base case
is exact also when N < K (the reference code and pyDVL divide by N). The recursion is a
reversed cumulative sum, vectorised over a block of test points.

Truncated (``epsilon``): only the K* = max(K, ⌈1/ε⌉) nearest training points of each test
point (a faiss search) get a value, with the recursion started at ``s_{α_K*} := 0``. Since
``|s_{α_i}| ≤ 1/i`` for i > K, every value is within ε of the exact one.

The truncated search streams the training matrix: it is cut into shards of
:data:`SHARD_ROWS` rows, each shard's K* nearest rows per test point are found on their own
(:func:`shard_neighbours`, one faiss index of one shard: memory bounded by the shard, and the
shards can run on different workers), and the global K* nearest are the best K* of the
shards' candidates (:func:`merge_neighbours`; equal distances ranked by training order). The
shard size is fixed, so the values do not depend on how many workers there are.
"""

from __future__ import annotations

import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from curation.exceptions import InvalidParameterError


def recursion_coefficients(n: int, k: int) -> np.ndarray:
    """``min(K, i) / (K·i)`` for ranks i = 1..n (1-based)."""
    i = np.arange(1, n + 1, dtype=np.float64)
    return np.minimum(k, i) / (k * i)


def _values_sorted(match: np.ndarray, k: int, n_total: int, truncated: bool) -> np.ndarray:
    """Per-rank values (T, n) from ``match`` (T, n): 1 where the rank-i point has the test label."""
    T, n = match.shape
    m = match.astype(np.float64)
    last = np.zeros(T) if truncated else m[:, -1] / max(n_total, k)
    coef = recursion_coefficients(n - 1, k) if n > 1 else np.zeros(0)
    step = (m[:, :-1] - m[:, 1:]) * coef               # rank i contributes to every rank <= i
    s = np.empty((T, n))
    s[:, -1] = last
    s[:, :-1] = last[:, None] + np.cumsum(step[:, ::-1], axis=1)[:, ::-1]
    return s


#: distance-matrix entries per block of test points in the exact computation (each of a block's
#: few (T_block, N) float64 arrays is then 80 MB; one block per thread is in the works at once)
BLOCK_ENTRIES = 10_000_000


def knn_shapley(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                k: int = 5, *, epsilon: float | None = None, per_test: bool = False,
                block: int | None = None, threads: int | None = None) -> np.ndarray:
    """KNN-Shapley values (N,) of the training points (L2 distance; normalise for cosine).

    Args:
        k: neighbours of the KNN classifier.
        epsilon: None for exact values (O(N_test·N log N)); else the truncated ε-approximation.
        per_test: also return the (N_test, N) matrix of per-test-point values (exact, small only).
        block: test points per vectorised block (default: :data:`BLOCK_ENTRIES` distances).
        threads: blocks ranked at once (exact values), each on its own thread: numpy's sorts
            release the GIL, and sorting is most of the work. Default :func:`default_threads`.
            The values do not depend on it: blocks are added up in block order either way.

    Returns:
        φ (N,), or (φ, per-test matrix) when ``per_test``.
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidParameterError(f"knn-shapley: k must be an int >= 1; got {k!r}")
    if epsilon is not None and not 0 < epsilon <= 1:
        raise InvalidParameterError(f"knn-shapley: epsilon must lie in (0, 1]; got {epsilon!r}")
    if epsilon is not None and per_test:
        raise InvalidParameterError("knn-shapley: per_test returns the exact per-test-point matrix; "
                                    "use epsilon=None with it")
    Xtr = np.ascontiguousarray(X_train, dtype=np.float32)
    Xte = np.ascontiguousarray(X_test, dtype=np.float32)
    ytr, yte = np.asarray(y_train), np.asarray(y_test)
    N, T = len(Xtr), len(Xte)
    phi = np.zeros(N)
    if N == 0 or T == 0:
        return (phi, np.zeros((T, N))) if per_test else phi
    if epsilon is not None:
        return truncated_knn_shapley(Xtr, ytr, Xte, yte, k, epsilon)[0]
    full = np.zeros((T, N)) if per_test else None
    threads = max(1, threads or default_threads())
    block = block or max(1, int(BLOCK_ENTRIES // N))  # not by thread count: the same sums either way
    sq = (Xtr.astype(np.float64) ** 2).sum(1)
    Xtr64 = Xtr.astype(np.float64)

    def one_block(a: int) -> np.ndarray:
        xt = Xte[a : a + block].astype(np.float64)
        dist = sq[None, :] - 2.0 * xt @ Xtr64.T   # ‖x_t‖² is constant per row
        order = np.argsort(dist, axis=1)  # introsort: ~3x faster than a stable sort on wide rows
        ranked = np.take_along_axis(dist, order, axis=1)
        tied = np.flatnonzero((np.diff(ranked, axis=1) == 0).any(axis=1))
        if len(tied):  # rows with equal distances: break ties by training order, as the spec asks
            order[tied] = np.argsort(dist[tied], axis=1, kind="stable")
        s = _values_sorted(ytr[order] == yte[a : a + block, None], k, N, truncated=False)
        if full is not None:
            np.put_along_axis(full[a : a + block], order, s, axis=1)
        return np.bincount(order.ravel(), weights=s.ravel(), minlength=N)

    for part in _in_order(one_block, range(0, T, block), threads):
        phi += part
    phi /= T
    return (phi, full) if per_test else phi


def _in_order(func, args, threads: int):
    """``map(func, args)`` on ``threads`` threads, results in order; at most ``threads + 1``
    calls submitted ahead of the consumer, so finished results never pile up."""
    if threads <= 1 or len(args) <= 1:
        yield from map(func, args)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="knn-shapley") as pool:
        pending: deque = deque()
        try:
            for a in args:
                pending.append(pool.submit(func, a))
                if len(pending) > threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def default_threads() -> int:
    """Threads for exact KNN-Shapley: ``$OMP_NUM_THREADS`` where it is set (Ray sets it to a
    task's CPUs, so a task does not take the whole node), else the CPUs this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


#: training rows per shard of the truncated search (256 MiB of 256-dimensional float32 vectors)
SHARD_ROWS = 262_144


def truncation_rank(n: int, k: int, epsilon: float) -> int:
    """K* = max(K, ⌈1/ε⌉), at most the number of training points."""
    return min(n, max(k, math.ceil(1 / epsilon)))


def shard_neighbours(X_shard: np.ndarray, offset: int, X_test: np.ndarray,
                     kstar: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared L2 distances and training indices (``offset`` + row in the shard), each (T, K'),
    K' = min(K*, shard rows), of each test point's nearest rows of one shard (exact, faiss)."""
    import faiss

    index = faiss.IndexFlatL2(X_shard.shape[1])
    index.add(np.ascontiguousarray(X_shard, dtype=np.float32))
    dist, nn = index.search(np.ascontiguousarray(X_test, dtype=np.float32), min(kstar, len(X_shard)))
    return dist, nn + offset


def merge_neighbours(parts: list[tuple[np.ndarray, np.ndarray]], kstar: int) -> np.ndarray:
    """Indices (T, K*) of each test point's K* nearest training points, from the shards' nearest
    (:func:`shard_neighbours`): ascending distance, equal distances in training order."""
    dist = np.concatenate([d for d, _ in parts], axis=1)
    idx = np.concatenate([i for _, i in parts], axis=1)
    order = np.lexsort((idx, dist), axis=1)[:, :kstar]
    return np.take_along_axis(idx, order, axis=1)


def _neighbour_shard(args: tuple) -> tuple[np.ndarray, np.ndarray]:
    X_shard, offset, X_test, kstar = args
    return shard_neighbours(X_shard, offset, X_test, kstar)


def truncated_knn_shapley(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                          k: int, epsilon: float, *, map_fn=None) -> tuple[np.ndarray, int]:
    """(truncated values (N,), number of shards): the training rows cut into shards of
    :data:`SHARD_ROWS`, each shard's nearest rows found by ``map_fn(func, args)`` (default: one
    after another here; the flow passes Ray tasks), merged into every test point's K*."""
    n = len(X_train)
    kstar = truncation_rank(n, k, epsilon)
    shards = [(X_train[a : a + SHARD_ROWS], a, X_test, kstar) for a in range(0, n, SHARD_ROWS)]
    found = map_fn(_neighbour_shard, shards) if map_fn is not None else [_neighbour_shard(a) for a in shards]
    return truncated_values(merge_neighbours(found, kstar), y_train, y_test, k, n), len(shards)


def truncated_values(nn: np.ndarray, y_train: np.ndarray, y_test: np.ndarray, k: int, n: int) -> np.ndarray:
    """Truncated KNN-Shapley values (n,) from each test point's K* nearest (``nn``, (T, K*))."""
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    s = _values_sorted(y_train[nn] == y_test[:, None], k, n, truncated=nn.shape[1] < n)
    return np.bincount(nn.ravel(), weights=s.ravel(), minlength=n) / len(nn)
