"""The work inside a build's stages, as plain functions: read, embed, cluster, select, assemble.

:mod:`curation.builder` runs these as resumable stages; they know nothing of the stage store,
Prefect or Ray (parallelism comes in as ``map_chunks``).
"""

from __future__ import annotations

import binascii
import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from curation.cluster import FaissKMeans, choose_k, silhouette
from curation.embed import Embedder, EmbeddingCache, TabularEncoder
from curation.embed.cache import key_hashes
from curation.exceptions import DataError
from curation.ingest import (
    POS,
    WHERE,
    SchemaGuard,
    combine,
    location,
    normalize_batch,
    row_json,
    union_sources,
    where_columns,
)
from curation.memory import release, write_rows
from curation.progress import progress
from curation.recipe import HoldoutConfig, Recipe, SourceConfig
from curation.report_schema import (
    NOT_SELECTED,
    REFERENCE,
    SELECTED,
    SKIPPED,
    reference_code,
    skipped_code,
    validate_report,
)
from curation.select import build_selector
from curation.types import Pool, Reference, RowReasons, Selection

STAGING_COLUMNS = ("__text", "__label", *WHERE)
MapChunks = Callable[[list[list[str]]], Iterator[np.ndarray]]


# ---------------------------------------------------------------------------------------- ingest
def arrow_views(frame: pl.DataFrame) -> pa.Table:
    """``frame`` as Arrow without copying its strings: polars' string views as Arrow
    ``string_view`` (the default conversion copies every string into a new buffer: 1M short-text
    items, 0.06 s of a 0.4 s ingest), but a categorical's dictionary as ``string``, which
    Parquet can write. For stage files only: a published file keeps the default types."""
    table = frame.to_arrow(compat_level=pl.CompatLevel.newest())
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, frame[field.name].to_arrow())
    return table


def stage_writer(path: Path, schema: pa.Schema) -> Any:
    """A Parquet writer for a stage's items: uncompressed and without column statistics (a
    local file read soon and whole, never filtered by statistics; zstd would make writing it
    most of the ingest stage), a dictionary only for what already is one (a categorical such
    as the location's file name), and encoding 64k values at a time rather than pyarrow's
    1,024. Dictionary-encoding a string column hashes every value, and for a column of distinct
    values (ids, texts, most of a source's own text fields) pyarrow gives up after a page; at
    1M short-text items with four low-cardinality string columns, writing without them took
    0.11 s against 0.16 s for a file 40% larger (93 MB against 66 MB; a cache entry, not the
    published version, which is compressed)."""
    import pyarrow.parquet as pq

    return pq.ParquetWriter(path, schema, compression="none", write_statistics=False,
                            use_dictionary=[f.name for f in schema if pa.types.is_dictionary(f.type)],
                            write_batch_size=65_536)


class ItemParts:
    """A stage's items written batch by batch as they are normalised, never held whole.

    Each batch goes to a Parquet file on a writer thread (pyarrow encodes and writes without
    the GIL, so writing can overlap normalising the next batch; on 2 busy cores the two share
    them and 1M short texts take ~0.27 s either way: what this saves is memory, 10M rows'
    ingest peak 1.96 -> 0.96 GB); batches with the same columns and types share a file, a row
    group each. What the id rules need stays in memory as a narrow **key frame** per batch
    (:meth:`add`): the id, the source (categorical) and :data:`POS`, the row's position in write
    order. The few other columns something else reads are read back from the files by position:
    the held-out split's strata (:meth:`with_columns`) and a skipped duplicate's group and
    location (:meth:`complete`). At 10M short-id rows the key frame is ~0.3 GB (28 bytes a
    row); holding the group, label and location columns too (as categoricals) took 48, and
    casting them was 45 ms of CPU in a 1M-row ingest of ~0.3 s.

    :meth:`finish` writes ``items.parquet`` (the rows kept, in order) and optionally the
    held-out rows' file, with the columns and types of ``pl.concat(batches,
    how="diagonal_relaxed")``: the file is renamed into place when every row is kept and all
    batches had one schema, else streamed once more a row group at a time. Use as a context
    manager: leaving it closes the writers (the part files live in the stage's temporary
    directory, which a failed stage removes)."""

    def __init__(self, directory: Path, *, pending: int = 2) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.dir, self.pending = Path(directory), pending
        self.parts: list[tuple[Path, dict[str, pl.DataType]]] = []
        self.schemas: list[dict[str, pl.DataType]] = []  # every batch's, in order (empty ones too)
        self.rows = 0
        self._writer: Any = None
        self._futures: list = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="items-writer")

    def __enter__(self) -> ItemParts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, items: pl.DataFrame, source: str) -> pl.DataFrame:
        """Queue ``items`` (all from ``source``) for writing; returns its key frame: ``id``,
        ``source`` and :data:`POS`."""
        schema = dict(items.schema)
        if not self.schemas or self.schemas[-1] != schema:
            self.schemas.append(schema)  # an empty batch's columns are the items' columns too
        if items.height:
            if not self.parts or self.parts[-1][1] != schema:  # another schema: another file
                if self._writer is not None:
                    self._submit(self._writer.close)
                path = self.dir / f".items-part-{len(self.parts)}.parquet"
                self._writer = stage_writer(path, arrow_views(items.head(0)).schema)
                self.parts.append((path, schema))
            writer = self._writer
            self._submit(lambda: writer.write_table(arrow_views(items)))
        # the source as a categorical made from its one name (no per-row work, 4 bytes a row; a
        # skipped row concatenated with string rows is a string again)
        keys = pl.DataFrame([items["id"], pl.repeat(source, items.height, dtype=pl.Categorical, eager=True).alias("source"),
                             pl.int_range(self.rows, self.rows + items.height, dtype=pl.Int64, eager=True).alias(POS)])
        self.rows += items.height
        return keys

    def _submit(self, fn: Callable[[], Any]) -> None:
        self._futures.append(self._pool.submit(fn))
        while len(self._futures) > self.pending:  # bounded: at most `pending` batches wait
            self._futures.pop(0).result()

    def _drain(self) -> None:
        if self._writer is not None:
            self._submit(self._writer.close)
            self._writer = None
        while self._futures:
            self._futures.pop(0).result()

    def close(self) -> None:
        """Stop the writer thread and close any open file (after an error: nothing is raised)."""
        try:
            self._drain()
        except Exception:  # the error that stopped the stage is the one to report
            pass
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def finish(self, items_path: Path, keep: np.ndarray | None = None,
               held: np.ndarray | None = None, held_path: Path | None = None) -> None:
        """Write the kept rows (positions ``keep``, sorted; None: all) to ``items_path`` and the
        rows at positions ``held`` (sorted) to ``held_path``; removes the part files."""
        self._drain()
        if not self.parts:
            raise ValueError("no items were written")
        union = self._union()
        everything = keep is None or len(keep) == self.rows
        if everything and held is None and len(self.parts) == 1 and self.parts[0][1] == union:
            os.replace(self.parts[0][0], items_path)
            self.parts = []
            return
        masks = [(items_path, self._mask(keep))]
        if held is not None and held_path is not None:
            masks.append((held_path, self._mask(held)))
        writers: dict[Path, Any] = {}

        def write(out: Path, frame: pl.DataFrame) -> None:
            table = arrow_views(frame)
            if out not in writers:
                writers[out] = stage_writer(out, table.schema)
            writers[out].write_table(table)

        try:
            for at, block in self._blocks():
                block = block.select([pl.col(c).cast(t) if c in block.columns else pl.lit(None, t).alias(c)
                                      for c, t in union.items()])
                for out, mask in masks:
                    part = block.filter(pl.Series(mask[at:at + block.height]))
                    if part.height:
                        write(out, part)
            for out, _ in masks:
                if out not in writers:  # no rows: the columns alone
                    write(out, pl.DataFrame(schema=union))
        finally:
            for w in writers.values():
                w.close()
        for path, _ in self.parts:
            path.unlink()
        self.parts = []

    def with_columns(self, keys: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
        """``keys`` (a key frame, or rows of one, in :data:`POS` order) with those of
        ``columns`` that were written, read back at their positions (string columns as
        categoricals: the held-out split reads group and label of every row). Call after the
        last :meth:`add`."""
        found = self._read(keys[POS].to_numpy(), columns, categorical=True)
        return keys.with_columns(found.drop(POS))

    def complete(self, skipped: pl.DataFrame) -> pl.DataFrame:
        """``skipped`` without its :data:`POS` column: a row made from a key frame (a duplicate
        id or content, a copy of a reference row) gets its other columns (group, the group
        columns, location) read back from what was written. Call after the last :meth:`add`."""
        if POS not in skipped.columns:
            return skipped
        at = skipped[POS].drop_nulls()
        fill = [c for c in skipped.columns if c not in ("id", "source", "reason", POS)]
        if at.is_empty() or not fill:
            return skipped.drop(POS)
        found = self._read(np.unique(at.to_numpy()), fill)
        joined = skipped.join(found, on=POS, how="left", suffix="\x00found", maintain_order="left")
        return joined.select([pl.coalesce(c, f"{c}\x00found").alias(c) if f"{c}\x00found" in joined.columns
                              else pl.col(c) for c in skipped.columns if c != POS])

    def _read(self, positions: np.ndarray, columns: Sequence[str], *, categorical: bool = False) -> pl.DataFrame:
        """The rows at ``positions`` (sorted, distinct) with :data:`POS` and those of ``columns``
        each part has (missing ones null), in position order."""
        self._drain()
        mask = self._mask(positions)
        parts = []
        for at, block in self._blocks(columns, index=True):
            block = block.filter(pl.Series(mask[at:at + block.height]))
            if categorical:
                block = block.with_columns(pl.col(pl.String).cast(pl.Categorical))
            parts.append(block)
        union = self._union()
        empty = pl.DataFrame(schema={POS: pl.Int64, **{c: union[c] for c in columns if c in union}})
        return pl.concat([empty, *parts], how="diagonal_relaxed")

    def _union(self) -> dict[str, pl.DataType]:
        """The columns and types of ``pl.concat(batches, how="diagonal_relaxed")``."""
        return dict(pl.concat([pl.DataFrame(schema=s) for s in self.schemas], how="diagonal_relaxed").schema)

    def _blocks(self, columns: Sequence[str] | None = None, *,
                index: bool = False) -> Iterator[tuple[int, pl.DataFrame]]:
        """(position of its first row, rows) of each row group written, in order: every column,
        or those of ``columns`` its file has; with ``index``, :data:`POS` first."""
        import pyarrow.parquet as pq

        at = 0
        for path, schema in self.parts:
            f = pq.ParquetFile(path)
            names = None if columns is None else [c for c in columns if c in schema]
            for g in range(f.num_row_groups):
                n = f.metadata.row_group(g).num_rows
                table = f.read_row_group(g, columns=names)
                block = pl.DataFrame([pl.int_range(at, at + n, dtype=pl.Int64, eager=True).alias(POS)] if index else [])
                block = pl.concat([block, pl.from_arrow(table)], how="horizontal") if table.num_columns else block
                yield at, block
                at += n

    def _mask(self, positions: np.ndarray | None) -> np.ndarray:
        mask = np.zeros(self.rows, dtype=bool)
        mask[np.arange(self.rows) if positions is None else np.asarray(positions, dtype=np.int64)] = True
        return mask


def read_source(batches: Iterable[pa.Table], source: SourceConfig, groups: Sequence[str],
                *, connector_skipped: Counter | None = None,
                sink: ItemParts | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Normalise every batch of one source (see :mod:`curation.ingest`): (items, skipped rows),
    a source's duplicate content dropped or its duplicate ids refused (:func:`combine`).

    With a ``sink``, each batch's items are written to it as they come and the first element
    is their key frame (:meth:`ItemParts.add`): what the id rules read.

    Raises:
        DataError: the source yields no rows, or no usable row.
    """
    parts = []
    total = 0
    guard = SchemaGuard(source)
    with progress(0, f"reading {source.name}", unit="rows") as bar:
        for table in batches:
            total += table.num_rows
            items, skipped = normalize_batch(table, source, groups, guard)
            if sink is not None:
                items = sink.add(items, source.name)
            parts.append((items, skipped))
            bar(table.num_rows)
    if total == 0:
        bad = sum((connector_skipped or Counter()).values())
        extra = f" ({bad} undecodable lines skipped)" if bad else ""
        what = source.path if source.path is not None else (getattr(source, "table", None)
                                                             or getattr(source, "query", None))
        raise DataError(f"source {source.name!r} is empty: {what!r} holds no rows{extra}.")
    items, skipped = combine(parts, hashed_ids=source.id is None)
    if items.height == 0:
        reasons = dict(Counter(skipped["reason"].to_list()))
        raise DataError(f"source {source.name!r} has no usable rows: all {total} were skipped ({reasons}).")
    return items, skipped


def merge_sources(parts: Sequence[tuple[pl.DataFrame, pl.DataFrame]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """All sources' items and skipped rows; a later source's duplicate ids are skipped rows
    (``duplicate_id``: the first source wins, see :func:`curation.ingest.union_sources`)."""
    return union_sources(parts)


#: Rows a streaming step holds as Python objects at once (cache keys, cache lookups, content
#: hashes). Results never depend on it (a test builds with a tiny value and compares bytes).
BLOCK_ROWS = 100_000


# ----------------------------------------------------------------------------------------- embed
def serial_map(embedder: Embedder) -> MapChunks:
    """The in-process ``map_chunks``: the chunks' vectors in order.

    Chunks are embedded one after another, or, for an embedder whose
    :attr:`~curation.embed.Embedder.parallel_chunks` is above 1, that many at once on threads
    (the first one alone, so the model loads once), with at most twice that many chunks
    gathered ahead of the one being consumed. Either way chunk ``i``'s vectors are
    ``embedder.embed(chunks[i])``: the same arrays, in the same order."""
    workers = max(1, int(embedder.parallel_chunks))

    def run(chunks: Sequence[list[str]]) -> Iterator[np.ndarray]:
        if workers == 1 or len(chunks) < 2:
            for chunk in chunks:
                yield embedder.embed(chunk)
            return
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        yield embedder.embed(chunks[0])
        pool = ThreadPoolExecutor(workers, thread_name_prefix="embed")
        try:
            ahead: deque = deque()
            for i in range(1, len(chunks)):
                # the texts are gathered on the worker too (TextChunks builds them on demand)
                ahead.append(pool.submit(lambda i=i: embedder.embed(chunks[i])))
                if len(ahead) > 2 * workers:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:  # a consumer that stops early (an error downstream) leaves nothing running
            pool.shutdown(wait=True, cancel_futures=True)
    return run


class ParquetTexts(Sequence[str]):
    """A string column of Parquet files (their rows one after another, e.g. the items and then
    the held-out rows), read a row group at a time: what :func:`embed_texts` reads its texts
    from when its embedder is :attr:`~curation.embed.Embedder.batch_invariant`, whose chunks
    ask for rows in increasing order, so the driver never holds the column (10M short texts:
    ~0.6 GB).

    Also the pool's texts (:attr:`curation.types.Pool.texts`), which only a few scorers read
    (``quality: length`` iterates them; a part of the pool gathers its rows).

    ``slice(start, n)`` and ``gather(positions)`` return polars Series, in the order asked for;
    indexing gives a string (a position) or a Series (a slice or positions), and iterating
    reads the row groups in order. The last ``keep`` decoded row groups are kept (thread-safe:
    chunks are gathered on worker threads); rows far behind them decode their row group again,
    so any order is correct and increasing order decodes each row group about once."""

    def __init__(self, paths: Sequence[Path], column: str, *, keep: int = 4) -> None:
        import threading

        import pyarrow.parquet as pq

        self.column, self.keep = column, keep
        self.groups: list[tuple[Path, int]] = []  # (file, row group), in row order
        sizes = []
        for path in paths:
            meta = pq.ParquetFile(path).metadata
            for g in range(meta.num_row_groups):
                self.groups.append((Path(path), g))
                sizes.append(meta.row_group(g).num_rows)
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._decoded: dict[int, pl.Series] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _group(self, g: int) -> pl.Series:
        import pyarrow.parquet as pq

        with self._lock:
            if g in self._decoded:
                return self._decoded[g]
            path, index = self.groups[g]
            table = pq.ParquetFile(path).read_row_group(index, columns=[self.column])
            col = pl.Series(self.column, pl.from_arrow(table.column(0)), dtype=pl.String)
            self._decoded[g] = col
            while len(self._decoded) > self.keep:  # the oldest first: chunks move forward
                del self._decoded[next(iter(self._decoded))]
            return col

    def gather(self, positions: np.ndarray) -> pl.Series:
        positions = np.asarray(positions, dtype=np.int64)
        groups = np.searchsorted(self.starts, positions, side="right") - 1
        parts = []
        for g in np.unique(groups).tolist():
            mine = positions[groups == g] - self.starts[g]
            parts.append(self._group(g).gather(mine))
        out = pl.concat(parts) if parts else pl.Series(self.column, [], dtype=pl.String)
        if np.any(np.diff(groups) < 0):  # row groups out of order: back to the order asked for
            order = np.argsort(groups, kind="stable")  # the asked index of each row of `out`
            where = np.empty_like(order)
            where[order] = np.arange(len(order))
            out = out.gather(where)
        return out

    def slice(self, start: int, n: int) -> pl.Series:
        return self.gather(np.arange(start, min(start + n, len(self)), dtype=np.int64))

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.gather(np.arange(len(self))[i])
        if isinstance(i, (int, np.integer)):
            return self.gather(np.array([i if i >= 0 else len(self) + i]))[0]
        return self.gather(np.asarray(i))

    def __iter__(self) -> Iterator[str]:
        for g in range(len(self.groups)):
            yield from self._group(g)


class TextChunks(Sequence[list[str]]):
    """Chunks of texts gathered on demand from a column: ``chunks[i]`` is the list of
    ``texts[j] for j in positions[i]``. Only the chunks being embedded exist as Python strings,
    so a million-text pool is never a million-string list in the driver."""

    def __init__(self, texts: pl.Series | ParquetTexts, positions: list[np.ndarray]) -> None:
        self.texts, self.positions = texts, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.texts.gather(self.positions[i]).to_list()


#: How a build's cache writes are grouped into parts (:class:`_BackgroundPuts`): a part is written
#: once its oldest chunk has waited ``PART_SECONDS`` or it holds ``PART_BYTES`` of vectors. Each
#: part costs one file, one fsync and one index transaction (~20 ms here), so a fast embedder's
#: 1024-text chunks written one part each spent more time in the cache than embedding (hashing,
#: 1M texts: 24 s of puts against ~50 s of encoding; 1 s parts: ~5 s, on the writer's thread).
#: A killed build loses at most ``PART_SECONDS`` of finished chunks.
PART_SECONDS = 1.0
PART_BYTES = 64 * 2**20
QUEUE_BYTES = 32 * 2**20


class _BackgroundPuts:
    """Cache writes on one background thread, so writing overlaps embedding the next chunks
    (SQLite and file writes release the GIL). Chunks are grouped into parts as
    :data:`PART_SECONDS` and :data:`PART_BYTES` say; a slow embedder's chunks (seconds each)
    still get a part each, so a killed build resumes from its last chunk or so. Chunks of up to
    :data:`QUEUE_BYTES` of vectors wait in the queue (``put`` blocks beyond that): enough for
    the embedder to go on while a part is written (0.2-2 s), where a queue of 4 chunks stalled
    it (1M texts, hashing: 3 s). An error is raised in the caller at the next ``put`` or at
    ``close``."""

    def __init__(self, cache: EmbeddingCache, *, seconds: float | None = None,
                 max_bytes: int | None = None) -> None:
        import queue
        import threading

        self.cache, self.error = cache, None
        self.seconds = PART_SECONDS if seconds is None else seconds
        self.max_bytes = PART_BYTES if max_bytes is None else max_bytes
        self.queue: queue.Queue = queue.Queue()
        self.room, self.queued = threading.Condition(), 0  # vector bytes in the queue
        self.thread = threading.Thread(target=self._run, name="embedding-cache-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import queue
        import time

        pending: list[tuple[np.ndarray, np.ndarray]] = []
        size, oldest, done = 0, 0.0, False
        while not done:
            wait = None if not pending else max(0.0, oldest + self.seconds - time.monotonic())
            try:
                item = self.queue.get(timeout=wait)
            except queue.Empty:
                item = ()  # the oldest pending chunk has waited long enough
            done = item is None
            if item:
                with self.room:
                    self.queued -= item[1].nbytes
                    self.room.notify()
                if not pending:
                    oldest = time.monotonic()
                pending.append(item)
                size += item[1].nbytes
            if pending and (not item or size >= self.max_bytes or time.monotonic() - oldest >= self.seconds):
                self._write(pending)
                pending, size = [], 0

    def _write(self, batch: list[tuple[np.ndarray, np.ndarray]]) -> None:
        if self.error is not None:
            return
        try:
            self.cache.put_chunks(batch, fresh=True)  # written chunk by chunk: no copy of the part
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            self.error = exc

    def put(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Queue one chunk: its keys (an ``S64`` array, see :func:`text_keys`) and vectors."""
        if self.error is not None:
            raise self.error
        with self.room:
            while self.queued and self.queued + vectors.nbytes > QUEUE_BYTES:
                self.room.wait()
            self.queued += vectors.nbytes
        self.queue.put((keys, vectors))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def text_digests(texts: pl.Series | ParquetTexts | Sequence[str], batch: int | None = None) -> np.ndarray:
    """The sha256 digests of ``texts`` (UTF-8) as an ``S32`` array: each text's cache key
    (:func:`curation.embed.content_key`) before hexing, :func:`hex_keys` makes the keys. Held
    this way, a pool's keys take 32 bytes a text (10M texts: 0.32 GB), where the hex keys take
    64 and Python strings 4x that or more."""
    col = texts if isinstance(texts, (pl.Series, ParquetTexts)) else pl.Series("text", list(texts), dtype=pl.String)
    out = np.empty(len(col), dtype="S32")
    batch = batch or BLOCK_ROWS
    sha256 = hashlib.sha256
    for start in range(0, len(col), batch):  # only one batch of Python strings at a time
        values = col.slice(start, batch).to_list()
        out[start : start + len(values)] = np.frombuffer(b"".join([sha256(t.encode("utf-8")).digest() for t in values]),
                                                         dtype="S32")
    return out


def hex_keys(digests: np.ndarray) -> np.ndarray:
    """The cache keys (``S64``, 64 hex digits) of :func:`text_digests`' digests, hexed all at
    once rather than with ``hexdigest`` text by text (keys of 1M texts: 0.47 s against 0.68 s)."""
    return np.frombuffer(binascii.hexlify(np.ascontiguousarray(digests, dtype="S32").tobytes()), dtype="S64")


def text_keys(texts: pl.Series | Sequence[str], batch: int | None = None) -> np.ndarray:
    """The cache keys (:func:`curation.embed.content_key`, 64 hex digits) of ``texts`` as an
    ``S64`` array (a test pins them to ``content_key``)."""
    return hex_keys(text_digests(texts, batch)).copy()  # writable, not a view of a bytes object


def digest_hashes(digests: np.ndarray) -> np.ndarray:
    """:func:`~curation.embed.cache.key_hashes` of the keys of ``digests``, hexed
    :data:`BLOCK_ROWS` at a time: the hashes the cache's index and :func:`distinct_keys` order
    keys by, without the pool's hex keys held at once."""
    out = np.empty(len(digests), dtype=np.int64)
    for s in range(0, len(digests), BLOCK_ROWS):
        out[s : s + BLOCK_ROWS] = key_hashes(hex_keys(digests[s : s + BLOCK_ROWS]))
    return out


def distinct_keys(keys: np.ndarray, hashes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(first, repeats, of)`` for the ``S`` array ``keys``: ``first[j]`` is where the j-th
    distinct key first occurs; every other row ``repeats[i]`` holds the key of row ``of[i]``
    (a row of ``first``). So ``first`` and ``repeats`` partition the rows, and with
    ``rep = arange(n); rep[repeats] = of``, ``keys[rep] == keys``.

    Distinct keys come in the order of their 64-bit ``hashes`` (default: the keys'
    :func:`~curation.embed.cache.key_hashes`; for digests, :func:`digest_hashes`, the same
    order as their hex keys'), found by one stable sort of the int64 hashes rather than of the
    keys (1M keys: 0.31 s against 0.87 s), and without a per-row inverse: a pool without
    repeats (the usual case) holds only ``first`` afterwards (10M texts: the embed stage's peak
    1.49 -> 0.91 GB with ``np.unique``'s temporaries gone). Two different keys sharing a hash
    would be merged; only a repeat can be such a pair, so the repeats alone are compared with
    their first rows, and on a mismatch the keys themselves are sorted instead, in their byte
    order (a digest's byte order is its hex key's).
    """
    hashes = key_hashes(keys) if hashes is None else hashes
    first, repeats, of = _distinct_sorted(hashes)
    # compared BLOCK_ROWS repeats at a time: a whole-array comparison copies the keys it reads
    for s in range(0, len(repeats), BLOCK_ROWS):
        if not (keys[repeats[s : s + BLOCK_ROWS]] == keys[of[s : s + BLOCK_ROWS]]).all():
            return _distinct_sorted(keys)
    return first, repeats, of


def _distinct_sorted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`distinct_keys` of ``values`` compared as they are (equal values are one key),
    distinct values in ascending order; a stable sort makes each one's first row its smallest."""
    n = len(values)
    perm = np.argsort(values, kind="stable")
    new = np.ones(n, dtype=bool)  # where a new value starts in sorted order
    for s in range(1, n, BLOCK_ROWS):  # compared a block at a time: no sorted copy of the values
        e = min(s + BLOCK_ROWS, n)
        np.not_equal(values[perm[s:e]], values[perm[s - 1 : e - 1]], out=new[s:e])
    first = perm[new]
    if new.all():
        return first, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    again = ~new
    repeats = perm[again]
    of = first[(np.cumsum(new) - 1)[again]]  # the distinct value each repeat belongs to
    return first, repeats, of


def embed_texts(texts: Sequence[str] | pl.Series | ParquetTexts, embedder: Embedder, *, cache: EmbeddingCache | None,
                map_chunks: MapChunks, chunk_size: int = 1024,
                out: Callable[[int, int], np.ndarray] | None = None,
                lookup_batch: int | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """Embed ``texts``, reusing cached vectors; returns (X (n, d), counts).

    Only texts whose content key is not in the cache are embedded, each distinct text once.
    They are sorted by length before chunking so each forward pass pads little (the same trick
    ``SentenceTransformer.encode`` uses inside one call); ties keep the order of their keys'
    hashes (:func:`distinct_keys`), so the
    chunks, and hence the vectors of a batch-dependent model, depend only on the set of missing
    texts. A :attr:`~curation.embed.Embedder.batch_invariant` embedder (no padding) takes them
    in pool order instead, so its vectors are written to ``X`` in runs of rows. Each finished
    chunk goes to the cache at once (written by a background thread), so an interrupted run
    resumes where it stopped.

    Memory: ``X`` is created by ``out(n, d)`` (default: an in-memory array; the build passes a
    memory-mapped file), cached vectors are looked up ``lookup_batch`` (default
    :data:`BLOCK_ROWS`) keys at a time and each
    chunk's vectors are written into ``X`` as they arrive, so besides ``X`` the driver holds the
    texts' column, their keys' sha256 digests (32 bytes a text, hexed into keys a block or a
    chunk at a time) and one batch of vectors, never a second matrix.
    """
    col = texts if isinstance(texts, (pl.Series, ParquetTexts)) else pl.Series("text", list(texts), dtype=pl.String)
    if isinstance(col, ParquetTexts) and not embedder.batch_invariant:
        raise ValueError("texts read from Parquet need a batch-invariant embedder (its chunks come in row order)")
    n = len(col)
    digests = text_digests(col)
    X: np.ndarray | None = None

    def dest(dim: int) -> np.ndarray:
        nonlocal X
        if X is None:
            X = out(n, dim) if out is not None else np.zeros((n, dim), dtype=np.float32)
        return X

    found = np.zeros(n, dtype=bool)
    lookup_batch = lookup_batch or BLOCK_ROWS
    if cache is not None:
        for start in range(0, n, lookup_batch):
            hit, vecs = cache.get(hex_keys(digests[start : start + lookup_batch]))  # S64: taken as they are
            if vecs is not None:
                found[start : start + lookup_batch] = hit
                # through the file (curation.memory.write_rows): a memory-mapped X stays unmapped
                write_rows(dest(vecs.shape[1]), start + np.flatnonzero(hit), vecs)
    # a cold cache: every row is missing, and no array of their positions is made (10M: 80 MB)
    missing = None if not found.any() else np.flatnonzero(~found)
    todo = digests if missing is None else digests[missing]
    first, repeats, of = distinct_keys(todo, digest_hashes(todo))
    del todo
    # where each distinct missing text first occurs (in key-hash order), and the rows repeating one
    first_pos, repeats, of = (first, repeats, of) if missing is None else (missing[first], missing[repeats], missing[of])
    del first, missing
    if embedder.batch_invariant:
        first_pos.sort()  # pool order; each chunk a view of it
        positions = [first_pos[i : i + chunk_size] for i in range(0, len(first_pos), chunk_size)]
    else:
        lengths = col.str.len_chars().to_numpy()[first_pos]  # 4 bytes a text, not a gathered column
        order = np.argsort(-lengths, kind="stable")  # longest first; ties in key-hash order
        del lengths
        positions = [first_pos[order[i : i + chunk_size]] for i in range(0, len(order), chunk_size)]
        del order
    if positions:  # a fully cached run shows no progress bar
        writer = _BackgroundPuts(cache) if cache is not None else None
        try:
            with progress(len(first_pos), "embedding", unit="texts") as bar:
                for i, vecs in enumerate(map_chunks(TextChunks(col, positions))):
                    pos = positions[i]
                    write_rows(dest(vecs.shape[1]), pos, vecs)
                    if writer is not None:
                        writer.put(hex_keys(digests[pos]), vecs)
                    bar(len(pos))
        finally:
            if writer is not None:
                writer.close()
        if len(repeats):  # repeats of a text embedded once
            for s in range(0, len(repeats), BLOCK_ROWS):
                X[repeats[s : s + BLOCK_ROWS]] = X[of[s : s + BLOCK_ROWS]]
        release(X)
    if X is None:
        X = dest(0)
    return X, {"texts": n, "cached": int(found.sum()), "embedded": len(first_pos)}


def embed_tabular(items: pl.DataFrame, features: Sequence[str], *,
                  also: pl.DataFrame | None = None) -> tuple[np.ndarray, str]:
    """Feature-encode tabular items; returns (X, encoder id).

    The encoder is fitted on ``items`` only; rows of ``also`` (a held-out set) are encoded with
    it and appended below the items' rows.
    """
    enc = TabularEncoder(features).fit(items)
    X = enc.transform(items)
    if also is not None:
        X = np.concatenate([X, enc.transform(also)])
    return X, enc.id


# --------------------------------------------------------------------------------------- cluster
def cluster(X: np.ndarray, recipe: Recipe, rng: np.random.Generator,
            map_fn: Callable | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """faiss k-means labels for every row plus facts for the manifest (k, sizes, silhouette);
    ``map_fn`` spreads the assignment's row blocks (:meth:`FaissKMeans.assign`)."""
    cfg = recipe.cluster
    spherical = cfg.spherical if cfg.spherical is not None else (recipe.is_text and recipe.embed.normalize)
    metric = "cosine" if spherical else "euclidean"
    facts: dict[str, Any] = {}
    k = cfg.k
    if k == "auto":
        with progress(len(cfg.k_grid), "choosing k by silhouette", unit="k"):
            k, scores = choose_k(X, cfg.k_grid, rng=rng, spherical=spherical, sample=cfg.silhouette_sample)
        facts["silhouette_by_k"] = {str(kk): s for kk, s in scores.items()}
    km = FaissKMeans(k, niter=cfg.niter, spherical=spherical, max_points_per_centroid=cfg.max_points_per_centroid)
    with progress(len(X), f"clustering (k={k})", unit="rows") as bar:
        km.fit(X, rng=rng, progress=bar, map_fn=map_fn)
    sizes = np.bincount(km.labels_, minlength=k)
    sil = silhouette(X, km.labels_, rng=rng, sample=cfg.silhouette_sample, metric=metric)
    return km.labels_, {"k": k, "spherical": spherical, "inertia": km.inertia_, "silhouette": sil, **facts,
                        "sizes": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())}}


# ---------------------------------------------------------------------------------------- select
def make_reference(held: pl.DataFrame, X: np.ndarray, config: HoldoutConfig | None,
                   group_names: Sequence[str] | None = None) -> Reference:
    """The reference set of a pool from its held-out rows and their embeddings.

    ``group_names``: the pool's (see :func:`pool_group_names`), to code the rows' groups.
    """
    origin = "reference"
    if config is not None:
        origin = f"held-out fraction {config.fraction}" if config.fraction is not None else f"held-out file {config.path}"
    labels = held["__label"].to_numpy() if "__label" in held.columns else None
    return Reference(ids=held["id"].to_numpy().astype(str), embeddings=np.ascontiguousarray(X, np.float32),
                     labels=labels, origin=origin, groups=None if group_names is None else
                     group_codes(held["group"].to_numpy().astype(str), group_names))


def group_codes(names: np.ndarray, group_names: Sequence[str]) -> np.ndarray:
    """Codes of ``names`` in ``group_names`` (sorted, as :func:`make_pool` makes them); −1 if absent."""
    known = np.asarray(group_names, dtype=str)
    pos = np.clip(np.searchsorted(known, names), 0, max(len(known) - 1, 0))
    return np.where(known[pos] == names, pos, -1).astype(np.int64) if len(known) else np.full(len(names), -1)


def pool_group_names(items: pl.DataFrame) -> tuple[str, ...]:
    """The group names of a pool made from ``items``, in code order."""
    return tuple(str(n) for n in np.unique(items["group"].to_numpy().astype(str)))


def make_pool(items: pl.DataFrame, X: np.ndarray, labels: np.ndarray | None, *,
              reference: Reference | None = None, values: np.ndarray | None = None,
              texts: Sequence[str] | None = None) -> Pool:
    """A Pool from items (group codes in sorted group-name order, so they are stable).

    ``texts``: the items' texts when ``items`` has no ``__text`` column (e.g. a :class:`ParquetTexts`).
    """
    # codes in the order of np.unique's sorted names (UTF-8 byte order is code point order),
    # without a Python string per row: each row's categorical code mapped through a table of the
    # few distinct names (10M rows: 0.3 s and 0.13 GB at the peak, against 1.3 s and 0.47 GB
    # for a dense rank, which sorts every row's string)
    cat = items["group"].cast(pl.Categorical)
    distinct = cat.unique()
    names = distinct.cast(pl.String)
    order = names.arg_sort().to_numpy()
    physical = distinct.to_physical().to_numpy()
    table = np.zeros(int(physical.max()) + 1 if len(physical) else 0, dtype=np.int64)
    table[physical[order]] = np.arange(len(order))
    codes = table[cat.to_physical().to_numpy()]
    names = names.gather(order)
    lab = items["__label"].to_numpy() if "__label" in items.columns else None
    if "__text" in items.columns:
        texts = items["__text"]  # Arrow strings, not a Python str per row
    # the ids stay the items' polars column (a 16-byte view a short id, shared with the frame),
    # not a numpy U array (10M ids: 0.32 GB more); the build reads them only through len and take
    return Pool(ids=items["id"], embeddings=np.ascontiguousarray(X, np.float32),
                groups=codes, group_names=tuple(names.to_list()), clusters=labels,
                labels=lab, texts=texts, reference=reference, values=values)


def select(pool: Pool, recipe: Recipe, rng: np.random.Generator) -> Selection:
    """Run the recipe's selector on the pool."""
    selector = build_selector(recipe.select.method, **recipe.select.params())
    return selector.select(pool, recipe.select.budget, rng=rng)


# -------------------------------------------------------------------------------------- assemble
def content_hashes(items: pl.DataFrame | pl.LazyFrame, batch: int | None = None) -> pl.Series:
    """``content_hash``: sha256[:16] of each row's source fields (every column but ``id`` and the
    staging columns), so "changed since the parent version" means a field of the row changed.

    Stable across library versions (hashlib over JSON, not polars' internal hash). ``items`` is
    read ``batch`` (default :data:`BLOCK_ROWS`) rows at a time (a LazyFrame over the items' Parquet file is never loaded whole).
    """
    lf = items.lazy()
    cols = [c for c in lf.collect_schema().names() if c != "id" and c not in STAGING_COLUMNS]
    n = lf.select(pl.len()).collect().item()
    batch = batch or BLOCK_ROWS
    parts = [pl.Series("content_hash", [hashlib.sha256(row_json(r).encode()).hexdigest()[:16]
                                        for r in lf.slice(start, batch).select(cols).collect().iter_rows()],
                       dtype=pl.String)
             for start in range(0, n, batch)]
    return pl.concat(parts) if parts else pl.Series("content_hash", [], dtype=pl.String)


def _take(values: Any, rows: slice | np.ndarray) -> Any:
    """``values[rows]`` for a numpy array, a polars Series, :class:`~curation.types.RowReasons`
    or a list (a list gathered by hand)."""
    if isinstance(values, (np.ndarray, pl.Series, RowReasons)) or isinstance(rows, slice):
        return values[rows]
    return [values[i] for i in rows.tolist()]


def _gather(lf: pl.LazyFrame, rows: np.ndarray) -> pl.DataFrame:
    """Rows ``rows`` (ascending positions) of ``lf`` with their position as ``__row_nr``, read
    :data:`BLOCK_ROWS` rows at a time: filtering the whole scan by position read every column of
    every row first (3M short texts: 0.12 GB more at the select stage's peak for 1,000 rows).

    Each block's rows are copied out of it (through Arrow): a filtered string column keeps
    pointing into the whole block's string buffers, so 1,000 rows spread over a 2M-row pool
    held ~0.1 GB of them (every block's texts and ids), 10M rows ~0.5 GB."""
    parts = []
    for start in range(0, len(rows) and int(rows[-1]) + 1, BLOCK_ROWS):
        lo, hi = np.searchsorted(rows, [start, start + BLOCK_ROWS])
        if hi > lo:
            part = (lf.slice(start, BLOCK_ROWS).with_row_index("__row_nr", offset=start)
                    .filter(pl.col("__row_nr").is_in(rows[lo:hi])).collect())
            copied = pl.from_arrow(part.to_arrow())
            assert isinstance(copied, pl.DataFrame)
            parts.append(copied)
    return pl.concat(parts) if parts else lf.head(0).with_row_index("__row_nr").collect()


def assemble(items: pl.DataFrame | pl.LazyFrame, skipped: pl.DataFrame, pool: Pool, selection: Selection,
             groups: Sequence[str], *, reference: pl.DataFrame | None = None, reference_from_file: bool = False,
             value_stderr: np.ndarray | None = None) -> tuple[pl.DataFrame, Iterator[pl.DataFrame]]:
    """(published rows, the report's blocks).

    Published rows are the selected items, in pick order, with all their source columns plus
    ``group``, ``cluster``, ``selected_rank`` and ``reason``. The report follows
    :data:`curation.report_schema.REPORT_SCHEMA`: one row per candidate with its ``status`` and
    ``reason_code``: pool rows (``selected``/``not_selected``, or the selector's own codes), rows
    skipped at ingestion (``skipped``, ``skipped_<ingest reason>``) and the held-out
    ``reference`` rows (``reference_file`` when ``reference_from_file``, else
    ``reference_fraction``). With data values (``pool.values``) the report has ``value`` and
    ``value_stderr`` (null where the method has no standard error).

    The report comes as blocks to write one after another (pool rows :data:`BLOCK_ROWS` at a
    time in the items' order, then the skipped rows, then the held-out rows), all with the same
    columns and each checked by :func:`validate_report`; a block is made when asked for, so the
    report is never held whole (10M rows: GBs). The blocks together are the table the pool,
    skipped and held-out rows make concatenated diagonally (missing columns null).

    Raises:
        ValueError: a report block breaks the contract (a bug: see :func:`validate_report`).
    """
    n = len(pool)
    rank = np.full(n, -1, dtype=np.int32 if n < 2**31 else np.int64)  # Int64 in the report; 4 bytes a row here
    rank[selection.indices] = np.arange(len(selection.indices))
    chosen = rank >= 0
    clusters = pool.clusters if pool.clusters is not None else np.full(n, -1)
    stderr = value_stderr if value_stderr is not None or pool.values is None else np.full(n, np.nan)
    own = {"cluster", "selected_rank", "reason", *(["score"] if selection.scores is not None else []),
           *(["value", "value_stderr"] if pool.values is not None else [])}
    extra = [c for c in selection.columns if c not in own]

    def pick(rows: slice | np.ndarray, if_chosen: str, otherwise: str) -> pl.Series:
        # one of two strings per row by a polars expression (a Python string per row took 0.9 s
        # and 0.25 GB per 3M rows)
        return pl.select(pl.when(pl.lit(pl.Series(chosen[rows]))).then(pl.lit(if_chosen))
                         .otherwise(pl.lit(otherwise))).to_series()

    def fields(rows: slice | np.ndarray) -> pl.DataFrame:
        """The selection's columns of pool rows ``rows``: cluster, selected_rank, reason, ..."""
        reasons = (_take(selection.reasons, rows) if selection.reasons is not None
                   else pick(rows, "selected", "not selected"))
        out = pl.DataFrame({
            "cluster": pl.Series(clusters[rows], dtype=pl.Int64),
            "selected_rank": pl.Series(rank[rows], dtype=pl.Int64),
            "reason": (reasons.alias("reason") if isinstance(reasons, pl.Series)
                       else pl.Series([str(r) for r in reasons], dtype=pl.String)),
        }).with_columns(pl.when(pl.col("selected_rank") >= 0).then(pl.col("selected_rank")).alias("selected_rank"))
        if selection.scores is not None:
            out = out.with_columns(pl.Series("score", _take(selection.scores, rows), dtype=pl.Float64))
        if pool.values is not None:
            out = out.with_columns(pl.Series("value", pool.values[rows], dtype=pl.Float64),
                                   pl.Series("value_stderr", stderr[rows], dtype=pl.Float64, nan_to_null=True))
        for c in extra:  # NaN in a float column means "not applicable": store null
            out = out.with_columns(pl.Series(c, _take(selection.columns[c], rows), nan_to_null=True))
        return out

    # Memory: the wide columns (texts, source fields) only for the selected rows here; the
    # report reads the items' narrow columns a block at a time
    lf = items.lazy()
    names = lf.collect_schema().names()
    picked = _gather(lf, np.flatnonzero(chosen))
    data = (pl.concat([picked.drop("__row_nr"), fields(picked["__row_nr"].to_numpy())], how="horizontal")
            .sort("selected_rank").drop([c for c in STAGING_COLUMNS if c in names]))
    front = ["id", "source", "group", "cluster", "selected_rank", "reason"]
    data = data.select(front + [c for c in data.columns if c not in front])

    narrow = list(dict.fromkeys(c for c in ("id", "source", "group", *groups, *WHERE, "__label") if c in names))
    base_cols = ["id", "source", "group", *[c for c in groups if c in names]]

    def where(frame: pl.DataFrame) -> list[pl.Expr]:
        return [location()] if where_columns(frame) else []

    def pool_block(start: int) -> pl.DataFrame:
        rows = slice(start, min(start + BLOCK_ROWS, n))
        part = lf.slice(start, rows.stop - start).collect()  # read once: narrow columns and hashes
        own_fields = fields(rows)
        full = pl.concat([part.select(narrow), own_fields], how="horizontal")
        status = pick(rows, SELECTED, NOT_SELECTED)
        codes = (pl.Series([str(c) for c in _take(selection.reason_codes, rows)], dtype=pl.String)
                 if selection.reason_codes is not None else status)
        return full.select(
            *base_cols,
            *where(full),
            *([pl.col("__label").alias("label")] if "__label" in full.columns else []),
            "cluster",
            pl.col("selected_rank").is_not_null().alias("selected"),
            "selected_rank",
            *(["score"] if "score" in full.columns else []),
            *([c for c in ("value", "value_stderr") if c in own_fields.columns]),
            *extra,
        ).with_columns(  # added here, not via ``full``, so a source column named "status" cannot collide
            content_hashes(part),
            status.alias("status"),
            codes.alias("reason_code"),
            own_fields["reason"],
        )

    def blocks() -> Iterator[pl.DataFrame]:
        first = pool_block(0)  # the first block (rows 0..BLOCK_ROWS) fixes the pool rows' columns
        rest: list[pl.DataFrame] = []
        if skipped.height:
            rest.append(skipped.select(
                *[c for c in base_cols if c in skipped.columns],
                *where(skipped),
                pl.lit(False).alias("selected"),
                pl.lit(SKIPPED).alias("status"),
                (pl.lit(skipped_code("")) + pl.col("reason")).alias("reason_code"),
                ("skipped: " + pl.col("reason")).alias("reason"),
            ))
        if reference is not None and reference.height:
            origin = pool.reference.origin if pool.reference is not None else "reference"
            rest.append(reference.select(
                *[c for c in base_cols if c in reference.columns],
                *where(reference),
                *([pl.col("__label").alias("label")] if "__label" in reference.columns and "label" in first.columns
                  else []),
                pl.lit(False).alias("selected"),
                content_hashes(reference),
                pl.lit(REFERENCE).alias("status"),
                pl.lit(reference_code(from_file=reference_from_file)).alias("reason_code"),
                pl.lit(f"reference: held out of selection ({origin})").alias("reason"),
            ))
        # every block gets the columns and types of all of them concatenated diagonally
        shape = pl.concat([first.head(0), *(r.head(0) for r in rest)], how="diagonal_relaxed")

        def fit(block: pl.DataFrame) -> pl.DataFrame:
            return validate_report(pl.concat([shape, block], how="diagonal_relaxed"))

        yield fit(first)
        for start in range(BLOCK_ROWS, n, BLOCK_ROWS):
            yield fit(pool_block(start))
        for r in rest:
            yield fit(r)

    return data, blocks()
