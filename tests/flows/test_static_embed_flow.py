"""A build with the distilled static-minilm embedder, through Ray actors and Prefect, on real prompts."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from curation.publish import verify_version
from flows.cli import main


@pytest.mark.slow
def test_static_minilm_build_publishes_a_valid_version(tmp_path, monkeypatch, evals_sample, ray_session, prefect_api,
                                                       capsys):
    monkeypatch.chdir(tmp_path)
    Path("static.yaml").write_text(yaml.safe_dump({
        "name": "static-mix", "seed": 1,
        "sources": [{"name": "evals", "kind": "files", "path": str(evals_sample), "id": "prompt_id", "text": "text",
                     "label": "task"}],
        "embed": {"model": "static-minilm"},
        "cluster": {"k": 7},
        "select": {"method": "kmq", "budget": 70},
        "output": {"root": "out"},
    }))
    assert main(["build", "static.yaml"]) == 0
    version = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert verify_version(version) == []
    manifest = json.loads((version / "manifest.json").read_text())
    embedder = manifest["embedding"]["embedder"]
    assert embedder.startswith("static:minilm@") and ":dim=256" in embedder  # the distilled model's hash is recorded
    assert manifest["embedding"]["dim"] == 256 and pl.read_parquet(version / "data").height == 70
    # the seven tasks are far apart for the static vectors too: clusters follow tasks
    report = pl.read_parquet(version / "report.parquet")
    purity = report.group_by("cluster").agg(pl.col("label").mode().first().alias("m"), pl.len().alias("n"),
                                            (pl.col("label") == pl.col("label").mode().first()).sum().alias("hit"))
    assert purity["hit"].sum() / purity["n"].sum() > 0.6
