"""Turn a source's raw Arrow batches into items with the columns every stage relies on.

Every item gets:

* ``id``: the source's id column as a string, or ``sha256(content)[:20]`` when the recipe names
  none (then exact duplicate contents are dropped and counted as ``duplicate_content``);
* ``source``: the recipe source name;
* ``group``: the recipe's group columns joined with ``|`` (``<null>`` for a missing value), so
  several columns make intersectional groups;
* hidden staging columns ``__text`` (text sources; the source's own text column is stored empty,
  see :func:`hollow_text_column`), ``__label`` (when a label is named) and the
  connector's :data:`UNIT_COL` (categorical: one dictionary entry per file or table) and
  :data:`ROW_COL` (1-based, null when unknown), dropped before publishing; :func:`location` makes
  the report's ``location`` (``<unit>:<row>``) from them. Two compact columns rather than one
  string per row: at 1M rows the joined string was 40% of this stage's normalising and writing.

The source's own columns are kept. One whose name collides with a reserved column (``id``,
``source``, ``group``, ``cluster``, ``selected_rank``, ``reason``) and is not the id column is
renamed to ``src_<name>``.

Rows are what they claim to be (docs/sources/README.md#typed-rows):

* a column named in ``cast`` is cast to that type in every batch; a value that cannot be cast
  skips its row (``cast_failed``);
* an undeclared column must keep one type across a source's files (integers and floats count as
  one numeric type, an all-null column fits any): otherwise a :class:`DataError` names the
  column, both files and the fix (``cast:``). :class:`SchemaGuard` remembers the first types;
* the text column must hold strings (a CSV's bytes are decoded here);
* bytes that are not UTF-8 in any string column skip their row (``invalid_utf8``): the column
  stays a string column;
* null, empty and whitespace-only texts skip their row (``null_text``, ``empty_text``).

Skipped rows are not items: they are returned separately with a ``reason`` and their location
so the report can count and show them, and they never crash the run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curation.exceptions import DataError

RESERVED = ("id", "source", "group", "cluster", "selected_rank", "reason")
#: Location columns every connector batch carries: the unit (file path, table) and the 1-based
#: row in it (the line number for line-based files, when the connector knows it).
UNIT_COL, ROW_COL = "__unit", "__row"
WHERE = (UNIT_COL, ROW_COL)
#: The row position column of an items key frame (``pipeline.ItemParts``): the row's place in
#: the order the items were written, across sources.
POS = "__pos"
NULL_GROUP = "<null>"
SKIPPED_SCHEMA = {"id": pl.String, "source": pl.String, "group": pl.String, "reason": pl.String,
                  UNIT_COL: pl.Categorical, ROW_COL: pl.Int64}


def location() -> pl.Expr:
    """The report's ``location`` column from :data:`UNIT_COL` and :data:`ROW_COL`:
    ``<unit>:<row>``, or the unit alone where the row is unknown (a file no reader could open)."""
    unit = pl.col(UNIT_COL).cast(pl.String)
    joined = pl.concat_str([unit, pl.lit(":"), pl.col(ROW_COL).cast(pl.String)])
    return pl.when(pl.col(ROW_COL).is_null()).then(unit).otherwise(joined).alias("location")


def where_columns(frame: pl.DataFrame | pl.LazyFrame) -> list[str]:
    """The location columns ``frame`` has (none for rows that came without a location)."""
    names = frame.collect_schema().names()
    return [c for c in WHERE if c in names]


#: ``json.dumps(row, default=str)``, exactly (that is what json.dumps calls), without building a new
#: encoder for every row as json.dumps does when given an argument: 40% less time per row hashed.
#: A row is a tuple of a frame's values; its JSON text is what content hashes and hashed ids hash.
row_json = json.JSONEncoder(default=str).encode


def _hash(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()[:20]


def _decode_utf8(col: pa.Array | pa.ChunkedArray) -> list[str | None]:
    """A string or binary column's values as str; None where null or not valid UTF-8."""
    if not _is_bytes(col.type):
        return col.to_pylist()
    out: list[str | None] = []
    for v in col.to_pylist():
        try:
            out.append(None if v is None else v.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(None)
    return out


def _is_bytes(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


def _is_text(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
            or _is_bytes(t) or pa.types.is_null(t))


CAST = {"string": pl.String, "int64": pl.Int64, "float64": pl.Float64, "bool": pl.Boolean, "date": pl.Date,
        "datetime": pl.Datetime("us")}


def _type_family(t: pa.DataType) -> str:
    """What schema drift compares: readers disagree on widths and on bytes vs strings, not on
    what a column holds."""
    if pa.types.is_null(t):
        return "null"
    if _is_text(t):
        return "string"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    return str(t)


class SchemaGuard:
    """The first type (family) and file of every column of one source: a later batch whose
    column holds another kind of value is schema drift (:class:`DataError`)."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.first: dict[str, tuple[str, pa.DataType, str]] = {}

    def check(self, table: pa.Table, unit: str) -> None:
        declared = getattr(self.source, "cast", None) or {}
        for name, t in zip(table.column_names, table.schema.types):
            if name in declared or name in (UNIT_COL, ROW_COL):
                continue
            family = _type_family(t)
            if family == "null":
                continue
            seen = self.first.setdefault(name, (family, t, unit))
            if seen[0] != family:
                raise DataError(
                    f"source {self.source.name!r}: column {name!r} is {seen[1]} in {seen[2]} but {t} in {unit} "
                    f"(schema drift between files); fix the files or declare the type: "
                    f"sources[{self.source.name}].cast: {{{name}: string}}")


def _strings(col: pa.Array | pa.ChunkedArray, name: str) -> tuple[pl.Series, pl.Series | None]:
    """A string-like column as a polars String series, and the mask of values that were bytes but
    not UTF-8 (now null), or None when there were none. Clean data takes one vectorised cast;
    only a batch holding a bad value is decoded value by value."""
    if not _is_bytes(col.type):
        return pl.Series(name, pl.from_arrow(col), dtype=pl.String), None
    try:
        return pl.Series(name, pl.from_arrow(pc.cast(col, pa.string())), dtype=pl.String), None
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        values = _decode_utf8(col)
        bad = [v is not None and d is None for v, d in zip(col.to_pylist(), values)]
        return pl.Series(name, values, dtype=pl.String), pl.Series(bad, dtype=pl.Boolean)


def normalize_batch(table: pa.Table, source: Any, groups: Sequence[str],
                    guard: SchemaGuard | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Map one raw batch to (items, skipped rows). See the module docstring for the columns and
    the type rules; ``guard`` carries the source's column types from batch to batch.

    Every step is a vectorised polars/Arrow operation (ingest runs at a few times the speed of a
    plain Parquet read); only batches holding bytes that are not UTF-8, and content-hash ids,
    go value by value.

    Raises:
        DataError: a column the recipe names is missing (the message lists the available ones),
            the text column does not hold strings, or a column's type drifted between files.
    """
    location: list[pl.Series] | None = None
    unit = "an unlocated batch"
    if UNIT_COL in table.column_names:
        where = pl.from_arrow(table.select([UNIT_COL, ROW_COL]))
        assert isinstance(where, pl.DataFrame)
        location = [where[UNIT_COL].cast(pl.Categorical), where[ROW_COL].cast(pl.Int64)]
        unit = str(where[UNIT_COL][0]) if where.height else unit
        table = table.drop_columns([UNIT_COL, ROW_COL])
    cols = table.column_names
    declared = getattr(source, "cast", None) or {}
    wanted = [("id", source.id), ("text", source.text), ("label", source.label)]
    wanted += [("feature", f) for f in source.features or []] + [("group", g) for g in groups]
    wanted += [("cast", c) for c in declared]
    for role, c in wanted:
        if c is not None and c not in cols:
            where_ = {"group": f"groups: [{c}]", "feature": f"sources[{source.name}].features",
                      "cast": f"sources[{source.name}].cast"}.get(role, f"sources[{source.name}].{role}")
            raise DataError(
                f"{where_} names column {c!r}, which source {source.name!r} does not have"
                f"{'' if location is None else f' ({unit})'}. "
                f"Available columns: {', '.join(cols)}."
            )
    if guard is not None:
        guard.check(table, unit)
    n = table.num_rows
    # one skip reason per row (null: keep); the first reason found wins
    skip = pl.repeat(None, n, dtype=pl.String, eager=True).alias("reason")

    def skip_where(bad: pl.Series | None, reason: str) -> pl.Series:
        if bad is None:
            return skip
        return pl.select(pl.when(skip.is_null() & bad).then(pl.lit(reason)).otherwise(skip)).to_series()

    # declared types first, then bytes -> str in every other string-like column
    columns: dict[str, pl.Series] = {}
    for c in cols:
        col = table.column(c)
        if c in declared:
            if _is_bytes(col.type):
                raw, bad = _strings(col, c)
                skip = skip_where(bad, "invalid_utf8")
            else:
                raw = pl.Series(c, pl.from_arrow(col))
            cast = raw.cast(CAST[declared[c]], strict=False)
            skip = skip_where(raw.is_not_null() & cast.is_null(), "cast_failed")
            columns[c] = cast.alias(c)
        elif c != source.text and _is_bytes(col.type):
            columns[c], bad = _strings(col, c)
            skip = skip_where(bad, "invalid_utf8")
    text: pl.Series | None = None
    if source.text is not None:
        text_type = columns[source.text].dtype if source.text in columns else table.column(source.text).type
        if source.text not in columns and not _is_text(text_type):
            raise DataError(
                f"sources[{source.name}].text names column {source.text!r}, which holds {text_type} values, "
                f"not text{'' if location is None else f' ({unit})'}; point text at a string column, or declare "
                f"sources[{source.name}].cast: {{{source.text}: string}}")
        if source.text in columns:
            text, bad = columns[source.text], None
        else:
            text, bad = _strings(table.column(source.text), source.text)
        was_null = text.is_null() if bad is None else (text.is_null() & ~bad)
        skip = skip_where(was_null, "null_text")
        skip = skip_where(bad, "invalid_utf8")
        # no non-space character: a regex that stops at a text's first such character (stripping
        # would copy every text)
        skip = skip_where(~text.str.contains(r"\S").fill_null(True), "empty_text")
        columns[source.text] = text
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    if columns:
        df = df.with_columns(list(columns.values()))
    renames = {c: f"src_{c}" for c in df.columns if c in RESERVED and c != source.id}
    df = df.rename(renames)

    if groups:
        parts = [pl.col(renames.get(g, g)).cast(pl.String).fill_null(NULL_GROUP) for g in groups]
        group = pl.concat_str(parts, separator="|")
    else:
        group = pl.lit("*")
    extra = [group.alias("group"), pl.lit(source.name).alias("source")]
    if text is not None:
        extra.append(text.alias("__text"))
    if source.label is not None:
        extra.append(pl.col(renames.get(source.label, source.label)).alias("__label"))
    if location is not None:
        extra += location
    df = df.with_columns(extra)

    if source.id is not None:
        # a Series, not an expression: an eager expression over columns chunked differently (the
        # source's row groups, the columns added above) first copies every column into one chunk
        df = df.with_columns(df[source.id].cast(pl.String).alias("id"))
        skip = skip_where(df["id"].is_null(), "null_id")
    else:
        if text is not None:  # no id for a skipped row: its text is not content
            live = pl.select(pl.when(skip.is_null()).then(text)).to_series()
            ids = [_hash(t) if t is not None else None for t in live.to_list()]
        else:
            feats = df.select(source.features).rows()
            ids = [_hash(row_json(r)) for r in feats]
        df = df.with_columns(pl.Series("id", ids, dtype=pl.String))

    keep = skip.is_null()
    group_cols = [renames.get(g, g) for g in groups]
    skipped = df.filter(~keep).select("id", "source", "group", *group_cols,
                                      *where_columns(df)).with_columns(
        skip.filter(~keep).alias("reason"))
    items = df.filter(keep)
    hollow = hollow_text_column(source, groups)
    if hollow is not None:  # the text is kept once, as __text (restore_texts puts it back)
        items = items.with_columns(pl.repeat(None, items.height, dtype=pl.String, eager=True).alias(hollow))
    return items, skipped


def hollow_text_column(source: Any, groups: Sequence[str]) -> str | None:
    """The items' name of ``source``'s text column when the items hold it empty, else None.

    Every text is in ``__text``; storing it a second time in the source's own column doubled
    the largest column of the items file (1M short texts: 0.085 s of a 0.23 s write). So that
    column is all null in the items and :func:`restore_texts` fills it before anything reads it
    as a source field. A text column that is also the id, label, a group or a feature stays
    as it is (those are read from the items as they are)."""
    text = getattr(source, "text", None)
    if text is None or text in {source.id, source.label, *groups, *(source.features or [])}:
        return None
    return f"src_{text}" if text in RESERVED else text


def restore_texts(frame: pl.DataFrame | pl.LazyFrame, sources: Sequence[Any],
                  groups: Sequence[str]) -> Any:
    """``frame`` (items, or held-out rows) with every source's text column filled from
    ``__text`` for that source's rows (see :func:`hollow_text_column`); the same kind of frame."""
    names = frame.collect_schema().names()
    by_column: dict[str, list[str]] = {}
    for s in sources:
        c = hollow_text_column(s, groups)
        if c is not None and c in names:
            by_column.setdefault(c, []).append(s.name)
    if "__text" not in names or not by_column:
        return frame
    return frame.with_columns([pl.when(pl.col("source").is_in(names_)).then(pl.col("__text")).otherwise(pl.col(c))
                               .alias(c) for c, names_ in by_column.items()])


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
        dups = as_skipped(items.filter(~first), group_cols, "duplicate_content")
        items = items.filter(first)
        skipped = pl.concat([skipped, dups], how="diagonal_relaxed")
    return items, skipped


def as_skipped(items: pl.DataFrame, group_cols: Sequence[str], reason: str) -> pl.DataFrame:
    """``items`` as skipped rows with ``reason``: the columns a skipped row carries (id, source,
    group, ``group_cols``, location) that ``items`` has, and :data:`POS` when it has one. A key
    frame has only the id, source and position; ``ItemParts.complete`` reads the rest back."""
    wanted = dict.fromkeys(("id", "source", "group", *group_cols, *WHERE, POS))
    return items.select([c for c in wanted if c in items.columns]).with_columns(reason=pl.lit(reason))


def check_unique_ids(items: pl.DataFrame) -> None:
    """Ids must be unique within a source; the error names a few duplicates and their source."""
    # the common case, unique ids, costs one pass over 64-bit hashes: distinct hashes prove
    # distinct ids (1M string ids: 0.03 s against 0.3 s for n_unique on the strings); only a
    # hash collision or a real duplicate goes on to compare the strings
    if items["id"].hash(seed=0).n_unique() == items.height:
        return
    dup = items.group_by("id").agg(pl.len().alias("n"), pl.col("source").unique().sort().alias("sources")).filter(
        pl.col("n") > 1
    ).sort("id")
    if dup.height:
        examples = "; ".join(f"{r['id']!r} x{r['n']} in {', '.join(r['sources'])}" for r in dup.head(5).to_dicts())
        raise DataError(
            f"{dup.height} id(s) appear more than once, e.g. {examples}. Ids must be unique: fix the data, "
            "point sources[].id at a unique column, or drop `id` to use content-hash ids (which drop exact duplicates)."
        )


def union_sources(parts: Sequence[tuple[pl.DataFrame, pl.DataFrame]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """All sources' items and skipped rows, deduplicated by id across sources.

    The rule: **the first source wins** (recipe order). A later source's row whose id an earlier
    source already has is not an item; it is a skipped row with reason ``duplicate_id`` (with
    its source and location), so the report shows what was dropped. Within one source ids must
    be unique (:func:`check_unique_ids`), since two rows of one source with one id is a data bug.
    """
    kept: list[pl.DataFrame] = []
    skipped = [p[1] for p in parts]
    seen: pl.Series | None = None
    for items, _ in parts:
        check_unique_ids(items)
        if seen is not None and items.height:
            dup = items["id"].is_in(seen.implode())
            if dup.any():
                group_cols = [c for c in skipped[0].columns if c not in SKIPPED_SCHEMA]
                skipped.append(as_skipped(items.filter(dup), group_cols, "duplicate_id"))
                items = items.filter(~dup)
        kept.append(items)
        seen = items["id"] if seen is None else pl.concat([seen, items["id"]])
    return (pl.concat(kept, how="diagonal_relaxed"),
            pl.concat(skipped, how="diagonal_relaxed") if skipped else pl.DataFrame(schema=SKIPPED_SCHEMA))
