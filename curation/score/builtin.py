"""Built-in quality scorers: length, knn-agreement, constant, and a Python hook."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from curation.exceptions import DataError
from curation.registry import load_python_spec
from curation.score.base import QualityScorer
from curation.types import Pool
from curation.validation import Interval, validate_params


class ConstantScorer(QualityScorer, name="constant"):
    """Every item scores 0: no preference (kMQ with it is kM-Random). Free: it counts no calls."""

    def score(self, pool: Pool, indices: np.ndarray | None = None) -> np.ndarray:
        return np.zeros(len(pool) if indices is None else len(indices))

    def _score(self, pool: Pool, indices: np.ndarray) -> np.ndarray:
        return np.zeros(len(indices))


class LengthScorer(QualityScorer, name="length"):
    """Normalised text length: ``log1p(len(text)) / log1p(max len in the pool)``, in [0, 1].

    The log keeps a few very long documents from dominating; dividing by the pool's maximum
    makes the scale independent of the corpus, so a softmax temperature means the same thing
    everywhere.
    """

    def _score(self, pool: Pool, indices: np.ndarray) -> np.ndarray:
        if pool.texts is None:
            raise DataError("quality: length needs a text source (sources[].text); this pool has no texts")
        lengths = np.fromiter((len(t) for t in pool.texts), dtype=np.float64, count=len(pool))
        top = np.log1p(lengths.max()) if len(lengths) else 1.0
        return np.log1p(lengths[indices]) / max(top, 1e-12)


class KnnAgreementScorer(QualityScorer, name="knn-agreement"):
    """Share of an item's ``k`` nearest neighbours (itself excluded) that carry its label.

    A low score flags items whose label disagrees with their neighbourhood: likely noise or
    ambiguity. Neighbours are found with faiss (inner product on the pool's embeddings, which
    is cosine for normalised vectors).
    """

    _constraints = {"k": Interval(1, None, integer=True)}

    def __init__(self, k: int = 10) -> None:
        super().__init__()
        self.k = k
        validate_params(self)
        self.k = int(k)

    def _score(self, pool: Pool, indices: np.ndarray) -> np.ndarray:
        import faiss

        if pool.labels is None:
            raise DataError("quality: knn-agreement needs labels: set sources[].label in the recipe")
        X = np.ascontiguousarray(pool.embeddings, dtype=np.float32)
        index = faiss.IndexFlatIP(X.shape[1])
        index.add(X)
        k = min(self.k + 1, len(pool))
        _, nn = index.search(X[indices], k)
        labels = np.asarray(pool.labels)
        out = np.empty(len(indices))
        for row, (i, neigh) in enumerate(zip(indices, nn)):
            neigh = neigh[(neigh != i) & (neigh >= 0)][: self.k]
            out[row] = float(np.mean(labels[neigh] == labels[i])) if len(neigh) else 0.0
        return out

    def __repr__(self) -> str:
        return f"KnnAgreementScorer(k={self.k})"


class PythonScorer(QualityScorer, name="python"):
    """Your function ``f(pool, indices) -> scores`` named as ``"package.module:function"``."""

    def __init__(self, target: str, **options) -> None:
        super().__init__()
        self.target = target
        self.options = options
        self._fn: Callable | None = None

    def _resolve(self) -> Callable:
        if self._fn is None:
            self._fn = load_python_spec(self.target, field="python scorer")
        return self._fn

    def _score(self, pool: Pool, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self._resolve()(pool, indices, **self.options), dtype=np.float64)

    def __getstate__(self):  # the function is re-imported after pickling (Ray)
        return {**self.__dict__, "_fn": None}

    def __repr__(self) -> str:
        return f"PythonScorer({self.target!r})"
