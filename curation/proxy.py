"""A proxy model on embeddings with exact second-order information: L2-regularised softmax regression.

The influence scorer needs the gradient of every item's loss and inverse-Hessian-vector
products; scikit-learn's ``LogisticRegression`` exposes neither, so this is a small numpy model
whose objective is written out and whose Hessian is applied exactly:

    L(W) = (1/n) Σ_i −log softmax(W x̃_i)[y_i] + (l2/2)·‖W‖²,   x̃ = [x, 1],  W ∈ R^{C×(d+1)}

* per-item gradient ``g_i = (p_i − e_{y_i}) ⊗ x̃_i`` (p_i the predicted class probabilities);
* Hessian-vector product ``H·V = (1/n) Σ_i ((p_i ⊙ a_i) − p_i (p_iᵀ a_i)) ⊗ x̃_i + l2·V`` with
  ``a_i = V x̃_i``: two matrix products over the training rows, never the (C·D)² matrix;
* ``solve(B) = H⁻¹ B``: a dense Cholesky solve when C·(d+1) is small, otherwise conjugate
  gradients with a Jacobi preconditioner, run to a relative residual of ``tol`` (exact up to
  that tolerance; H is positive definite because l2 > 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curation.exceptions import InvalidParameterError

DENSE_MAX_PARAMS = 2000  # above this many parameters H is never formed


def _augment(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return np.hstack([X, np.ones((len(X), 1))])


def _softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z


class SoftmaxRegression:
    """Multinomial logistic regression with exact gradients, HVPs and inverse-HVPs.

    Args:
        l2: the ridge weight (> 0; it also makes H invertible).
        max_iter: L-BFGS iterations for the fit.
        tol: relative residual at which the conjugate-gradient solve stops.

    After :meth:`fit`: ``W_`` (C, d+1), ``n_classes_``, ``fit_info_`` (iterations, loss).
    """

    def __init__(self, l2: float = 1e-3, *, max_iter: int = 500, tol: float = 1e-6) -> None:
        if not l2 > 0:
            raise InvalidParameterError(f"l2 must be > 0 (it makes the Hessian invertible); got {l2!r}")
        self.l2, self.max_iter, self.tol = float(l2), max_iter, tol

    # ---------------------------------------------------------------------------------- fitting
    def fit(self, X: np.ndarray, y: np.ndarray, n_classes: int) -> SoftmaxRegression:
        """Fit on rows ``X`` (n, d) with integer labels ``y`` in ``[0, n_classes)``."""
        self._Xa = _augment(X)
        self._y = np.asarray(y, dtype=np.int64)
        self.n_classes_ = int(n_classes)
        n, D = self._Xa.shape
        Y = np.zeros((n, self.n_classes_))
        Y[np.arange(n), self._y] = 1.0

        def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
            W = w.reshape(self.n_classes_, D)
            Z = self._Xa @ W.T
            Z -= Z.max(axis=1, keepdims=True)
            logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
            loss = -logp[np.arange(n), self._y].mean() + 0.5 * self.l2 * float(w @ w)
            G = (np.exp(logp) - Y).T @ self._Xa / n + self.l2 * W
            return loss, G.ravel()

        from scipy.optimize import minimize  # here: scipy's import is 0.3 s of every build's start

        res = minimize(fun, np.zeros(self.n_classes_ * D), jac=True, method="L-BFGS-B",
                       options={"maxiter": self.max_iter, "gtol": 1e-10, "ftol": 1e-14})
        self.W_ = res.x.reshape(self.n_classes_, D)
        self._P = self.proba(X)
        self.fit_info_ = {"train_rows": n, "classes": self.n_classes_, "params": int(self.W_.size),
                          "lbfgs_iterations": int(res.nit), "train_loss": float(res.fun)}
        return self

    def proba(self, X: np.ndarray) -> np.ndarray:
        return _softmax(_augment(X) @ self.W_.T)

    def residuals(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``p_i − e_{y_i}`` (n, C): item i's loss gradient is this row ⊗ x̃_i."""
        R = self.proba(X)
        R[np.arange(len(R)), np.asarray(y, dtype=np.int64)] -= 1.0
        return R

    def mean_loss_grad(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient (C, d+1) of the mean unregularised loss over rows ``X`` (e.g. a reference set)."""
        return self.residuals(X, y).T @ _augment(X) / len(X)

    def loss(self, X: np.ndarray, y: np.ndarray) -> float:
        P = self.proba(X)
        return float(-np.log(np.clip(P[np.arange(len(P)), np.asarray(y, dtype=np.int64)], 1e-300, None)).mean())

    def item_dot(self, X: np.ndarray, y: np.ndarray, V: np.ndarray) -> np.ndarray:
        """``⟨g_i, V⟩`` for each row, in O(C·d) per row: ``Σ_c (p_ic − y_ic)·(V x̃_i)_c``."""
        return np.einsum("ic,ic->i", self.residuals(X, y), _augment(X) @ V.T)

    # --------------------------------------------------------------------------------- Hessian
    def hvp(self, V: np.ndarray) -> np.ndarray:
        """``H·V`` at the fitted W on the training rows (V has W's shape)."""
        A = self._Xa @ V.T                                     # (n, C): a_i = V x̃_i
        B = self._P * A
        B -= self._P * B.sum(axis=1, keepdims=True)            # (diag p − p pᵀ) a_i
        return B.T @ self._Xa / len(self._Xa) + self.l2 * V

    def hessian(self) -> np.ndarray:
        """The dense (C·D, C·D) Hessian in row-major (class, feature) order. Small models only."""
        C, D = self.W_.shape
        H = np.zeros((C * D, C * D))
        for c in range(C):
            for j in range(D):
                E = np.zeros((C, D))
                E[c, j] = 1.0
                H[:, c * D + j] = self.hvp(E).ravel()
        return H

    def solve(self, B: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """``H⁻¹ B`` and facts about the solve (method, iterations, relative residual)."""
        if self.W_.size <= DENSE_MAX_PARAMS:
            H = self.hessian()
            X = np.linalg.solve(H, B.ravel()).reshape(B.shape)
            res = np.linalg.norm(H @ X.ravel() - B.ravel()) / max(np.linalg.norm(B), 1e-300)
            return X, {"method": "dense", "iterations": 0, "relative_residual": float(res)}
        return self._pcg(B)

    def _pcg(self, B: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        # Jacobi preconditioner: diag(H)_{c,j} = (1/n) Σ_i p_ic (1 − p_ic) x̃_ij² + l2. Rare classes
        # have almost no curvature beyond l2, so the diagonal spans orders of magnitude.
        diag = (self._P * (1 - self._P)).T @ (self._Xa**2) / len(self._Xa) + self.l2
        X = np.zeros_like(B)
        R = B.copy()
        Z = R / diag
        Pd = Z.copy()
        rz = float((R * Z).sum())
        bnorm = max(float(np.linalg.norm(B)), 1e-300)
        it, rel = 0, float(np.linalg.norm(R)) / bnorm
        max_iter = 10 * B.size
        while rel > self.tol and it < max_iter:
            HP = self.hvp(Pd)
            step = rz / float((Pd * HP).sum())
            X += step * Pd
            R -= step * HP
            Z = R / diag
            rz_new = float((R * Z).sum())
            Pd = Z + (rz_new / rz) * Pd
            rz = rz_new
            it += 1
            rel = float(np.linalg.norm(R)) / bnorm
        return X, {"method": "pcg", "iterations": it, "relative_residual": rel}
