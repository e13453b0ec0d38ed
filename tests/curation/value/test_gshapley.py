"""G-Shapley (docs/methods/valuation.md#g-shapley): the vectorised SGD against a plain loop, label noise, seeds, resume."""

from __future__ import annotations

import numpy as np
import pytest

from curation.exceptions import DataError, InvalidParameterError
from curation.value.gshapley import LR_GRID, g_shapley, search_lr


def blobs(n: int, n_val: int, rng: np.random.Generator, n_classes: int = 2, d: int = 4):
    """Gaussian blobs (one centre per class), split into (X, y, X_val, y_val)."""
    centres = 2.0 * rng.normal(size=(n_classes, d))
    y = rng.integers(0, n_classes, n + n_val)
    X = centres[y] + rng.normal(size=(n + n_val, d))
    return X[:n], y[:n], X[n:], y[n:]


def naive_marginals(X, y, Xv, yv, perm, lr):
    """One epoch of batch-size-1 softmax SGD from zero, one point at a time, V after each step."""
    classes = np.unique(np.concatenate([y, yv]))
    C = len(classes)
    Xa = np.hstack([X, np.ones((len(X), 1))])
    Xva = np.hstack([Xv, np.ones((len(Xv), 1))])
    W = np.zeros((Xa.shape[1], C))
    prev = np.bincount(np.searchsorted(classes, yv)).max() / len(yv)  # V(θ_0): majority-class frequency
    out = np.zeros(len(X))
    for i in perm:
        z = Xa[i] @ W
        p = np.exp(z - z.max())
        p /= p.sum()
        p[np.searchsorted(classes, y[i])] -= 1
        W -= lr * np.outer(Xa[i], p)
        if C == 2:  # sigmoid of (w1 − w0)·x: the binary model in softmax form
            pred = classes[(Xva @ (W[:, 1] - W[:, 0]) > 0).astype(int)]
        else:
            pred = classes[(Xva @ W).argmax(1)]
        acc = np.mean(pred == yv)
        out[i] = acc - prev
        prev = acc
    return out


def first_permutation(seed: int, n: int) -> np.ndarray:
    """The order g_shapley draws first for rng=default_rng(seed) when lr is given (no search)."""
    child = np.random.default_rng(seed).bit_generator.seed_seq.spawn(1)[0]
    return np.random.default_rng(child).permutation(n)


@pytest.mark.parametrize("n_classes", [3, 2])
def test_one_permutation_equals_a_plain_sgd_loop(seed, n_classes):
    rng = np.random.default_rng(seed)
    X, y, Xv, yv = blobs(40, 30, rng, n_classes)
    y, yv = y + 5, yv + 5  # arbitrary label values
    lr = 0.05
    got = g_shapley(X, y, Xv, yv, max_permutations=1, lr=lr, rng=np.random.default_rng(seed))
    perm = first_permutation(seed, len(X))
    if n_classes == 2:
        # The binary model is one weight vector with gradient (σ(z) − y)·x; softmax SGD on two classes
        # moves w1 − w0 by 2·lr per step, so it matches at twice the rate.
        expect = naive_marginals(X, y, Xv, yv, perm, lr / 2)
    else:
        expect = naive_marginals(X, y, Xv, yv, perm, lr)
    np.testing.assert_allclose(got.values, expect, atol=1e-12)
    assert got.values.sum() == pytest.approx(expect.sum())  # = V(θ_n) − V(θ_0)


def test_flipped_labels_are_worth_less(seed):
    rng = np.random.default_rng(seed)
    X, y, Xv, yv = blobs(150, 150, rng)
    flipped = rng.choice(150, 15, replace=False)
    y = y.copy()
    y[flipped] = 1 - y[flipped]
    result = g_shapley(X, y, Xv, yv, max_permutations=40, rng=np.random.default_rng(seed))
    clean = np.setdiff1d(np.arange(150), flipped)
    assert result.values[flipped].mean() < result.values[clean].mean()
    assert result.info["lr"] in LR_GRID and len(result.info["lr_scores"]) == 8
    assert result.counts.tolist() == [40] * 150


def test_deterministic_and_independent_of_batching(seed):
    rng = np.random.default_rng(seed)
    X, y, Xv, yv = blobs(60, 40, rng, 3)
    a = g_shapley(X, y, Xv, yv, max_permutations=9, rng=np.random.default_rng(seed))
    b = g_shapley(X, y, Xv, yv, max_permutations=9, batch=2, n_jobs=3,
                  map_fn=lambda f, xs: [f(x) for x in reversed(xs)][::-1], rng=np.random.default_rng(seed))
    c = g_shapley(X, y, Xv, yv, max_permutations=9, rng=np.random.default_rng(seed + 1))
    assert a.info["lr"] == b.info["lr"]
    np.testing.assert_allclose(a.values, b.values, atol=1e-12)
    assert not np.allclose(a.values, c.values)


def test_resume_continues_the_same_run(seed):
    rng = np.random.default_rng(seed)
    X, y, Xv, yv = blobs(50, 40, rng)
    stream = np.random.default_rng(seed)
    part = g_shapley(X, y, Xv, yv, max_permutations=4, rng=stream)
    resumed = g_shapley(X, y, Xv, yv, max_permutations=10, previous=part, rng=stream)
    whole = g_shapley(X, y, Xv, yv, max_permutations=10, rng=np.random.default_rng(seed))
    assert resumed.info["lr"] == whole.info["lr"] and resumed.info["permutations"] == 10
    np.testing.assert_allclose(resumed.values, whole.values, atol=1e-12)


def test_lr_search_prefers_a_rate_that_learns():
    rng = np.random.default_rng(0)
    X, y, Xv, yv = blobs(200, 200, rng)
    lr, scores = search_lr(X, y, Xv, yv, runs=5, rng=rng)
    assert set(scores) == set(LR_GRID) and scores[lr] == max(scores.values())
    assert scores[lr] > 0.8 and lr > 1e-4  # 1e−4.5 barely moves zero weights in one epoch


def test_bad_inputs():
    rng = np.random.default_rng(0)
    X, y, _, _ = blobs(20, 0, rng)
    with pytest.raises(InvalidParameterError, match=r"'lr' parameter of g_shapley.*Got -1 instead"):
        g_shapley(X, y, X, y, max_permutations=2, lr=-1, rng=rng)
    with pytest.raises(InvalidParameterError, match="X_val must be 2-d"):
        g_shapley(X, y, X[:, :2], y, max_permutations=2, rng=rng)
    with pytest.raises(DataError, match="single class"):
        g_shapley(X, np.zeros(20), X, np.zeros(20), max_permutations=2, rng=rng)
    with pytest.raises(InvalidParameterError, match="'max_permutations' parameter of g_shapley"):
        g_shapley(X, y, X, y, max_permutations=0, rng=rng)
