"""KNN-Shapley against brute force and the invariants in docs/methods/valuation.md#knn-shapley."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from curation.exceptions import InvalidParameterError
from curation.value import knn_shapley


def brute_force(Xtr, ytr, xt, yt, K):
    """Shapley values of U_t by enumerating every coalition."""
    N = len(Xtr)
    rank = np.empty(N, int)
    rank[np.argsort(((Xtr - xt) ** 2).sum(1), kind="stable")] = np.arange(N)

    def U(S):
        return sum(ytr[i] == yt for i in sorted(S, key=lambda i: rank[i])[:K]) / K

    phi = np.zeros(N)
    for i in range(N):
        others = [j for j in range(N) if j != i]
        for r in range(N):
            w = math.factorial(r) * math.factorial(N - r - 1) / math.factorial(N)
            for S in itertools.combinations(others, r):
                phi[i] += w * (U([*S, i]) - U(list(S)))
    return phi


def test_recursion_equals_brute_force_on_30_random_cases():
    rng = np.random.default_rng(7)
    for _ in range(30):
        N, K = int(rng.integers(1, 8)), int(rng.integers(1, 5))  # includes N < K (the max(N, K) base case)
        Xtr, ytr = rng.normal(size=(N, 2)), rng.integers(0, 2, N)
        xt, yt = rng.normal(size=(1, 2)), rng.integers(0, 2, 1)
        np.testing.assert_allclose(knn_shapley(Xtr, ytr, xt, yt, K), brute_force(Xtr, ytr, xt[0], yt[0], K), atol=1e-12)


def test_efficiency_per_test_point(seed):
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(60, 3)), rng.integers(0, 3, 60)
    Xt, yt = rng.normal(size=(9, 3)), rng.integers(0, 3, 9)
    K = 4
    phi, per = knn_shapley(X, y, Xt, yt, K, per_test=True)
    d = ((Xt[:, None, :] - X[None]) ** 2).sum(-1)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :K]
    utility = (y[nearest] == yt[:, None]).sum(1) / K  # U_t(D)
    np.testing.assert_allclose(per.sum(1), utility, atol=1e-12)
    assert phi.sum() == pytest.approx(utility.mean())


def test_tail_bound_and_truncation_within_epsilon(seed):
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(800, 4)).astype(np.float32), rng.integers(0, 2, 800)
    Xt, yt = rng.normal(size=(40, 4)).astype(np.float32), rng.integers(0, 2, 40)
    K = 3
    phi, per = knn_shapley(X, y, Xt, yt, K, per_test=True)
    order = np.argsort(((Xt[:, None, :] - X[None]) ** 2).sum(-1), axis=1, kind="stable")
    ranked = np.take_along_axis(per, order, axis=1)
    ranks = np.arange(1, 801)
    assert (np.abs(ranked[:, K:]) <= 1 / ranks[K:] + 1e-12).all()
    for eps in (0.1, 0.02):
        approx = knn_shapley(X, y, Xt, yt, K, epsilon=eps)
        assert np.abs(approx - phi).max() <= eps


def test_label_flip_lowers_value_by_one_over_max_k_i():
    rng = np.random.default_rng(3)
    X, xt, K = rng.normal(size=(12, 2)), rng.normal(size=(1, 2)), 4
    order = np.argsort(((X - xt) ** 2).sum(1), kind="stable")
    y = np.ones(12, int)
    base = knn_shapley(X, y, xt, np.array([1]), K)
    for i in (1, 3, 6, 11):  # 1-based ranks
        flipped = y.copy()
        flipped[order[i - 1]] = 0
        after = knn_shapley(X, flipped, xt, np.array([1]), K)
        assert base[order[i - 1]] - after[order[i - 1]] == pytest.approx(1 / max(K, i))
        np.testing.assert_allclose(after[order[i:]], base[order[i:]], atol=1e-15)  # farther points unchanged
    assert base[order[0]] == base.max()


def test_permutation_invariance_and_determinism(seed):
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(50, 3)), rng.integers(0, 2, 50)
    Xt, yt = rng.normal(size=(5, 3)), rng.integers(0, 2, 5)
    phi = knn_shapley(X, y, Xt, yt, 3)
    perm = rng.permutation(50)
    np.testing.assert_allclose(knn_shapley(X[perm], y[perm], Xt, yt, 3), phi[perm], atol=1e-12)
    np.testing.assert_array_equal(knn_shapley(X, y, Xt, yt, 3, epsilon=0.1), knn_shapley(X, y, Xt, yt, 3, epsilon=0.1))


def test_bad_parameters_are_named():
    X, y = np.zeros((3, 2)), np.zeros(3)
    with pytest.raises(InvalidParameterError, match="k must be"):
        knn_shapley(X, y, X, y, 0)
    with pytest.raises(InvalidParameterError, match="epsilon"):
        knn_shapley(X, y, X, y, 1, epsilon=2.0)


def test_exact_values_are_the_same_bits_on_one_thread_or_several_and_with_ties():
    rng = np.random.default_rng(3)
    X = rng.integers(0, 4, size=(400, 2)).astype(np.float32)  # many equal distances
    y, Xt, yt = rng.integers(0, 3, 400), rng.normal(size=(97, 2)) * 2, rng.integers(0, 3, 97)
    one = knn_shapley(X, y, Xt, yt, 5, block=7, threads=1)
    np.testing.assert_array_equal(knn_shapley(X, y, Xt, yt, 5, block=7, threads=3), one)
    phi, full = knn_shapley(X, y, Xt, yt, 5, block=7, threads=2, per_test=True)
    np.testing.assert_array_equal(phi, one)
    np.testing.assert_allclose(full.mean(axis=0), one, atol=1e-15)
    np.testing.assert_array_equal(knn_shapley(X, y, Xt, yt, 5, threads=1), knn_shapley(X, y, Xt, yt, 5, threads=2))


def test_threaded_blocks_come_back_in_order_with_at_most_threads_plus_one_started_ahead():
    import threading

    from curation.value.knn_shapley import _in_order

    started, lock = [0], threading.Lock()

    def square(a):
        with lock:
            started[0] += 1
        return a * a

    got, ahead = [], []
    for v in _in_order(square, range(50), 3):
        with lock:
            ahead.append(started[0] - len(got))  # started but not yet handed to the consumer
        got.append(v)
    assert got == [a * a for a in range(50)]
    assert max(ahead) <= 4
