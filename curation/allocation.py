"""Integer allocation of a budget across groups.

:func:`largest_remainder` rounds fractional targets to integers that sum exactly to the total
(Hamilton's method). :func:`allocate` adds capacities (a group cannot give more rows than it
has) and per-group minimums, redistributing any shortfall to groups that still have room, in
proportion to their targets. Both are deterministic: ties break by group order.
"""

from __future__ import annotations

import numpy as np

from curation.exceptions import InvalidParameterError


def largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` that sum exactly to ``total``.

    Each group gets ``floor(total * w_g / sum(w))``; the rows lost to flooring go one each to the
    groups with the largest fractional remainders (ties to the lower index).

    >>> largest_remainder(np.array([1.0, 1.0, 1.0]), 10).tolist()
    [4, 3, 3]
    """
    w = np.asarray(weights, dtype=np.float64)
    if total < 0:
        raise InvalidParameterError(f"total={total} should be >= 0")
    if (w < 0).any() or not np.isfinite(w).all():
        raise InvalidParameterError(f"weights must be finite and >= 0; got {w.tolist()}")
    out = np.zeros(len(w), dtype=np.int64)
    if total == 0 or w.sum() == 0:
        return out
    exact = total * w / w.sum()
    out = np.floor(exact).astype(np.int64)
    short = total - int(out.sum())
    if short > 0:
        order = np.lexsort((np.arange(len(w)), -(exact - out)))
        out[order[:short]] += 1
    return out


def allocate(
    weights: np.ndarray,
    total: int,
    capacity: np.ndarray,
    minimum: int | np.ndarray = 0,
) -> np.ndarray:
    """Integer counts ``n_g`` with ``sum(n) == min(total, sum(capacity))`` and ``n_g <= capacity_g``.

    1. Every group first gets ``min(minimum_g, capacity_g)`` (a floor for small groups).
    2. The rest of the budget is split by ``weights`` with :func:`largest_remainder`.
    3. A group whose share exceeds its capacity is capped; the excess is split again among the
       groups that still have room, in proportion to their weights, until nothing is left.

    Raises:
        InvalidParameterError: when the minimums alone exceed the budget.
    """
    w = np.asarray(weights, dtype=np.float64)
    cap = np.asarray(capacity, dtype=np.int64)
    mins = np.minimum(np.broadcast_to(np.asarray(minimum, dtype=np.int64), cap.shape), cap)
    target = min(int(total), int(cap.sum()))
    if mins.sum() > target:
        raise InvalidParameterError(
            f"min_per_group needs {int(mins.sum())} rows across {len(cap)} groups but the budget is {target}. "
            "Lower select.min_per_group or raise select.budget."
        )
    n = mins.copy()
    left = target - int(n.sum())
    while left > 0:
        room = cap - n
        open_ = room > 0
        ww = np.where(open_, w, 0.0)
        if ww.sum() == 0:  # groups with weight 0 still take overflow when nothing else has room
            ww = open_.astype(np.float64)
        add = np.minimum(largest_remainder(ww, left), room)
        if add.sum() == 0:  # rounding gave the remaining rows only to full groups: give one each
            add = np.zeros_like(n)
            add[np.flatnonzero(open_)[:left]] = 1
        n += add
        left = target - int(n.sum())
    return n
