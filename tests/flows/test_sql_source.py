"""`curate build` from a real PostgreSQL table: every row read, the password in no file or
message, an unchanged table publishes nothing, a new row publishes a new version."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

CURATE = str(Path(sys.executable).with_name("curate"))
TASKS = ["arabic-exams-qa", "chess", "french-lexicon", "polish-lexicon", "japanese_driving_license",
         "korean_spelling"]
RECIPE = """\
name: reviews-mix
seed: 3
sources:
  - name: db
    kind: sql
    url: "postgresql://curator:${{REVIEWS_DB_PASSWORD}}@127.0.0.1:{port}/reviews"
    table: reviews
    id: doc_id
    text: text
    label: label
groups: [lang]
embed: {{model: hashing}}
cluster: {{k: 4}}
select: {{method: stratified, budget: 50}}
output: {{root: out}}
"""


@pytest.mark.slow
def test_build_from_postgres_reads_every_row_keeps_the_password_out_and_sees_a_new_row(
        tmp_path, postgres, evals, ray_session, prefect_api):
    sample = (evals.filter(pl.col("task").is_in(TASKS)).sort("prompt_id")
              .group_by("task", maintain_order=True).head(50))
    assert sample.height == 300
    postgres.run("DROP TABLE IF EXISTS reviews")
    postgres.run("CREATE TABLE reviews (doc_id integer PRIMARY KEY, text text NOT NULL, label text, lang text, "
                 "updated_at timestamptz NOT NULL DEFAULT now())")
    postgres.run("INSERT INTO reviews (doc_id, text, label, lang) VALUES (%s, %s, %s, %s)",
                 many=[(i, r["text"], r["task"], r["lang"]) for i, r in enumerate(sample.iter_rows(named=True), 1)])
    (tmp_path / "recipe.yaml").write_text(RECIPE.format(port=postgres.port))
    env = {**os.environ, "REVIEWS_DB_PASSWORD": postgres.password, "RAY_ADDRESS": ray_session,
           "PREFECT_API_URL": prefect_api}
    secret = postgres.password

    def build() -> subprocess.CompletedProcess:
        proc = subprocess.run([CURATE, "build", "recipe.yaml"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert secret not in proc.stdout + proc.stderr
        return proc

    first = build()
    version = tmp_path / first.stdout.strip().splitlines()[-1]
    assert version == tmp_path / "out" / "reviews-mix" / "v0001"
    manifest = json.loads((version / "manifest.json").read_text())
    shown = f"postgresql://curator:***@127.0.0.1:{postgres.port}/reviews"
    (fingerprint,) = manifest["inputs"][0]["units"]
    assert manifest["inputs"][0]["kind"] == "sql"
    assert fingerprint["unit"] == f"{shown}/reviews" and fingerprint["rows"] == 300
    assert manifest["recipe"]["sources"][0]["url"].startswith("postgresql://curator:${REVIEWS_DB_PASSWORD}@")

    report = pl.read_parquet(version / "report.parquet")
    assert report.height == 300 and set(report["source"]) == {"db"}
    assert report.filter(pl.col("status") == "selected").height == 50
    where = [re.fullmatch(re.escape(f"{shown}/reviews:") + r"(\d+)", loc) for loc in report["location"]]
    assert all(where)
    # rows are read in doc_id order, so a row's position in the table is its doc_id
    assert sorted(int(m.group(1)) for m in where) == list(range(1, 301))
    assert all(int(m.group(1)) == int(i) for m, i in zip(where, report["id"]))

    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert written and not [p for p in written if secret.encode() in p.read_bytes()]

    again = build()
    assert again.stdout.startswith("unchanged since v0001")

    postgres.run("INSERT INTO reviews (doc_id, text, label, lang) VALUES (301, %s, 'chess', 'en')",
                 ["White to move: which piece should the knight on f3 take, and why?"])
    third = build()
    assert third.stdout.strip().splitlines()[-1] == "out/reviews-mix/v0002"
    inputs = json.loads((tmp_path / "out" / "reviews-mix" / "v0002" / "manifest.json").read_text())["inputs"]
    assert inputs[0]["units"][0]["rows"] == 301
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
