"""curation: build diverse, equitable training sets.

The library (no Prefect, no Ray): recipes, embedders, clustering, selectors, publishing and
reports. ``flows/`` wires it into Prefect flows with work placed on Ray.
"""

from curation.exceptions import CurationError, DataError, InvalidParameterError, RecipeError
from curation.random import check_rng, spawn
from curation.recipe import Recipe, load_recipe
from curation.types import Pool, Selection

__all__ = [
    "CurationError",
    "DataError",
    "InvalidParameterError",
    "Pool",
    "Recipe",
    "RecipeError",
    "Selection",
    "check_rng",
    "load_recipe",
    "spawn",
]
__version__ = "0.1.0"
