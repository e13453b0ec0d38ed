"""The report page of one published version: one self-contained HTML file, charts by plotly.

``render_html(dataset_dir, version)`` reads the version (through
:func:`curation.publish.resolve_version`, which verifies it) and returns one HTML document. The
plotly.js library is inlined once, with the first chart, so the page needs no network and no
other file. Each part is a ``<section>`` with an ``id`` and an ``<h2>``, present only when the
version has its data:

* ``overview``: dataset, version, method, the budget in numbers, cluster coverage and the
  diversity of the selection against a random draw of the same size (``metrics.diversity``);
* ``map``: the pool on the first two principal axes of its embedding (report ``map_x``,
  ``map_y``), coloured by cluster (buttons switch to group or label), selected items larger and
  outlined; hovering a point gives its id, group, cluster, reason and (selected items) the start
  of its text. At most :data:`MAP_POINTS` points: a larger pool keeps its selected items (up to
  that cap) and a fixed seeded sample of the rest. The section's ``data-points`` is the number
  of points drawn; the chart's div is ``#embedding-map``;
* ``clusters``: per cluster its size, items selected, selection rate and a few selected texts,
  and a chart of pool vs selected per cluster;
* ``groups``: pool share vs selected share per group (chart), the groups table and the labels
  per group (``metrics.label_balance``);
* ``examples``: a few selected and not-selected items (and one skipped item per skip reason)
  with their reason and, where published, their text;
* ``method``: the recipe's selection settings and the selector's own summary blocks (its
  ``summary_section``), then one section per heading of the selector's charts (its
  ``report_plots``; class ``method-plots``, ``data-plots`` = charts in it), then ``values``:
  data values of selected vs not-selected items when the build valued the pool;
* ``delta``: what changed since the parent version, per source and per group (``manifest.delta``);
* ``timings``: seconds and peak memory per stage (reused stages say so).

Texts come from the published shards (only selected rows are published), read through each
source's text column (``recipe.sources[].text``). Rows are told apart by the report's
``status`` column (:mod:`curation.report_schema`), never by reason text; the selector is looked
up by the manifest's method (:func:`curation.report.selector_of`), so this module has no
per-method code. Charts are drawn by :mod:`curation.plots`.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curation.plots import PALETTE, embedding_map, figure_html, to_figure
from curation.publish import resolve_version
from curation.report import label_balance, selector_of, selector_sections
from curation.report_schema import POOL_STATUSES, SELECTED, SKIPPED, PlotSpec, format_value

MAP_POINTS = 5000          # the map's cap: more SVG points make the page slow to open
TEXT_CHARS = 120           # texts are cut to this many characters in hovers and tables
CLUSTER_TEXTS = 3          # selected texts shown per cluster
EXAMPLES = 5               # example items per status
MAX_CLUSTER_BARS = 80      # more clusters: a histogram of selection rates instead of bars per cluster
MAX_GROUP_BARS = 40        # the largest groups in the group chart
MAP_SEED = 0               # the map's subsample: the same points on every render of a version

CSS = """
:root{--fg:#1f2328;--muted:#57606a;--line:#d0d7de;--accent:#0072B2;--bg:#f3f5f8}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1120px;margin:0 auto;padding:20px 20px 60px}
header h1{margin:.2em 0}
header h1 small{color:var(--muted);font-weight:500}
header p{margin:.2em 0;color:var(--muted)}
nav{display:flex;flex-wrap:wrap;gap:6px 14px;margin:12px 0 4px}
nav a{color:var(--accent);text-decoration:none}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:6px 20px 16px;margin:16px 0;
  min-width:0}
h2{font-size:1.3em;margin:.7em 0 .4em;padding-bottom:.2em;border-bottom:2px solid var(--accent)}
h3{font-size:1.05em;margin:1.1em 0 .3em}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin:12px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 12px}
.card b{display:block;font-size:1.45em}
.card span{color:var(--muted);font-size:.9em}
table{border-collapse:collapse;margin:.4em 0 1em;max-width:100%}
th,td{padding:3px 10px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:#f6f8fa;font-weight:600}
td.long{overflow-wrap:anywhere;min-width:12em}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td ul{margin:0;padding-left:1.1em}
figure{margin:8px 0 14px;min-width:0}
figcaption{font-weight:600;margin:4px 0}
.caption,.more{color:var(--muted);font-size:.92em}
code{background:#f0f2f4;padding:0 4px;border-radius:4px;overflow-wrap:anywhere}
.js-plotly-plot,.plotly-graph-div{max-width:100%}
"""


class Html(str):
    """Markup a table cell holds as is (every other cell is escaped)."""


def render_html(dataset_dir: str | Path, version: str | None = None) -> str:
    """The report page of ``version`` (default: LATEST) of a dataset directory, as one HTML
    document that opens offline (see the module docstring for its sections).

    Raises:
        CurationError: as :func:`curation.publish.resolve_version`: no such dataset or version,
            or a version whose files do not match its manifest.
    """
    vdir = resolve_version(dataset_dir, version)
    m = json.loads((vdir / "manifest.json").read_text())
    report = pl.read_parquet(vdir / "report.parquet")
    pool = report.filter(pl.col("status").is_in(POOL_STATUSES))
    page = _Page()

    shown = _map_sample(pool)
    per_cluster = _cluster_table(pool)
    examples = _examples(report)
    # texts are published for selected rows only: those on the map, the clusters' samples, the examples
    wanted = set(per_cluster["ids"])
    for df in (shown, examples):
        if df is not None:
            wanted |= {(str(s), str(i)) for s, i in df.filter(pl.col("status") == SELECTED).select("source", "id").rows()}
    texts = _texts(vdir, m, wanted)

    cls, params = selector_of(m)
    body = [
        _overview(m),
        _map_section(page, pool, shown, texts),
        _clusters_section(page, per_cluster, texts),
        _groups_section(page, m, report),
        _examples_section(examples, texts),
        _method_section(m),
        *_method_plots(page, cls.report_plots(report, m.get("selection", {}), params)),
        _values_section(page, pool),
        _delta_section(page, m),
        _timings_section(page, m),
    ]
    body = [b for b in body if b]
    # the headings as written (already escaped) in each section's <h2>
    nav = "".join(f'<a href="#{i}">{t}</a>' for i, t in re.findall(r'<section id="([^"]+)"[^>]*><h2>(.*?)</h2>',
                                                                 "".join(body)))
    title = f"{m['name']} {m['version']}"
    return "\n".join([
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<style>{CSS}</style></head><body><main>",
        f"<header><h1>{escape(m['name'])} <small>{escape(m['version'])}</small></h1>",
        f"<p>method <code>{escape(m['recipe']['select']['method'])}</code>, seed {m['seed']}, "
        f"created {escape(str(m.get('created_at', '')))}, code {escape(str(m.get('code_version', '')))}, "
        f"recipe sha256 <code>{escape(str(m.get('recipe_sha256', ''))[:12])}</code>"
        + (f", parent {escape(str(m['parent']))}" if m.get("parent") else "") + "</p>",
        f"<nav>{nav}</nav></header>",
        *body,
        "</main></body></html>",
    ])


# ----------------------------------------------------------------------------- page helpers
class _Page:
    """Collects figures so plotly.js goes into the first one only."""

    def __init__(self) -> None:
        self.js_included = False

    def figure(self, fig, div_id: str, caption: str, note: str = "") -> str:
        div = figure_html(fig, div_id, include_js=not self.js_included)
        self.js_included = True
        extra = f'<p class="caption">{escape(note)}</p>' if note else ""
        return f'<figure><figcaption>{escape(caption)}</figcaption>{div}{extra}</figure>'

    def spec(self, spec: PlotSpec, div_id: str, note: str = "", height: int | None = None) -> str:
        fig = to_figure(spec)
        if height:
            fig.update_layout(height=height)
        return self.figure(fig, div_id, spec.title, note)


def _section(sid: str, title: str, parts: Iterable[str], css_class: str = "", **data: Any) -> str:
    attrs = "".join(f' data-{k.replace("_", "-")}="{escape(str(v))}"' for k, v in data.items())
    if css_class:
        attrs += f' class="{css_class}"'
    return f'<section id="{sid}"{attrs}><h2>{escape(title)}</h2>' + "".join(parts) + "</section>"


def _cell(v: Any, key: str = "") -> str:
    if isinstance(v, Html):
        return f'<td class="long">{v}</td>'
    if isinstance(v, str) and len(v) > 24:  # ids, reasons, texts: may break anywhere, so a table fits the page
        return f'<td class="long">{escape(v)}</td>'
    if isinstance(v, float) and key.endswith(("_share", "rate")):
        return f'<td class="n">{v:.1%}</td>'
    num = isinstance(v, (int, float)) and not isinstance(v, bool)
    return f'<td{" class=n" if num else ""}>{escape(format_value(v))}</td>'


def _table(rows: Sequence[Mapping[str, Any]], max_rows: int = 60) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_cell(r.get(c), str(c)) for c in cols) + "</tr>" for r in rows[:max_rows])
    more = f'<p class="more">… {len(rows) - max_rows} more rows</p>' if len(rows) > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _facts(d: Mapping[str, Any]) -> str:
    return _table([{"setting": k, "value": v if not isinstance(v, (dict, list)) else json.dumps(v, default=str)[:200]}
                   for k, v in d.items()], max_rows=100)


def _cut(text: Any, n: int = TEXT_CHARS) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "plot"


# ----------------------------------------------------------------------------- data
def _texts(vdir: Path, m: Mapping[str, Any], keys: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(source, id) -> the row's text cut to :data:`TEXT_CHARS`, for the published rows among ``keys``."""
    shards = sorted((vdir / "data").glob("*.parquet"))
    if not keys or not shards:
        return {}
    columns = pl.read_parquet_schema(shards[0])
    of_source = [(s["name"], s["text"]) for s in m.get("recipe", {}).get("sources", [])
                 if s.get("text") and s["text"] in columns]
    if not of_source or "id" not in columns or "source" not in columns:
        return {}
    text = pl.coalesce([pl.when(pl.col("source") == name).then(pl.col(col).cast(pl.String)) for name, col in of_source])
    ids = sorted({i for _, i in keys})
    rows = (pl.scan_parquet(shards).filter(pl.col("id").cast(pl.String).is_in(ids))
            .select(pl.col("source").cast(pl.String), pl.col("id").cast(pl.String),
                    text.str.slice(0, 4 * TEXT_CHARS).alias("text"))
            .collect())
    return {(s, i): _cut(t) for s, i, t in rows.iter_rows() if t is not None and (s, i) in keys}


def _map_sample(pool: pl.DataFrame) -> pl.DataFrame | None:
    """The pool rows the map draws, in report order: all when at most :data:`MAP_POINTS`, else
    the selected ones (a seeded sample of them past the cap) and a seeded sample of the rest."""
    if "map_x" not in pool.columns or "map_y" not in pool.columns:
        return None
    placed = pool.with_row_index("_row").filter(pl.col("map_x").is_not_null() & pl.col("map_y").is_not_null())
    if not placed.height:
        return None
    cols = ["source", "id", "status", "_row"]
    if placed.height <= MAP_POINTS:
        return placed.select(cols)
    rng = np.random.default_rng(MAP_SEED)
    picked = placed.filter(pl.col("status") == SELECTED)
    rest = placed.filter(pl.col("status") != SELECTED)
    if picked.height >= MAP_POINTS:
        keep = picked[np.sort(rng.choice(picked.height, MAP_POINTS, replace=False)).tolist()]
    else:
        fill = np.sort(rng.choice(rest.height, MAP_POINTS - picked.height, replace=False)).tolist()
        keep = pl.concat([picked, rest[fill]])
    return keep.sort("_row").select(cols)


def _cluster_table(pool: pl.DataFrame) -> dict[str, Any]:
    """Per cluster: pool size, selected, rate, and the (source, id) of its first selected rows."""
    if not pool.height:
        return {"rows": pl.DataFrame(), "samples": {}, "ids": []}
    chosen = pl.col("status") == SELECTED
    per = (pool.group_by("cluster").agg(pl.len().alias("pool"), chosen.sum().alias("selected"))
           .with_columns((pl.col("selected") / pl.col("pool")).alias("rate")).sort("cluster"))
    firsts = (pool.filter(chosen).sort("selected_rank").group_by("cluster", maintain_order=True)
              .head(CLUSTER_TEXTS).select("cluster", "source", "id"))
    samples: dict[Any, list[tuple[str, str]]] = {}
    for c, s, i in firsts.iter_rows():
        samples.setdefault(c, []).append((str(s), str(i)))
    return {"rows": per, "samples": samples, "ids": [k for v in samples.values() for k in v]}


def _examples(report: pl.DataFrame) -> pl.DataFrame:
    """A few rows to read: selected rows (the first pick of each cluster first), not-selected rows (one per reason code
    first, then a seeded sample), and one skipped row per skip reason."""
    cols = [c for c in ("source", "id", "status", "group", "cluster", "reason_code", "reason") if c in report.columns]
    rows = report.with_row_index("_row")
    picked = rows.filter(pl.col("status") == SELECTED).sort("selected_rank")
    if picked.height:  # the first pick of each cluster first: examples from several clusters, not one
        first_per_cluster = picked.unique("cluster", keep="first", maintain_order=True)
        picked = pl.concat([first_per_cluster, picked.join(first_per_cluster.select("_row"), on="_row", how="anti")])
    picked = picked.head(EXAMPLES)
    others = rows.filter(pl.col("status") == "not_selected")
    if others.height:
        order = np.random.default_rng(MAP_SEED).permutation(others.height).tolist()
        others = others[order]
        first_per_code = others.unique("reason_code", keep="first", maintain_order=True)
        others = pl.concat([first_per_code, others.join(first_per_code.select("_row"), on="_row", how="anti")])
    skipped = rows.filter(pl.col("status") == SKIPPED).unique("reason_code", keep="first", maintain_order=True)
    return pl.concat([picked.select(cols), others.head(EXAMPLES).select(cols), skipped.head(EXAMPLES).select(cols)])


# ----------------------------------------------------------------------------- sections
def _overview(m: Mapping[str, Any]) -> str:
    s = m["summary"]
    b = s["budget"]
    c = s.get("clusters", {})
    div = (m.get("metrics") or {}).get("diversity")
    skipped = sum((b.get("skipped") or {}).values())
    cards = [("budget", f"{b['budget']:,}"), ("selected", f"{b['selected']:,}"), ("pool", f"{b['pool']:,}"),
             ("skipped at ingestion", f"{skipped:,}")]
    if b.get("reference"):
        cards.append(("reference (held out)", f"{b['reference']:,}"))
    if c.get("k"):
        cards.append(("clusters covered", f"{c['covered']} / {c['k']}"))
    if div and div.get("vendi_ratio") is not None:
        cards.append(("diversity vs a random draw", f"×{div['vendi_ratio']:.2f}"))
    parts = ['<div class="cards">' + "".join(f'<div class="card"><b>{escape(v)}</b><span>{escape(k)}</span></div>'
                                              for k, v in cards) + "</div>",
             _table([{k: v for k, v in b.items() if k != "skipped"} | {"skipped": skipped}])]
    if b.get("skipped"):
        parts.append(_table([{"skipped because (reason_code)": k, "rows": v} for k, v in b["skipped"].items()]))
    if c.get("k"):
        share = f" ({c['coverage']:.0%})" if c.get("coverage") is not None else ""
        sil = f"; silhouette {format_value(c.get('silhouette'))}" if c.get("silhouette") is not None else ""
        parts.append(f"<p>clusters covered: {c['covered']} / {c['k']}{share}{sil}</p>")
    if div:
        rows = [{"Vendi score": "order 1 (effective number of distinct items)", "selection": div.get("vendi_1"),
                 "random draw, same size": div.get("random_vendi_1"), "ratio": div.get("vendi_ratio")},
                {"Vendi score": "order ∞ (dominated by the largest near-duplicate mass)",
                 "selection": div.get("vendi_inf"), "random draw, same size": div.get("random_vendi_inf"),
                 "ratio": (div["vendi_inf"] / div["random_vendi_inf"]) if div.get("vendi_inf") is not None
                 and div.get("random_vendi_inf") else None}]
        parts += ["<h3>Diversity</h3>", _table(rows),
                  '<p class="caption">The Vendi score of the selected items\' embeddings against that of a '
                  "random draw of the same size from the pool: a ratio above 1 means the selection is more "
                  "varied than chance.</p>"]
    return _section("overview", "Overview", parts)


def _map_section(page: _Page, pool: pl.DataFrame, shown: pl.DataFrame | None,
                 texts: Mapping[tuple[str, str], str]) -> str:
    if shown is None:
        return ""
    pts = pool.with_row_index("_row").join(shown.select("_row"), on="_row").sort("_row")
    has_label = "label" in pts.columns
    hover = []
    for r in pts.iter_rows(named=True):
        lines = [f"<b>{escape(_cut(r['id'], 80), quote=False)}</b>", f"group: {escape(str(r['group']), quote=False)}",
                 f"cluster: {r['cluster']}"]
        if has_label:
            lines.append(f"label: {escape(_cut(r['label'], 60), quote=False)}")
        lines.append(f"{r['status']}: " + "<br>".join(escape(w, quote=False)
                                                      for w in textwrap.wrap(str(r["reason"]), 70)))
        text = texts.get((str(r["source"]), str(r["id"])))
        if text:
            lines.append("text: " + "<br>".join(escape(w, quote=False) for w in textwrap.wrap(text, 70)))
        hover.append("<br>".join(lines))
    colourings: dict[str, list[Any]] = {"cluster": pts["cluster"].to_list()}
    if pts["group"].n_unique() > 1:
        colourings["group"] = pts["group"].to_list()
    if has_label and pts["label"].n_unique() > 1:
        colourings["label"] = pts["label"].cast(pl.String).to_list()
    fig = embedding_map(pts["map_x"].to_list(), pts["map_y"].to_list(), (pts["status"] == SELECTED).to_list(),
                        hover, colourings)
    n_sel = int((pts["status"] == SELECTED).sum())
    total_sel = int((pool["status"] == SELECTED).sum())
    if pts.height < pool.height:
        sampled = (f"The pool has {pool.height:,} items; the map shows {pts.height:,} of them: "
                   + (f"all {n_sel:,} selected items and a fixed random sample of the others."
                      if n_sel == total_sel else f"a fixed random sample of {n_sel:,} of the {total_sel:,} "
                      "selected items (the map's cap).") + f" (At most {MAP_POINTS:,} points are drawn.)")
    else:
        sampled = f"All {pts.height:,} pool items are shown ({n_sel:,} selected)."
    note = ("Each point is a pool item, placed on the first two principal axes of its embedding: nearby points "
            "have similar vectors. Larger outlined points are selected. Hover a point for its id, group, "
            "cluster, reason and (selected items) text; click a legend entry to hide it. " + sampled)
    if max(len(set(v)) for v in colourings.values()) > len(PALETTE):
        note += f" Colours repeat past {len(PALETTE)} categories: the hover names each point's category."
    fig_html = page.figure(fig, "embedding-map", "The pool on its embedding's first two principal axes", note)
    return _section("map", "Embedding map", [fig_html], points=pts.height, pool=pool.height, selected=n_sel)


def _clusters_section(page: _Page, per_cluster: Mapping[str, Any], texts: Mapping[tuple[str, str], str]) -> str:
    per: pl.DataFrame = per_cluster["rows"]
    if not per.height:
        return ""
    parts = []
    cats = [str(c) for c in per["cluster"]]
    if per.height <= MAX_CLUSTER_BARS:
        parts.append(page.spec(PlotSpec("bar", "Items per cluster: pool and selected", categories=cats,
                                         series={"pool": per["pool"].to_list(), "selected": per["selected"].to_list()},
                                         xlabel="cluster", ylabel="items"), "cluster-sizes"))
    else:
        parts.append(page.spec(PlotSpec("histogram", f"Share of each cluster selected ({per.height} clusters)",
                                        series={"clusters": per["rate"].to_list()}, xlabel="share of the cluster "
                                        "selected", ylabel="share of the clusters"), "cluster-rates"))
    rows = []
    for c, n, k, rate in per.iter_rows():
        sample = [texts[key] for key in per_cluster["samples"].get(c, []) if key in texts]
        cell = Html("<ul>" + "".join(f"<li>{escape(t)}</li>" for t in sample) + "</ul>") if sample else ""
        rows.append({"cluster": c, "size": n, "selected": k, "selection rate": rate, "selected texts": cell})
    parts.append(_table(rows, max_rows=120))
    if not texts:
        parts.append('<p class="caption">No texts: the published rows have no text column.</p>')
    return _section("clusters", "Clusters", parts, clusters=per.height)


def _groups_section(page: _Page, m: Mapping[str, Any], report: pl.DataFrame) -> str:
    groups = m["summary"].get("groups") or []
    if not groups:
        return ""
    parts = []
    largest = sorted(groups, key=lambda g: (-g["pool"], str(g["group"])))[:MAX_GROUP_BARS]
    if len(groups) > 1:
        caption = "Group shares before and after selection" + (
            f" ({len(largest)} largest groups)" if len(largest) < len(groups) else "")
        series = {"pool share": [g["pool_share"] for g in largest]}
        if any(g.get("target_share") is not None for g in largest):  # the selector's quotas, when it has them
            series["target share"] = [g.get("target_share") for g in largest]
        series["selected share"] = [g["selected_share"] for g in largest]
        parts.append(page.spec(PlotSpec("bar", caption, categories=[g["group"] for g in largest], series=series,
                                        xlabel="group", ylabel="share of items", yformat=".0%"), "group-shares"))
    parts.append(_table(groups, max_rows=100))
    balance = (m.get("metrics") or {}).get("label_balance") or label_balance(report)
    if balance:
        parts += ["<h3>Labels per group</h3>",
                  '<p class="caption">How many labels each group has in the pool and in the selection, and the '
                  "most common label's share (100%: one label only).</p>", _table(balance, max_rows=100)]
    return _section("groups", "Groups", parts, groups=len(groups))


def _examples_section(examples: pl.DataFrame, texts: Mapping[tuple[str, str], str]) -> str:
    if not examples.height:
        return ""
    rows = []
    for r in examples.iter_rows(named=True):
        text = texts.get((str(r["source"]), str(r["id"])))
        rows.append({"status": r["status"], "id": r["id"], "group": r.get("group"), "cluster": r.get("cluster"),
                     "reason": r["reason"], "text": text if text is not None else "—"})
    note = ('<p class="caption">Texts are shown for selected items (the published rows); the report keeps only '
            "ids and reasons for the others.</p>")
    return _section("examples", "Examples", [_table(rows, max_rows=3 * EXAMPLES + 20), note])


def _method_section(m: Mapping[str, Any]) -> str:
    given = dict(m["recipe"]["select"])
    method = given.pop("method")
    parts = [f"<p>method <code>{escape(str(method))}</code></p>", _facts(given)]
    for section in selector_sections(m):
        parts += [f"<h3>{escape(section.title)}</h3>", *(f"<p>{escape(line)}</p>" for line in section.lines)]
        if section.table:
            parts.append(_table(list(section.table), max_rows=100))
    if m.get("valuation"):
        parts += ["<h3>Valuation</h3>", _facts(m["valuation"])]
    return _section("method", "Method", parts)


def _method_plots(page: _Page, specs: Sequence[PlotSpec]) -> list[str]:
    """One section per heading of the selector's charts (a chart without one joins the section
    before it, or a section of its own)."""
    groups: list[tuple[str, list[PlotSpec]]] = []
    for spec in specs:
        if spec.heading or not groups:
            groups.append((spec.heading or "More from the method", [spec]))
        else:
            groups[-1][1].append(spec)
    out, used = [], set()
    for heading, group in groups:
        sid = "method-" + _slug(heading)
        while sid in used:
            sid += "-2"
        used.add(sid)
        figs = [page.spec(spec, f"{sid}-{i + 1}") for i, spec in enumerate(group)]
        out.append(_section(sid, heading, figs, css_class="method-plots", plots=len(figs)))
    return out


def _values_section(page: _Page, pool: pl.DataFrame) -> str:
    if "value" not in pool.columns or pool["value"].is_null().all():  # the value stage's column, any selector
        return ""
    chosen = pl.col("status") == SELECTED
    spec = PlotSpec("histogram", "Value of each item: selected vs not selected",
                    series={"selected": pool.filter(chosen)["value"].drop_nulls().to_list(),
                            "not selected": pool.filter(~chosen)["value"].drop_nulls().to_list()},
                    xlabel="data value (higher: the item helps the model more)")
    return _section("values", "Data values", [page.spec(spec, "values-chart")])


def _delta_section(page: _Page, m: Mapping[str, Any]) -> str:
    d = m.get("delta")
    if not d:
        return ""
    changed = "" if d.get("changed") is None else f", {d['changed']:,} changed"
    parts = [f"<p>Since <b>{escape(str(d['parent']))}</b>: {d['added']:,} added, {d['removed']:,} removed{changed} "
             "candidates (pool and reference rows).</p>"]
    kinds = ["added", "removed"] + ([] if d.get("changed") is None else ["changed"])
    by_group = d.get("by_group") or {}
    if by_group and len(by_group) <= MAX_GROUP_BARS:
        names = list(by_group)
        parts.append(page.spec(PlotSpec("bar", "Candidates added, removed and changed per group", categories=names,
                                        series={k: [by_group[g].get(k, 0) for g in names] for k in kinds},
                                        xlabel="group", ylabel="candidates"), "delta-groups"))
    if d.get("by_source"):
        parts += ["<h3>Per source</h3>", _table([{"source": k, **v} for k, v in d["by_source"].items()])]
    if by_group:
        parts += ["<h3>Per group</h3>", _table([{"group": k, **v} for k, v in by_group.items()], max_rows=100)]
    if not d.get("by_source") and not by_group:
        parts.append("<p>No candidate changed.</p>")
    ex = {k: v for k, v in (d.get("examples") or {}).items() if v}
    if ex:
        parts += ["<h3>Example ids</h3>", _table([{"change": k, "ids": ", ".join(map(str, v))} for k, v in ex.items()])]
    return _section("delta", f"Compared with the parent version ({d['parent']})", parts)


def _timings_section(page: _Page, m: Mapping[str, Any]) -> str:
    stages = m.get("stages") or {k: {"seconds": v} for k, v in (m.get("timings") or {}).items()}
    if not stages:
        return ""
    rows = [{"stage": k, "seconds": round(float(st.get("seconds") or 0.0), 3), "reused": bool(st.get("reused")),
             "peak memory (GB)": st.get("peak_rss_gb")} for k, st in stages.items()]
    if all(r["peak memory (GB)"] is None for r in rows):  # an older manifest, or all reused
        rows = [{k: v for k, v in r.items() if k != "peak memory (GB)"} for r in rows]
    parts = [page.spec(PlotSpec("bar", "Seconds per stage (a reused stage took its output from the stage store)",
                                categories=[r["stage"] for r in rows], series={"seconds": [r["seconds"] for r in rows]},
                                xlabel="stage", ylabel="seconds"), "timings-chart", height=280),
             _table([{k: ("yes" if v else "") if k == "reused" else ("" if v is None else v) for k, v in r.items()}
                     for r in rows])]
    if "peak memory (GB)" in rows[0]:
        parts.append("<p>Peak memory: the building process's largest resident set while the stage ran "
                     "(work on Ray workers runs in other processes and is not in it).</p>")
    return _section("timings", "Stage timings", parts)
