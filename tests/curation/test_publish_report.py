"""Versioned publishing (atomic, checksummed, byte-stable) and report queries."""

from __future__ import annotations

import json
import os

import polars as pl
import pyarrow.parquet as pq
import pytest

from curation.exceptions import CurationError
from curation.publish import latest_version, list_versions, publish_version, resolve_version, verify_version
from curation.report import format_table, query, summarize, version_delta
from curation.report_schema import status_counts, validate_report


def report_frame():
    return validate_report(pl.DataFrame({
        "id": ["a", "b", "c", "d", "e", "f"],
        "source": ["s"] * 6,
        "group": ["x", "x", "y", "y", "x", "y"],
        "cluster": [0, 1, 1, None, 0, None],
        "selected": [True, False, True, False, False, False],
        "selected_rank": [0, None, 1, None, None, None],
        "status": ["selected", "not_selected", "selected", "skipped", "not_selected", "reference"],
        "reason_code": ["selected", "not_selected", "selected", "skipped_null_text", "not_selected",
                        "reference_fraction"],
        # the reason text is deliberately uninformative: the summary must not need it
        "reason": ["r"] * 6,
    }))


def test_publish_layout_checksums_and_latest(tmp_path):
    data = pl.DataFrame({"id": [str(i) for i in range(25)], "v": list(range(25))})
    v1 = publish_version(tmp_path / "ds", data, report_frame(), {"name": "ds"}, rows_per_shard=10)
    assert v1.name == "v0001" and (tmp_path / "ds" / "LATEST").read_text().strip() == "v0001"
    assert sorted(p.name for p in (v1 / "data").iterdir()) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    manifest = json.loads((v1 / "manifest.json").read_text())
    assert manifest["parent"] is None and set(manifest["files"]) == {
        "data/part-00000.parquet", "data/part-00001.parquet", "data/part-00002.parquet", "report.parquet"}
    assert verify_version(v1) == []
    v2 = publish_version(tmp_path / "ds", data, report_frame(), {"name": "ds"}, rows_per_shard=10)
    assert v2.name == "v0002" and json.loads((v2 / "manifest.json").read_text())["parent"] == "v0001"
    # same tables -> same rows and sizes; the bytes differ only by the version stamp in the metadata
    files2 = json.loads((v2 / "manifest.json").read_text())["files"]
    for rel, meta in manifest["files"].items():
        assert {k: files2[rel][k] for k in ("bytes", "rows")} == {k: meta[k] for k in ("bytes", "rows")}
        assert pq.read_table(v1 / rel).equals(pq.read_table(v2 / rel))
        assert pq.read_metadata(v2 / rel).metadata[b"curation.version"] == b"v0002"
    again = publish_version(tmp_path / "again", data, report_frame(), {"name": "ds"}, rows_per_shard=10)
    assert json.loads((again / "manifest.json").read_text())["files"] == manifest["files"]  # v0001 again: same bytes
    assert list_versions(tmp_path / "ds") == ["v0001", "v0002"] and latest_version(tmp_path / "ds") == "v0002"


def test_tampering_is_detected(tmp_path):
    v = publish_version(tmp_path / "ds", pl.DataFrame({"id": ["a"]}), report_frame(), {})
    with open(v / "report.parquet", "ab") as f:
        f.write(b"x")
    assert verify_version(v) == ["report.parquet"]


def test_a_failed_write_publishes_nothing_and_keeps_the_previous_version(tmp_path, monkeypatch):
    ok = publish_version(tmp_path / "ds", pl.DataFrame({"id": ["a"]}), report_frame(), {})
    import curation.publish as pub

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pub, "sha256_file", boom)
    with pytest.raises(OSError, match="disk full"):
        publish_version(tmp_path / "ds", pl.DataFrame({"id": ["b"]}), report_frame(), {})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "ds")) == ["LATEST", "v0001"]  # no temp dir, no v0002
    assert latest_version(tmp_path / "ds") == "v0001" and verify_version(ok) == []


def test_resolve_version_errors(tmp_path):
    with pytest.raises(CurationError, match="holds no published version"):
        resolve_version(tmp_path / "none")
    publish_version(tmp_path / "ds", pl.DataFrame({"id": ["a"]}), report_frame(), {})
    with pytest.raises(CurationError, match=r"version 'v0009' not found .* versions: v0001"):
        resolve_version(tmp_path / "ds", "v0009")


@pytest.fixture(params=["loaded", "scanned"])
def report_as(request, tmp_path):
    """The report as a loaded frame, or as a lazy scan of its file (how a build summarises it)."""
    def make(frame: pl.DataFrame):
        if request.param == "loaded":
            return frame
        path = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.parquet"
        frame.write_parquet(path)
        return pl.scan_parquet(path)
    return make


def test_summary_counts_groups_clusters_and_skips(report_as):
    s = summarize(report_as(report_frame()), budget=2, k=3)
    assert s["budget"] == {"budget": 2, "selected": 2, "pool": 4, "budget_used": 1.0, "reference": 1,
                           "skipped": {"skipped_null_text": 1}}
    assert s["clusters"] == {"k": 3, "covered": 2, "coverage": round(2 / 3, 4), "silhouette": None}
    groups = {g["group"]: g for g in s["groups"]}
    assert groups["x"] == {"group": "x", "pool": 3, "pool_share": 0.75, "selected": 1, "selected_share": 0.5}
    assert groups["y"]["pool"] == 1 and groups["y"]["selected"] == 1
    assert status_counts(report_as(report_frame())) == {"candidates": 6, "pool": 4, "selected": 2,
                                                         "not_selected": 2, "reference": 1, "skipped": 1}


def test_version_delta_counts_added_removed_and_changed_rows(report_as):
    old = report_frame().with_columns(content_hash=pl.Series(["h"] * 6))
    # b left, g came, c changed; the skipped row d counts for neither version
    new = pl.concat([old.filter(pl.col("id") != "b"), old.filter(pl.col("id") == "e").with_columns(id=pl.lit("g"))]
                    ).with_columns(content_hash=pl.when(pl.col("id") == "c").then(pl.lit("h2")).otherwise("content_hash"))
    d = version_delta(report_as(new), report_as(old), "v0001")
    assert (d["added"], d["removed"], d["changed"]) == (1, 1, 1)
    assert d["by_group"] == {"x": {"added": 1, "removed": 1, "changed": 0}, "y": {"added": 0, "removed": 0, "changed": 1}}
    assert d["examples"] == {"added": ["g"], "removed": ["b"], "changed": ["c"]}
    no_hash = version_delta(report_as(new), report_as(old.drop("content_hash")), "v0001")
    assert no_hash["changed"] is None and "changed" not in no_hash["examples"]


def test_a_report_published_in_blocks_is_the_table_published_whole(tmp_path):
    data = pl.DataFrame({"id": ["a", "c"]})
    whole = publish_version(tmp_path / "whole", data, report_frame(), {"name": "ds"})
    blocks = publish_version(tmp_path / "blocks", data, lambda: iter(report_frame().iter_slices(2)), {"name": "ds"})
    assert pl.read_parquet(blocks / "report.parquet").equals(pl.read_parquet(whole / "report.parquet"))
    assert pq.ParquetFile(blocks / "report.parquet").num_row_groups == 3
    assert verify_version(blocks) == []


def test_sql_over_report_and_selected(tmp_path):
    data = pl.DataFrame({"id": ["a", "c"], "text": ["t1", "t3"]})
    publish_version(tmp_path / "ds", data, report_frame(), {})
    got = query(tmp_path / "ds", "SELECT \"group\", COUNT(*) AS n FROM report WHERE selected GROUP BY \"group\" ORDER BY \"group\"")
    assert got.to_dicts() == [{"group": "x", "n": 1}, {"group": "y", "n": 1}]
    joined = query(tmp_path / "ds", "SELECT s.text, r.reason FROM selected s JOIN report r ON s.id = r.id ORDER BY s.id")
    assert joined["text"].to_list() == ["t1", "t3"]


def test_format_table_aligns_numbers_right():
    out = format_table([{"name": "a", "n": 5}, {"name": "bbb", "n": 120}]).splitlines()
    assert out[0] == "name    n" and out[2] == "a       5" and out[3] == "bbb   120"


def test_the_groups_table_shows_the_selectors_targets_beside_pool_and_selected():
    s = summarize(report_frame(), budget=2, k=2, targets={"x": 1, "y": 1})
    rows = {g["group"]: g for g in s["groups"]}
    assert list(rows["x"]) == ["group", "pool", "pool_share", "target", "target_share", "selected", "selected_share"]
    assert (rows["x"]["target"], rows["x"]["target_share"], rows["x"]["selected"]) == (1, 0.5, 1)
    assert "target" not in summarize(report_frame(), budget=2, k=2)["groups"][0]  # no quotas, no column
