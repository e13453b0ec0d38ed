"""Nothing changed, nothing published; one writer per dataset (the library build, no Prefect)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import polars as pl
import pytest

import curation
from curation.exceptions import DatasetLocked
from curation.publish import dataset_lock, list_versions


@pytest.fixture
def recipe(tmp_path):
    pl.DataFrame({"id": [f"r{i}" for i in range(60)], "text": [f"item number {i} " * (1 + i % 5) for i in range(60)],
                  "g": ["a", "b", "c"] * 20}).write_parquet(tmp_path / "rows.parquet")
    return {"name": "ds", "seed": 1,
            "sources": [{"name": "rows", "kind": "files", "path": str(tmp_path / "rows.parquet"), "id": "id",
                         "text": "text"}],
            "groups": ["g"], "embed": {"model": "hashing"}, "cluster": {"k": 3},
            "select": {"method": "stratified", "budget": 12, "mode": "equal"},
            "output": {"root": str(tmp_path / "out")}}


def test_unchanged_build_publishes_nothing_until_recipe_input_or_force_changes(recipe, tmp_path):
    v1 = curation.build(recipe)
    again = curation.build(recipe)
    assert v1.published and not again.published and again.path == v1.path
    assert list_versions(tmp_path / "out/ds") == ["v0001"]
    assert curation.build(recipe, force=True).name == "v0002"  # --force: a new version (stages reused)
    assert curation.build(recipe, overrides=["select.budget=9"]).name == "v0003"  # the recipe changed
    df = pl.read_parquet(tmp_path / "rows.parquet")
    df.with_columns(pl.when(pl.col("id") == "r0").then(pl.lit("edited")).otherwise(pl.col("text")).alias("text")) \
        .write_parquet(tmp_path / "rows.parquet")
    changed = curation.build(recipe, overrides=["select.budget=9"])  # an input file changed
    assert changed.published and changed.name == "v0004"
    assert changed.manifest["stages"]["ingest"]["reused"] is False


def test_a_second_build_waits_for_the_lock_or_fails_at_once(recipe, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from curation.publish import dataset_lock
        with dataset_lock({str(tmp_path / 'out/ds')!r}):
            print("locked", flush=True)
            time.sleep(3)
        """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(DatasetLocked, match=r"is being built by another process"):
        curation.build(recipe, wait=False)
    assert not (tmp_path / "out/ds/v0001").exists()
    t0 = time.monotonic()
    v = curation.build(recipe)  # waits for the holder, then builds
    assert time.monotonic() - t0 > 1 and v.name == "v0001"
    assert holder.wait(timeout=30) == 0


def test_the_lock_is_reentrant_in_one_process_and_freed_when_its_holder_is_killed(tmp_path):
    d = tmp_path / "ds"
    with dataset_lock(d), dataset_lock(d, wait=False):  # the CLI, then the flow, in one process
        pass
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from curation.publish import dataset_lock
        with dataset_lock({str(d)!r}):
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    with dataset_lock(d, wait=False):  # no stale lock after a SIGKILL
        pass


def test_manifest_records_ids_added_removed_and_changed_since_the_parent(recipe, tmp_path):
    from curation.report import format_summary

    v1 = curation.build(recipe)
    assert "delta" not in v1.manifest  # no parent
    df = pl.read_parquet(tmp_path / "rows.parquet")
    edited = (df.filter(pl.col("id") != "r1")  # r1 removed
              .with_columns(pl.when(pl.col("id") == "r0").then(pl.lit("edited text")).otherwise(pl.col("text"))
                            .alias("text")))  # r0 changed (group a)
    new = pl.DataFrame({"id": ["n1", "n2"], "text": ["brand new one", "brand new two"], "g": ["c", "c"]})
    pl.concat([edited, new]).write_parquet(tmp_path / "rows.parquet")
    v2 = curation.build(recipe)
    d = v2.manifest["delta"]
    assert d["parent"] == "v0001" == v2.manifest["parent"]
    assert (d["added"], d["removed"], d["changed"]) == (2, 1, 1)
    assert d["examples"] == {"added": ["n1", "n2"], "removed": ["r1"], "changed": ["r0"]}
    assert d["by_source"] == {"rows": {"added": 2, "removed": 1, "changed": 1}}
    # r0 is in group a, r1 in group b, the new rows in c
    assert d["by_group"] == {"a": {"added": 0, "removed": 0, "changed": 1}, "b": {"added": 0, "removed": 1, "changed": 0},
                             "c": {"added": 2, "removed": 0, "changed": 0}}
    assert "since v0001: 2 added, 1 removed, 1 changed" in format_summary(v2.manifest)
    report = v2.report()
    assert report["content_hash"].null_count() == 0 and report["content_hash"].str.len_chars().unique().to_list() == [16]
