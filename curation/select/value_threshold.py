"""Selection by data value: keep the most valuable items, or drop the harmful ones (Data Shapley).

Needs the recipe's ``value:`` stage (``pool.values``): Ghorbani & Zou (2019) show that
removing low-valued points improves a model and that high-valued points carry most of the
signal; this selector applies both uses.

* ``mode="top"`` (default): the ``budget`` highest-valued items (ties broken at random).
* ``mode="drop"``: first drop every item valued below ``threshold`` (default 0: on average its
  presence lowers the validation accuracy) and the ``drop_fraction`` lowest-valued items, then
  draw the budget uniformly from the survivors. When fewer survive than the budget, all of them
  are selected: the selector never pads with items it judged harmful.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from curation.exceptions import InvalidParameterError
from curation.select.base import Kept, Selector
from curation.types import Pool, Selection
from curation.validation import Interval, Options


class ValueThresholdSelector(Selector, name="value-threshold"):
    """Keep the top-valued items, or drop low-valued ones and sample the rest (see module doc).

    Args:
        mode: ``top`` or ``drop``.
        threshold: ``drop`` mode: items valued below it are dropped (None: no threshold).
        drop_fraction: ``drop`` mode: also drop this share of the lowest-valued items.
    """

    exact_budget: ClassVar[bool] = False
    _constraints = {
        "mode": Options({"top", "drop"}),
        "threshold": Interval(None, None, allow_none=True),
        "drop_fraction": Interval(0, 1, closed="left"),
    }
    reason_codes: ClassVar[dict[str, str]] = {
        "below_threshold": "drop mode: valued below threshold",
        "lowest_fraction": "drop mode: among the drop_fraction lowest-valued items",
        "budget_reached": "drop mode: kept but not drawn (the budget was full)",
    }

    def __init__(self, *, mode: str = "top", threshold: float | None = 0.0, drop_fraction: float = 0.0) -> None:
        self.mode = mode
        self.threshold = threshold
        self.drop_fraction = drop_fraction

    def _select(self, pool: Pool, budget: int, *, rng: np.random.Generator) -> Selection:
        v = pool.require_values("select.method='value-threshold'")
        n = len(pool)
        order = np.lexsort((rng.random(n), -v))           # by value, descending; ties at random
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        if self.mode == "top":
            idx = order[:budget]
            cutoff = v[idx[-1]]
            reasons = np.where(rank < budget, f"value-threshold: among the {budget} highest values",
                               f"value-threshold: value below the cut-off {cutoff:.4g}")
            return Selection(indices=idx.astype(np.int64), reasons=reasons.astype(object), scores=v,
                             info={"cutoff": float(cutoff)})
        kept, below = self._drop(v, rank)
        dropped = ~kept.mask
        keep = np.flatnonzero(kept.mask)
        idx = rng.permutation(keep)[:budget]
        chosen = np.zeros(n, bool)
        chosen[idx] = True
        why = kept.reasons
        why[chosen] = "value-threshold: kept, drawn uniformly from the items not dropped"
        why[~dropped & ~chosen] = "value-threshold: kept, not drawn (budget reached)"
        codes = np.where(chosen, "selected", np.where(~dropped, "budget_reached",
                                                      np.where(below, "below_threshold", "lowest_fraction")))
        return Selection(indices=idx.astype(np.int64), reasons=why, scores=v, reason_codes=codes.astype(object),
                         info=kept.info)

    def check_step(self, step: str) -> None:
        super().check_step(step)
        if self.mode != "drop":
            raise InvalidParameterError(f"select.filter: value-threshold filters in mode 'drop', not {self.mode!r}; "
                                        "set select.filter.mode: drop")

    def keep(self, pool: Pool, *, rng: np.random.Generator) -> Kept:
        """``drop`` mode as a ``select.filter`` step: the rows not dropped (ties at random)."""
        self.check_step("filter")
        v = pool.require_values("select.filter (value-threshold)")
        order = np.lexsort((rng.random(len(pool)), -v))
        rank = np.empty(len(pool), np.int64)
        rank[order] = np.arange(len(pool))
        return self._drop(v, rank)[0]

    def _drop(self, v: np.ndarray, rank: np.ndarray) -> tuple[Kept, np.ndarray]:
        """Drop mode's rule given the values and their descending rank: below ``threshold``, then
        the ``drop_fraction`` lowest ranks. Also returns the below-threshold mask (the reason code)."""
        n = len(v)
        dropped = np.zeros(n, bool)
        why = np.full(n, "", dtype=object)
        below = np.zeros(n, bool)
        if self.threshold is not None:
            below = v < self.threshold
            dropped |= below
            why[below] = f"value-threshold: dropped, value below threshold {self.threshold:g}"
        n_low = int(np.floor(self.drop_fraction * n))
        lowest = rank >= n - n_low
        why[lowest & ~dropped] = f"value-threshold: dropped, among the lowest {self.drop_fraction:.0%} by value"
        dropped |= lowest
        return Kept(mask=~dropped, reasons=why,
                    info={"dropped": int(dropped.sum()), "survivors": int(n - dropped.sum())}), below
