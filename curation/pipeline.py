"""The work inside a build's stages, as plain functions: read, embed, cluster, select, assemble.

:mod:`curation.builder` runs these as resumable stages; they know nothing of the stage store,
Prefect or Ray (parallelism comes in as ``map_chunks``).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from curation.cluster import FaissKMeans, choose_k, silhouette
from curation.embed import Embedder, EmbeddingCache, TabularEncoder, content_key
from curation.exceptions import DataError
from curation.ingest import LOCATION, SchemaGuard, combine, normalize_batch, union_sources
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
from curation.types import Pool, Reference, Selection

STAGING_COLUMNS = ("__text", "__label", LOCATION)
MapChunks = Callable[[list[list[str]]], Iterator[np.ndarray]]


# ---------------------------------------------------------------------------------------- ingest
def read_source(batches: Iterable[pa.Table], source: SourceConfig, groups: Sequence[str],
                *, connector_skipped: Counter | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Normalise every batch of one source (see :mod:`curation.ingest`).

    Raises:
        DataError: the source yields no rows, or no usable row.
    """
    parts = []
    total = 0
    guard = SchemaGuard(source)
    with progress(0, f"reading {source.name}", unit="rows") as bar:
        for table in batches:
            total += table.num_rows
            parts.append(normalize_batch(table, source, groups, guard))
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


# ----------------------------------------------------------------------------------------- embed
def serial_map(embedder: Embedder) -> MapChunks:
    """The in-process ``map_chunks``: embed chunk after chunk."""
    def run(chunks: list[list[str]]) -> Iterator[np.ndarray]:
        for chunk in chunks:
            yield embedder.embed(chunk)
    return run


def embed_texts(texts: Sequence[str], embedder: Embedder, *, cache: EmbeddingCache | None,
                map_chunks: MapChunks, chunk_size: int = 1024) -> tuple[np.ndarray, dict[str, int]]:
    """Embed ``texts``, reusing cached vectors; returns (X (n, d), counts).

    Only texts whose content key is not in the cache are embedded, each distinct text once.
    They are sorted by length before chunking so each forward pass pads little (the same trick
    ``SentenceTransformer.encode`` uses inside one call). Each finished chunk goes to the cache
    at once, so an interrupted run resumes where it stopped.
    """
    keys = np.array([content_key(t) for t in texts], dtype=object)
    found, cached = cache.get(keys) if cache is not None else (np.zeros(len(keys), bool), None)
    missing_keys, first = np.unique(keys[~found], return_index=True)
    missing_pos = np.flatnonzero(~found)[first]
    order = sorted(range(len(missing_pos)), key=lambda i: -len(texts[missing_pos[i]]))
    chunks_idx = [order[i : i + chunk_size] for i in range(0, len(order), chunk_size)]
    chunks = [[texts[missing_pos[i]] for i in c] for c in chunks_idx]
    new: dict[str, np.ndarray] = {}
    if chunks:  # a fully cached run shows no progress bar
        with progress(len(missing_pos), "embedding", unit="texts") as bar:
            for idx, vecs in zip(chunks_idx, map_chunks(chunks)):
                ks = [missing_keys[i] for i in idx]
                new.update(zip(ks, vecs))
                if cache is not None:
                    cache.put(ks, vecs)
                bar(len(idx))
    dim = cached.shape[1] if cached is not None else (next(iter(new.values())).shape[0] if new else 0)
    X = np.zeros((len(texts), dim), dtype=np.float32)
    if cached is not None:
        X[found] = cached
    for i in np.flatnonzero(~found):
        X[i] = new[keys[i]]
    return X, {"texts": len(texts), "cached": int(found.sum()), "embedded": len(missing_pos)}


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
def cluster(X: np.ndarray, recipe: Recipe, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """faiss k-means labels for every row plus facts for the manifest (k, sizes, silhouette)."""
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
        km.fit(X, rng=rng, progress=bar)
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
              reference: Reference | None = None, values: np.ndarray | None = None) -> Pool:
    """A Pool from items (group codes in sorted group-name order, so they are stable)."""
    names, codes = np.unique(items["group"].to_numpy().astype(str), return_inverse=True)
    lab = items["__label"].to_numpy() if "__label" in items.columns else None
    texts = np.array(items["__text"].to_list(), dtype=object) if "__text" in items.columns else None
    return Pool(ids=items["id"].to_numpy().astype(str), embeddings=np.ascontiguousarray(X, np.float32),
                groups=codes.astype(np.int64), group_names=tuple(str(n) for n in names), clusters=labels,
                labels=lab, texts=texts, reference=reference, values=values)


def select(pool: Pool, recipe: Recipe, rng: np.random.Generator) -> Selection:
    """Run the recipe's selector on the pool."""
    selector = build_selector(recipe.select.method, **recipe.select.params())
    return selector.select(pool, recipe.select.budget, rng=rng)


# -------------------------------------------------------------------------------------- assemble
def content_hashes(items: pl.DataFrame) -> pl.Series:
    """``content_hash``: sha256[:16] of each row's source fields (every column but ``id`` and the
    staging columns), so "changed since the parent version" means a field of the row changed.

    Stable across library versions (hashlib over JSON, not polars' internal hash).
    """
    cols = [c for c in items.columns if c != "id" and c not in STAGING_COLUMNS]
    rows = items.select(cols).rows()
    return pl.Series("content_hash", [hashlib.sha256(json.dumps(r, default=str).encode()).hexdigest()[:16]
                                      for r in rows], dtype=pl.String)


def assemble(items: pl.DataFrame, skipped: pl.DataFrame, pool: Pool, selection: Selection,
             groups: Sequence[str], *, reference: pl.DataFrame | None = None, reference_from_file: bool = False,
             value_stderr: np.ndarray | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(published rows, report rows).

    Published rows are the selected items, in pick order, with all their source columns plus
    ``group``, ``cluster``, ``selected_rank`` and ``reason``. The report follows
    :data:`curation.report_schema.REPORT_SCHEMA` (checked before it is returned): one row per
    candidate with its ``status`` and ``reason_code``: pool rows (``selected``/``not_selected``,
    or the selector's own codes), rows skipped at ingestion (``skipped``,
    ``skipped_<ingest reason>``) and the held-out ``reference`` rows (``reference_file`` when
    ``reference_from_file``, else ``reference_fraction``). With data values (``pool.values``)
    the report has ``value`` and ``value_stderr`` (null where the method has no standard error).

    Raises:
        ValueError: the report breaks the contract (a bug: see :func:`validate_report`).
    """
    n = len(pool)
    rank = np.full(n, -1, dtype=np.int64)
    rank[selection.indices] = np.arange(len(selection.indices))
    chosen = rank >= 0
    reasons = selection.reasons if selection.reasons is not None else np.where(chosen, "selected", "not selected")
    codes = (selection.reason_codes if selection.reason_codes is not None
             else np.where(chosen, SELECTED, NOT_SELECTED))
    clusters = pool.clusters if pool.clusters is not None else np.full(n, -1)
    fields = pl.DataFrame({
        "cluster": pl.Series(clusters, dtype=pl.Int64),
        "selected_rank": pl.Series(rank, dtype=pl.Int64),
        "reason": pl.Series([str(r) for r in reasons], dtype=pl.String),
    }).with_columns(pl.when(pl.col("selected_rank") >= 0).then(pl.col("selected_rank")).alias("selected_rank"))
    if selection.scores is not None:
        fields = fields.with_columns(pl.Series("score", selection.scores, dtype=pl.Float64))
    if pool.values is not None:
        stderr = value_stderr if value_stderr is not None else np.full(n, np.nan)
        fields = fields.with_columns(pl.Series("value", pool.values, dtype=pl.Float64),
                                     pl.Series("value_stderr", stderr, dtype=pl.Float64, nan_to_null=True))
    extra = [c for c in selection.columns if c not in fields.columns]
    for c in extra:  # NaN in a float column means "not applicable": store null
        fields = fields.with_columns(pl.Series(c, selection.columns[c], nan_to_null=True))
    full = pl.concat([items, fields], how="horizontal")
    data = (full.filter(pl.col("selected_rank").is_not_null()).sort("selected_rank")
            .drop([c for c in STAGING_COLUMNS if c in full.columns]))
    front = ["id", "source", "group", "cluster", "selected_rank", "reason"]
    data = data.select(front + [c for c in data.columns if c not in front])

    base_cols = ["id", "source", "group", *[c for c in groups if c in full.columns]]
    where = [pl.col(LOCATION).alias("location")]
    report = full.select(
        *base_cols,
        *(where if LOCATION in full.columns else []),
        *([pl.col("__label").alias("label")] if "__label" in full.columns else []),
        "cluster",
        pl.col("selected_rank").is_not_null().alias("selected"),
        "selected_rank",
        *(["score"] if "score" in full.columns else []),
        *([c for c in ("value", "value_stderr") if c in fields.columns]),
        *extra,
    ).with_columns(  # added here, not via ``full``, so a source column named "status" cannot collide
        content_hashes(items),
        pl.Series("status", np.where(chosen, SELECTED, NOT_SELECTED), dtype=pl.String),
        pl.Series("reason_code", [str(c) for c in codes], dtype=pl.String),
        fields["reason"],
    )
    if skipped.height:
        sk = skipped.select(
            *[c for c in base_cols if c in skipped.columns],
            *(where if LOCATION in skipped.columns else []),
            pl.lit(False).alias("selected"),
            pl.lit(SKIPPED).alias("status"),
            (pl.lit(skipped_code("")) + pl.col("reason")).alias("reason_code"),
            ("skipped: " + pl.col("reason")).alias("reason"),
        )
        report = pl.concat([report, sk], how="diagonal_relaxed")
    if reference is not None and reference.height:
        origin = pool.reference.origin if pool.reference is not None else "reference"
        ref = reference.select(
            *[c for c in base_cols if c in reference.columns],
            *(where if LOCATION in reference.columns else []),
            *([pl.col("__label").alias("label")] if "__label" in reference.columns and "label" in report.columns else []),
            pl.lit(False).alias("selected"),
            content_hashes(reference),
            pl.lit(REFERENCE).alias("status"),
            pl.lit(reference_code(from_file=reference_from_file)).alias("reason_code"),
            pl.lit(f"reference: held out of selection ({origin})").alias("reason"),
        )
        report = pl.concat([report, ref], how="diagonal_relaxed")
    return data, validate_report(report)
