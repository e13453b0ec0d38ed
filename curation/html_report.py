"""A self-contained HTML page for one published version: summary tables and plots.

``render_html(dataset_dir, version)`` reads the version's ``manifest.json`` and
``report.parquet`` and returns one HTML document (inline SVG, no scripts, no network) with:

* the budget, clustering and valuation facts;
* the selector's own sections (e.g. scorer calls, group errors), from its ``summary_section``;
* groups before/after selection (table and bar chart of pool share vs selected share);
* how the selection spreads over clusters;
* data values (selected vs not) when the build valued the pool;
* the selector's own charts (e.g. probe scores, learning curves), from its ``report_plots``;
* stage timings.

Rows are told apart by the report's ``status`` column (:mod:`curation.report_schema`); the
selector is looked up by the manifest's method (:func:`curation.report.selector_of`), so this
module has no per-method code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import polars as pl

from curation.plots import bar_chart, draw, histogram
from curation.publish import resolve_version
from curation.report import _fmt, selector_of, selector_sections
from curation.report_schema import POOL_STATUSES, SELECTED

CSS = ("body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:2px 10px;border-bottom:1px solid #ddd}"
       "td.n{text-align:right}h2{margin-top:1.6em;border-bottom:2px solid #0072B2}code{background:#f4f4f4}")


def _table(rows: Sequence[dict[str, Any]], max_rows: int = 60) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{escape(str(c))}</th>" for c in cols)
    body = []
    for r in rows[:max_rows]:
        cells = "".join(f'<td class="{"n" if isinstance(r.get(c), (int, float)) else ""}">{escape(_fmt(r.get(c)))}</td>'
                        for c in cols)
        body.append(f"<tr>{cells}</tr>")
    more = f"<p>... {len(rows) - max_rows} more rows</p>" if len(rows) > max_rows else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _facts(d: dict[str, Any]) -> str:
    return _table([{"fact": k, "value": v if not isinstance(v, (dict, list)) else json.dumps(v, default=str)[:200]}
                   for k, v in d.items()])


def render_html(dataset_dir: str | Path, version: str | None = None) -> str:
    """The HTML report of ``version`` (default: LATEST) of a dataset directory."""
    vdir = resolve_version(dataset_dir, version)
    m = json.loads((vdir / "manifest.json").read_text())
    report = pl.read_parquet(vdir / "report.parquet")
    s = m["summary"]
    sel = m.get("selection", {})
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(m['name'])} {m['version']}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>{escape(m['name'])} <small>{m['version']}</small></h1>",
             f"<p>method <code>{escape(m['recipe']['select']['method'])}</code>, seed {m['seed']}, "
             f"created {escape(m.get('created_at', ''))}, code {escape(str(m.get('code_version', '')))}, "
             f"recipe sha256 <code>{m.get('recipe_sha256', '')[:12]}</code></p>"]

    b = s["budget"]
    parts += ["<h2>Budget</h2>", _table([{k: v for k, v in b.items() if k != "skipped"}])]
    if b.get("skipped"):
        parts.append(_table([{"skipped because": k, "rows": v} for k, v in b["skipped"].items()]))
    c = s.get("clusters", {})
    if c.get("k"):
        parts.append(f"<p>clusters covered: {c['covered']} / {c['k']}; silhouette {_fmt(c.get('silhouette'))}</p>")
    for section in selector_sections(m):
        parts += [f"<h3>{escape(section.title)}</h3>", *(f"<p>{escape(line)}</p>" for line in section.lines)]
        if section.table:
            parts.append(_table(list(section.table), max_rows=100))
    if m.get("valuation"):
        parts += ["<h3>Valuation</h3>", _facts(m["valuation"])]

    groups = sorted(s["groups"], key=lambda g: -g["pool"])
    parts += ["<h2>Groups</h2>", _table(s["groups"], max_rows=100)]
    if groups:
        shown = groups[:40]
        parts.append(bar_chart([g["group"] for g in shown], {"pool share": [g["pool_share"] for g in shown],
                                                             "selected share": [g["selected_share"] for g in shown]},
                               title=f"Group shares before and after selection ({len(shown)} largest groups)"))

    pool = report.filter(pl.col("status").is_in(POOL_STATUSES))
    chosen = pl.col("status") == SELECTED
    if pool.height:
        per = pool.group_by("cluster").agg(pl.len().alias("pool"), chosen.sum().alias("selected")).sort("cluster")
        parts += ["<h2>Clusters</h2>"]
        if per.height <= 80:
            parts.append(bar_chart([str(k) for k in per["cluster"]], {"pool": per["pool"].to_list(),
                                                                       "selected": per["selected"].to_list()},
                                   title="Items per cluster: pool and selected"))
        else:
            rate = (per["selected"] / per["pool"]).to_numpy()
            parts.append(histogram({"clusters": rate}, title=f"Share of each cluster selected ({per.height} clusters)"))

    if "value" in pool.columns:  # the value stage's column (any selector), not a method's
        parts += ["<h2>Data values</h2>", histogram(
            {"selected": pool.filter(chosen)["value"].to_numpy(),
             "not selected": pool.filter(~chosen)["value"].to_numpy()},
            title="Value of each item: selected vs not selected")]
    cls, params = selector_of(m)
    for spec in cls.report_plots(report, sel, params):
        parts += ([f"<h2>{escape(spec.heading)}</h2>"] if spec.heading else []) + [draw(spec)]

    if m.get("timings"):
        parts += ["<h2>Timings (s)</h2>", _table([m["timings"]])]
    parts.append("</body></html>")
    return "\n".join(parts)
