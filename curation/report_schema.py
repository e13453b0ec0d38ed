"""The report contract: the columns of ``report.parquet``, the row statuses and the reason codes.

This module is the one place the report's shape is declared. :func:`curation.pipeline.assemble`
builds the table against it (and checks it with :func:`validate_report`), the builder counts
the manifest's ``counts`` with :func:`status_counts`, and :mod:`curation.report` summarises by
``status``/``reason_code``. Nothing reads meaning out of the human ``reason`` text.

It imports only polars and the standard library so every layer (selectors included) may use it.
See docs/report.md for the prose version.

Every report row has exactly one ``status``:

* ``selected``: in the published data (``selected_rank`` is its pick position);
* ``not_selected``: in the pool the selector chose from, not picked;
* ``reference``: a held-out reference/validation row (recipe ``reference:`` or
  ``value.validation``), never selectable, no cluster;
* ``skipped``: dropped at ingestion (null or non-UTF-8 text, duplicate content, duplicate of a
  reference row, ...), no cluster.

``reason_code`` is a short machine code (``[a-z][a-z0-9_]*``) refining the status:

* ``selected``/``not_selected``: the defaults for pool rows; a selector may give its own codes
  for its pool rows (declared in its ``reason_codes`` ClassVar, e.g. Quad's ``chunk_rejected``);
* ``reference_fraction`` / ``reference_file``: how the held-out set was made;
* ``skipped_<ingest reason>``: e.g. ``skipped_null_text``, ``skipped_invalid_utf8``,
  ``skipped_duplicate_content``, ``skipped_duplicate_of_reference``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

SELECTED, NOT_SELECTED, REFERENCE, SKIPPED = "selected", "not_selected", "reference", "skipped"
#: Allowed values of the ``status`` column: every row has exactly one.
STATUSES: tuple[str, ...] = (SELECTED, NOT_SELECTED, REFERENCE, SKIPPED)
#: The statuses of rows the selector chose from (the "pool").
POOL_STATUSES: tuple[str, ...] = (SELECTED, NOT_SELECTED)

#: Reason codes the report itself assigns (selectors may add their own for pool rows).
REFERENCE_CODES = {"reference_fraction": "held out of selection: a seeded share of the pool",
                   "reference_file": "held out of selection: a row of the reference file"}
SKIPPED_PREFIX = "skipped_"
REASON_CODE_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Column:
    """One report column: ``dtype`` None means "the source column's own dtype"."""

    name: str
    dtype: pl.DataType | None
    meaning: str
    always: bool = True  # False: present only when the build has what it describes


#: The report's columns, in table order. ``<group columns>`` and ``<selector columns>`` are
#: placeholders: the recipe's ``groups:`` columns and the selector's ``report_columns``.
REPORT_SCHEMA: tuple[Column, ...] = (
    Column("id", pl.String, "the row's id (source id column, or sha256 of the content)"),
    Column("source", pl.String, "the recipe source the row came from"),
    Column("group", pl.String, "the recipe's group columns joined with '|' ('*' when ungrouped)"),
    Column("location", pl.String, "where the row came from: <file or table>:<row> (the line for line-based "
           "files); null for rows without one", always=False),
    Column("<group columns>", None, "each column named in the recipe's groups:", always=False),
    Column("label", None, "the source's label column (sources[].label)", always=False),
    Column("cluster", pl.Int64, "k-means cluster of a pool row; null for reference and skipped rows"),
    Column("selected", pl.Boolean, "status == 'selected'"),
    Column("selected_rank", pl.Int64, "0-based pick order among the selected rows; null otherwise"),
    Column("score", pl.Float64, "the per-row score the selector used (Selection.scores)", always=False),
    Column("value", pl.Float64, "data value from the recipe's value: stage", always=False),
    Column("value_stderr", pl.Float64, "standard error of value; null when the method has none", always=False),
    Column("<selector columns>", None, "the selector's report_columns (see its class)", always=False),
    Column("map_x", pl.Float32, "a pool row's position on the report page's map: the first principal axis of "
           "the vectors; null for reference and skipped rows", always=False),
    Column("map_y", pl.Float32, "the second principal axis (see map_x)", always=False),
    Column("content_hash", pl.String, "sha256[:16] of the row's source fields: what 'changed since the parent "
           "version' compares (null for skipped rows; absent in reports made before it existed)", always=False),
    Column("status", pl.String, "one of " + ", ".join(STATUSES)),
    Column("reason_code", pl.String, "short machine code refining status (see the module docstring)"),
    Column("reason", pl.String, "human-readable reason; wording may change, never parse it"),
)

#: The columns every report has, with their dtypes.
REQUIRED: dict[str, pl.DataType] = {c.name: c.dtype for c in REPORT_SCHEMA if c.always}


def skipped_code(ingest_reason: str) -> str:
    """The reason code of a row skipped at ingestion for ``ingest_reason`` (e.g. ``null_text``)."""
    return SKIPPED_PREFIX + ingest_reason


def reference_code(*, from_file: bool) -> str:
    """The reason code of held-out reference rows: drawn from the pool, or read from a file."""
    return "reference_file" if from_file else "reference_fraction"


def validate_report(report: pl.DataFrame) -> pl.DataFrame:
    """Check ``report`` against the contract; returns it unchanged.

    Raises:
        ValueError: a required column is missing or has the wrong dtype, a status is null or
            not in :data:`STATUSES`, a reason code is malformed, or ``selected``,
            ``selected_rank`` and ``cluster`` disagree with ``status``.
    """
    for name, dtype in REQUIRED.items():
        if name not in report.columns:
            raise ValueError(f"report has no column {name!r}")
        if report.schema[name] != dtype:
            raise ValueError(f"report column {name!r} is {report.schema[name]}, expected {dtype}")
    bad = report.filter(~pl.col("status").is_in(STATUSES) | pl.col("status").is_null())
    if bad.height:
        raise ValueError(f"report status must be one of {STATUSES}; got {bad['status'].unique().to_list()}")
    codes = report["reason_code"]
    if codes.null_count() or not all(REASON_CODE_RE.match(c) for c in codes.unique().to_list()):
        raise ValueError(f"malformed reason codes: {codes.unique().to_list()[:10]}")
    is_sel = pl.col("status") == SELECTED
    in_pool = pl.col("status").is_in(POOL_STATUSES)
    checks = {
        "selected must equal status == 'selected'": pl.col("selected") != is_sel,
        "selected_rank must be set exactly on selected rows": pl.col("selected_rank").is_not_null() != is_sel,
        "cluster must be null exactly on reference and skipped rows": pl.col("cluster").is_not_null() != in_pool,
    }
    for message, wrong in checks.items():
        n = report.select(wrong.fill_null(True).sum()).item()
        if n:
            raise ValueError(f"report: {message} ({n} rows disagree)")
    return report


def status_counts(report: pl.DataFrame | pl.LazyFrame) -> dict[str, int]:
    """``candidates``, ``pool`` (selected + not selected), and one count per status (the manifest's
    ``counts``). A LazyFrame (a scan of ``report.parquet``) is counted streaming, without loading it."""
    per = dict(report.lazy().group_by("status").len().collect(engine="streaming").iter_rows())
    counts = {s: int(per.get(s, 0)) for s in STATUSES}
    return {"candidates": int(sum(per.values())), "pool": counts[SELECTED] + counts[NOT_SELECTED],
            "selected": counts[SELECTED], "not_selected": counts[NOT_SELECTED],
            "reference": counts[REFERENCE], "skipped": counts[SKIPPED]}


def format_value(v: Any) -> str:
    """A cell or fact as the summaries print it (short floats, tiny values with 3 significant digits)."""
    if v is None:
        return ""
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e6:
            return f"{v:.4f}".rstrip("0").rstrip(".")
        return f"{v:.3g}"  # tiny values (data values, influence) keep their significant digits
    if isinstance(v, (list, dict)):
        return json.dumps(v, default=str)
    return str(v)


# ------------------------------------------------------------------- selector contributions
@dataclass(frozen=True)
class PlotSpec:
    """A chart as data; :func:`curation.plots.to_figure` draws it (with plotly) on the HTML page.

    ``kind`` picks the chart and the shape of ``series``:

    * ``bar``: ``{series name: one value per category}`` with ``categories`` (grouped bars, or
      stacked with ``stacked``);
    * ``histogram``: ``{series name: values}`` (each series as shares of its own items, shared bins);
    * ``line``: ``{series name: (xs, ys)}``, optional ``markers`` of the same shape, ``logx``.

    ``heading`` is the section heading the HTML report puts above the chart; ``title`` its
    caption. ``xlabel``/``ylabel`` title the axes (a neutral title is used when empty) and
    ``yformat`` is a d3 tick format for the value axis (``".0%"`` for shares).
    """

    kind: Literal["bar", "histogram", "line"]
    title: str
    series: Mapping[str, Any]
    heading: str = ""
    categories: Sequence[str] = ()
    markers: Mapping[str, Any] = field(default_factory=dict)
    logx: bool = False
    xlabel: str = ""
    ylabel: str = ""
    yformat: str = ""
    stacked: bool = False


@dataclass(frozen=True)
class SummarySection:
    """A block of the summary a selector contributes: lines of text and an optional table.

    The text summary prints the lines then the table; the HTML report puts them under ``title``.
    """

    title: str
    lines: Sequence[str] = ()
    table: Sequence[Mapping[str, Any]] = ()
