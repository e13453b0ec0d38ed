"""The build: a recipe's stages run in order, each resumable, then one published version.

``curation.build(recipe)`` is the whole build in this process, with no Prefect and no Ray::

    import curation
    v = curation.build("examples/instructions.yaml")      # a path, a mapping or a Recipe
    v.path                                                 # out/instruction-mix/v0003
    v.data().head()                                        # the published rows (polars)

Stages, in order (the value stage only with a recipe ``value:`` section)::

    ingest -> embed -> cluster -> value -> select -> publish

Each stage is a method of :class:`Builder` from the records of the stages it reads to its own
record (:class:`Ingested`, :class:`Embedded`, :class:`Clustered`, :class:`Valued`,
:class:`Selected`). Its output lives in the content-addressed stage store
(:mod:`curation.stages`) under a key made of the stage's name and version, the recipe values
it reads (listed per stage in :data:`STAGE_READS`) and the keys of its inputs; a stage whose
key is already in the store is reused, not run. So a rerun after a crash resumes after the
last finished stage, and a recipe that changes only ``select`` re-selects from the cached
clusters. Publishing always writes a new version: it is the build's product, not a cache.

The same inputs, recipe and seed give byte-identical shards whichever way the stages ran
(serially here, on Ray from ``flows/``) and whether they were computed or reused: each stage
draws from its own child stream of the recipe's seed (:func:`curation.random.spawn`), so no
stage's randomness depends on another having run in this process.

Parallel work is passed in, never imported: ``map_chunks(embedder, chunks)`` embeds chunks of
texts (``flows/`` passes Ray actors) and ``map_fn(func, args)`` runs the valuation's
independent pieces (``flows/`` passes Ray tasks). See docs/architecture.md#the-build.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    wait_chain,
    wait_exponential,
    wait_fixed,
)

from curation import holdout, pipeline
from curation.embed import Embedder, EmbeddingCache, make_text_embedder
from curation.exceptions import SourceReadError
from curation.ingest import ROW_COL, UNIT_COL, restore_texts
from curation.memory import peak_rss_bytes, reset_peak_rss, trim_heap
from curation.metrics import projection_2d, selection_metrics
from curation.progress import progress
from curation.publish import code_version, dataset_lock, latest_version, publish_version, write_parquet
from curation.random import spawn
from curation.recipe import KIND_FIELDS, Recipe, SourceConfig, load_recipe
from curation.report import label_balance, summarize, version_delta
from curation.report_schema import status_counts
from curation.secrets import redact, redact_obj
from curation.stages import StageRun, StageStore, stage_key
from curation.types import Pool
from curation.version import __version__

log = logging.getLogger("curation.builder")

MapChunks = Callable[[Embedder, list[list[str]]], Iterator[np.ndarray]]
MapFn = Callable[..., list[Any]]

#: Bump a stage's version when its code changes what it writes: older entries are then not reused.
STAGE_VERSIONS = {"ingest": 2, "embed": 2, "cluster": 1, "value": 1, "select": 2}
# ingest 2: the location as categorical unit + row, the text only in __text; embed 2: one
# memory-mapped embeddings.npy (pool rows, then held-out rows); select 2: report status/reason_code

#: What each stage reads from the recipe (besides its input stages); exactly these go into its key.
STAGE_READS = {
    "ingest": "sources, groups, the held-out set (reference or value.validation), seed when a fraction is held out; "
              "the content (sha256) of every input file",
    "embed": "the text embedder's id (model content hash, max_seq_length, normalize) or the feature columns",
    "cluster": "cluster, seed, whether vectors are spherical",
    "value": "value (without validation), seed",
    "select": "select, groups, seed",
}

# Child streams of the recipe seed, by position: adding a stream at the end keeps the others.
_STREAMS = ("cluster", "select", "holdout", "value", "metrics")


def serial_chunks(embedder: Embedder, chunks: list[list[str]]) -> Iterator[np.ndarray]:
    """The in-process ``map_chunks`` (:func:`curation.pipeline.serial_map`)."""
    return pipeline.serial_map(embedder)(chunks)


def serial_map(func: Callable[[Any], Any], args: list[Any]) -> list[Any]:
    """The in-process ``map_fn``: ``[func(a) for a in args]``."""
    return [func(a) for a in args]


def stage_rng(seed: int, stage: str) -> np.random.Generator:
    """A fresh generator of ``stage``'s child stream of the root ``seed``."""
    return spawn(seed, len(_STREAMS))[_STREAMS.index(stage)]


# ------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class StageOutput:
    """A finished stage: its key, its directory in the store, and its facts (``record.json``)."""

    key: str
    dir: Path
    reused: bool
    seconds: float
    facts: dict[str, Any] = field(default_factory=dict)
    #: the building process's peak resident set while the stage ran (bytes; None: reused, or
    #: not measurable here). Work on Ray runs in other processes and is not in it.
    peak_rss: int | None = None

    @classmethod
    def of(cls, run: StageRun):
        return cls(key=run.key, dir=run.dir, reused=run.reused, seconds=run.seconds, facts=run.record)


class Ingested(StageOutput):
    """Normalised items (``items.parquet``), skipped rows, and the held-out rows if any."""

    def items(self, columns: list[str] | None = None) -> pl.DataFrame:
        """The items (only ``columns``, when given: a stage reads what it needs)."""
        return pl.read_parquet(self.dir / "items.parquet", columns=columns)

    def skipped(self) -> pl.DataFrame:
        return pl.read_parquet(self.dir / "skipped.parquet")

    def reference(self, columns: list[str] | None = None) -> pl.DataFrame | None:
        p = self.dir / "reference.parquet"
        return pl.read_parquet(p, columns=columns) if p.is_file() else None

    def texts(self, *, streamed: bool) -> pl.Series | pipeline.ParquetTexts:
        """The pool's texts, then the held-out rows'. ``streamed``: read from the stage files a
        row group at a time as they are asked for (:class:`pipeline.ParquetTexts`: for an
        embedder whose chunks come in row order), else read whole."""
        held = self.dir / "reference.parquet"
        files = [self.dir / "items.parquet", *([held] if held.is_file() else [])]
        if streamed:
            return pipeline.ParquetTexts(files, "__text")
        return pl.concat([pl.read_parquet(f, columns=["__text"])["__text"] for f in files])


class Embedded(StageOutput):
    """One vector per pool row, then one per held-out row, in ``embeddings.npy`` (read
    memory-mapped, so a stage reading the vectors pages in what it touches, not a copy)."""

    def _all(self) -> np.ndarray:
        return np.load(self.dir / "embeddings.npy", mmap_mode="r")

    def vectors(self) -> np.ndarray:
        return self._all()[: self.facts["rows"]]

    def reference_vectors(self) -> np.ndarray | None:
        X = self._all()
        return X[self.facts["rows"]:] if len(X) > self.facts["rows"] else None


class Clustered(StageOutput):
    """One cluster label per pool row (``clusters.npy``)."""

    def labels(self) -> np.ndarray:
        return np.load(self.dir / "clusters.npy")


class Valued(StageOutput):
    """One data value and standard error (NaN: none) per pool row (``values.npy``)."""

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        v = np.load(self.dir / "values.npy")
        return v[0], v[1]


class Selected(StageOutput):
    """The rows to publish (``data.parquet``) and the report (``report.parquet``)."""

    def data(self) -> pl.DataFrame:
        return pl.read_parquet(self.dir / "data.parquet")

    def report(self) -> pl.DataFrame:
        return pl.read_parquet(self.dir / "report.parquet")


@dataclass(frozen=True)
class Version:
    """A published version: ``path`` is its directory, ``manifest`` its manifest.

    ``published`` is False when the build published nothing because the recipe and the inputs
    equal those of this (the latest) version (see :meth:`Builder.unchanged_since`).
    """

    path: Path
    manifest: dict[str, Any]
    published: bool = True

    @property
    def name(self) -> str:
        return self.path.name

    def data(self) -> pl.DataFrame:
        return pl.read_parquet(self.path / "data" / "*.parquet")

    def report(self) -> pl.DataFrame:
        return pl.read_parquet(self.path / "report.parquet")

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


# ------------------------------------------------------------------------------------ helpers
def as_recipe(recipe: Recipe | Mapping[str, Any] | str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A validated Recipe from a Recipe, a mapping (e.g. a deployment's JSON) or a YAML path."""
    if isinstance(recipe, Recipe):
        return load_recipe(recipe.model_dump(mode="json"), list(overrides)) if overrides else recipe
    return load_recipe(dict(recipe) if isinstance(recipe, Mapping) else recipe, list(overrides))


def reference_source(recipe: Recipe) -> SourceConfig:
    """The held-out file (``reference.path`` or ``value.validation.path``) read with the first source's columns."""
    ref = recipe.holdout
    first = recipe.sources[0]
    # a file read with the first source's columns, whatever kind that source is
    return first.model_copy(update={
        "name": "reference", "kind": "files", "path": ref.path, "format": ref.format, "limit": None,
        "storage_options": first.storage_options if first.kind == "files" else None,
        **{k: SourceConfig.model_fields[k].default for k in KIND_FIELDS["sql"] + ("split", "config", "options")}})


def _connector(src: SourceConfig):
    from connectors import load_connector

    return load_connector(src.kind, field=f"sources[{src.name}].kind")(src)


def text_embedder(recipe: Recipe) -> Embedder:
    """The recipe's text embedder. ``embed.device`` is passed on only when forced (``cpu`` or
    ``cuda``): ``auto`` is each embedder's own default (a transformer resolves it where it loads)."""
    cfg = recipe.embed
    given = {"device": cfg.device} if cfg.device != "auto" else {}
    if cfg.batch_size is not None:  # else each embedder's own default (a table lookup wants large batches)
        given["batch_size"] = cfg.batch_size
    return make_text_embedder(cfg.model, normalize=cfg.normalize, max_seq_length=cfg.max_seq_length, **given)


def _transient(exc: BaseException) -> bool:
    """A source error that may pass (network, storage); a missing file or a denied one will not."""
    return isinstance(exc, OSError) and not isinstance(
        exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError))


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("%s failed (%s), retrying in %.1f s", getattr(state.fn, "__name__", "a source call"),
                redact(f"{type(exc).__name__}: {exc}"), state.next_action.sleep if state.next_action else 0)


#: Seconds waited before each new try of an ingest stage whose source read failed with a
#: transient error (:class:`SourceReadError`): three retries, backing off. A bad recipe or bad
#: data is never retried. :meth:`Builder.run` and the flow's ingest task (flows/curate.py) both
#: retry this way, so a build retries the same in process and as a Prefect flow run.
INGEST_RETRY_DELAYS: tuple[float, ...] = (1.0, 3.0, 10.0)


def with_source_retries(call: Callable[[], Any], *, what: str, attempts: int = 4) -> Any:
    """``call()`` retried with exponential backoff (0.5, 1, 2 s) while it fails with a transient
    source error (:func:`_transient`); the last failure becomes one :class:`SourceReadError`
    line naming ``what``. Used for the work before a build (checks, fingerprints): reads during
    ingest are retried by whoever runs the stage, as a whole (:data:`INGEST_RETRY_DELAYS`)."""
    try:
        return Retrying(retry=retry_if_exception(_transient), stop=stop_after_attempt(attempts),
                        wait=wait_exponential(multiplier=0.5, max=8), reraise=True, before_sleep=_log_retry)(call)
    except OSError as exc:
        if not _transient(exc):
            raise
        raise SourceReadError(f"{what} failed after {attempts} attempts: "
                              f"{redact(f'{type(exc).__name__}: {exc}')}") from exc


def preflight(recipe: Recipe) -> None:
    """Fail fast, before any work: unknown connector kinds, missing inputs, an unloadable model,
    an unreachable source (after retries)."""
    if recipe.is_text:
        text_embedder(recipe).check()
    sources = list(recipe.sources)
    if recipe.holdout is not None and recipe.holdout.path is not None:
        sources.append(reference_source(recipe))
    for src in sources:
        with_source_retries(_connector(src).check, what=f"checking source {src.name!r}")


def cache_dir(recipe: Recipe) -> Path:
    """The embedding cache (per-text vectors, shared by every build under ``output.root``)."""
    return Path(recipe.embed.cache_dir or Path(recipe.output.root) / ".cache" / "embeddings")


def _dump(model) -> Any:
    return None if model is None else model.model_dump(mode="json")


def _json_facts(info: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-able part of a facts mapping (arrays and objects are the report's business)."""
    return json.loads(json.dumps({k: v for k, v in info.items()
                                  if isinstance(v, (int, float, str, bool, dict, list, type(None)))}, default=str))


# ------------------------------------------------------------------------------------ builder
class Builder:
    """Runs one recipe's stages against the stage store; see the module docstring.

    Args:
        recipe: the validated recipe.
        map_chunks: how text chunks are embedded (default: serially in this process).
        map_fn: how valuation pieces run (default: serially); ``n_jobs`` is how many run at once
            (or a function returning it, asked only when a stage has work to spread).
        map_blocks: how the pool's row blocks are spread where a stage can (k-means
            assignment); default: one after another in this process.
    """

    def __init__(self, recipe: Recipe, *, map_chunks: MapChunks | None = None, map_fn: MapFn | None = None,
                 n_jobs: int | Callable[[], int] = 1, force: bool = False, wait: bool = True,
                 map_blocks: MapFn | None = None) -> None:
        self.recipe = recipe
        self.map_chunks = map_chunks or serial_chunks
        self.map_fn = map_fn or serial_map
        self.map_blocks = map_blocks
        self.n_jobs = n_jobs
        self.force, self.wait = force, wait
        self.store = StageStore(recipe.output.root)
        self.runs: dict[str, StageOutput] = {}
        self._inputs: list[dict[str, Any]] | None = None

    @property
    def dataset_dir(self) -> Path:
        return Path(self.recipe.output.root) / self.recipe.name

    def lock(self):
        """The dataset's one-writer lock (:func:`curation.publish.dataset_lock`) for a whole build."""
        return dataset_lock(self.dataset_dir, wait=self.wait)

    def inputs(self) -> list[dict[str, Any]]:
        """Every input unit's fingerprint (path, bytes, sha256), per source and the held-out file."""
        if self._inputs is None:
            r = self.recipe
            sources = list(r.sources)
            if r.holdout is not None and r.holdout.path is not None:
                sources.append(reference_source(r))
            # redacted: a path a connector expanded from ${NAME} carries the placeholder again
            self._inputs = redact_obj(json.loads(json.dumps(
                [{"source": s.name, "kind": s.kind,
                  "units": with_source_retries(_connector(s).fingerprints, what=f"fingerprinting source {s.name!r}")}
                 for s in sources])))
        return self._inputs

    def unchanged_since(self) -> Version | None:
        """The latest version when this build would repeat it: the same resolved recipe
        (``recipe_sha256``) and the same input fingerprints. None when something changed, when
        there is no version yet, or with ``force``. Call it holding :meth:`lock`."""
        if self.force:
            return None
        latest = latest_version(self.dataset_dir)
        if latest is None:
            return None
        manifest = json.loads((self.dataset_dir / latest / "manifest.json").read_text())
        if manifest.get("recipe_sha256") != self.recipe.sha256() or manifest.get("inputs") != self.inputs():
            return None
        log.info("unchanged since %s: nothing to publish", latest)
        return Version(path=self.dataset_dir / latest, manifest=manifest, published=False)

    def _run(self, name: str, cls, sections: dict[str, Any], inputs: dict[str, StageOutput],
             produce: Callable[[Path], dict[str, Any]], *, setup_seconds: float = 0.0):
        """Run (or reuse) one stage; ``setup_seconds`` is work done to make its key (e.g. loading
        or distilling the model whose id is in it), counted in the stage's time."""
        key = stage_key(name, STAGE_VERSIONS[name], {"package": __version__, **sections},
                        {k: v.key for k, v in inputs.items()})
        log.info("%s: started (key %s)", name, key[:12])
        measured = reset_peak_rss()  # the stage's own peak, not an earlier stage's
        out = cls.of(self.store.run(name, key, produce))
        if measured and not out.reused:
            out = replace(out, peak_rss=peak_rss_bytes())
        trim_heap()  # the stage's temporaries must not count towards the next stage's peak
        if setup_seconds:
            out = replace(out, seconds=round(out.seconds + setup_seconds, 3))
        log.info("%s: %s", name, "reused from an earlier build" if out.reused else f"done in {out.seconds:.1f} s")
        self.runs[name] = out
        return out

    # -------------------------------------------------------------------------------- ingest
    def ingest(self) -> Ingested:
        """Read every source, normalise rows, drop duplicates, split off the held-out set."""
        r = self.recipe
        conns = [(src, _connector(src)) for src in r.sources]
        inputs = self.inputs()
        ref = r.holdout
        ref_conn = None
        if ref is not None and ref.path is not None:
            src = reference_source(r)
            ref_conn = (src, _connector(src))
        sections = {"sources": [_dump(s) for s in r.sources], "groups": r.groups, "holdout": _dump(ref),
                    "inputs": inputs}
        if ref is not None and ref.fraction is not None:
            sections["seed"] = r.seed

        def produce(out: Path) -> dict[str, Any]:
            parts, unreadable = [], []
            # the items go to disk batch by batch; the id rules and the held-out split work on
            # their key frames (pipeline.ItemParts), and the kept rows are written at the end
            with pipeline.ItemParts(out) as sink:
                for src, conn in conns:
                    try:
                        parts.append(pipeline.read_source(conn.iter_batches(), src, r.groups,
                                                          connector_skipped=conn.skipped, sink=sink))
                    except OSError as exc:  # network or storage trouble (ConnectionError, TimeoutError, ...)
                        if not _transient(exc):  # a file gone since the check will not come back
                            raise
                        raise SourceReadError(f"ingest: reading source {src.name!r} failed: "
                                              f"{type(exc).__name__}: {redact(str(exc))}") from exc
                    # rows no connector could decode: no id, but their source and location
                    unreadable += [{"source": src.name, "reason": s["reason"], UNIT_COL: s["unit"], ROW_COL: s["row"]}
                                   for s in conn.skipped_rows]
                keys, skipped = pipeline.merge_sources(parts)
                if unreadable:
                    skipped = pl.concat([skipped, pl.DataFrame(unreadable, schema={
                        "source": pl.String, "reason": pl.String, UNIT_COL: pl.Categorical, ROW_COL: pl.Int64})],
                        how="diagonal_relaxed")
                held = held_keys = None
                if ref is not None and ref.fraction is not None:
                    keys, held_keys = holdout.split_fraction(sink.with_columns(keys, holdout.STRATA), ref.fraction,
                                                             rng=stage_rng(r.seed, "holdout"))
                elif ref_conn is not None:
                    src, conn = ref_conn
                    held, _ = pipeline.read_source(conn.iter_batches(), src, r.groups, connector_skipped=conn.skipped)
                    if src.id is None:  # content-hash ids: the same id is the same text
                        keys, dropped = holdout.drop_overlap(keys, held)
                        skipped = pl.concat([skipped, dropped], how="diagonal_relaxed")
                skipped = sink.complete(skipped)  # a duplicate's group and location, read back
                sink.finish(out / "items.parquet", keys[pipeline.POS].to_numpy(),
                            None if held_keys is None else held_keys[pipeline.POS].to_numpy(),
                            out / "reference.parquet")
            # uncompressed and without column statistics, as ItemParts writes the items: a stage
            # file is a local cache read soon and often, never filtered by statistics, and zstd
            # would make writing it most of this stage's time (1M short texts: 0.8 s against 0.25 s)
            for table, name in ((skipped, "skipped"), (held, "reference")):
                if table is not None:
                    table.write_parquet(out / f"{name}.parquet", compression="uncompressed", statistics=False)
            rows, held_rows = keys.height, (held.height if held is not None
                                            else 0 if held_keys is None else held_keys.height)
            return {"rows": rows, "skipped_rows": skipped.height, "reference_rows": held_rows, "inputs": inputs}

        return self._run("ingest", Ingested, sections, {}, produce)

    def ingest_with_retries(self) -> Ingested:
        """:meth:`ingest`, run again after each of :data:`INGEST_RETRY_DELAYS` seconds while it
        fails with :class:`SourceReadError` (a network or storage error while reading; the
        failed try left nothing behind); the last failure is raised as it is."""
        delays = INGEST_RETRY_DELAYS
        return Retrying(retry=retry_if_exception_type(SourceReadError), stop=stop_after_attempt(len(delays) + 1),
                        wait=wait_chain(*[wait_fixed(d) for d in delays]),
                        reraise=True, before_sleep=_log_retry)(self.ingest)

    # --------------------------------------------------------------------------------- embed
    def embed(self, ingested: Ingested) -> Embedded:
        """One vector per pool row and held-out row: the text embedder, or the tabular encoder."""
        r = self.recipe
        embedder, t0 = None, time.perf_counter()
        if r.is_text:
            embedder = text_embedder(r)
            # the embedder's id names its vector space by the model's fingerprint (file names and
            # sizes; a static model's content hash): a changed model is a new key, not a stale reuse
            sections = {"embed": {"embedder": embedder.id}}
        else:
            sections = {"features": [s.features for s in r.sources]}

        def produce(out: Path) -> dict[str, Any]:
            if embedder is not None:  # the texts' column only, not every source column
                # a batch-invariant embedder takes its chunks in row order: read as they come
                texts = ingested.texts(streamed=embedder.batch_invariant)
                X, counts = pipeline.embed_texts(
                    texts, embedder, cache=EmbeddingCache(cache_dir(r), embedder.id),
                    map_chunks=lambda chunks: self.map_chunks(embedder, chunks), chunk_size=r.embed.chunk_size,
                    out=lambda n, d: np.lib.format.open_memmap(out / "embeddings.npy", "w+", np.float32, (n, d)))
                X.flush()
                placement = getattr(self.map_chunks, "placement", None) or {}
                facts = {"embedder": embedder.id, **counts, **placement}
            else:
                X, enc_id = pipeline.embed_tabular(ingested.items(), r.sources[0].features or [],
                                                   also=ingested.reference())
                np.save(out / "embeddings.npy", X)
                facts = {"embedder": enc_id, "texts": 0, "cached": 0, "embedded": len(X)}
            # the pool's rows first, then the held-out rows (embedded with the same model)
            return {"dim": int(X.shape[1]), "rows": ingested.facts["rows"], **facts}

        return self._run("embed", Embedded, sections, {"ingest": ingested}, produce,
                         setup_seconds=time.perf_counter() - t0)

    # ------------------------------------------------------------------------------- cluster
    def spherical(self) -> bool:
        cfg = self.recipe.cluster
        return cfg.spherical if cfg.spherical is not None else (self.recipe.is_text and self.recipe.embed.normalize)

    def cluster(self, embedded: Embedded) -> Clustered:
        """faiss k-means labels for every pool row (k chosen by silhouette with ``k: auto``)."""
        r = self.recipe
        sections = {"cluster": _dump(r.cluster), "seed": r.seed, "spherical": self.spherical()}

        def produce(out: Path) -> dict[str, Any]:
            labels, facts = pipeline.cluster(embedded.vectors(), r, stage_rng(r.seed, "cluster"),
                                             map_fn=self.map_blocks)
            np.save(out / "clusters.npy", labels)
            return facts

        return self._run("cluster", Clustered, sections, {"embed": embedded}, produce)

    # --------------------------------------------------------------------------------- value
    def value(self, ingested: Ingested, embedded: Embedded) -> Valued | None:
        """Data values of every pool row against the held-out set (None without ``value:``)."""
        r = self.recipe
        if r.value is None:
            return None
        sections = {"value": {k: v for k, v in _dump(r.value).items() if k != "validation"}, "seed": r.seed}

        def produce(out: Path) -> dict[str, Any]:
            from curation.value.pool import value_pool

            pool = self.pool(ingested, embedded)
            with progress(0, f"valuing {len(pool)} items ({r.value.method})", unit="tasks done") as bar:
                res = value_pool(pool, r.value, rng=stage_rng(r.seed, "value"), map_fn=_with_progress(self.map_fn, bar),
                                 n_jobs=self.n_jobs() if callable(self.n_jobs) else self.n_jobs)
            np.save(out / "values.npy", np.stack([res.values, res.stderr]))
            return {"method": res.method, **_json_facts(res.info)}

        return self._run("value", Valued, sections, {"ingest": ingested, "embed": embedded}, produce)

    # -------------------------------------------------------------------------------- select
    def text_sources(self) -> list[SourceConfig]:
        """The sources whose rows the items (and held-out rows) hold: the recipe's, and the
        held-out file's when there is one."""
        r = self.recipe
        from_file = r.holdout is not None and r.holdout.path is not None
        return [*r.sources, *([reference_source(r)] if from_file else [])]

    def pool(self, ingested: Ingested, embedded: Embedded, clustered: Clustered | None = None,
             valued: Valued | None = None, *, items: pl.DataFrame | None = None) -> Pool:
        """The selectors' view of the pool: vectors, groups, labels, clusters, values, held-out set.
        ``items``: the ingested items when the caller has read them already (read once, not twice)."""
        path = ingested.dir / "items.parquet"
        if items is None:  # the narrow columns; the texts are read only if a scorer asks for them
            names = pl.read_parquet_schema(path)
            items = pl.read_parquet(path, columns=[c for c in ("id", "group", "__label") if c in names])
        held = ingested.reference()
        reference = None
        if held is not None:
            reference = pipeline.make_reference(held, embedded.reference_vectors(), self.recipe.holdout,
                                                pipeline.pool_group_names(items))
        texts = pipeline.ParquetTexts([path], "__text") if self.recipe.is_text else None
        return pipeline.make_pool(items, embedded.vectors(), None if clustered is None else clustered.labels(),
                                  reference=reference, values=None if valued is None else valued.values()[0],
                                  texts=texts)

    def select(self, ingested: Ingested, embedded: Embedded, clustered: Clustered,
               valued: Valued | None = None) -> Selected:
        """Run the recipe's selector; write the rows to publish and the per-candidate report."""
        r = self.recipe
        sections = {"select": _dump(r.select), "groups": r.groups, "seed": r.seed}
        inputs = {"ingest": ingested, "embed": embedded, "cluster": clustered, **({"value": valued} if valued else {})}

        def produce(out: Path) -> dict[str, Any]:
            pool = self.pool(ingested, embedded, clustered, valued)
            selection = pipeline.select(pool, r, stage_rng(r.seed, "select"))
            # read in parts: see pipeline.assemble
            sources = self.text_sources()
            items = restore_texts(pl.scan_parquet(ingested.dir / "items.parquet"), sources, r.groups)
            held = ingested.reference()
            data, report = pipeline.assemble(items, ingested.skipped(), pool, selection, r.groups,
                                             reference=None if held is None else restore_texts(held, sources, r.groups),
                                             reference_from_file=r.holdout is not None and r.holdout.path is not None,
                                             value_stderr=None if valued is None else valued.values()[1])
            data.write_parquet(out / "data.parquet")
            write_parquet(report, out / "report.parquet")  # block by block: never held whole
            return {"info": selection.info}

        return self._run("select", Selected, sections, inputs, produce)

    # ------------------------------------------------------------------------------- publish
    def publish(self, selected: Selected) -> Version:
        """Write a new version of the dataset (atomically) with its manifest; returns it."""
        r = self.recipe
        # the report is summarised from a scan of its stage file and streamed into the version
        # block by block with its 2-D map: never held whole (10M rows: several GB)
        data, report = selected.data(), pl.scan_parquet(selected.dir / "report.parquet")
        ingested, embedded, clustered = self.runs["ingest"], self.runs["embed"], self.runs["cluster"]
        xy, metrics = self._map_and_metrics(report, embedded)
        manifest: dict[str, Any] = {
            "name": r.name,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "recipe": json.loads(r.canonical_json()),
            "recipe_sha256": r.sha256(),
            "seed": r.seed,
            "code_version": code_version(),
            "inputs": ingested.facts["inputs"],
            "embedding": {k: v for k, v in embedded.facts.items()},
            "clustering": dict(clustered.facts),
            "timings": {name: out.seconds for name, out in self.runs.items()},
            # which stage outputs this version was made from, and which were reused from earlier builds
            "stages": {name: {"key": out.key, "reused": out.reused, "seconds": out.seconds,
                              **({} if out.peak_rss is None else {"peak_rss_gb": round(out.peak_rss / 2**30, 3)})}
                       for name, out in self.runs.items()},
            # from the report's status column (curation.report_schema), never from reason text
            "counts": status_counts(report),
            "selection": selected.facts["info"],
            "summary": summarize(report, budget=r.select.budget, k=clustered.facts["k"],
                                 silhouette=clustered.facts.get("silhouette"),
                                 targets=selected.facts["info"].get("quotas")),
        }
        manifest["metrics"] = metrics
        # where the vectors were computed (the Ray nodes whose actors embedded chunks)
        manifest["placement"] = {k: embedded.facts[k] for k in ("ray_actors", "threads_per_actor", "nodes")
                                 if k in embedded.facts}
        if "value" in self.runs:
            manifest["valuation"] = dict(self.runs["value"].facts)
        parent = latest_version(self.dataset_dir)  # under the dataset's lock: the version this one follows
        if parent is not None:
            manifest["delta"] = version_delta(report, pl.scan_parquet(self.dataset_dir / parent / "report.parquet"),
                                              parent)
        manifest = redact_obj(manifest)  # nothing the build writes carries a secret
        path = publish_version(Path(r.output.root) / r.name, data,
                               lambda: with_map(selected.dir / "report.parquet", xy), manifest,
                               rows_per_shard=r.output.rows_per_shard)
        log.info("publish: %s (%d rows)", path, data.height)
        return Version(path=path, manifest=json.loads((path / "manifest.json").read_text()))

    def _map_and_metrics(self, report: pl.LazyFrame, embedded: Embedded) -> tuple[np.ndarray, dict[str, Any]]:
        """The pool's 2-D map (the vectors' first two principal axes, one row per pool row: the
        report page's ``map_x``, ``map_y``; see :func:`with_map`) and the version's diversity and
        balance metrics. The pool's rows come first in the report, in the items' order, as
        its vectors do (:func:`curation.pipeline.assemble`)."""
        X = embedded.vectors()
        n = len(X)
        # the pool rows' boolean column, read streaming: not a string per row
        chosen = report.head(n).select("selected").collect(engine="streaming")["selected"].to_numpy()
        metrics = {"diversity": selection_metrics(X, chosen, stage_rng(self.recipe.seed, "metrics")),
                   "label_balance": label_balance(report)}
        return projection_2d(X), metrics

    def collect_garbage(self) -> list[Path]:
        """Age/size garbage collection of the stage store, keeping this build's entries."""
        out = self.recipe.output
        return self.store.collect(max_age_days=out.stages_max_age_days, max_bytes=int(out.stages_max_gb * 2**30),
                                  keep=[o.dir for o in self.runs.values()])

    def run(self) -> Version:
        """Every stage in order, then publish, holding the dataset's lock; nothing is built when
        nothing changed (:meth:`unchanged_since`). The store is garbage-collected afterwards."""
        with self.lock():
            try:
                unchanged = self.unchanged_since()
                if unchanged is not None:
                    return unchanged
                ingested = self.ingest_with_retries()
                embedded = self.embed(ingested)
                clustered = self.cluster(embedded)
                valued = self.value(ingested, embedded)
                selected = self.select(ingested, embedded, clustered, valued)
                return self.publish(selected)
            finally:
                self.collect_garbage()


#: Rows of a published report's row groups: fixed, not :data:`curation.pipeline.BLOCK_ROWS`, so a
#: version's bytes never depend on the block size the stages ran with.
REPORT_BLOCK_ROWS = 100_000


def with_map(report_path: Path, xy: np.ndarray, block_rows: int = REPORT_BLOCK_ROWS) -> Iterator[pl.DataFrame]:
    """The report at ``report_path``, ``block_rows`` rows at a time, with ``map_x``/``map_y``
    from ``xy`` (one row per pool row, the report's first rows; null on the rows after them,
    which have no vector). Each block is read from the file when asked for, so a published
    report streams from the stage store to the version."""
    lf = pl.scan_parquet(report_path)
    total, n = lf.select(pl.len()).collect().item(), len(xy)
    for start in range(0, total, block_rows):
        block = lf.slice(start, block_rows).collect()
        m = max(0, min(n - start, block.height))  # rows of this block that have a vector
        pad = np.full(block.height - m, np.nan, dtype=np.float32)
        yield block.with_columns(*[
            pl.Series(name, np.concatenate([xy[start : start + m, axis], pad]), dtype=pl.Float32, nan_to_null=True)
            for axis, name in enumerate(("map_x", "map_y"))])


def _with_progress(map_fn: MapFn, bar: Callable[[int], None]) -> MapFn:
    """``map_fn`` reporting finished pieces to ``bar``: through its ``on_done`` if it takes one."""
    if "on_done" in inspect.signature(map_fn).parameters:
        return lambda func, args: map_fn(func, args, on_done=bar)

    def counted(func, args):
        out = map_fn(func, args)
        bar(len(args))
        return out
    return counted


def build(recipe: Recipe | Mapping[str, Any] | str | Path, *, overrides: list[str] | tuple[str, ...] = (),
          map_chunks: MapChunks | None = None, map_fn: MapFn | None = None, n_jobs: int = 1,
          force: bool = False, wait: bool = True) -> Version:
    """Build and publish one version of ``recipe`` in this process; returns the version.

    ``recipe`` is a :class:`~curation.recipe.Recipe`, a mapping of the same shape (e.g. parsed
    JSON) or the path of a YAML file; ``overrides`` are ``a.b=value`` strings as with ``--set``.
    Stages found in the stage store are reused (``manifest["stages"]`` says which). When the
    resolved recipe and the input fingerprints equal the latest version's, nothing is published
    and that version is returned with ``published=False`` (``force=True`` builds anyway). One
    build per dataset at a time: ``wait=False`` raises :class:`DatasetLocked` instead of waiting.

    Raises:
        RecipeError: the recipe is invalid (nothing is read).
        DataError, FileNotFoundError: bad or missing input (nothing is published).
    """
    r = as_recipe(recipe, overrides)
    preflight(r)
    return Builder(r, map_chunks=map_chunks, map_fn=map_fn, n_jobs=n_jobs, force=force, wait=wait).run()
