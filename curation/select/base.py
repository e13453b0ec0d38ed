"""The Selector interface every selection method implements.

A selector is a pure function of its inputs: ``select(pool, budget, *, rng) -> Selection``.
It reads no files and no global state, and never creates its own random generator.

Adding a selector:
    1. subclass :class:`Selector` with ``name="my-method"`` and implement ``_select``;
    2. declare ``_constraints`` for its hyperparameters (checked before any work);
    3. take ``rng``, never create one;
    4. add it to ``ALL_SELECTORS`` in the tests so the conformance suite runs it;
    5. declare what it adds to the report (docs/report.md): ``report_columns`` for the
       ``Selection.columns`` it returns, ``reason_codes`` for the ``Selection.reason_codes`` it
       uses, and override ``summary_section`` / ``report_plots`` to contribute a summary block or
       a chart. The report code looks the class up by the manifest's method and asks it; it has
       no per-method branches.
Selector-specific recipe keys sit beside ``method`` in the recipe's ``select`` section and
arrive as keyword arguments of ``__init__``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import polars as pl

from curation.exceptions import InvalidParameterError
from curation.report_schema import NOT_SELECTED, REPORT_SCHEMA, SELECTED, PlotSpec, SummarySection, format_value
from curation.types import Pool, Selection
from curation.validation import check_budget, validate_params


class Selector(ABC):
    """Chooses ``budget`` rows of a Pool. Subclasses implement ``_select`` only."""

    registry: ClassVar[dict[str, type[Selector]]] = {}
    name: ClassVar[str] = ""
    _constraints: ClassVar[dict[str, Any]] = {}
    # False for methods that may stop short of the budget rather than pad with items they judged
    # bad (Quad when no chunk passes its threshold); they still never exceed it.
    exact_budget: ClassVar[bool] = True
    # The report contract (curation.report_schema): column name -> meaning for every column the
    # selector may put in Selection.columns, and reason code -> meaning for every code it may put
    # in Selection.reason_codes besides "selected"/"not_selected". select() enforces both.
    report_columns: ClassVar[dict[str, str]] = {}
    reason_codes: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, *, name: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if name is not None:
            cls.name = name
            Selector.registry[name] = cls

    def validate(self) -> None:
        """Check the hyperparameters (raises InvalidParameterError naming the bad one)."""
        validate_params(self)

    def select(self, pool: Pool, budget: int, *, rng: np.random.Generator) -> Selection:
        """Validate, then pick exactly ``budget`` distinct rows of ``pool``."""
        self.validate()
        check_budget(budget, len(pool))
        selection = self._select(pool, int(budget), rng=rng)
        n = len(selection.indices)
        if n > budget or (self.exact_budget and n != budget):  # the contract the conformance suite checks
            raise AssertionError(f"{type(self).__name__} returned {n} rows for budget={budget}")
        self._check_report_contract(selection, len(pool))
        return selection

    def _check_report_contract(self, selection: Selection, n: int) -> None:
        # Undeclared columns or codes would reach report.parquet undocumented: fail in the selector's own tests.
        undeclared = sorted(set(selection.columns) - set(self.report_columns))
        shadowing = sorted(set(selection.columns) & {c.name for c in REPORT_SCHEMA})
        if shadowing:  # the report's own columns (status, reason, ...) keep their meaning
            raise AssertionError(f"{type(self).__name__} returned report columns {shadowing} that the report "
                                 "schema already defines")
        if undeclared:
            raise AssertionError(f"{type(self).__name__} returned report columns {undeclared} "
                                 "missing from its report_columns")
        if selection.reason_codes is not None:
            if len(selection.reason_codes) != n:
                raise AssertionError(f"{type(self).__name__} returned {len(selection.reason_codes)} reason codes "
                                     f"for a pool of {n}")
            unknown = sorted(set(map(str, selection.reason_codes)) - {SELECTED, NOT_SELECTED} - set(self.reason_codes))
            if unknown:
                raise AssertionError(f"{type(self).__name__} returned reason codes {unknown} "
                                     "missing from its reason_codes")

    # ---------------------------------------------------------------- report hooks (defaults: nothing)
    @classmethod
    def report_params(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters a build ran with: the constructor defaults overlaid with ``given``
        (the recipe's ``select`` keys). The hooks below receive this, so a default lives only in
        ``__init__``."""
        sig = inspect.signature(cls.__init__).parameters
        defaults = {p: sig[p].default for p in _init_params(cls) if sig[p].default is not inspect.Parameter.empty}
        return {**defaults, **{k: v for k, v in given.items() if k not in ("method", "budget")}}

    @classmethod
    def summary_section(cls, info: Mapping[str, Any], summary: Mapping[str, Any],
                        params: Mapping[str, Any]) -> list[SummarySection]:
        """Blocks for the text and HTML summaries from ``info`` (``Selection.info`` as stored in
        the manifest's ``selection``), the version's ``summary`` and the resolved ``params``."""
        return []

    @classmethod
    def report_plots(cls, report: pl.DataFrame, info: Mapping[str, Any],
                     params: Mapping[str, Any]) -> list[PlotSpec]:
        """Charts for the HTML report from the report table, ``info`` and the resolved ``params``."""
        return []

    @abstractmethod
    def _select(self, pool: Pool, budget: int, *, rng: np.random.Generator) -> Selection: ...

    def params(self) -> dict[str, Any]:
        """The constructor arguments as stored (for manifests and ``repr``)."""
        return {p: getattr(self, p) for p in _init_params(type(self))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def scorer_calls_section(info: Mapping[str, Any], summary: Mapping[str, Any]) -> list[SummarySection]:
    """How much of the pool a quality scorer looked at (``info["scorer_calls"]``, ``info["scorer"]``)."""
    if "scorer_calls" not in info:
        return []
    lines = [f"scorer calls: {info['scorer_calls']} for a pool of {summary['budget']['pool']}"]
    facts = info.get("scorer") or {}
    if len(facts) > 1:
        shown = ", ".join(f"{k}={format_value(v)}" for k, v in facts.items() if k != "name")
        lines.append(f"scorer {facts.get('name', '')}: {shown}")
    return [SummarySection("Scorer", lines=lines)]


def _init_params(cls: type) -> list[str]:
    sig = inspect.signature(cls.__init__)
    return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.KEYWORD_ONLY]


def build_selector(method: str, **params: Any) -> Selector:
    """Instantiate the selector registered as ``method`` with its recipe keys.

    Raises:
        InvalidParameterError: unknown method (lists the known ones), unknown keys (lists the
            accepted ones) or out-of-range values.
    """
    import curation.select  # noqa: F401  (registers the built-in selectors)

    if method not in Selector.registry:
        known = ", ".join(sorted(Selector.registry))
        raise InvalidParameterError(f"Unknown selector method {method!r}. Known methods: {known}.")
    cls = Selector.registry[method]
    accepted = _init_params(cls)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InvalidParameterError(
            f"select.{unknown[0]} is not a setting of method {method!r}. "
            f"Accepted keys beside method and budget: {', '.join(accepted) or '(none)'}."
        )
    selector = cls(**params)
    selector.validate()
    return selector
