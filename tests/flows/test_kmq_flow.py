"""kMQ selectors through the real flow: real MiniLM, real faiss, real Ray and Prefect, real data."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from flows.cli import main


@pytest.mark.slow
def test_kmq_iterative_build_reports_rounds_weights_and_quality(tmp_path, monkeypatch, evals_sample, ray_session,
                                                                 prefect_api, capsys):
    monkeypatch.chdir(tmp_path)
    Path("kmq.yaml").write_text(yaml.safe_dump({
        "name": "kmq-mix", "seed": 3,
        "sources": [{"name": "evals", "kind": "files", "path": str(evals_sample), "id": "prompt_id", "text": "text",
                     "label": "task"}],
        "groups": ["lang"],
        "embed": {"model": "all-MiniLM-L6-v2", "max_seq_length": 64},
        "cluster": {"k": 8},
        "select": {"method": "kmq-iterative", "budget": 90, "rounds": 3, "quality": "knn-agreement"},
        "output": {"root": "out"},
    }))
    assert main(["build", "kmq.yaml"]) == 0
    out = capsys.readouterr().out
    version = Path(out.strip().splitlines()[-1])
    assert "silhouette" in out

    report = pl.read_parquet(version / "report.parquet")
    picked = report.filter(pl.col("selected"))
    assert picked.height == 90
    assert picked.group_by("round").len().sort("round")["len"].to_list() == [30, 30, 30]
    assert report.filter(~pl.col("selected"))["round"].unique().to_list() == [0]
    assert {"cluster", "quality", "cluster_weight"} <= set(report.columns)
    assert report["quality"].min() >= 0 and report["quality"].max() <= 1  # knn-agreement is a share

    manifest = json.loads((version / "manifest.json").read_text())
    weights = manifest["selection"]["cluster_weights"]
    assert len(weights) == 3 and all(abs(sum(w) - 1) < 1e-9 for w in weights)
    assert weights[0] == [1 / 8] * 8 and weights[-1] != weights[0]  # feedback moved the weights
    assert -1 <= manifest["clustering"]["silhouette"] <= 1
    assert manifest["selection"]["scorer_calls"] == report.height


@pytest.mark.slow
def test_kmq_with_k_auto_reports_silhouette_per_k(tmp_path, monkeypatch, evals_sample, ray_session, prefect_api, capsys):
    monkeypatch.chdir(tmp_path)
    Path("kmq.yaml").write_text(yaml.safe_dump({
        "name": "kmq-auto", "seed": 1,
        "sources": [{"name": "evals", "kind": "files", "path": str(evals_sample), "id": "prompt_id", "text": "text"}],
        "embed": {"model": "hashing"},
        "cluster": {"k": "auto", "k_grid": [2, 4, 8, 16]},
        "select": {"method": "kmq", "budget": 50, "quality": "length"},
        "output": {"root": "out"},
    }))
    assert main(["build", "kmq.yaml"]) == 0
    version = Path(capsys.readouterr().out.strip().splitlines()[-1])
    clustering = json.loads((version / "manifest.json").read_text())["clustering"]
    scores = clustering["silhouette_by_k"]
    assert set(scores) == {"2", "4", "8", "16"}
    best = max((v, -int(k)) for k, v in scores.items() if v is not None)
    assert clustering["k"] == -best[1]
    data = pl.read_parquet(version / "data")
    assert data.height == 50 and data["cluster"].n_unique() <= clustering["k"]


@pytest.mark.slow
def test_quad_build_reports_probes_and_scorer_calls(tmp_path, monkeypatch, evals_sample, ray_session, prefect_api,
                                                    capsys):
    monkeypatch.chdir(tmp_path)
    Path("quad.yaml").write_text(yaml.safe_dump({
        "name": "quad-mix", "seed": 2,
        "sources": [{"name": "evals", "kind": "files", "path": str(evals_sample), "id": "prompt_id", "text": "text"}],
        "embed": {"model": "hashing"},
        "cluster": {"k": 12},
        "select": {"method": "quad", "budget": 60, "scorer": "length", "probe": 4, "chunk": 10, "tau": 0.3,
                   "alpha": 0.05, "clusters_per_round": 3},
        "output": {"root": "out"},
    }))
    assert main(["build", "quad.yaml"]) == 0
    out = capsys.readouterr().out
    version = Path(out.strip().splitlines()[-1])
    report = pl.read_parquet(version / "report.parquet")
    picked = report.filter(pl.col("selected"))
    assert 0 < picked.height <= 60 and picked["chunk_accepted"].all()
    assert {"round", "probe_score", "ucb_mean", "ucb_bonus"} <= set(report.columns)
    manifest = json.loads((version / "manifest.json").read_text())
    calls = manifest["selection"]["scorer_calls"]
    assert calls == 4 * manifest["selection"]["pulls"] and calls < report.height  # only probes are scored
    assert f"scorer calls: {calls} for a pool of {report.height}" in out
