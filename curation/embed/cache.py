"""On-disk embedding cache keyed by (content hash, embedder id).

Layout of ``<root>/<sha256(embedder id)[:24]>/``:

* ``part-<name>.npy``: one part per :meth:`EmbeddingCache.put`, a NumPy ``.npy`` file of the
  part's vectors, a ``(rows, dim)`` float32 array, followed by the rows' keys (the UTF-8 key,
  ``key_bytes`` fixed-width bytes each, zero-padded) right after the array's data: ``np.load``
  reads the vectors, and the file is written straight from the embedder's chunks without
  interleaving keys and vectors in memory first (layout ``columns``). Parts written before
  format 3 hold one structured array with fields ``key`` and ``vector`` instead (layout
  ``records``); both are read. Parts are immutable: written under a temporary name, flushed to
  disk and renamed into place; they are never rewritten.
* ``index.sqlite3`` (plus SQLite's ``-wal``/``-shm`` files): the index, table
  ``vectors(hkey INTEGER PRIMARY KEY, part, row)`` and table
  ``parts(id, name, rows, dim, key_bytes, offset, layout)`` (where each part's rows are). ``hkey`` is a 64-bit
  hash of the key (:func:`key_hashes`), not the key: SQLite then keys the table by its rowid, and
  the index is much smaller than one keyed by 64-character text (10M keys: 255 MiB against
  870 MiB, bench/results/cache.md). Two keys with the same hash cannot both be indexed; the
  loser is simply never found (and embedded again), and a lookup never returns a wrong vector
  because every row read is checked against the full key stored in its part.
* ``embedder.txt``: the full embedder id.

A lookup of n keys asks the index in batches (O(n log N) for a cache of N keys), then
maps only the parts holding hits, one at a time, and copies just those rows into their places in
the result matrix (checking each row's stored key), so its cost and memory follow the query, not
the cache's size. A lookup sends its key hashes to SQLite as one JSON array per statement
(``json_each``), not one bound parameter per key.

A writer writes its part first and then adds the part's keys to the index in one transaction;
SQLite serialises concurrent writers (WAL mode, busy timeout). An index row whose part file is
missing is treated as not found. Because every part carries its own keys, the index is derived
data: opening a cache indexes any part the index does not know (the finished part of a writer
killed before its commit), drops index rows of parts that were deleted, converts the Parquet
parts of the first format (``part-*.parquet``, columns ``key`` and ``vector``) into parts,
rebuilds an index of format 1 (text keys) from the parts, records that every part an index of
format 2 knows holds records, and removes the temporary files of dead
writers. See docs/embedders.md#the-embedding-cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import mmap
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from curation.exceptions import DataError
from curation.progress import progress
from curation.stages import remove_stale_tmp, tmp_name

log = logging.getLogger(__name__)

INDEX = "index.sqlite3"
FORMAT = 3  # PRAGMA user_version of the index (1: text keys; 2: 64-bit key hashes; 3: parts.layout)
RECORDS, COLUMNS = 0, 1  # parts.layout: one structured array (before format 3); vectors, then keys
BATCH = 2000  # keys per lookup query (a JSON array; larger batches were no faster)
BUSY_TIMEOUT_S = 120.0  # how long a writer waits for another's transaction
# Checkpoint the WAL into the index every ~40 MB rather than SQLite's 4 MB: a put of 1024 random
# keys dirties about as many pages, so the default would checkpoint after every put.
WAL_AUTOCHECKPOINT_PAGES = 10_000

_inherited: list[sqlite3.Connection] = []  # connections a forked child got from its parent: never used or closed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS parts (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    rows INTEGER NOT NULL,
    dim  INTEGER NOT NULL,
    key_bytes INTEGER NOT NULL,  -- width of the key field
    offset    INTEGER NOT NULL,  -- where the rows start (after the .npy header)
    layout    INTEGER NOT NULL DEFAULT 0  -- RECORDS (0) or COLUMNS (1)
);
CREATE TABLE IF NOT EXISTS vectors (
    hkey INTEGER PRIMARY KEY,  -- key_hashes(key): the table's rowid
    part INTEGER NOT NULL,
    row  INTEGER NOT NULL
);
"""
_INSERT = "INSERT OR {verb} INTO vectors (hkey, part, row) VALUES (?, ?, ?)"
_LOOKUP = "SELECT j.key, v.part, v.row FROM json_each(?) AS j JOIN vectors AS v ON v.hkey = j.value"


def content_key(text: str) -> str:
    """sha256 of the UTF-8 text (the cache key; independent of ids and sources)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def as_key_bytes(keys: Sequence[str] | np.ndarray) -> np.ndarray:
    """``keys`` as a fixed-width ``S`` array of their UTF-8 bytes (an ``S`` array is returned as is)."""
    if isinstance(keys, np.ndarray) and keys.dtype.kind == "S":
        return keys
    return np.array([k.encode() for k in keys], dtype=bytes) if len(keys) else np.empty(0, dtype="S1")


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (its multiplications wrap, as intended)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def key_hashes(keys: np.ndarray) -> np.ndarray:
    """The index's 64-bit hash (int64) of each key of the ``S`` array ``keys``.

    A key of at most 64 bytes (every :func:`content_key` has exactly 64) is zero-padded to 64
    bytes, read as eight little-endian 64-bit words w0..w7 and folded as ``h = mix(h ^ w)`` from
    ``h = 0``, where ``mix`` is SplitMix64's finaliser (multiply-xorshift, wrapping at 2**64):
    every byte moves the hash, and all keys are hashed at once. A longer key is hashed with
    BLAKE2b to 8 bytes. Either way the hash of a key depends on its bytes alone; it is stored as
    a signed 64-bit integer, as SQLite stores integers.
    """
    out = np.empty(len(keys), dtype=np.int64)
    if not len(keys):
        return out
    short = np.char.str_len(keys) <= 64 if keys.dtype.itemsize > 64 else np.ones(len(keys), dtype=bool)
    words = np.ascontiguousarray(keys[short] if not short.all() else keys, dtype="S64").view("<u8")
    words = words.reshape(-1, 8)
    h = np.zeros(len(words), dtype=np.uint64)
    for w in range(8):
        h = _mix64(h ^ words[:, w])
    out[short] = h.view(np.int64)
    for i in np.flatnonzero(~short).tolist():
        out[i] = int.from_bytes(hashlib.blake2b(keys[i], digest_size=8).digest(), "little", signed=True)
    return out


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _part_dtype(key_bytes: int, dim: int) -> np.dtype:
    return np.dtype([("key", f"S{key_bytes}"), ("vector", "<f4", (dim,))])


class _Part(NamedTuple):
    """A part as the index describes it: enough to map its rows without parsing the header."""

    name: str
    rows: int
    dim: int
    key_bytes: int
    offset: int
    layout: int = COLUMNS

    @property
    def nbytes(self) -> int:
        """The file's size: the header, then a key and a vector per row (either layout)."""
        return self.offset + self.rows * (self.key_bytes + 4 * self.dim)

    def gather(self, buf, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, keys) of ``rows`` (copies) from the part's bytes ``buf``."""
        if self.layout == RECORDS:
            got = np.frombuffer(buf, dtype=_part_dtype(self.key_bytes, self.dim), count=self.rows,
                                offset=self.offset)[rows]
            return got["vector"], np.ascontiguousarray(got["key"])
        vectors = np.frombuffer(buf, dtype="<f4", count=self.rows * self.dim, offset=self.offset)
        keys = np.frombuffer(buf, dtype=f"S{self.key_bytes}", count=self.rows,
                             offset=self.offset + 4 * self.rows * self.dim)
        return vectors.reshape(self.rows, self.dim)[rows], keys[rows]


class EmbeddingCache:
    """Vectors of one embedder, looked up by content key."""

    def __init__(self, root: str | os.PathLike, embedder_id: str) -> None:
        self.embedder_id = embedder_id
        self.dir = Path(root) / hashlib.sha256(embedder_id.encode()).hexdigest()[:24]
        self.index_path = self.dir / INDEX
        self._con: sqlite3.Connection | None = None
        self._con_pid = 0
        self._lock = threading.Lock()
        remove_stale_tmp(self.dir)  # parts a killed build was writing
        if self.dir.is_dir():
            self._reconcile()

    # ------------------------------------------------------------------------------------ lookup
    def get(self, keys: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Look up ``keys`` (str, or an ``S`` array of their UTF-8 bytes); returns (found mask
        (n,), the found keys' vectors (n_found, d) in query order).

        Repeated keys are all found (the same text appearing twice in a pool). The vectors are
        the stored float32 values, bit for bit; ``None`` when nothing is found.
        """
        n = len(keys)
        found = np.zeros(n, dtype=bool)
        if not n or not self.index_path.exists():
            return found, None
        keys = as_key_bytes(keys)
        # distinct hashes, not distinct keys: the index holds one row per hash, int64 sorts ~10x
        # faster than 64-byte strings, and a key that shares its hash with another fails the
        # stored-key check below, as it would anyway
        u_hash, inverse = np.unique(key_hashes(keys), return_inverse=True)
        inverse = inverse.reshape(-1)
        with self._connection() as con, self._read(con):  # one snapshot for the key and the part lookups
            u_part, u_row = self._lookup(con, u_hash)
            q_part = u_part[inverse]
            hit = np.flatnonzero(q_part >= 0)
            parts = self._parts(con, np.unique(q_part[hit])) if len(hit) else {}
        if not len(hit):
            return found, None
        dims = {p.dim for p in parts.values()}
        if len(dims) != 1:
            raise DataError(f"embedding cache {self.dir} mixes vector sizes {sorted(dims)}; remove it")
        dim = dims.pop()
        # Row j of `out` is the vector of query position hit[j]. Read in (part, row) order, each
        # row straight into its place in `out`, its stored key into `stored` for the check below.
        width = max(max(p.key_bytes for p in parts.values()), keys.dtype.itemsize)
        out = np.empty((len(hit), dim), dtype=np.float32)
        stored = np.zeros((len(hit), width), dtype=np.uint8)
        read = self._read_rows(parts, q_part[hit], u_row[inverse[hit]], out, stored)
        want_arr = keys[hit].astype(f"S{width}").view(np.uint8).reshape(len(hit), width)
        ok = read & (stored == want_arr).all(axis=1)  # each row holds the key the index claims
        if not ok.any():
            return found, None
        found[hit[ok]] = True
        if not ok.all():  # rare: a part vanished or disagreed with the index
            out = out[ok]
        return found, out

    @staticmethod
    def _lookup(con: sqlite3.Connection, hkeys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(part id or -1, row) indexed under each of ``hkeys`` (:func:`key_hashes` of keys).

        A row found is only a candidate: the caller checks the key stored in the part.
        """
        u_part = np.full(len(hkeys), -1, dtype=np.int64)
        u_row = np.zeros(len(hkeys), dtype=np.int64)
        for start in range(0, len(hkeys), BATCH):
            got = con.execute(_LOOKUP, (json.dumps(hkeys[start : start + BATCH].tolist()),)).fetchall()
            if got:
                pos, part, row = np.array(got, dtype=np.int64).T
                u_part[start + pos], u_row[start + pos] = part, row
        return u_part, u_row

    @staticmethod
    def _parts(con: sqlite3.Connection, ids: np.ndarray) -> dict[int, _Part]:
        out: dict[int, _Part] = {}
        ids_l = [int(i) for i in ids]
        for start in range(0, len(ids_l), BATCH):
            batch = ids_l[start : start + BATCH]
            sql = (f"SELECT id, name, rows, dim, key_bytes, offset, layout FROM parts "
                   f"WHERE id IN ({','.join('?' * len(batch))})")
            out.update((r[0], _Part(*r[1:])) for r in con.execute(sql, batch))
        return out

    def _read_rows(self, parts: dict[int, _Part], part_of: np.ndarray, row_of: np.ndarray, out: np.ndarray,
                   stored: np.ndarray) -> np.ndarray:
        """Read row ``row_of[j]`` of part ``part_of[j]`` into ``out[j]`` (vector) and ``stored[j]`` (key).

        Returns which rows were read; a part whose file is missing or has the wrong size yields
        none. The index records each part's layout, so there is no header to parse: each part
        holding hits is mapped once, its rows gathered in row order (one vectorised copy, where a
        ``preadv`` per row cost ~3.5 s per million rows in system calls and the Python loop) and
        unmapped again, so at most one part's pages are mapped at a time.
        """
        read = np.zeros(len(out), dtype=bool)
        order = np.lexsort((row_of, part_of))
        bounds = np.flatnonzero(np.diff(part_of[order])) + 1
        for js in np.split(order, bounds) if len(order) else []:
            part = parts[int(part_of[js[0]])]
            fd = self._open_part(part)  # checks the file's size against the index: no short map
            if fd < 0:
                continue
            try:
                mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)  # the map holds its own reference to the file
            try:
                vectors, keys = part.gather(mm, row_of[js])  # copies
            finally:
                with contextlib.suppress(BufferError):  # only if an error left a view alive: unmapped at GC
                    mm.close()
            out[js] = vectors
            stored[js, : part.key_bytes] = keys.view(np.uint8).reshape(len(js), -1)
            read[js] = True
        return read

    def _open_part(self, part: _Part) -> int:
        """A read-only descriptor of the part's file, or -1 when it is missing or of the wrong size."""
        try:
            fd = os.open(os.path.join(self.dir, part.name), os.O_RDONLY)
        except FileNotFoundError:
            return -1
        size = os.fstat(fd).st_size
        if size != part.nbytes:
            os.close(fd)
            log.warning("embedding cache: part %s has %d bytes, not what the index says; its keys count as "
                        "not found", part.name, size)
            return -1
        return fd

    # ------------------------------------------------------------------------------------- write
    def put(self, keys: Sequence[str] | np.ndarray, vectors: np.ndarray, *, fresh: bool = False) -> None:
        """Store ``vectors`` (row-aligned with ``keys``) as one new part.

        ``keys``: str, or an ``S`` array of their UTF-8 bytes (as :func:`curation.pipeline.text_keys`
        makes them). Keys already in the cache (and repeats within ``keys``) are skipped; the first stored
        vector of a key stays. ``fresh=True`` says the caller just found every key missing (as
        :func:`curation.pipeline.embed_texts` does): the part is written without asking the index
        first, and a key another writer stored meanwhile keeps that writer's vector (its row in
        this part is never read). That saves the lookup, which is most of a put's cost.
        """
        self.put_chunks([(keys, vectors)], fresh=fresh)

    def put_chunks(self, chunks: Sequence[tuple[Sequence[str] | np.ndarray, np.ndarray]], *,
                   fresh: bool = False) -> None:
        """Store several ``(keys, vectors)`` chunks, each as :meth:`put` takes them, as one new part.

        With ``fresh=True`` and no key repeated (no two keys sharing a hash), the part is written
        straight from the chunks' arrays, in their order: no concatenated, reordered or
        interleaved copy of the vectors is made: next to a fast embedder those copies were a
        large share of the cache's CPU, which competes with the tokenizer for the same cores
        (docs/embedders.md#the-embedding-cache). Otherwise the rows to store are gathered first.
        """
        chunks = [(as_key_bytes(k), np.ascontiguousarray(v, dtype="<f4")) for k, v in chunks]
        for k, v in chunks:
            if v.ndim != 2 or len(v) != len(k):
                raise ValueError(f"put: {len(k)} keys but vectors of shape {v.shape}")
        chunks = [(k, v) for k, v in chunks if len(k)]
        if not chunks:
            return
        dims = {v.shape[1] for _, v in chunks}
        if len(dims) != 1:
            raise ValueError(f"put: chunks of vectors of different sizes {sorted(dims)}")
        dim = dims.pop()
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "embedder.txt").exists():
            (self.dir / "embedder.txt").write_text(self.embedder_id + "\n")
        width = max(k.dtype.itemsize for k, _ in chunks)
        keys = np.concatenate([k.astype(f"S{width}", copy=False) for k, _ in chunks])  # 64 bytes a key
        # one row per distinct hash: the index can hold only one key per hash, and a second key
        # with the same hash would never be found
        u_hash, first = np.unique(key_hashes(keys), return_index=True)
        with self._connection() as con:
            self._check_dim(con, dim)
            if not fresh:
                # a key whose hash is indexed counts as stored (for a colliding key that is wrong,
                # and it will not be found: rare, and only ever costs embedding it again)
                u_part, _ = self._lookup(con, u_hash)
                for pid, part in self._parts(con, np.unique(u_part[u_part >= 0])).items():
                    if not (self.dir / part.name).exists():
                        u_part[u_part == pid] = -1  # stale index rows: store these keys again
                new = u_part < 0
                if not new.any():
                    return
                u_hash, first = u_hash[new], first[new]
            if len(first) == len(keys):  # every row, as it came: the hash u_hash[i] is row first[i]
                part, rows = self._write_part([k for k, _ in chunks], [v for _, v in chunks]), first
            else:
                keep = np.sort(first)  # the rows to store, in the order they came
                vectors = chunks[0][1] if len(chunks) == 1 else np.concatenate([v for _, v in chunks])
                part, rows = self._write_part([keys[keep]], [vectors[keep]]), np.searchsorted(keep, first)
            self._index_part(con, part, u_hash, rows, replace=not fresh)

    def _check_dim(self, con: sqlite3.Connection, dim: int) -> None:
        known = con.execute("SELECT dim FROM parts LIMIT 1").fetchone()
        if known is not None and known[0] != dim:
            raise DataError(f"embedding cache {self.dir} holds {known[0]}-d vectors; cannot add "
                            f"{dim}-d ones under the same embedder id")

    def _write_part(self, keys: Sequence[np.ndarray], vectors: Sequence[np.ndarray], name: str | None = None) -> _Part:
        """Write one part of layout ``COLUMNS`` atomically (temporary file, fsync, rename) from
        row-aligned chunks: ``keys`` (``S`` arrays) and ``vectors`` (float32, one width). Each
        chunk is written as it is, so the file costs no copy of the vectors in memory."""
        rows, dim = sum(len(k) for k in keys), vectors[0].shape[1]
        key_bytes = max(1, *(k.dtype.itemsize for k in keys))
        name = name or f"part-{uuid.uuid4().hex}.npy"
        tmp = self.dir / f"{tmp_name()}.npy"
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
            offset = f.tell()
            for v in vectors:
                f.write(memoryview(np.ascontiguousarray(v, dtype="<f4")))
            for k in keys:
                f.write(memoryview(k.astype(f"S{key_bytes}", copy=False)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / name)
        return _Part(name, rows, dim, key_bytes, offset, COLUMNS)

    def _index_part(self, con: sqlite3.Connection, part: _Part, hkeys: np.ndarray, rows: np.ndarray | None = None,
                    *, replace: bool, transaction: bool = True) -> None:
        """Add a written part and its keys to the index: row ``rows[i]`` of the part (default:
        row ``i``) holds the key whose :func:`key_hashes` value is ``hkeys[i]``. One transaction
        unless ``transaction`` is False (the caller holds one).

        ``replace`` points existing keys at this part (put: the caller checked they are stale);
        otherwise existing keys keep their part (adopting or migrating a part). Keys go in in hash
        order, which SQLite's B-tree takes faster (1M keys: 1.8 s against 2.8 s in random order).
        """
        rows = np.arange(len(hkeys)) if rows is None else rows
        if len(hkeys) > 1 and not (hkeys[1:] >= hkeys[:-1]).all():
            order = np.argsort(hkeys, kind="stable")  # stable: of rows sharing a hash, the first wins
            hkeys, rows = hkeys[order], rows[order]
        with self._write(con) if transaction else contextlib.nullcontext():
            con.execute("INSERT OR IGNORE INTO parts (name, rows, dim, key_bytes, offset, layout) "
                        "VALUES (?, ?, ?, ?, ?, ?)", part)
            (pid,) = con.execute("SELECT id FROM parts WHERE name = ?", (part.name,)).fetchone()
            con.executemany(_INSERT.format(verb="REPLACE" if replace else "IGNORE"),
                            zip(hkeys.tolist(), itertools.repeat(pid), rows.tolist()))

    def __len__(self) -> int:
        """The number of keys in the index."""
        if not self.index_path.exists():
            return 0
        with self._connection() as con:
            return int(con.execute("SELECT count(*) FROM vectors").fetchone()[0])

    # --------------------------------------------------------------------------- index upkeep
    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """This object's connection to the index, opened on first use, one user at a time.

        One connection per object and process keeps SQLite's page cache warm across calls and
        spares a checkpoint at every close. A child process forked from the owner opens its own
        (SQLite connections must not cross a fork) and leaves the inherited one alone.
        """
        with self._lock:
            if self._con is None or self._con_pid != os.getpid():
                if self._con is not None:
                    _inherited.append(self._con)
                self._con, self._con_pid = self._connect(), os.getpid()
            yield self._con

    def close(self) -> None:
        """Close the index connection (it is reopened on the next call)."""
        with self._lock:
            if self._con is not None and self._con_pid == os.getpid():
                self._con.close()
            self._con = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_con"], state["_con_pid"], state["_lock"] = None, 0, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.index_path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                              check_same_thread=False)
        try:
            # switching a new database to WAL takes an exclusive lock, and SQLite can answer
            # "database is locked" at once, without its busy handler, when another process opens
            # the same new cache at that moment (two builds sharing a cache_dir): wait and retry
            Retrying(retry=retry_if_exception(_locked), wait=wait_exponential(multiplier=0.01, max=0.5),
                     stop=stop_after_delay(BUSY_TIMEOUT_S), reraise=True)(con.execute, "PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed transaction
            con.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            con.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache per connection
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version < FORMAT:
                with self._write(con):  # re-read under the write lock: another process may have done it
                    version = con.execute("PRAGMA user_version").fetchone()[0]
                    if version == 0:
                        for stmt in filter(str.strip, _SCHEMA.split(";")):
                            con.execute(stmt)
                    elif version == 1:
                        self._rebuild_index(con)
                    elif version == 2:  # every part so far holds records
                        con.execute(f"ALTER TABLE parts ADD COLUMN layout INTEGER NOT NULL DEFAULT {RECORDS}")
                    con.execute(f"PRAGMA user_version={FORMAT}")
            elif version > FORMAT:
                raise DataError(f"embedding cache index {self.index_path} has format {version}, newer than "
                                f"this code's ({FORMAT}); upgrade curation or use another cache_dir")
        except BaseException:
            con.close()
            raise
        return con

    @staticmethod
    @contextmanager
    def _write(con: sqlite3.Connection) -> Iterator[None]:
        con.execute("BEGIN IMMEDIATE")  # take the write lock now (waits up to the busy timeout)
        try:
            yield
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    @staticmethod
    @contextmanager
    def _read(con: sqlite3.Connection) -> Iterator[None]:
        con.execute("BEGIN")
        try:
            yield
        finally:
            if con.in_transaction:  # never leave a read transaction open: it would hold back checkpoints
                con.execute("COMMIT")

    def _reconcile(self) -> None:
        """Bring the index in line with the part files (run on open; cheap when nothing changed)."""
        with os.scandir(self.dir) as it:
            names = [e.name for e in it if e.name.startswith("part-")]
        npy = {n for n in names if n.endswith(".npy")}
        legacy = sorted(n for n in names if n.endswith(".parquet"))
        if not npy and not legacy and not self.index_path.exists():
            return
        with self._connection() as con:
            indexed = dict(con.execute("SELECT name, id FROM parts").fetchall())
            gone = [pid for name, pid in indexed.items() if name not in npy and not (self.dir / name).exists()]
            if gone:
                self._forget_parts(con, gone)
            for name in sorted(npy - indexed.keys()):
                self._adopt(con, name)
            if legacy:
                with progress(len(legacy), "indexing the embedding cache's Parquet parts", unit="parts") as bar:
                    for name in legacy:
                        self._migrate(con, name)
                        bar(1)

    def _rebuild_index(self, con: sqlite3.Connection) -> None:
        """Replace an index of format 1 (text keys) by one of this format, from the parts' own
        keys (inside the caller's transaction; reads the key field of every part once)."""
        con.execute("DROP TABLE IF EXISTS vectors")
        con.execute("DROP TABLE IF EXISTS parts")
        for stmt in filter(str.strip, _SCHEMA.split(";")):
            con.execute(stmt)
        with os.scandir(self.dir) as it:
            names = sorted(e.name for e in it if e.name.startswith("part-") and e.name.endswith(".npy"))
        with progress(len(names), "rebuilding the embedding cache's index", unit="parts") as bar:
            for name in names:
                self._adopt(con, name, transaction=False)
                bar(1)

    def _forget_parts(self, con: sqlite3.Connection, ids: list[int]) -> None:
        """Drop the index rows of parts whose files were deleted (a full index scan; rare)."""
        with self._write(con):
            rows = con.execute(f"SELECT id, name FROM parts WHERE id IN ({','.join('?' * len(ids))})", ids)
            gone = [pid for pid, name in rows.fetchall() if not (self.dir / name).exists()]
            if gone:
                marks = ",".join("?" * len(gone))
                con.execute(f"DELETE FROM vectors WHERE part IN ({marks})", gone)
                con.execute(f"DELETE FROM parts WHERE id IN ({marks})", gone)
                log.warning("embedding cache %s: %d part file(s) were deleted; their keys will be embedded again",
                            self.dir, len(gone))

    def _adopt(self, con: sqlite3.Connection, name: str, *, transaction: bool = True) -> None:
        """Index a complete part the index does not know (its writer died before committing, or
        the index is being rebuilt)."""
        path = self.dir / name
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.dtype.names == ("key", "vector") and arr.ndim == 1:
                keys = np.array(arr["key"])  # a strided read of the key field
                part = _Part(name, len(arr), arr.dtype["vector"].shape[0], arr.dtype["key"].itemsize, arr.offset,
                             RECORDS)
            elif arr.dtype == np.dtype("<f4") and arr.ndim == 2 and len(arr):
                rows, dim = arr.shape
                tail = path.stat().st_size - arr.offset - arr.nbytes  # the keys, after the vectors
                if tail <= 0 or tail % rows:
                    raise ValueError(f"{tail} bytes after {rows} vectors cannot be their keys")
                part = _Part(name, rows, dim, tail // rows, arr.offset, COLUMNS)
                keys = np.fromfile(path, dtype=f"S{part.key_bytes}", count=rows, offset=arr.offset + arr.nbytes)
            else:
                raise ValueError(f"unexpected layout {arr.dtype} {arr.shape}")
            del arr
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, IndexError) as e:
            log.warning("embedding cache: skipping unreadable part %s (%s)", name, e)
            return
        self._index_part(con, part, key_hashes(keys), replace=False, transaction=transaction)

    def _migrate(self, con: sqlite3.Connection, name: str) -> None:
        """Convert one Parquet part of the first format into a part, index it, remove it."""
        import pyarrow.parquet as pq

        src = self.dir / name
        target = src.with_suffix(".npy").name  # deterministic: a rerun after a crash finds it
        if not (self.dir / target).exists():
            try:
                table = pq.read_table(src, columns=["key", "vector"])
            except FileNotFoundError:
                return  # another process migrated it meanwhile
            except Exception as e:  # noqa: BLE001 - keep the file, say why, go on
                log.warning("embedding cache: cannot read old part %s (%s); left in place", name, e)
                return
            vec = table.column("vector").combine_chunks()
            flat = vec.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            vectors = flat.reshape(-1, vec.type.list_size)
            uniq, first = np.unique(as_key_bytes(table.column("key").to_pylist()), return_index=True)
            self._write_part([uniq], [vectors[first]], name=target)
        self._adopt(con, target)
        src.unlink(missing_ok=True)
