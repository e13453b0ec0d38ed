"""Vendi score: the reference values of docs/metrics.md#vendi-score."""

from __future__ import annotations

import numpy as np
import pytest

from curation.metrics import vendi_from_kernel, vendi_score


def test_readme_kernel_example():
    K = np.array([[1, 0.9, 0], [0.9, 1, 0], [0, 0, 1]])
    assert vendi_from_kernel(K) == pytest.approx(2.1573, abs=1e-4)


def test_exponential_kernel_example():
    x = np.array([0, 0, 10, 10, 20, 20.0])
    K = np.exp(-np.abs(x[:, None] - x[None]))
    assert vendi_from_kernel(K) == pytest.approx(3.0, abs=1e-3)


def test_duplicate_blocks_give_exp_entropy():
    sizes = [1, 2, 3]
    labels = np.repeat(np.arange(3), sizes)
    K = (labels[:, None] == labels[None]).astype(float)
    p = np.array(sizes) / 6
    assert vendi_from_kernel(K) == pytest.approx(np.exp(-(p * np.log(p)).sum()), abs=1e-9)
    assert vendi_from_kernel(K) == pytest.approx(2.749459, abs=1e-6)


def test_bounds_identity_and_ones():
    assert vendi_from_kernel(np.eye(5)) == pytest.approx(5)
    assert vendi_from_kernel(np.ones((5, 5))) == pytest.approx(1)


def test_order_is_non_increasing_and_dual_form_matches():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 8))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    qs = [0.1, 0.5, 1, 2, 10, np.inf]
    vals = [vendi_score(X, q) for q in qs]
    assert all(a >= b - 1e-9 for a, b in zip(vals, vals[1:]))
    for q in qs:
        assert vendi_score(X, q) == pytest.approx(vendi_from_kernel(X @ X.T, q), rel=1e-9)


def test_duplicating_every_item_leaves_it_unchanged():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 30))
    assert vendi_score(np.repeat(X, 3, axis=0)) == pytest.approx(vendi_score(X), rel=1e-9)


@pytest.mark.parametrize("q", [1.0, np.inf])  # the orders the summary reports
def test_vendi_agrees_with_the_vendi_score_package_dual_form(q):
    from vendi_score import vendi

    rng = np.random.default_rng(4)
    X = np.concatenate([rng.normal(size=(300, 16)), rng.normal(loc=3.0, size=(200, 16))])
    theirs = vendi.score_dual(X, q="inf" if np.isinf(q) else q)  # the package spells order infinity "inf"
    assert vendi_score(X, q) == pytest.approx(float(theirs), rel=1e-9)


def test_selection_metrics_compare_with_a_same_size_random_draw():
    from curation.metrics import selection_metrics

    rng = np.random.default_rng(0)
    centers = np.eye(8) * 10
    X = np.concatenate([centers[i] + rng.normal(size=(400 if i == 0 else 20, 8)) for i in range(8)])
    spread = np.zeros(len(X), bool)
    spread[[400 + 20 * j + i for j in range(7) for i in range(5)] + list(range(5))] = True  # 5 of every cluster
    m = selection_metrics(X, spread, np.random.default_rng(1))
    # a random draw is mostly from the big cluster; five of every cluster is far more diverse
    assert m["rows"] == 40 and m["vendi_1"] > 6 and m["random_vendi_1"] < 4 and m["vendi_ratio"] > 1.5
    assert m["vendi_inf"] <= m["vendi_1"]
    assert selection_metrics(X, spread, np.random.default_rng(1)) == m  # seeded


def test_the_map_is_the_first_two_principal_axes_with_fixed_signs():
    from curation.metrics import projection_2d

    rng = np.random.default_rng(2)
    X = rng.normal(size=(500, 5)) * np.array([10.0, 3.0, 1.0, 0.5, 0.1])
    xy = projection_2d(X)
    assert xy.shape == (500, 2) and xy.dtype == np.float32
    # the axes are the two largest-variance directions (here the first two coordinates)
    assert abs(np.corrcoef(xy[:, 0], X[:, 0])[0, 1]) > 0.99 and abs(np.corrcoef(xy[:, 1], X[:, 1])[0, 1]) > 0.99
    assert np.array_equal(projection_2d(-X * 1.0), projection_2d(-X))  # deterministic


def test_the_map_fitted_on_spaced_rows_matches_the_full_fit_and_is_exact_below_fit_rows():
    from curation.metrics import projection_2d

    rng = np.random.default_rng(3)
    X = rng.normal(size=(20_000, 8)) * np.array([10.0, 3.0, 1.0, 1.0, 0.5, 0.5, 0.1, 0.1])
    full = projection_2d(X, block=1_000, fit_rows=20_000)  # every row fitted
    spaced = projection_2d(X, block=1_000, fit_rows=2_000)  # every 10th row fitted, every row mapped
    assert spaced.shape == full.shape and not np.array_equal(spaced, full)
    for axis in (0, 1):  # the same axes, signs included
        assert np.corrcoef(spaced[:, axis], full[:, axis])[0, 1] > 0.999
    assert np.array_equal(projection_2d(X[:2_000], block=1_000, fit_rows=2_000),
                          projection_2d(X[:2_000], block=1_000))  # nothing spaced out below fit_rows
