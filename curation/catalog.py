"""Questions about a dataset's versions: which exist, what changed between two, why an item is in.

* :func:`versions_table`: every version with its date, method, budget, counts, recipe hash and
  parent (``curate versions``);
* :func:`diff_versions`: the items added to and removed from the selection between two versions,
  by reason code, the per-group and per-cluster count changes, and what changed in the recipe
  and the inputs (``curate diff``);
* :func:`explain_item`: one item's story in a version: source and location, groups, cluster
  (size, selection rate, sample texts), scores and value, the rule that decided it and how its
  group fared (``curate explain``);
* :func:`verify_dataset`: every file against its manifest, sha256 included (``curate verify``).

Every read goes through :func:`curation.publish.resolve_version`, which refuses a version whose
files do not match its manifest. Only ``status`` and ``reason_code`` carry meaning; ``reason``
is shown, never parsed (docs/report.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from curation.exceptions import CurationError
from curation.publish import check_version, latest_version, list_versions, read_manifest, resolve_version
from curation.report_schema import POOL_STATUSES, REFERENCE_CODES, SELECTED, SKIPPED_PREFIX

SAMPLE_TEXTS = 3  # sample texts shown per cluster
TEXT_CHARS = 160  # a sample text is cut to this many characters


# ---------------------------------------------------------------------------------------- versions
def versions_table(dataset_dir: str | Path) -> list[dict[str, Any]]:
    """One row per version, oldest first; a version whose manifest is broken says so in ``problem``."""
    d = Path(dataset_dir)
    names = list_versions(d)
    if not names:
        raise CurationError(f"{str(d)!r} holds no published version (expected {d}/v0001/manifest.json)")
    latest = latest_version(d)
    rows = []
    for name in names:
        try:
            m = read_manifest(d / name)
        except CurationError as exc:
            rows.append({"version": name, "problem": str(exc)})
            continue
        budget = m.get("summary", {}).get("budget", {})
        rows.append({
            "version": name + (" *" if name == latest else ""),
            "created_at": m.get("created_at"),
            "method": m.get("recipe", {}).get("select", {}).get("method"),
            "budget": budget.get("budget"),
            "selected": budget.get("selected"),
            "pool": budget.get("pool"),
            "skipped": sum((budget.get("skipped") or {}).values()),
            "recipe": (m.get("recipe_sha256") or "")[:12],
            "parent": m.get("parent"),
        })
    return rows


def verify_dataset(dataset_dir: str | Path, version: str | None = None) -> tuple[list[str], list[str]]:
    """(versions checked, problems): every file of ``version`` (default: every version) against
    its manifest, sha256 included (:func:`curation.publish.check_version` with ``full``), and
    LATEST naming a complete version; one line per problem, naming the file.

    Raises:
        CurationError: the directory holds no version.
    """
    d = Path(dataset_dir)
    names = [version] if version else list_versions(d)
    if not names:
        raise CurationError(f"{str(d)!r} holds no published version (expected {d}/v0001/manifest.json)")
    problems = []
    try:
        latest_version(d)
    except CurationError as exc:
        problems.append(str(exc))
    for name in names:
        if not (d / name).is_dir():
            problems.append(f"{d / name}: no such version")
            continue
        problems += check_version(d / name, full=True)
    return names, problems


# -------------------------------------------------------------------------------------------- diff
def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _recipe_changes(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    fa, fb = _flatten(a.get("recipe", {})), _flatten(b.get("recipe", {}))
    return [{"key": k, "a": fa.get(k), "b": fb.get(k)} for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def _input_changes(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Per source: input units added, removed or changed (by their fingerprints)."""
    def units(m: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        out = {}
        for src in m.get("inputs") or []:
            for u in src.get("units", []):
                where = str(u.get("path") or u.get("unit") or u)
                out[(src.get("source", "?"), where)] = u
        return out

    ua, ub = units(a), units(b)
    rows = []
    for key in sorted(set(ua) | set(ub)):
        change = "added" if key not in ua else "removed" if key not in ub else "changed" if ua[key] != ub[key] else None
        if change:
            rows.append({"source": key[0], "unit": key[1], "change": change})
    return rows


def _counts(report: pl.DataFrame, by: str) -> pl.DataFrame:
    return (report.filter(pl.col("status").is_in(POOL_STATUSES))
            .group_by(by).agg(pl.len().alias("pool"), (pl.col("status") == SELECTED).sum().alias("selected")))


def diff_versions(dataset_dir: str | Path, a: str, b: str) -> dict[str, Any]:
    """What changed from version ``a`` to version ``b``.

    Returns a mapping with ``added`` / ``removed`` (the ids that entered / left the selection,
    sorted), ``items`` (one row per such id: change, source, group, cluster and reason code in
    ``b``; a removed id no longer among the candidates has status ``absent``), ``by_reason``,
    ``groups`` and ``clusters`` (selected counts in both and the change; cluster ids are only
    comparable when ``same_clustering``), ``recipe`` (changed keys) and ``inputs`` (changed
    input units).
    """
    d = Path(dataset_dir)
    va, vb = resolve_version(d, a), resolve_version(d, b)
    ma, mb = read_manifest(va), read_manifest(vb)
    ra, rb = pl.read_parquet(va / "report.parquet"), pl.read_parquet(vb / "report.parquet")
    sel_a = set(ra.filter(pl.col("status") == SELECTED)["id"].to_list())
    sel_b = set(rb.filter(pl.col("status") == SELECTED)["id"].to_list())
    added, removed = sorted(sel_b - sel_a), sorted(sel_a - sel_b)
    cols = ["id", "source", "group", "cluster", "status", "reason_code"]
    changed = pl.DataFrame({"id": added + removed, "change": ["added"] * len(added) + ["removed"] * len(removed)},
                           schema={"id": pl.String, "change": pl.String})
    items = changed.join(rb.select(cols), on="id", how="left").with_columns(
        pl.col("status").fill_null("absent"), pl.col("reason_code").fill_null("absent"))
    by_reason = (items.group_by("change", "reason_code").agg(pl.len().alias("items"))
                 .sort("change", "items", "reason_code", descending=[False, True, False]))

    def compare(by: str) -> list[dict[str, Any]]:
        ca, cb = _counts(ra, by), _counts(rb, by)
        both = ca.join(cb, on=by, how="full", suffix="_b", coalesce=True).fill_null(0)
        both = both.select(pl.col(by), pl.col("selected").alias("selected_a"), pl.col("selected_b"),
                           (pl.col("selected_b") - pl.col("selected")).alias("change"))
        return both.filter(pl.col("change") != 0).sort("change", by).to_dicts()

    same_clustering = (ma.get("stages", {}).get("cluster", {}).get("key") ==
                       mb.get("stages", {}).get("cluster", {}).get("key") is not None)
    return {
        "dataset": ma.get("name"), "a": va.name, "b": vb.name,
        "added": added, "removed": removed,
        "items": items.sort("change", "id").to_dicts(),
        "by_reason": by_reason.to_dicts(),
        "groups": compare("group"),
        "clusters": compare("cluster"),
        "same_clustering": same_clustering,
        "recipe": _recipe_changes(ma, mb),
        "inputs": _input_changes(ma, mb),
    }


def format_diff(diff: dict[str, Any]) -> str:
    """The human form of :func:`diff_versions`."""
    from curation.report import format_table

    out = [f"dataset {diff['dataset']}: {diff['a']} -> {diff['b']}: {len(diff['added'])} added to the selection, "
           f"{len(diff['removed'])} removed", ""]
    if diff["by_reason"]:
        out += ["by reason code (in " + diff["b"] + "):", format_table(diff["by_reason"]), ""]
    out += ["selected per group (changed groups):",
            format_table(diff["groups"]) if diff["groups"] else "(no group changed)", ""]
    note = "" if diff["same_clustering"] else " (the clustering changed: ids are not comparable)"
    out += [f"selected per cluster (changed clusters){note}:",
            format_table(diff["clusters"], max_rows=30) if diff["clusters"] else "(no cluster changed)", ""]
    out += ["recipe changes:", format_table(diff["recipe"]) if diff["recipe"] else "(the same recipe)", ""]
    out += ["input changes:", format_table(diff["inputs"], max_rows=30) if diff["inputs"] else "(the same inputs)"]
    if diff["items"]:
        out += ["", "items (first 20; --format csv or json lists all):", format_table(diff["items"], max_rows=20)]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------- explain
def _rule(manifest: dict[str, Any], code: str) -> str:
    """What a reason code means: the report's own codes, else the selector's declaration."""
    if code == SELECTED:
        return "picked by the selector"
    if code == "not_selected":
        return "in the pool, not picked by the selector"
    if code in REFERENCE_CODES:
        return REFERENCE_CODES[code]
    if code.startswith(SKIPPED_PREFIX):
        return f"dropped at ingestion: {code[len(SKIPPED_PREFIX):].replace('_', ' ')}"
    try:
        from curation.report import selector_of

        cls, _ = selector_of(manifest)
        return getattr(cls, "reason_codes", {}).get(code, code)
    except Exception:  # an unknown or removed selector: the code is all we have
        return code


def _text_column(manifest: dict[str, Any], source: str | None) -> str | None:
    for s in manifest.get("recipe", {}).get("sources", []):
        if s.get("name") == source or source is None:
            return s.get("text")
    return None


def explain_item(dataset_dir: str | Path, item_id: str, version: str | None = None) -> dict[str, Any]:
    """Why ``item_id`` is in or out of a version, as a mapping (see :func:`format_explanation`).

    Raises:
        CurationError: the id is not among the version's candidates.
    """
    vdir = resolve_version(dataset_dir, version)
    manifest = read_manifest(vdir)
    report = pl.read_parquet(vdir / "report.parquet")
    rows = report.filter(pl.col("id") == str(item_id))
    if rows.height == 0:
        raise CurationError(f"id {item_id!r} is not among the candidates of {vdir} (it is in no source, or was read "
                            "under another id); `curate report ... --sql \"SELECT id FROM report LIMIT 5\"` shows "
                            "what ids look like")
    row = rows.row(0, named=True)
    known = {"id", "source", "group", "cluster", "selected", "selected_rank", "status", "reason_code", "reason",
             "content_hash", "location", "label"}
    groups = {g: row[g] for g in manifest.get("recipe", {}).get("groups", []) if g in row}
    facts = {k: v for k, v in row.items() if k not in known and k not in groups and v is not None}
    out: dict[str, Any] = {
        "id": row["id"], "version": vdir.name, "dataset": manifest.get("name"),
        "status": row["status"], "reason_code": row["reason_code"], "reason": row["reason"],
        "rule": _rule(manifest, row["reason_code"]),
        "selected_rank": row.get("selected_rank"),
        "source": row["source"], "location": row.get("location"), "group": row["group"], "groups": groups,
        "label": row.get("label"), "facts": facts,
    }
    # the published rows are read lazily: only the item's row and a few of its cluster's
    data = pl.scan_parquet(vdir / "data" / "*.parquet") if (vdir / "data").is_dir() else None
    columns = data.collect_schema().names() if data is not None else []
    text_col = _text_column(manifest, row["source"])
    has_text = text_col is not None and text_col in columns
    if row["status"] == SELECTED and has_text:
        mine = data.filter(pl.col("id") == row["id"]).select(text_col).head(1).collect()
        out["text"] = mine[text_col][0] if mine.height else None
    cluster = row.get("cluster")
    if cluster is not None:
        pool = report.filter(pl.col("status").is_in(POOL_STATUSES))
        members = pool.filter(pl.col("cluster") == cluster)
        chosen = int((members["status"] == SELECTED).sum())
        samples: list[str] = []
        if has_text and "cluster" in columns:
            samples = [str(t)[:TEXT_CHARS] for t in data.filter((pl.col("cluster") == cluster) &
                                                                (pl.col("id") != row["id"]))
                       .select(text_col).head(SAMPLE_TEXTS).collect()[text_col].to_list()]
        out["cluster"] = {"id": cluster, "size": members.height, "selected": chosen,
                          "selection_rate": round(chosen / max(members.height, 1), 4),
                          "overall_rate": round(int((pool["status"] == SELECTED).sum()) / max(pool.height, 1), 4),
                          "sample_selected_texts": samples}
    group_row = next((g for g in manifest.get("summary", {}).get("groups", []) if g.get("group") == row["group"]),
                     None)
    if group_row is not None:
        out["group_outcome"] = group_row
    return out


def format_explanation(e: dict[str, Any]) -> str:
    """The human form of :func:`explain_item`: a few sentences, then the facts."""
    where = f" at {e['location']}" if e.get("location") else ""
    verdict = {"selected": f"IN the selection (pick #{(e['selected_rank'] or 0) + 1})", "not_selected": "OUT",
               "reference": "held out (a reference row)", "skipped": "SKIPPED at ingestion"}.get(e["status"], e["status"])
    lines = [f"{e['id']} in {e['dataset']} {e['version']}: {verdict}",
             f"  why: {e['rule']} [{e['reason_code']}]" + (f"; {e['reason']}" if e["reason"] and e["reason"] not in
                                                          (e["status"], e["rule"]) else ""),
             f"  from: source {e['source']}{where}",
             f"  group: {e['group']}" + (f" ({', '.join(f'{k}={v}' for k, v in e['groups'].items())})"
                                         if e["groups"] else "")]
    if e.get("label") is not None:
        lines.append(f"  label: {e['label']}")
    if e.get("text"):
        lines.append(f"  text: {str(e['text'])[:TEXT_CHARS]}")
    c = e.get("cluster")
    if c:
        lines.append(f"  cluster {c['id']}: {c['size']} candidates, {c['selected']} selected "
                     f"({c['selection_rate']:.1%} against {c['overall_rate']:.1%} overall)")
        for t in c["sample_selected_texts"]:
            lines.append(f"    e.g. {t!r}")
    for k, v in e["facts"].items():
        lines.append(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")
    g = e.get("group_outcome")
    if g:
        lines.append(f"  its group {g['group']}: {g['selected']} selected of {g['pool']} "
                     f"({g['selected_share']:.1%} of the selection against {g['pool_share']:.1%} of the pool)")
    return "\n".join(lines)
