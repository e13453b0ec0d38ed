"""group-adaptive through the real flow on real census rows (Adult, race × sex), Ray and Prefect."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from flows.cli import main


@pytest.mark.slow
def test_group_adaptive_maxmin_on_adult_with_your_own_model_as_the_proxy(tmp_path, monkeypatch, adult_sample, ray_session, prefect_api, capsys):
    monkeypatch.chdir(tmp_path)
    Path("equity.yaml").write_text(yaml.safe_dump({
        "name": "adult-equity", "seed": 3,
        "sources": [{"name": "adult", "kind": "files", "path": str(adult_sample),
                     "features": ["age", "education_num", "hours_per_week", "capital_gain", "occupation",
                                  "marital_status"], "label": "income"}],
        "groups": ["race", "sex"],
        "cluster": {"k": 4},
        "reference": {"fraction": 0.25},
        "select": {"method": "group-adaptive", "budget": 1200, "objective": "maxmin", "n0": 20, "step_frac": 0.2,
                   "repeats": 1, "learner": "python:sklearn.naive_bayes:GaussianNB"},  # your model as the proxy
        "output": {"root": "out"},
    }))
    assert main(["build", "equity.yaml"]) == 0
    out = capsys.readouterr().out
    version = Path(out.strip().splitlines()[-1])
    manifest = json.loads((version / "manifest.json").read_text())
    eq = manifest["selection"]["equity"]
    assert eq["learner"] == "python:sklearn.naive_bayes:GaussianNB"
    groups = {g["group"]: g for g in eq["groups"]}
    assert len(groups) == 10 and all("|" in name for name in groups)  # race × sex intersections
    assert sum(g["n"] for g in groups.values()) <= 1200
    assert all(g["n"] >= min(20, g["available"]) for g in groups.values())
    assert eq["worst_group_error"] >= eq["average_error"] and eq["gap"] >= 0
    assert eq["history"][0]["action"] == "pilot" and len(eq["history"]) > 1
    report = pl.read_parquet(version / "report.parquet")
    picked = report.filter(pl.col("selected"))
    counts = dict(picked.group_by("group").len().iter_rows())
    assert counts == {k: g["n"] for k, g in groups.items() if g["n"]}
    assert picked["allocation_step"].min() == 1
    assert "group errors (maxmin, adaptive allocation" in out and "predicted_error" in out
    # the plan was measured against the baselines with the same proxy, and measured best
    check = eq["check"]
    scores = {k: c["objective"] for k, c in check["candidates"].items()}
    assert set(scores) == {"adaptive", "proportional", "equal"} and check["kept"] == "adaptive"
    assert scores["adaptive"] == min(scores.values())
    assert "checked against the baselines (worst-group error on held-out rows" in out and "kept adaptive" in out
    held = report.filter(pl.col("status") == "reference")
    assert held.height == manifest["counts"]["reference"] > 0 and held["group"].n_unique() >= 8
