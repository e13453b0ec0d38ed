"""The ``curate`` Prefect flow: the library's build stages as tasks, with the work placed on Ray.

Each task is a thin wrapper over one :class:`curation.builder.Builder` stage; the stages,
their content-addressed reuse and the manifest belong to the library (see
:mod:`curation.builder`); the Builder's placement on Ray is :func:`flows.ray_runtime.ray_builder`'s,
as for `curate build` without Prefect. This module only adds what Prefect is for: task names and
states, retries of a failed source read, the run's logs and the summary artifact in the UI.

The flow's parameter is plain JSON — a recipe mapping or a recipe path — validated by the flow
itself, so a deployment (``curate.serve()``, ``curate.deploy()``, ``run_deployment``) passes
it like any other parameter. Tasks keep Prefect's caching off: reuse is decided by the stage
store, which knows what each stage reads.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TagsContext

from curation.builder import (
    INGEST_RETRY_DELAYS,
    Builder,
    Clustered,
    Embedded,
    Ingested,
    Selected,
    Valued,
    as_recipe,
    preflight,
)
from curation.exceptions import SourceReadError
from curation.secrets import register_resolver
from flows.ray_runtime import ray_builder


def prefect_secret(name: str) -> str:
    """The value of the Prefect Secret block ``name``: what ``${prefect:name}`` in a recipe means.

    The block lives on the Prefect server the build talks to (``PREFECT_API_URL``, or the local
    database behind the temporary server): ``prefect block create secret`` or
    ``Secret(value=...).save(name)``.
    """
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()
    except ValueError as e:  # Prefect's "Unable to find block document named ..."
        raise KeyError(f"no Prefect Secret block named {name!r} ({e}); create it with "
                       f"`prefect block create secret` or Secret(value=...).save({name!r})") from None
    return value if isinstance(value, str) else json.dumps(value)


register_resolver("prefect", prefect_secret)


def transient(task, task_run, state) -> bool:
    """Retry only what may pass: a failed source read; never a bad recipe or bad data."""
    try:
        state.result()
    except SourceReadError:
        return True
    except BaseException:
        return False
    return False


@task(name="ingest", cache_policy=NO_CACHE, retries=len(INGEST_RETRY_DELAYS),
      retry_delay_seconds=list(INGEST_RETRY_DELAYS), retry_condition_fn=transient)
def ingest_task(b: Builder) -> Ingested:
    return b.ingest()


@task(name="embed", cache_policy=NO_CACHE)
def embed_task(b: Builder, ingested: Ingested) -> Embedded:
    return b.embed(ingested)


@task(name="cluster", cache_policy=NO_CACHE)
def cluster_task(b: Builder, embedded: Embedded) -> Clustered:
    return b.cluster(embedded)


@task(name="value", cache_policy=NO_CACHE)
def value_task(b: Builder, ingested: Ingested, embedded: Embedded) -> Valued | None:
    return b.value(ingested, embedded)


@task(name="select", cache_policy=NO_CACHE)
def select_task(b: Builder, ingested: Ingested, embedded: Embedded, clustered: Clustered,
                valued: Valued | None) -> Selected:
    return b.select(ingested, embedded, clustered, valued)


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(b: Builder, selected: Selected) -> str:
    version = b.publish(selected)
    announce(version, b.recipe.name)
    return str(version.path)


@contextmanager
def library_logs_to_prefect() -> Iterator[None]:
    """Send the library's ``curation.*`` INFO records (stage starts and ends, progress lines) to
    the run's logs in Prefect, as Prefect does for ``PREFECT_LOGGING_EXTRA_LOGGERS``; they still
    propagate to the console. Undone when the flow ends, so a later library build in the same
    process is quiet again."""
    from prefect.logging.handlers import APILogHandler

    lib = logging.getLogger("curation")
    handler, level = APILogHandler(), lib.level
    lib.addHandler(handler)
    lib.setLevel(logging.INFO)
    try:
        yield
    finally:
        lib.removeHandler(handler)
        lib.setLevel(level)


def run_name() -> str:
    """A flow run's name until it publishes: the dataset and the start time (UTC)."""
    from prefect.runtime import flow_run

    recipe = flow_run.parameters.get("recipe")
    name = recipe.get("name", "recipe") if isinstance(recipe, dict) else Path(str(recipe)).stem
    return f"{name} {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}"


def announce(version, dataset: str) -> None:
    """Name the flow run after the version it made, and attach the summary as a markdown
    artifact (the Prefect UI's Artifacts tab), keyed by dataset so versions line up."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.client.orchestration import get_client
    from prefect.context import get_run_context

    from curation.report import format_summary

    flow_run = get_run_context().task_run.flow_run_id
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run, name=f"{dataset} {version.name}")
    key = "curation-" + re.sub(r"[^a-z0-9-]+", "-", dataset.lower()).strip("-")
    create_markdown_artifact(key=key, description=f"{dataset} {version.name}",
                             markdown=f"**{version.path}**\n\n```\n{format_summary(version.manifest)}\n```\n")


@flow(name="curate", log_prints=False, flow_run_name=run_name)
def curate(recipe: dict[str, Any] | str, overrides: list[str] | None = None, force: bool = False,
           wait: bool = True) -> str:
    """Build one version of a recipe (a mapping or a YAML path); returns the version directory.

    ``overrides`` are ``a.b=value`` strings, as ``curate build --set`` takes them. When the
    recipe and the inputs equal the latest version's, nothing is built and the latest version's
    directory is returned (``force`` builds anyway). The dataset's lock is held throughout
    (``wait=False``: fail at once when another build holds it).
    """
    r = as_recipe(recipe, overrides or [])
    preflight(r)
    b = ray_builder(r, force=force, wait=wait)
    # The run keeps the tags it was started with (dataset, method); its tasks carry none, as in
    # a deployment's run: a tagged task run takes a tag concurrency-slot lease from the server
    # (about 0.4 s each, 2 s a build) to honour limits nobody set on these tags.
    with library_logs_to_prefect(), b.lock(), TagsContext(current_tags=set()):
        try:
            unchanged = b.unchanged_since()
            if unchanged is not None:
                return str(unchanged.path)
            ingested = ingest_task(b)
            embedded = embed_task(b, ingested)
            clustered = cluster_task(b, embedded)
            valued = value_task(b, ingested, embedded) if r.value is not None else None
            selected = select_task(b, ingested, embedded, clustered, valued)
            return publish_task(b, selected)
        finally:
            b.collect_garbage()
