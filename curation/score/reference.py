"""Scorers that judge an item against the recipe's reference set: ``influence`` and ``knn-shapley``.

Both need ``pool.reference`` (recipe ``reference: {fraction: 0.1}`` or ``{path: ...}``) and
labels. The expensive part (fitting the proxy model / searching neighbours) happens once per
pool, on first use; :meth:`facts` reports what it cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curation.proxy import SoftmaxRegression
from curation.score.base import QualityScorer
from curation.types import Pool
from curation.validation import Interval, validate_params


class InfluenceScorer(QualityScorer, name="influence"):
    """Influence of an item on the reference loss through a softmax-regression proxy.

    A :class:`~curation.proxy.SoftmaxRegression` is fitted on ``fit_rows`` pool rows (all when
    fewer). With ``g_z`` the gradient of item z's loss and ``g_ref`` the gradient of the mean
    reference loss at the fitted weights, the score is

        s(z) = g_zᵀ (H + l2·I)⁻¹ g_ref = −dL_ref/dε

    the rate at which up-weighting z lowers the reference loss (Koh & Liang 2017; Quad's
    ``⟨g, ihvp_ref⟩`` with higher = better). Adding z to the n training rows changes the
    reference loss by about ``−s(z)/n``. The iHVP ``(H + l2·I)⁻¹ g_ref`` is solved once, exactly
    (dense or preconditioned CG to ``tol``); each item then costs O(C·d).

    Args:
        l2: ridge weight of the proxy (also the Hessian damping λ).
        fit_rows: pool rows the proxy is trained on (a seeded sample).
        tol: relative residual of the iHVP solve.
        seed: seed of the training sample (selectors pass one drawn from their rng, i.e. from
            the recipe's seed, unless the scorer spec sets it).
    """

    _constraints = {"l2": Interval(0, None, closed="neither"), "fit_rows": Interval(2, None, integer=True),
                    "tol": Interval(0, None, closed="neither"), "seed": Interval(0, None, integer=True)}

    def __init__(self, l2: float = 1e-3, fit_rows: int = 20_000, tol: float = 1e-6, seed: int = 0) -> None:
        super().__init__()
        self.l2, self.fit_rows, self.tol, self.seed = l2, fit_rows, tol, seed
        validate_params(self)
        self.l2, self.fit_rows, self.tol, self.seed = float(l2), int(fit_rows), float(tol), int(seed)
        self._pool: Pool | None = None
        self._facts: dict[str, Any] = {}

    def _prepare(self, pool: Pool) -> None:
        if self._pool is pool:
            return
        ref = pool.require_reference("quality scorer 'influence'")
        y_pool, y_ref, C = pool.encode_labels()
        rng = np.random.default_rng(self.seed)
        train = np.sort(rng.permutation(len(pool))[: self.fit_rows])
        model = SoftmaxRegression(self.l2, tol=self.tol).fit(pool.embeddings[train], y_pool[train], C)
        g_ref = model.mean_loss_grad(ref.embeddings, y_ref)
        self._v, solve = model.solve(g_ref)
        self._model, self._y, self._pool = model, y_pool, pool
        self._facts = {**model.fit_info_, "reference_rows": len(ref),
                       "reference_loss": round(model.loss(ref.embeddings, y_ref), 6), "ihvp": solve}

    def _score(self, pool: Pool, indices: np.ndarray) -> np.ndarray:
        self._prepare(pool)
        return self._model.item_dot(pool.embeddings[indices], self._y[indices], self._v)

    def facts(self) -> dict[str, Any]:
        return dict(self._facts)

    def __getstate__(self):  # the fitted state is per pool; a copy refits where it runs
        return {**self.__dict__, "_pool": None}

    def __repr__(self) -> str:
        return f"InfluenceScorer(l2={self.l2:g}, fit_rows={self.fit_rows}, seed={self.seed})"


class KnnShapleyScorer(QualityScorer, name="knn-shapley"):
    """KNN-Shapley value of an item against the reference set (:func:`curation.value.knn_shapley`).

    The value of an item is its mean Shapley contribution to a K-nearest-neighbour classifier's
    accuracy on the reference rows: positive when it is a near neighbour with the right label,
    negative when it is near and mislabelled, 0 when it is far from every reference row. Values
    for the whole pool come from one neighbour search per reference row, done on first use
    (``epsilon``: the truncated ε-approximation; ``null`` for exact values).

    Args:
        k: neighbours of the KNN classifier.
        epsilon: truncation tolerance (K* = max(k, ⌈1/ε⌉) neighbours per reference row).
    """

    _constraints = {"k": Interval(1, None, integer=True), "epsilon": Interval(0, 1, closed="right", allow_none=True)}

    def __init__(self, k: int = 5, epsilon: float | None = 0.1) -> None:
        super().__init__()
        self.k, self.epsilon = k, epsilon
        validate_params(self)
        self.k = int(k)
        self._pool: Pool | None = None
        self._facts: dict[str, Any] = {}

    def _prepare(self, pool: Pool) -> None:
        if self._pool is pool:
            return
        from curation.value import knn_shapley

        ref = pool.require_reference("quality scorer 'knn-shapley'")
        y_pool, y_ref, _ = pool.encode_labels()
        self._values = knn_shapley(pool.embeddings, y_pool, ref.embeddings, y_ref, self.k, epsilon=self.epsilon)
        self._pool = pool
        self._facts = {"reference_rows": len(ref), "k": self.k, "epsilon": self.epsilon,
                       "valued_rows": int(np.count_nonzero(self._values))}

    def _score(self, pool: Pool, indices: np.ndarray) -> np.ndarray:
        self._prepare(pool)
        return self._values[indices]

    def facts(self) -> dict[str, Any]:
        return dict(self._facts)

    def __getstate__(self):
        return {**self.__dict__, "_pool": None}

    def __repr__(self) -> str:
        return f"KnnShapleyScorer(k={self.k}, epsilon={self.epsilon})"


class ValueScorer(QualityScorer, name="value"):
    """The item's data value from the recipe's ``value:`` stage (``pool.values``), as a quality.

    Lets Quad and kMQ use Data Shapley values (KNN-, TMC-, G-Shapley, ...) as their quality.
    The values were computed for the whole pool by the value stage; this scorer only reads them.
    """

    def _score(self, pool: Pool, indices: np.ndarray) -> np.ndarray:
        return pool.require_values("quality scorer 'value'")[indices]
