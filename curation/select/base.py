"""The Selector interface every selection method implements.

A selector is a pure function of its inputs: ``select(pool, budget, *, rng) -> Selection``.
It reads no files and no global state, and never creates its own random generator.

Adding a selector:
    1. subclass :class:`Selector` with ``name="my-method"`` and implement ``_select``;
    2. declare ``_constraints`` for its hyperparameters (checked before any work);
    3. take ``rng``, never create one;
    4. add it to ``ALL_SELECTORS`` in the tests so the conformance suite runs it.
Selector-specific recipe keys sit beside ``method`` in the recipe's ``select`` section and
arrive as keyword arguments of ``__init__``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from curation.exceptions import InvalidParameterError
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
        return selection

    @abstractmethod
    def _select(self, pool: Pool, budget: int, *, rng: np.random.Generator) -> Selection: ...

    def params(self) -> dict[str, Any]:
        """The constructor arguments as stored (for manifests and ``repr``)."""
        return {p: getattr(self, p) for p in _init_params(type(self))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


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
