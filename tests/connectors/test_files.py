"""The files connector and the plugin registry."""

from __future__ import annotations

from types import SimpleNamespace

import polars as pl
import pyarrow as pa
import pytest

from connectors import Connector, FilesConnector, known_connectors, load_connector
from curation.exceptions import InvalidParameterError


def src(path, **kw):
    base = dict(name="s", path=path, format=None, id=None, text="text", features=None, label=None, limit=None)
    return SimpleNamespace(**{**base, **kw})


def rows(conn) -> list[dict]:
    return pa.concat_tables(list(conn.iter_batches())).to_pylist()


def test_reads_parquet_jsonl_csv_alike(tmp_path):
    df = pl.DataFrame({"id": ["a", "b"], "text": ["hello", "wörld"], "lang": ["en", "de"]})
    df.write_parquet(tmp_path / "x.parquet")
    df.write_ndjson(tmp_path / "x.jsonl")
    df.write_csv(tmp_path / "x.csv")
    for ext in ("parquet", "jsonl", "csv"):
        got = rows(FilesConnector(src(str(tmp_path / f"x.{ext}"))))
        texts = [r["text"].decode() if isinstance(r["text"], bytes) else r["text"] for r in got]
        assert texts == ["hello", "wörld"] and [r["lang"] for r in got] == ["en", "de"], ext


def test_glob_list_and_directory_units_are_sorted(tmp_path):
    for i in (2, 0, 1):
        pl.DataFrame({"text": [f"t{i}"]}).write_parquet(tmp_path / f"p{i}.parquet")
    assert [u.rsplit("/", 1)[1] for u in FilesConnector(src(str(tmp_path / "p*.parquet"))).units()] == ["p0.parquet", "p1.parquet", "p2.parquet"]
    assert len(FilesConnector(src([str(tmp_path / "p0.parquet"), str(tmp_path / "p1.parquet")])).units()) == 2
    assert len(FilesConnector(src(str(tmp_path))).units()) == 3


def test_sharding_covers_every_unit_exactly_once(tmp_path):
    for i in range(5):
        pl.DataFrame({"text": [f"t{i}"]}).write_parquet(tmp_path / f"p{i}.parquet")
    conn = FilesConnector(src(str(tmp_path / "*.parquet")))
    seen = [r["text"] for k in range(3) for t in conn.iter_batches(k, 3) for r in t.to_pylist()]
    assert sorted(seen) == [f"t{i}" for i in range(5)]


def test_limit_stops_early(tmp_path):
    pl.DataFrame({"text": [str(i) for i in range(100)]}).write_parquet(tmp_path / "x.parquet")
    assert len(rows(FilesConnector(src(str(tmp_path / "x.parquet"), limit=7)))) == 7


def test_row_group_slices_keep_groups_whole_and_split_only_oversized_ones():
    from connectors.files import row_group_slices

    assert row_group_slices([5, 5, 5, 20, 3], 10) == [(0, 10), (10, 5), (15, 10), (25, 10), (35, 3)]
    assert row_group_slices([125_000] * 8, 262_144) == [(s, 250_000) for s in range(0, 1_000_000, 250_000)]
    assert row_group_slices([], 10) == []


def test_a_local_parquet_file_is_read_in_whole_row_groups_in_order(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    import connectors.files

    monkeypatch.setattr(connectors.files, "BATCH_ROWS", 10)
    pq.write_table(pa.table({"text": [f"t{i}" for i in range(30)]}), tmp_path / "x.parquet", row_group_size=7)
    tables = list(FilesConnector(src(str(tmp_path / "x.parquet"))).iter_batches())
    assert [t.num_rows for t in tables] == [7, 7, 7, 9]  # groups of 7, 7, 7, 7 + 2: never one cut in two
    got = pa.concat_tables(tables).to_pylist()
    assert [r["text"] for r in got] == [f"t{i}" for i in range(30)]
    assert [r["__row"] for r in got] == list(range(1, 31))


def test_missing_file_and_empty_glob_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sources\[s\]\.path: file '.*nope\.parquet' does not exist"):
        FilesConnector(src(str(tmp_path / "nope.parquet"))).units()
    with pytest.raises(FileNotFoundError, match=r"no file matches the glob"):
        FilesConnector(src(str(tmp_path / "*.csv"))).units()


def test_jsonl_skips_and_counts_bad_lines(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"text": "ok"}\n{not json\n' + b'{"text": "bad \xff\xfe"}\n' + b'[1, 2]\n{"text": "ok2"}\n')
    conn = FilesConnector(src(str(p)))
    assert [r["text"] for r in rows(conn)] == ["ok", "ok2"]
    assert conn.skipped == {"malformed_json": 2, "invalid_utf8": 1}


def test_csv_keeps_bad_bytes_in_text_for_ingestion_to_skip(tmp_path):
    p = tmp_path / "x.csv"
    p.write_bytes(b"id,text\n1,fine\n2,bad \xff here\n")
    got = rows(FilesConnector(src(str(p))))
    assert got[1]["text"] == b"bad \xff here"  # bytes: ingestion decides (and counts) the skip


def test_fingerprints_hash_file_contents(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("text\na\n")
    fp1 = FilesConnector(src(str(p))).fingerprints()[0]
    p.write_text("text\nb\n")
    fp2 = FilesConnector(src(str(p))).fingerprints()[0]
    assert fp1["bytes"] == fp2["bytes"] and fp1["sha256"] != fp2["sha256"]


def test_registry_and_entry_point():
    assert "files" in known_connectors()
    assert load_connector("files") is FilesConnector
    with pytest.raises(InvalidParameterError, match=r"sources\[\]\.kind='ftp' is not a known connector kind\. Known: files"):
        load_connector("ftp")

    class Memory(Connector, name="memory-test"):
        def units(self):
            return ["m"]

        def _read_unit(self, unit):
            yield pa.table({"text": ["x"]})

    try:
        assert load_connector("memory-test") is Memory
    finally:
        Connector.registry.pop("memory-test")


def test_files_is_declared_as_an_entry_point():
    from importlib.metadata import entry_points

    eps = {ep.name: ep for ep in entry_points(group="curation.connectors")}
    assert eps["files"].value == "connectors.files:FilesConnector"
    assert eps["files"].load() is FilesConnector  # the declared target imports and is the class


def test_location_columns_built_on_buffers_equal_pyarrows_own():
    import numpy as np

    from connectors.base import int64_array, repeated_string

    for n in (0, 1, 5):
        assert int64_array(np.arange(3, 3 + n)).equals(pa.array(np.arange(3, 3 + n, dtype=np.int64)))
        for value in ("data/part-0.parquet", "s3://b/ünïcode.jsonl", ""):
            unit = repeated_string(value, n)
            assert pa.types.is_dictionary(unit.type) and unit.dictionary.to_pylist() == [value]
            assert unit.cast(pa.string()).equals(pa.repeat(pa.scalar(value, pa.string()), n))


def test_a_files_build_imports_neither_pandas_nor_sqlalchemy_nor_scipy(tmp_path):
    """pyarrow imports pandas on its first pa.array / pa.scalar of Python or NumPy values; the
    build never calls them, only an SQL source loads SQLAlchemy, and only a method that fits
    something loads scipy: 1-1.5 s off every build's start."""
    import subprocess
    import sys

    pl.DataFrame({"text": [f"row {i}" for i in range(50)]}).write_parquet(tmp_path / "rows.parquet")
    code = ("import sys, curation; curation.build({'name': 'p', 'sources': [{'name': 's', 'path': 'rows.parquet', "
            "'text': 'text'}], 'embed': {'model': 'hashing'}, 'cluster': {'k': 2}, "
            "'select': {'method': 'kmq', 'budget': 5}, 'output': {'root': 'out'}}); "
            "print(sorted(m for m in ('pandas', 'sqlalchemy', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
    from connectors import known_connectors, load_connector

    assert {"files", "sql", "huggingface"} <= set(known_connectors())  # listed without importing it
    assert load_connector("sql").__name__ == "SqlConnector"  # and loaded on demand
