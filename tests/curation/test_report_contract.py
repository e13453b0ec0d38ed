"""The report contract on a real, small, in-process build (`curation.build`, hashing embedder).

Every row has exactly one status, the manifest's counts are the status counts, and reference and
skipped rows carry their status and reason code; the summaries come from the selector's hooks.
"""

from __future__ import annotations

from collections import Counter

import polars as pl
import pytest

import curation
from curation.html_report import render_html
from curation.report import format_summary
from curation.report_schema import STATUSES, validate_report


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    rows = [f"{i},prompt number {i} about topic {i % 5} {'x' * (i % 17)},t{i % 3}" for i in range(60)]
    rows[7] = "7,,t1"                      # null text: skipped at ingestion
    raw = ("id,text,task\n" + "\n".join(rows) + "\n").encode()
    raw = raw.replace(b"prompt number 9 ", b"prompt \xff number 9 ")  # not UTF-8: skipped too
    (root / "rows.csv").write_bytes(raw)
    return curation.build({
        "name": "contract", "seed": 5,
        "sources": [{"name": "rows", "kind": "files", "path": str(root / "rows.csv"), "id": "id", "text": "text",
                     "label": "task"}],
        "embed": {"model": "hashing:32"},
        "cluster": {"k": 4},
        "reference": {"fraction": 0.2},
        # tau 0.5 away from the default: the HTML must show the build's own threshold
        "select": {"method": "quad", "budget": 20, "scorer": "length", "probe": 2, "chunk": 3, "tau": 0.5,
                   "clusters_per_round": 2},
        "output": {"root": str(root / "out")},
    })


def test_every_row_has_exactly_one_valid_status_and_counts_match(version):
    report = validate_report(version.report())  # the published file still honours the contract
    assert report["status"].null_count() == 0 and set(report["status"]) <= set(STATUSES)
    by_status = Counter(report["status"].to_list())
    counts = version.manifest["counts"]
    assert counts == {"candidates": report.height, "pool": by_status["selected"] + by_status["not_selected"],
                      "selected": by_status["selected"], "not_selected": by_status["not_selected"],
                      "reference": by_status["reference"], "skipped": by_status["skipped"]}
    assert counts["candidates"] == 60 and counts["selected"] == version.data().height
    budget = version.manifest["summary"]["budget"]
    assert (budget["pool"], budget["reference"]) == (counts["pool"], counts["reference"])
    assert sum(budget["skipped"].values()) == counts["skipped"]


def test_reference_and_skipped_rows_have_their_status_and_code(version):
    report = version.report()
    ref = report.filter(pl.col("status") == "reference")
    assert ref.height == round(0.2 * 58) and set(ref["reason_code"]) == {"reference_fraction"}
    assert not ref["selected"].any() and ref["cluster"].is_null().all()
    skipped = {r["id"]: r for r in report.filter(pl.col("status") == "skipped").to_dicts()}
    assert set(skipped) == {"7", "9"}
    assert skipped["7"]["reason_code"] == "skipped_null_text" and skipped["7"]["reason"] == "skipped: null_text"
    assert skipped["9"]["reason_code"] == "skipped_invalid_utf8"
    assert version.manifest["summary"]["budget"]["skipped"] == {"skipped_invalid_utf8": 1, "skipped_null_text": 1}


def test_quad_contributes_its_columns_codes_section_and_plot(version):
    report = version.report()
    pool = report.filter(pl.col("status").is_in(["selected", "not_selected"]))
    assert {"round", "probe_score", "chunk_accepted", "ucb_mean", "ucb_bonus"} <= set(report.columns)
    assert set(pool.filter(~pl.col("selected"))["reason_code"]) <= {"chunk_rejected", "chunk_not_reached",
                                                                      "budget_reached"}
    rejected = pool.filter(pl.col("reason_code") == "chunk_rejected")
    assert (rejected["probe_score"] <= 0.5).all()  # rejected means probe mean <= the recipe's tau
    text = format_summary(version.manifest)
    calls = version.manifest["selection"]["scorer_calls"]
    assert f"scorer calls: {calls} for a pool of {version.manifest['counts']['pool']}" in text
    html = render_html(version.path.parent, version.name)
    assert "<h3>Scorer</h3>" in html and "(tau = 0.5)" in html and "Quad probes" in html
