"""Rows are what they claim to be, through the files connector and the library's build: bad rows
are counted skips with their source and location, two sources union with "first wins", and
schema drift fails in one line naming the files."""

from __future__ import annotations

import json

import polars as pl
import pytest

import curation
from curation.exceptions import DataError


def recipe(tmp_path, sources, **kw):
    return {"name": "honest", "seed": 1, "sources": sources, "embed": {"model": "hashing"}, "cluster": {"k": 2},
            "select": {"method": "random", "budget": 4}, "output": {"root": str(tmp_path / "out")}, **kw}


def test_bad_rows_are_located_skips_and_a_later_source_loses_duplicate_ids(tmp_path):
    # a CSV whose label has one non-UTF-8 byte, an empty and a whitespace-only text
    (tmp_path / "a.csv").write_bytes(b"doc,text,label\n"
                                     b"a1,first text,pos\n"
                                     b"a2,second text,ne\xffg\n"
                                     b"a3,,pos\n"
                                     b"a4,   ,neg\n"
                                     b"a5,fifth text,neg\n"
                                     b"dup,shared id from a,pos\n")
    # JSONL: a malformed line and an undecodable line (no id), and an id that source a already has
    lines = [json.dumps({"doc": "b1", "text": "bee one", "label": "pos"}), "{not json",
             json.dumps({"doc": "dup", "text": "shared id from b", "label": "neg"}),
             json.dumps({"doc": "b2", "text": "bee two", "label": "neg"})]
    (tmp_path / "b.jsonl").write_bytes("\n".join(lines).encode() + b"\n\xff\xfe\n")
    v = curation.build(recipe(tmp_path, [
        {"name": "a", "path": str(tmp_path / "a.csv"), "id": "doc", "text": "text", "label": "label"},
        {"name": "b", "path": str(tmp_path / "b.jsonl"), "id": "doc", "text": "text", "label": "label"}]))
    report = v.report()
    skipped = {(r["source"], r["reason_code"], r["location"].rsplit("/", 1)[1]): r["id"]
               for r in report.filter(pl.col("status") == "skipped").to_dicts()}
    # CSV locations are record numbers (header excluded); JSONL locations are line numbers
    assert skipped == {
        ("a", "skipped_invalid_utf8", "a.csv:2"): "a2",
        ("a", "skipped_null_text", "a.csv:3"): "a3",  # an empty CSV field is a missing value
        ("a", "skipped_empty_text", "a.csv:4"): "a4",
        ("b", "skipped_malformed_json", "b.jsonl:2"): None,
        ("b", "skipped_duplicate_id", "b.jsonl:3"): "dup",
        ("b", "skipped_invalid_utf8", "b.jsonl:5"): None,
    }
    pool = report.filter(pl.col("status") != "skipped")
    assert sorted(pool["id"].to_list()) == ["a1", "a5", "b1", "b2", "dup"]
    assert pool.filter(pl.col("id") == "dup")["source"].to_list() == ["a"]  # the first source wins
    assert v.data()["label"].dtype == pl.String  # one bad byte does not turn the column into bytes
    assert v.manifest["counts"]["skipped"] == 6


def test_schema_drift_across_the_files_of_a_glob_fails_in_one_line_unless_cast(tmp_path):
    (tmp_path / "parts").mkdir()
    pl.DataFrame({"id": ["x1", "x2"], "text": ["one", "two"], "g": [1, 2]}).write_parquet(tmp_path / "parts/p0.parquet")
    pl.DataFrame({"id": ["y1", "y2"], "text": ["three", "four"], "g": ["1", "2"]}).write_parquet(
        tmp_path / "parts/p1.parquet")
    src = {"name": "parts", "path": str(tmp_path / "parts/*.parquet"), "id": "id", "text": "text"}
    with pytest.raises(DataError) as exc:
        curation.build(recipe(tmp_path, [src], groups=["g"]))
    msg = str(exc.value)
    assert "\n" not in msg and "column 'g' is int64 in" in msg and "p0.parquet" in msg and "p1.parquet" in msg
    assert not (tmp_path / "out/honest").exists() or not list((tmp_path / "out/honest").glob("v*"))
    v = curation.build(recipe(tmp_path, [{**src, "cast": {"g": "string"}}], groups=["g"]))
    assert sorted(v.report()["group"].unique().to_list()) == ["1", "2"]  # 1 and "1" are one group, as declared
