"""The proxy learner whose per-group errors the equitable allocation plans against.

A logistic regression on the pool's embeddings, trained on the rows an allocation would buy,
scored on held-out rows of every group: ``errors(rows)`` is one point of every group's learning
curve (docs/methods/group-adaptive.md#the-proxy-learner).

Group-aware (the default): each row's features are its vector followed by the one-hot code of
its group, so the model has one intercept per group. A group-unaware proxy has to fit every
group with one intercept, and a group whose labels sit differently on the same features then
shows a flat learning curve however much of it is bought.
"""

from __future__ import annotations

import numpy as np

from curation.exceptions import DataError
from curation.types import Pool


class ProxyLearner:
    """Per-group validation error of a logistic regression trained on chosen pool rows.

    The validation rows are the pool's ``reference`` set or, without one, ``held`` pool rows.
    """

    def __init__(self, pool: Pool, C: float = 1.0, held: np.ndarray | None = None, *,
                 group_features: bool = True) -> None:
        if pool.labels is None:
            raise DataError("select.method='group-adaptive' needs labels: set sources[].label in the recipe")
        ref = pool.reference
        if held is not None:
            X_ref, y_ref, ref_groups = pool.embeddings[held], np.asarray(pool.labels)[held], pool.groups[held]
        elif ref is not None and ref.labels is not None and ref.groups is not None:
            X_ref, y_ref, ref_groups = ref.embeddings, ref.labels, ref.groups
        else:
            raise DataError("select.method='group-adaptive' needs labelled reference rows with groups, or no "
                            "`reference` at all (then it holds out select.validation of the pool)")
        classes, codes = np.unique(np.concatenate([np.asarray(pool.labels).astype(str),
                                                   np.asarray(y_ref).astype(str)]), return_inverse=True)
        self.y, self.y_ref = codes[: len(pool)], codes[len(pool):]
        self.G, self.C = len(pool.group_names), C
        self.group_features = group_features
        self.X, self.groups = pool.embeddings, pool.groups
        self.X_ref, self.ref_groups = self._features(X_ref, ref_groups), ref_groups
        self.fits = 0

    def _features(self, X: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """``[X | one-hot(group)]`` when group-aware (a group code −1, unknown to the pool, is all
        zeros), else ``X``."""
        if not self.group_features:
            return X
        onehot = np.zeros((len(groups), self.G), dtype=np.float32)
        known = (groups >= 0) & (groups < self.G)
        onehot[np.flatnonzero(known), groups[known]] = 1.0
        return np.hstack([np.asarray(X, dtype=np.float32), onehot])

    def errors(self, rows: np.ndarray) -> np.ndarray:
        """(G,) error rate on each group's reference rows (NaN for a group with none)."""
        from sklearn.linear_model import LogisticRegression

        y = self.y[rows]
        if len(self.y_ref) == 0:  # nothing to measure on
            return np.full(self.G, np.nan)
        if len(rows) == 0:
            pred = np.full(len(self.y_ref), -1)
        elif len(np.unique(y)) == 1:  # one class: the model predicts it everywhere
            pred = np.full(len(self.y_ref), y[0])
        else:
            model = LogisticRegression(C=self.C, max_iter=200, tol=1e-3).fit(
                self._features(self.X[rows], self.groups[rows]), y)
            pred = model.predict(self.X_ref)
            self.fits += 1
        wrong = (pred != self.y_ref).astype(float)
        out = np.full(self.G, np.nan)
        for g in range(self.G):
            m = self.ref_groups == g
            if m.any():
                out[g] = wrong[m].mean()
        return out
