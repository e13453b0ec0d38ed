"""Held-out sets: split a share of the pool off, or drop pool rows that duplicate a given set.

There is one split (:func:`stratified_rows`): the recipe's ``reference: {fraction: f}`` uses it
on the ingested rows (strata label × group), and the ``group-adaptive`` selector uses it on the
pool when the recipe has no reference (strata group × label).

A held-out set (the recipe's ``reference:``) is what a selection is judged against: the
influence and KNN-Shapley scorers ask "does this item help a model do well on these rows?".
Rows in it must never be selected, or the selection would be scored on its own training data.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from curation.allocation import allocate
from curation.exceptions import DataError
from curation.types import Pool

#: The columns :func:`split_fraction` stratifies by, where present.
STRATA = ("__label", "group")


def split_fraction(items: pl.DataFrame, fraction: float, *, rng: np.random.Generator,
                   strata: tuple[str, ...] = STRATA) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(pool rows, held-out rows): ``round(fraction · n)`` rows drawn at random.

    The draw is stratified by the ``strata`` columns present (label × group by default, so
    per-group errors can be measured on the held-out rows): each stratum gets its proportional
    share by largest remainders, and at most ``n_stratum − 1`` of its rows, so every stratum
    stays in the pool. Row order is preserved on both sides.

    Raises:
        DataError: the split would leave the pool or the held-out set empty.
    """
    n = items.height
    total = int(round(fraction * n))
    if total < 1 or total >= n:
        raise DataError(f"reference.fraction={fraction} of {n} rows holds out {total} rows; "
                        "it must leave at least one row on each side (use a larger pool or another fraction)")
    cols = [c for c in strata if c in items.columns]
    if cols:
        key = items.select(pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in cols], separator="\x1f"))
        codes = np.unique(key.to_series().to_numpy(), return_inverse=True)[1]
        held = stratified_rows(codes, total, rng)
    else:
        held = rng.permutation(n)[:total]
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return items.filter(pl.Series(~mask)), items.filter(pl.Series(mask))


def stratified_rows(codes: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """``total`` row positions drawn at random, stratified by the int ``codes`` (one per row).

    Each stratum gets its proportional share of ``total`` by largest remainders, and at most
    ``size − 1`` of its rows, so every stratum keeps a row on the other side. Rows are drawn in
    stratum order from ``rng`` (seed contract: the same codes, total and stream, the same rows).
    """
    sizes = np.bincount(codes)
    quota = allocate(sizes.astype(float), int(total), capacity=sizes - 1)
    parts = [rng.permutation(np.flatnonzero(codes == g))[:q] for g, q in enumerate(quota)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def validation_rows(pool: Pool, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted pool positions held out to measure per-group errors when a recipe has no
    ``reference``: ``round(fraction · n)`` rows stratified by (group, label)."""
    labels = np.asarray(pool.labels).astype(str)
    key = np.char.add(pool.groups.astype(str), np.char.add("\x1f", labels))
    codes = np.unique(key, return_inverse=True)[1]
    return np.sort(stratified_rows(codes, int(round(fraction * len(pool))), rng))


def drop_overlap(items: pl.DataFrame, held: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(pool rows whose id is not in ``held``, the dropped rows with a ``reason``).

    Used when ids are content hashes: an id shared with the held-out set is the same content,
    and keeping it would let a selection be judged on a copy of its own training data.
    """
    dup = items["id"].is_in(held["id"].implode())
    dropped = items.filter(dup).drop([c for c in ("__text", "__label") if c in items.columns]).with_columns(
        reason=pl.lit("duplicate_of_reference"))
    return items.filter(~dup), dropped
