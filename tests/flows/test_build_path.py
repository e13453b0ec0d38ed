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


# run `curate build` in a process that SIGKILLs itself once the version's report is written,
# i.e. in the middle of publishing (shards and report written, manifest and rename not yet);
# the select stage writes its report.parquet with the same function, into the stage store
DIE_WHILE_PUBLISHING = """
import os, signal, sys
import curation.publish as publish
write = publish.write_parquet
def write_then_die(df, path, *stamp):
    write(df, path, *stamp)
    if path.name == "report.parquet" and ".stages" not in path.parts:
        os.kill(os.getpid(), signal.SIGKILL)
publish.write_parquet = write_then_die
from flows.cli import main
sys.exit(main(["build", sys.argv[1]]))
"""


def cached_rows(cache: Path) -> int:
    """Vectors in the embedding cache under ``cache`` (whatever its on-disk format)."""
    from curation.embed import EmbeddingCache

    return sum(len(EmbeddingCache(ids.parent.parent, ids.read_text().strip())) for ids in cache.rglob("embedder.txt"))


@pytest.mark.slow
def test_sigkill_while_embedding_and_while_publishing_then_rerun_publishes_the_uninterrupted_bytes(
        tmp_path, evals_sample, ray_session, prefect_api, curate_part_per_chunk):
    recipe = {
        "name": "resumed", "seed": 5,
        "sources": [{"name": "evals", "kind": "files", "path": str(evals_sample), "id": "prompt_id", "text": "text",
                     "label": "task"}],
        # small chunks: the cache holds finished chunks while later ones are still being embedded
        "embed": {"model": "all-MiniLM-L6-v2", "max_seq_length": 64, "chunk_size": 16},
        "cluster": {"k": 7},
        "select": {"method": "kmq", "budget": 60},
    }
    (tmp_path / "killed.yaml").write_text(yaml.safe_dump({**recipe, "output": {"root": "killed"}}))
    env = {**os.environ, "RAY_ADDRESS": ray_session, "PREFECT_API_URL": prefect_api}
    cache, store, dataset = tmp_path / "killed/.cache", tmp_path / "killed/.stages", tmp_path / "killed/resumed"

    # 1. killed while embedding: some chunks are in the cache, the embed stage never finished
    proc = subprocess.Popen([*curate_part_per_chunk, "build", "killed.yaml"], cwd=tmp_path, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list(cache.rglob("part-*"))) < 2:  # two finished chunks (parts are renamed into place)
        assert proc.poll() is None, "the build ended before two chunks were embedded"
        assert time.monotonic() < deadline, "no embedded chunk after 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(store.glob("embed/*/record.json")), "killed too late: the embed stage had finished"
    done_before = cached_rows(cache)
    texts = pl.read_parquet(evals_sample)["text"].unique().len()
    assert 0 < done_before < texts

    # 2. the rerun embeds only the rest, then is killed while publishing: no version is visible
    proc = subprocess.run([sys.executable, "-c", DIE_WHILE_PUBLISHING, "killed.yaml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert cached_rows(cache) == texts  # every text embedded exactly once over both runs
    assert not list(dataset.glob("v*")) and len(list(dataset.glob(".tmp-*"))) == 1

    # 3. the next rerun reuses every stage, publishes v0001 and removes the half-written version
    resumed = curate_build(tmp_path / "killed.yaml", {"RAY_ADDRESS": ray_session, "PREFECT_API_URL": prefect_api},
                           tmp_path)
    assert resumed == dataset / "v0001" and verify_version(resumed) == []
    manifest = json.loads((resumed / "manifest.json").read_text())
    assert {k: v["reused"] for k, v in manifest["stages"].items()} == dict.fromkeys(["ingest", "embed", "cluster", "select"], True)
    # the embed stage's facts are those of run 2, which embedded exactly what run 1 had not
    assert manifest["embedding"]["embedded"] == texts - done_before
    assert not list((tmp_path / "killed").rglob(".tmp-*"))  # no scratch left anywhere under the root

    # the same bytes as a build that was never interrupted (the library's, in this process)
    whole = curation.build({**recipe, "output": {"root": str(tmp_path / "whole")}})
    assert shard_bytes(resumed) == shard_bytes(whole.path)


@pytest.mark.slow
def test_flow_served_as_a_deployment_builds_from_a_plain_json_recipe(tmp_path, adult_sample, ray_session,
                                                                    prefect_api, monkeypatch):
    """The flow's parameter is JSON: a deployment run (parameters through Prefect's API) validates it itself."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, LogFilter, LogFilterFlowRunId
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
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            return await client.read_flow_run(run.id), artifacts, logs

    from flows.cli import runner_scratch

    with runner_scratch():  # as `curate schedule` serves: Prefect's runner_storage not left in /tmp
        run, artifacts, logs = asyncio.run(serve_one_run())
    assert run.state.type == StateType.COMPLETED, run.state
    # as Prefect users expect: the run is named after the version it made; the summary is an artifact
    assert run.name == "deployed v0001"
    assert [a.type for a in artifacts] == ["markdown"] and str(tmp_path / "out/deployed/v0001") in artifacts[0].data
    assert "dataset deployed v0001" in artifacts[0].data
    # the library's stage and progress lines are in the run's logs (the UI's Logs tab)
    messages = {(log.name, log.message) for log in logs}
    for stage in ["ingest", "embed", "cluster", "select"]:
        assert ("curation.builder", f"{stage}: started") in {(n, m.split(" (key")[0]) for n, m in messages}
    assert any(n == "curation.progress" and m.startswith("reading adult: 4000 rows") for n, m in messages)
    assert any(n == "curation.builder" and m.startswith(f"publish: {tmp_path}/out/deployed/v0001") for n, m in messages)
    version = tmp_path / "out/deployed/v0001"
    assert verify_version(version) == []
    data = pl.read_parquet(version / "data")
    assert data.height == 100 and data.group_by("sex").len()["len"].to_list() == [50, 50]
