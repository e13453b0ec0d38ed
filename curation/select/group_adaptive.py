"""Equitable group allocation (``group-adaptive``): spend the budget where groups learn most.

The groups are the recipe's ``groups:`` (several columns make intersectional groups); the
per-group error of a proxy learner (logistic regression on the embeddings by default) is
measured on the held-out ``reference`` rows of each group. ``allocation`` picks how many items
each group gets (:mod:`curation.equity`):

* ``adaptive`` (default): the sequential loop of docs/methods/group-adaptive.md#adaptive-allocation: a pilot of ``n0`` items
  per group, then batches of ``step_frac`` of the budget, each going to the group the fitted
  learning curves say needs it most (``objective: maxmin``: re-plan the MaxMin optimum and buy
  for the largest deficit; ``weighted``: the largest marginal gain per cost);
* ``oracle``: the static optimum for curves fitted on the whole pool (every item of every
  group measured at several sizes: an upper reference that sees more data than the budget);
* ``equal``, ``proportional``: the baselines.

Within a group, items are taken in a seeded random order, so the items the adaptive loop
bought are exactly the ones selected. ``costs`` (``{group: cost}``, default 1) make the budget
a cost budget: ``Σ_g cost_g · n_g ≤ budget``. A group smaller than its allocation gives all it
has and the rest is spent elsewhere (``info["equity"]`` says which groups were short).

The selection reports, per group: count, share, cost, fitted curve ``e(n) = a·n^(−b) + c``,
predicted error at the chosen count, and the error measured by training the learner on the
final selection; plus the worst-group error, the average and the gap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import polars as pl

from curation import holdout
from curation.equity import (
    adaptive_allocate,
    equal_allocation,
    oracle_allocation,
    proportional_allocation,
)
from curation.equity.oracle import oracle_curves
from curation.equity.proxy import ProxyLearner, load_learner
from curation.exceptions import DataError, InvalidParameterError
from curation.report_schema import PlotSpec, SummarySection, format_value
from curation.select.base import Allocation, Selector
from curation.types import Pool, Selection
from curation.validation import Interval, Options, TypeOf


@dataclass(frozen=True)
class _Plan:
    """An allocation and what describing it needs: ``order[g]`` is group g's seeded random order
    (the adaptive loop bought its first items), ``finish(idx)`` the info with the errors measured
    on the final selection ``idx``."""

    counts: np.ndarray
    cap: np.ndarray
    held: np.ndarray | None
    order: list[np.ndarray]
    history: list[dict[str, Any]]
    info: dict[str, Any]
    finish: Callable[[np.ndarray], dict[str, Any]]
    label: str  # how the counts were chosen, for the rows' reasons


def _prefix_rows(order: list[np.ndarray], counts: np.ndarray) -> np.ndarray:
    """The rows an allocation selects: the first ``counts[g]`` of each group's seeded order."""
    return np.concatenate([order[g][: counts[g]] for g in range(len(order))]).astype(np.int64)


def _predicted(curves: list[dict[str, Any] | None], counts: np.ndarray) -> np.ndarray:
    """Each group's fitted curve ``a·n^(−b) + c`` at its count (NaN without a curve)."""
    return np.array([np.nan if c is None else c["a"] * max(n, 1) ** (-c["b"]) + c["c"]
                     for c, n in zip(curves, counts)])


class GroupAdaptiveSelector(Selector, name="group-adaptive"):
    """Allocate the budget across groups from their learning curves (see the module docstring).

    Args:
        objective: ``maxmin`` (minimise the worst group's error) or ``weighted`` (the
            population-weighted mean error).
        allocation: ``adaptive``, ``oracle``, ``equal`` or ``proportional``.
        costs: ``{group name: cost per item}``; unnamed groups cost 1.
        mode: adaptive decision rule: ``auto``, ``replan``, ``gradient`` or ``worst-group`` (AMS).
        n0: pilot items per group; step_frac: budget share of one adaptive batch.
        repeats: evaluations per subsample size and step; explore_p: chance of a batch that
            follows the population mix instead.
        fractions: subsample sizes (shares of a group's current count) the curves are measured
            at each step; each costs one proxy fit per group.
        secondary: MaxMin tie-break when a group's error floor binds: ``weighted_sum`` or ``leximin``.
        C: inverse L2 strength of the proxy logistic regression.
        oracle_rounds: re-measurements of the oracle's curves at its own allocation.
        group_features: the proxy sees each row's group (one intercept per group); False: the
            embeddings only.
        learner: ``python:module:factory``: your model as the proxy (a callable returning an
            unfitted estimator with ``fit`` and ``predict``, e.g. ``python:sklearn.svm:LinearSVC``;
            it gets the same features); None: logistic regression with ``C``.
        flat_tol: MaxMin's flat-curve rule: a group whose fitted curve predicts that the rest of
            the budget would lower its error by less than this (error units) is not bought for
            while another group has room (0 turns the rule off).
        validation: without a recipe ``reference``, the share of each (group, label) stratum
            of the pool held out to measure errors (never selected).
        check: after an ``adaptive`` or ``oracle`` plan, measure it and the ``equal`` and
            ``proportional`` allocations with the proxy on the held-out rows (each trained on
            the rows it would select) and keep the one that scores best on the objective
            (docs/methods/group-adaptive.md#the-check-against-the-baselines); False: keep the plan.
    """

    exact_budget: ClassVar[bool] = False  # a cost budget; and groups may run out of items
    _constraints = {
        "objective": Options({"maxmin", "weighted"}),
        "allocation": Options({"adaptive", "oracle", "equal", "proportional"}),
        "costs": TypeOf(dict, allow_none=True),
        "mode": Options({"auto", "replan", "gradient", "worst-group"}),
        "n0": Interval(1, None, integer=True),
        "step_frac": Interval(0, 1, closed="right"),
        "repeats": Interval(1, None, integer=True),
        "fractions": TypeOf((list, tuple)),
        "explore_p": Interval(0, 1),
        "secondary": Options({"weighted_sum", "leximin"}),
        "C": Interval(0, None, closed="neither"),
        "validation": Interval(0, 1, closed="neither"),
        "oracle_rounds": Interval(1, None, integer=True),
        "flat_tol": Interval(0, None),
        "group_features": TypeOf(bool),
        "learner": TypeOf(str, allow_none=True),
        "check": TypeOf(bool),
    }
    report_columns: ClassVar[dict[str, str]] = {
        "allocation_step": "the adaptive step that bought the row (1 = pilot; 0 = not bought)",
    }
    reason_codes: ClassVar[dict[str, str]] = {
        "validation_holdout": "a pool row held out to measure the groups' errors (select.validation)",
    }

    @classmethod
    def summary_section(cls, info: Mapping[str, Any], summary: Mapping[str, Any],
                        params: Mapping[str, Any]) -> list[SummarySection]:
        eq = info.get("equity")
        if not eq:
            return []
        lines = [f"group errors ({eq['objective']}, {eq['allocation']} allocation; measured on held-out rows by "
                 f"the proxy, {eq.get('learner') or 'logistic regression'}, trained on the selection): worst {format_value(eq.get('worst_group_error'))} "
                 f"({eq.get('worst_group')}), average {format_value(eq.get('average_error'))}, "
                 f"gap {format_value(eq.get('gap'))}"]
        if eq.get("check"):
            what = "worst-group error" if eq["objective"] == "maxmin" else "weighted error"
            lines.append(f"checked against the baselines ({what} on held-out rows: " + ", ".join(
                f"{k} {format_value(c['objective'])}" for k, c in eq["check"]["candidates"].items())
                + f"): kept {eq['check']['kept']}")
        if eq.get("short_groups"):
            lines.append("groups that gave all they had: " + ", ".join(eq["short_groups"]))
        cols = ("group", "n", "available", "cost", "a", "b", "c", "predicted_error", "measured_error")
        return [SummarySection("Group errors", lines=lines, table=[{k: g[k] for k in cols} for g in eq["groups"]])]

    @classmethod
    def report_plots(cls, report: pl.DataFrame, info: Mapping[str, Any], params: Mapping[str, Any]) -> list[PlotSpec]:
        """Fitted error curves e_g(n) = a·n^(−b) + c per group, with each group's chosen n marked."""
        eq = info.get("equity") or {}
        if not eq.get("curves"):
            return []
        top = max([g.get("n", 1) for g in eq.get("groups", [])] + [10])
        grid = np.geomspace(1, max(top * 2, 10), 60)
        lines = {name: (grid, c["a"] * grid ** (-c["b"]) + c["c"]) for name, c in eq["curves"].items()
                 if {"a", "b", "c"} <= set(c)}
        marks = {g["group"]: ([g["n"]], [g["predicted_error"]]) for g in eq.get("groups", [])
                 if g.get("predicted_error") is not None and g.get("n")}
        return [PlotSpec("line", heading="Learning curves", series=lines, markers=marks, logx=True,
                         xlabel="items of the group (log scale)", ylabel="error",
                         title="Fitted per-group error curves; dots: the allocation")]

    def __init__(self, *, objective: str = "maxmin", allocation: str = "adaptive", costs: dict | None = None,
                 mode: str = "auto", n0: int = 50, step_frac: float = 0.1, repeats: int = 1,
                 fractions: tuple[float, ...] = (0.5, 1.0),
                 explore_p: float = 0.0, secondary: str = "weighted_sum", C: float = 1.0,
                 validation: float = 0.2, oracle_rounds: int = 3, flat_tol: float = 0.005,
                 group_features: bool = True, learner: str | None = None, check: bool = True) -> None:
        self.objective = objective
        self.allocation = allocation
        self.costs = costs
        self.mode = mode
        self.n0 = n0
        self.step_frac = step_frac
        self.repeats = repeats
        self.fractions = fractions
        self.explore_p = explore_p
        self.secondary = secondary
        self.C = C
        self.validation = validation
        self.oracle_rounds = oracle_rounds
        self.flat_tol = flat_tol
        self.group_features = group_features
        self.learner = learner
        self.check = check

    def validate(self) -> None:
        super().validate()
        load_learner(self.learner)  # a hook that cannot be imported fails before any work

    def _costs(self, names: tuple[str, ...]) -> np.ndarray:
        costs = dict(self.costs or {})
        unknown = sorted(set(costs) - set(names))
        if unknown:
            raise InvalidParameterError(f"select.costs names group(s) {unknown} that the pool does not have; "
                                        f"groups: {list(names)[:20]}")
        bad = {k: v for k, v in costs.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0}
        if bad:
            raise InvalidParameterError(f"select.costs must be numbers > 0; got {bad}")
        return np.array([float(costs.get(n, 1.0)) for n in names])

    def _select(self, pool: Pool, budget: int, *, rng: np.random.Generator) -> Selection:
        plan = self._plan(pool, budget, rng)
        idx = _prefix_rows(plan.order, plan.counts)
        info = plan.finish(idx)
        return self._selection(pool, idx, plan.counts, plan.cap, plan.history, plan.order, info, plan.held,
                               plan.label)

    def allocate(self, pool: Pool, budget: int, *, rng: np.random.Generator) -> Allocation:
        """The planned counts as a ``select.allocate`` step. ``finish`` measures the groups'
        errors with the proxy trained on the final (composed) selection, so the summary shows
        the errors of what was published, not of the random draw the curves were fitted on."""
        plan = self._plan(pool, budget, rng)
        return Allocation(counts=plan.counts, held=plan.held, info=plan.info, finish=plan.finish,
                          reason=lambda name, q, size: f"group-adaptive ({plan.label}): group {name} gets "
                                                       f"{q} of {size} items")

    def _plan(self, pool: Pool, budget: int, rng: np.random.Generator) -> _Plan:
        """Counts per group (the allocation), plus what the report needs to describe it."""
        G = len(pool.group_names)
        costs = self._costs(pool.group_names)
        if pool.labels is None:
            raise DataError("select.method='group-adaptive' needs labels: set sources[].label in the recipe")
        held = None if pool.reference is not None else holdout.validation_rows(pool, self.validation, rng)
        learner = ProxyLearner(pool, self.C, held, group_features=self.group_features, learner=self.learner)
        selectable = np.ones(len(pool), bool)
        if held is not None:
            selectable[held] = False
        order = [rng.permutation(np.flatnonzero((pool.groups == g) & selectable)) for g in range(G)]
        cap = np.array([len(o) for o in order], dtype=float)
        shares = cap / cap.sum()
        seen = np.zeros(G, np.int64)  # the adaptive loop has bought order[g][:seen[g]]

        def evaluate(counts: np.ndarray, r: np.random.Generator) -> np.ndarray:
            counts = np.asarray(counts, dtype=np.int64)
            np.maximum(seen, counts, out=seen)
            rows = [r.choice(order[g][: seen[g]], size=counts[g], replace=False) for g in range(G) if counts[g] > 0]
            return learner.errors(np.concatenate(rows) if rows else np.zeros(0, np.int64))

        info: dict[str, Any] = {"objective": self.objective, "allocation": self.allocation}
        history: list[dict[str, Any]] = []
        curves: list[dict[str, Any] | None] = [None] * G
        if self.allocation == "adaptive":
            if (costs * np.minimum(self.n0, cap)).sum() > budget:
                raise InvalidParameterError(
                    f"budget={budget} cannot pay the pilot of n0={self.n0} items in each of {G} groups; "
                    "lower select.n0 or raise the budget")
            res = adaptive_allocate(cap, costs, float(budget), evaluate=evaluate, rng=rng, objective=self.objective,
                                    weights=shares, n0=self.n0, step_frac=self.step_frac, repeats=self.repeats,
                                    fractions=tuple(self.fractions),
                                    mode=self.mode, explore_p=self.explore_p, shares=shares,
                                    secondary=self.secondary, subsample="per-group", flat_tol=self.flat_tol)
            counts = res.counts.astype(np.int64)
            curves = list(res.curves)
            history = res.history
            predicted = res.predicted_errors
            info.update(stop_reason=res.stop_reason, steps=len(history), proxy_fits=learner.fits)
        else:
            if self.allocation == "equal":
                counts = equal_allocation(costs, float(budget), capacity=cap)
            elif self.allocation == "proportional":
                counts = proportional_allocation(shares, costs, float(budget), capacity=cap)
            counts_fit = None
            if self.allocation == "oracle":
                counts_fit = oracle_curves(cap, costs, budget, shares, evaluate, rng, rounds=self.oracle_rounds,
                                           repeats=self.repeats, objective=self.objective,
                                           secondary=self.secondary, n0=self.n0)
                curves = [f.to_dict() if f is not None else None for f in counts_fit]
                usable = [f.curve for f in counts_fit if f is not None]
                if len(usable) < G:
                    missing = [pool.group_names[g] for g, f in enumerate(counts_fit) if f is None]
                    raise DataError(f"oracle allocation: no learning curve for group(s) {missing} "
                                    "(no reference rows of that group?)")
                # the same floor as the adaptive pilot: rounding must not leave a group empty
                counts = oracle_allocation(usable, costs, float(budget), objective=self.objective,
                                           secondary=self.secondary, weights=shares, capacity=cap,
                                           minimum=np.minimum(self.n0, cap), flat_tol=self.flat_tol)
            counts = np.asarray(counts, dtype=np.int64)
            predicted = _predicted(curves, counts)
        info["validation_rows"] = len(learner.y_ref) if held is None else len(held)
        label, check, loop_history, checked = self.allocation, None, history, None
        if self.check and self.allocation in ("adaptive", "oracle"):
            counts, check, checked = self._check(counts, cap, costs, shares, budget, order, learner)
            if check["kept"] != self.allocation:
                label = f"{self.allocation}; the {check['kept']} counts measured better"
                predicted = _predicted(curves, counts)
                history = []  # the loop's steps no longer say which step bought a row (equity.history keeps them)

        def finish(idx: np.ndarray) -> dict[str, Any]:
            # select() ships exactly the rows the check measured: no second fit of the same rows
            same = checked is not None and np.array_equal(idx, _prefix_rows(order, counts))
            measured = checked if same else learner.errors(idx)
            equity = self._equity(pool.group_names, counts, cap, costs, curves, predicted, measured, loop_history)
            return {**info, "equity": equity if check is None else {**equity, "check": check}}

        return _Plan(counts=counts, cap=cap, held=held, order=order, history=history, info=info, finish=finish,
                     label=label)

    def _check(self, counts: np.ndarray, cap: np.ndarray, costs: np.ndarray, shares: np.ndarray, budget: int,
               order: list[np.ndarray], learner: ProxyLearner,
               ) -> tuple[np.ndarray, dict[str, Any], np.ndarray]:
        """The plan's counts, or the ``proportional`` or ``equal`` counts when the proxy measures
        one of them better on the held-out rows; what was measured; and the kept counts' group
        errors.

        Each candidate is scored by training the proxy on exactly the rows it would select (the
        first ``n_g`` of each group's order). The score is the objective on the held-out rows
        (``maxmin``: the worst group's error; ``weighted``: the share-weighted mean error), then
        the error over all held-out rows; ties keep the plan, then proportional. A plan built
        from fitted curves can lose to a baseline on its own proxy (a curve fitted to a few noisy
        points, a group whose error does not follow a power law); the check makes sure the
        selector never ships a plan its own measurement says is worse than the baselines."""
        candidates = {self.allocation: counts,
                      "proportional": proportional_allocation(shares, costs, float(budget), capacity=cap),
                      "equal": equal_allocation(costs, float(budget), capacity=cap)}
        scored: dict[str, dict[str, Any]] = {}
        errors: dict[str, np.ndarray] = {}
        for name, c in candidates.items():
            c = np.asarray(c, dtype=np.int64)
            err = learner.errors(_prefix_rows(order, c))
            errors[name] = err
            ok = np.isfinite(err)
            if not ok.any():  # nothing measured: no reason to leave the plan
                objective = overall = float("inf")
            else:
                objective = (float(err[ok].max()) if self.objective == "maxmin"
                             else float(np.average(err[ok], weights=shares[ok])))
                overall = float(np.average(err[ok], weights=np.maximum(learner.ref_counts[ok], 1)))
            scored[name] = {"objective": round(objective, 6), "overall_error": round(overall, 6),
                            "counts": c.tolist()}
        kept = min(scored, key=lambda k: (scored[k]["objective"], scored[k]["overall_error"]))  # first of ties
        return np.asarray(candidates[kept], dtype=np.int64), {"kept": kept, "candidates": scored}, errors[kept]

    def _equity(self, names: tuple[str, ...], counts: np.ndarray, cap: np.ndarray, costs: np.ndarray, curves: list,
                predicted: np.ndarray, measured: np.ndarray, history: list) -> dict[str, Any]:
        """``info["equity"]``: per group the count, the fitted curve, the predicted and the measured
        error; the worst group, the average and the gap of the measured errors."""
        n_sel = max(int(counts.sum()), 1)
        groups = []
        for g, name in enumerate(names):
            cur = curves[g] or {}
            groups.append({"group": name, "n": int(counts[g]), "available": int(cap[g]),
                           "share": round(counts[g] / n_sel, 4), "cost": float(costs[g]),
                           **{k: (round(float(cur[k]), 6) if k in cur else None) for k in ("a", "b", "c")},
                           "predicted_error": None if not np.isfinite(predicted[g]) else round(float(predicted[g]), 4),
                           "measured_error": None if not np.isfinite(measured[g]) else round(float(measured[g]), 4)})
        finite = measured[np.isfinite(measured)]
        return {
            "objective": self.objective, "allocation": self.allocation, "groups": groups,
            "learner": self.learner or f"logistic regression (C={self.C:g})", "group_features": self.group_features,
            "curves": {names[g]: {k: float(c[k]) for k in ("a", "b", "c")} for g, c in enumerate(curves) if c},
            "worst_group_error": round(float(finite.max()), 4) if len(finite) else None,
            "average_error": round(float(np.average(finite)), 4) if len(finite) else None,
            "gap": round(float(finite.max() - finite.min()), 4) if len(finite) else None,
            "short_groups": [names[g] for g in range(len(names)) if counts[g] >= cap[g] > 0],
            "history": [{k: v for k, v in h.items() if k in ("step", "action", "group", "spent")} for h in history],
            "worst_group": names[int(np.nanargmax(measured))] if len(finite) else None,
        }

    def _selection(self, pool: Pool, idx: np.ndarray, counts: np.ndarray, cap: np.ndarray, history: list,
                   order: list, info: dict[str, Any], held: np.ndarray | None, label: str) -> Selection:
        names = pool.group_names
        # the adaptive step that bought each item: the first step whose counts cover its position
        step = np.zeros(len(pool), np.int64)
        if history:
            for g in range(len(names)):
                bought = np.array([h["counts"][g] for h in history] + [counts[g]])
                pos = np.arange(counts[g])
                step[order[g][: counts[g]]] = np.searchsorted(bought, pos, side="right") + 1
        chosen = np.zeros(len(pool), bool)
        chosen[idx] = True
        reasons = np.array([
            f"group-adaptive ({label}): group {names[gc]} gets {counts[gc]} of {int(cap[gc])} items"
            + ("" if sel else ", this one is beyond its allocation")
            for gc, sel in zip(pool.groups, chosen)], dtype=object)
        codes = np.where(chosen, "selected", "not_selected").astype(object)
        if held is not None:
            reasons[held] = "group-adaptive: held out to measure the groups' errors (select.validation)"
            codes[held] = "validation_holdout"
        columns = {"allocation_step": step} if history else {}
        return Selection(indices=idx, reasons=reasons, info=info, columns=columns, reason_codes=codes)
