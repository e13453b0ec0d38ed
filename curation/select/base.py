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
import re
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema, create_model, model_validator

from curation.exceptions import CurationError, InvalidParameterError
from curation.registry import Registered, Registry
from curation.report_schema import NOT_SELECTED, REPORT_SCHEMA, SELECTED, PlotSpec, SummarySection, format_value
from curation.types import Pool, Selection
from curation.validation import check_budget, validate_params


@dataclass(frozen=True)
class Kept:
    """What a filter step keeps (:meth:`Selector.keep`, used by ``select.filter``).

    Attributes:
        mask: (n,) True for the rows that go on to the next step.
        reasons: (n,) why each dropped row was dropped (the text of kept rows is not used).
        info: small JSON-able facts for the summary.
    """

    mask: np.ndarray
    reasons: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Allocation:
    """Per-group quotas (:meth:`Selector.allocate`, used by ``select.allocate``).

    Attributes:
        counts: (len(group_names),) how many items each group gets.
        held: pool positions the allocator used to measure (never selected), or None.
        info: facts for the allocator's own summary hooks (its ``Selection.info`` form).
        reason: ``reason(group_name, quota, size)``: the text for a row of that group.
        finish: given the final selection's positions, ``info`` updated with what can only be
            measured on it (e.g. the groups' errors of a proxy trained on it), or None.
    """

    counts: np.ndarray
    held: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    reason: Callable[[str, int, int], str] | None = None
    finish: Callable[[np.ndarray], dict[str, Any]] | None = None


class Selector(Registered, ABC):
    """Chooses ``budget`` rows of a Pool. Subclasses implement ``_select`` only."""

    registry: ClassVar[Registry] = Registry("selector", "curation.selectors", builtins="curation.select")
    _constraints: ClassVar[dict[str, Any]] = {}
    # False for methods that may stop short of the budget rather than pad with items they judged
    # bad (Quad when no chunk passes its threshold); they still never exceed it.
    exact_budget: ClassVar[bool] = True
    # The report contract (curation.report_schema): column name -> meaning for every column the
    # selector may put in Selection.columns, and reason code -> meaning for every code it may put
    # in Selection.reason_codes besides "selected"/"not_selected". select() enforces both.
    report_columns: ClassVar[dict[str, str]] = {}
    reason_codes: ClassVar[dict[str, str]] = {}

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

    # ---------------------------------------------------------------- composition (select.filter / allocate)
    # A selector that can be a composed selection's ``filter`` step overrides ``keep``; one that can
    # be its ``allocate`` step overrides ``allocate`` (curation.select.chain).
    def keep(self, pool: Pool, *, rng: np.random.Generator) -> Kept:
        """The rows this selector would let through as a ``select.filter`` step."""
        raise NotImplementedError(f"{self.name!r} cannot be a select.filter step")

    def allocate(self, pool: Pool, budget: int, *, rng: np.random.Generator) -> Allocation:
        """Per-group quotas summing to at most ``budget`` as a ``select.allocate`` step."""
        raise NotImplementedError(f"{self.name!r} cannot be a select.allocate step")

    def check_step(self, step: str) -> None:
        """Raise :class:`InvalidParameterError` when this configured selector cannot be the
        composed selection's ``filter`` or ``allocate`` step (checked with the recipe)."""
        if not type(self).can(step):
            able = [n for n in Selector.registry.names() if Selector.registry.get(n, field="select.method").can(step)]
            raise InvalidParameterError(f"select.{step}.method={self.name!r} cannot be the {step} step; "
                                        f"methods that can: {', '.join(able)}")

    @classmethod
    def can(cls, step: str) -> bool:
        """Whether the class overrides the hook of composed-selection step ``filter`` or ``allocate``."""
        hook = {"filter": "keep", "allocate": "allocate"}[step]
        return getattr(cls, hook) is not getattr(Selector, hook)

    def params(self) -> dict[str, Any]:
        """The constructor arguments as stored (for manifests and ``repr``)."""
        return {p: getattr(self, p) for p in _init_params(type(self))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def params_model(cls) -> type[SelectParams]:
        """The typed recipe ``select`` section of this method (a pydantic model, made once).

        Its fields are ``method``, ``budget`` and the keyword-only arguments of ``__init__``
        with their defaults, the types of their annotations (for the JSON Schema) and the docs
        of the class docstring's ``Args:``. Validation goes through the one path every selector
        uses: constructing it and checking ``_constraints`` (so messages are the selectors').
        """
        if "_params_model" not in cls.__dict__:
            cls._params_model = _make_params_model(cls)
        return cls._params_model


class SelectParams(BaseModel):
    """A recipe ``select`` section: ``method``, ``budget`` and the method's own settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    budget: int

    def params(self) -> dict[str, Any]:
        """The method's own settings (everything but ``method`` and ``budget``)."""
        return {k: getattr(self, k) for k in type(self).model_fields if k not in ("method", "budget")}


def _arg_docs(cls: type) -> dict[str, str]:
    """``name: text`` entries of the ``Args:`` section of the class (or ``__init__``) docstring."""
    docs: dict[str, str] = {}
    for doc in (inspect.getdoc(cls) or "", inspect.getdoc(cls.__init__) or ""):
        lines = doc.splitlines()
        if "Args:" not in [ln.strip() for ln in lines]:
            continue
        start = [ln.strip() for ln in lines].index("Args:") + 1
        current = None
        for ln in lines[start:]:
            if ln and not ln.startswith(" "):  # the next section
                break
            m = re.match(r"^ {4}([A-Za-z_][A-Za-z0-9_, ]*):\s*(.*)$", ln)
            if m:
                names, text = m.group(1), m.group(2)
                current = [n.strip() for n in names.split(",")]
                for n in current:
                    docs[n] = text
            elif current and ln.strip():
                for n in current:
                    docs[n] += " " + ln.strip()
    return docs


def _json_type(hint: Any) -> dict[str, Any]:
    try:
        return TypeAdapter(hint).json_schema()
    except Exception:  # a type pydantic cannot describe (e.g. a scorer object): leave it open
        return {}


def _make_params_model(cls: type[Selector]) -> type[SelectParams]:
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:
        hints = {}
    docs = _arg_docs(cls)
    fields: dict[str, Any] = {
        "method": (Literal[cls.name], Field(description=(inspect.getdoc(cls) or "").split("\n")[0])),
        "budget": (int, Field(gt=0, description="how many items to select")),
    }
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind != p.KEYWORD_ONLY:
            continue
        constraint = cls._constraints.get(p.name)
        doc = docs.get(p.name, "")
        if constraint is not None:
            doc = f"{doc} ({constraint})" if doc else str(constraint)
        # validation is the selector's own (below); the annotation only describes the key
        ann = Annotated[Any, WithJsonSchema(_json_type(hints.get(p.name, Any)))]
        default = None if p.default is p.empty else p.default
        fields[p.name] = (ann, Field(default=default, description=doc or None))

    def _selector_accepts(self):
        try:
            build_selector(self.method, **self.params())
        except CurationError as exc:
            raise ValueError(str(exc)) from None
        return self

    return create_model(f"{cls.__name__}Params", __base__=SelectParams, __doc__=inspect.getdoc(cls),
                        __validators__={"_selector_accepts": model_validator(mode="after")(_selector_accepts)},
                        **fields)


def select_section_schema() -> dict[str, Any]:
    """JSON Schema of the recipe's ``select`` section: one alternative per known selector."""
    alternatives = [Selector.registry.get(name, field="select.method").params_model().model_json_schema()
                    for name in Selector.registry.names()]
    return {"description": "The selection method and its settings; `method` picks the alternative.",
            "oneOf": alternatives, "discriminator": {"propertyName": "method"}}


def validate_select_section(value: Any) -> SelectParams:
    """A typed ``select`` section from a mapping; an unknown method lists the known ones."""
    if isinstance(value, SelectParams):
        return value
    if isinstance(value, dict) and "method" not in value and {"allocate", "within"} & set(value):
        value = {"method": "chain", **value}  # a composed selection (curation.select.chain)
    if not isinstance(value, dict) or "method" not in value:
        raise ValueError("select needs `method` and `budget`, e.g. {method: stratified, budget: 1000}, or the "
                         "steps of a composed selection, e.g. {budget: 1000, allocate: {method: stratified, "
                         "mode: equal}, within: {method: kmq}}")
    try:
        cls = Selector.registry.get(value["method"], field="select.method")
    except CurationError as exc:
        raise ValueError(str(exc)) from None
    model = cls.params_model()
    accepted = [k for k in model.model_fields if k not in ("method", "budget")]
    unknown = sorted(set(value) - set(model.model_fields))
    if unknown:
        raise ValueError(f"select.{unknown[0]} is not a setting of method {cls.name!r}. "
                         f"Accepted keys beside method and budget: {', '.join(accepted) or '(none)'}.")
    budget = value.get("budget")
    if isinstance(budget, int) and not isinstance(budget, bool) and budget <= 0:
        raise ValueError(f"budget must be > 0; got {budget}")
    return model.model_validate(value)


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
    cls = Selector.registry.get(method, field="select.method")
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


def formatted(values: np.ndarray, spec: str) -> pl.Series:
    """``spec.format(v)`` for each value as a String column, formatting each distinct value once
    (reasons of a million rows share a few thousand numbers)."""
    uniq, inverse = np.unique(np.asarray(values), return_inverse=True)
    text = pl.Series([spec.format(v) for v in uniq.tolist()], dtype=pl.String)
    return text.gather(inverse.reshape(-1))
