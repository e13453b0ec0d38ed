"""The QualityScorer interface and the recipe-spec parser."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from curation.random import int_seed
from curation.registry import PYTHON_PREFIX, Registered, Registry
from curation.types import Pool


class QualityScorer(Registered, ABC):
    """Scores pool rows; higher = better. Subclasses implement ``_score``.

    ``calls`` counts the items scored so far (selectors report it: scoring can be the
    expensive part, and some methods exist to score few items).
    """

    registry: ClassVar[Registry] = Registry("quality scorer", "curation.scorers", builtins="curation.score",
                                            python_specs=True)

    def __init__(self) -> None:
        self.calls = 0

    def score(self, pool: Pool, indices: np.ndarray | None = None) -> np.ndarray:
        """Scores of ``pool`` rows ``indices`` (all rows when None), float64, same order.

        A part of a larger pool (:meth:`~curation.types.Pool.part`) is scored within that whole
        pool: ``_score`` sees the whole pool and the matching rows of it."""
        idx = np.arange(len(pool)) if indices is None else np.asarray(indices, dtype=np.int64)
        target, rows = (pool, idx) if pool.scope is None else (pool.scope[0], pool.scope[1][idx])
        out = np.asarray(self._score(target, rows), dtype=np.float64)
        if out.shape != idx.shape:
            raise ValueError(f"{type(self).__name__} returned {out.shape} scores for {idx.shape} items")
        if not np.isfinite(out).all():
            raise ValueError(f"{type(self).__name__} returned non-finite scores")
        self.calls += len(idx)
        return out

    @abstractmethod
    def _score(self, pool: Pool, indices: np.ndarray) -> np.ndarray: ...

    def facts(self) -> dict[str, Any]:
        """What the scorer's one-off preparation cost (e.g. a fitted proxy), for the summary."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def build_scorer(spec: str | dict[str, Any] | QualityScorer | None, *,
                 rng: np.random.Generator | None = None) -> QualityScorer:
    """A scorer from a recipe value (see the package docstring); None means constant.

    ``rng``: the selector's generator. A scorer that takes a ``seed`` (``influence``: its proxy's
    training sample) gets one drawn from it unless the spec sets ``seed`` itself, so the recipe's
    seed decides the scorer's randomness too. Scorers without a ``seed`` draw nothing: their
    selectors' streams stay as they were.

    Raises:
        InvalidParameterError: an unknown name (the message lists the known ones) or bad options.
    """
    if isinstance(spec, QualityScorer):
        return spec
    spec = "constant" if spec is None else spec
    if isinstance(spec, str):
        spec = {"python": spec} if spec.startswith(PYTHON_PREFIX) else {"name": spec}
    if rng is not None and isinstance(spec, dict) and "python" not in spec and "seed" not in spec:
        cls = QualityScorer.registry.get(spec.get("name"), field="quality scorer")
        if "seed" in inspect.signature(cls.__init__).parameters:
            spec = {**spec, "seed": int_seed(rng)}
    return QualityScorer.registry.build(spec, field="quality scorer")
