"""curation: build diverse, equitable training sets.

The library (no Prefect, no Ray): recipes, embedders, clustering, selectors, the build and its
resumable stages, publishing and reports. ``curation.build(recipe)`` builds and publishes a
version in this process; ``flows/`` runs the same stages as a Prefect flow with work on Ray.
"""

from curation.exceptions import CurationError, DataError, InvalidParameterError, RecipeError
from curation.random import check_rng, spawn
from curation.recipe import Recipe, load_recipe
from curation.types import Pool, Selection
from curation.version import __version__

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
