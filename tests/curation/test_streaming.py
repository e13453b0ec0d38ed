"""The streaming path's block sizes never show in the product: a build that reads, looks up,
hashes and embeds a few rows at a time publishes byte for byte what a build in one block does,
with a cold cache and with every vector already cached."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

import connectors.files
import curation
import curation.pipeline
from curation.embed import make_text_embedder
from curation.embed.cache import EmbeddingCache
from curation.pipeline import embed_texts, serial_map


def shard_bytes(version) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted((version.path / "data").iterdir())}
    files["report.parquet"] = (version.path / "report.parquet").read_bytes()
    return files


@pytest.fixture(scope="module")
def pool_with_repeats(evals_sample, tmp_path_factory):
    """The flow tests' real prompts plus 40 repeats of their texts under new ids (repeats are
    embedded once and copied, the path most sensitive to block boundaries)."""
    df = pl.read_parquet(evals_sample)
    repeats = df.head(40).with_columns(pl.concat_str(pl.lit("again-"), pl.col("prompt_id")).alias("prompt_id"))
    path = tmp_path_factory.mktemp("streaming") / "pool.parquet"
    pl.concat([df, repeats]).write_parquet(path)
    return path


def recipe(root, pool):
    return {"name": "stream", "seed": 5,
            "sources": [{"name": "evals", "kind": "files", "path": str(pool), "id": "prompt_id", "text": "text",
                         "label": "task"}],
            "groups": ["lang"], "embed": {"model": "hashing", "chunk_size": 16}, "cluster": {"k": 6},
            "reference": {"fraction": 0.1},
            "select": {"method": "kmq", "budget": 70, "quality": {"name": "knn-agreement", "k": 5}},
            "output": {"root": str(root)}}


def test_tiny_blocks_publish_the_same_bytes_as_one_block_cold_and_cached(tmp_path, pool_with_repeats, monkeypatch):
    whole = curation.build(recipe(tmp_path / "whole", pool_with_repeats))
    assert whole.manifest["embedding"]["embedded"] < whole.manifest["embedding"]["texts"]  # repeats were copied

    monkeypatch.setattr(curation.pipeline, "BLOCK_ROWS", 7)  # keys, cache lookups, content hashes
    monkeypatch.setattr(connectors.files, "BATCH_ROWS", 13)  # Parquet read batches at ingest
    cold = curation.build(recipe(tmp_path / "cold", pool_with_repeats))
    assert shard_bytes(cold) == shard_bytes(whole)

    # every vector from the first build's cache (copied: the recipe, and so the bytes, stay the
    # same), looked up 7 keys at a time
    shutil.copytree(tmp_path / "whole/.cache", tmp_path / "warm/.cache")
    warm = curation.build(recipe(tmp_path / "warm", pool_with_repeats))
    assert warm.manifest["embedding"]["cached"] == warm.manifest["embedding"]["texts"]
    assert shard_bytes(warm) == shard_bytes(whole)


def test_embed_texts_into_a_memory_map_equals_in_memory_and_fills_the_cache(tmp_path):
    texts = [f"text number {i % 37} " + "x" * (i % 11) for i in range(300)]  # 37 x 11 distinct lengths, repeats
    embedder = make_text_embedder("hashing")
    plain, counts = embed_texts(texts, embedder, cache=None, map_chunks=serial_map(embedder), chunk_size=8)
    assert counts == {"texts": 300, "cached": 0, "embedded": len(set(texts))}

    cache = EmbeddingCache(tmp_path / "cache", embedder.id)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(300, plain.shape[1]))
    mapped, _ = embed_texts(pl.Series(texts), embedder, cache=cache, map_chunks=serial_map(embedder), chunk_size=8,
                            out=lambda n, d: mm, lookup_batch=9)
    assert mapped is mm and np.array_equal(np.asarray(mapped), plain)

    # the background writer put every distinct text; a rerun embeds nothing and returns the same bytes
    again, counts = embed_texts(texts, embedder, cache=EmbeddingCache(tmp_path / "cache", embedder.id),
                                map_chunks=serial_map(embedder), lookup_batch=5)
    assert counts["cached"] == 300 and counts["embedded"] == 0 and np.array_equal(again, plain)


def test_repeated_texts_are_embedded_once_and_copied_cold_and_half_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(curation.pipeline, "BLOCK_ROWS", 3)  # repeats copied and checked in blocks
    texts = [f"t{i % 40}" for i in range(200)]  # 40 distinct texts, each 5 times
    hashing = make_text_embedder("hashing")
    direct = hashing.embed(texts)
    X, counts = embed_texts(texts, hashing, cache=None, map_chunks=serial_map(hashing), chunk_size=8)
    assert counts == {"texts": 200, "cached": 0, "embedded": 40} and np.array_equal(X, direct)
    cache = EmbeddingCache(tmp_path / "cache", hashing.id)
    embed_texts([f"t{i}" for i in range(0, 40, 2)], hashing, cache=cache, map_chunks=serial_map(hashing))
    X, counts = embed_texts(texts, hashing, cache=EmbeddingCache(tmp_path / "cache", hashing.id),
                            map_chunks=serial_map(hashing), chunk_size=8, lookup_batch=7)
    assert counts == {"texts": 200, "cached": 100, "embedded": 20} and np.array_equal(X, direct)


def parquet_texts(tmp_path, texts, split, row_group):
    """``texts`` written as two Parquet files (the first ``split`` rows, then the rest) in row
    groups of ``row_group`` rows, read back as one ParquetTexts column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = [tmp_path / "items.parquet", tmp_path / "reference.parquet"]
    for path, part in zip(paths, (texts[:split], texts[split:])):
        pq.write_table(pa.table({"__text": part}), path, row_group_size=row_group)
    return curation.pipeline.ParquetTexts(paths, "__text", keep=2)


def test_parquet_texts_gather_any_rows_in_the_order_asked_across_row_groups_files_and_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"t{i} " + "é" * (i % 5) for i in range(103)]
    col = parquet_texts(tmp_path, texts, split=61, row_group=10)
    whole = pl.Series(texts)
    assert len(col) == 103 and col.slice(95, 50).to_list() == texts[95:]
    rng = np.random.default_rng(0)
    asks = [np.sort(rng.choice(103, 17, replace=False)) for _ in range(40)] + [
        rng.choice(103, 23, replace=False) for _ in range(40)] + [np.array([5, 5, 99, 0, 60, 61])]
    with ThreadPoolExecutor(4) as pool:  # chunks are gathered on worker threads
        got = list(pool.map(col.gather, asks))
    assert all(g.to_list() == whole.gather(a).to_list() for g, a in zip(got, asks))
    assert len(col._decoded) <= 2  # only the last few row groups stay decoded


def test_parquet_texts_as_the_pools_texts_index_iterate_and_take_like_the_column(tmp_path):
    from curation.score.builtin import LengthScorer
    from curation.types import Pool

    texts = [f"t{i} " + "é" * (i % 5) for i in range(103)]
    col = parquet_texts(tmp_path, texts, split=61, row_group=10)
    assert list(col) == texts and len(col._decoded) <= 2  # iterated a row group at a time
    assert col[7] == texts[7] and col[-1] == texts[-1] and col[95:].to_list() == texts[95:]
    assert col[np.array([60, 61, 3])].to_list() == [texts[60], texts[61], texts[3]]

    def pool(t):
        return Pool(ids=np.arange(103).astype(str), embeddings=np.zeros((103, 2), np.float32),
                    groups=np.zeros(103, int), group_names=("*",), texts=t)

    rows = np.array([100, 2, 61])
    assert pool(col).take(rows).texts.to_list() == pool(pl.Series(texts)).take(rows).texts.to_list()
    assert np.array_equal(LengthScorer().score(pool(col)), LengthScorer().score(pool(texts)))


def test_embed_texts_from_parquet_equals_from_memory_cold_cached_and_on_threads(tmp_path):
    texts = [f"text number {i % 37} " + "x" * (i % 11) for i in range(300)]
    col = parquet_texts(tmp_path, texts, split=250, row_group=32)
    hashing = make_text_embedder("hashing")

    class Parallel(type(hashing)):
        parallel_chunks = 2

    for embedder in (hashing, Parallel()):
        plain, counts = embed_texts(texts, embedder, cache=None, map_chunks=serial_map(embedder), chunk_size=8)
        streamed, streamed_counts = embed_texts(col, embedder, cache=None, map_chunks=serial_map(embedder),
                                                chunk_size=8)
        assert np.array_equal(streamed, plain) and streamed_counts == counts
    cache = EmbeddingCache(tmp_path / "cache", hashing.id)
    embed_texts(texts[:150], hashing, cache=cache, map_chunks=serial_map(hashing), chunk_size=8)  # half cached
    streamed, counts = embed_texts(col, hashing, cache=cache, map_chunks=serial_map(hashing), chunk_size=8,
                                   lookup_batch=7)
    assert counts["cached"] > 0 and np.array_equal(streamed, plain)

    class Dependent(type(hashing)):
        batch_invariant = False

    with pytest.raises(ValueError, match="batch-invariant"):  # its chunks would jump around the file
        embed_texts(col, Dependent(), cache=None, map_chunks=serial_map(hashing), chunk_size=8)


def test_a_batch_invariant_embedder_embeds_in_pool_order_and_a_batch_dependent_one_longest_first():
    texts = [f"t{i} " + "x" * ((i * 7) % 13) for i in range(60)] + ["t3 " + "x" * 8]  # a repeat: embedded once
    seen: list[list[str]] = []

    class Invariant(type(make_text_embedder("hashing"))):
        def embed(self, batch):
            seen.append(list(batch))
            return super().embed(batch)

    class Dependent(Invariant):
        batch_invariant = False

    invariant, dependent = Invariant(), Dependent()
    pooled, _ = embed_texts(texts, invariant, cache=None, map_chunks=serial_map(invariant), chunk_size=8)
    assert [t for chunk in seen for t in chunk] == texts[:60]  # first occurrences, in the pool's order
    seen.clear()
    by_length, _ = embed_texts(texts, dependent, cache=None, map_chunks=serial_map(dependent), chunk_size=8)
    lengths = [len(t) for chunk in seen for t in chunk]
    assert lengths == sorted(lengths, reverse=True) and len(lengths) == 60
    assert np.array_equal(pooled, by_length)  # the order only changes where a vector is computed


def test_parallel_chunks_yield_each_chunks_own_vectors_in_order_first_chunk_alone():
    """An embedder with ``parallel_chunks`` > 1 embeds on several threads, the first chunk before
    any other starts (the model loads once), and the map still yields chunk i's vectors i-th."""
    import threading
    import time

    hashing = make_text_embedder("hashing")
    log: list[tuple[str, str, float, float]] = []  # (first text, thread, start, end)

    class Parallel(type(hashing)):
        parallel_chunks = 3

        def embed(self, batch):
            t0 = time.perf_counter()
            time.sleep(0.02 * (len(batch[0]) % 3))  # uneven: later chunks may finish first
            out = super().embed(batch)
            log.append((batch[0], threading.current_thread().name, t0, time.perf_counter()))
            return out

    chunks = [[f"chunk {i} text {j}" + "x" * (i % 5) for j in range(4)] for i in range(12)]
    got = list(serial_map(Parallel())(chunks))
    assert [g.tolist() for g in got] == [hashing.embed(c).tolist() for c in chunks]
    first = next(e for e in log if e[0] == chunks[0][0])
    assert all(e[2] >= first[3] for e in log if e is not first)  # nothing started before chunk 0 ended
    assert len({e[1] for e in log if e is not first}) > 1  # the rest ran on more than one thread
    assert not [t for t in threading.enumerate() if t.name.startswith("embed")]  # none left running


def test_a_consumer_that_stops_early_leaves_no_embedding_running():
    calls = []

    class Parallel(type(make_text_embedder("hashing"))):
        parallel_chunks = 2

        def embed(self, batch):
            calls.append(batch[0])
            return super().embed(batch)

    chunks = [[f"t{i}"] for i in range(200)]
    it = serial_map(Parallel())(chunks)
    assert [next(it).shape[0] for _ in range(3)] == [1, 1, 1]
    it.close()  # what embed_texts' loop does when writing a chunk fails
    import threading

    assert not [t for t in threading.enumerate() if t.name.startswith("embed")]
    assert len(calls) <= 3 + 2 * 2 + 2  # consumed, queued ahead, running: never the whole list


def _rebuilt(keys, first, repeats, of):
    """keys[rep], rep mapping each repeat to the first row of its key; and whether first and
    repeats partition the rows."""
    rep = np.arange(len(keys))
    rep[repeats] = of
    return keys[rep], sorted([*first.tolist(), *repeats.tolist()]) == list(range(len(keys)))


def test_distinct_keys_by_hash_match_numpy_unique_and_fall_back_when_hashes_collide(monkeypatch):
    keys = np.array([b"b", b"a", b"b", b"c", b"a", b"a"], dtype="S64")
    first, repeats, of = curation.pipeline.distinct_keys(keys)
    rebuilt, partition = _rebuilt(keys, first, repeats, of)
    assert np.array_equal(rebuilt, keys) and partition
    _, np_first = np.unique(curation.pipeline.key_hashes(keys), return_index=True)
    assert first.tolist() == np_first.tolist()  # the first occurrence of each key, in hash order
    assert sorted(zip(repeats.tolist(), of.tolist())) == [(2, 0), (4, 1), (5, 1)]
    # no repeats: nothing but the first rows (and empty input)
    first, repeats, of = curation.pipeline.distinct_keys(np.array([b"x", b"y"], dtype="S64"))
    assert sorted(first.tolist()) == [0, 1] and len(repeats) == len(of) == 0
    assert [len(a) for a in curation.pipeline.distinct_keys(np.array([], dtype="S64"))] == [0, 0, 0]
    monkeypatch.setattr(curation.pipeline, "key_hashes", lambda k: np.zeros(len(k), dtype=np.int64))
    first, repeats, of = curation.pipeline.distinct_keys(keys)  # every hash collides: sorted by the keys
    assert first.tolist() == [1, 0, 3] and np.array_equal(_rebuilt(keys, first, repeats, of)[0], keys)
    # the check runs a block at a time: a collision only in the last block is still found
    monkeypatch.setattr(curation.pipeline, "BLOCK_ROWS", 2)
    monkeypatch.setattr(curation.pipeline, "key_hashes",
                        lambda k: np.array([1, 2, 1, 3, 2, 3], dtype=np.int64))  # "a" (row 5) shares c's hash
    first, repeats, of = curation.pipeline.distinct_keys(keys)
    assert first.tolist() == [1, 0, 3] and np.array_equal(_rebuilt(keys, first, repeats, of)[0], keys)


def test_distinct_keys_of_many_random_keys_match_numpy_unique():
    rng = np.random.default_rng(3)
    keys = np.array([f"k{v}".encode() for v in rng.integers(0, 500, 3000)], dtype="S64")
    first, repeats, of = curation.pipeline.distinct_keys(keys)
    hashes = curation.pipeline.key_hashes(keys)
    _, np_first, np_inverse = np.unique(hashes, return_index=True, return_inverse=True)
    assert np.array_equal(first, np_first)
    rep = np.arange(len(keys))
    rep[repeats] = of
    assert np.array_equal(rep, np_first[np_inverse.reshape(-1)])


def test_text_keys_are_content_keys_across_batches_and_unicode():
    from curation.embed import content_key

    texts = ["", "a", "naïve café 東京", "x" * 1000] + [f"text {i}" for i in range(7)]
    keys = curation.pipeline.text_keys(texts, batch=3)
    assert keys.dtype == np.dtype("S64")
    assert [k.decode() for k in keys] == [content_key(t) for t in texts]


def test_digests_give_the_keys_and_the_distinct_order_of_their_hex_keys(monkeypatch):
    """embed_texts holds 32-byte digests, not 64-byte hex keys: the same keys, the same hashes
    (hexed a block at a time), and the same distinct order, also when hashes collide."""
    from curation.embed.cache import key_hashes
    from curation.pipeline import digest_hashes, distinct_keys, hex_keys, text_digests, text_keys

    monkeypatch.setattr(curation.pipeline, "BLOCK_ROWS", 3)
    texts = ["b", "a", "b", "naïve café", "", "a", "x" * 300, "c", "c", "d"]
    digests, keys = text_digests(texts, batch=4), text_keys(texts)
    assert digests.dtype == np.dtype("S32") and np.array_equal(hex_keys(digests), keys)
    assert np.array_equal(digest_hashes(digests), key_hashes(keys))
    for hashes in (None, np.zeros(len(texts), dtype=np.int64)):  # by hash; then every hash colliding
        by_digest = distinct_keys(digests, digest_hashes(digests) if hashes is None else hashes)
        by_key = distinct_keys(keys, hashes)
        assert all(np.array_equal(a, b) for a, b in zip(by_digest, by_key))
        assert np.array_equal(_rebuilt(digests, *by_digest)[0], digests)


def test_pool_codes_follow_numpys_sorted_names_and_ids_are_the_items_column(monkeypatch):
    """make_pool's group codes (polars' dense rank) follow np.unique's sorted names, unicode
    included; its ids are the items' column, and a part of the pool takes its rows' ids."""
    monkeypatch.setattr(curation.pipeline, "BLOCK_ROWS", 3)
    groups = ["en|x", "de", "ça|ü", "東京", "<null>", "Zeta", "a b", "de", "東京", "en|x"]
    ids = ["r1", "r22", "r333", "ü", "", "r6", "r7", "r8", "r9", "r10x"]
    items = pl.DataFrame({"id": ids, "group": groups})
    pool = curation.pipeline.make_pool(items, np.zeros((10, 2), np.float32), None)
    names, codes = np.unique(np.array(groups), return_inverse=True)
    assert pool.group_names == tuple(names.tolist()) and np.array_equal(pool.groups, codes)
    assert pool.groups.dtype == np.int64
    assert isinstance(pool.ids, pl.Series) and pool.ids.to_list() == ids
    assert pool.part(np.array([3, 0])).ids.to_list() == ["ü", "r1"] and len(pool) == 10


def test_a_report_assembled_in_tiny_blocks_with_skipped_and_held_out_rows_publishes_the_same_bytes(
        tmp_path, evals_sample, monkeypatch):
    """The select stage writes its report a block at a time and publishing streams it with the
    2-D map: pool rows in blocks of 3, then the skipped rows, then the held-out ones, make the
    version one whole block makes."""
    row = pl.int_range(pl.len())
    df = pl.read_parquet(evals_sample).head(80).with_columns(  # two rows skipped at ingestion
        pl.when(row == 3).then(None).when(row == 8).then(pl.lit("   ")).otherwise(pl.col("text")).alias("text"))
    pool = tmp_path / "pool.parquet"
    df.write_parquet(pool)

    def build(root):
        r = recipe(root, pool)
        r["select"] = {"method": "kmq", "budget": 20}
        return curation.build(r)

    whole = build(tmp_path / "whole")
    monkeypatch.setattr(curation.pipeline, "BLOCK_ROWS", 3)
    tiny = build(tmp_path / "tiny")
    assert shard_bytes(tiny) == shard_bytes(whole)
    counts = tiny.manifest["counts"]
    assert counts["skipped"] == 2 and counts["reference"] == 8 and counts["selected"] == 20
    assert tiny.manifest["summary"] == whole.manifest["summary"]
    # the stage's report really was written in blocks: one per 3 pool rows, skipped, held out
    stage = tmp_path / "tiny/.stages/select" / tiny.manifest["stages"]["select"]["key"] / "report.parquet"
    assert pq.ParquetFile(stage).num_row_groups == -(-counts["pool"] // 3) + 2
    report = tiny.report()
    assert report.height == counts["candidates"] and report["map_x"].null_count() == 10  # no vector: no map


def test_gathered_rows_keep_their_types_and_not_their_blocks_string_buffers(tmp_path, monkeypatch):
    """pipeline._gather copies each block's picked rows out of it: a filtered string column
    points into the whole block's buffers (1,000 picks over 10M rows: ~0.5 GB held)."""
    import datetime as dt

    monkeypatch.setattr(curation.pipeline, "BLOCK_ROWS", 20_000)
    n = 60_000
    pl.DataFrame({
        "id": [f"r{i}" for i in range(n)], "text": [f"{'word ' * 20}{i}" for i in range(n)],
        "when": [dt.datetime(2020, 1, 1)] * n, "tags": [[i % 3] for i in range(n)],
    }).with_columns(pl.col("when").dt.replace_time_zone("Europe/Berlin"),
                    pl.col("id").cast(pl.Categorical).alias("cat")).write_parquet(tmp_path / "items.parquet")
    lf = pl.scan_parquet(tmp_path / "items.parquet")
    rows = np.array([3, 19_999, 20_000, 45_123, 59_999])
    got = curation.pipeline._gather(lf, rows)
    want = lf.with_row_index("__row_nr").collect()[rows.tolist()]
    assert got.schema == want.schema and got.equals(want)
    # (a categorical's dictionary is every category's: not measured)
    size = got.select("id", "text").to_arrow(compat_level=pl.CompatLevel.newest()).get_total_buffer_size()
    assert size < 5_000  # the five rows, not three blocks of 20,000 texts (~2.5 MB each)
