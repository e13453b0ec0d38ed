"""The QualityScorer interface and the recipe-spec parser."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from curation.exceptions import InvalidParameterError
from curation.random import int_seed
from curation.types import Pool


class QualityScorer(ABC):
    """Scores pool rows; higher = better. Subclasses implement ``_score``.

    ``calls`` counts the items scored so far (selectors report it: scoring can be the
    expensive part, and some methods exist to score few items).
    """

    registry: ClassVar[dict[str, type[QualityScorer]]] = {}
    name: ClassVar[str] = ""

    def __init_subclass__(cls, *, name: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if name is not None:
            cls.name = name
            QualityScorer.registry[name] = cls

    def __init__(self) -> None:
        self.calls = 0

    def score(self, pool: Pool, indices: np.ndarray | None = None) -> np.ndarray:
        """Scores of ``pool`` rows ``indices`` (all rows when None), float64, same order."""
        idx = np.arange(len(pool)) if indices is None else np.asarray(indices, dtype=np.int64)
        out = np.asarray(self._score(pool, idx), dtype=np.float64)
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
    import curation.score.builtin  # noqa: F401  (registers the built-ins)
    import curation.score.reference  # noqa: F401

    if isinstance(spec, QualityScorer):
        return spec
    if spec is None:
        spec = "constant"
    if isinstance(spec, str):
        if spec.startswith("python:"):
            spec = {"python": spec.removeprefix("python:")}
        else:
            spec = {"name": spec}
    if not isinstance(spec, dict):
        raise InvalidParameterError(f"a quality scorer is a name or a mapping; got {spec!r}")
    opts = dict(spec)
    if "python" in opts:
        from curation.score.builtin import PythonScorer

        return PythonScorer(opts.pop("python"), **opts)
    name = opts.pop("name", None)
    if name not in QualityScorer.registry:
        known = ", ".join(sorted(set(QualityScorer.registry) - {"python"}) + ["python:module:function"])
        raise InvalidParameterError(f"Unknown quality scorer {name!r}. Known scorers: {known}.")
    cls = QualityScorer.registry[name]
    if rng is not None and "seed" not in opts and "seed" in inspect.signature(cls.__init__).parameters:
        opts["seed"] = int_seed(rng)
    try:
        return cls(**opts)
    except TypeError as exc:
        raise InvalidParameterError(f"quality scorer {name!r}: {exc}") from None
