"""Ray placement: start (or join) Ray once per process and run embedding actors.

``ensure_ray()`` joins the cluster ``RAY_ADDRESS`` names, or starts a local Ray with the
machine's cores. ``ray_map_chunks`` embeds chunks on a pool of actors, each loading the model
once and using ``threads`` torch threads (actors x threads = the CPUs Ray may use).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import numpy as np

from curation.embed import Embedder


def ensure_ray() -> dict:
    """Start or join Ray (idempotent); returns the cluster's resources."""
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
        ray.init(**kwargs)
    return ray.cluster_resources()


def plan_actors(cpus: int, actors: int | None, threads: int | None) -> tuple[int, int]:
    """(actors, threads per actor). Default: actors of up to 4 threads filling the CPUs.

    On a 2-core machine that is one actor with 2 threads: the same as a bare encode loop, with
    the model loaded once.
    """
    cpus = max(1, int(cpus))
    threads = threads or min(4, cpus)
    actors = actors or max(1, cpus // threads)
    return actors, threads


def ray_map_chunks(embedder: Embedder, chunks: list[list[str]], *, actors: int, threads: int) -> Iterator[np.ndarray]:
    """Embed ``chunks`` on ``actors`` Ray actors; yields results in chunk order."""
    import ray
    from ray.util import ActorPool

    if not chunks:
        return

    @ray.remote
    class EmbedActor:
        def __init__(self, embedder: Embedder, threads: int) -> None:
            embedder.set_threads(threads)
            self.embedder = embedder

        def embed(self, texts: list[str]) -> np.ndarray:
            return self.embedder.embed(texts)

    n = min(actors, len(chunks))
    workers = [EmbedActor.options(num_cpus=threads).remote(embedder, threads) for _ in range(n)]
    try:
        yield from ActorPool(workers).map(lambda a, c: a.embed.remote(c), chunks)
    finally:
        for w in workers:
            ray.kill(w)


def ray_map(func, args: list, *, on_done=None) -> list:
    """``[func(a) for a in args]`` as Ray tasks (one CPU each), results in order.

    The ``map_fn`` the valuation methods take: each argument carries its own data (and, for
    Monte Carlo methods, its own seeds), so the result does not depend on where it runs.
    ``on_done(n)`` is called as tasks finish (a progress bar).
    """
    import ray

    if not args:
        return []
    ensure_ray()
    task = ray.remote(num_cpus=1)(func)
    refs = [task.remote(a) for a in args]
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        if on_done is not None:
            on_done(len(done))
    return ray.get(refs)
