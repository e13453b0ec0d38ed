"""A third-party connector package (examples/plugins/curation-lines), installed into a directory
on the build's path, is found through the `curation.connectors` entry-point group and used from a
recipe by `curate build`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CURATE = str(Path(sys.executable).with_name("curate"))


@pytest.mark.slow
def test_an_installed_connector_plugin_is_used_from_a_recipe(tmp_path, evals, ray_session, prefect_api):
    # install the package as a user would (a wheel built from its pyproject), into its own directory
    shutil.copytree(ROOT / "examples/plugins/curation-lines", tmp_path / "src")  # builds write next to the sources
    site = tmp_path / "site"
    subprocess.run(["python3", "-m", "uv", "pip", "install", "--quiet", "--python", sys.executable, "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(tmp_path / "src")], check=True, timeout=120)
    assert (site / "curation_lines-0.1.0.dist-info/entry_points.txt").read_text().count("lines = ") == 1

    texts = evals.filter(pl.col("task") == "chess")["text"].head(30).to_list()
    notes = [t.replace("\n", " ") for t in texts]
    (tmp_path / "notes.txt").write_bytes(("\n".join(notes[:15]) + "\n\nno\n" + "\n".join(notes[15:]) + "\n").encode()
                                         + b"\xff bad line\n")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "name": "from-lines", "seed": 1,
        "sources": [{"name": "notes", "kind": "lines", "path": "notes.txt", "text": "line",
                     "options": {"min_chars": 3}}],
        "embed": {"model": "hashing"}, "cluster": {"k": 3},
        "select": {"method": "random", "budget": 10}, "output": {"root": "out"}}))
    env = {**os.environ, "PYTHONPATH": str(site), "RAY_ADDRESS": ray_session, "PREFECT_API_URL": prefect_api}
    proc = subprocess.run([CURATE, "build", "r.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    version = tmp_path / proc.stdout.strip().splitlines()[-1]
    report = pl.read_parquet(version / "report.parquet")
    pool = report.filter(pl.col("status") != "skipped")
    assert pool.height == len(set(notes)) and pl.read_parquet(version / "data").height == 10
    # locations are line numbers in the file: the blank and too-short lines (16, 17) are not rows
    lines = sorted(int(loc.rsplit(":", 1)[1]) for loc in pool["location"])
    assert lines[:15] == list(range(1, 16)) and 16 not in lines and 17 not in lines
    bad = report.filter(pl.col("status") == "skipped")
    assert bad.select("reason_code", "location").rows() == [("skipped_invalid_utf8", "notes.txt:33")]

    # without the package on the path the kind is unknown, in one line naming the field
    env.pop("PYTHONPATH")
    proc = subprocess.run([CURATE, "build", "r.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "sources[notes].kind='lines'" in proc.stderr
