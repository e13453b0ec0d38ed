"""The ``curate`` Prefect flow: ingest -> embed (Ray) -> cluster -> select -> publish.

Tasks are thin adapters over :mod:`curation.pipeline` and pass file paths, not arrays. The
flow starts (or joins, via ``RAY_ADDRESS``) Ray once and runs against Prefect's temporary
local server unless ``PREFECT_API_URL`` names one. Scratch files live in
``<output.root>/.work/<run>`` and are removed at the end, success or not; a failed run
publishes nothing.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from connectors import load_connector
from curation import pipeline
from curation.embed import EmbeddingCache, make_text_embedder
from curation.publish import code_version, publish_version
from curation.recipe import Recipe
from curation.report import summarize


def preflight(recipe: Recipe) -> None:
    """Fail fast, before Prefect or Ray start: unknown connector kinds and missing inputs."""
    for src in recipe.sources:
        try:
            connector = load_connector(src.kind)
        except KeyError as exc:
            raise FileNotFoundError(f"sources[{src.name}].kind: {exc.args[0]}") from None
        connector(src).units()


def cache_dir(recipe: Recipe) -> Path:
    return Path(recipe.embed.cache_dir or Path(recipe.output.root) / ".cache" / "embeddings")


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(recipe: Recipe, work: str) -> dict[str, Any]:
    parts, inputs, unreadable = [], [], Counter()
    for src in recipe.sources:
        conn = load_connector(src.kind)(src)
        inputs.append({"source": src.name, "kind": src.kind, "units": conn.fingerprints()})
        parts.append(pipeline.read_source(conn.iter_batches(), src, recipe.groups, connector_skipped=conn.skipped))
        unreadable.update(conn.skipped)
    items, skipped = pipeline.merge_sources(parts)
    for reason, n in unreadable.items():  # lines no connector could decode: counted, no id to report
        skipped = pl.concat([skipped, pl.DataFrame({"reason": [reason] * n})], how="diagonal_relaxed")
    items.write_parquet(f"{work}/items.parquet")
    skipped.write_parquet(f"{work}/skipped.parquet")
    return {"items": f"{work}/items.parquet", "skipped": f"{work}/skipped.parquet", "inputs": inputs,
            "rows": items.height, "skipped_rows": skipped.height}


@task(name="embed", cache_policy=NO_CACHE)
def embed_task(recipe: Recipe, items_path: str, work: str) -> dict[str, Any]:
    items = pl.read_parquet(items_path)
    if recipe.is_text:
        from flows.ray_runtime import ensure_ray, plan_actors, ray_map_chunks

        cfg = recipe.embed
        embedder = make_text_embedder(cfg.model, batch_size=cfg.batch_size, normalize=cfg.normalize,
                                      max_seq_length=cfg.max_seq_length)
        placement: dict[str, int] = {}

        def on_ray(chunks: list[list[str]]):
            if not chunks:  # everything was cached: don't pay for starting Ray
                return
            cpus = int(ensure_ray().get("CPU", 1))
            actors, threads = plan_actors(cpus, cfg.actors, cfg.threads_per_actor)
            placement.update(ray_actors=actors, threads_per_actor=threads)
            yield from ray_map_chunks(embedder, chunks, actors=actors, threads=threads)

        X, counts = pipeline.embed_texts(items["__text"].to_list(), embedder,
                                         cache=EmbeddingCache(cache_dir(recipe), embedder.id),
                                         map_chunks=on_ray, chunk_size=cfg.chunk_size)
        info = {"embedder": embedder.id, **counts, **placement}
    else:
        features = recipe.sources[0].features or []
        X, enc_id = pipeline.embed_tabular(items, features)
        info = {"embedder": enc_id, "texts": 0, "cached": 0, "embedded": len(X)}
    np.save(f"{work}/embeddings.npy", X)
    return {"embeddings": f"{work}/embeddings.npy", "dim": int(X.shape[1]), **info}


@task(name="cluster", cache_policy=NO_CACHE)
def cluster_task(recipe: Recipe, embeddings_path: str, work: str) -> dict[str, Any]:
    X = np.load(embeddings_path)
    labels, info = pipeline.cluster(X, recipe, pipeline.stage_seeds(recipe.seed)["cluster"])
    np.save(f"{work}/clusters.npy", labels)
    return {"clusters": f"{work}/clusters.npy", **info}


@task(name="select", cache_policy=NO_CACHE)
def select_task(recipe: Recipe, items_path: str, embeddings_path: str, clusters_path: str, work: str) -> dict[str, Any]:
    items = pl.read_parquet(items_path)
    pool = pipeline.make_pool(items, np.load(embeddings_path), np.load(clusters_path))
    selection = pipeline.select(pool, recipe, pipeline.stage_seeds(recipe.seed)["select"])
    data, report = pipeline.assemble(items, pl.read_parquet(f"{work}/skipped.parquet"), pool, selection, recipe.groups)
    data.write_parquet(f"{work}/data.parquet")
    report.write_parquet(f"{work}/report.parquet")
    return {"data": f"{work}/data.parquet", "report": f"{work}/report.parquet", "info": selection.info}


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(recipe: Recipe, selected: dict[str, Any], facts: dict[str, Any]) -> str:
    data = pl.read_parquet(selected["data"])
    report = pl.read_parquet(selected["report"])
    manifest = {
        "name": recipe.name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recipe": json.loads(recipe.canonical_json()),
        "recipe_sha256": recipe.sha256(),
        "seed": recipe.seed,
        "code_version": code_version(),
        **facts,
        "counts": {"candidates": report.height, "pool": int(report["cluster"].is_not_null().sum()),
                   "selected": data.height, "skipped": int(report["cluster"].is_null().sum())},
        "selection": selected["info"],
        "summary": summarize(report, budget=recipe.select.budget, k=facts["clustering"]["k"],
                             silhouette=facts["clustering"].get("silhouette")),
    }
    out = publish_version(Path(recipe.output.root) / recipe.name, data, report, manifest,
                          rows_per_shard=recipe.output.rows_per_shard)
    return str(out)


@flow(name="curate", log_prints=False, validate_parameters=False)
def curate(recipe: Recipe) -> str:
    """Build one version of ``recipe.name``; returns the published version directory."""
    work = Path(recipe.output.root) / ".work" / uuid.uuid4().hex
    work.mkdir(parents=True)
    timings: dict[str, float] = {}

    def timed(stage: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        timings[stage] = round(time.perf_counter() - t0, 3)
        return out

    try:
        ingested = timed("ingest", ingest_task, recipe, str(work))
        embedded = timed("embed", embed_task, recipe, ingested["items"], str(work))
        clustered = timed("cluster", cluster_task, recipe, embedded["embeddings"], str(work))
        selected = timed("select", select_task, recipe, ingested["items"], embedded["embeddings"],
                         clustered["clusters"], str(work))
        facts = {
            "inputs": ingested["inputs"],
            "embedding": {k: v for k, v in embedded.items() if k != "embeddings"},
            "clustering": {k: v for k, v in clustered.items() if k != "clusters"},
            "timings": timings,
        }
        return publish_task(recipe, selected, facts)  # its own time is not in the manifest it writes
    finally:
        shutil.rmtree(work, ignore_errors=True)
