"""Sequential (adaptive) allocation when the learning curves are unknown (docs/methods/group-adaptive.md#algorithms).

The loop buys data in small batches and learns each group's curve from the data bought so
far (a library reconstruction matching the abstract of Cai et al., FAccT 2023; see §3.1):

1. **Pilot.** Every group gets ``min(n0, capacity_g)`` samples (an exploration floor).
2. **Subsampled learning curves.** For each fraction ``f`` in ``fractions`` (1.0 always
   included) and each of ``repeats`` repetitions, ``evaluate(floor(f · counts), rng)`` returns
   the per-group validation error of a model trained on that many items of every group
   (at least one item of each group that has any). Every (count, error) pair is kept.
3. **Fit** a :class:`~curation.equity.curves.PowerLaw` per group on all points gathered so far.
4. **Decide** which group gets the next batch (``mode``):

   * ``"gradient"``: ``weighted`` objective → ``argmax_g w_g · (−ê'_g(n_g)) / κ_g``;
     ``maxmin`` → the group with the highest *fitted* error ``ê_g(n_g)`` (the subgradient of
     ``max_g ê_g``), groups already within ``floor_tol`` of their fitted asymptote last.
   * ``"replan"``: solve the static optimum for the fitted curves and the **whole** budget
     (:func:`~curation.equity.static.maxmin_optimum` or
     :func:`~curation.equity.static.weighted_optimum`, with the capacities and with the counts
     already bought as a lower bound, since bought data cannot be returned) and buy from the
     group with the largest deficit ``(n*_g − n_g) · κ_g``.
   * ``"worst-group"`` (AMS, Abernethy et al. 2022): the group with the highest *measured*
     error at the current counts (the curve fits are still made, for the report).
   * ``"auto"`` (default): ``gradient`` for ``weighted``, ``replan`` for ``maxmin`` (as §3.3).

   With probability ``explore_p`` the batch is instead split across groups by the population
   ``shares`` (AMS's parameter ``p``).
5. **Buy** ``max(1, floor(step_frac · B / κ_g))`` samples of that group, never beyond
   ``capacity_g`` nor the budget left, and in ``replan`` mode never beyond the plan
   (``ceil(n*_g − n_g)``; otherwise the last batches overshoot the optimum by up to a batch).
   A group at capacity (or too expensive for what is left) is skipped and the next-best group
   is served; the history says so.

The loop stops when no group with room can be paid for. Invariants: ``Σ κ_g n_g ≤ B`` after
every step and ``n_g ≥ min(n0, capacity_g)``.

``evaluate`` is the caller's: on real data it trains a proxy on a stratified subsample of the
items bought so far; in tests it is a synthetic power law. It is called
``len(fractions) · repeats`` times per step (plus once more per fraction at the end).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curation.equity.curves import CurveFit, PowerLaw, fit_power_law
from curation.equity.static import (
    _EPS,
    _weights,
    check_budget_amount,
    check_costs,
    flat_groups,
    maxmin_optimum,
    oracle_allocation,
    proportional_allocation,
    weighted_optimum,
)
from curation.exceptions import DataError, InvalidParameterError
from curation.random import Seed, check_rng

__all__ = ["AdaptiveResult", "adaptive_allocate", "oracle_allocation"]

Evaluate = Callable[[np.ndarray, np.random.Generator], np.ndarray]

_MODES = ("auto", "replan", "gradient", "worst-group")


@dataclass(frozen=True)
class AdaptiveResult:
    """What :func:`adaptive_allocate` bought and learned.

    Attributes:
        counts: final integer counts per group.
        curves: the final fitted curve of each group as a dict (``CurveFit.to_dict()``: a, b, c,
            their bootstrap std, residual), or None for a group with too few distinct sizes.
        history: one small dict per step: ``step``, ``action`` (``pilot``, ``gradient``,
            ``replan``, ``worst-group``, ``explore`` or ``no-curve``), ``group`` (the group
            bought from, None for the pilot and exploration), ``bought`` (per-group amounts of
            this step), ``counts`` (after the step), ``spent``, ``errors`` (measured errors at
            the counts before the step), ``skipped`` (groups ranked above the one served that
            were full, unaffordable or flat, with the reason) and ``flat`` (the groups the
            flat-curve rule held back at this step).
        predicted_errors: the final fitted curves at the final counts (NaN without a curve).
        measured_errors: mean measured error at the final counts (fraction 1.0).
        spent: ``Σ κ_g counts_g``.
        budget: ``B``.
        stop_reason: ``"budget"`` (nothing affordable is left) or ``"capacity"`` (every group
            is full).
    """

    counts: np.ndarray
    curves: tuple[dict[str, Any] | None, ...]
    history: list[dict[str, Any]]
    predicted_errors: np.ndarray
    measured_errors: np.ndarray
    spent: float
    budget: float
    stop_reason: str
    objective: str
    mode: str

    def power_laws(self) -> list[PowerLaw | None]:
        """The fitted curves as :class:`PowerLaw` objects (None where there is no fit)."""
        return [None if d is None else PowerLaw.from_dict(d) for d in self.curves]

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts.tolist(), "curves": list(self.curves), "history": self.history,
                "predicted_errors": self.predicted_errors.tolist(), "measured_errors": self.measured_errors.tolist(),
                "spent": self.spent, "budget": self.budget, "stop_reason": self.stop_reason,
                "objective": self.objective, "mode": self.mode}


def _check_capacity(capacity: Any) -> np.ndarray:
    cap = np.atleast_1d(np.asarray(capacity, dtype=np.float64))
    if cap.ndim != 1 or len(cap) == 0:
        raise InvalidParameterError(f"The 'capacity' parameter must be a 1-D array with one count per group. "
                                    f"Got shape {cap.shape} instead.")
    finite = cap[np.isfinite(cap)]
    if np.isnan(cap).any() or (cap < 0).any() or not np.equal(np.floor(finite), finite).all():
        raise InvalidParameterError(f"The 'capacity' parameter must hold whole numbers >= 0 (inf = unlimited). "
                                    f"Got {cap.tolist()!r} instead.")
    return cap


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    try:
        fr = [float(f) for f in fractions]
    except (TypeError, ValueError):
        fr = []
    if not fr or any(not (0 < f <= 1) for f in fr):
        raise InvalidParameterError(f"The 'fractions' parameter must be a non-empty sequence of numbers in (0, 1]. "
                                    f"Got {fractions!r} instead.")
    return tuple(sorted(set(fr) | {1.0}))  # the full counts give the "current error"


def _check_number(name: str, value: Any, low: float, high: float | None, *, integer: bool = False,
                  low_open: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    ok = ok and math.isfinite(value) and (value > low if low_open else value >= low)
    ok = ok and (high is None or value <= high) and (not integer or float(value).is_integer())
    if not ok:
        lb = "(" if low_open else "["
        rng_txt = f"{lb}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        kind = "an int" if integer else "a number"
        raise InvalidParameterError(f"The {name!r} parameter of adaptive_allocate must be {kind} in the range "
                                    f"{rng_txt}. Got {value!r} instead.")


def adaptive_allocate(capacity: Any, costs: Any, budget: float, *, evaluate: Evaluate, rng: Seed,
                      objective: str = "maxmin", weights: Any = None, n0: int = 50, step_frac: float = 0.02,
                      fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0), repeats: int = 3, mode: str = "auto",
                      explore_p: float = 0.0, shares: Any = None, bootstrap: int = 0,
                      secondary: str = "weighted_sum", floor_tol: float = 1e-3,
                      subsample: str = "joint", flat_tol: float = 0.0) -> AdaptiveResult:
    """Buy a budget of samples across groups in batches, learning the curves as it goes.

    See the module docstring for the loop. Args:
        capacity: samples available per group (whole numbers; ``inf`` = unlimited). Its length
            fixes the number of groups G.
        costs: cost per sample of each group (> 0).
        budget: total budget ``B`` (same unit as ``costs``).
        evaluate: ``evaluate(counts, rng) -> errors``: per-group validation error (shape (G,))
            of a model trained on ``counts[g]`` items of each group g. Errors of groups with
            ``counts[g] = 0`` are ignored (may be NaN).
        rng: seed or Generator; passed to ``evaluate`` and used for exploration and bootstrap.
        objective: ``"maxmin"`` (minimise the worst group's error) or ``"weighted"``
            (minimise ``Σ w_g e_g``).
        weights: ``w`` for the weighted objective / MaxMin's weighted-sum secondary (default
            uniform; pass the population shares for the paper's default).
        n0: pilot samples per group (capped at capacity).
        step_frac: budget of one batch as a fraction of ``B``.
        fractions: subsample fractions for the learning curves (1.0 is always added).
        repeats: evaluations per fraction and step.
        mode: ``"auto"``, ``"replan"``, ``"gradient"`` or ``"worst-group"`` (module docstring).
        explore_p: probability that a batch follows the population ``shares`` instead.
        shares: population shares π (needed when ``explore_p > 0``).
        bootstrap: bootstrap refits for the *final* curves' ``params_std`` (decisions use point
            fits, to keep each step cheap).
        secondary, floor_tol: MaxMin tie-breaking and floors, as in
            :func:`~curation.equity.static.maxmin_optimum` (used by ``replan`` and ``gradient``).
        subsample: how the learning-curve points are measured. ``"joint"`` (§3.3): every group
            at the same fraction ``f`` of its count. ``"per-group"``: one group at a time at
            fraction ``f`` while the others keep their full counts, so a point of group g
            reflects g's own data only. Use it when one model is trained on all groups:
            jointly scaled data also moves g's error through the other groups (a group whose
            boundary differs gets *worse* as the others grow), and the joint curve of a
            minority can come out flat. Costs ``G·(len(fractions)−1) + 1`` evaluations per
            repeat instead of ``len(fractions)``.
        flat_tol: MaxMin's flat-curve rule (:func:`~curation.equity.static.flat_groups`): a
            group whose fitted curve says that everything left of the budget would lower its
            error by less than ``flat_tol`` is not bought for while another group has room (in
            ``replan`` it is held at its count in the plan; in ``gradient`` it is served last).
            0 turns the rule off.

    Returns:
        An :class:`AdaptiveResult`.

    Raises:
        InvalidParameterError: an out-of-range parameter, mismatched lengths, or a budget that
            cannot pay for the pilot.
        DataError: ``evaluate`` returned the wrong shape.
    """
    cap = _check_capacity(capacity)
    g = len(cap)
    kappa = check_costs(costs, g)
    budget = check_budget_amount(budget)
    if objective not in ("maxmin", "weighted"):
        raise InvalidParameterError(f"The 'objective' parameter of adaptive_allocate must be one of 'maxmin', "
                                    f"'weighted'. Got {objective!r} instead.")
    if mode not in _MODES:
        raise InvalidParameterError(f"The 'mode' parameter of adaptive_allocate must be one of "
                                    f"{', '.join(repr(m) for m in _MODES)}. Got {mode!r} instead.")
    if secondary not in ("weighted_sum", "leximin"):
        raise InvalidParameterError(f"The 'secondary' parameter of adaptive_allocate must be one of 'leximin', "
                                    f"'weighted_sum'. Got {secondary!r} instead.")
    if not callable(evaluate):
        raise InvalidParameterError(f"The 'evaluate' parameter of adaptive_allocate must be callable. "
                                    f"Got {type(evaluate).__name__} instead.")
    _check_number("n0", n0, 1, None, integer=True)
    _check_number("step_frac", step_frac, 0, 1, low_open=True)
    _check_number("repeats", repeats, 1, None, integer=True)
    _check_number("explore_p", explore_p, 0, 1)
    _check_number("bootstrap", bootstrap, 0, None, integer=True)
    _check_number("floor_tol", floor_tol, 0, None)
    _check_number("flat_tol", flat_tol, 0, None)
    fracs = _check_fractions(fractions)
    w = _weights(weights, g)
    pi = None
    if explore_p > 0:
        if shares is None:
            raise InvalidParameterError("The 'shares' parameter of adaptive_allocate is required when explore_p > 0 "
                                        f"(explore_p={explore_p!r}): exploration batches follow the population mix.")
        pi = _weights(shares, g)
    elif shares is not None:
        _weights(shares, g)  # still validate what was passed
    if subsample not in ("joint", "per-group"):
        raise InvalidParameterError(f"The 'subsample' parameter of adaptive_allocate must be one of 'joint', "
                                    f"'per-group'. Got {subsample!r} instead.")
    if mode == "auto":
        mode = "gradient" if objective == "weighted" else "replan"
    gen = check_rng(rng)

    counts = np.minimum(np.full(g, float(n0)), cap)
    spent = float((kappa * counts).sum())
    if spent > budget * (1 + _EPS):
        raise InvalidParameterError(
            f"The 'budget' parameter ({budget:g}) cannot pay for the pilot: n0={n0} samples per group "
            f"(capped at capacity: {counts.astype(int).tolist()}) cost {spent:g}. Lower n0 or raise the budget.")
    batch_budget = step_frac * budget
    slack = _EPS * budget
    points: list[list[tuple[float, float]]] = [[] for _ in range(g)]

    def designs(cnt: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """(fraction, counts to evaluate, groups whose points they give)."""
        out = []
        every = np.ones(g, bool)
        for f in fracs:
            sub = np.where(cnt > 0, np.maximum(1.0, np.floor(f * cnt + 1e-9)), 0.0)
            if subsample == "joint" or f == 1.0:
                out.append((f, sub, every))
            else:
                for h in range(g):
                    if cnt[h] > 0:
                        one = cnt.copy()
                        one[h] = sub[h]
                        out.append((f, one, np.arange(g) == h))
        return out

    def observe(cnt: np.ndarray) -> np.ndarray:
        """Evaluate every design ``repeats`` times; keep the points; return the errors at 1.0."""
        full = np.zeros((int(repeats), g))
        for f, sub, for_groups in designs(cnt):
            for r in range(int(repeats)):
                err = np.asarray(evaluate(sub.astype(np.int64), gen), dtype=np.float64)
                if err.shape != (g,):
                    raise DataError(f"evaluate must return one error per group, shape ({g},); got shape {err.shape}")
                for h in range(g):
                    if for_groups[h] and sub[h] >= 1 and np.isfinite(err[h]):
                        points[h].append((float(sub[h]), float(err[h])))
                if f == 1.0:
                    full[r] = err
        with np.errstate(invalid="ignore"):
            return np.where(cnt > 0, full.mean(axis=0), np.nan)

    def fit_all(n_boot: int = 0) -> list[CurveFit | None]:
        out: list[CurveFit | None] = []
        for h in range(g):
            pts = points[h]
            if len({p[0] for p in pts}) < 2:
                out.append(None)
                continue
            arr = np.asarray(pts)
            out.append(fit_power_law(arr[:, 0], arr[:, 1], bootstrap=n_boot, rng=gen if n_boot else None))
        return out

    history: list[dict[str, Any]] = [{"step": 0, "action": "pilot", "group": None, "bought": counts.astype(int).tolist(),
                                      "counts": counts.astype(int).tolist(), "spent": spent, "errors": None,
                                      "skipped": []}]
    step = 0
    while True:
        errs_now = observe(counts)
        fits = fit_all()
        left = budget - spent
        room = counts < cap
        afford = kappa <= left + slack
        if not (room & afford).any():
            stop_reason = "capacity" if not room.any() else "budget"
            break
        step += 1
        bought = np.zeros(g)
        if pi is not None and gen.random() < explore_p:
            delta = min(batch_budget, left)
            # the batch follows the population mix; groups without room drop out of it
            bought = proportional_allocation(np.where(room, pi, 0.0), kappa, delta,
                                             capacity=cap - counts).astype(np.float64)
            if bought.sum() == 0:  # the batch is too small for any share: one item of the cheapest group with room
                i = int(np.argmin(np.where(room & afford, kappa, np.inf)))
                bought[i] = 1
            action, chosen, skipped, flat = "explore", None, [], np.zeros(g, bool)
        else:
            action, order, target, flat = _rank(mode, objective, fits, counts, cap, kappa, w, budget, errs_now,
                                                secondary, floor_tol, flat_tol)
            skipped = []
            chosen = None
            # a flat group is bought for only when no other group has room and can be paid for
            others = room & afford & ~flat
            for i in order:
                if not room[i] or not afford[i] or (flat[i] and others.any()):
                    reason = "full" if not room[i] else "unaffordable" if not afford[i] else "flat"
                    skipped.append({"group": int(i), "reason": reason})
                    continue
                chosen = int(i)
                break
            assert chosen is not None  # some group has room and is affordable (checked above)
            k = max(1, math.floor(batch_budget / kappa[chosen] + 1e-9))
            if target is not None:
                # replan: a batch never overshoots the plan. The plan spends the whole budget, so the
                # largest deficit is at least 1/G of what is left and the tail stays short; a plan
                # with nothing left for this group (zero weights) falls back to a full batch.
                planned = math.ceil(target[chosen] - counts[chosen] - 1e-9)
                if planned >= 1:
                    k = min(k, planned)
            k = min(k, cap[chosen] - counts[chosen], math.floor((left + slack) / kappa[chosen]))
            bought[chosen] = k
        counts = counts + bought
        spent += float((kappa * bought).sum())
        history.append({"step": step, "action": action, "group": chosen, "bought": bought.astype(int).tolist(),
                        "counts": counts.astype(int).tolist(), "spent": spent,
                        "errors": [None if not np.isfinite(e) else float(e) for e in errs_now], "skipped": skipped,
                        "flat": np.flatnonzero(flat).tolist()})

    if bootstrap:
        fits = fit_all(int(bootstrap))
    predicted = np.array([np.nan if f is None else float(f.curve.error(counts[h])) for h, f in enumerate(fits)])
    return AdaptiveResult(counts=counts.astype(np.int64), curves=tuple(None if f is None else f.to_dict() for f in fits),
                          history=history, predicted_errors=predicted, measured_errors=errs_now, spent=spent,
                          budget=budget, stop_reason=stop_reason, objective=objective, mode=mode)


def _rank(mode: str, objective: str, fits: list[CurveFit | None], counts: np.ndarray, cap: np.ndarray,
          kappa: np.ndarray, w: np.ndarray, budget: float, errs_now: np.ndarray, secondary: str,
          floor_tol: float, flat_tol: float = 0.0) -> tuple[str, list[int], np.ndarray | None, np.ndarray]:
    """Groups in the order they should receive the next batch (best first; ties: lower index),
    for ``replan`` the planned counts, and the flat groups (MaxMin's flat-curve rule)."""
    g = len(counts)
    flat = np.zeros(g, bool)
    missing = [h for h in range(g) if fits[h] is None and counts[h] < cap[h]]
    if missing and mode != "worst-group":
        # a group we cannot model yet gets data first; the rest follow in index order
        return "no-curve", missing + [h for h in range(g) if h not in missing], None, flat
    if mode == "worst-group":
        score = np.where(np.isfinite(errs_now), errs_now, np.inf)
        return mode, sorted(range(g), key=lambda h: (-score[h], h)), None, flat
    curves = {h: f.curve for h, f in enumerate(fits) if f is not None}
    idx = np.array(sorted(curves), dtype=np.int64)
    fixed = np.setdiff1d(np.arange(g), idx)
    avail = budget - float((kappa[fixed] * counts[fixed]).sum())
    sub_curves = [curves[h] for h in idx]
    if objective == "maxmin" and flat_tol > 0:
        spent = float((kappa[idx] * counts[idx]).sum())
        flat[idx] = flat_groups(sub_curves, kappa[idx], max(avail - spent, 0.0), cap[idx], counts[idx], flat_tol)
    grad = np.array([w[h] * -float(curves[h].derivative(counts[h])) / kappa[h] if h in curves else 0.0
                     for h in range(g)])
    if flat.any() and (flat | (counts >= cap)).all():
        # every group with room is flat: MaxMin has nothing left to gain, so the rest of the budget
        # goes where it lowers the weighted error most (the secondary objective)
        return mode, sorted(range(g), key=lambda h: (-grad[h], h)), None, flat
    if mode == "gradient":
        if objective == "weighted":
            return mode, sorted(range(g), key=lambda h: (-grad[h], h)), None, flat
        fitted = np.array([float(curves[h].error(counts[h])) if h in curves else -np.inf for h in range(g)])
        at_floor = np.array([h in curves and (fitted[h] <= curves[h].c + floor_tol or flat[h]) for h in range(g)])
        order = sorted(range(g), key=lambda h: (at_floor[h], -(grad[h] if at_floor[h] else fitted[h]), h))
        return mode, order, None, flat
    # replan: static optimum of the fitted curves over the whole budget, bought counts as a floor;
    # a flat group is held at its count (its capacity in the plan), so the plan spends elsewhere
    if objective == "maxmin":
        plan_cap = np.where(flat[idx], counts[idx], cap[idx])
        target = maxmin_optimum(sub_curves, kappa[idx], avail, secondary=secondary, weights=w[idx],
                                capacity=plan_cap, minimum=counts[idx], floor_tol=floor_tol).n
    else:
        target = weighted_optimum(sub_curves, kappa[idx], avail, w[idx], capacity=cap[idx], minimum=counts[idx])
    deficit = np.full(g, -np.inf)
    deficit[idx] = (target - counts[idx]) * kappa[idx]
    planned = counts.astype(np.float64).copy()
    planned[idx] = target
    return mode, sorted(range(g), key=lambda h: (-deficit[h], h)), planned, flat
