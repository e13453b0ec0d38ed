"""Secrets never reach what the build writes: the manifest, stage records, output, messages, Prefect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import polars as pl
import pytest
import yaml

CURATE = str(Path(sys.executable).with_name("curate"))
SECRET = "s3cr3t-Zq7-value"
BLOCK_SECRET = "bl0ck-Kx2-value"  # held by a Prefect Secret block


def test_a_literal_password_in_a_source_url_is_refused_without_echoing_it(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "name": "leaky", "sources": [{"name": "s", "path": f"s3://reader:{SECRET}@minio.local/b/rows.parquet",
                                      "text": "text"}],
        "select": {"method": "random", "budget": 5}}))
    proc = subprocess.run([CURATE, "build", "r.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert "s3://reader:***@" in proc.stderr and "${NAME}" in proc.stderr  # what to do instead
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]  # nothing written


@pytest.mark.slow
def test_secrets_from_the_environment_and_a_prefect_block_never_reach_a_file_a_message_or_prefect(
        tmp_path, ray_session, prefect_api):
    from prefect.blocks.system import Secret

    Secret(value=BLOCK_SECRET).save("curation-test-dir", overwrite=True)
    secret_dir = tmp_path / SECRET / BLOCK_SECRET
    secret_dir.mkdir(parents=True)
    pl.DataFrame({"id": [f"r{i}" for i in range(40)], "text": [f"row {i}" for i in range(40)],
                  "g": ["a", "b"] * 20}).write_parquet(secret_dir / "rows.parquet")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "name": "secret-ds", "seed": 1,
        # the secrets are path segments here; for a URL it is the password: s3://user:${VAR}@host/...
        "sources": [{"name": "s", "path": str(tmp_path / "${CURATION_TEST_SECRET}" / "${prefect:curation-test-dir}"
                                              / "rows.parquet"), "id": "id", "text": "text"}],
        "groups": ["g"], "embed": {"model": "hashing"}, "cluster": {"k": 2},
        "select": {"method": "stratified", "budget": 10}, "output": {"root": "out"}}))
    env = {**os.environ, "RAY_ADDRESS": ray_session, "PREFECT_API_URL": prefect_api, "CURATION_TEST_SECRET": SECRET}
    proc = subprocess.run([CURATE, "build", "r.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET not in proc.stdout + proc.stderr and BLOCK_SECRET not in proc.stdout + proc.stderr
    version = tmp_path / proc.stdout.strip().splitlines()[-1]
    manifest = json.loads((version / "manifest.json").read_text())
    placeholders = "${CURATION_TEST_SECRET}/${prefect:curation-test-dir}/rows.parquet"
    assert manifest["recipe"]["sources"][0]["path"].endswith(placeholders)
    assert manifest["inputs"][0]["units"][0]["path"].endswith(placeholders)
    assert manifest["counts"]["selected"] == 10  # the rows behind both secrets were read
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert written and not [p for p in written if SECRET.encode() in p.read_bytes() or
                            BLOCK_SECRET.encode() in p.read_bytes()]
    # Prefect's stored parameters of every flow run hold the placeholder, not the value
    req = urllib.request.Request(f"{prefect_api}/flow_runs/filter", data=json.dumps({"limit": 200}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        runs = [run for run in json.loads(r.read()) if "secret-ds" in json.dumps(run["parameters"])]
    assert runs and all(SECRET not in json.dumps(run) and BLOCK_SECRET not in json.dumps(run) for run in runs)
    # the unchanged check compares redacted inputs: a rerun publishes nothing
    again = subprocess.run([CURATE, "build", "r.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and again.stdout.startswith("unchanged since v0001")
