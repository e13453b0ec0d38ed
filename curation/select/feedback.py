"""Feedback for iterative kMQ: how much the selection so far still has to teach, per item.

A feedback is ``f(pool, selected, rng) -> scores`` for the selected rows (higher = more to
learn). The paper (Yu et al. 2024, Eq. 4) fine-tunes the model on the selection and scores
``reward(gold) - reward(generated)``; this library ships a CPU stand-in with the same meaning
for labelled data, and a hook for your own model:

* ``proxy-loss`` (default): a logistic regression on the embeddings, trained on the selection
  so far, scores each selected item by its cross-entropy loss ``-log p(y_i | x_i)``, computed
  out of fold (``folds``-fold cross-fitting) so an item is never scored by a model that saw it;
* ``{python: "module:function"}``: your ``function(pool, selected, rng) -> scores``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from curation.exceptions import DataError
from curation.random import int_seed
from curation.registry import Registered, Registry, load_python_spec
from curation.types import Pool
from curation.validation import Interval, validate_params


class Feedback(Registered, ABC):
    """Per-item learning signal for the rows selected so far."""

    registry: ClassVar[Registry] = Registry("feedback", "curation.feedbacks", python_specs=True)

    def __call__(self, pool: Pool, selected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.asarray(self._feedback(pool, np.asarray(selected, dtype=np.int64), rng), dtype=np.float64)
        if out.shape != (len(selected),) or not np.isfinite(out).all():
            raise ValueError(f"{type(self).__name__} must return {len(selected)} finite scores; got shape {out.shape}")
        return out

    @abstractmethod
    def _feedback(self, pool: Pool, selected: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


class ProxyLossFeedback(Feedback, name="proxy-loss"):
    """Out-of-fold logistic-regression loss of each selected item against its label.

    Args:
        folds: cross-fitting folds (each item is scored by a model trained on the others).
        C: inverse L2 regularisation of the logistic regression.
    """

    _constraints = {"folds": Interval(2, None, integer=True), "C": Interval(0, None, closed="neither")}

    def __init__(self, folds: int = 3, C: float = 1.0) -> None:
        self.folds, self.C = folds, C
        validate_params(self)
        self.folds = int(folds)

    def _feedback(self, pool: Pool, selected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression

        if pool.labels is None:
            raise DataError("kmq-iterative's default feedback (proxy-loss) needs labels: set sources[].label, "
                            "or give select.feedback: {python: 'module:function'}")
        X = pool.embeddings[selected]
        y = np.asarray(pool.labels)[selected].astype(str)
        if len(np.unique(y)) < 2 or len(selected) < self.folds:
            return np.zeros(len(selected))  # nothing to discriminate yet: no cluster is preferred
        fold = rng.permutation(len(selected)) % self.folds
        loss = np.empty(len(selected))
        for f in range(self.folds):
            train, test = fold != f, fold == f
            classes = np.unique(y[train])
            if len(classes) < 2:  # a one-class fold predicts that class with certainty
                p_true = (y[test] == classes[0]).astype(float)
            else:
                model = LogisticRegression(C=self.C, max_iter=300, random_state=int_seed(rng))
                model.fit(X[train], y[train])
                proba = model.predict_proba(X[test])
                col = {c: i for i, c in enumerate(model.classes_)}
                p_true = np.array([proba[r, col[c]] if c in col else 0.0 for r, c in enumerate(y[test])])
            loss[test] = -np.log(np.clip(p_true, 1e-6, 1.0))  # an unseen class is maximally surprising
        return loss


class PythonFeedback(Feedback, name="python"):
    """``function(pool, selected, rng) -> scores`` named as ``"package.module:function"``."""

    def __init__(self, target: str) -> None:
        self.target = target

    def _feedback(self, pool: Pool, selected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return load_python_spec(self.target, field="select.feedback")(pool, selected, rng)


def build_feedback(spec: str | dict[str, Any] | Feedback) -> Feedback:
    """A feedback from a recipe value: ``proxy-loss``, ``{name: proxy-loss, folds: 5}`` or a python hook."""
    if isinstance(spec, Feedback):
        return spec
    return Feedback.registry.build(spec, field="select.feedback")
