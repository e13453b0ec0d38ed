"""The embedding cache: part files plus a SQLite index (curation/embed/cache.py)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.embed import EmbeddingCache, HashingEmbedder, content_key
from curation.embed import cache as cache_mod
from curation.pipeline import embed_texts, serial_map

ROOT = Path(__file__).resolve().parents[2]


def keys_of(n: int, start: int = 0) -> list[str]:
    return [content_key(f"text {i}") for i in range(start, start + n)]


def vectors_of(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def part_files(cache: EmbeddingCache) -> list[Path]:
    return sorted(cache.dir.glob("part-*.npy"))


def run_py(code: str, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_round_trip_is_bit_identical_in_query_order_across_parts_with_duplicates_and_unknown_keys(tmp_path):
    cache = EmbeddingCache(tmp_path, "emb")
    keys = keys_of(50) + ["ünïcode key ✓", "short"]
    vecs = vectors_of(len(keys), dim=384)
    # values whose bits a lossy path would change: -0.0, a NaN payload, inf, subnormals
    vecs[0, :4] = [-0.0, np.inf, -np.inf, 1e-45]
    vecs[1, 0] = np.frombuffer(np.uint32(0x7FC00123).tobytes(), np.float32)[0]
    cache.put(keys[:30], vecs[:30])
    cache.put(keys[30:], vecs[30:])
    query = [keys[40], "unknown", keys[0], keys[40], keys[51], keys[1], content_key("never stored"), keys[50]]
    found, got = cache.get(query)
    assert found.tolist() == [True, False, True, True, True, True, False, True]
    expected = vecs[[40, 0, 40, 51, 1, 50]]
    assert got.dtype == np.float32 and got.shape == (6, 384) and got.flags.c_contiguous
    np.testing.assert_array_equal(bits(got), bits(expected))
    assert len(cache) == len(keys)


def test_nothing_found_returns_none_and_empty_query_works(tmp_path):
    cache = EmbeddingCache(tmp_path, "emb")
    found, got = cache.get(["a", "b"])  # no directory yet
    assert not found.any() and got is None and len(cache) == 0
    assert not cache.dir.exists()  # a lookup creates nothing
    cache.put(["a"], vectors_of(1))
    found, got = cache.get(["b", "c"])
    assert found.tolist() == [False, False] and got is None
    found, got = cache.get([])
    assert found.shape == (0,) and got is None


def test_put_skips_known_keys_and_keeps_the_first_vector(tmp_path):
    cache = EmbeddingCache(tmp_path, "emb")
    first, second = vectors_of(2, seed=1), vectors_of(3, seed=2)
    cache.put(["a", "b"], first)
    cache.put(["a", "c", "c"], second)  # "a" known, "c" repeated within the call
    found, got = cache.get(["a", "b", "c"])
    assert found.all()
    np.testing.assert_array_equal(bits(got), bits(np.stack([first[0], first[1], second[1]])))
    assert len(cache) == 3
    cache.put(["a", "b"], second[:2])  # nothing new: no part written
    assert len(part_files(cache)) == 2


def test_vectors_of_another_size_are_refused(tmp_path):
    cache = EmbeddingCache(tmp_path, "emb")
    cache.put(["a"], vectors_of(1, dim=8))
    with pytest.raises(ValueError, match="8-d"):
        cache.put(["b"], vectors_of(1, dim=16))
    with pytest.raises(ValueError, match="2 keys"):
        cache.put(["b", "c"], vectors_of(3))


def test_layout_is_npy_parts_plus_sqlite_index_plus_embedder_txt(tmp_path):
    cache = EmbeddingCache(tmp_path, "my-embedder")
    cache.put(keys_of(10), vectors_of(10))
    assert cache.dir == tmp_path / hashlib.sha256(b"my-embedder").hexdigest()[:24]
    assert (cache.dir / "embedder.txt").read_text() == "my-embedder\n"
    (part,) = part_files(cache)
    vectors = np.load(part)  # an ordinary .npy of the vectors, in the order they were put
    np.testing.assert_array_equal(bits(vectors), bits(vectors_of(10)))
    header = part.stat().st_size - 10 * (8 * 4 + 64)  # then each row's 64-byte key
    assert header % 64 == 0  # numpy aligns the data
    assert part.read_bytes()[header + 10 * 8 * 4:] == b"".join(k.encode() for k in keys_of(10))
    with sqlite3.connect(cache.index_path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] == cache_mod.FORMAT == 3
        assert con.execute("SELECT layout FROM parts").fetchall() == [(cache_mod.COLUMNS,)]
        indexed = sorted(h for (h,) in con.execute("SELECT hkey FROM vectors"))
    assert indexed == sorted(cache_mod.key_hashes(np.array([k.encode() for k in keys_of(10)])).tolist())


def test_key_hashes_depend_on_the_key_alone_and_tell_keys_sharing_a_prefix_apart():
    short, long_ = b"text 1", b"x" * 70  # folded / BLAKE2b
    alone = cache_mod.key_hashes(np.array([short, long_]))
    assert cache_mod.key_hashes(np.array([short]))[0] == alone[0]  # S6 or S70 array: same hash
    assert cache_mod.key_hashes(np.array([long_, short, short])).tolist() == [alone[1], alone[0], alone[0]]
    shaped = np.array([f"{i:064x}".encode() for i in range(100_000)])  # 48 leading zero digits
    assert len(np.unique(cache_mod.key_hashes(shaped))) == 100_000
    assert cache_mod.key_hashes(np.array([b"a"])).dtype == np.int64


def test_keys_whose_hashes_collide_never_get_each_others_vector(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "key_hashes", lambda keys: np.zeros(len(keys), dtype=np.int64))
    cache = EmbeddingCache(tmp_path, "emb")
    vecs = vectors_of(2)
    cache.put(["first"], vecs[:1], fresh=True)
    cache.put(["second"], vecs[1:], fresh=True)  # same hash: its index row is not added
    found, got = cache.get(["second", "first", "second"])
    assert found.tolist() == [False, True, False]  # a miss (embedded again), not the first's vector
    np.testing.assert_array_equal(bits(got), bits(vecs[:1]))


def test_an_index_of_format_1_is_rebuilt_from_the_parts_on_open(tmp_path):
    keys, vecs = keys_of(30), vectors_of(30)
    cache = EmbeddingCache(tmp_path, "emb")
    cache.put(keys[:20], vecs[:20])
    cache.put(keys[20:], vecs[20:])
    cache.close()
    with sqlite3.connect(cache.index_path) as con:  # the index as format 1 wrote it: text keys
        con.execute("DROP TABLE vectors")
        con.execute("CREATE TABLE vectors (key TEXT PRIMARY KEY, part INTEGER NOT NULL, row INTEGER NOT NULL) "
                    "WITHOUT ROWID")
        con.execute("INSERT INTO vectors VALUES ('stale', 1, 0)")
        con.execute("PRAGMA user_version=1")
    reopened = EmbeddingCache(tmp_path, "emb")
    found, got = reopened.get(keys)
    assert found.all() and len(reopened) == 30
    np.testing.assert_array_equal(bits(got), bits(vecs))
    with sqlite3.connect(cache.index_path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == cache_mod.FORMAT
        assert con.execute("SELECT count(*) FROM parts").fetchone()[0] == 2


def write_records_part(cache: EmbeddingCache, keys: list[str], vectors: np.ndarray) -> Path:
    """A part as format 2 wrote it: one structured array of (key, vector) records."""
    arr = np.empty(len(keys), dtype=[("key", "S64"), ("vector", "<f4", (vectors.shape[1],))])
    arr["key"], arr["vector"] = [k.encode() for k in keys], vectors
    cache.dir.mkdir(parents=True, exist_ok=True)
    path = cache.dir / f"part-records-{len(part_files(cache))}.npy"
    np.save(path, arr)
    return path


def test_an_index_of_format_2_keeps_its_record_parts_readable_next_to_new_column_parts(tmp_path):
    keys, vecs = keys_of(30), vectors_of(30)
    cache = EmbeddingCache(tmp_path, "emb")
    cache.put(keys[:1], vecs[:1])  # creates the index
    write_records_part(cache, keys[1:20], vecs[1:20])
    cache.close()
    with sqlite3.connect(cache.index_path) as con:  # the index as format 2 had it: no layout column
        con.execute("DROP TABLE parts")
        con.execute("DELETE FROM vectors")
        con.execute("CREATE TABLE parts (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, rows INTEGER NOT NULL, "
                    "dim INTEGER NOT NULL, key_bytes INTEGER NOT NULL, offset INTEGER NOT NULL)")
        con.execute("PRAGMA user_version=2")
    (new_part,) = [p for p in part_files(cache) if "records" not in p.name]
    new_part.unlink()  # only the records part is left, and the index is format 2's
    old = EmbeddingCache(tmp_path, "emb")  # adopts the records part (unknown to the index)
    old.put(keys[20:], vecs[20:])  # a columns part
    found, got = EmbeddingCache(tmp_path, "emb").get(keys[::-1])
    assert found.tolist() == [True] * 29 + [False]
    np.testing.assert_array_equal(bits(got), bits(vecs[1:][::-1]))
    with sqlite3.connect(cache.index_path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == cache_mod.FORMAT
        assert sorted(con.execute("SELECT layout FROM parts").fetchall()) == [(cache_mod.RECORDS,), (cache_mod.COLUMNS,)]


def test_a_format_2_index_of_record_parts_is_upgraded_in_place_and_reads_bit_identical(tmp_path):
    keys, vecs = keys_of(20), vectors_of(20)
    cache = EmbeddingCache(tmp_path, "emb")
    path = write_records_part(cache, keys, vecs)
    cache = EmbeddingCache(tmp_path, "emb")  # indexes the part
    cache.close()
    with sqlite3.connect(cache.index_path) as con:  # as format 2 left it: same rows, no layout column
        con.execute("ALTER TABLE parts DROP COLUMN layout")
        con.execute("PRAGMA user_version=2")
        assert con.execute("SELECT count(*) FROM vectors").fetchone()[0] == 20
    found, got = EmbeddingCache(tmp_path, "emb").get(keys)
    assert found.all() and part_files(cache) == [path]
    np.testing.assert_array_equal(bits(got), bits(vecs))


def test_resume_put_per_chunk_then_a_new_cache_object_sees_every_chunk(tmp_path):
    keys, vecs = keys_of(100), vectors_of(100)
    writer = EmbeddingCache(tmp_path, "emb")
    for s in range(0, 100, 16):
        writer.put(keys[s : s + 16], vecs[s : s + 16])
    found, got = EmbeddingCache(tmp_path, "emb").get(keys)
    assert found.all()
    np.testing.assert_array_equal(bits(got), bits(vecs))


def test_interrupted_embedding_resumes_from_the_chunks_already_stored(tmp_path):
    emb = HashingEmbedder(dim=16)
    texts = [f"text {i} " * (i % 5 + 1) for i in range(20)]

    def dies_after_two_chunks(chunks):
        for i, chunk in enumerate(chunks):
            if i == 2:
                raise KeyboardInterrupt
            yield emb.embed(chunk)

    with pytest.raises(KeyboardInterrupt):
        embed_texts(texts, emb, cache=EmbeddingCache(tmp_path, emb.id), map_chunks=dies_after_two_chunks,
                    chunk_size=4)
    X, counts = embed_texts(texts, emb, cache=EmbeddingCache(tmp_path, emb.id), map_chunks=serial_map(emb),
                            chunk_size=4)
    assert counts == {"texts": 20, "cached": 8, "embedded": 12}
    np.testing.assert_array_equal(X, emb.embed(texts))


def test_background_writer_groups_fast_chunks_into_parts_by_time_and_size(tmp_path):
    from curation.pipeline import _BackgroundPuts

    keys = np.array([content_key(f"t{i}").encode() for i in range(40)], dtype="S64")
    vecs = vectors_of(40)

    def parts_after(root, **limits):
        writer = _BackgroundPuts(EmbeddingCache(root, "emb"), **limits)
        for s in range(0, 40, 4):  # ten chunks, faster than any limit
            writer.put(keys[s : s + 4], vecs[s : s + 4])
        writer.close()
        found, got = EmbeddingCache(root, "emb").get(keys.astype(str).tolist())
        assert found.all()
        np.testing.assert_array_equal(bits(got), bits(vecs))
        return len(list(Path(root).rglob("part-*.npy")))

    assert parts_after(tmp_path / "one", seconds=60, max_bytes=2**30) == 1  # all ten chunks in one part
    assert parts_after(tmp_path / "ten", seconds=60, max_bytes=1) == 10  # every chunk is over the size
    # a chunk that waited out the time limit is written before the next one arrives
    writer = _BackgroundPuts(EmbeddingCache(tmp_path / "slow", "emb"), seconds=0.05, max_bytes=2**30)
    writer.put(keys[:4], vecs[:4])
    deadline = time.monotonic() + 10
    while not list((tmp_path / "slow").rglob("part-*.npy")):
        assert time.monotonic() < deadline, "the waiting chunk was never written"
        time.sleep(0.01)
    writer.put(keys[4:8], vecs[4:8])
    writer.close()
    assert len(list((tmp_path / "slow").rglob("part-*.npy"))) == 2


def test_background_writer_queues_chunks_up_to_queue_bytes_while_a_part_is_written(tmp_path, monkeypatch):
    import threading

    import curation.pipeline
    from curation.pipeline import _BackgroundPuts

    keys = np.array([content_key(f"t{i}").encode() for i in range(40)], dtype="S64")
    vecs = vectors_of(40)
    chunk = vecs[:4].nbytes
    monkeypatch.setattr(curation.pipeline, "QUEUE_BYTES", 3 * chunk)
    go = threading.Event()

    class Slow(EmbeddingCache):
        def put_chunks(self, *args, **kw):
            go.wait()  # a part being written
            super().put_chunks(*args, **kw)

    writer = _BackgroundPuts(Slow(tmp_path, "emb"), seconds=60, max_bytes=1)  # every chunk is a part
    done = []
    producer = threading.Thread(target=lambda: [writer.put(keys[s : s + 4], vecs[s : s + 4]) or done.append(s)
                                                for s in range(0, 40, 4)])
    producer.start()
    deadline = time.monotonic() + 10
    while len(done) < 4:  # one chunk in the writer's hands, three in the queue
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)
    assert len(done) == 4 and writer.queued == 3 * chunk  # the producer waits for room
    go.set()
    producer.join()
    writer.close()
    found, got = EmbeddingCache(tmp_path, "emb").get(keys.astype(str).tolist())
    assert found.all() and np.array_equal(bits(got), bits(vecs))


def test_index_row_whose_part_file_was_deleted_is_not_found_and_is_forgotten_on_open(tmp_path):
    cache = EmbeddingCache(tmp_path, "emb")
    keys, vecs = keys_of(20), vectors_of(20)
    cache.put(keys[:10], vecs[:10])
    (first,) = part_files(cache)
    cache.put(keys[10:], vecs[10:])
    first.unlink()
    found, got = cache.get(keys)  # the same object: its index still names the deleted part
    assert found.tolist() == [False] * 10 + [True] * 10
    np.testing.assert_array_equal(bits(got), bits(vecs[10:]))
    reopened = EmbeddingCache(tmp_path, "emb")
    assert len(reopened) == 10  # the deleted part's keys left the index
    reopened.put(keys[:10], vecs[:10])  # and can be stored again
    found, got = reopened.get(keys)
    assert found.all()
    np.testing.assert_array_equal(bits(got), bits(vecs))


def test_part_whose_rows_do_not_hold_the_indexed_keys_is_not_trusted(tmp_path):
    cache = EmbeddingCache(tmp_path, "emb")
    keys, vecs = keys_of(10), vectors_of(10)
    cache.put(keys[:5], vecs[:5])
    cache.put(keys[5:], vecs[5:])
    part = next(p for p in part_files(cache) if keys[0].encode() in p.read_bytes())
    data = bytearray(part.read_bytes())
    data[-5 * (64 + 32):] = bytes(5 * (64 + 32))  # same size, rows zeroed (e.g. lost in a power cut)
    part.write_bytes(bytes(data))
    found, got = cache.get(keys)
    assert found.tolist() == [False] * 5 + [True] * 5
    np.testing.assert_array_equal(bits(got), bits(vecs[5:]))


KILLED_WRITER = """
import os, signal, sys
import numpy as np
from curation.embed import cache as cache_mod

root, mode = sys.argv[1], sys.argv[2]
cache = cache_mod.EmbeddingCache(root, "emb")
keys = [f"killed-{i}" for i in range(50)]
vectors = np.arange(50 * 8, dtype=np.float32).reshape(50, 8)

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if mode == "after-part":  # the part is in place, its keys never reach the index
    cache_mod.EmbeddingCache._index_part = die
else:  # the temporary file is written, never renamed
    os.replace = die
cache.put(keys, vectors)
"""


def test_writer_killed_after_its_temp_file_leaves_a_working_cache_and_the_temp_is_removed(tmp_path):
    cache = EmbeddingCache(tmp_path, "emb")
    cache.put(["kept"], vectors_of(1))
    proc = run_py(KILLED_WRITER, str(tmp_path), "after-temp")
    assert proc.wait(60) == -9, proc.stderr.read()
    temps = list(cache.dir.glob(".tmp-*"))
    assert len(temps) == 1 and temps[0].stat().st_size > 50 * 8 * 4  # the dead writer's complete temp file
    found, got = cache.get(["kept", "killed-0"])
    assert found.tolist() == [True, False]
    reopened = EmbeddingCache(tmp_path, "emb")
    assert not list(cache.dir.glob(".tmp-*"))  # removed by the next open
    assert len(reopened) == 1 and len(part_files(reopened)) == 1


def test_writer_killed_between_part_and_index_leaves_a_working_cache_whose_next_open_adopts_the_part(tmp_path):
    cache = EmbeddingCache(tmp_path, "emb")
    cache.put(["kept"], vectors_of(1))
    proc = run_py(KILLED_WRITER, str(tmp_path), "after-part")
    assert proc.wait(60) == -9, proc.stderr.read()
    assert len(part_files(cache)) == 2 and len(cache) == 1  # a part the index does not name
    found, _ = cache.get(["kept", "killed-0"])
    assert found.tolist() == [True, False]
    reopened = EmbeddingCache(tmp_path, "emb")  # the complete part is indexed, not wasted
    found, got = reopened.get([f"killed-{i}" for i in range(50)])
    assert found.all() and len(reopened) == 51
    np.testing.assert_array_equal(got, np.arange(50 * 8, dtype=np.float32).reshape(50, 8))


CONCURRENT_WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from curation.embed import EmbeddingCache

root, who, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
while not go.exists():
    time.sleep(0.005)
for chunk in range(40):
    keys = [f"w{who}-{chunk}-{i}" for i in range(100)] + [f"shared-{chunk}"]
    vectors = np.full((101, 8), who * 1000 + chunk, dtype=np.float32)
    vectors[-1] = chunk  # the shared key's vector is the same from both writers
    EmbeddingCache(root, "emb").put(keys, vectors)
"""


def test_two_processes_writing_different_keys_concurrently_both_land(tmp_path):
    go = tmp_path / "go"
    procs = [run_py(CONCURRENT_WRITER, str(tmp_path / "cache"), str(who), str(go)) for who in (1, 2)]
    time.sleep(0.5)  # both are waiting on the start signal
    go.touch()
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read()
    cache = EmbeddingCache(tmp_path / "cache", "emb")
    keys = [f"w{who}-{chunk}-{i}" for who in (1, 2) for chunk in range(40) for i in range(100)]
    found, got = cache.get(keys)
    assert found.all() and len(cache) == 8000 + 40
    expected = np.repeat([who * 1000 + chunk for who in (1, 2) for chunk in range(40)], 100)
    np.testing.assert_array_equal(got, np.repeat(expected[:, None], 8, axis=1).astype(np.float32))
    found, got = cache.get([f"shared-{c}" for c in range(40)])
    assert found.all() and got[:, 0].tolist() == list(range(40))


def write_old_part(directory: Path, keys: list[str], vectors: np.ndarray) -> Path:
    """A part as the previous cache wrote it (Parquet, key + fixed-size-list vector, zstd)."""
    directory.mkdir(parents=True, exist_ok=True)
    flat = pa.array(vectors.reshape(-1))
    table = pa.table({"key": pa.array(keys, pa.string()),
                      "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
    path = directory / f"part-{hashlib.sha256(chr(10).join(keys).encode()).hexdigest()[:24]}.parquet"
    pq.write_table(table, path, compression="zstd")
    return path


def test_old_parquet_cache_is_migrated_on_first_open_and_reads_bit_identical(tmp_path):
    old_dir = tmp_path / hashlib.sha256(b"emb").hexdigest()[:24]
    keys, vecs = keys_of(300), vectors_of(300, dim=16)
    vecs[0, 0] = -0.0
    for s in range(0, 300, 100):
        write_old_part(old_dir, keys[s : s + 100], vecs[s : s + 100])
    write_old_part(old_dir, keys[:3], vecs[:3])  # a key in two parts, as concurrent old writers left it
    (old_dir / "embedder.txt").write_text("emb\n")
    cache = EmbeddingCache(tmp_path, "emb")
    assert not list(old_dir.glob("*.parquet")) and len(part_files(cache)) == 4
    assert len(cache) == 300
    found, got = cache.get(keys[::-1])
    assert found.all()
    np.testing.assert_array_equal(bits(got), bits(vecs[::-1]))
    # an old-version process writing later: its part is picked up by the next open, once
    write_old_part(old_dir, keys_of(5, start=1000), vectors_of(5, dim=16, seed=3))
    write_old_part(old_dir, keys[:7], vecs[:7])
    reopened = EmbeddingCache(tmp_path, "emb")
    assert not list(old_dir.glob("*.parquet")) and len(reopened) == 305
    found, got = reopened.get(keys_of(5, start=1000))
    assert found.all()
    np.testing.assert_array_equal(bits(got), bits(vectors_of(5, dim=16, seed=3)))
    assert len(part_files(EmbeddingCache(tmp_path, "emb"))) == 6  # a further open changes nothing


def test_migration_interrupted_after_converting_a_part_completes_without_duplicates(tmp_path):
    old_dir = tmp_path / hashlib.sha256(b"emb").hexdigest()[:24]
    keys, vecs = keys_of(50), vectors_of(50)
    old = write_old_part(old_dir, keys, vecs)
    EmbeddingCache(tmp_path, "emb")  # migrates and removes the Parquet file
    write_old_part(old_dir, keys, vecs)  # as if killed after converting, before removing it
    assert old.exists()
    cache = EmbeddingCache(tmp_path, "emb")
    assert not old.exists() and len(part_files(cache)) == 1 and len(cache) == 50
    found, got = cache.get(keys)
    assert found.all()
    np.testing.assert_array_equal(bits(got), bits(vecs))


def test_lookup_of_10k_keys_in_a_1m_key_cache_is_fast_and_holds_little_more_than_the_result(tmp_path):
    n_cache, n_query, dim = 1_000_000, 10_000, 8
    keys = np.array([f"{i:064x}" for i in range(n_cache)], dtype=object)  # content-key shaped
    vecs = vectors_of(n_cache, dim=dim)
    cache = EmbeddingCache(tmp_path, "emb")
    for s in range(0, n_cache, 250_000):
        cache.put(keys[s : s + 250_000].tolist(), vecs[s : s + 250_000])
    q = np.random.default_rng(1).choice(n_cache, n_query, replace=False)
    query = keys[q].tolist()
    del keys
    small = EmbeddingCache(tmp_path / "small", "emb")  # the same lookup against a cache of just these keys
    small.put(query, vecs[q])

    def best_of_3(cache: EmbeddingCache) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            found, got = cache.get(query)
            times.append(time.perf_counter() - t0)
            assert found.all()
            np.testing.assert_array_equal(bits(got), bits(vecs[q]))
        return min(times)

    big_s, small_s = best_of_3(EmbeddingCache(tmp_path, "emb")), best_of_3(EmbeddingCache(tmp_path / "small", "emb"))
    assert big_s < 1.0, f"lookup took {big_s:.2f}s"
    # 100x the cache, about the same cost (reading every part: ~40x here, and growing with N)
    assert big_s < 5 * small_s + 0.02, f"{big_s:.3f}s against 1M keys, {small_s:.3f}s against 10k"
    reopened = EmbeddingCache(tmp_path, "emb")
    tracemalloc.start()
    try:
        found, got = reopened.get(query)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    result = got.nbytes  # 320 kB; the cache's vectors are 32 MB, its keys 64 MB
    assert peak < result + 16 * 2**20, f"peak {peak / 2**20:.1f} MiB for a {result / 2**20:.1f} MiB result"


def _put_in_child(cache: EmbeddingCache) -> None:
    cache.put(["from child"], np.full((1, 8), 7, dtype=np.float32))
    found, _ = cache.get(["from parent", "from child"])
    os._exit(0 if found.all() else 1)


def test_a_cache_object_works_in_a_forked_child_and_after_pickling(tmp_path):
    import multiprocessing
    import pickle

    cache = EmbeddingCache(tmp_path, "emb")
    cache.put(["from parent"], np.ones((1, 8), dtype=np.float32))  # the parent's connection is open
    child = multiprocessing.get_context("fork").Process(target=_put_in_child, args=(cache,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    found, got = cache.get(["from child"])  # the parent's connection still works and sees the child's put
    assert found.all() and got[0, 0] == 7
    clone = pickle.loads(pickle.dumps(cache))
    found, _ = clone.get(["from parent", "from child"])
    assert found.all()


def test_fresh_chunks_are_written_as_they_came_and_a_repeated_key_keeps_its_first_vector(tmp_path):
    keys, vecs = keys_of(12), vectors_of(12)
    cache = EmbeddingCache(tmp_path, "emb")
    cache.put_chunks([(keys[:5], vecs[:5]), (keys[5:], vecs[5:])], fresh=True)  # no repeats: no copy, as is
    (part,) = part_files(cache)
    np.testing.assert_array_equal(bits(np.load(part)), bits(vecs))  # rows in the order they came
    again = vectors_of(3, seed=1)
    cache.put_chunks([(keys_of(2, 100), again[:2]), ([keys_of(1, 100)[0]], again[2:])], fresh=True)
    found, got = cache.get(keys_of(2, 100) + keys[::-1])
    assert found.all() and len(cache) == 14
    np.testing.assert_array_equal(bits(got), bits(np.concatenate([again[:2], vecs[::-1]])))
    (newest,) = [p for p in part_files(cache) if p != part]
    assert len(np.load(newest)) == 2  # the repeat was not stored
