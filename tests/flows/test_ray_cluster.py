"""A real two-node Ray cluster on this machine (head and worker started as separate `ray start`
processes, stopped afterwards): `curate build` joins it through RAY_ADDRESS, ships the project's
code in a runtime_env, records the nodes that embedded, and survives losing the worker node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from loopback import free_port

import curation

BIN = Path(sys.executable).parent
CURATE = str(BIN / "curate")
# a test cluster on loopback: no token authentication (Ray's default for `ray start` clusters)
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled"}


def start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # --block keeps `ray start` in the foreground: killing its process group stops exactly this
    # node (`ray stop` would stop every Ray on the machine, the test session's included)
    return subprocess.Popen([str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def cluster_nodes(address: str, env: dict[str, str]) -> list[str]:
    """Alive node ids, asked from a separate driver (this process already runs the session's Ray)."""
    code = (f"import ray, json; ray.init(address={address!r}, logging_level='ERROR'); "
            "print(json.dumps(sorted(n['NodeID'] for n in ray.nodes() if n['Alive'])))")
    out = subprocess.run([sys.executable, "-c", code], env={**env, **CLUSTER_ENV, "RAY_ADDRESS": ""},
                         capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """Head (1 CPU) and worker (1 CPU) as separate processes, once for this module (the test that
    kills the worker runs last); yields (address, worker process)."""
    tmp_path = tmp_path_factory.mktemp("cluster")
    port = free_port()
    # node failures noticed within ~2 s instead of the default ~30 s
    env = {**os.environ, **CLUSTER_ENV, "RAY_health_check_period_ms": "500",
           "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "0"}
    env.pop("RAY_ADDRESS", None)
    # `ray start --head` records itself as this machine's current cluster, which a later
    # ray.init() without an address would try to join: restored afterwards
    current = Path("/tmp/ray/ray_current_cluster")
    saved = current.read_text() if current.is_file() else None
    log = tmp_path / "head.log"
    head = start_node(["--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard", "false",
                       "--ray-client-server-port", str(free_port())], env, log)
    worker = None
    try:
        deadline = time.monotonic() + 120
        while "ray start --address='" not in log.read_text():  # the address the head listens on
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        address = log.read_text().split("ray start --address='")[1].split("'")[0]
        worker = start_node(["--address", address, "--num-cpus", "1"], env, tmp_path / "worker.log")
        while len(cluster_nodes(address, env)) < 2:
            assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-2000:]
            time.sleep(1)
        yield address, worker
    finally:
        for proc in (worker, head):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in (worker, head):
            if proc is not None:
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:  # a test cluster has nothing to save: no long grace
                    pass
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # whatever of its group is still alive
                except ProcessLookupError:
                    pass
                proc.wait()
        if saved is None:
            current.unlink(missing_ok=True)
        else:
            current.write_text(saved)


def recipe(evals_sample, root: str, **embed) -> dict:
    return {"name": "spread", "seed": 2,
            "sources": [{"name": "evals", "path": str(evals_sample), "id": "prompt_id", "text": "text",
                         "label": "task"}],
            "groups": ["lang"], "embed": {"chunk_size": 16, **embed}, "cluster": {"k": 7},
            "select": {"method": "kmq", "budget": 70}, "output": {"root": root}}


def shards(version: Path) -> dict[str, bytes]:
    out = {p.name: p.read_bytes() for p in sorted((version / "data").iterdir())}
    out["report.parquet"] = (version / "report.parquet").read_bytes()
    return out


def build_on(address: str, tmp_path: Path, r: dict, prefect_api: str, curate: list[str] | None = None,
             **popen) -> subprocess.Popen:
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    env = {**os.environ, **CLUSTER_ENV, "RAY_ADDRESS": address, "PREFECT_API_URL": prefect_api}
    return subprocess.Popen([*(curate or [CURATE]), "build", "r.yaml"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.slow
def test_a_build_on_two_nodes_uses_both_and_equals_a_single_node_build(tmp_path, two_nodes, evals_sample,
                                                                        prefect_api):
    address, _ = two_nodes
    proc = build_on(address, tmp_path, recipe(evals_sample, "two", model="hashing"), prefect_api)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    version = tmp_path / out.strip().splitlines()[-1]
    manifest = json.loads((version / "manifest.json").read_text())
    nodes = manifest["placement"]["nodes"]
    assert len(nodes) == 2 and sorted(nodes) == cluster_nodes(address, {**os.environ})  # both nodes embedded
    assert manifest["placement"]["ray_actors"] == 2
    single = curation.build(recipe(evals_sample, str(tmp_path / "one"), model="hashing"))
    assert shards(version) == shards(single.path)


@pytest.mark.slow
def test_losing_the_worker_node_while_embedding_still_publishes_the_same_shards(tmp_path, two_nodes,
                                                                               evals_sample, prefect_api,
                                                                               curate_part_per_chunk):
    address, worker = two_nodes
    r = recipe(evals_sample, "lost", model="all-MiniLM-L6-v2", max_seq_length=64)
    proc = build_on(address, tmp_path, r, prefect_api, curate_part_per_chunk)
    cache = tmp_path / "lost/.cache"
    deadline = time.monotonic() + 300
    while len(list(cache.rglob("part-*"))) < 2:  # two finished chunks (parts are renamed into place)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no embedded chunk after 300 s"
        time.sleep(0.1)
    os.killpg(worker.pid, signal.SIGKILL)  # the worker node's raylet and its actor, mid-embedding
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    version = tmp_path / out.strip().splitlines()[-1]
    manifest = json.loads((version / "manifest.json").read_text())
    assert worker.poll() is not None  # the worker node really is gone
    assert "an embedding actor died" in err  # and its chunk was embedded by the head's actor
    assert manifest["embedding"]["embedded"] == pl.read_parquet(evals_sample)["text"].n_unique()  # every text, once
    # torch's sums depend on its thread count on some CPUs (MiniLM's vectors differ in the last
    # bits between 1 and 2 threads on this VM's): the single-node build embeds with the actors' one
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(manifest["placement"]["threads_per_actor"])
    try:
        single = curation.build({**r, "output": {"root": str(tmp_path / "one")}})
    finally:
        torch.set_num_threads(threads)
    assert shards(version) == shards(single.path)
