"""The proxy learner whose per-group errors the equitable allocation plans against.

A logistic regression on the pool's embeddings, trained on the rows an allocation would buy,
scored on held-out rows of every group: ``errors(rows)`` is one point of every group's learning
curve (docs/methods/group-adaptive.md#the-proxy-learner).

Group-aware (the default): each row's features are its vector followed by the one-hot code of
its group, so the model has one intercept per group. A group-unaware proxy has to fit every
group with one intercept, and a group whose labels sit differently on the same features then
shows a flat learning curve however much of it is bought.

The proxy should be the model the data is for: ``learner`` (a ``python:module:factory`` hook
returning an unfitted estimator with ``fit(X, y)`` and ``predict(X)``, e.g.
``python:sklearn.svm:LinearSVC``) replaces the logistic regression, trained on the same
features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from curation.exceptions import DataError, InvalidParameterError
from curation.registry import load_python_spec
from curation.types import Pool


def load_learner(spec: str | None) -> Callable[[], Any] | None:
    """The estimator factory a ``select.learner`` spec names (None: the built-in logistic regression).

    Raises:
        InvalidParameterError: the spec is malformed, cannot be imported, or is not callable.
    """
    if spec is None:
        return None
    factory = load_python_spec(spec, field="select.learner")
    if not callable(factory):
        raise InvalidParameterError(f"select.learner={spec!r} names {type(factory).__name__} {factory!r}, not a "
                                    "function or class that returns an estimator with fit and predict")
    return factory


class ProxyLearner:
    """Per-group validation error of a logistic regression trained on chosen pool rows.

    The validation rows are the pool's ``reference`` set or, without one, ``held`` pool rows.
    ``learner``: a ``python:module:factory`` spec whose estimator replaces the logistic
    regression (``C`` is then unused).
    """

    def __init__(self, pool: Pool, C: float = 1.0, held: np.ndarray | None = None, *,
                 group_features: bool = True, learner: str | None = None) -> None:
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
        self.learner, self._factory = learner, load_learner(learner)
        self.X, self.groups = pool.embeddings, pool.groups
        self.X_ref, self.ref_groups = self._features(X_ref, ref_groups), ref_groups
        known = (ref_groups >= 0) & (ref_groups < self.G)
        self.ref_counts = np.bincount(ref_groups[known], minlength=self.G)  # held-out rows per group
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
            model = (LogisticRegression(C=self.C, max_iter=200, tol=1e-3) if self._factory is None
                     else self._factory())
            if not (callable(getattr(model, "fit", None)) and callable(getattr(model, "predict", None))):
                raise InvalidParameterError(f"select.learner={self.learner!r} returned {type(model).__name__}, "
                                            "not an estimator with fit(X, y) and predict(X)")
            model.fit(self._features(self.X[rows], self.groups[rows]), y)
            pred = np.asarray(model.predict(self.X_ref))
            self.fits += 1
        wrong = (pred != self.y_ref).astype(float)
        out = np.full(self.G, np.nan)
        for g in range(self.G):
            m = self.ref_groups == g
            if m.any():
                out[g] = wrong[m].mean()
        return out
