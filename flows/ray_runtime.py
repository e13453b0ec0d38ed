"""Ray placement: start (or join) Ray once per process, run embedding actors, and the Builder
whose parallel work runs there (:func:`ray_builder`; both `curate build` paths use it, with and
without Prefect).

``ensure_ray()`` joins the cluster ``RAY_ADDRESS`` names, or starts a local Ray with the
machine's cores. ``ray_map_chunks`` embeds chunks on a pool of actors, each loading the model
once and using ``threads`` torch threads (actors x threads = the CPUs Ray may use).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from curation.embed import Embedder

if TYPE_CHECKING:  # the build's modules are not imported by a Ray worker loading its actor
    from curation.builder import Builder
    from curation.recipe import Recipe


def runtime_env() -> dict:
    """What a joined cluster's workers need from this checkout: the project's own packages
    (``curation``, ``connectors``, ``flows``) shipped as ``py_modules``, so a node needs only
    Python, Ray and the pinned dependencies. ``CURATION_RAY_SHIP_CODE=0`` turns it off (nodes
    that have the project installed)."""
    if os.environ.get("CURATION_RAY_SHIP_CODE", "1") == "0":
        return {}
    import connectors
    import curation
    import flows

    return {"py_modules": [os.path.dirname(m.__file__) for m in (curation, connectors, flows)],
            "env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}}


def joins_cluster() -> bool:
    """Whether Ray work goes to an existing cluster (``RAY_ADDRESS`` set, or this process is
    already connected to one) rather than a Ray this process would start for itself."""
    ray = sys.modules.get("ray")  # not imported: not connected (and importing it costs a second)
    return bool(os.environ.get("RAY_ADDRESS")) or (ray is not None and ray.is_initialized())


def ensure_ray() -> dict:
    """Start or join Ray (idempotent); returns the cluster's resources. Joining a cluster
    (``RAY_ADDRESS``) ships the project's code to its workers (:func:`runtime_env`)."""
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or None
        kwargs: dict = {"address": address, "logging_level": logging.WARNING, "log_to_driver": False,
                        "configure_logging": True}
        if address is None:
            kwargs.update(num_cpus=os.cpu_count() or 1, include_dashboard=False)
            # Ray nices its workers to 15 by default, so under any contention the embedding actor
            # yields the CPU it was given; a local run wants the actor at the driver's priority.
            os.environ.setdefault("RAY_worker_niceness", "0")
        else:
            kwargs["runtime_env"] = runtime_env()
        ray.init(**kwargs)
    return ray.cluster_resources()


def plan_actors(cpus: int | list[int], actors: int | None, threads: int | None) -> tuple[int, int]:
    """(actors, threads per actor). Default: actors of up to 4 threads filling the CPUs.

    ``cpus`` is the CPU count of each node (or one number: a single node). An actor's threads
    must fit on one node, so the default is at most the largest node's CPUs, and each node
    holds ``node_cpus // threads`` actors. On a 2-core machine that is one actor with 2
    threads: the same as a bare encode loop, with the model loaded once; on two 1-CPU nodes,
    two actors of one thread.
    """
    nodes = [max(1, int(c)) for c in (cpus if isinstance(cpus, list) else [cpus])] or [1]
    threads = threads or min(4, max(nodes))
    actors = actors or max(1, sum(c // threads for c in nodes))
    return actors, threads


def node_cpus() -> list[int]:
    """The CPU count of every alive Ray node (call after :func:`ensure_ray`)."""
    import ray

    return [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] or [1]


def actor_options(device: str, threads: int, resources: dict) -> dict:
    """Ray resources one embedding actor asks for: ``threads`` CPUs, plus one GPU when the
    embedder runs on CUDA (``device: cuda``, or ``auto`` on a cluster that has GPUs)."""
    gpu = device == "cuda" or (device == "auto" and resources.get("GPU", 0) >= 1)
    return {"num_cpus": threads, **({"num_gpus": 1} if gpu else {})}


def ray_map_chunks(embedder: Embedder, chunks: list[list[str]], *, actors: int, threads: int,
                   device: str = "cpu", nodes: set[str] | None = None) -> Iterator[np.ndarray]:
    """Embed ``chunks`` on ``actors`` Ray actors; yields results in chunk order.

    Each actor loads the model once. A chunk whose actor dies (its node was lost) goes back to
    the queue and is embedded by a surviving actor, so losing a worker node costs its chunks'
    time, not the build; only when every actor is gone does the error surface. The ids of the
    nodes whose actors returned chunks are added to ``nodes``.
    """
    import ray
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    if not chunks:
        return

    @ray.remote
    class EmbedActor:
        def __init__(self, embedder: Embedder, threads: int) -> None:
            embedder.set_threads(threads)
            self.embedder = embedder

        def embed(self, texts: list[str]) -> tuple[str, np.ndarray]:
            return ray.get_runtime_context().get_node_id(), self.embedder.embed(texts)

    options = actor_options(device, threads, ray.cluster_resources())
    workers = [EmbedActor.options(**options).remote(embedder, threads) for _ in range(min(actors, len(chunks)))]
    queue = list(range(len(chunks)))[::-1]  # popped from the end: chunk 0 first
    running: dict = {}  # ref -> (chunk index, actor)
    done: dict[int, np.ndarray] = {}
    next_out = 0
    try:
        idle = list(workers)
        while next_out < len(chunks):
            while idle and queue:
                actor, i = idle.pop(), queue.pop()
                running[actor.embed.remote(chunks[i])] = (i, actor)
            if not running:
                raise RuntimeError("every embedding actor died; the chunks left cannot be embedded")
            ready, _ = ray.wait(list(running), num_returns=1)
            i, actor = running.pop(ready[0])
            try:
                node, vectors = ray.get(ready[0])
            except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
                queue.append(i)  # embedded again by another actor; the dead one gets no more work
                logging.getLogger("curation.ray").warning(
                    "an embedding actor died (%s); its chunk %d goes to another actor", type(exc).__name__, i)
                continue
            idle.append(actor)
            if nodes is not None:
                nodes.add(node)
            done[i] = vectors
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
    finally:
        for w in workers:
            ray.kill(w)


def ray_map(func, args: Iterable, *, on_done=None) -> list:
    """``[func(a) for a in args]`` as Ray tasks (one CPU each), results in order.

    The ``map_fn`` the valuation methods and k-means assignment take: each argument carries its
    own data (and, for Monte Carlo methods, its own seeds), so the result does not depend on
    where it runs. ``args`` is consumed lazily, keeping at most two tasks per CPU of the cluster
    in flight: a generator of a pool's row blocks puts only those blocks in the object store,
    not the whole pool. ``on_done(n)`` is called as tasks finish (a progress bar).
    """
    import ray

    it = iter(args)
    first = next(it, _END)
    if first is _END:
        return []
    limit = max(2, 2 * int(ensure_ray().get("CPU", 1)))
    task = ray.remote(num_cpus=1)(func)
    refs: list = []
    pending: list = []

    def wait_one() -> None:
        nonlocal pending
        done, pending = ray.wait(pending, num_returns=1)
        if on_done is not None:
            on_done(len(done))

    for a in itertools.chain([first], it):
        if len(pending) >= limit:
            wait_one()
        refs.append(task.remote(a))
        pending.append(refs[-1])
    while pending:
        wait_one()
    return ray.get(refs)


_END = object()


class RayChunks:
    """``map_chunks`` on Ray actors; ``placement`` says how many actors and threads were used
    and on which Ray nodes (``nodes``: the node ids whose actors returned chunks).

    A light embedder (:attr:`curation.embed.Embedder.light`: hashing, static-minilm) embeds in
    this process unless the build joins a cluster (``RAY_ADDRESS``): on one machine, sending a
    text to an actor costs more than embedding it, and starting Ray costs seconds. The manifest
    then says ``ray_actors: 0``.
    """

    def __init__(self, actors: int | None, threads: int | None, device: str = "auto") -> None:
        self.actors, self.threads, self.device = actors, threads, device
        self.placement: dict[str, Any] = {}

    def __call__(self, embedder: Embedder, chunks: list[list[str]]):
        from curation.pipeline import serial_map

        if not chunks:  # everything was cached: don't pay for starting Ray
            return
        if embedder.light and not joins_cluster():
            self.placement.update(ray_actors=0, nodes=[])
            yield from serial_map(embedder)(chunks)
            return
        ensure_ray()
        actors, threads = plan_actors(node_cpus(), self.actors, self.threads)
        nodes: set[str] = set()
        self.placement.update(ray_actors=actors, threads_per_actor=threads)
        try:
            yield from ray_map_chunks(embedder, chunks, actors=actors, threads=threads, device=self.device,
                                      nodes=nodes)
        finally:
            self.placement["nodes"] = sorted(nodes)


def ray_builder(recipe: Recipe, **options) -> Builder:
    """A Builder whose parallel work runs on Ray (Ray starts only when a stage needs it).

    k-means assignment goes to Ray only when the build joins a cluster (``RAY_ADDRESS``): on one
    machine faiss already uses every core in this process, and shipping row blocks to tasks
    would only add copies."""
    from curation.builder import Builder

    return Builder(recipe, map_chunks=RayChunks(recipe.embed.actors, recipe.embed.threads_per_actor,
                                                recipe.embed.device), map_fn=ray_map,
                   map_blocks=ray_map if joins_cluster() else None,
                   n_jobs=lambda: int(ensure_ray().get("CPU", 1)), **options)
