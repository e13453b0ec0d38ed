"""curation: build diverse, equitable training sets.

The library (no Prefect, no Ray): recipes, embedders, clustering, selectors, the build and its
resumable stages, publishing and reports. ``curation.build(recipe)`` builds and publishes a
version in this process; ``flows/`` runs the same stages as a Prefect flow with work on Ray.
"""

import os

# Hand freed memory back to the OS at once. polars' jemalloc keeps freed pages for ~10 s and
# pyarrow's mimalloc keeps its own, so one stage's garbage would still count when the next stage
# peaks (at 1M items: 1.4 GB instead of 1.0 GB of driver peak; bench/scale.py). Read when polars
# and pyarrow load, so only if curation is imported first; a user's own setting wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
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
