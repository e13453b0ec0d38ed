"""The files connector over fsspec: a real S3 endpoint (moto's server, a separate process on
loopback) for globs, prefixes, storage options, fingerprints and missing buckets; local files
for the file-level errors (not Parquet, ragged CSV, unknown extension, corrupt)."""

from __future__ import annotations

import io
import json

import polars as pl
import pyarrow as pa
import pytest
from services_s3 import AWS_ENV, free_port, new_bucket

from connectors import FilesConnector
from curation.exceptions import DataError, InvalidParameterError
from curation.ingest import ROW_COL, UNIT_COL
from curation.recipe import SourceConfig


@pytest.fixture
def s3(s3_server, monkeypatch):
    """Credentials in the environment (read by s3fs itself), a fresh bucket, and a writer that is
    not the connector's own filesystem object (so the connector must not trust stale listings)."""
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    fs, bucket = new_bucket(s3_server)
    return type("S3", (), {"endpoint": s3_server, "bucket": bucket, "fs": fs})


def source(path, endpoint=None, **kw) -> SourceConfig:
    opts = {"storage_options": {"endpoint_url": endpoint}} if endpoint else {}
    return SourceConfig(**{"name": "lake", "kind": "files", "path": path, "id": "doc_id", "text": "text", **opts, **kw})


def parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def read_all(conn) -> pa.Table:
    return pa.concat_tables(list(conn.iter_batches()))


@pytest.fixture
def reviews(s3, evals):
    """40 Parquet objects of 5 real prompts each under reviews/, plus a _SUCCESS marker."""
    df = evals.sort("prompt_id").head(200).select(doc_id="prompt_id", text="text", lang="lang")
    for i in range(40):
        s3.fs.pipe(f"{s3.bucket}/reviews/part-{i:03d}.parquet", parquet_bytes(df.slice(5 * i, 5)))
    s3.fs.pipe(f"{s3.bucket}/reviews/_SUCCESS", b"")
    return df


def test_forty_objects_read_through_a_glob_and_through_the_prefix_give_every_row_once_in_order(s3, reviews):
    expected_units = [f"s3://{s3.bucket}/reviews/part-{i:03d}.parquet" for i in range(40)]
    for path in (f"s3://{s3.bucket}/reviews/*.parquet", f"s3://{s3.bucket}/reviews", f"s3://{s3.bucket}/reviews/"):
        conn = FilesConnector(source(path, s3.endpoint))
        assert conn.units() == expected_units, path  # sorted full URLs; the _SUCCESS marker is no unit
        t = read_all(conn)
        assert t.column("doc_id").to_pylist() == reviews["doc_id"].to_list(), path
        assert t.column(UNIT_COL).to_pylist()[:6] == [expected_units[0]] * 5 + [expected_units[1]]
        assert t.column(ROW_COL).to_pylist()[:6] == [1, 2, 3, 4, 5, 1]


def test_a_recursive_glob_and_a_list_of_urls(s3, reviews):
    s3.fs.pipe(f"{s3.bucket}/reviews/2024/late.parquet", parquet_bytes(pl.DataFrame({"doc_id": ["z"], "text": ["x"]})))
    conn = FilesConnector(source(f"s3://{s3.bucket}/reviews/**/*.parquet", s3.endpoint))
    assert f"s3://{s3.bucket}/reviews/2024/late.parquet" in conn.units() and len(conn.units()) == 41
    pair = [f"s3://{s3.bucket}/reviews/part-001.parquet", f"s3://{s3.bucket}/reviews/part-000.parquet"]
    assert FilesConnector(source(pair, s3.endpoint)).units() == pair  # a list keeps the order it is given in


def test_storage_options_from_the_recipe_expand_placeholders_and_no_secret_reaches_the_fingerprints(
        s3, reviews, monkeypatch):
    monkeypatch.setenv("TEST_S3_ENDPOINT", s3.endpoint)
    monkeypatch.setenv("TEST_S3_SECRET", "sEcReT-9931")
    src = SourceConfig(name="lake", kind="files", path=f"s3://{s3.bucket}/reviews/part-00*.parquet", text="text",
                       storage_options={"endpoint_url": "${TEST_S3_ENDPOINT}", "key": "testing",
                                        "secret": "${TEST_S3_SECRET}"})
    conn = FilesConnector(src)
    assert read_all(conn).num_rows == 50  # part-000 .. part-009
    assert "sEcReT-9931" not in json.dumps(conn.fingerprints())
    assert src.storage_options["secret"] == "${TEST_S3_SECRET}"  # the recipe keeps the placeholder


def test_an_option_the_store_does_not_take_is_a_settings_error_naming_storage_options(s3, reviews):
    src = source(f"s3://{s3.bucket}/reviews/*.parquet", storage_options={"endpoint_url": s3.endpoint, "no_such_option": 1})
    with pytest.raises(InvalidParameterError, match=r"^sources\[lake\]\.storage_options: the store for s3://.* does "
                                                    r"not take an option: .*'no_such_option'"):
        FilesConnector(src).units()


def test_fingerprints_are_stable_and_change_when_an_object_is_overwritten_or_added(s3, reviews):
    prefix = f"s3://{s3.bucket}/reviews"  # listing a prefix fills fsspec's listings cache: it must not go stale
    fp1 = FilesConnector(source(prefix, s3.endpoint)).fingerprints()
    assert fp1 == FilesConnector(source(prefix, s3.endpoint)).fingerprints()
    assert [f["path"] for f in fp1] == [f"s3://{s3.bucket}/reviews/part-{i:03d}.parquet" for i in range(40)]
    assert all(f["etag"] and f["bytes"] > 0 for f in fp1)
    changed = reviews.slice(5, 5).with_columns(doc_id=pl.col("doc_id") + "x")  # same shape, other content
    s3.fs.pipe(f"{s3.bucket}/reviews/part-001.parquet", parquet_bytes(changed))  # written by another client
    s3.fs.pipe(f"{s3.bucket}/reviews/part-040.parquet", parquet_bytes(changed))
    fp2 = FilesConnector(source(prefix, s3.endpoint)).fingerprints()
    assert len(fp2) == 41 and fp2[0] == fp1[0] and fp2[2:40] == fp1[2:40]
    assert fp2[1]["etag"] != fp1[1]["etag"]
    # and the rows read are the new ones (no stale listing or cached block)
    t = read_all(FilesConnector(source(prefix, s3.endpoint)))
    assert t["doc_id"].to_pylist()[5:10] == changed["doc_id"].to_list() and t.num_rows == 205


def test_a_missing_bucket_is_one_settings_line_naming_the_path_and_the_fix(s3):
    url = "s3://no-such-bucket-7f3/reviews/*.parquet"
    for conn in (FilesConnector(source(url, s3.endpoint)),
                 FilesConnector(source("s3://no-such-bucket-7f3/reviews", s3.endpoint))):
        with pytest.raises(InvalidParameterError) as e:
            conn.check()
        msg = str(e.value)
        assert "\n" not in msg
        assert msg.startswith("sources[lake].path='s3://no-such-bucket-7f3/reviews")
        assert "the bucket s3://no-such-bucket-7f3 does not exist" in msg and "endpoint_url" in msg


def test_a_glob_matching_nothing_and_a_missing_prefix_name_the_url(s3, reviews):
    with pytest.raises(FileNotFoundError, match=rf"sources\[lake\]\.path='s3://{s3.bucket}/reviews/\*\.csv': "
                                                r"no object matches the glob"):
        FilesConnector(source(f"s3://{s3.bucket}/reviews/*.csv", s3.endpoint)).check()
    with pytest.raises(FileNotFoundError, match=r"no such file or prefix"):
        FilesConnector(source(f"s3://{s3.bucket}/nothing-here", s3.endpoint)).check()


def test_an_unreachable_endpoint_stays_a_connection_error_so_the_flow_retries_it(s3):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    src = source(f"s3://{s3.bucket}/reviews/*.parquet",
                 storage_options={"endpoint_url": dead, "config_kwargs": {"retries": {"max_attempts": 1},
                                                                          "connect_timeout": 1}})
    with pytest.raises(ConnectionError, match=r"sources\[lake\]\.path: cannot reach the store") as e:
        FilesConnector(src).units()
    assert isinstance(e.value, OSError)


def test_csv_and_jsonl_objects_are_read_like_local_files(s3):
    s3.fs.pipe(f"{s3.bucket}/mixed/a.csv", b"doc_id,text\n1,fine\n2,bad \xff here\n")
    s3.fs.pipe(f"{s3.bucket}/mixed/b.jsonl", b'{"doc_id": "3", "text": "ok"}\n{broken\n\n{"doc_id": "4", "text": "ok2"}\n')
    conn = FilesConnector(source(f"s3://{s3.bucket}/mixed", s3.endpoint))
    assert conn.units() == [f"s3://{s3.bucket}/mixed/a.csv", f"s3://{s3.bucket}/mixed/b.jsonl"]
    csv_rows, jsonl_rows = (t.to_pylist() for t in conn.iter_batches())
    assert [r["text"] for r in csv_rows] == [b"fine", b"bad \xff here"]  # bytes: ingestion decodes and skips
    assert [(r["doc_id"], r[ROW_COL]) for r in jsonl_rows] == [("3", 1), ("4", 4)]  # line numbers
    assert conn.skipped_rows == [{"reason": "malformed_json", "unit": f"s3://{s3.bucket}/mixed/b.jsonl", "row": 2}]


def test_csv_bytes_in_a_parquet_object_name_the_object(s3):
    s3.fs.pipe(f"{s3.bucket}/bad/rows.parquet", b"doc_id,text\n1,a\n")
    with pytest.raises(DataError, match=rf"^sources\[lake\]: s3://{s3.bucket}/bad/rows\.parquet is not a readable "
                                        r"Parquet file: Parquet magic bytes not found"):
        read_all(FilesConnector(source(f"s3://{s3.bucket}/bad/*.parquet", s3.endpoint)))


# ------------------------------------------------------------------------- local file errors
def local(path, **kw) -> SourceConfig:
    return SourceConfig(**{"name": "s", "kind": "files", "path": str(path), "text": "text", **kw})


def test_csv_bytes_in_a_parquet_file_is_one_data_error_naming_the_file(tmp_path):
    p = tmp_path / "rows.parquet"
    p.write_bytes(b"doc_id,text\n1,hello\n2,world\n")
    with pytest.raises(DataError) as e:
        read_all(FilesConnector(local(p)))
    msg = str(e.value)
    assert msg.startswith(f"sources[s]: {p} is not a readable Parquet file") and "\n" not in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no pyarrow traceback chained


def test_a_ragged_csv_is_a_data_error_naming_the_file_and_the_physical_line(tmp_path):
    p = tmp_path / "rows.csv"
    # a quoted field spans lines 2-3 and a blank line follows: the ragged row is on line 6
    p.write_text('doc_id,text\n1,"two\nlines"\n\n2,fine\n3,ragged,extra\n4,after\n')
    with pytest.raises(DataError, match=rf"^sources\[s\]: {p}, line 6: 3 fields where the header has 2 "
                                        r"\(a ragged CSV row: '3,ragged,extra'\)$"):
        read_all(FilesConnector(local(p)))


def test_a_ragged_row_far_into_a_large_csv_is_found_past_the_first_block(tmp_path):
    p = tmp_path / "big.csv"
    body = "".join(f"{i},text number {i}\n" for i in range(300_000))  # ~7 MB: several 4 MB blocks
    p.write_text("doc_id,text\n" + body + "x,y,z\n")
    with pytest.raises(DataError, match=r", line 300002: 3 fields where the header has 2"):
        read_all(FilesConnector(local(p)))


def test_a_short_row_says_one_field(tmp_path):
    p = tmp_path / "short.csv"
    p.write_text("doc_id,text\n1,a\n2\n")
    with pytest.raises(DataError, match=r"line 3: 1 field where the header has 2"):
        read_all(FilesConnector(local(p)))


def test_a_txt_without_format_fails_the_check_and_with_format_is_read(tmp_path):
    p = tmp_path / "rows.txt"
    p.write_text("doc_id,text\n1,hello\n")
    with pytest.raises(DataError, match=r"cannot tell the format of '.*rows\.txt' from its extension; set format"):
        FilesConnector(local(p)).check()
    assert read_all(FilesConnector(local(p, format="csv"))).column("text").to_pylist() == [b"hello"]


def test_a_corrupt_parquet_file_is_a_data_error_not_a_retried_os_error(tmp_path):
    p = tmp_path / "rows.parquet"
    pl.DataFrame({"doc_id": [str(i) for i in range(50_000)], "text": [f"row {i}" for i in range(50_000)]}).write_parquet(
        p, row_group_size=10_000)
    data = bytearray(p.read_bytes())
    for i in range(200, len(data) // 2, 5):  # scramble the first row groups' pages; the footer stays intact
        data[i] = (data[i] * 31 + 7) % 256
    p.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"^sources\[s\]: {p} is a corrupt Parquet file: "):
        read_all(FilesConnector(local(p)))


def test_a_directory_with_format_reads_every_visible_file_but_not_markers(tmp_path):
    (tmp_path / "a.txt").write_text("text\none\n")
    (tmp_path / "b.txt").write_text("text\ntwo\n")
    (tmp_path / "_SUCCESS").write_text("")
    conn = FilesConnector(local(tmp_path, format="csv"))
    assert [u.rsplit("/", 1)[1] for u in conn.units()] == ["a.txt", "b.txt"]
    assert read_all(conn).column("text").to_pylist() == [b"one", b"two"]
