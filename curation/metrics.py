"""Diversity metrics for selection reports: the Vendi score (Friedman & Dieng 2022).

For an n x n positive semi-definite similarity matrix K with k(x, x) = 1 and the eigenvalues
λ_i of K/n:

    VS_q(K) = exp( log(Σ λ_i^q) / (1 - q) )      q ≠ 1
    VS_1(K) = exp( - Σ λ_i log λ_i )             the exponential of the von Neumann entropy
    VS_∞(K) = 1 / max λ_i,   VS_0 = number of positive eigenvalues

It is the effective number of distinct items: 1 <= VS <= n, VS(I) = n, VS(all ones) = 1.
For unit-norm embeddings X (n x d) with the cosine kernel K = X Xᵀ the nonzero spectrum of
K/n equals that of XᵀX/n, so :func:`vendi_score` costs O(n d² + d³) instead of O(n³).
"""

from __future__ import annotations

import numpy as np


def vendi_from_eigenvalues(lam: np.ndarray, q: float = 1.0) -> float:
    lam = np.asarray(lam, dtype=np.float64)
    lam = lam[lam > 1e-12]  # numerical zeros (and tiny negatives) carry no mass
    if q == 0:
        return float(len(lam))
    if q == 1:
        return float(np.exp(-np.sum(lam * np.log(lam))))
    if np.isinf(q):
        return float(1.0 / lam.max())
    return float(np.exp(np.log(np.sum(lam**q)) / (1 - q)))


def vendi_from_kernel(K: np.ndarray, q: float = 1.0) -> float:
    """Vendi score of a similarity matrix (diagonal 1)."""
    K = np.asarray(K, dtype=np.float64)
    return vendi_from_eigenvalues(np.linalg.eigvalsh(K / len(K)), q)


def vendi_score(X: np.ndarray, q: float = 1.0) -> float:
    """Vendi score of row vectors under the cosine kernel (rows are L2-normalised here).

    >>> round(vendi_score(np.eye(4)), 6)
    4.0
    """
    X = np.asarray(X, dtype=np.float64)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    n, d = X.shape
    if d < n:
        return vendi_from_eigenvalues(np.linalg.eigvalsh(X.T @ X / n), q)
    return vendi_from_kernel(X @ X.T, q)
