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
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from connectors import load_connector
from curation import holdout, pipeline
from curation.embed import EmbeddingCache, make_text_embedder
from curation.progress import progress
from curation.publish import code_version, publish_version
from curation.recipe import Recipe, SourceConfig
from curation.report import REFERENCE_REASON, summarize


def preflight(recipe: Recipe) -> None:
    """Fail fast, before Prefect or Ray start: unknown connector kinds and missing inputs."""
    for src in recipe.sources:
        try:
            connector = load_connector(src.kind)
        except KeyError as exc:
            raise FileNotFoundError(f"sources[{src.name}].kind: {exc.args[0]}") from None
        connector(src).units()
    if recipe.holdout is not None and recipe.holdout.path is not None:
        src = reference_source(recipe)
        load_connector(src.kind)(src).units()


def reference_source(recipe: Recipe) -> SourceConfig:
    """The held-out file (``reference.path`` or ``value.validation.path``) read with the first source's columns."""
    ref = recipe.holdout
    return recipe.sources[0].model_copy(update={"name": "reference", "path": ref.path, "format": ref.format,
                                                "limit": None})


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
    out = {"items": f"{work}/items.parquet", "skipped": f"{work}/skipped.parquet", "inputs": inputs}
    ref = recipe.holdout
    if ref is not None:
        if ref.fraction is not None:
            items, held = holdout.split_fraction(items, ref.fraction, rng=pipeline.stage_seeds(recipe.seed)["holdout"])
        else:
            src = reference_source(recipe)
            conn = load_connector(src.kind)(src)
            inputs.append({"source": "reference", "kind": src.kind, "units": conn.fingerprints()})
            held, _ = pipeline.read_source(conn.iter_batches(), src, recipe.groups, connector_skipped=conn.skipped)
            if src.id is None:  # content-hash ids: the same id is the same text
                items, dropped = holdout.drop_overlap(items, held)
                skipped = pl.concat([skipped, dropped], how="diagonal_relaxed")
        held.write_parquet(f"{work}/reference.parquet")
        out["reference"] = f"{work}/reference.parquet"
    items.write_parquet(out["items"])
    skipped.write_parquet(out["skipped"])
    return {**out, "rows": items.height, "skipped_rows": skipped.height}


@task(name="embed", cache_policy=NO_CACHE)
def embed_task(recipe: Recipe, items_path: str, work: str, reference_path: str | None = None) -> dict[str, Any]:
    items = pl.read_parquet(items_path)
    held = pl.read_parquet(reference_path) if reference_path else None
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

        texts = items["__text"].to_list() + (held["__text"].to_list() if held is not None else [])
        X, counts = pipeline.embed_texts(texts, embedder,
                                         cache=EmbeddingCache(cache_dir(recipe), embedder.id),
                                         map_chunks=on_ray, chunk_size=cfg.chunk_size)
        info = {"embedder": embedder.id, **counts, **placement}
    else:
        features = recipe.sources[0].features or []
        X, enc_id = pipeline.embed_tabular(items, features, also=held)
        info = {"embedder": enc_id, "texts": 0, "cached": 0, "embedded": len(X)}
    out = {"embeddings": f"{work}/embeddings.npy"}
    if held is not None:  # the reference rows were embedded after the pool's, with the same model
        np.save(f"{work}/reference_embeddings.npy", X[items.height:])
        out["reference_embeddings"] = f"{work}/reference_embeddings.npy"
    np.save(out["embeddings"], X[: items.height])
    return {**out, "dim": int(X.shape[1]), **info}


@task(name="cluster", cache_policy=NO_CACHE)
def cluster_task(recipe: Recipe, embeddings_path: str, work: str) -> dict[str, Any]:
    X = np.load(embeddings_path)
    labels, info = pipeline.cluster(X, recipe, pipeline.stage_seeds(recipe.seed)["cluster"])
    np.save(f"{work}/clusters.npy", labels)
    return {"clusters": f"{work}/clusters.npy", **info}


@task(name="value", cache_policy=NO_CACHE)
def value_task(recipe: Recipe, ingested: dict[str, Any], embedded: dict[str, Any], work: str) -> dict[str, Any]:
    """Data values of every pool row against the held-out set; the work runs as Ray tasks."""
    from curation.value.pool import value_pool
    from flows.ray_runtime import ensure_ray, ray_map

    items = pl.read_parquet(ingested["items"])
    held = pl.read_parquet(ingested["reference"])
    pool = pipeline.make_pool(items, np.load(embedded["embeddings"]), None,
                              reference=pipeline.make_reference(held, np.load(embedded["reference_embeddings"]),
                                                                recipe.holdout))
    n_jobs = int(ensure_ray().get("CPU", 1))
    with progress(0, f"valuing {len(pool)} items ({recipe.value.method})", unit="Ray tasks done") as bar:
        res = value_pool(pool, recipe.value, rng=pipeline.stage_seeds(recipe.seed)["value"],
                         map_fn=partial(ray_map, on_done=bar), n_jobs=n_jobs)
    np.save(f"{work}/values.npy", np.stack([res.values, res.stderr]))
    return {"values": f"{work}/values.npy", "method": res.method,
            "info": {k: v for k, v in res.info.items() if isinstance(v, (int, float, str, bool, dict, type(None)))}}


@task(name="select", cache_policy=NO_CACHE)
def select_task(recipe: Recipe, ingested: dict[str, Any], embedded: dict[str, Any], clusters_path: str,
                work: str, valued: dict[str, Any] | None = None) -> dict[str, Any]:
    items = pl.read_parquet(ingested["items"])
    held = pl.read_parquet(ingested["reference"]) if "reference" in ingested else None
    reference = (pipeline.make_reference(held, np.load(embedded["reference_embeddings"]), recipe.holdout,
                                         pipeline.pool_group_names(items)) if held is not None else None)
    values = np.load(valued["values"]) if valued else None
    pool = pipeline.make_pool(items, np.load(embedded["embeddings"]), np.load(clusters_path), reference=reference,
                              values=None if values is None else values[0])
    selection = pipeline.select(pool, recipe, pipeline.stage_seeds(recipe.seed)["select"])
    data, report = pipeline.assemble(items, pl.read_parquet(ingested["skipped"]), pool, selection, recipe.groups,
                                     reference=held, value_stderr=None if values is None else values[1])
    data.write_parquet(f"{work}/data.parquet")
    report.write_parquet(f"{work}/report.parquet")
    return {"data": f"{work}/data.parquet", "report": f"{work}/report.parquet", "info": selection.info}


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(recipe: Recipe, selected: dict[str, Any], facts: dict[str, Any]) -> str:
    data = pl.read_parquet(selected["data"])
    report = pl.read_parquet(selected["report"])
    is_ref = report["reason"].str.starts_with(REFERENCE_REASON)
    manifest = {
        "name": recipe.name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recipe": json.loads(recipe.canonical_json()),
        "recipe_sha256": recipe.sha256(),
        "seed": recipe.seed,
        "code_version": code_version(),
        **facts,
        "counts": {"candidates": report.height, "pool": int(report["cluster"].is_not_null().sum()),
                   "selected": data.height, "reference": int(is_ref.sum()),
                   "skipped": int((report["cluster"].is_null() & ~is_ref).sum())},
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
        embedded = timed("embed", embed_task, recipe, ingested["items"], str(work), ingested.get("reference"))
        clustered = timed("cluster", cluster_task, recipe, embedded["embeddings"], str(work))
        valued = timed("value", value_task, recipe, ingested, embedded, str(work)) if recipe.value else None
        selected = timed("select", select_task, recipe, ingested, embedded, clustered["clusters"], str(work), valued)
        facts = {
            "inputs": ingested["inputs"],
            "embedding": {k: v for k, v in embedded.items() if not k.endswith("embeddings")},
            "clustering": {k: v for k, v in clustered.items() if k != "clusters"},
            "timings": timings,
        }
        if valued:
            facts["valuation"] = {"method": valued["method"], **valued["info"]}
        return publish_task(recipe, selected, facts)  # its own time is not in the manifest it writes
    finally:
        shutil.rmtree(work, ignore_errors=True)
