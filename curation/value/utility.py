"""Utilities: the set function ``U(S)`` that data-valuation methods average marginals of.

A utility maps a subset S of the n training points (int indices, any order, duplicates
ignored) to a number: ``U(S) = V(A(S))``, the performance V of the learner A trained on S
(docs/methods/valuation.md#utility-and-semivalues). Valuation methods (:mod:`curation.value.semivalues`) only ever call
``utility(subset)``, ``utility.empty`` and ``utility.n``, so utility, sampler and method stay
apart (pyDVL's split): any learner, metric or toy game plugs into every method.

Every utility caches its values keyed by the *set* (sorted, de-duplicated indices), so the
same subset is evaluated once per process however often (and in whatever order) a sampler
asks for it. The cache is bounded (oldest entries are evicted first) and is not pickled:
a utility shipped to a Ray worker starts with an empty cache there.

To add a utility: subclass :class:`Utility`, call ``super().__init__(n)`` and implement
``_evaluate(indices) -> float`` (``indices`` sorted, unique, non-empty). Override
``_evaluate_empty()`` when U(∅) follows a convention rather than a computation. Keep the
object picklable (no open handles, no lambdas if plain ``pickle`` must work).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from curation.exceptions import InvalidParameterError

DEFAULT_CACHE_SIZE = 100_000


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController  # a scikit-learn dependency

    # Built once: building one scans the loaded libraries (~ms), limiting through it is ~µs.
    return ThreadpoolController()


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Limit BLAS to ``n`` threads inside the block (``None``: leave it alone).

    Valuation makes thousands of tiny fits and matrix products; a multi-threaded BLAS
    spends more on hand-offs than it saves there (15x slower fits on a busy 2-core host),
    and parallelism belongs across fits (``map_fn`` workers) anyway.
    """
    if n is None:
        yield
        return
    with _blas_controller().limit(limits=n, user_api="blas"):
        yield


class Utility(ABC):
    """A set function ``U: 2^{0..n−1} → ℝ`` with a per-process value cache.

    Attributes:
        n: number of training points (players).
        n_evaluations: cache misses so far, i.e. calls of :meth:`_evaluate` in this process.

    Contract: ``U(S)`` depends on S as a set only (order and repeats of ``subset`` are
    ignored) and ``U(∅)`` is :attr:`empty`, the same number every time.
    """

    def __init__(self, n: int, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidParameterError(f"The 'n' parameter of {type(self).__name__} must be an int >= 1. Got {n!r}.")
        if isinstance(cache_size, bool) or not isinstance(cache_size, (int, np.integer)) or cache_size < 0:
            raise InvalidParameterError(
                f"The 'cache_size' parameter of {type(self).__name__} must be an int >= 0 (0 disables the cache). "
                f"Got {cache_size!r} instead."
            )
        self.n = int(n)
        self.cache_size = int(cache_size)
        self.n_evaluations = 0
        self._cache: dict[bytes, float] = {}
        self._empty: float | None = None

    # -- public API ---------------------------------------------------------------------------

    def __call__(self, subset: np.ndarray | Sequence[int]) -> float:
        """``U(subset)``: the utility of the set of training points ``subset`` (int indices)."""
        idx = self._canonical(subset)
        if idx.size == 0:
            return self.empty
        key = self._key(idx)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        value = float(self._evaluate(idx))
        self.n_evaluations += 1
        if self.cache_size:
            if len(self._cache) >= self.cache_size:
                # FIFO eviction: dicts keep insertion order, so the first key is the oldest.
                del self._cache[next(iter(self._cache))]
            self._cache[key] = value
        return value

    @property
    def empty(self) -> float:
        """``U(∅)``, computed once."""
        if self._empty is None:
            self._empty = float(self._evaluate_empty())
        return self._empty

    def full(self) -> float:
        """``U(D)``, the utility of all n training points."""
        return self(np.arange(self.n))

    def clear_cache(self) -> None:
        """Forget every cached value (U(∅) included)."""
        self._cache.clear()
        self._empty = None

    # -- subclass hooks -----------------------------------------------------------------------

    @abstractmethod
    def _evaluate(self, indices: np.ndarray) -> float:
        """U of a non-empty set; ``indices`` is sorted, unique, int64."""

    def _evaluate_empty(self) -> float:
        """U(∅). Override when it follows a convention (e.g. majority-class accuracy)."""
        return float(self._evaluate(np.empty(0, dtype=np.int64)))

    # -- internals ----------------------------------------------------------------------------

    def _canonical(self, subset: np.ndarray | Sequence[int]) -> np.ndarray:
        idx = np.asarray(subset)
        if idx.size == 0:
            return np.empty(0, dtype=np.int64)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise InvalidParameterError(
                f"A subset passed to {type(self).__name__} must be a 1-d array of int indices; "
                f"got dtype={idx.dtype}, shape={idx.shape}."
            )
        # Sorted and de-duplicated: U is a set function. Samplers rarely repeat an index, so
        # sort first and pay for np.unique only when a repeat is there.
        idx = np.sort(idx.astype(np.int64, copy=False))
        if idx.size > 1 and (idx[1:] == idx[:-1]).any():
            idx = np.unique(idx)
        if idx[0] < 0 or idx[-1] >= self.n:
            raise InvalidParameterError(
                f"Subset indices must lie in [0, n={self.n}); got min={idx[0]}, max={idx[-1]}."
            )
        return idx

    def _key(self, idx: np.ndarray) -> bytes:
        # The set identity in the fewer bytes of two encodings: sorted int32 indices (4 bytes per
        # member, best for small sets of a large pool) or a bitmask (n/8 bytes, best for large
        # sets). The choice depends on the set only, so a set always gets the same key.
        if 4 * idx.size <= (self.n + 7) // 8:
            return b"i" + idx.astype(np.int32).tobytes()
        mask = np.zeros(self.n, dtype=bool)
        mask[idx] = True
        return b"m" + np.packbits(mask).tobytes()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}  # ship the definition, not the (possibly large) cache, to workers
        return state


class GameUtility(Utility):
    """A cooperative game given by a table ``{frozenset(players): value}``.

    Missing coalitions raise ``KeyError`` unless ``default`` is given; ``U(∅)`` is the table's
    entry for ``frozenset()`` (0 when absent). Meant for tests with known answers.

    >>> u = GameUtility({frozenset({0}): 1.0, frozenset({1}): 2.0, frozenset({0, 1}): 4.0}, n=2)
    >>> u([1, 0]), u.empty
    (4.0, 0.0)
    """

    def __init__(
        self, values: Mapping[frozenset, float], n: int | None = None, *, default: float | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        players = set().union(*values.keys()) if values else set()
        inferred = max(players) + 1 if players else 1
        super().__init__(inferred if n is None else n, cache_size=cache_size)
        if players and (min(players) < 0 or max(players) >= self.n):
            raise InvalidParameterError(f"Game players must lie in [0, n={self.n}); got {sorted(players)}.")
        self.values = {frozenset(int(i) for i in k): float(v) for k, v in values.items()}
        self.default = default

    def _evaluate(self, indices: np.ndarray) -> float:
        key = frozenset(indices.tolist())
        if key in self.values:
            return self.values[key]
        if self.default is None:
            raise KeyError(f"GameUtility has no value for coalition {sorted(key)} and no default.")
        return self.default

    def _evaluate_empty(self) -> float:
        return self.values.get(frozenset(), 0.0 if self.default is None else self.default)


class GroupUtility(Utility):
    """Groups of points as players: ``U_G(T) = U(∪_{g∈T} groups[g])``.

    With it every method values sources (or any partition) instead of single points: a
    group's marginal is the change in U when the whole group joins. Groups must be
    non-empty and disjoint; points in no group never join any coalition. ``U_G(∅) = U(∅)``.
    """

    def __init__(self, utility: Utility, groups: Sequence[np.ndarray | Sequence[int]], *,
                 cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if not isinstance(utility, Utility):
            raise InvalidParameterError(f"GroupUtility needs a Utility; got {type(utility).__name__}.")
        if len(groups) == 0:
            raise InvalidParameterError("The 'groups' parameter must hold at least one group. Got [] instead.")
        arrays = [np.asarray(g, dtype=np.int64).ravel() for g in groups]
        seen = np.zeros(utility.n, dtype=np.int64)
        for g, a in enumerate(arrays):
            if a.size == 0:
                raise InvalidParameterError(f"The 'groups' parameter has an empty group at position {g}.")
            if a.min() < 0 or a.max() >= utility.n:
                raise InvalidParameterError(
                    f"Group {g} has indices outside [0, n={utility.n}): min={a.min()}, max={a.max()}."
                )
            np.add.at(seen, a, 1)
        if seen.max() > 1:
            raise InvalidParameterError(
                f"The 'groups' parameter must hold disjoint groups; index {int(np.argmax(seen))} appears "
                f"{int(seen.max())} times."
            )
        super().__init__(len(arrays), cache_size=cache_size)
        self.utility = utility
        self.groups = arrays

    def _evaluate(self, indices: np.ndarray) -> float:
        return self.utility(np.concatenate([self.groups[g] for g in indices]))

    def _evaluate_empty(self) -> float:
        return self.utility.empty


class ModelUtility(Utility):
    """``U(S)``: validation score of a fresh model trained on the training points S.

    Args:
        X_train, y_train: the n training points (the players).
        X_val, y_val: validation set that scores each trained model.
        model: ``"logistic"`` = ``sklearn.linear_model.LogisticRegression(max_iter=200)``
            (lbfgs, deterministic), or a zero-argument callable returning a fresh sklearn-like
            estimator (``fit(X, y)``, ``predict(X)``). It must be deterministic for U to be a
            function, and picklable (a module-level function or class) to be shipped to workers.
        metric: ``"accuracy"`` or a callable ``metric(y_true, y_pred) -> float`` (higher is better).
        empty_score: U(∅). Default for ``"accuracy"``: the majority-class frequency of
            ``y_val`` (docs/methods/valuation.md#utility-and-semivalues; the paper code's ``init_score``). Required for a callable metric.
        blas_threads: BLAS threads during a fit (default 1, see :func:`blas_threads`; None
            leaves the process setting alone, e.g. for one big model).

    Small-set guard (DS-code, §4.1): a model is trained only once the subset contains every
    class present in ``y_val``; before that ``U(S) = U(∅)``. This keeps tiny prefixes of a
    permutation from producing one-class models whose score is an artefact. (The reference
    code compares the *number* of classes, ``len(set(y_batch)) == len(set(y_test))``; we
    check that the classes themselves are covered, which is what the rule is for.) When
    ``y_val`` has a single class and S covers it with S one-class too, the model is the
    constant predictor of that class (sklearn cannot fit one class).

    Attributes:
        n_fits: models actually trained in this process (cache hits and guarded subsets train none).

    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
    >>> u = ModelUtility(X, y, X, y)
    >>> u.empty, u([0, 1]), u([1, 2])    # [0, 1] lacks class 1: guard -> U(∅)
    (0.5, 0.5, 1.0)
    """

    def __init__(
        self, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *,
        model: str | Callable[[], Any] = "logistic", metric: str | Callable[[np.ndarray, np.ndarray], float] = "accuracy",
        empty_score: float | None = None, blas_threads: int | None = 1, cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        X_train, X_val = np.asarray(X_train), np.asarray(X_val)
        y_train, y_val = np.asarray(y_train), np.asarray(y_val)
        if X_train.ndim != 2 or len(X_train) != len(y_train):
            raise InvalidParameterError(
                f"X_train must be 2-d with one row per label; got X_train.shape={X_train.shape}, "
                f"len(y_train)={len(y_train)}."
            )
        if X_val.ndim != 2 or len(X_val) != len(y_val) or len(X_val) == 0:
            raise InvalidParameterError(
                f"X_val must be 2-d, non-empty, with one row per label; got X_val.shape={X_val.shape}, "
                f"len(y_val)={len(y_val)}."
            )
        if X_val.shape[1] != X_train.shape[1]:
            raise InvalidParameterError(
                f"X_val has {X_val.shape[1]} features but X_train has {X_train.shape[1]}."
            )
        if not (model == "logistic" or callable(model)):
            raise InvalidParameterError(
                f"The 'model' parameter of ModelUtility must be 'logistic' or a zero-argument callable returning "
                f"an estimator. Got {model!r} instead."
            )
        if not (metric == "accuracy" or callable(metric)):
            raise InvalidParameterError(
                f"The 'metric' parameter of ModelUtility must be 'accuracy' or a callable "
                f"metric(y_true, y_pred) -> float. Got {metric!r} instead."
            )
        if callable(metric) and empty_score is None:
            raise InvalidParameterError(
                "The 'empty_score' parameter of ModelUtility is required with a callable metric "
                "(U(∅) has no model to score). Got None instead."
            )
        super().__init__(len(X_train), cache_size=cache_size)
        self.X_train, self.y_train, self.X_val, self.y_val = X_train, y_train, X_val, y_val
        self.model, self.metric, self.empty_score = model, metric, empty_score
        self.blas_threads = blas_threads
        self.val_classes = np.unique(y_val)
        self.n_fits = 0

    def _new_model(self) -> Any:
        if self.model == "logistic":
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(max_iter=200)
        return self.model()

    def _score(self, y_pred: np.ndarray) -> float:
        if self.metric == "accuracy":
            return float(np.mean(y_pred == self.y_val))
        return float(self.metric(self.y_val, y_pred))

    def _evaluate_empty(self) -> float:
        if self.empty_score is not None:
            return float(self.empty_score)
        _, counts = np.unique(self.y_val, return_counts=True)
        return float(counts.max() / len(self.y_val))

    def _evaluate(self, indices: np.ndarray) -> float:
        y = self.y_train[indices]
        present = np.unique(y)
        if not np.isin(self.val_classes, present).all():
            return self.empty  # small-set guard: no model until every validation class is present
        if present.size == 1:
            return self._score(np.full(len(self.y_val), present[0]))
        from sklearn.exceptions import ConvergenceWarning

        model = self._new_model()
        with warnings.catch_warnings(), blas_threads(self.blas_threads):
            # lbfgs on a handful of separable points hits max_iter; the score is still what we value.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(self.X_train[indices], y)
            pred = np.asarray(model.predict(self.X_val))
        self.n_fits += 1
        return self._score(pred)
