"""Normalising raw batches into items: ids, groups, skipped rows, duplicates."""

from __future__ import annotations

from types import SimpleNamespace

import polars as pl
import pyarrow as pa
import pytest

from curation.exceptions import DataError
from curation.ingest import check_unique_ids, combine, normalize_batch
from curation.pipeline import merge_sources, read_source


def src(**kw):
    base = dict(name="s", path="p", format=None, id=None, text="text", features=None, label=None, limit=None)
    return SimpleNamespace(**{**base, **kw})


def test_ids_groups_and_labels():
    t = pa.table({"doc": [1, 2], "text": ["a", "b"], "lang": ["en", None], "sex": ["f", "m"], "y": [0, 1]})
    items, skipped = normalize_batch(t, src(id="doc", label="y"), ["lang", "sex"])
    assert items["id"].to_list() == ["1", "2"]
    assert items["group"].to_list() == ["en|f", "<null>|m"]  # intersectional groups; nulls named
    assert items["__label"].to_list() == [0, 1] and items["source"].to_list() == ["s", "s"]
    assert skipped.height == 0


def test_content_hash_ids_drop_exact_duplicates():
    t = pa.table({"text": ["same", "same", "other"]})
    items, skipped = combine([normalize_batch(t, src(), [])], hashed_ids=True)
    assert items.height == 2 and len(items["id"][0]) == 20
    assert skipped["reason"].to_list() == ["duplicate_content"]


def test_null_and_non_utf8_text_rows_are_skipped_and_counted():
    t = pa.table({"id": ["1", "2", "3"], "text": pa.array([b"ok", None, b"\xff\xfe"], pa.binary())})
    items, skipped = normalize_batch(t, src(id="id"), [])
    assert items["id"].to_list() == ["1"] and items["__text"].to_list() == ["ok"]
    assert dict(zip(skipped["id"], skipped["reason"])) == {"2": "null_text", "3": "invalid_utf8"}


@pytest.mark.parametrize("role,kw,groups,match", [
    ("text", {"text": "body"}, [], r"sources\[s\]\.text names column 'body', which source 's' does not have\. Available columns: id, text, lang"),
    ("group", {}, ["country"], r"groups: \[country\] names column 'country'.*Available columns: id, text, lang"),
    ("id", {"id": "doc_id"}, [], r"sources\[s\]\.id names column 'doc_id'"),
])
def test_missing_columns_list_the_available_ones(role, kw, groups, match):
    t = pa.table({"id": ["1"], "text": ["a"], "lang": ["en"]})
    with pytest.raises(DataError, match=match):
        normalize_batch(t, src(**kw), groups)


def test_duplicate_ids_name_examples():
    a = pl.DataFrame({"id": ["x", "y", "x"], "source": ["s1", "s1", "s2"]})
    with pytest.raises(DataError, match=r"1 id\(s\) appear more than once, e\.g\. 'x' x2 in s1, s2"):
        check_unique_ids(a)


def test_reserved_column_names_are_kept_under_a_prefix():
    t = pa.table({"text": ["a"], "source": ["web"], "cluster": [3]})
    items, _ = normalize_batch(t, src(), [])
    assert items["src_source"].to_list() == ["web"] and items["src_cluster"].to_list() == [3]
    assert items["source"].to_list() == ["s"]


def test_empty_source_and_all_skipped_source_fail_clearly():
    with pytest.raises(DataError, match=r"source 's' is empty: 'p' holds no rows"):
        read_source(iter([]), src(), [])
    t = pa.table({"text": pa.array([None, None], pa.string())})
    with pytest.raises(DataError, match=r"source 's' has no usable rows: all 2 were skipped \(\{'null_text': 2\}\)"):
        read_source(iter([t]), src(), [])


def test_ids_must_be_unique_across_sources():
    a = read_source(iter([pa.table({"id": ["1"], "text": ["a"]})]), src(name="a", id="id"), [])
    b = read_source(iter([pa.table({"id": ["1"], "text": ["b"]})]), src(name="b", id="id"), [])
    with pytest.raises(DataError, match=r"'1' x2 in a, b"):
        merge_sources([a, b])


def test_tabular_rows_get_feature_hash_ids():
    t = pa.table({"age": [30, 30, 40], "city": ["a", "a", "b"]})
    items, skipped = combine([normalize_batch(t, src(text=None, features=["age", "city"]), [])], hashed_ids=True)
    assert items.height == 2 and skipped["reason"].to_list() == ["duplicate_content"]
