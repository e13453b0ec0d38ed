"""`curate build` from two sources at once: Parquet objects behind a glob in a real S3 endpoint
(moto's server) and a `datasets` save_to_disk directory; both reach the report with their
locations, and an unchanged rerun publishes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from datasets import Dataset, DatasetDict
from services_s3 import AWS_ENV, new_bucket

CURATE = str(Path(sys.executable).with_name("curate"))
TASKS = ["chess", "french-lexicon", "rot13", "polish-lexicon", "korean_spelling", "arabic-exams-qa"]
RECIPE = """\
name: lake-and-hub
seed: 5
sources:
  - name: lake
    kind: files
    path: "s3://{bucket}/reviews/*.parquet"
    storage_options: {{endpoint_url: "{endpoint}"}}
    id: doc_id
    text: text
  - name: hub
    kind: huggingface
    path: data_hf/reviews_hf
    split: train
    id: doc_id
    text: text
groups: [lang]
embed: {{model: hashing}}
cluster: {{k: 4}}
select: {{method: stratified, budget: 40}}
output: {{root: out}}
"""


@pytest.mark.slow
def test_build_from_an_s3_glob_and_a_saved_hf_dataset_reports_both_and_reruns_unchanged(
        tmp_path, evals, s3_server, ray_session, prefect_api):
    rows = (evals.filter(pl.col("task").is_in(TASKS)).sort("prompt_id").group_by("task", maintain_order=True)
            .head(40).select(doc_id="prompt_id", text="text", lang="lang"))
    lake, hub = rows.head(120), rows.tail(120)  # 240 real prompts, distinct ids
    assert set(lake["doc_id"]).isdisjoint(hub["doc_id"])

    fs, bucket = new_bucket(s3_server)
    for i in range(6):  # six objects of 20 rows under the glob, and one the glob must not read
        with fs.open(f"{bucket}/reviews/part-{i}.parquet", "wb") as f:
            lake.slice(20 * i, 20).write_parquet(f)
    fs.pipe(f"{bucket}/reviews/notes.txt", b"not data")
    DatasetDict({"train": Dataset.from_dict(hub.head(100).to_dict(as_series=False)),
                 "test": Dataset.from_dict(hub.tail(20).to_dict(as_series=False))}
                ).save_to_disk(tmp_path / "data_hf" / "reviews_hf")
    (tmp_path / "recipe.yaml").write_text(RECIPE.format(bucket=bucket, endpoint=s3_server))
    env = {**os.environ, **AWS_ENV, "RAY_ADDRESS": ray_session, "PREFECT_API_URL": prefect_api}

    def build() -> subprocess.CompletedProcess:
        proc = subprocess.run([CURATE, "build", "recipe.yaml"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    first = build()
    version = tmp_path / first.stdout.strip().splitlines()[-1]
    assert version == tmp_path / "out" / "lake-and-hub" / "v0001"
    report = pl.read_parquet(version / "report.parquet")
    assert report.height == 220  # 120 objects' rows + the 100 train rows (not test)
    assert report.filter(pl.col("status") == "selected").height == 40
    by_source = {s: report.filter(pl.col("source") == s) for s in ("lake", "hub")}
    assert sorted(by_source["lake"]["id"]) == sorted(lake["doc_id"])
    assert sorted(by_source["hub"]["id"]) == sorted(hub.head(100)["doc_id"])
    # locations name the object (and row) and the Arrow file (and row)
    lake_loc = re.compile(rf"s3://{bucket}/reviews/part-[0-5]\.parquet:([1-9]|1[0-9]|20)")
    assert all(lake_loc.fullmatch(loc) for loc in by_source["lake"]["location"])
    first_obj = by_source["lake"].filter(pl.col("id") == lake["doc_id"][0])["location"].item()
    assert first_obj == f"s3://{bucket}/reviews/part-0.parquet:1"
    hub_loc = {loc.rsplit(":", 1)[0] for loc in by_source["hub"]["location"]}
    assert hub_loc == {"data_hf/reviews_hf/train/data-00000-of-00001.arrow"}

    inputs = {i["source"]: i for i in json.loads((version / "manifest.json").read_text())["inputs"]}
    assert [u["path"] for u in inputs["lake"]["units"]] == [f"s3://{bucket}/reviews/part-{i}.parquet"
                                                            for i in range(6)]
    assert all(u["etag"] for u in inputs["lake"]["units"])
    assert inputs["hub"]["kind"] == "huggingface" and len(inputs["hub"]["units"][0]["sha256"]) == 64

    again = build()
    assert again.stdout.splitlines()[0].startswith("unchanged since v0001")
