"""The oracle allocation's learning curves: measured on the whole pool, not the budget.

An upper reference for the adaptive loop (docs/methods/group-adaptive.md#the-oracle): every
group's error is measured at several sizes up to what the budget could buy of it, fitted with a
power law, and the static optimum of those curves is the allocation.
``evaluate(counts, rng) -> (G,) errors`` trains the proxy on ``counts[g]`` rows of each group.
"""

from __future__ import annotations

import numpy as np

from curation.equity.curves import CurveFit, fit_power_law
from curation.equity.static import oracle_allocation, proportional_allocation


def oracle_curves(cap: np.ndarray, costs: np.ndarray, budget: int, shares: np.ndarray, evaluate,
                  rng: np.random.Generator, *, rounds: int, repeats: int, objective: str, secondary: str,
                  n0: int) -> list[CurveFit | None]:
    """Curves measured on the whole pool, one group at a time (see :func:`curves_at`).

    With one shared model the other groups' data moves g's error too, so g is measured while
    the others stay at an operating point: first the proportional allocation, then the optimum
    of the curves measured there, ``rounds`` times. A None entry: too few sizes measurable for
    that group (e.g. no held-out rows of it).
    """
    base = proportional_allocation(shares, costs, float(budget), capacity=cap).astype(np.int64)
    for _ in range(rounds):
        fits = curves_at(base, cap, costs, budget, evaluate, rng, repeats=repeats)
        if any(f is None for f in fits):
            return fits
        base = oracle_allocation([f.curve for f in fits], costs, float(budget), objective=objective,
                                 secondary=secondary, weights=shares, capacity=cap,
                                 minimum=np.minimum(n0, cap)).astype(np.int64)
    return fits


def curves_at(base: np.ndarray, cap: np.ndarray, costs: np.ndarray, budget: int, evaluate,
              rng: np.random.Generator, *, repeats: int) -> list[CurveFit | None]:
    """Group g's power-law fit from its error at 8 sizes in ``[min(5, top), top]`` (``top``: what
    the budget or the pool allows), each measured ``repeats`` times, the others held at ``base``."""
    fits = []
    for g in range(len(cap)):
        n, e = [], []
        top = min(cap[g], budget / costs[g])  # no allocation can give the group more
        for size in np.unique(np.geomspace(min(5, top), top, 8).astype(np.int64)):
            counts = base.copy()
            counts[g] = size
            for _ in range(repeats):
                n.append(size)
                e.append(evaluate(counts, rng)[g])
        n_arr, e_arr = np.array(n, dtype=float), np.array(e, dtype=float)
        ok = np.isfinite(e_arr)
        fits.append(fit_power_law(n_arr[ok], e_arr[ok]) if len(np.unique(n_arr[ok])) >= 3 else None)
    return fits

