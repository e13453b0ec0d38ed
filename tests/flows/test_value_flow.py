"""The value stage through the real flow: Ray tasks, Prefect, faiss; real MiniLM on real prompts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from flows.cli import main


@pytest.mark.slow
def test_knn_shapley_values_and_value_threshold_on_real_prompts(tmp_path, monkeypatch, evals_sample, ray_session,
                                                                prefect_api, capsys):
    monkeypatch.chdir(tmp_path)
    Path("value.yaml").write_text(yaml.safe_dump({
        "name": "valued", "seed": 5,
        "sources": [{"name": "evals", "kind": "files", "path": str(evals_sample), "id": "prompt_id", "text": "text",
                     "label": "task"}],
        "groups": ["lang"],
        "embed": {"model": "all-MiniLM-L6-v2", "max_seq_length": 64},
        "cluster": {"k": 6},
        "value": {"method": "knn-shapley", "k": 5, "validation": {"fraction": 0.2}},
        "select": {"method": "value-threshold", "budget": 100},
        "output": {"root": "out"},
    }))
    assert main(["build", "value.yaml"]) == 0
    out = capsys.readouterr().out
    version = Path(out.strip().splitlines()[-1])
    report = pl.read_parquet(version / "report.parquet")
    pool = report.filter(pl.col("status").is_in(["selected", "not_selected"]))
    assert pool["value"].null_count() == 0 and pool["value_stderr"].null_count() == pool.height  # exact: no stderr
    # efficiency: the values sum to the mean KNN accuracy on the held-out rows, a share in [0, 1]
    assert 0 < pool["value"].sum() <= 1
    picked = pool.filter(pl.col("selected"))
    assert picked.height == 100 and picked["value"].min() >= pool.filter(~pl.col("selected"))["value"].max()
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["valuation"]["method"] == "knn_shapley" and manifest["valuation"]["validation_rows"] == 84
    groups = {g["group"]: g for g in manifest["summary"]["groups"]}
    totals = pool.group_by("group").agg(pl.col("value").sum()).rows()
    for g, total in totals:
        assert groups[g]["value_total"] == pytest.approx(total)
    assert "values: knn_shapley against 84 held-out rows" in out and "value_mean" in out
    assert "value" in pl.read_parquet(version / "data").columns


@pytest.mark.slow
def test_pool_blocks_of_kmeans_and_truncated_knn_shapley_go_through_ray_and_equal_one_process(
        tmp_path, monkeypatch, ray_session, prefect_api, capsys):
    """Joined to a Ray cluster, the pool streams through Ray tasks in blocks: k-means assignment
    (each block's nearest centroids) and truncated KNN-Shapley (each shard its own faiss search,
    the shards' neighbours merged). The labels equal one process's, the values one search's."""
    import importlib

    import curation.cluster.faiss_kmeans
    import flows.ray_runtime
    from curation.builder import stage_rng
    from curation.pipeline import cluster
    from curation.recipe import load_recipe
    from curation.value.knn_shapley import knn_shapley

    monkeypatch.chdir(tmp_path)
    knn_module = importlib.import_module("curation.value.knn_shapley")  # the module, not the function
    monkeypatch.setattr(knn_module, "SHARD_ROWS", 50)  # 400 rows: 8 shards
    monkeypatch.setattr(curation.cluster.faiss_kmeans, "ASSIGN_ROWS", 100)  # and 4 assignment blocks
    ran: list[tuple[str, int]] = []
    real = flows.ray_runtime.ray_map

    def counting(func, args, **kw):
        args = list(args)
        ran.append((func.__name__, len(args)))
        return real(func, args, **kw)

    monkeypatch.setattr(flows.ray_runtime, "ray_map", counting)
    rng = np.random.default_rng(3)
    words = np.array(["red", "green", "blue", "cat", "dog", "bird", "sun", "rain", "tree", "stone"])
    first = rng.integers(0, len(words), 500)
    texts = [f"{words[f]} {' '.join(rng.choice(words, 4))} item {i}" for i, f in enumerate(first)]
    pl.DataFrame({"id": [f"r{i}" for i in range(500)], "text": texts,
                  "label": np.where(first < 5, "low", "high")}).write_parquet("rows.parquet")
    Path("knn.yaml").write_text(yaml.safe_dump({
        "name": "knn", "seed": 1,
        "sources": [{"name": "rows", "kind": "files", "path": "rows.parquet", "id": "id", "text": "text",
                     "label": "label"}],
        "embed": {"model": "hashing"}, "cluster": {"k": 4},
        "value": {"method": "knn-shapley", "k": 5, "epsilon": 0.1, "validation": {"fraction": 0.2}},
        "select": {"method": "value-threshold", "budget": 200},
        "output": {"root": "out"},
    }))
    assert main(["build", "knn.yaml"]) == 0
    version = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert ran == [("nearest_centroids", 4), ("_neighbour_shard", 8)]
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["valuation"]["shards"] == 8
    stages = {k: v["key"] for k, v in manifest["stages"].items()}
    X = np.load(Path("out/.stages/embed") / stages["embed"] / "embeddings.npy")
    ingest = Path("out/.stages/ingest") / stages["ingest"]
    items = pl.read_parquet(ingest / "items.parquet", columns=["id", "__label"])
    recipe = load_recipe("knn.yaml")
    labels, _ = cluster(X[: items.height], recipe, stage_rng(recipe.seed, "cluster"))  # in this process
    np.testing.assert_array_equal(np.load(Path("out/.stages/cluster") / stages["cluster"] / "clusters.npy"), labels)
    y_val = pl.read_parquet(ingest / "reference.parquet", columns=["__label"])["__label"].to_numpy()
    expected = knn_shapley(X[: items.height], items["__label"].to_numpy(), X[items.height:], y_val, 5, epsilon=0.1)
    report = pl.read_parquet(version / "report.parquet").filter(pl.col("status").is_in(["selected", "not_selected"]))
    got = dict(zip(report["id"], report["value"]))
    np.testing.assert_allclose([got[i] for i in items["id"]], expected, rtol=0, atol=1e-12)


def write_rows_with_flipped_labels(n: int) -> np.ndarray:
    """``rows.csv``: n rows, two features, a binary label of which 10% are flipped (the returned
    mask), groups ``web``/``books``; ``val.csv``: 80 clean held-out rows."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    flipped = np.zeros(n, bool)
    flipped[rng.choice(n, n // 10, replace=False)] = True
    df = pl.DataFrame({"id": [f"r{i}" for i in range(n)], "x1": rng.normal(size=n) + 3 * y, "x2": rng.normal(size=n),
                       "src": rng.choice(["web", "books"], n), "label": np.where(flipped, 1 - y, y)})
    df.write_csv("rows.csv")
    vy = rng.integers(0, 2, 80)
    pl.DataFrame({"id": [f"v{i}" for i in range(80)], "x1": rng.normal(size=80) + 3 * vy, "x2": rng.normal(size=80),
                  "src": "val", "label": vy}).write_csv("val.csv")
    return flipped


def build_valued_rows(name: str, seed: int, value: dict, capsys) -> Path:
    """`curate build` of :func:`write_rows_with_flipped_labels`'s rows, valued by ``value``
    against ``val.csv`` and dropping harmful rows (value-threshold, budget 100); the version."""
    Path(f"{name}.yaml").write_text(yaml.safe_dump({
        "name": name, "seed": seed,
        "sources": [{"name": "rows", "kind": "files", "path": "rows.csv", "id": "id", "features": ["x1", "x2"],
                     "label": "label"}],
        "groups": ["src"],
        "cluster": {"k": 3},
        "value": {**value, "validation": {"path": "val.csv"}},
        "select": {"method": "value-threshold", "budget": 100, "mode": "drop"},
        "output": {"root": "out"},
    }))
    assert main(["build", f"{name}.yaml"]) == 0
    return Path(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_tmc_shapley_on_ray_finds_flipped_labels(tmp_path, monkeypatch, ray_session, prefect_api, capsys):
    monkeypatch.chdir(tmp_path)
    n = 120
    flipped = write_rows_with_flipped_labels(n)
    version = build_valued_rows("tmc", 2, {"method": "tmc-shapley", "max_permutations": 40}, capsys)
    full = pl.read_parquet(version / "report.parquet")
    report = full.filter(pl.col("status").is_in(["selected", "not_selected"])).sort("id")
    ids = [f"r{i}" for i in range(n)]
    values = dict(zip(report["id"], report["value"]))
    v = np.array([values[i] for i in ids])
    assert v[flipped].mean() < v[~flipped].mean()
    assert report["value_stderr"].null_count() == 0  # Monte Carlo: every value has a standard error
    selected = set(report.filter(pl.col("selected"))["id"])
    assert not selected & {i for i, f in zip(ids, flipped) if values[i] < 0 and f}  # harmful items dropped
    # the validation file's rows are reference rows; the selector's codes say why a row was dropped
    assert full.filter(pl.col("status") == "reference")["reason_code"].unique().to_list() == ["reference_file"]
    below = report.filter(pl.col("reason_code") == "below_threshold")
    assert below.height and (below["value"] < 0).all() and not below["selected"].any()
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["valuation"]["method"] == "tmc_shapley" and manifest["valuation"]["permutations"] <= 40


@pytest.mark.slow
def test_banzhaf_on_ray_stops_once_every_standard_error_is_within_stderr_tol(tmp_path, monkeypatch, ray_session,
                                                                             prefect_api, capsys):
    monkeypatch.chdir(tmp_path)
    write_rows_with_flipped_labels(120)
    tol = 0.001
    version = build_valued_rows("bz", 3, {"method": "banzhaf", "samples": 20_000, "stderr_tol": tol}, capsys)
    valuation = json.loads((version / "manifest.json").read_text())["valuation"]
    assert valuation["method"] == "banzhaf_msr" and valuation["converged"] is True
    assert valuation["stderr_tol"] == tol and valuation["stderr_max"] <= tol
    assert valuation["samples"] < 20_000  # stopped by the rule, not by the sample budget
    report = pl.read_parquet(version / "report.parquet").filter(pl.col("status").is_in(["selected", "not_selected"]))
    assert report.height == 120 and report["value_stderr"].null_count() == 0
    assert report["value_stderr"].max() <= tol  # what the report shows is what the rule checked
