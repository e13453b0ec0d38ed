"""Versions people can list, diff, explain and trust: every read checks the version against its
manifest and refuses a damaged one in one line naming the file; `verify` recomputes checksums."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq
import pytest

import curation
from curation.catalog import diff_versions, explain_item, versions_table
from curation.exceptions import CurationError
from curation.publish import check_version, latest_version, resolve_version
from curation.report import query
from flows.cli import main


@pytest.fixture()
def dataset(tmp_path, evals_sample):
    """Two real builds (hashing vectors) of one recipe, differing only in the budget."""
    recipe = {"name": "cat", "seed": 3,
              "sources": [{"name": "evals", "path": str(evals_sample), "id": "prompt_id", "text": "text",
                           "label": "task"}],
              "groups": ["lang"], "embed": {"model": "hashing"}, "cluster": {"k": 6},
              "select": {"method": "kmq", "budget": 60}, "output": {"root": str(tmp_path / "out"), "rows_per_shard": 25}}
    v1 = curation.build(recipe)
    v2 = curation.build(recipe, overrides=["select.budget=80"])
    return tmp_path / "out/cat", v1, v2


def test_versions_diff_and_explain_answer_from_the_reports(dataset):
    d, v1, v2 = dataset
    rows = versions_table(d)
    assert [(r["version"], r["budget"], r["selected"], r["parent"]) for r in rows] == [
        ("v0001", 60, 60, None), ("v0002 *", 80, 80, "v0001")]
    diff = diff_versions(d, "v0001", "v0002")
    # computed independently from the two reports: exactly the ids that entered and left
    sel = {v: set(pl.read_parquet(d / v / "report.parquet").filter(pl.col("selected"))["id"]) for v in ("v0001", "v0002")}
    assert diff["added"] == sorted(sel["v0002"] - sel["v0001"]) and diff["removed"] == sorted(sel["v0001"] - sel["v0002"])
    assert len(diff["added"]) - len(diff["removed"]) == 20
    assert diff["recipe"] == [{"key": "select.budget", "a": 60, "b": 80}] and diff["inputs"] == []
    assert diff["same_clustering"] is True
    assert sum(g["change"] for g in diff["groups"]) == 20 and sum(c["change"] for c in diff["clusters"]) == 20

    item = diff["added"][0]
    e = explain_item(d, item)
    assert e["status"] == "selected" and e["version"] == "v0002" and e["source"] == "evals"
    assert e["location"].endswith(f"sample.parquet:{e['location'].rsplit(':', 1)[1]}")
    report = pl.read_parquet(d / "v0002/report.parquet")
    cluster = report.filter(pl.col("id") == item)["cluster"][0]
    members = report.filter(pl.col("cluster") == cluster)
    assert e["cluster"]["size"] == members.height and e["cluster"]["selected"] == int(members["selected"].sum())
    assert 0 < len(e["cluster"]["sample_selected_texts"]) <= 3 and e["text"]
    assert e["group_outcome"]["group"] == e["group"] and "quality" in e["facts"]
    assert explain_item(d, item, "v0001")["status"] == "not_selected"
    with pytest.raises(CurationError, match=r"id 'nope' is not among the candidates"):
        explain_item(d, "nope")


def test_shards_say_which_dataset_version_and_recipe_they_came_from(dataset):
    d, v1, v2 = dataset
    meta = pq.read_metadata(d / "v0002/data/part-00000.parquet").metadata
    assert meta[b"curation.dataset"] == b"cat" and meta[b"curation.version"] == b"v0002"
    assert meta[b"curation.recipe_sha256"] == v2.manifest["recipe_sha256"].encode()
    assert len(list((d / "v0002/data").iterdir())) == 4  # 80 rows, 25 per shard


def damage(version, how):
    shard = version / "data/part-00001.parquet"
    if how == "flipped byte":
        b = bytearray(shard.read_bytes())
        b[len(b) // 2] ^= 0x01
        shard.write_bytes(bytes(b))
        return "sha256 differs"
    if how == "deleted shard":
        shard.unlink()
        return "missing (the manifest lists it)"
    if how == "shard lost rows":
        pl.read_parquet(shard).head(10).write_parquet(shard)
        return "bytes, the manifest says"
    if how == "truncated manifest":
        m = version / "manifest.json"
        m.write_text(m.read_text()[:200])
        return "not valid JSON"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["flipped byte", "deleted shard", "shard lost rows", "truncated manifest"])
def test_verify_and_every_reader_refuse_a_damaged_version_in_one_line(dataset, capsys, how):
    d, *_ = dataset
    expected = damage(d / "v0001", how)
    assert main(["verify", str(d)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and "v0001" in err[0]
    cheap = check_version(d / "v0001")
    if how == "flipped byte":  # same size and rows: only the checksum sees it
        assert cheap == []
        return
    assert cheap and expected in cheap[0]
    for args in (["report", str(d), "--version", "v0001"],
                 ["report", str(d), "--version", "v0001", "--sql", "SELECT COUNT(*) FROM selected"],
                 ["diff", str(d), "v0001", "v0002"],
                 ["explain", str(d), "x", "--version", "v0001"],
                 ["report", str(d), "--version", "v0001", "--html", str(d / "r.html")]):
        assert main(args) == 2, args
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and expected in err and "Traceback" not in err, (args, err)
    assert main(["verify", str(d), "--version", "v0002"]) == 0  # the other version is intact


def test_latest_naming_a_missing_version_is_an_error_not_a_fallback(dataset, capsys):
    d, *_ = dataset
    (d / "LATEST").write_text("v0009\n")
    with pytest.raises(CurationError, match=r"LATEST names 'v0009', which is not a complete version \(versions: "
                                            r"v0001, v0002\)"):
        latest_version(d)
    with pytest.raises(CurationError, match="LATEST names 'v0009'"):
        query(d, "SELECT 1")
    assert main(["verify", str(d)]) == 1 and "LATEST names 'v0009'" in capsys.readouterr().err
    assert resolve_version(d, "v0001").name == "v0001"  # naming a version still works


@pytest.mark.parametrize("name", ["..", ".", ".stages", ".cache", "LATEST"])
def test_unsafe_dataset_names_are_refused_before_any_work(tmp_path, capsys, name):
    (tmp_path / "r.yaml").write_text(json.dumps({
        "name": name, "sources": [{"name": "s", "path": str(tmp_path / "none.parquet"), "text": "t"}],
        "select": {"method": "random", "budget": 1}, "output": {"root": str(tmp_path / "out")}}))
    assert main(["build", str(tmp_path / "r.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{name!r} is not a dataset name" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]
