"""`curate schedule` against a real Prefect server (`prefect server start` on loopback): the
server's scheduler plans the cron runs, a triggered run publishes a version, a second run with
nothing changed publishes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import pytest
import yaml

from curation.publish import list_versions

CURATE = str(Path(sys.executable).with_name("curate"))


def api(url: str, path: str, body: dict | None = None, attempts: int = 5):
    """One call of the Prefect server's REST API (retried while the busy server answers 503)."""
    req = urllib.request.Request(f"{url}{path}", data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="GET" if body is None else "POST")
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)


def wait_for(what, check, timeout=120.0, every=1.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:  # not there yet (404) or the server is busy
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def run_state(url: str, run_id: str) -> str | None:
    return api(url, f"/flow_runs/{run_id}")["state"]["type"]


@pytest.mark.slow
def test_a_scheduled_deployment_gets_cron_runs_and_triggered_runs_build(tmp_path, prefect_server, ray_session):
    pl.DataFrame({"id": [f"r{i}" for i in range(60)], "text": [f"row {i} " + "y" * (i % 5) for i in range(60)],
                  "g": ["a", "b"] * 30}).write_parquet(tmp_path / "rows.parquet")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "name": "nightly-ds", "seed": 2,
        "sources": [{"name": "rows", "kind": "files", "path": str(tmp_path / "rows.parquet"), "id": "id",
                     "text": "text"}],
        "groups": ["g"], "embed": {"model": "hashing"}, "cluster": {"k": 3},
        "select": {"method": "stratified", "budget": 20, "mode": "equal"},
        "output": {"root": str(tmp_path / "out")}}))
    tmp = tmp_path / "tmp"  # the serving process's temp dir: nothing may be left in it
    tmp.mkdir()
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "RAY_ADDRESS": ray_session,
           "PREFECT_RUNNER_POLL_FREQUENCY": "2", "TMPDIR": str(tmp)}
    serve = subprocess.Popen([CURATE, "schedule", "r.yaml", "--cron", "0 3 * * *", "--name", "nightly"], cwd=tmp_path,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        deployment = wait_for("the deployment", lambda: api(prefect_server, "/deployments/name/curate/nightly"))
        assert deployment["parameters"]["recipe"]["name"] == "nightly-ds"
        assert deployment["schedules"][0]["schedule"]["cron"] == "0 3 * * *"
        assert set(deployment["tags"]) == {"nightly-ds", "stratified"}
        # the server's scheduler (not the test) plans the next runs, each at 03:00 UTC
        scheduled = wait_for("scheduled runs", lambda: api(prefect_server, "/flow_runs/filter", {
            "deployments": {"id": {"any_": [deployment["id"]]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}))
        assert all(r["expected_start_time"][11:16] == "03:00" for r in scheduled)

        for expected_versions in (["v0001"], ["v0001"]):  # the second run: nothing changed, nothing published
            run = api(prefect_server, f"/deployments/{deployment['id']}/create_flow_run", {"state": {"type": "SCHEDULED"}})
            def finished(run_id=run["id"]):
                state = run_state(prefect_server, run_id)
                return state if state in ("COMPLETED", "FAILED", "CRASHED") else None

            state = wait_for("the triggered run to finish", finished, timeout=240, every=2)
            assert state == "COMPLETED"
            assert list_versions(tmp_path / "out/nightly-ds") == expected_versions
    finally:
        os.killpg(serve.pid, signal.SIGINT)  # Ctrl-C: the served deployment stops
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
    output = serve.stdout.read()
    assert "serving deployment curate/nightly" in output and "Traceback" not in output
    assert sorted(p.name for p in tmp.iterdir()) == []  # Prefect's runner scratch was removed too


@pytest.mark.slow
def test_curate_deploy_registers_for_a_work_pool_and_a_process_worker_runs_it(tmp_path, prefect_server, ray_session):
    pl.DataFrame({"id": [f"r{i}" for i in range(40)], "text": [f"row {i} " + "z" * (i % 4) for i in range(40)],
                  "g": ["a", "b"] * 20}).write_parquet(tmp_path / "rows.parquet")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "name": "pooled-ds", "seed": 2,
        "sources": [{"name": "rows", "kind": "files", "path": str(tmp_path / "rows.parquet"), "id": "id",
                     "text": "text"}],
        "groups": ["g"], "embed": {"model": "hashing"}, "cluster": {"k": 2},
        "select": {"method": "stratified", "budget": 10}, "output": {"root": str(tmp_path / "out")}}))
    # Prefect's worker keeps its scratch (<temp dir>/runner_storage) in a temp dir of the test's
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "RAY_ADDRESS": ray_session, "TMPDIR": str(tmp_path / "tmp")}
    prefect = str(Path(sys.executable).with_name("prefect"))
    subprocess.run([prefect, "work-pool", "create", "test-pool", "--type", "process"], env=env, check=True,
                   capture_output=True, timeout=120)
    done = subprocess.run([CURATE, "deploy", "r.yaml", "--pool", "test-pool", "--cron", "0 3 * * *", "--name", "pooled"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == ("deployed curate/pooled to work pool 'test-pool' on '0 3 * * *' (UTC); "
                                   "start a worker: prefect worker start --pool test-pool")
    deployment = api(prefect_server, "/deployments/name/curate/pooled")
    assert deployment["work_pool_name"] == "test-pool" and deployment["schedules"][0]["schedule"]["cron"] == "0 3 * * *"
    run = api(prefect_server, f"/deployments/{deployment['id']}/create_flow_run", {"state": {"type": "SCHEDULED"}})
    worker = subprocess.run([prefect, "worker", "start", "--pool", "test-pool", "--run-once"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]
    state = wait_for("the worker's run", lambda: (s := run_state(prefect_server, run["id"])) in (
        "COMPLETED", "FAILED", "CRASHED") and s, timeout=120, every=2)
    assert state == "COMPLETED"
    assert list_versions(tmp_path / "out/pooled-ds") == ["v0001"]


def test_deploy_without_a_prefect_server_says_how_to_get_one(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "name": "d", "sources": [{"name": "s", "path": str(tmp_path / "r.yaml"), "text": "t", "format": "csv"}],
        "select": {"method": "random", "budget": 1}}))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run([CURATE, "deploy", "r.yaml", "--pool", "p"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: a deployment lives on a Prefect server: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api after "
        "`prefect server start`)")


ROOT = Path(__file__).resolve().parents[2]
PREFECT_YAML = ROOT / "infra/prefect/prefect.yaml"


def test_prefect_yaml_names_the_flow_a_valid_recipe_and_its_tags():
    """Static: what `prefect deploy` will register is the curate flow with a recipe that validates."""
    from prefect import Flow
    from prefect.client.schemas.schedules import CronSchedule

    from curation.recipe import load_recipe
    from flows.curate import curate

    config = yaml.safe_load(PREFECT_YAML.read_text())
    assert config["build"] is None and config["push"] is None
    for d in config["deployments"]:
        module, func = d["entrypoint"].split(":")
        assert (ROOT / module).is_file() and module == "flows/curate.py"
        assert isinstance(curate, Flow) and func == curate.fn.__name__
        recipe = load_recipe(str(ROOT / d["parameters"]["recipe"]))
        assert d["tags"] == [recipe.name, recipe.select.method]
        assert [CronSchedule(**s).cron for s in d["schedules"]] == ["0 3 * * *"]  # Prefect's own validation


@pytest.mark.slow
def test_prefect_deploy_of_prefect_yaml_registers_the_nightly_deployment(prefect_server):
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    prefect = str(Path(sys.executable).with_name("prefect"))
    subprocess.run([prefect, "work-pool", "create", "curation", "--type", "process"], env=env, check=True,
                   capture_output=True, timeout=120)
    done = subprocess.run([prefect, "--no-prompt", "deploy", "--prefect-file", str(PREFECT_YAML), "--all"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    deployment = api(prefect_server, "/deployments/name/curate/quickstart-nightly")
    assert deployment["work_pool_name"] == "curation" and deployment["entrypoint"] == "flows/curate.py:curate"
    assert deployment["parameters"] == {"recipe": "examples/quickstart.yaml"}
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 3 * * *"]
    # the worker runs in this checkout, where the recipe path resolves
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
