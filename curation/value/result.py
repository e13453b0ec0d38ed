"""ValuationResult: per-point values with standard errors, built from mergeable running sums.

Monte Carlo valuation methods estimate each value as a mean of samples (marginal
contributions). A result keeps the sufficient statistics of those means,

    sum_i = Σ_t x_{t,i},   sum_sq_i = Σ_t x_{t,i}²,   count_i = #samples of point i,

so that ``value_i = sum_i / count_i`` and

    stderr_i = sqrt( s_i² / count_i ),   s_i² = (sum_sq_i − sum_i²/count_i) / (count_i − 1)

(NaN while count_i < 2). Two partial runs of the same method merge *exactly* by adding
their statistics, which is what resuming a run or combining workers' batches means.

Some estimators are a difference of two means (the MSR estimator of Data Banzhaf:
``mean_{S∋i} U(S) − mean_{S∌i} U(S)``); they carry a second, "negative" arm
(``neg_sum``, ``neg_sum_sq``, ``neg_count``), the value is ``mean⁺ − mean⁻`` and the
standard errors add in quadrature. Results computed exactly (no sampling) carry no
statistics and cannot be merged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curation.exceptions import InvalidParameterError

#: ``info`` entries that count work and therefore add up when two runs merge.
ADDITIVE_INFO = ("permutations", "samples", "utility_calls", "truncated_marginals")

_ARMS = ("sum", "sum_sq", "count")
_NEG_ARMS = ("neg_sum", "neg_sum_sq", "neg_count")


def _mean_and_se(s: np.ndarray, ss: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean (0 where c = 0) and its standard error (NaN where c < 2)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(c > 0, s / np.maximum(c, 1), 0.0)
        var = np.maximum(ss - s * mean, 0.0) / (c - 1)  # sum_sq − sum²/c, clipped: rounding can go < 0
        se = np.where(c >= 2, np.sqrt(var / c), np.nan)
    return mean, se


@dataclass(eq=False)  # array fields: == would be ambiguous; compare .values instead
class ValuationResult:
    """Values of n players (points or groups) from one valuation method.

    Attributes:
        values: (n,) estimated values.
        stderr: (n,) standard error of each value (NaN where the method has none, 0 if exact).
        counts: (n,) number of samples (marginal contributions or utility samples) per player.
        method: name of the method that produced it (``"tmc_shapley"``, ``"beta_shapley"``, …).
        info: run details: parameters, ``permutations``/``samples``, ``converged``, ``stop_reason``…
        stats: the running sums behind ``values`` (None for exact results); see the module doc.

    >>> a = ValuationResult.from_sums(np.array([2.0]), np.array([4.0]), np.array([2]), method="m")
    >>> b = ValuationResult.from_sums(np.array([4.0]), np.array([10.0]), np.array([2]), method="m")
    >>> (a + b).values, (a + b).counts
    (array([1.5]), array([4]))
    """

    values: np.ndarray
    stderr: np.ndarray
    counts: np.ndarray
    method: str
    info: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.values)
        if len(self.stderr) != n or len(self.counts) != n:
            raise InvalidParameterError(
                f"ValuationResult arrays must have equal length; got values={n}, stderr={len(self.stderr)}, "
                f"counts={len(self.counts)}."
            )

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def from_sums(
        cls, sums: np.ndarray, sums_sq: np.ndarray, counts: np.ndarray, *, method: str,
        info: dict[str, Any] | None = None, neg_sums: np.ndarray | None = None,
        neg_sums_sq: np.ndarray | None = None, neg_counts: np.ndarray | None = None,
    ) -> ValuationResult:
        """A result from running sums (plus, for difference-of-means estimators, a negative arm)."""
        stats = {"sum": np.asarray(sums, dtype=np.float64), "sum_sq": np.asarray(sums_sq, dtype=np.float64),
                 "count": np.asarray(counts, dtype=np.int64)}
        if neg_sums is not None:
            if neg_sums_sq is None or neg_counts is None:
                raise InvalidParameterError("neg_sums needs neg_sums_sq and neg_counts as well.")
            stats.update(neg_sum=np.asarray(neg_sums, dtype=np.float64),
                         neg_sum_sq=np.asarray(neg_sums_sq, dtype=np.float64),
                         neg_count=np.asarray(neg_counts, dtype=np.int64))
        return cls._from_stats(stats, method=method, info=dict(info or {}))

    @classmethod
    def _from_stats(cls, stats: dict[str, np.ndarray], *, method: str, info: dict[str, Any]) -> ValuationResult:
        n = len(stats["sum"])
        if any(len(v) != n for v in stats.values()):
            raise InvalidParameterError(
                f"Running sums must have equal length; got {({k: len(v) for k, v in stats.items()})}."
            )
        mean, se = _mean_and_se(stats["sum"], stats["sum_sq"], stats["count"])
        counts = stats["count"].copy()
        if "neg_sum" in stats:
            neg_mean, neg_se = _mean_and_se(stats["neg_sum"], stats["neg_sum_sq"], stats["neg_count"])
            mean, se = mean - neg_mean, np.sqrt(se**2 + neg_se**2)
            counts = counts + stats["neg_count"]
        return cls(values=mean, stderr=se, counts=counts, method=method, info=info, stats=stats)

    @classmethod
    def exact(cls, values: np.ndarray, *, method: str, counts: np.ndarray | None = None,
              info: dict[str, Any] | None = None) -> ValuationResult:
        """A result computed without sampling: stderr 0, no statistics (cannot be merged)."""
        values = np.asarray(values, dtype=np.float64)
        counts = np.zeros(len(values), np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
        return cls(values=values, stderr=np.zeros(len(values)), counts=counts, method=method,
                   info=dict(info or {}), stats=None)

    def merge(self, other: ValuationResult) -> ValuationResult:
        """Combine two partial runs of the same method: statistics add, so the merge is exact.

        ``info`` counters in :data:`ADDITIVE_INFO` add up; every other entry is taken from
        ``other`` (the later run) where present.
        """
        if not isinstance(other, ValuationResult):
            raise InvalidParameterError(f"Can only merge a ValuationResult; got {type(other).__name__}.")
        if self.method != other.method:
            raise InvalidParameterError(
                f"Cannot merge results of different methods: {self.method!r} and {other.method!r}."
            )
        if len(self) != len(other):
            raise InvalidParameterError(f"Cannot merge results of lengths {len(self)} and {len(other)}.")
        if self.stats is None or other.stats is None:
            raise InvalidParameterError(
                f"Cannot merge {self.method!r} results without running sums (exact results are final)."
            )
        if set(self.stats) != set(other.stats):
            raise InvalidParameterError(
                f"Cannot merge results with different statistics: {sorted(self.stats)} and {sorted(other.stats)}."
            )
        stats = {k: self.stats[k] + other.stats[k] for k in self.stats}
        info = {**self.info, **other.info}
        for k in ADDITIVE_INFO:
            if k in self.info and k in other.info:
                info[k] = self.info[k] + other.info[k]
        return self._from_stats(stats, method=self.method, info=info)

    __add__ = merge

    def copy(self) -> ValuationResult:
        """A deep copy of the arrays (``info`` is copied one level deep)."""
        stats = None if self.stats is None else {k: v.copy() for k, v in self.stats.items()}
        return ValuationResult(values=self.values.copy(), stderr=self.stderr.copy(), counts=self.counts.copy(),
                               method=self.method, info=dict(self.info), stats=stats)
