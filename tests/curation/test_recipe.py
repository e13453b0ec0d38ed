"""Recipe loading, overrides and error messages."""

from __future__ import annotations

import json
import textwrap

import pytest

from curation.exceptions import RecipeError
from curation.recipe import load_recipe

ISSUE_TEXT_RECIPE = """
name: reviews-mix            # the dataset directory name under output.root
seed: 1
sources:
  - name: reviews
    kind: files
    path: data/reviews.parquet
    id: doc_id               # optional; a content hash id when absent
    text: text               # a text source ...
    label: label             # optional
groups: [lang]               # group columns; several columns make intersectional groups
embed: {model: all-MiniLM-L6-v2}
cluster: {k: 32}
select: {method: stratified, budget: 1200, mode: equal}
output: {root: out}
"""

ISSUE_TABULAR_RECIPE = """
name: tabular-mix
seed: 1
sources:
  - name: people
    kind: files
    path: data/people.csv
    features: [age, income, city]   # ... or a tabular source: feature columns, encoded by the tabular embedder
    label: outcome
groups: [sex, race]
cluster: {k: 16}
select: {method: stratified, budget: 500, mode: proportional, min_per_group: 20}
output: {root: out}
"""


def write(tmp_path, text: str):
    p = tmp_path / "r.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_both_issue_recipes_load_as_written(tmp_path):
    r = load_recipe(write(tmp_path, ISSUE_TEXT_RECIPE))
    assert r.is_text and r.select.params() == {"mode": "equal", "min_per_group": 0, "shares": None} and r.cluster.k == 32
    t = load_recipe(write(tmp_path, ISSUE_TABULAR_RECIPE))
    assert not t.is_text and t.groups == ["sex", "race"] and t.select.params() == {"mode": "proportional", "min_per_group": 20, "shares": None}


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    p = write(tmp_path, ISSUE_TEXT_RECIPE)
    r = load_recipe(p, ["select.budget=500", "sources.0.path=other.parquet", "select.mode=proportional", "groups=[lang, task]"])
    assert r.select.budget == 500 and r.sources[0].path == "other.parquet"
    assert r.select.params()["mode"] == "proportional" and r.groups == ["lang", "task"]
    with pytest.raises(RecipeError, match=r"select = .*budget must be > 0; got 0"):
        load_recipe(p, ["select.budget=0"])
    with pytest.raises(RecipeError, match=r"--set 'select.budget' must look like a.b=value"):
        load_recipe(p, ["select.budget"])
    with pytest.raises(RecipeError, match=r"'5' is not an index of a list of 1 items"):
        load_recipe(p, ["sources.5.path=x"])


@pytest.mark.parametrize("override", [
    "seed=2",                       # top level
    "cluster.k=33",                 # a nested field
    "sources.0.path=other.parquet", # a field of a list item
    "groups=[lang, task]",          # a list
    "select.mode=proportional",     # a selector parameter
    "select.budget=1199",
    "embed.model=hashing",
])
def test_recipe_hash_changes_with_any_field(tmp_path, override):
    p = write(tmp_path, ISSUE_TEXT_RECIPE)
    base = load_recipe(p)
    assert base.sha256() == load_recipe(p).sha256()
    changed = load_recipe(p, [override])
    assert changed.canonical_json() != base.canonical_json()
    assert changed.sha256() != base.sha256()


def test_recipe_hash_ignores_key_order_and_comments(tmp_path):
    import yaml

    p = write(tmp_path, ISSUE_TEXT_RECIPE)
    data = yaml.safe_load(p.read_text())

    def reverse(node):  # every mapping's keys in reverse order (lists keep their order: it means something)
        if isinstance(node, dict):
            return {k: reverse(node[k]) for k in reversed(list(node))}
        return [reverse(v) for v in node] if isinstance(node, list) else node

    shuffled = reverse(data)
    assert list(shuffled) != list(data) and list(shuffled["sources"][0]) != list(data["sources"][0])
    q = tmp_path / "reordered.yaml"
    q.write_text(yaml.safe_dump(shuffled, sort_keys=False))  # also drops the comments
    assert load_recipe(q).sha256() == load_recipe(p).sha256() == load_recipe(shuffled).sha256()


@pytest.mark.parametrize("override,match", [
    (["select.method=qaud"], r"select = .*select\.method='qaud' is not a known selector\. Known: chain, group-adaptive, kmq, kmq-iterative, quad, random, stratified, value-threshold\."),
    (["select.mode=eqaul"], r"The 'mode' parameter of StratifiedSelector must be one of 'equal', 'proportional', 'shares'\. Got 'eqaul'"),
    (["select.mood=equal"], r"select\.mood is not a setting of method 'stratified'"),
    (["cluster.kk=3"], r"cluster\.kk: unknown field \(value 3\)"),
    (["cluster.k=0"], r"cluster\.k = 0: k must be a positive int or 'auto'; got 0"),
    (["sources.0.features=[a]"], r"give exactly one of `text`"),
    (["name=has space"], r"name = 'has space': String should match pattern"),
    (["sources.0.format=xlsx"], r"format must be one of 'parquet', 'jsonl', 'csv'; got 'xlsx'"),
])
def test_bad_fields_name_field_value_and_allowed(tmp_path, override, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe(write(tmp_path, ISSUE_TEXT_RECIPE), override)


def test_all_problems_are_listed_at_once(tmp_path):
    with pytest.raises(RecipeError) as exc:
        load_recipe(write(tmp_path, ISSUE_TEXT_RECIPE), ["cluster.k=-1", "embed.batch_size=0"])
    assert "cluster.k" in str(exc.value) and "embed.batch_size" in str(exc.value)


def test_missing_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(write(tmp_path, "name: [unclosed"))
    with pytest.raises(RecipeError, match=r"select: required field is missing"):
        load_recipe({"name": "x", "sources": [{"name": "s", "path": "p", "text": "t"}]})


def test_k_auto_and_bad_k(tmp_path):
    p = write(tmp_path, ISSUE_TEXT_RECIPE)
    assert load_recipe(p, ["cluster.k=auto"]).cluster.k == "auto"
    with pytest.raises(RecipeError, match=r"cluster\.k"):
        load_recipe(p, ["cluster.k=big"])


def test_reference_section_fraction_or_path(tmp_path):
    p = write(tmp_path, ISSUE_TEXT_RECIPE)
    assert load_recipe(p, ["reference={fraction: 0.1}"]).reference.fraction == 0.1
    assert load_recipe(p, ["reference={path: ref.jsonl, format: jsonl}"]).reference.path == "ref.jsonl"
    assert load_recipe(p).reference is None
    issue = load_recipe(p, ["select={method: quad, budget: 800, scorer: influence, probe: 10, chunk: 50, alpha: 0.01}",
                            "reference={fraction: 0.1}"])
    assert issue.select.params()["scorer"] == "influence"
    for bad, match in [("reference={fraction: 0.1, path: x}", "exactly one of `fraction`"),
                       ("reference={}", "exactly one of `fraction`"),
                       ("reference={fraction: 1.5}", r"reference\.fraction = 1\.5"),
                       ("reference={fraction: 0.1, format: csv}", "`format` applies only with `path`")]:
        with pytest.raises(RecipeError, match=match):
            load_recipe(p, [bad])


def test_value_section_needs_one_held_out_set_and_labels(tmp_path):
    p = write(tmp_path, ISSUE_TEXT_RECIPE)
    r = load_recipe(p, ["value={method: knn-shapley, k: 5, validation: {fraction: 0.2}}",
                        "select={method: value-threshold, budget: 100}"])
    assert r.value.k == 5 and r.holdout.fraction == 0.2
    assert load_recipe(p, ["value={method: tmc-shapley}", "reference={path: v.jsonl}"]).holdout.path == "v.jsonl"
    for bad, match in [(["value={validation: {fraction: 0.2}}", "reference={fraction: 0.1}"], "held-out set once"),
                       (["value={method: knn-shapley}"], "needs a held-out validation set"),
                       (["value={method: tmc}", "reference={fraction: 0.1}"], r"value\.method"),
                       (["value={validation: {fraction: 0.2}}", "sources.0.label=null"], "value needs labels")]:
        with pytest.raises(RecipeError, match=match):
            load_recipe(p, bad)


def test_schema_lists_every_selector_and_value_method_with_defaults_and_docs():
    import inspect

    from curation.recipe import recipe_json_schema
    from curation.select.base import Selector
    from curation.value.pool import ValueMethod

    schema = recipe_json_schema()
    json.dumps(schema)  # plain JSON
    selects = {alt["properties"]["method"]["const"]: alt for alt in schema["properties"]["select"]["oneOf"]}
    assert set(selects) == set(Selector.registry)
    for name, alt in selects.items():
        init = inspect.signature(Selector.registry[name].__init__).parameters
        keys = {p for p, v in init.items() if v.kind == v.KEYWORD_ONLY}
        assert set(alt["properties"]) == {"method", "budget"} | keys, name
        for key in keys:
            default = init[key].default
            assert alt["properties"][key].get("default") == (list(default) if isinstance(default, tuple) else default)
    named = {"quad": "alpha", "kmq-iterative": "rounds", "stratified": "min_per_group", "group-adaptive": "objective",
             "value-threshold": "drop_fraction"}
    for method, key in named.items():
        assert selects[method]["properties"][key]["description"], (method, key)
    assert selects["quad"]["properties"]["tau"]["default"] == 0.002 and selects["quad"]["additionalProperties"] is False
    value = next(a for a in schema["properties"]["value"]["anyOf"] if "oneOf" in a)["oneOf"]
    methods = {alt["properties"]["method"]["const"]: alt["properties"] for alt in value}
    assert set(methods) == set(ValueMethod.registry)
    assert methods["tmc-shapley"]["max_permutations"]["default"] == 500 and "k" not in methods["tmc-shapley"]
    assert methods["knn-shapley"]["k"]["default"] == 5 and "validation" in methods["knn-shapley"]


def test_unknown_value_key_names_the_method_and_accepted_keys(tmp_path):
    with pytest.raises(RecipeError, match=r"value\.k is not a setting of method 'tmc-shapley'\. Accepted keys beside "
                                          r"method: players, max_items, max_permutations"):
        load_recipe(write(tmp_path, ISSUE_TEXT_RECIPE), ["value.method=tmc-shapley", "value.k=3",
                                                         "value.validation.fraction=0.1", "sources.0.label=label"])


def test_every_key_in_the_schema_has_a_doc():
    from curation.recipe import recipe_json_schema

    schema = recipe_json_schema()
    undocumented = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        for key, prop in node.get("properties", {}).items():
            if "description" not in prop:
                undocumented.append(f"{path}.{key}")
            walk(prop, f"{path}.{key}")
        for alternatives in ("oneOf", "anyOf"):
            for alt in node.get(alternatives, []):
                walk(alt, path)

    for name, definition in schema["$defs"].items():
        walk(definition, name)
    walk(schema, "recipe")
    assert undocumented == []


def test_source_keys_belong_to_their_kind_and_a_dumped_recipe_validates_again():
    from curation.recipe import Recipe

    def recipe(**source):
        return {"name": "kinds", "select": {"method": "random", "budget": 1},
                "sources": [{"name": "s", "text": "t", **source}]}

    with pytest.raises(ValueError, match=r"`split` is a key of kind 'huggingface', not of kind 'files'"):
        Recipe.model_validate(recipe(path="x.parquet", split="train"))
    with pytest.raises(ValueError, match=r"`table` is a key of kind 'sql', not of kind 'files'"):
        Recipe.model_validate(recipe(path="x.parquet", table="t"))
    with pytest.raises(ValueError, match=r"kind 'sql' needs exactly one of `table` or `query`"):
        Recipe.model_validate(recipe(kind="sql", url="sqlite:///x.db"))
    with pytest.raises(ValueError, match=r"kind 'files' needs `path`"):
        Recipe.model_validate(recipe())
    with pytest.raises(ValueError, match=r"cast\.n: 'integer' is not a type; use one of string, int64"):
        Recipe.model_validate(recipe(path="x.parquet", cast={"n": "integer"}))
    for source in [dict(path="x.parquet", storage_options={"anon": True}),
                   dict(kind="sql", url="sqlite:///x.db", query="SELECT 1", page_size=5),
                   dict(kind="huggingface", path="hf", split="test"),
                   dict(kind="my-plugin", options={"a": 1})]:
        r = Recipe.model_validate(recipe(**source))
        # the flow receives the recipe as JSON with every key given: it must validate again
        assert Recipe.model_validate(r.model_dump(mode="json")) == r
