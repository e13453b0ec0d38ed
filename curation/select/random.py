"""Baselines: uniform random and stratified (per-group quota) sampling.

``stratified`` splits the budget into per-group quotas and samples each group uniformly
without replacement:

* ``mode="proportional"``: quota_g ∝ |group g| (the pool's own mix);
* ``mode="equal"``: the same quota for every group;
* ``mode="shares"``: quota_g ∝ ``shares[g]`` given explicitly (groups left out get 0 unless
  ``min_per_group`` lifts them).

Every group first gets ``min(min_per_group, |g|)``. Fractions are rounded with largest
remainders so the quotas sum exactly to the budget; a group smaller than its quota gives all
it has and the shortfall is redistributed to the others (see :mod:`curation.allocation`).
"""

from __future__ import annotations

import numpy as np

from curation.allocation import allocate
from curation.exceptions import InvalidParameterError
from curation.select.base import Allocation, Selector
from curation.types import Pool, Selection
from curation.validation import Interval, Options, TypeOf


class RandomSelector(Selector, name="random"):
    """Uniform sampling without replacement: the baseline every method must beat.

    >>> import numpy as np
    >>> from curation.types import Pool
    >>> pool = Pool(ids=np.arange(10).astype(str), embeddings=np.zeros((10, 2), np.float32),
    ...             groups=np.zeros(10, int), group_names=("*",))
    >>> len(RandomSelector().select(pool, 3, rng=np.random.default_rng(0)).indices)
    3
    """

    def __init__(self) -> None:
        pass

    def _select(self, pool: Pool, budget: int, *, rng: np.random.Generator) -> Selection:
        idx = rng.choice(len(pool), size=budget, replace=False)
        reasons = np.full(len(pool), "random: not drawn", dtype=object)
        reasons[idx] = "random: drawn uniformly"
        return Selection(indices=idx.astype(np.int64), reasons=reasons)


class StratifiedSelector(Selector, name="stratified"):
    """Per-group quotas, then uniform sampling inside each group.

    Args:
        mode: ``proportional``, ``equal`` or ``shares``.
        min_per_group: floor on every group's quota (capped at the group's size).
        shares: ``{group name: weight}`` for ``mode="shares"``; weights need not sum to 1.
    """

    _constraints = {
        "mode": Options({"proportional", "equal", "shares"}),
        "min_per_group": Interval(0, None, integer=True),
        "shares": TypeOf((dict,), allow_none=True),
    }

    def __init__(self, *, mode: str = "proportional", min_per_group: int = 0, shares: dict[str, float] | None = None) -> None:
        self.mode = mode
        self.min_per_group = min_per_group
        self.shares = shares

    def validate(self) -> None:
        super().validate()
        if self.mode == "shares" and not self.shares:
            raise InvalidParameterError("select.mode='shares' needs select.shares, e.g. {en: 0.5, de: 0.5}.")
        if self.shares:
            bad = {k: v for k, v in self.shares.items() if not isinstance(v, (int, float)) or v < 0}
            if bad:
                raise InvalidParameterError(f"select.shares values must be numbers >= 0; got {bad}.")

    def quotas(self, pool: Pool, budget: int) -> np.ndarray:
        """Per-group counts that sum to ``budget`` (see the module docstring)."""
        return allocate(self._weights(pool), budget, pool.group_sizes(), self.min_per_group)

    def allocate(self, pool: Pool, budget: int, *, rng: np.random.Generator) -> Allocation:
        """The quotas as a ``select.allocate`` step (no randomness: ``rng`` is unused)."""
        counts = self.quotas(pool, budget)
        ideal = allocate(self._weights(pool), budget, np.full(len(counts), budget), self.min_per_group)
        info = {"quotas": {name: int(q) for name, q in zip(pool.group_names, counts)},
                "short_groups": [name for name, i, s in zip(pool.group_names, ideal, pool.group_sizes()) if i > s]}
        return Allocation(counts=counts, info=info,
                          reason=lambda name, q, size: f"stratified ({self.mode}): group {name!r} quota {q} of {size}")

    def _weights(self, pool: Pool) -> np.ndarray:
        sizes = pool.group_sizes()
        if self.mode == "proportional":
            weights = sizes.astype(np.float64)
        elif self.mode == "equal":
            weights = (sizes > 0).astype(np.float64)
        else:
            assert self.shares is not None
            unknown = sorted(set(self.shares) - set(pool.group_names))
            if unknown:
                raise InvalidParameterError(
                    f"select.shares names group {unknown[0]!r}, which is not in the data. "
                    f"Groups: {', '.join(pool.group_names[:20])}{' ...' if len(pool.group_names) > 20 else ''}."
                )
            weights = np.array([float(self.shares.get(g, 0.0)) for g in pool.group_names])
        return weights

    def _select(self, pool: Pool, budget: int, *, rng: np.random.Generator) -> Selection:
        plan = self.allocate(pool, budget, rng=rng)  # info["short_groups"]: groups that gave all they had
        quotas = plan.counts
        sizes = pool.group_sizes()
        order = np.argsort(pool.groups, kind="stable")
        starts = np.concatenate([[0], np.cumsum(sizes)])
        picked: list[np.ndarray] = []
        for g, q in enumerate(quotas):
            if q:
                members = order[starts[g] : starts[g + 1]]
                picked.append(rng.choice(members, size=int(q), replace=False))
        idx = np.concatenate(picked).astype(np.int64) if picked else np.zeros(0, np.int64)
        reasons = np.empty(len(pool), dtype=object)
        chosen = np.zeros(len(pool), dtype=bool)
        chosen[idx] = True
        for g, name in enumerate(pool.group_names):
            q, s = int(quotas[g]), int(sizes[g])
            mask = pool.groups == g
            reasons[mask & chosen] = f"stratified ({self.mode}): drawn for group {name!r}, quota {q} of {s}"
            reasons[mask & ~chosen] = f"stratified ({self.mode}): not drawn, group {name!r} quota {q} of {s} filled"
        return Selection(indices=idx, reasons=reasons, info=plan.info)
