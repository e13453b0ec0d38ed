"""Unattended builds through the real CLI: one writer per dataset, nothing changed -> nothing published.

Builds join this session's Ray (RAY_ADDRESS) and Prefect test server (PREFECT_API_URL).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from curation.publish import dataset_lock, list_versions, verify_version

CURATE = str(Path(sys.executable).with_name("curate"))


@pytest.fixture
def project(tmp_path, ray_session, prefect_api):
    pl.DataFrame({"id": [f"r{i}" for i in range(90)], "text": [f"row {i} says " + "x" * (i % 7) for i in range(90)],
                  "g": ["a", "b", "c"] * 30}).write_parquet(tmp_path / "rows.parquet")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "name": "ds", "seed": 3,
        "sources": [{"name": "rows", "kind": "files", "path": "rows.parquet", "id": "id", "text": "text"}],
        "groups": ["g"], "embed": {"model": "hashing"}, "cluster": {"k": 4},
        "select": {"method": "stratified", "budget": 30, "mode": "equal"}, "output": {"root": "out"}}))
    env = {**os.environ, "RAY_ADDRESS": ray_session, "PREFECT_API_URL": prefect_api}
    return tmp_path, env


def start(args, cwd, env):
    return subprocess.Popen([CURATE, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
def test_two_builds_of_one_dataset_started_together_never_share_a_version(project):
    work, env = project
    waited = 0
    for trial in range(5):
        procs = [start(["build", "r.yaml", "--force"], work, env) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
        made = sorted(out.strip().splitlines()[-1] for out, _ in outs)
        assert made == [f"out/ds/v{2 * trial + 1:04d}", f"out/ds/v{2 * trial + 2:04d}"]
        waited += sum("waiting for another build" in err for _, err in outs)
        assert not any("Traceback" in err or "Timed out" in err for _, err in outs)
    versions = list_versions(work / "out/ds")
    assert versions == [f"v{i:04d}" for i in range(1, 11)]
    assert all(verify_version(work / "out/ds" / v) == [] for v in versions)
    assert waited >= 1  # the builds did overlap: the second waited for the lock


@pytest.mark.slow
def test_no_wait_fails_at_once_while_the_dataset_is_locked_and_unchanged_publishes_nothing(project):
    work, env = project
    with dataset_lock(work / "out/ds"):
        busy = subprocess.run([CURATE, "build", "r.yaml", "--no-wait"], cwd=work, env=env, capture_output=True,
                              text=True, timeout=120)
    assert busy.returncode == 2 and busy.stderr.strip().splitlines() == [
        "error: dataset 'out/ds' is being built by another process: run again when it is done, or without "
        "--no-wait to wait for it"]
    assert list_versions(work / "out/ds") == []
    first = subprocess.run([CURATE, "build", "r.yaml"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    again = subprocess.run([CURATE, "build", "r.yaml"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == again.returncode == 0
    assert again.stdout.startswith("unchanged since v0001:") and again.stdout.strip().splitlines()[-1] == "out/ds/v0001"
    assert list_versions(work / "out/ds") == ["v0001"]


class FlakyFiles:
    """A files connector whose reads fail with a transient error the first ``fail`` times."""

    reads = 0
    fail = 2


def _flaky_class():
    from connectors.files import FilesConnector

    class Flaky(FilesConnector, name="flaky-files-test"):
        def _read_unit(self, unit):
            FlakyFiles.reads += 1
            if FlakyFiles.reads <= FlakyFiles.fail:
                raise ConnectionError(f"connection reset by peer (read {FlakyFiles.reads})")
            yield from super()._read_unit(unit)

    return Flaky


@pytest.mark.slow
@pytest.mark.parametrize("how", ["in process", "as a flow run"])
def test_a_flaky_source_succeeds_with_retries_and_bad_data_is_not_retried(project, monkeypatch, capsys, how):
    import curation.builder
    import flows.curate
    from connectors.base import Connector
    from flows.cli import main

    work, env = project
    monkeypatch.chdir(work)
    monkeypatch.setenv("RAY_ADDRESS", env["RAY_ADDRESS"])
    if how == "as a flow run":
        monkeypatch.setenv("PREFECT_API_URL", env["PREFECT_API_URL"])
    else:
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # the retries as configured (the library's in process, the task's in a flow), without their
    # 1 + 3 + 10 s of waiting
    assert flows.curate.ingest_task.retries == len(curation.builder.INGEST_RETRY_DELAYS) == 3
    monkeypatch.setattr(flows.curate, "ingest_task", flows.curate.ingest_task.with_options(retry_delay_seconds=0))
    monkeypatch.setattr(curation.builder, "INGEST_RETRY_DELAYS", (0.0, 0.0, 0.0))
    _flaky_class()
    try:
        FlakyFiles.reads, FlakyFiles.fail = 0, 2
        assert main(["build", "r.yaml", "--set", "sources.0.kind=flaky-files-test"]) == 0
        assert FlakyFiles.reads == 3  # two transient failures, then the read that worked
        assert capsys.readouterr().out.strip().splitlines()[-1] == "out/ds/v0001"

        FlakyFiles.reads, FlakyFiles.fail = 0, 0
        code = main(["build", "r.yaml", "--set", "sources.0.kind=flaky-files-test", "--set", "sources.0.text=nope"])
        err = capsys.readouterr().err
        assert code == 2 and FlakyFiles.reads == 1  # bad data: one read, no retry
        assert err.strip().splitlines()[-1].startswith("error: sources[rows].text names column 'nope'")

        FlakyFiles.reads, FlakyFiles.fail = 0, 99  # and a changed file, so ingest is not reused
        rows = pl.read_parquet(work / "rows.parquet")
        pl.concat([rows, rows.head(1).with_columns(id=pl.lit("new"))]).write_parquet(work / "rows.parquet")
        code = main(["build", "r.yaml", "--set", "sources.0.kind=flaky-files-test"])
        err = capsys.readouterr().err
        assert code == 2 and FlakyFiles.reads == 4  # the first try and three retries
        assert err.strip().splitlines()[-1] == ("error: ingest: reading source 'rows' failed: ConnectionError: "
                                                "connection reset by peer (read 4)")
        assert list_versions(work / "out/ds") == ["v0001"]
    finally:
        Connector.registry.pop("flaky-files-test")
