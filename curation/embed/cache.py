"""On-disk embedding cache keyed by (content hash, embedder id).

Layout: ``<root>/<sha of embedder id>/part-<sha of keys>.parquet`` with columns ``key``
(sha256 of the text) and ``vector`` (fixed-size list of float32), plus ``embedder.txt``
holding the full id. Parts are written to a temporary name and renamed, so a crash never
leaves a half-written part (the temporary files of a killed build are removed by the next);
concurrent writers of the same keys write identical files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.stages import remove_stale_tmp, tmp_name


def content_key(text: str) -> str:
    """sha256 of the UTF-8 text (the cache key; independent of ids and sources)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Vectors of one embedder, looked up by content key."""

    def __init__(self, root: str | os.PathLike, embedder_id: str) -> None:
        self.embedder_id = embedder_id
        self.dir = Path(root) / hashlib.sha256(embedder_id.encode()).hexdigest()[:24]
        remove_stale_tmp(self.dir)  # parts a killed build was writing

    def get(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Look up ``keys``; returns (found mask (n,), vectors (n_found, d) in key order).

        Repeated keys are all found (the same text appearing twice in a pool).
        """
        keys = np.asarray(keys, dtype=object)
        found = np.zeros(len(keys), dtype=bool)
        parts = sorted(self.dir.glob("part-*.parquet")) if self.dir.is_dir() else []
        if not parts or not len(keys):
            return found, None
        uniq, inverse = np.unique(keys.astype(str), return_inverse=True)
        pos = {k: i for i, k in enumerate(uniq)}
        vectors: np.ndarray | None = None
        have = np.zeros(len(uniq), dtype=bool)
        for part in parts:
            table = pq.read_table(part)
            rows = [(j, pos[k]) for j, k in enumerate(table.column("key").to_pylist()) if k in pos]
            if not rows:
                continue
            vec = table.column("vector").combine_chunks()
            flat = vec.values.to_numpy(zero_copy_only=False).reshape(-1, vec.type.list_size)
            if vectors is None:
                vectors = np.zeros((len(uniq), flat.shape[1]), dtype=np.float32)
            src, dst = np.array(rows).T
            vectors[dst] = flat[src]
            have[dst] = True
        if vectors is None:
            return found, None
        found = have[inverse]
        return found, np.ascontiguousarray(vectors[inverse[found]])

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors`` (row-aligned with ``keys``) as one new part."""
        if not len(keys):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "embedder.txt").write_text(self.embedder_id + "\n")
        flat = pa.array(vectors.reshape(-1))
        table = pa.table({
            "key": pa.array(list(keys), pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        })
        digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24]
        final = self.dir / f"part-{digest}.parquet"
        tmp = self.dir / f"{tmp_name()}.parquet"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, final)

    def __len__(self) -> int:
        if not self.dir.is_dir():
            return 0
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self.dir.glob("part-*.parquet"))
