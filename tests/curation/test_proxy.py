"""The softmax-regression proxy: exact gradients, Hessian-vector products and iHVP solves."""

from __future__ import annotations

import numpy as np
import pytest

from curation.exceptions import InvalidParameterError
from curation.proxy import SoftmaxRegression


def blobs(rng, n, d=5, C=3, sep=1.5):
    mu = rng.normal(size=(C, d)) * sep
    y = rng.integers(0, C, n)
    return mu[y] + rng.normal(size=(n, d)), y, mu


def test_fit_reaches_a_stationary_point(seed):
    rng = np.random.default_rng(seed)
    X, y, _ = blobs(rng, 200)
    m = SoftmaxRegression(1e-2).fit(X, y, 3)
    grad = m.mean_loss_grad(X, y) + m.l2 * m.W_  # the regularised training gradient
    assert np.abs(grad).max() < 1e-5


def test_hvp_matches_finite_differences_of_the_gradient(seed):
    rng = np.random.default_rng(seed)
    X, y, _ = blobs(rng, 150)
    m = SoftmaxRegression(1e-2).fit(X, y, 3)
    V = rng.normal(size=m.W_.shape)
    h = 1e-5

    def grad_at(W):
        m2 = SoftmaxRegression(m.l2)
        m2.W_ = W
        return m2.mean_loss_grad(X, y) + m.l2 * W

    fd = (grad_at(m.W_ + h * V) - grad_at(m.W_ - h * V)) / (2 * h)
    np.testing.assert_allclose(m.hvp(V), fd, rtol=1e-4, atol=1e-7)


def test_dense_and_conjugate_gradient_solves_agree(seed):
    rng = np.random.default_rng(seed)
    X, y, _ = blobs(rng, 300, d=6, C=4)
    m = SoftmaxRegression(1e-3, tol=1e-12).fit(X, y, 4)
    B = rng.normal(size=m.W_.shape)
    dense, info = m.solve(B)
    assert info["method"] == "dense"
    cg, cg_info = m._pcg(B)
    assert cg_info["relative_residual"] <= 1e-12
    np.testing.assert_allclose(cg, dense, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(m.hvp(dense), B, atol=1e-9)


def test_influence_predicts_leave_one_out_retraining():
    """score(z)/n ≈ the rise in reference loss when z is removed and the model refitted."""
    rng = np.random.default_rng(0)
    X, y, mu = blobs(rng, 300, d=6)
    y[:15] = (y[:15] + 1) % 3  # some harmful, mislabelled rows
    yr = rng.integers(0, 3, 200)
    Xr = mu[yr] + rng.normal(size=(200, 6))
    m = SoftmaxRegression(1e-2, tol=1e-12).fit(X, y, 3)
    v, _ = m.solve(m.mean_loss_grad(Xr, yr))
    score = m.item_dot(X, y, v)
    base = m.loss(Xr, yr)
    rows = np.r_[0:15, 100:115]
    actual = np.array([SoftmaxRegression(1e-2).fit(np.delete(X, i, 0), np.delete(y, i), 3).loss(Xr, yr) - base
                       for i in rows])
    predicted = score[rows] / len(X)
    assert np.corrcoef(actual, predicted)[0, 1] > 0.98
    assert score[:15].mean() < 0 < score[100:115].mean()  # mislabelled rows hurt the reference loss


def test_rejects_zero_l2():
    with pytest.raises(InvalidParameterError, match="l2"):
        SoftmaxRegression(0.0)
