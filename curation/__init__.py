"""curation: build diverse, equitable training sets.

The library (no Prefect, no Ray): recipes, embedders, clustering, selectors, the build and its
resumable stages, publishing and reports. ``curation.build(recipe)`` builds and publishes a
version in this process; ``flows/`` runs the same stages as a Prefect flow with work on Ray.
"""

import os

# Freed memory goes back to the OS within about a second, not kept for the next stage to count:
# polars' jemalloc returns dirty pages after 1 s and does not hold them a second more as muzzy
# pages (polars' own default does), and pyarrow uses the system allocator instead of mimalloc,
# which keeps its own (keeping them, a 1M-item build's driver peaked at 1.4 GB instead of 1.0 GB
# on 2026-12-02). Returning every page at once (dirty_decay_ms:0) made each reuse a page fault:
# half of a 1M-row ingest's CPU was the kernel's (87k faults, 0.25-0.29 s of system time, against
# 48k and 0.15 s now; ingest 0.35-0.39 -> 0.25-0.33 s), with the same stage peaks at 1M and 10M
# (bench/results/scale.md, scale-10m.md). Read when polars and pyarrow load, so only if curation
# is imported first; a user's own setting wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:1000,muzzy_decay_ms:0")
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from curation.exceptions import CurationError, DataError, InvalidParameterError, RecipeError  # noqa: E402
from curation.random import check_rng, spawn  # noqa: E402
from curation.recipe import Recipe, load_recipe  # noqa: E402
from curation.types import Pool, Selection  # noqa: E402
from curation.version import __version__  # noqa: E402

__all__ = [
    "CurationError",
    "DataError",
    "InvalidParameterError",
    "Pool",
    "Recipe",
    "RecipeError",
    "Selection",
    "__version__",
    "build",
    "check_rng",
    "load_recipe",
    "spawn",
]


def __getattr__(name: str):
    # ``curation.build`` is imported on first use: it pulls in every stage (selectors, torch
    # embedders, connectors), which ``import curation`` alone should not pay for.
    if name == "build":
        from curation.builder import build

        return build
    raise AttributeError(f"module 'curation' has no attribute {name!r}")
