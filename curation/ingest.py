"""Turn a source's raw Arrow batches into items with the columns every stage relies on.

Every item gets:

* ``id``: the source's id column as a string, or ``sha256(content)[:20]`` when the recipe names
  none (then exact duplicate contents are dropped and counted as ``duplicate_content``);
* ``source``: the recipe source name;
* ``group``: the recipe's group columns joined with ``|`` (``<null>`` for a missing value), so
  several columns make intersectional groups;
* hidden staging columns ``__text`` (text sources), ``__label`` (when a label is named) and
  ``__location`` (``<unit>:<row>``, from the connector's :data:`UNIT_COL` and :data:`ROW_COL`:
  the report's ``location``), dropped before publishing.

The source's own columns are kept. One whose name collides with a reserved column (``id``,
``source``, ``group``, ``cluster``, ``selected_rank``, ``reason``) and is not the id column is
renamed to ``src_<name>``.

Rows whose text is null or not valid UTF-8 are not items: they are returned separately with a
``reason`` so the report can count them, and never crash the run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl
import pyarrow as pa

from curation.exceptions import DataError

RESERVED = ("id", "source", "group", "cluster", "selected_rank", "reason")
#: Location columns every connector batch carries: the unit (file path, table) and the 1-based
#: row in it (the line number for line-based files, when the connector knows it).
UNIT_COL, ROW_COL = "__unit", "__row"
LOCATION = "__location"
NULL_GROUP = "<null>"
SKIPPED_SCHEMA = {"id": pl.String, "source": pl.String, "group": pl.String, "reason": pl.String,
                  LOCATION: pl.String}


def _hash(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()[:20]


def _decode_text(col: pa.ChunkedArray) -> tuple[list[str | None], list[str | None]]:
    """Text values as str plus a skip reason per row (None = keep)."""
    values = col.to_pylist()
    texts: list[str | None] = []
    reasons: list[str | None] = []
    for v in values:
        if v is None:
            texts.append(None)
            reasons.append("null_text")
        elif isinstance(v, bytes):
            try:
                texts.append(v.decode("utf-8"))
                reasons.append(None)
            except UnicodeDecodeError:
                texts.append(None)
                reasons.append("invalid_utf8")
        elif isinstance(v, str):
            texts.append(v)
            reasons.append(None)
        else:
            texts.append(str(v))
            reasons.append(None)
    return texts, reasons


def normalize_batch(table: pa.Table, source: Any, groups: Sequence[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Map one raw batch to (items, skipped rows). See the module docstring for the columns.

    Raises:
        DataError: a column the recipe names is missing (the message lists the available ones).
    """
    location = None
    if UNIT_COL in table.column_names:
        unit, row = table.column(UNIT_COL).to_pylist(), table.column(ROW_COL).to_pylist()
        location = pl.Series(LOCATION, [f"{u}:{r}" for u, r in zip(unit, row)], dtype=pl.String)
        table = table.drop_columns([UNIT_COL, ROW_COL])
    cols = table.column_names
    wanted = [("id", source.id), ("text", source.text), ("label", source.label)]
    wanted += [("feature", f) for f in source.features or []] + [("group", g) for g in groups]
    for role, c in wanted:
        if c is not None and c not in cols:
            where = f"groups: [{c}]" if role == "group" else f"sources[{source.name}].{role if role != 'feature' else 'features'}"
            raise DataError(
                f"{where} names column {c!r}, which source {source.name!r} does not have. "
                f"Available columns: {', '.join(cols)}."
            )
    n = table.num_rows
    skip: list[str | None] = [None] * n
    text_values: list[str | None] | None = None
    if source.text is not None:
        text_values, skip = _decode_text(table.column(source.text))
        table = table.drop_columns([source.text]).append_column(
            source.text, pa.array([t if t is not None else None for t in text_values], pa.string())
        ).select(cols)
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    renames = {c: f"src_{c}" for c in df.columns if c in RESERVED and c != source.id}
    df = df.rename(renames)

    if groups:
        parts = [pl.col(renames.get(g, g)).cast(pl.String).fill_null(NULL_GROUP) for g in groups]
        group = pl.concat_str(parts, separator="|")
    else:
        group = pl.lit("*")
    extra = [group.alias("group"), pl.lit(source.name).alias("source")]
    if source.text is not None:
        extra.append(pl.Series("__text", text_values, dtype=pl.String))
    if source.label is not None:
        extra.append(pl.col(renames.get(source.label, source.label)).alias("__label"))
    if location is not None:
        extra.append(location)
    df = df.with_columns(extra)

    if source.id is not None:
        df = df.with_columns(pl.col(source.id).cast(pl.String).alias("id"))
    else:
        if source.text is not None:
            ids = [_hash(t) if t is not None else None for t in text_values or []]
        else:
            feats = df.select(source.features).rows()
            ids = [_hash(json.dumps(r, default=str)) for r in feats]
        df = df.with_columns(pl.Series("id", ids, dtype=pl.String))
    if source.id is not None and df["id"].null_count():
        skip = [s or ("null_id" if v is None else None) for s, v in zip(skip, df["id"].to_list())]

    keep = pl.Series([s is None for s in skip])
    group_cols = [renames.get(g, g) for g in groups]
    skipped = df.filter(~keep).select("id", "source", "group", *group_cols,
                                      *([LOCATION] if location is not None else [])).with_columns(
        pl.Series("reason", [s for s in skip if s is not None], dtype=pl.String)
    )
    return df.filter(keep), skipped


def combine(batches: Iterable[tuple[pl.DataFrame, pl.DataFrame]], *, hashed_ids: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Concatenate normalised batches of one source and check ids.

    With content-hash ids, exact duplicates are dropped (first kept) and reported as skipped
    rows with reason ``duplicate_content``. With ids from the data, duplicates are an error.
    """
    items_parts, skipped_parts = [], []
    for items, skipped in batches:
        items_parts.append(items)
        skipped_parts.append(skipped)
    items = pl.concat(items_parts, how="diagonal_relaxed") if items_parts else pl.DataFrame()
    skipped = (pl.concat(skipped_parts, how="vertical_relaxed") if skipped_parts
               else pl.DataFrame(schema=SKIPPED_SCHEMA))
    group_cols = [c for c in skipped.columns if c not in SKIPPED_SCHEMA]
    if items.height and hashed_ids:
        first = items.select(pl.col("id").is_first_distinct()).to_series()
        dups = items.filter(~first).select("id", "source", "group", *group_cols,
                                           *([LOCATION] if LOCATION in items.columns else []))
        items = items.filter(first)
        skipped = pl.concat([skipped, dups.with_columns(reason=pl.lit("duplicate_content"))], how="diagonal_relaxed")
    return items, skipped


def check_unique_ids(items: pl.DataFrame) -> None:
    """Ids must be unique across all sources; the error names a few duplicates and their sources."""
    dup = items.group_by("id").agg(pl.len().alias("n"), pl.col("source").unique().sort().alias("sources")).filter(
        pl.col("n") > 1
    ).sort("id")
    if dup.height:
        examples = "; ".join(f"{r['id']!r} x{r['n']} in {', '.join(r['sources'])}" for r in dup.head(5).to_dicts())
        raise DataError(
            f"{dup.height} id(s) appear more than once, e.g. {examples}. Ids must be unique: fix the data, "
            "point sources[].id at a unique column, or drop `id` to use content-hash ids (which drop exact duplicates)."
        )
