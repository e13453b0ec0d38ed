"""Scorers against a reference set through the real flow (Prefect, Ray, faiss; MiniLM for text)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from flows.cli import main


@pytest.mark.slow
def test_quad_with_influence_against_a_held_out_fraction(tmp_path, monkeypatch, evals_sample, ray_session,
                                                         prefect_api, capsys):
    monkeypatch.chdir(tmp_path)
    Path("quad.yaml").write_text(yaml.safe_dump({
        "name": "quad-influence", "seed": 4,
        "sources": [{"name": "evals", "kind": "files", "path": str(evals_sample), "id": "prompt_id", "text": "text",
                     "label": "task"}],
        "embed": {"model": "all-MiniLM-L6-v2", "max_seq_length": 64},
        "cluster": {"k": 10},
        "select": {"method": "quad", "budget": 80, "scorer": "influence", "probe": 4, "chunk": 10, "tau": 0.0,
                   "alpha": 0.5, "clusters_per_round": 3},
        "reference": {"fraction": 0.2},
        "output": {"root": "out"},
    }))
    assert main(["build", "quad.yaml"]) == 0
    out = capsys.readouterr().out
    version = Path(out.strip().splitlines()[-1])
    report = pl.read_parquet(version / "report.parquet")
    held = report.filter(pl.col("status") == "reference")
    assert (held["reason_code"] == "reference_fraction").all()
    n = pl.read_parquet(evals_sample).height
    assert held.height == round(0.2 * n) and not held["selected"].any() and held["cluster"].is_null().all()
    assert held["label"].n_unique() == 7  # stratified by task
    data = pl.read_parquet(version / "data")
    assert 0 < data.height <= 80 and set(data["id"]).isdisjoint(held["id"])

    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["counts"]["reference"] == held.height and manifest["counts"]["skipped"] == 0
    assert manifest["counts"]["pool"] == n - held.height
    scorer = manifest["selection"]["scorer"]
    assert scorer["name"] == "influence" and scorer["reference_rows"] == held.height
    assert scorer["ihvp"]["relative_residual"] <= 1e-6
    calls = manifest["selection"]["scorer_calls"]
    assert calls == 4 * manifest["selection"]["pulls"] < manifest["counts"]["pool"]
    assert f"reference rows (held out of selection): {held.height}" in out and "scorer influence:" in out
    picked = report.filter(pl.col("selected"))
    assert (picked["probe_score"] > 0).all()  # tau 0: only chunks whose probes lowered the reference loss
    # Quad's own reason codes: every pulled-but-unpicked row is in a rejected or trimmed chunk
    unpicked = report.filter(pl.col("status") == "not_selected")
    assert set(unpicked["reason_code"]) <= {"chunk_rejected", "chunk_not_reached", "budget_reached"}
    assert (unpicked.filter(pl.col("reason_code") == "chunk_rejected")["probe_score"] <= 0).all()


@pytest.mark.slow
def test_reference_file_with_knn_shapley_drops_duplicates_of_reference_rows(tmp_path, monkeypatch, ray_session,
                                                                            prefect_api, capsys):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    pool = pl.DataFrame({"x1": rng.normal(size=n) + 2 * y, "x2": rng.normal(size=n), "sex": rng.choice(["f", "m"], n),
                         "outcome": y})
    pool.write_csv("people.csv")
    ref = pool.head(30)  # the first 30 rows again: content-hash ids make them duplicates
    ref.vstack(pool.tail(1).with_columns(pl.col("x1") + 0.5)).write_csv("ref.csv")
    Path("tab.yaml").write_text(yaml.safe_dump({
        "name": "tab-ref", "seed": 1,
        "sources": [{"name": "people", "kind": "files", "path": "people.csv", "features": ["x1", "x2"],
                     "label": "outcome"}],
        "groups": ["sex"],
        "cluster": {"k": 4},
        "select": {"method": "kmq", "budget": 100, "quality": "knn-shapley", "temperature": 0.1},
        "reference": {"path": "ref.csv"},
        "output": {"root": "out"},
    }))
    assert main(["build", "tab.yaml"]) == 0
    version = Path(capsys.readouterr().out.strip().splitlines()[-1])
    report = pl.read_parquet(version / "report.parquet")
    assert report.filter((pl.col("status") == "reference") & (pl.col("reason_code") == "reference_file")).height == 31
    assert report.filter((pl.col("status") == "skipped")
                         & (pl.col("reason_code") == "skipped_duplicate_of_reference")).height == 30
    assert report.filter(pl.col("reason") == "skipped: duplicate_of_reference").height == 30  # the human text as before
    # a dropped row's group and location are read back from the stage's files (ItemParts.complete)
    dropped = report.filter(pl.col("reason_code") == "skipped_duplicate_of_reference")
    assert sorted(dropped["group"].to_list()) == sorted(pool.head(30)["sex"].to_list())
    assert dropped["location"].null_count() == 0 and dropped["location"].str.starts_with("people.csv:").all()
    assert report.filter(pl.col("selected")).height == 100
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["counts"] == {**manifest["counts"], "pool": n - 30, "reference": 31, "skipped": 30}
    assert [i["source"] for i in manifest["inputs"]] == ["people", "reference"]
