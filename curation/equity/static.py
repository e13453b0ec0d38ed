"""Static allocation of a data-collection budget across groups when the learning curves are known.

Setting (docs/methods/group-adaptive.md#the-problem): groups g = 0..G−1 with power-law error curves
``e_g(n) = a_g n^(−b_g) + c_g`` (:class:`~curation.equity.curves.PowerLaw`), a cost per sample
``κ_g > 0`` and a budget ``B``; an allocation ``n ∈ ℝ^G_{≥0}`` is feasible when
``Σ_g κ_g n_g ≤ B`` (and ``minimum_g ≤ n_g ≤ capacity_g`` when those are given).

* :func:`weighted_optimum`: ``min Σ_g w_g e_g(n_g)`` (utilitarian). KKT:
  ``w_g a_g b_g n_g^(−b_g−1) = λ κ_g`` ⇒ ``n_g(λ) = (w_g a_g b_g / (λ κ_g))^(1/(b_g+1))``, clipped
  to ``[minimum_g, capacity_g]``; ``λ`` is found by bisection on ``log λ`` so the budget is spent.
* :func:`maxmin_optimum`: ``min max_g e_g(n_g)`` (egalitarian, §6). Samples to reach error ``t``
  are ``need_g(t) = (a_g / (t − c_g))^(1/b_g)``; bisection on the common level ``t`` until
  ``Σ κ_g need_g(t) = B``. Floor-limited problems (one group cannot go below a level the others
  can beat) are handled explicitly; see the function's docstring.
* :func:`integer_allocation`: rounding a continuous optimum: floor, then one sample at a time
  to the group with the best objective gain per unit cost.
* Baselines :func:`equal_allocation` and :func:`proportional_allocation` (§3.3), and the
  metrics :func:`group_errors`, :func:`worst_group`, :func:`gap`, :func:`error_summary`.

All functions are deterministic; ties break towards the lower group index.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curation.allocation import allocate
from curation.equity.curves import PowerLaw
from curation.exceptions import InvalidParameterError

# Relative slack for float budget comparisons (costs such as 0.1 do not add up exactly).
_EPS = 1e-9

CurveLike = PowerLaw | Mapping[str, Any]


# --------------------------------------------------------------------------------------------
# input checks


def _as_curves(curves: Sequence[CurveLike]) -> list[PowerLaw]:
    out = []
    for i, cv in enumerate(curves):
        if isinstance(cv, PowerLaw):
            out.append(cv)
        elif isinstance(cv, Mapping):
            out.append(PowerLaw.from_dict(cv))
        else:
            raise InvalidParameterError(f"curves[{i}] must be a PowerLaw or a dict with a, b, c. "
                                        f"Got {type(cv).__name__} instead.")
    if not out:
        raise InvalidParameterError("curves must hold at least one group. Got an empty sequence instead.")
    return out


def _params(curves: Sequence[PowerLaw]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([cv.a for cv in curves], dtype=np.float64), np.array([cv.b for cv in curves], dtype=np.float64),
            np.array([cv.c for cv in curves], dtype=np.float64))


def _vector(name: str, value: Any, g: int, *, allowed: str, ok: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(g, float(arr))
    if arr.shape != (g,):
        raise InvalidParameterError(f"The {name!r} parameter must have one value per group ({g}). "
                                    f"Got shape {arr.shape} ({np.asarray(value).tolist()!r}) instead.")
    if np.isnan(arr).any() or not ok(arr):
        raise InvalidParameterError(f"The {name!r} parameter must be {allowed}. Got {arr.tolist()!r} instead.")
    return arr


def check_costs(costs: Any, g: int) -> np.ndarray:
    """Per-sample costs: one finite value > 0 per group."""
    return _vector("costs", costs, g, allowed="finite and > 0 for every group",
                   ok=lambda x: bool(np.isfinite(x).all() and (x > 0).all()))


def check_budget_amount(budget: Any) -> float:
    """A budget: a finite number > 0 (in the same unit as the costs)."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)) \
            or not math.isfinite(budget) or budget <= 0:
        raise InvalidParameterError(f"The 'budget' parameter must be a finite number > 0. Got {budget!r} instead.")
    return float(budget)


def _weights(weights: Any, g: int) -> np.ndarray:
    if weights is None:
        return np.full(g, 1.0 / g)
    w = _vector("weights", weights, g, allowed="finite, >= 0 and not all 0",
                ok=lambda x: bool(np.isfinite(x).all() and (x >= 0).all() and x.sum() > 0))
    return w


def _capacity(capacity: Any, g: int) -> np.ndarray:
    if capacity is None:
        return np.full(g, np.inf)
    return _vector("capacity", capacity, g, allowed=">= 0 for every group (inf = unlimited)",
                   ok=lambda x: bool((x >= 0).all()))


def _minimum(minimum: Any, g: int, cap: np.ndarray) -> np.ndarray:
    if minimum is None:
        return np.zeros(g)
    m = _vector("minimum", minimum, g, allowed="finite and >= 0 for every group",
                ok=lambda x: bool(np.isfinite(x).all() and (x >= 0).all()))
    return np.minimum(m, cap)  # a group cannot be asked for more than it has


def _check_minimum_fits(lower: np.ndarray, costs: np.ndarray, budget: float) -> None:
    need = float((costs * lower).sum())
    if need > budget * (1 + _EPS):
        raise InvalidParameterError(
            f"The 'minimum' parameter asks for {lower.tolist()} samples costing {need:g}, more than "
            f"budget={budget:g}. Lower the minimum or raise the budget.")


def _problem(curves: Sequence[CurveLike], costs: Any, budget: Any, weights: Any, capacity: Any,
             minimum: Any) -> tuple[list[PowerLaw], np.ndarray, float, np.ndarray, np.ndarray, np.ndarray]:
    """Validated (curves, costs, budget, weights, capacity, minimum) of a continuous optimum."""
    cv = _as_curves(curves)
    g = len(cv)
    kappa = check_costs(costs, g)
    budget = check_budget_amount(budget)
    w = _weights(weights, g)
    cap = _capacity(capacity, g)
    lower = _minimum(minimum, g, cap)
    _check_minimum_fits(lower, kappa, budget)
    return cv, kappa, budget, w, cap, lower


def _need(a: np.ndarray, b: np.ndarray, c: np.ndarray, t: float) -> np.ndarray:
    """``need_g(t)`` for every group (inf where ``t ≤ c_g``; 0 at ``t = inf``)."""
    gap_ = t - c
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(gap_ > 0, np.power(a / np.where(gap_ > 0, gap_, 1.0), 1.0 / b), np.inf)


def _errors(a: np.ndarray, b: np.ndarray, c: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return a * np.power(np.asarray(n, dtype=np.float64), -b) + c


# --------------------------------------------------------------------------------------------
# weighted sum


def _weighted_kkt(a: np.ndarray, b: np.ndarray, kappa: np.ndarray, w: np.ndarray, budget: float,
                  lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """``n_g = clip((w a b / (λ κ))^(1/(b+1)), lower, upper)`` with ``Σ κ n = budget``.

    Each clipped KKT branch is non-increasing in λ, so the spend is monotone and a bracketing
    root finder on ``log λ`` converges. Zero-weight groups stay at their lower bound; budget
    that only they could absorb is left unspent (it buys nothing under this objective).
    """
    active = w > 0
    reach = np.where(active, upper, lower)
    if float((kappa * lower).sum()) >= budget or float((kappa * reach).sum()) <= budget:
        return (lower if float((kappa * lower).sum()) >= budget else reach).astype(np.float64).copy()
    with np.errstate(divide="ignore"):
        logk = np.where(active, np.log(np.where(active, w * a * b / kappa, 1.0)), -np.inf)

    def n_of(loglam: float) -> np.ndarray:
        with np.errstate(over="ignore"):
            x = np.where(active, np.exp((logk - loglam) / (b + 1.0)), 0.0)
        return np.clip(x, lower, upper)

    def h(loglam: float) -> float:
        return float((kappa * n_of(loglam)).sum()) - budget

    lo = hi = float(np.median(logk[active]))
    while h(lo) < 0:  # more spend needs a smaller λ
        lo -= 20.0
    while h(hi) > 0:
        hi += 20.0
    if lo == hi:
        return n_of(lo)
    from scipy.optimize import brentq  # imported on use: scipy.optimize costs ~0.9 s cold

    loglam = brentq(h, lo, hi, xtol=1e-13, rtol=4 * np.finfo(float).eps, maxiter=500)
    return n_of(loglam)


def weighted_optimum(curves: Sequence[CurveLike], costs: Any, budget: float, weights: Any = None, *,
                     capacity: Any = None, minimum: Any = None) -> np.ndarray:
    """Continuous ``argmin_n Σ_g w_g e_g(n_g)`` subject to ``Σ κ_g n_g ≤ B``.

    KKT: ``w_g a_g b_g n_g^(−b_g−1) = λ κ_g``, so
    ``n_g(λ) = (w_g a_g b_g / (λ κ_g))^(1/(b_g+1))`` (clipped to ``[minimum_g, capacity_g]``);
    ``λ`` is bisected on a log scale until ``Σ κ_g n_g = B``. With a common exponent ``b`` and
    no bounds, ``n_g ∝ (w_g a_g / κ_g)^(1/(b+1))``. The asymptotes ``c_g`` do not enter.

    Args:
        curves: one :class:`PowerLaw` (or its ``to_dict()``) per group.
        costs: cost per sample of each group, > 0.
        budget: total budget ``B`` (same unit as ``costs``).
        weights: ``w_g ≥ 0``. **Default: uniform** (every group counts the same). The paper
            (docs/methods/group-adaptive.md#the-problem) makes the population shares ``π`` the utilitarian default; this module does
            not know ``π``, so pass ``weights=shares`` for that objective.
        capacity: optional upper bounds (samples available per group).
        minimum: optional lower bounds (e.g. a pilot already bought).

    Returns:
        ``n`` (float, shape (G,)) with ``Σ κ n = B`` unless every group with positive weight
        is at capacity.

    >>> n = weighted_optimum([PowerLaw(1, .5), PowerLaw(4, .5)], [1, 1], 1000, [.5, .5])
    >>> [round(float(x), 1) for x in n]
    [284.1, 715.9]
    """
    cv, kappa, budget, w, cap, lower = _problem(curves, costs, budget, weights, capacity, minimum)
    a, b, _ = _params(cv)
    return _weighted_kkt(a, b, kappa, w, budget, lower, cap)


# --------------------------------------------------------------------------------------------
# MaxMin


@dataclass(frozen=True)
class MaxMinResult:
    """Continuous MaxMin allocation.

    Attributes:
        n: allocation (float, shape (G,)).
        level: the MaxMin value. Not floor-limited: the common error ``t*`` every group not held
            at its ``minimum`` sits at. Floor-limited: the binding floor ``F`` (see
            :func:`maxmin_optimum`); the groups' errors are then all ``≤ F``.
        floor_limited: True when some group's floor, not the budget, sets the MaxMin value.
        floor_groups: the groups whose floor is binding (their floor equals ``level``); empty
            when not floor-limited.
        floors: each group's floor ``f_g = max(c_g + floor_tol, e_g(capacity_g))``.
        errors: ``e_g(n_g)``.
        secondary: the tie-breaking objective used for the leftover budget.
    """

    n: np.ndarray
    level: float
    floor_limited: bool
    floor_groups: tuple[int, ...]
    floors: np.ndarray
    errors: np.ndarray
    secondary: str

    @property
    def worst(self) -> float:
        """``max_g e_g(n_g)``."""
        return float(self.errors.max())

    @property
    def gap(self) -> float:
        """``max_g e_g(n_g) − min_g e_g(n_g)``."""
        return gap(self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n.tolist(), "level": float(self.level), "floor_limited": bool(self.floor_limited),
                "floor_groups": list(self.floor_groups), "floors": self.floors.tolist(),
                "errors": self.errors.tolist(), "worst": self.worst, "gap": self.gap, "secondary": self.secondary}


def _level_cost(a, b, c, kappa, lower, t: float) -> float:
    return float((kappa * np.maximum(lower, _need(a, b, c, t))).sum())


def _solve_level(a, b, c, kappa, lower, budget: float, floor: float) -> float:
    """The ``t > floor`` with ``Σ κ_g max(minimum_g, need_g(t)) = budget``.

    The spend is continuous and decreasing in ``t``; the caller guarantees it exceeds the budget
    just above ``floor`` (it may be infinite at ``floor`` itself when ``floor = c_g``) and that
    the minimums alone cost less than the budget.
    """
    def h(t: float) -> float:
        return _level_cost(a, b, c, kappa, lower, t) - budget

    scale = max(float(np.max(a + c)), 1e-12)
    hi = floor + scale
    while h(hi) > 0:
        hi = floor + 2.0 * (hi - floor)
    lo_gap = hi - floor
    while not (h(floor + lo_gap) > 0) and lo_gap > 1e-300:  # first point above the floor that overspends
        lo_gap /= 2.0
    lo = floor + lo_gap
    if h(lo) <= 0:  # numerically at the floor
        return lo
    if h(hi) == 0:
        return hi
    from scipy.optimize import brentq

    return float(brentq(h, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500))


def maxmin_optimum(curves: Sequence[CurveLike], costs: Any, budget: float, *, secondary: str = "weighted_sum",
                   weights: Any = None, capacity: Any = None, minimum: Any = None,
                   floor_tol: float = 1e-3) -> MaxMinResult:
    """Continuous ``argmin_n max_g e_g(n_g)`` subject to ``Σ κ_g n_g ≤ B``, with explicit floors.

    **Floors.** ``need_g(t) = (a_g / (t − c_g))^(1/b_g)`` is infinite for ``t ≤ c_g``: with the
    asymptote taken literally, MaxMin would pour almost the whole budget into the group with the
    highest ``c_g`` to shave a sliver off an error it can never beat, starving everyone else.
    So each group has a **floor**

        ``f_g = max(c_g + floor_tol, e_g(capacity_g))``

    the lowest error it can be brought to (``floor_tol``, in the curves' error units, is the
    smallest error difference worth paying for; ``e_g(capacity_g)`` is where a group runs out of
    data), and errors at or below a group's floor count as "at the floor". Let
    ``F = max_g f_g`` (the binding floor) and ``C(t) = Σ_g κ_g max(minimum_g, need_g(t))``.

    * **Not floor-limited** (``C(F) > B``): bisect the level ``t ∈ (F, ∞)`` until ``C(t) = B``.
      Every group not held at its minimum sits at error exactly ``t*``; the optimum is unique.
    * **Floor-limited** (``C(F) ≤ B``): the budget can bring every group to ``F`` but no
      allocation gets the worst group meaningfully below ``F``, so MaxMin is indifferent among all
      allocations with ``n_g ≥ need_g(F)``. Every group is funded to ``need_g(F)`` (the binding
      groups, ``f_g = F``, are at their floor-level need) and the leftover budget
      ``B − C(F)`` is spent by ``secondary``:

      * ``"weighted_sum"``: minimise ``Σ w_g e_g(n_g)`` subject to ``n_g ≥ need_g(F)`` (KKT as
        in :func:`weighted_optimum`; a binding group may get more if its weighted marginal gain
        is the largest).
      * ``"leximin"``: keep the binding groups at their floor-level need and solve MaxMin again
        for the remaining groups with the remaining budget (which can again be floor-limited at
        their own, lower, binding floor), and so on: the sorted error vector is minimised
        lexicographically at floor resolution. If every group ends at its floor and budget is
        left, it is spent as in ``"weighted_sum"``.

      The worst-group error is then between ``max_g c_g`` and ``F``. With ``floor_tol=0`` and no
      capacities the problem is never floor-limited (pure MaxMin).

    Args:
        curves: one :class:`PowerLaw` (or dict) per group.
        costs: cost per sample, > 0.
        budget: ``B``.
        secondary: ``"weighted_sum"`` (default) or ``"leximin"``.
        weights: weights of the ``weighted_sum`` secondary (default uniform; pass population
            shares for the §3.2 default).
        capacity: optional per-group upper bounds.
        minimum: optional per-group lower bounds (e.g. a pilot already bought).
        floor_tol: ``≥ 0``; see above.

    >>> r = maxmin_optimum([PowerLaw(1, .5), PowerLaw(4, .5)], [1, 1], 1000)
    >>> [round(float(x), 2) for x in r.n], round(r.level, 5), r.floor_limited
    ([58.82, 941.18], 0.13038, False)
    """
    if secondary not in ("weighted_sum", "leximin"):
        raise InvalidParameterError(f"The 'secondary' parameter of maxmin_optimum must be one of 'leximin', "
                                    f"'weighted_sum'. Got {secondary!r} instead.")
    if isinstance(floor_tol, bool) or not isinstance(floor_tol, (int, float)) or not math.isfinite(floor_tol) \
            or floor_tol < 0:
        raise InvalidParameterError(f"The 'floor_tol' parameter of maxmin_optimum must be a finite number >= 0. "
                                    f"Got {floor_tol!r} instead.")
    cv, kappa, budget, w, cap, lower = _problem(curves, costs, budget, weights, capacity, minimum)
    a, b, c = _params(cv)
    floors = np.maximum(c + floor_tol, _errors(a, b, c, cap))

    n = lower.copy()
    g = len(cv)
    remaining = np.arange(g)
    left = budget
    first_floor_groups: tuple[int, ...] | None = None
    level = math.nan
    while len(remaining):
        r = remaining
        if float((kappa[r] * lower[r]).sum()) >= left * (1 - _EPS):  # the minimums use up the budget
            n[r] = lower[r]
            if first_floor_groups is None:
                first_floor_groups, level = (), float(_errors(a[r], b[r], c[r], lower[r]).max())
            break
        fl = float(floors[r].max())
        base = np.minimum(np.maximum(lower[r], _need(a[r], b[r], c[r], fl)), cap[r])
        cost_f = float((kappa[r] * base).sum())
        if cost_f > left * (1 + _EPS) or not np.isfinite(cost_f):
            t = _solve_level(a[r], b[r], c[r], kappa[r], lower[r], left, fl)
            n[r] = np.minimum(np.maximum(lower[r], _need(a[r], b[r], c[r], t)), cap[r])
            if first_floor_groups is None:
                first_floor_groups, level = (), t
            break
        binding = r[floors[r] >= fl * (1 - 1e-12)]
        if first_floor_groups is None:
            first_floor_groups, level = tuple(int(i) for i in binding), fl
        n[r] = base
        if secondary == "weighted_sum":
            n[r] = _weighted_kkt(a[r], b[r], kappa[r], w[r], left, base, cap[r])
            break
        # leximin: the binding groups are done; the others share what is left
        left -= float((kappa[binding] * base[np.isin(r, binding)]).sum())
        remaining = r[~np.isin(r, binding)]
        if not len(remaining):  # everyone at their floor: spend any rest by weighted sum
            n = _weighted_kkt(a, b, kappa, w, budget, n.copy(), cap)
    errors = _errors(a, b, c, n)
    return MaxMinResult(n=n, level=float(level), floor_limited=bool(first_floor_groups),
                        floor_groups=first_floor_groups or (), floors=floors, errors=errors, secondary=secondary)


# --------------------------------------------------------------------------------------------
# integer rounding


def integer_allocation(n_cont: Any, curves: Sequence[CurveLike], costs: Any, budget: float, *, objective: str,
                       capacity: Any = None, minimum: Any = None, weights: Any = None,
                       floor_tol: float = 1e-3) -> np.ndarray:
    """Round a continuous allocation to integers that respect the budget, capacity and minimum.

    1. ``n_g = clip(floor(n_cont_g), minimum_g, capacity_g)`` (capacity in whole samples).
    2. Repeatedly add one sample to the best group that still has room (``n_g < capacity_g``)
       and that the leftover budget can pay for; stop when no group qualifies, so
       ``Σ κ n ≤ B`` and the leftover is smaller than the cost of every group with room.
       Budget that a full group cannot absorb goes to the others this way (redistribution).

    "Best" depends on ``objective``:

    * ``"weighted"``: the largest ``w_g (e_g(n_g) − e_g(n_g + 1)) / κ_g`` (gain per unit cost;
      the curves are convex so this is the greedy of a concave knapsack).
    * ``"maxmin"``: the group with the highest current error ``e_g(n_g)`` (only the worst group
      lowers the max), skipping groups already at their floor ``c_g + floor_tol`` (as in
      :func:`maxmin_optimum`); groups at their floor are served last, by the weighted rule.

    Ties go to the lower index, so the result is deterministic. Runs in
    ``O((G + k) log G)`` for ``k`` added samples; ``k`` is about ``G`` unless capacities cut
    the continuous solution, so pass ``capacity`` to the continuous optimiser as well.

    Args:
        n_cont: continuous allocation, shape (G,), ≥ 0.
        curves, costs, budget: as in :func:`maxmin_optimum`.
        objective: ``"weighted"`` or ``"maxmin"``.
        capacity: per-group sample counts available (None = unlimited).
        minimum: per-group lower bounds (capped at capacity).
        weights: the weighted rule's ``w`` (default uniform).
        floor_tol: see :func:`maxmin_optimum`.

    Returns:
        int64 counts, shape (G,).

    Raises:
        InvalidParameterError: bad ``objective``/shapes, or when the floored ``n_cont`` (lifted
            to ``minimum``) already costs more than ``budget``: ``n_cont`` must respect the
            minimum, so pass the same ``minimum`` to the continuous optimiser.
    """
    if objective not in ("weighted", "maxmin"):
        raise InvalidParameterError(f"The 'objective' parameter of integer_allocation must be one of 'maxmin', "
                                    f"'weighted'. Got {objective!r} instead.")
    cv = _as_curves(curves)
    g = len(cv)
    kappa = check_costs(costs, g)
    budget = check_budget_amount(budget)
    w = _weights(weights, g)
    cap = np.floor(_capacity(capacity, g))
    lower = np.ceil(_minimum(minimum, g, cap) - _EPS)
    x = _vector("n_cont", n_cont, g, allowed="finite and >= 0", ok=lambda v: bool(np.isfinite(v).all() and
                                                                                   (v >= 0).all()))
    _check_minimum_fits(lower, kappa, budget)
    # the epsilon keeps 58.999999999 (bisection output) from flooring to 58
    n = np.clip(np.floor(x + 1e-9), lower, cap)
    spent = float((kappa * n).sum())
    if spent > budget * (1 + _EPS):
        if float((kappa * np.minimum(np.floor(x + 1e-9), cap)).sum()) <= budget * (1 + _EPS):
            raise InvalidParameterError(
                f"The 'minimum' parameter lifts n_cont={x.tolist()!r} to {n.tolist()!r}, which costs {spent:g}, more "
                f"than budget={budget:g}. Pass the same minimum to weighted_optimum / maxmin_optimum.")
        raise InvalidParameterError(f"The 'n_cont' parameter costs {spent:g} after flooring, more than "
                                    f"budget={budget:g}. Got n_cont={x.tolist()!r} instead.")
    a, b, c = _params(cv)
    left = budget - spent
    slack = _EPS * budget

    def key(i: int) -> tuple[float, float, int]:
        e_now = a[i] * n[i] ** -b[i] + c[i] if n[i] > 0 else math.inf
        e_next = a[i] * (n[i] + 1.0) ** -b[i] + c[i]
        gain = 0.0 if w[i] == 0 else w[i] * (e_now - e_next) / kappa[i]
        if objective == "maxmin" and e_now > c[i] + floor_tol:
            return (0.0, -e_now, i)
        return (1.0, -gain, i)

    heap = [key(i) for i in range(g)]
    heapq.heapify(heap)
    while heap:
        *_, i = heapq.heappop(heap)
        if n[i] >= cap[i] or kappa[i] > left + slack:  # full, or never affordable again: drop it
            continue
        n[i] += 1
        left -= kappa[i]
        heapq.heappush(heap, key(i))
    return n.astype(np.int64)


# --------------------------------------------------------------------------------------------
# baselines


def _water(d: np.ndarray, kappa: np.ndarray, budget: float, cap: np.ndarray) -> np.ndarray:
    """Continuous ``target_g = min(cap_g, s · d_g)`` with ``Σ κ target = budget`` (or all capped)."""
    g = len(kappa)
    target = np.zeros(g)
    free = (d > 0) & (cap > 0)
    capped = np.zeros(g, dtype=bool)
    for _ in range(g + 1):  # each pass caps at least one more group, or stops
        left = budget - float((kappa[capped] * cap[capped]).sum())
        denom = float((kappa[free] * d[free]).sum())
        if denom <= 0 or left <= 0:
            break
        s = left / denom
        over = free & (s * d > cap)
        if not over.any():
            target[free] = s * d[free]
            break
        capped |= over
        free &= ~over
    target[capped] = cap[capped]
    return target


def _fill(direction: np.ndarray, kappa: np.ndarray, budget: float, cap: np.ndarray) -> np.ndarray:
    """Integer ``n ≈ s · direction`` (capped) with the largest ``s`` the budget allows.

    Equal costs: this is an item-count problem and :func:`curation.allocation.allocate`
    (largest remainders, capacity redistribution) solves it exactly. Unequal costs: water-fill
    ``Σ κ_g min(cap_g, s d_g) = B`` for ``s`` (capped groups drop out and the others share the
    rest in proportion to ``d``), floor, then spend the leftover one sample at a time on the
    affordable group furthest below its target. As in ``allocate``, groups with direction 0
    only take what the others cannot.
    """
    if np.allclose(kappa, kappa[0], rtol=1e-12, atol=0):
        total = int(math.floor(budget / kappa[0] + _EPS))
        caps = np.where(np.isfinite(cap), cap, total).astype(np.int64)
        return allocate(direction, total, caps)
    d = direction.astype(np.float64)
    target = _water(d, kappa, budget, cap)
    rest = budget - float((kappa * target).sum())
    zero = (d == 0) & (cap > 0)
    if rest > budget * _EPS and zero.any():
        target = target + _water(zero.astype(np.float64), kappa, rest, cap - target)
    n = np.minimum(np.floor(target + 1e-9), cap)
    left = budget - float((kappa * n).sum())
    slack = _EPS * budget
    while True:
        ok = (n < cap) & (kappa <= left + slack)
        if not ok.any():
            break
        deficit = np.where(ok, target - n, -np.inf)
        i = int(np.argmax(deficit))  # argmax: first index among ties
        n[i] += 1
        left -= kappa[i]
    return n.astype(np.int64)


def equal_allocation(costs: Any, budget: float, capacity: Any = None) -> np.ndarray:
    """The same number of samples in every group: ``n_g = B / Σ_h κ_h`` (§3.3), as integers.

    A group with less data than its share gives all it has and the others share the rest
    equally. Equal costs round with largest remainders (counts differ by at most one);
    unequal costs spend the leftover on the affordable group furthest below the common level.

    >>> equal_allocation([1, 1, 1], 10).tolist()
    [4, 3, 3]
    """
    kappa = np.atleast_1d(np.asarray(costs, dtype=np.float64))
    g = len(kappa)
    kappa = check_costs(kappa, g)
    return _fill(np.ones(g), kappa, check_budget_amount(budget), _capacity(capacity, g))


def proportional_allocation(shares: Any, costs: Any, budget: float, capacity: Any = None) -> np.ndarray:
    """Samples in proportion to population shares: ``n_g = π_g B / Σ_h π_h κ_h`` (§3.3), as integers.

    Capacity shortfalls are redistributed in proportion to the shares of the groups with room;
    rounding as in :func:`equal_allocation`.

    >>> proportional_allocation([.8, .2], [1, 1], 100).tolist()
    [80, 20]
    """
    pi = np.atleast_1d(np.asarray(shares, dtype=np.float64))
    g = len(pi)
    pi = _vector("shares", pi, g, allowed="finite, >= 0 and not all 0",
                 ok=lambda x: bool(np.isfinite(x).all() and (x >= 0).all() and x.sum() > 0))
    kappa = check_costs(costs, g)
    return _fill(pi, kappa, check_budget_amount(budget), _capacity(capacity, g))


def flat_groups(curves: Sequence[CurveLike], costs: Any, budget: float, capacity: Any = None, minimum: Any = None,
                flat_tol: float = 0.005) -> np.ndarray:
    """Groups whose curve is flat: (G,) True where even the most this budget could buy lowers
    the group's predicted error by less than ``flat_tol``,

        ``e_g(m_g) − e_g(min(cap_g, m_g + B / κ_g)) < flat_tol``,

    with ``m_g`` the group's ``minimum`` (what it already has). MaxMin would otherwise pour
    the budget into such a group because its error is the highest, for a gain too small to
    matter (docs/methods/group-adaptive.md#flat-curves). A group with ``m_g = 0`` is never flat
    (``e_g(0)`` is unbounded: its curve says nothing yet). ``flat_tol = 0`` turns the rule off.

    >>> flat_groups([PowerLaw(0.3, 0.001, 0.0), PowerLaw(1.0, 0.5)], [1, 1], 1000, minimum=[50, 50]).tolist()
    [True, False]
    """
    cv = _as_curves(curves)
    g = len(cv)
    kappa = check_costs(costs, g)
    cap = _capacity(capacity, g)
    low = _minimum(minimum, g, cap)
    if flat_tol <= 0:
        return np.zeros(g, bool)
    a, b, c = _params(cv)
    reach = np.minimum(cap, low + check_budget_amount(budget) / kappa)
    with np.errstate(invalid="ignore"):
        gain = _errors(a, b, c, low) - _errors(a, b, c, reach)
    return (low > 0) & (gain < flat_tol)


def oracle_allocation(true_curves: Sequence[CurveLike], costs: Any, budget: float, *, objective: str = "maxmin",
                      secondary: str = "weighted_sum", weights: Any = None, capacity: Any = None,
                      minimum: Any = None, floor_tol: float = 1e-3, flat_tol: float = 0.0) -> np.ndarray:
    """The oracle-static baseline: the continuous optimum for the true curves, rounded.

    ``objective="maxmin"`` uses :func:`maxmin_optimum` (with ``secondary``),
    ``"weighted"`` uses :func:`weighted_optimum`; both with the same ``capacity`` and
    ``minimum``; then :func:`integer_allocation` with the same objective. With ``flat_tol > 0``
    MaxMin holds the :func:`flat_groups` at their minimum while the other groups have room;
    budget they cannot take, or all of it when every group is flat, is spent by the weighted
    objective.
    """
    if objective not in ("weighted", "maxmin"):
        raise InvalidParameterError(f"The 'objective' parameter of oracle_allocation must be one of 'maxmin', "
                                    f"'weighted'. Got {objective!r} instead.")
    full_capacity = capacity
    if objective == "maxmin" and flat_tol > 0 and minimum is not None:
        flat = flat_groups(true_curves, costs, budget, capacity, minimum, flat_tol)
        if flat.all():  # MaxMin has nothing to gain anywhere: spend by the weighted objective, as the adaptive loop
            objective = "weighted"
        else:
            g = len(flat)
            low = _minimum(minimum, g, _capacity(capacity, g))
            capacity = np.where(flat, low, _capacity(capacity, g))
    if objective == "maxmin":
        n_cont = maxmin_optimum(true_curves, costs, budget, secondary=secondary, weights=weights, capacity=capacity,
                                minimum=minimum, floor_tol=floor_tol).n
    else:
        n_cont = weighted_optimum(true_curves, costs, budget, weights, capacity=capacity, minimum=minimum)
    n = integer_allocation(n_cont, true_curves, costs, budget, objective=objective, capacity=capacity,
                           minimum=minimum, weights=weights, floor_tol=floor_tol)
    if capacity is not full_capacity:
        # the groups that are not flat may be full: what they cannot take goes to the flat groups by the
        # weighted objective, as in the adaptive loop (never a budget left unspent for the rule's sake)
        n = integer_allocation(n, true_curves, costs, budget, objective="weighted", capacity=full_capacity,
                               minimum=n, weights=weights, floor_tol=floor_tol)
    return n


# --------------------------------------------------------------------------------------------
# metrics


def group_errors(curves: Sequence[CurveLike], n: Any) -> np.ndarray:
    """``e_g(n_g)`` for every group (``inf`` where ``n_g = 0``)."""
    cv = _as_curves(curves)
    nn = _vector("n", n, len(cv), allowed=">= 0", ok=lambda v: bool((v >= 0).all()))
    a, b, c = _params(cv)
    return _errors(a, b, c, nn)


def worst_group(errors: Any) -> tuple[int, float]:
    """``(argmax_g e_g, max_g e_g)``; the lower index wins ties."""
    e = np.asarray(errors, dtype=np.float64)
    i = int(np.argmax(e))
    return i, float(e[i])


def gap(errors: Any) -> float:
    """``max_g e_g − min_g e_g`` (0 for identical errors)."""
    e = np.asarray(errors, dtype=np.float64)
    return float(e.max() - e.min())


def error_summary(errors: Any, weights: Any = None) -> dict[str, float | int]:
    """Worst-group error (and which group), gap, mean and weighted mean, for reports.

    ``weights`` (e.g. population shares) are normalised to sum to 1; default uniform.
    """
    e = np.asarray(errors, dtype=np.float64)
    w = _weights(weights, len(e))
    i, worst = worst_group(e)
    return {"worst": worst, "worst_group": i, "gap": gap(e), "mean": float(e.mean()),
            "weighted": float((w * e).sum() / w.sum())}
