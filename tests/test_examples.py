"""Every recipe in examples/ is valid and reads only data that `make data` creates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from curation.recipe import load_recipe

# as in tests/conftest.py (importing it by name is ambiguous: tests/flows has a conftest too)
ROOT = Path(__file__).resolve().parents[1]


EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def make_data_outputs() -> set[str]:
    """The files of the Makefile's `data` target (its DATA variable)."""
    m = re.search(r"^DATA\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, "Makefile has no DATA := line"
    return set(m.group(1).split())


def paths_in(node) -> list[str]:
    """Every value of a `path:` key, anywhere in the recipe (sources, reference, ...)."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "path" and isinstance(v, str)] + \
            [p for v in node.values() for p in paths_in(v)]
    if isinstance(node, list):
        return [p for v in node for p in paths_in(v)]
    return []


def test_examples_directory_is_not_empty():
    assert len(EXAMPLES) >= 6  # instructions*, adult-equity, tabular


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_recipe_is_valid_and_its_data_comes_from_make_data(example):
    recipe = load_recipe(example)  # raises RecipeError on any invalid field
    assert recipe.name
    paths = paths_in(yaml.safe_load(example.read_text()))
    assert paths, f"{example.name} names no data"
    for path in paths:
        assert path in make_data_outputs(), f"{example.name}: {path} is not made by `make data`"
        assert (ROOT / path).is_file(), f"{example.name}: {path} is missing (run `make data`)"


def test_tabular_example_names_real_adult_columns():
    import polars as pl

    recipe = load_recipe(ROOT / "examples/tabular.yaml")
    source = recipe.sources[0]
    columns = set(pl.read_parquet_schema(ROOT / source.path))
    assert set(source.features) | {source.label} | set(recipe.groups) <= columns
