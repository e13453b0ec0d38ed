"""A composed selection (filter -> allocate -> within) through `curate build` on real prompts."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from curation.html_report import render_html
from flows.cli import main


@pytest.mark.slow
def test_value_filter_then_equal_quotas_then_kmq_on_real_prompts(tmp_path, monkeypatch, evals_sample, ray_session,
                                                                 prefect_api, capsys):
    monkeypatch.chdir(tmp_path)
    Path("chain.yaml").write_text(yaml.safe_dump({
        "name": "composed", "seed": 4,
        "sources": [{"name": "evals", "kind": "files", "path": str(evals_sample), "id": "prompt_id", "text": "text",
                     "label": "task"}],
        "groups": ["lang"],
        "embed": {"model": "static-minilm"},
        "cluster": {"k": 8},
        "value": {"method": "knn-shapley", "k": 5, "validation": {"fraction": 0.2}},
        "select": {"budget": 120,  # no method: the steps make it a chain
                   "filter": {"method": "value-threshold", "mode": "drop", "threshold": None, "drop_fraction": 0.1},
                   "allocate": {"method": "stratified", "mode": "equal"},
                   "within": {"method": "kmq"}},
        "output": {"root": "out"},
    }))
    assert main(["build", "chain.yaml"]) == 0
    out = capsys.readouterr().out
    version = Path(out.strip().splitlines()[-1])
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["recipe"]["select"]["method"] == "chain"
    report = pl.read_parquet(version / "report.parquet")
    pool = report.filter(pl.col("status").is_in(["selected", "not_selected"]))

    # the filter dropped the 10% lowest-valued pool rows, and none of them is selected
    filtered = pool.filter(pl.col("decided_by") == "filter")
    assert filtered.height == int(0.1 * pool.height) == manifest["selection"]["steps"]["filter"]["dropped"]
    assert set(filtered["reason_code"]) == {"filtered"} and not filtered["selected"].any()
    assert filtered["value"].max() <= pool.filter(pl.col("decided_by") != "filter")["value"].min()

    # every language gets exactly its equal quota, chosen by kmq inside the language
    picked = pool.filter(pl.col("selected"))
    quotas = {g["group"]: g["quota"] for g in manifest["selection"]["groups"]}
    assert dict(picked.group_by("group").len().iter_rows()) == quotas and set(quotas.values()) == {20}
    assert set(picked["decided_by"]) == {"within"} and picked["reason"].str.contains("; within: kmq: ").all()
    assert (picked["quota"] == 20).all() and picked.height == 120

    # the step that decided is what `curate explain` and the summaries say
    assert main(["explain", "out/composed", filtered["id"][0], "--format", "json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["status"] == "not_selected" and said["reason_code"] == "filtered"
    assert said["reason"].startswith("filter: value-threshold: dropped")
    assert "filter (value-threshold) -> allocate (stratified) -> within (kmq)" in out
    html = render_html(version.parent, version.name)
    assert "Composed selection" in html and "Quotas" in html
