"""The one build path: `curation.build` in-process, `curate build` on Ray + Prefect, a killed
build resumed from its finished stages, and the flow served as a Prefect deployment.

Subprocesses join this session's Ray (RAY_ADDRESS) and Prefect test server (PREFECT_API_URL).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

import curation
from curation.publish import verify_version

CURATE = str(Path(sys.executable).with_name("curate"))
BUILT_STAGES = ["ingest", "embed", "cluster", "value", "select"]


def shard_bytes(version: Path) -> dict[str, bytes]:
    """Every published file whose bytes are the product: the data shards and the report."""
    files = {p.name: p.read_bytes() for p in sorted((version / "data").iterdir())}
    files["report.parquet"] = (version / "report.parquet").read_bytes()
    return files


def curate_build(recipe_path: Path, env: dict[str, str], cwd: Path) -> Path:
    proc = subprocess.run([CURATE, "build", str(recipe_path)], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return cwd / proc.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_library_build_and_curate_build_give_byte_identical_shards(tmp_path, evals_sample, ray_session, prefect_api):
    """Serial stages in this process (no Prefect, no Ray) and the flow on Ray actors agree byte for byte."""
    recipe = {
        "name": "same", "seed": 11,
        "sources": [{"name": "evals", "kind": "files", "path": str(evals_sample), "id": "prompt_id", "text": "text",
                     "label": "task"}],
        "groups": ["lang"],
        "embed": {"model": "all-MiniLM-L6-v2", "max_seq_length": 64},
        "cluster": {"k": 8},
        "select": {"method": "kmq", "budget": 90, "quality": {"name": "knn-agreement", "k": 5}},
    }
    lib = curation.build({**recipe, "output": {"root": str(tmp_path / "lib")}})
    assert lib.path == tmp_path / "lib/same/v0001" and verify_version(lib.path) == []
    assert {k: v["reused"] for k, v in lib.manifest["stages"].items()} == dict.fromkeys(
        ["ingest", "embed", "cluster", "select"], False)
    assert lib.data().height == 90

    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**recipe, "output": {"root": "cli"}}))
    cli = curate_build(tmp_path / "r.yaml", {"RAY_ADDRESS": ray_session, "PREFECT_API_URL": prefect_api}, tmp_path)
    cli_manifest = json.loads((cli / "manifest.json").read_text())
    assert cli_manifest["embedding"]["ray_actors"] >= 1  # the flow really embedded on Ray
    assert not any(v["reused"] for v in cli_manifest["stages"].values())  # separate roots: nothing shared
    assert shard_bytes(cli) == shard_bytes(lib.path)
    # same inputs, same recipe, same code: the same stage keys, whoever computed them
    assert {k: v["key"] for k, v in cli_manifest["stages"].items()} == {
        k: v["key"] for k, v in lib.manifest["stages"].items()}


def _tmc_recipe(root: str) -> dict:
    # 60 TMC permutations over 140 rows: several seconds of valuation after the cluster stage
    return {
        "name": "tmc", "seed": 3,
        "sources": [{"name": "rows", "kind": "files", "path": "rows.csv", "id": "id", "features": ["x1", "x2"],
                     "label": "label"}],
        "groups": ["src"], "cluster": {"k": 3},
        "value": {"method": "tmc-shapley", "max_permutations": 60, "conv_rtol": 0, "truncation_rtol": 0,
                  "validation": {"fraction": 0.3}},
        "select": {"method": "value-threshold", "budget": 80},
        "output": {"root": root},
    }


@pytest.mark.slow
def test_sigkill_after_cluster_then_rerun_reuses_finished_stages(tmp_path, ray_session, prefect_api):
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    pl.DataFrame({"id": [f"r{i}" for i in range(n)], "x1": rng.normal(size=n) + 2 * y, "x2": rng.normal(size=n),
                  "src": rng.choice(["web", "books"], n), "label": y}).write_csv(tmp_path / "rows.csv")
    (tmp_path / "killed.yaml").write_text(yaml.safe_dump(_tmc_recipe("killed")))
    (tmp_path / "whole.yaml").write_text(yaml.safe_dump(_tmc_recipe("whole")))
    env = {**os.environ, "RAY_ADDRESS": ray_session, "PREFECT_API_URL": prefect_api}

    proc = subprocess.Popen([CURATE, "build", "killed.yaml"], cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = tmp_path / "killed/.stages"
    deadline = time.monotonic() + 300
    while not list(store.glob("cluster/*/record.json")):
        assert proc.poll() is None, "the build ended before its cluster stage finished"
        assert time.monotonic() < deadline, "no cluster stage after 300 s"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed/tmc").exists() or not list((tmp_path / "killed/tmc").glob("v*"))
    assert not list(store.glob("value/*/record.json"))  # killed while valuing

    resumed = curate_build(tmp_path / "killed.yaml", {"RAY_ADDRESS": ray_session, "PREFECT_API_URL": prefect_api},
                           tmp_path)
    manifest = json.loads((resumed / "manifest.json").read_text())
    assert {k: v["reused"] for k, v in manifest["stages"].items()} == {
        "ingest": True, "embed": True, "cluster": True, "value": False, "select": False}
    assert not list(store.glob("*/.tmp-*"))  # the killed run's half-written value stage was collected

    whole = curate_build(tmp_path / "whole.yaml", {"RAY_ADDRESS": ray_session, "PREFECT_API_URL": prefect_api},
                         tmp_path)
    assert shard_bytes(resumed) == shard_bytes(whole)


@pytest.mark.slow
def test_flow_served_as_a_deployment_builds_from_a_plain_json_recipe(tmp_path, adult_sample, ray_session,
                                                                    prefect_api, monkeypatch):
    """The flow's parameter is JSON: a deployment run (parameters through Prefect's API) validates it itself."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.objects import StateType
    from prefect.runner import Runner

    from flows.curate import curate

    monkeypatch.setenv("RAY_ADDRESS", ray_session)  # the run's subprocess joins this session's Ray
    recipe = {
        "name": "deployed", "seed": 4,
        "sources": [{"name": "adult", "kind": "files", "path": str(adult_sample), "features": ["age", "hours_per_week"],
                     "label": "income"}],
        "groups": ["sex"], "cluster": {"k": 4},
        "select": {"method": "stratified", "budget": 100, "mode": "equal"},
        "output": {"root": str(tmp_path / "out")},
    }
    json.dumps(recipe)  # plain JSON, nothing pydantic

    async def serve_one_run():
        runner = Runner(name="test-curate")
        deployment_id = await runner.aadd_deployment(await curate.ato_deployment(name="nightly"))
        async with get_client() as client:
            run = await client.create_flow_run_from_deployment(deployment_id, parameters={"recipe": recipe})
            await runner.start(run_once=True)  # picks the run up, executes it in a subprocess, returns
            artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["curation-deployed"])))
            return await client.read_flow_run(run.id), artifacts

    run, artifacts = asyncio.run(serve_one_run())
    assert run.state.type == StateType.COMPLETED, run.state
    # as Prefect users expect: the run is named after the version it made; the summary is an artifact
    assert run.name == "deployed v0001"
    assert [a.type for a in artifacts] == ["markdown"] and str(tmp_path / "out/deployed/v0001") in artifacts[0].data
    assert "dataset deployed v0001" in artifacts[0].data
    version = tmp_path / "out/deployed/v0001"
    assert verify_version(version) == []
    data = pl.read_parquet(version / "data")
    assert data.height == 100 and data.group_by("sex").len()["len"].to_list() == [50, 50]
