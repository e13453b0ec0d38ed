"""Normalising raw batches into items: ids, groups, skipped rows, duplicates."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from curation.exceptions import DataError
from curation.ingest import (
    ROW_COL,
    UNIT_COL,
    check_unique_ids,
    combine,
    location,
    normalize_batch,
    restore_texts,
)
from curation.pipeline import merge_sources, read_source


def src(**kw):
    base = dict(name="s", path="p", format=None, id=None, text="text", features=None, label=None, limit=None,
                cast=None)
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


def test_ids_must_be_unique_within_a_source():
    a = read_source(iter([pa.table({"id": ["1", "1"], "text": ["a", "b"]})]), src(name="a", id="id"), [])
    with pytest.raises(DataError, match=r"'1' x2 in a"):
        merge_sources([a])


def test_across_sources_the_first_source_wins_and_later_duplicates_are_reported_with_their_location():
    def located(ids, texts, unit):
        return pa.table({"id": ids, "text": texts, UNIT_COL: [unit] * len(ids), ROW_COL: list(range(1, len(ids) + 1))})

    a = read_source(iter([located(["1", "2"], ["a1", "a2"], "a.parquet")]), src(name="a", id="id"), [])
    b = read_source(iter([located(["3", "1"], ["b3", "b1"], "b.jsonl")]), src(name="b", id="id"), [])
    items, skipped = merge_sources([a, b])
    assert items["id"].to_list() == ["1", "2", "3"] and items["__text"].to_list() == ["a1", "a2", "b3"]
    assert skipped.select("id", "source", "reason", location()).rows() == [("1", "b", "duplicate_id", "b.jsonl:2")]


def test_a_text_column_that_is_not_text_is_an_error_unless_cast():
    t = pa.table({"id": ["1", "2"], "n": [10, 20]})
    with pytest.raises(DataError, match=r"sources\[s\]\.text names column 'n', which holds int64 values, not text; "
                                        r"point text at a string column, or declare sources\[s\]\.cast: \{n: string\}"):
        normalize_batch(t, src(id="id", text="n"), [])
    items, _ = normalize_batch(t, src(id="id", text="n", cast={"n": "string"}), [])
    assert items["__text"].to_list() == ["10", "20"]


def test_invalid_utf8_outside_the_text_skips_the_row_and_the_column_stays_text():
    t = pa.table({"id": ["1", "2", "3"], "text": ["a", "b", "c"],
                  "label": pa.array([b"pos", b"ne\xffg", b"neg"], pa.binary())})
    items, skipped = normalize_batch(t, src(id="id", label="label"), [])
    assert items["label"].dtype == pl.String and items["__label"].to_list() == ["pos", "neg"]
    assert skipped.select("id", "reason").rows() == [("2", "invalid_utf8")]


def test_empty_and_whitespace_only_texts_are_skipped_as_empty_text():
    t = pa.table({"id": ["1", "2", "3", "4", "5", "6"], "text": ["fine", "", "  \n\t", None, "\u00a0\u2003", " x "]})
    items, skipped = normalize_batch(t, src(id="id"), [])
    assert items["id"].to_list() == ["1", "6"]
    assert dict(skipped.select("id", "reason").rows()) == {"2": "empty_text", "3": "empty_text", "4": "null_text",
                                                           "5": "empty_text"}  # Unicode spaces too


def test_schema_drift_between_files_names_the_column_both_files_and_the_fix():
    first = pa.table({"text": ["a"], "g": [1], UNIT_COL: ["one.parquet"], ROW_COL: [1]})
    second = pa.table({"text": ["b"], "g": ["1"], UNIT_COL: ["two.parquet"], ROW_COL: [1]})
    with pytest.raises(DataError, match=r"source 's': column 'g' is int64 in one\.parquet but string in two\.parquet "
                                        r"\(schema drift between files\); .*cast: \{g: string\}"):
        read_source(iter([first, second]), src(), ["g"])
    # declared: both files cast to one type, so group 1 and "1" are one group on purpose
    items, _ = read_source(iter([first, second]), src(cast={"g": "string"}), ["g"])
    assert items["group"].to_list() == ["1", "1"]
    # widths and nulls are no drift: int32 then float64, and an all-null column
    third = pa.table({"text": ["c"], "g": pa.array([None], pa.null()), UNIT_COL: ["3.parquet"], ROW_COL: [1]})
    fourth = pa.table({"text": ["d"], "g": pa.array([2.5]), UNIT_COL: ["4.parquet"], ROW_COL: [1]})
    items, _ = read_source(iter([first.cast(pa.schema([("text", pa.string()), ("g", pa.int32()),
                                                      (UNIT_COL, pa.string()), (ROW_COL, pa.int64())])),
                                 third, fourth]), src(), [])
    assert items.height == 3


def test_a_value_that_cannot_be_cast_skips_its_row():
    t = pa.table({"id": ["1", "2", "3"], "text": ["a", "b", "c"], "age": ["31", "n/a", "40"]})
    items, skipped = normalize_batch(t, src(id="id", cast={"age": "int64"}), [])
    assert items["age"].to_list() == [31, 40] and items["age"].dtype == pl.Int64
    assert skipped.select("id", "reason").rows() == [("2", "cast_failed")]


def test_tabular_rows_get_feature_hash_ids():
    t = pa.table({"age": [30, 30, 40], "city": ["a", "a", "b"]})
    items, skipped = combine([normalize_batch(t, src(text=None, features=["age", "city"]), [])], hashed_ids=True)
    assert items.height == 2 and skipped["reason"].to_list() == ["duplicate_content"]


def test_the_items_hold_each_text_once_and_restore_texts_gives_every_source_its_own_column_back():
    a = pa.table({"id": ["1", "2"], "body": ["a1", "a2"], "text": ["not a's text", None], "lang": ["en", "de"]})
    b = pa.table({"id": ["3"], "text": ["b3"], "body": ["not b's text"], "lang": ["fr"]})
    c = pa.table({"id": ["4"], "source": ["c4"], "lang": ["en"]})  # a text column with a reserved name
    d = pa.table({"id": ["5"], "lang": ["d5"]})  # the text is the group column: read as it is
    sources = [src(name="a", id="id", text="body"), src(name="b", id="id", text="text"),
               src(name="c", id="id", text="source"), src(name="d", id="id", text="lang")]
    parts = [read_source(iter([t]), s, ["lang"]) for t, s in zip((a, b, c, d), sources)]
    items, _ = merge_sources(parts)
    assert items["__text"].to_list() == ["a1", "a2", "b3", "c4", "d5"]
    # stored once: each source's own text column is empty in the items (the group column is not)
    assert items.filter(pl.col("source") == "a")["body"].is_null().all()
    assert items.filter(pl.col("source") == "b")["text"].is_null().all()
    assert items["src_source"].to_list()[3] is None and items["lang"].to_list()[4] == "d5"
    for frame in (items, items.lazy()):
        back = restore_texts(frame, sources, ["lang"])
        back = back.collect() if isinstance(back, pl.LazyFrame) else back
        assert back.columns == items.columns  # in place: a published row keeps its column order
        assert back.select("body", "text", "src_source").rows() == [
            ("a1", "not a's text", None), ("a2", None, None), ("not b's text", "b3", None), (None, None, "c4"),
            (None, None, None)]


def test_content_hashes_are_sha256_of_each_rows_json_as_documented():
    """The published ``content_hash`` is sha256[:16] of ``json.dumps(row, default=str)`` over the
    row's source fields, exactly, whatever the column types (a parent version's hashes must still
    compare equal after a library upgrade)."""
    import datetime
    import hashlib
    import json

    from curation.pipeline import content_hashes

    items = pl.DataFrame({
        "id": ["a", "b", "c"], "text": ["plain", "ünïcode \"quoted\" ✓", None], "n": [1, None, -3],
        "x": [0.1, float("nan"), 1e300], "day": [datetime.date(2026, 12, 4), None, datetime.date(1999, 1, 1)],
        "ok": [True, False, None], "__text": ["t", "t", "t"]})  # id and staging columns are not hashed
    expected = [hashlib.sha256(json.dumps(r, default=str).encode()).hexdigest()[:16]
                for r in items.drop("id", "__text").iter_rows()]
    assert content_hashes(items).to_list() == expected
    assert content_hashes(items, batch=2).to_list() == expected  # batching changes nothing
    assert len(set(expected)) == 3


def _written_to_disk(tmp_path, sources, groups, *, fraction=None, reference=None):
    """Ingest through ItemParts: (items, held-out rows) read back from the files it wrote."""
    from curation import holdout
    from curation.pipeline import POS, ItemParts

    with ItemParts(tmp_path) as sink:
        keys, skipped = merge_sources([read_source(iter(batches), s, groups, sink=sink) for s, batches in sources])
        held = None
        if fraction is not None:
            keys, held = holdout.split_fraction(sink.with_columns(keys, holdout.STRATA), fraction,
                                                rng=np.random.default_rng(3))
        elif reference is not None:
            keys, dropped = holdout.drop_overlap(keys, reference)
            skipped = pl.concat([skipped, dropped], how="diagonal_relaxed")
        skipped = sink.complete(skipped)
        sink.finish(tmp_path / "items.parquet", keys[POS].to_numpy(),
                    None if held is None else held[POS].to_numpy(), tmp_path / "reference.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.parquet"] + (["reference.parquet"] if held is not None
                                                                              else [])  # no part left
    return (pl.read_parquet(tmp_path / "items.parquet"),
            None if held is None else pl.read_parquet(tmp_path / "reference.parquet"), skipped)


def _in_memory(sources, groups, *, fraction=None, reference=None):
    from curation import holdout

    items, skipped = merge_sources([read_source(iter(batches), s, groups) for s, batches in sources])
    held = None
    if fraction is not None:
        items, held = holdout.split_fraction(items, fraction, rng=np.random.default_rng(3))
    elif reference is not None:
        items, dropped = holdout.drop_overlap(items, reference)
        skipped = pl.concat([skipped, dropped], how="diagonal_relaxed")
    return items, held, skipped


def _tricky_sources():
    def located(unit, **cols):
        n = len(next(iter(cols.values())))
        return pa.table({**cols, UNIT_COL: [unit] * n, ROW_COL: list(range(1, n + 1))})

    hashed = src(name="h", label="y")
    h = [located("h1.parquet", text=["a", "b", "a", "  "], y=pa.array([1, 0, 1, 0], pa.int32()), lang=["en"] * 4),
         # an all-skipped batch with a column no other batch has, then a wider int and a null group
         located("h2.parquet", text=[" "], y=pa.array([1], pa.int32()), lang=["de"], extra=["x"]),
         located("h3.parquet", text=["c", "b", "d", "e"], y=pa.array([0, 1, 1, 0], pa.int64()),
                 lang=["fr", "en", None, "de"])]
    ided = src(name="i", id="id", label="y")
    i = [located("i.jsonl", id=["1", "2", "3"], text=["x1", "x2", "x3"], y=[1.0, 0.0, 1.0], lang=["en", "en", "de"],
                 note=["n1", "n2", "n3"])]
    return [(hashed, h), (ided, i)]


@pytest.mark.parametrize("split", ["none", "fraction", "reference"])
def test_items_written_batch_by_batch_equal_the_items_built_in_memory(tmp_path, split):
    """Duplicate content, an all-skipped batch with its own column, an int32 then int64 label, two
    sources with different columns, and a held-out split: the files ItemParts writes hold the
    same rows, columns and types as the concatenated frames (and the same skipped rows)."""
    kw = {"fraction": 0.3} if split == "fraction" else {}
    if split == "reference":
        kw["reference"] = read_source(iter([pa.table({"text": ["c", "zz"], "lang": ["fr", "en"]})]), src(name="ref"), ["lang"])[0]
    got_items, got_held, got_skipped = _written_to_disk(tmp_path, _tricky_sources(), ["lang"], **kw)
    items, held, skipped = _in_memory(_tricky_sources(), ["lang"], **kw)
    assert "extra" in items.columns and items["y"].dtype == pl.Float64  # the cases are really there
    assert skipped["reason"].to_list().count("duplicate_content") == 2
    assert got_items.schema == items.schema
    assert got_items.equals(items)
    # the same skipped rows with the columns a report reads (a row dropped as a copy of a
    # reference row no longer carries the item's other fields, which nothing read)
    assert {"id", "source", "group", "lang", "reason", UNIT_COL, ROW_COL} <= set(got_skipped.columns)
    assert got_skipped.equals(skipped.select(got_skipped.columns))
    assert (got_held is None and held is None) or got_held.equals(held)
    if split == "reference":
        assert "c" not in got_items["__text"].to_list()


def test_items_of_one_schema_kept_whole_are_the_part_file_itself(tmp_path):
    """The common case (one schema, every row kept) renames the part: same rows, nothing rewritten."""
    batches = [pa.table({"id": [f"{b}-{j}" for j in range(5)], "text": [f"t{b}{j}" for j in range(5)]})
               for b in range(3)]
    got, _, _ = _written_to_disk(tmp_path, [(src(id="id"), batches)], [])
    items, _, _ = _in_memory([(src(id="id"), batches)], [])
    assert got.equals(items)
    import pyarrow.parquet as pq
    assert pq.ParquetFile(tmp_path / "items.parquet").num_row_groups == 3  # a row group per batch, as written


def test_the_key_frame_holds_only_the_id_the_source_and_the_write_position(tmp_path):
    """What ingest keeps in memory per row is the id, the source (a categorical) and the
    position; the group, label and location stay in the files and are read back by position."""
    from curation.pipeline import POS, ItemParts

    sources = _tricky_sources()
    with ItemParts(tmp_path) as sink:
        keys, _ = read_source(iter(sources[1][1]), sources[1][0], ["lang"], sink=sink)
        assert dict(keys.schema) == {"id": pl.String, "source": pl.Categorical, POS: pl.Int64}
        assert keys[POS].to_list() == [0, 1, 2]
        back = sink.with_columns(keys.slice(1, 2), ["group", "__label", "missing"])
        assert back["group"].cast(pl.String).to_list() == ["en", "de"] and back["__label"].to_list() == [0.0, 1.0]
        assert "missing" not in back.columns


def test_stage_files_dictionary_encode_only_the_categorical_columns(tmp_path):
    """Low-cardinality strings are written plain (a dictionary hashes every value: 1M short-text
    items 0.16 -> 0.11 s); the location's file name, already a dictionary, stays one."""
    import pyarrow.parquet as pq

    items, _, _ = _written_to_disk(tmp_path, _tricky_sources()[1:], ["lang"])
    meta = pq.ParquetFile(tmp_path / "items.parquet").metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert not any("DICTIONARY" in e for e in encodings["lang"] + encodings["group"])
    assert any("DICTIONARY" in e for e in encodings[UNIT_COL])
    assert items["lang"].to_list() == ["en", "en", "de"]
