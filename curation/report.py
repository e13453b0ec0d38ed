"""Selection reports: the summary tables, aligned printing and SQL over a version.

``report.parquet`` has one row per candidate: ``id, source, group, <group columns>, label,
cluster, selected, selected_rank, reason``. Rows skipped at ingestion (null or non-UTF-8 text,
duplicate content) are there too, with ``selected = false``, no cluster and the skip reason;
so are the rows held out as the recipe's reference set (reason ``reference: ...``).

The summary answers "is every group represented?" at a glance:

* ``groups``: per group, pool count and share before selection, selected count and share after;
* ``clusters``: clusters represented in the selection / total (coverage);
* ``budget``: budget, selected, usable pool, skipped rows by reason.

With data values (the recipe's ``value:``) the report has ``value`` and ``value_stderr``, and
the groups table adds each group's total and mean value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from curation.publish import resolve_version

REFERENCE_REASON = "reference:"  # reason prefix of held-out reference rows in a report


def summarize(report: pl.DataFrame, *, budget: int, k: int | None, silhouette: float | None = None) -> dict[str, Any]:
    """Summary tables (lists of row dicts) from a report table."""
    usable = report.filter(pl.col("cluster").is_not_null())  # skipped rows have no cluster
    pool_n = usable.height
    sel_n = int(report["selected"].sum())
    # with data values: which groups the model's accuracy depends on (total and mean value)
    valued = ["value_total", "value_mean"] if "value" in report.columns else []
    groups = (
        usable.group_by("group")
        .agg(pl.len().alias("pool"), pl.col("selected").sum().alias("selected"),
             *([pl.col("value").sum().alias("value_total"), pl.col("value").mean().alias("value_mean")]
               if valued else []))
        .with_columns(
            (pl.col("pool") / max(pool_n, 1)).round(4).alias("pool_share"),
            (pl.col("selected") / max(sel_n, 1)).round(4).alias("selected_share"),
        )
        .select("group", "pool", "pool_share", "selected", "selected_share", *valued)
        .sort(["selected", "group"])  # least-represented groups first
    )
    covered = report.filter(pl.col("selected"))["cluster"].n_unique() if sel_n else 0
    is_ref = pl.col("reason").str.starts_with(REFERENCE_REASON)
    skipped = (
        report.filter(pl.col("cluster").is_null() & ~pl.col("selected") & ~is_ref)
        .group_by("reason").agg(pl.len().alias("rows")).sort("reason")
    )
    return {
        "budget": {
            "budget": budget,
            "selected": sel_n,
            "pool": pool_n,
            "budget_used": round(sel_n / budget, 4) if budget else 0.0,
            "reference": int(report.select(is_ref.sum()).item()),
            "skipped": {r["reason"]: r["rows"] for r in skipped.to_dicts()},
        },
        "clusters": {"k": k, "covered": covered, "coverage": round(covered / k, 4) if k else None,
                     "silhouette": None if silhouette is None else round(silhouette, 4)},
        "groups": groups.to_dicts(),
    }


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


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e6:
            return f"{v:.4f}".rstrip("0").rstrip(".")
        return f"{v:.3g}"  # tiny values (data values, influence) keep their significant digits
    if isinstance(v, (list, dict)):
        return json.dumps(v, default=str)
    return str(v)


def format_summary(manifest: dict[str, Any], *, max_groups: int = 30) -> str:
    """The human summary of a version: budget, cluster coverage, groups before/after."""
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
    sel = manifest.get("selection", {})
    if "scorer_calls" in sel:  # how much of the pool the quality scorer had to look at
        head += ["", f"scorer calls: {sel['scorer_calls']} for a pool of {b['pool']}"]
        facts = sel.get("scorer") or {}
        if len(facts) > 1:
            head.append(f"scorer {facts.get('name', '')}: " + ", ".join(
                f"{k}={_fmt(v)}" for k, v in facts.items() if k != "name"))
    eq = sel.get("equity")
    if eq:
        head += ["", f"group errors ({eq['objective']}, {eq['allocation']} allocation; measured on held-out rows by "
                 f"the proxy trained on the selection): worst {_fmt(eq.get('worst_group_error'))} "
                 f"({eq.get('worst_group')}), average {_fmt(eq.get('average_error'))}, gap {_fmt(eq.get('gap'))}",
                 format_table([{k: g[k] for k in ("group", "n", "available", "cost", "a", "b", "c", "predicted_error",
                                                  "measured_error")} for g in eq["groups"]], max_rows=max_groups)]
        if eq.get("short_groups"):
            head.append("groups that gave all they had: " + ", ".join(eq["short_groups"]))
    v = manifest.get("valuation")
    if v:
        extra = ", ".join(f"{k}={_fmt(v[k])}" for k in ("permutations", "samples", "converged", "seconds") if k in v)
        head += ["", f"values: {v['method']} against {v.get('validation_rows', '?')} held-out rows"
                 + (f" ({extra})" if extra else "") + "; per item in report.value, per group below"]
    head += ["", f"groups ({len(s['groups'])}):", format_table(s["groups"], max_rows=max_groups)]
    stages = manifest.get("stages") or {k: {"seconds": v} for k, v in manifest.get("timings", {}).items()}
    if stages:  # a stage reused from the stage store says so instead of its (near-zero) time
        head += ["", "stage seconds: " + ", ".join(
            f"{k}=reused" if st.get("reused") else f"{k}={st['seconds']:.1f}" for k, st in stages.items())]
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
