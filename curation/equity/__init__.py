"""Equitable allocation of a data-collection budget across groups (docs/methods/group-adaptive.md).

* :mod:`curation.equity.curves`: per-group learning curves (:class:`PowerLaw`,
  :class:`TwoTerm`) and their fitters.
* :mod:`curation.equity.static`: optimal allocations when the curves are known (weighted sum,
  MaxMin with explicit floors), integer rounding, the equal / proportional baselines and
  worst-group / gap metrics.
* :mod:`curation.equity.adaptive`: the sequential loop that learns the curves from the data
  bought so far (:func:`adaptive_allocate`).

Everything here is plain numpy/scipy math on arrays indexed by group; selectors, recipes and
reports build on it.
"""

from curation.equity.adaptive import AdaptiveResult, adaptive_allocate
from curation.equity.curves import (
    ERROR_FLOOR,
    ROLF_P0,
    CurveFit,
    PowerLaw,
    TwoTerm,
    TwoTermFit,
    fit_power_law,
    fit_two_term,
)
from curation.equity.static import (
    MaxMinResult,
    equal_allocation,
    error_summary,
    gap,
    group_errors,
    integer_allocation,
    maxmin_optimum,
    oracle_allocation,
    proportional_allocation,
    weighted_optimum,
    worst_group,
)

__all__ = [
    "ERROR_FLOOR",
    "ROLF_P0",
    "AdaptiveResult",
    "CurveFit",
    "MaxMinResult",
    "PowerLaw",
    "TwoTerm",
    "TwoTermFit",
    "adaptive_allocate",
    "equal_allocation",
    "error_summary",
    "fit_power_law",
    "fit_two_term",
    "gap",
    "group_errors",
    "integer_allocation",
    "maxmin_optimum",
    "oracle_allocation",
    "proportional_allocation",
    "weighted_optimum",
    "worst_group",
]
