"""Composed selection (``chain``): filter, then allocate across groups, then select within each group.

One recipe ``select`` section can chain three steps (docs/methods/chain.md)::

    select:
      budget: 5000
      filter: {method: value-threshold, mode: drop, drop_fraction: 0.1}   # optional
      allocate: {method: group-adaptive, objective: maxmin}              # or stratified
      within: {method: kmq, quality: influence}                          # or quad, kmq-iterative, random

1. **filter** (optional; a selector with :meth:`~curation.select.base.Selector.keep`, e.g.
   ``value-threshold`` in ``drop`` mode): the rows it drops never reach the next steps.
2. **allocate** (optional; a selector with :meth:`~curation.select.base.Selector.allocate`:
   ``stratified`` or ``group-adaptive``): integer quotas ``q_g`` per group over the filtered
   pool, ``Σ q_g ≤ budget`` and ``q_g ≤`` the group's filtered size. Without it the whole
   filtered pool is one quota of ``budget``.
3. **within** (default ``random``; any selector that does not allocate across groups): for each
   group with ``0 < q_g <`` its size, the selector runs on that group's rows alone with budget
   ``q_g``. Clusters are the build's global clusters restricted to the group (one k-means, one
   cluster space the report can compare across groups); a cluster-aware selector such as kMQ
   therefore spreads each group's quota over the clusters that group occupies. Likewise a
   quality scorer judges a group's items within the whole filtered pool (:meth:`Pool.part
   <curation.types.Pool.part>`): ``influence`` fits its proxy on all groups' rows, because the
   groups' picks end up in one training set (a proxy of one group alone may see one class
   only). A group whose
   quota covers it entirely is taken whole, and one with quota 0 gives nothing: the allocation
   decided those rows.

So the quota of every group is met exactly whenever the within selector fills its budget (all
but Quad, which may stop short rather than take chunks it judged bad). The report's
``decided_by`` column names the step that decided each row (``filter``, ``allocate`` or
``within``), ``quota`` its group's quota, and the reason text starts with that step.

Randomness: the rng is split into one child stream per step, and the within stream into one per
group (in group-code order), so a group's picks do not depend on how many draws another group's
selector made.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import polars as pl

from curation.exceptions import CurationError, InvalidParameterError
from curation.report_schema import PlotSpec, SummarySection
from curation.select.base import Selector, build_selector
from curation.types import Pool, RowReasons, Selection

STEPS = ("filter", "allocate", "within")


def _step_selector(step: str, spec: Any) -> Selector:
    """The selector of one step from its recipe mapping; errors name ``select.<step>``."""
    if not isinstance(spec, Mapping) or "method" not in spec:
        raise InvalidParameterError(f"select.{step} is a mapping with a method, e.g. "
                                    + {"filter": "{method: value-threshold, mode: drop, drop_fraction: 0.1}",
                                       "allocate": "{method: stratified, mode: equal}",
                                       "within": "{method: kmq}"}[step] + f"; got {spec!r}")
    if "budget" in spec:
        raise InvalidParameterError(f"select.{step}.budget: the budget belongs to select itself "
                                    f"(select.budget), not to one step; remove select.{step}.budget")
    params = {k: v for k, v in spec.items() if k != "method"}
    try:
        selector = build_selector(spec["method"], **params)
    except CurationError as exc:
        msg = str(exc).replace("select.", f"select.{step}.")
        raise InvalidParameterError(msg if f"select.{step}." in msg else f"select.{step}: {msg}") from None
    cls = type(selector)
    if step in ("filter", "allocate"):
        selector.check_step(step)
    if step == "within" and (cls.can("allocate") or cls is ChainSelector):
        raise InvalidParameterError(f"select.within.method={spec['method']!r} allocates across groups itself; "
                                    "put it under select.allocate and choose a within-group method "
                                    "(kmq, kmq-iterative, quad, random)")
    return selector


class ChainSelector(Selector, name="chain"):
    """Filter, allocate across groups, then select within each group (see the module docstring).

    The recipe may leave out ``method: chain``: a ``select`` section with ``allocate`` or
    ``within`` is a chain.

    Args:
        filter: the optional filter step, e.g. ``{method: value-threshold, mode: drop}``.
        allocate: the optional allocation step, ``{method: stratified, ...}`` or
            ``{method: group-adaptive, ...}``.
        within: the within-group step (default ``{method: random}``), e.g. ``{method: kmq}``.
    """

    report_columns: ClassVar[dict[str, str]] = {
        "decided_by": "the step of the composed selection that decided the row: filter, allocate or within",
        "quota": "the row's group quota from the allocate step (null for rows the filter dropped)",
    }
    reason_codes: ClassVar[dict[str, str]] = {
        "filtered": "dropped by the select.filter step",
        "validation_holdout": "held out by the select.allocate step to measure the groups' errors",
    }

    def __init__(self, *, filter: dict | None = None, allocate: dict | None = None,
                 within: dict | None = None) -> None:
        self.filter = filter
        self.allocate_ = allocate
        self.within = within

    # the step named allocate shadows Selector.allocate (the hook): keep the hook, store the spec apart
    def params(self) -> dict[str, Any]:
        return {"filter": self.filter, "allocate": self.allocate_, "within": self.within}

    def validate(self) -> None:
        self._steps  # noqa: B018 -- building the steps checks them

    @functools.cached_property
    def _steps(self) -> tuple[Selector | None, Selector | None, Selector]:
        """The three step selectors, built (and checked) once."""
        if self.allocate_ is None and self.within is None:
            raise InvalidParameterError("a composed select needs select.allocate or select.within, e.g. "
                                        "allocate: {method: stratified, mode: equal}, within: {method: kmq}")
        return (None if self.filter is None else _step_selector("filter", self.filter),
                None if self.allocate_ is None else _step_selector("allocate", self.allocate_),
                _step_selector("within", self.within or {"method": "random"}))

    @property
    def exact_budget(self) -> bool:  # type: ignore[override]
        # a filter may leave fewer rows than the budget; group-adaptive spends a cost budget; Quad may stop short
        filt, alloc, within = self._steps
        return filt is None and (alloc is None or type(alloc).exact_budget) and type(within).exact_budget

    def _select(self, pool: Pool, budget: int, *, rng: np.random.Generator) -> Selection:
        filt, alloc, within = self._steps
        r_filter, r_alloc, r_within = rng.spawn(3)
        n, names = len(pool), pool.group_names
        reasons = np.empty(n, dtype=object)
        codes = np.full(n, "not_selected", dtype=object)
        decided = np.full(n, "within", dtype=object)
        quota_of = np.full(n, -1, dtype=np.int64)
        info: dict[str, Any] = {"steps": {}}

        # 1. filter
        alive = np.arange(n)
        if filt is not None:
            kept = filt.keep(pool, rng=r_filter)
            gone = ~kept.mask
            reasons[gone] = [f"filter: {r}" for r in kept.reasons[gone]]
            codes[gone], decided[gone] = "filtered", "filter"
            alive = np.flatnonzero(kept.mask)
            info["steps"]["filter"] = {"method": filt.name, **kept.info}
        sub = pool.take(alive) if filt is not None else pool

        # 2. allocate (over the filtered pool)
        held = np.zeros(len(sub), bool)
        if alloc is not None:
            plan = alloc.allocate(sub, budget, rng=r_alloc)
            counts = np.asarray(plan.counts, dtype=np.int64)
            if plan.held is not None:
                held[plan.held] = True
                rows = alive[plan.held]
                reasons[rows] = [f"allocate: {alloc.name}: held out to measure the groups' errors"] * len(rows)
                codes[rows], decided[rows] = "validation_holdout", "allocate"
            info["steps"]["allocate"] = {"method": alloc.name, "info": plan.info}
            describe = plan.reason or (lambda name, q, size: f"{alloc.name}: group {name!r} quota {q} of {size}")
        else:
            counts, plan = None, None

        # 3. within each group (or over the whole filtered pool without an allocation)
        children = r_within.spawn(len(names) if alloc is not None else 1)
        units = ([(g, np.flatnonzero((sub.groups == g) & ~held)) for g in range(len(names))] if alloc is not None
                 else [(None, np.flatnonzero(~held))])
        picked: list[np.ndarray] = []
        groups_table = []
        within_info: dict[str, Any] = {}
        for (g, members), child in zip(units, children):
            q = int(min(budget if g is None else counts[g], len(members)))
            rows = alive[members]
            quota_of[rows] = q
            head = "within" if g is None else f"allocate: {describe(names[g], q, len(members))}"
            if q == 0 or q >= len(members):  # nothing to choose: the group is taken whole or gets nothing
                got = members[:q]
                text = ("every item that passed the filter taken" if g is None else
                        "every item of the group taken" if q else "the group gets no items")
                reasons[rows] = [f"{head}; {text}"] * len(rows)
                decided[rows] = "within" if g is None else "allocate"
            else:
                sel = within.select(sub.part(members), q, rng=child)
                got = members[sel.indices]
                why = (sel.reasons.to_list() if isinstance(sel.reasons, (pl.Series, RowReasons))
                       else [str(r) for r in sel.reasons] if sel.reasons is not None
                       else np.where(sel.mask(len(members)), "selected", "not selected").tolist())
                reasons[rows] = [f"{head}; within: {w}" for w in why]
                if g is not None and sel.info:
                    within_info[names[g]] = sel.info
                elif sel.info:
                    within_info = sel.info
            picked.append(alive[got])
            if g is not None:
                groups_table.append({"group": names[g], "pool": int((pool.groups == g).sum()),
                                     "after_filter": int((sub.groups == g).sum()), "quota": q,
                                     "selected": len(got), "decided_by": "allocate" if q in (0, len(members))
                                     else "within"})
        idx = np.concatenate(picked).astype(np.int64) if picked else np.zeros(0, np.int64)
        codes[idx] = "selected"
        info["steps"]["within"] = {"method": within.name, **({"info": within_info} if within_info else {})}
        if plan is not None and plan.finish is not None:  # e.g. the groups' errors of what was selected
            info["steps"]["allocate"]["info"] = plan.finish(np.searchsorted(alive, idx))  # positions in `sub`
        if groups_table:
            info["groups"] = groups_table
        return Selection(indices=idx, reasons=reasons, reason_codes=codes, info=info,
                         columns={"decided_by": decided, "quota": np.where(quota_of >= 0, quota_of, np.nan)})

    # ---------------------------------------------------------------- report hooks
    @classmethod
    def summary_section(cls, info: Mapping[str, Any], summary: Mapping[str, Any],
                        params: Mapping[str, Any]) -> list[SummarySection]:
        steps = info.get("steps") or {}
        lines = [" -> ".join(f"{s} ({steps[s]['method']})" for s in STEPS if s in steps)]
        if "filter" in steps:
            lines.append(f"filter dropped {steps['filter'].get('dropped', 0)} items")
        out = [SummarySection("Composed selection", lines=lines, table=list(info.get("groups") or []))]
        alloc = steps.get("allocate")
        if alloc:  # the allocator's own block (e.g. group-adaptive's group errors)
            sub = Selector.registry.get(alloc["method"], field="select.allocate.method")
            out += sub.summary_section(alloc.get("info") or {}, summary, sub.report_params(params.get("allocate")
                                                                                             or {}))
        return out

    @classmethod
    def report_plots(cls, report: pl.DataFrame, info: Mapping[str, Any],
                     params: Mapping[str, Any]) -> list[PlotSpec]:
        plots: list[PlotSpec] = []
        groups = info.get("groups") or []
        if groups:
            names = [g["group"] for g in groups]
            plots.append(PlotSpec("bar", heading="Quotas", categories=names, xlabel="group", ylabel="items",
                                  series={"after filter": [g["after_filter"] for g in groups],
                                          "quota": [g["quota"] for g in groups]},
                                  title="Each group's items after the filter and its quota from the allocation"))
        alloc = (info.get("steps") or {}).get("allocate")
        if alloc:
            sub = Selector.registry.get(alloc["method"], field="select.allocate.method")
            plots += sub.report_plots(report, alloc.get("info") or {},
                                      sub.report_params(params.get("allocate") or {}))
        return plots
