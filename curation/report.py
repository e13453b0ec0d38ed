"""Selection reports: the summary tables, aligned printing and SQL over a version.

``report.parquet`` has one row per candidate; its columns, the row ``status`` values
(``selected``, ``not_selected``, ``reference``, ``skipped``) and the ``reason_code`` values are
declared once in :mod:`curation.report_schema` (prose: docs/report.md)::

    id, source, group, <group columns>, label, cluster, selected, selected_rank,
    [score], [value, value_stderr], <selector columns>, status, reason_code, reason

``reason`` is for people; code reads ``status`` and ``reason_code`` and never parses ``reason``.

The summary answers "is every group represented?" at a glance:

* ``groups``: per group, pool count and share before selection, selected count and share after;
* ``clusters``: clusters represented in the selection / total (coverage);
* ``budget``: budget, selected, usable pool, reference rows, skipped rows by reason code.

With data values (the recipe's ``value:``) the report has ``value`` and ``value_stderr``, and
the groups table adds each group's total and mean value.

Method-specific parts (the scorer's calls, group errors, Quad's probes, learning curves) come
from the selector that made the version: :func:`selector_of` looks its class up by the
manifest's ``recipe.select.method`` and its ``summary_section``/``report_plots`` hooks supply
them. This module has no per-method code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from curation.publish import resolve_version
from curation.report_schema import POOL_STATUSES, REFERENCE, SELECTED, SKIPPED, SummarySection, format_value

_fmt = format_value  # the old name, kept for callers


def _collect(*frames: pl.LazyFrame) -> list[pl.DataFrame]:
    """``frames`` computed with polars' streaming engine in one pass where they share a scan: a
    report given as a scan of its file is summarised without loading it (10M rows: GBs)."""
    return pl.collect_all(list(frames), engine="streaming")


def summarize(report: pl.DataFrame | pl.LazyFrame, *, budget: int, k: int | None, silhouette: float | None = None,
              targets: dict[str, int] | None = None) -> dict[str, Any]:
    """Summary tables (lists of row dicts) from a report table, by ``status`` and ``reason_code``.

    ``targets`` (the selector's per-group quotas, when it has them) adds each group's ``target``
    count and ``target_share``, so the groups table shows pool, target and selected side by side.
    ``report`` may be a LazyFrame (a scan of ``report.parquet``): only small results are loaded.
    """
    lf = report.lazy()
    is_sel = pl.col("status") == SELECTED
    # with data values: which groups the model's accuracy depends on (total and mean value)
    valued = ["value_total", "value_mean"] if "value" in lf.collect_schema().names() else []
    per_group_q = (lf.filter(pl.col("status").is_in(POOL_STATUSES)).group_by("group")
                   .agg(pl.len().alias("pool"), is_sel.sum().alias("selected"),
                        *([pl.col("value").sum().alias("value_total"), pl.col("value").mean().alias("value_mean")]
                          if valued else [])))
    totals, covered, skipped, *per_group = _collect(
        lf.select(pl.col("status").is_in(POOL_STATUSES).sum().alias("pool"), is_sel.sum().alias("selected"),
                  (pl.col("status") == REFERENCE).sum().alias("reference")),
        lf.filter(is_sel).select(pl.col("cluster").n_unique().alias("covered")),
        lf.filter(pl.col("status") == SKIPPED).group_by("reason_code").agg(pl.len().alias("rows")),
        *([] if valued else [per_group_q]),
    )
    # float sums on the streaming engine add in an order that may vary from run to run: values
    # are summed by the in-memory engine (only these three columns are read), as they always were
    per_group = per_group[0] if per_group else per_group_q.collect()
    pool_n, sel_n, ref_n = (int(totals[c][0] or 0) for c in ("pool", "selected", "reference"))
    groups = (
        per_group.with_columns(
            (pl.col("pool") / max(pool_n, 1)).round(4).alias("pool_share"),
            (pl.col("selected") / max(sel_n, 1)).round(4).alias("selected_share"),
        )
        .select("group", "pool", "pool_share", "selected", "selected_share", *valued)
        .sort(["selected", "group"])  # least-represented groups first
    )
    if targets:
        total = max(sum(targets.values()), 1)
        groups = groups.with_columns(
            pl.col("group").replace_strict(targets, default=None, return_dtype=pl.Int64).alias("target"),
        ).with_columns((pl.col("target") / total).round(4).alias("target_share")).select(
            "group", "pool", "pool_share", "target", "target_share", "selected", "selected_share", *valued)
    covered_n = int(covered["covered"][0]) if sel_n else 0
    return {
        "budget": {
            "budget": budget,
            "selected": sel_n,
            "pool": pool_n,
            "budget_used": round(sel_n / budget, 4) if budget else 0.0,
            "reference": ref_n,
            "skipped": {r["reason_code"]: r["rows"] for r in skipped.sort("reason_code").to_dicts()},
        },
        "clusters": {"k": k, "covered": covered_n, "coverage": round(covered_n / k, 4) if k else None,
                     "silhouette": None if silhouette is None else round(silhouette, 4)},
        "groups": groups.to_dicts(),
    }


def selector_of(manifest: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """(the selector class that made the version, the parameters it ran with).

    The class comes from the registry by ``recipe.select.method``; a method this installation
    does not know (a plugin no longer installed) gets the base class, whose hooks add nothing.
    """
    from curation.exceptions import CurationError
    from curation.select import Selector  # imported here: the selectors load scorers and sklearn

    given = manifest.get("recipe", {}).get("select", {})
    try:
        cls = Selector.registry.get(given.get("method", ""), field="select.method")
    except CurationError:
        cls = Selector
    return cls, cls.report_params(given)


def selector_sections(manifest: dict[str, Any]) -> list[SummarySection]:
    """The summary blocks the version's selector contributes (see :meth:`Selector.summary_section`)."""
    cls, params = selector_of(manifest)
    return cls.summary_section(manifest.get("selection", {}), manifest["summary"], params)


def format_table(rows: Sequence[dict[str, Any]] | pl.DataFrame, *, max_rows: int | None = None) -> str:
    """An aligned plain-text table (numbers right-aligned), never truncating columns."""
    df = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(list(rows))
    if df.width == 0:
        return "(no rows)"
    shown = df if max_rows is None else df.head(max_rows)
    cells = [[_fmt(v) for v in row] for row in shown.iter_rows()]
    numeric = [dt.is_numeric() for dt in shown.dtypes]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(shown.columns)]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)).rstrip()

    out = [line(shown.columns), line(["-" * w for w in widths])] + [line(r) for r in cells]
    if max_rows is not None and df.height > max_rows:
        out.append(f"... {df.height - max_rows} more rows")
    return "\n".join(out)


DELTA_EXAMPLES = 5  # ids listed per kind of change in the manifest (the full lists are a SQL join away)


def version_delta(report: pl.DataFrame | pl.LazyFrame, parent_report: pl.DataFrame | pl.LazyFrame,
                  parent: str) -> dict[str, Any]:
    """What changed since ``parent``: candidates (pool and reference rows, not skipped ones)
    added, removed and changed (same id, different ``content_hash``), in total, per source and
    per group, with a few example ids of each. A parent report without ``content_hash`` (made
    before it existed) gives added and removed only (``changed`` is None).

    Either report may be a LazyFrame (a scan of its file): the joins run on polars' streaming
    engine and only counts and examples are loaded.
    """
    cur_lf, old_lf = report.lazy(), parent_report.lazy()
    cur_names, old_names = cur_lf.collect_schema().names(), old_lf.collect_schema().names()
    keep = pl.col("status") != SKIPPED
    cols = ["id", "source", "group", *(["content_hash"] if "content_hash" in cur_names else [])]
    cur = cur_lf.filter(keep).select(cols)
    old = (old_lf.filter(keep) if "status" in old_names else old_lf).select([c for c in cols if c in old_names])
    parts = {"added": cur.join(old.select("id"), on="id", how="anti"),
             "removed": old.join(cur.select("id"), on="id", how="anti")}
    comparable = "content_hash" in cur_names and "content_hash" in old_names
    if comparable:
        parts["changed"] = (cur.join(old.select("id", pl.col("content_hash").alias("old_hash")), on="id")
                            .filter(pl.col("content_hash") != pl.col("old_hash")))
    kinds = list(parts)
    results = iter(_collect(*[q for df in parts.values() for q in (
        df.group_by("source").len(), df.group_by("group").len(),
        df.select(pl.col("id").sort().head(DELTA_EXAMPLES)))]))
    per_source, per_group, examples = {}, {}, {}
    for kind in kinds:
        per_source[kind], per_group[kind], examples[kind] = next(results), next(results), next(results)

    def by(counts: dict[str, pl.DataFrame]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for kind, df in counts.items():
            for key, n in df.iter_rows():
                out.setdefault(str(key), dict.fromkeys(kinds, 0))[kind] = int(n)
        return dict(sorted(out.items()))

    totals = {kind: int(df["len"].sum()) for kind, df in per_source.items()}
    return {"parent": parent,
            **{kind: totals.get(kind) for kind in ("added", "removed", "changed")},
            "by_source": by(per_source), "by_group": by(per_group),
            "examples": {kind: df["id"].to_list() for kind, df in examples.items()}}


def label_balance(report: pl.DataFrame | pl.LazyFrame) -> list[dict[str, Any]]:
    """Per group, how the selected rows spread over labels: how many labels the group has in
    the pool and in the selection, and the most common label's share of each (1.0: one label
    only). Empty when the report has no ``label`` column. ``report`` may be a LazyFrame."""
    lf = report.lazy()
    if "label" not in lf.collect_schema().names():
        return []
    pool = lf.filter(pl.col("status").is_in(POOL_STATUSES)).with_columns(pl.col("label").cast(pl.String))
    pool_counts, sel_counts = _collect(pool.group_by("group", "label").len(),
                                       pool.filter(pl.col("status") == SELECTED).group_by("group", "label").len())

    def per_group(counts: pl.DataFrame, tag: str) -> pl.DataFrame:
        return counts.group_by("group").agg(pl.len().alias(f"{tag}_labels"),
                                            (pl.col("len").max() / pl.col("len").sum()).round(4)
                                            .alias(f"{tag}_top_label_share"))

    out = per_group(pool_counts, "pool").join(per_group(sel_counts, "selected"), on="group", how="left")
    return out.sort("group").to_dicts()


def format_summary(manifest: dict[str, Any], *, max_groups: int = 30) -> str:
    """The human summary of a version: budget, cluster coverage, the selector's sections, groups before/after."""
    s = manifest["summary"]
    b = s["budget"]
    head = [
        f"dataset {manifest['name']} {manifest['version']}  (seed {manifest['seed']}, method {manifest['recipe']['select']['method']})",
        "",
        format_table([{"budget": b["budget"], "selected": b["selected"], "pool": b["pool"], "budget_used": b["budget_used"],
                       "skipped": sum(b["skipped"].values())}]),
    ]
    if b["skipped"]:
        head.append("skipped rows: " + ", ".join(f"{k}={v}" for k, v in b["skipped"].items()))
    if b.get("reference"):
        head.append(f"reference rows (held out of selection): {b['reference']}")
    c = s["clusters"]
    if c.get("k"):
        sil = f", silhouette {c['silhouette']:.3f}" if c.get("silhouette") is not None else ""
        head += ["", f"clusters covered: {c['covered']} / {c['k']} ({c['coverage']:.1%}){sil}"]
    for section in selector_sections(manifest):  # the selector's own facts (scorer calls, group errors, ...)
        head += ["", *section.lines]
        if section.table:
            head.append(format_table(section.table, max_rows=max_groups))
    v = manifest.get("valuation")
    if v:
        extra = ", ".join(f"{k}={_fmt(v[k])}" for k in ("permutations", "samples", "converged", "seconds") if k in v)
        head += ["", f"values: {v['method']} against {v.get('validation_rows', '?')} held-out rows"
                 + (f" ({extra})" if extra else "") + "; per item in report.value, per group below"]
    div = (manifest.get("metrics") or {}).get("diversity")
    if div:
        head += ["", f"diversity: Vendi {div['vendi_1']:.2f} (order inf {div['vendi_inf']:.2f}) against "
                 f"{div['random_vendi_1']:.2f} ({div['random_vendi_inf']:.2f}) for a random draw of the same size: "
                 f"x{div['vendi_ratio']:.2f}"]
    head += ["", f"groups ({len(s['groups'])}):", format_table(s["groups"], max_rows=max_groups)]
    balance = (manifest.get("metrics") or {}).get("label_balance")
    if balance:
        head += ["", "labels per group (pool and selected; top_label_share 1.0 = one label only):",
                 format_table(balance, max_rows=max_groups)]
    d = manifest.get("delta")
    if d:
        changed = "" if d["changed"] is None else f", {d['changed']} changed"
        head += ["", f"since {d['parent']}: {d['added']} added, {d['removed']} removed{changed} (per source; "
                 "per group in manifest.delta)",
                 format_table([{"source": k, **v} for k, v in d["by_source"].items()]) if d["by_source"]
                 else "(no candidate changed)"]
    stages = manifest.get("stages") or {k: {"seconds": v} for k, v in manifest.get("timings", {}).items()}
    if stages:  # a stage reused from the stage store says so instead of its (near-zero) time
        head += ["", "stage seconds: " + ", ".join(
            f"{k}=reused" if st.get("reused") else f"{k}={st['seconds']:.1f}" for k, st in stages.items())]
        peaks = {k: st["peak_rss_gb"] for k, st in stages.items() if st.get("peak_rss_gb") is not None}
        if peaks:  # the building process's own memory (Ray workers are other processes)
            head += ["peak memory of the building process (GB): "
                     + ", ".join(f"{k}={v:.2f}" for k, v in peaks.items())]
    return "\n".join(head)


def load_manifest(dataset_dir: str | Path, version: str | None = None) -> dict[str, Any]:
    return json.loads((resolve_version(dataset_dir, version) / "manifest.json").read_text())


def query(dataset_dir: str | Path, sql: str, version: str | None = None) -> pl.DataFrame:
    """Run polars SQL over the tables ``report`` (one row per candidate) and ``selected``."""
    v = resolve_version(dataset_dir, version)
    ctx = pl.SQLContext(
        report=pl.scan_parquet(v / "report.parquet"),
        selected=pl.scan_parquet(str(v / "data" / "*.parquet")),
    )
    return ctx.execute(sql, eager=True)
