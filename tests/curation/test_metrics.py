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
