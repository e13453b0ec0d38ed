"""Bad input through the real CLI entry point and the real flow (Prefect test server, local Ray).

Each case gets one clear message on stderr (exit 2, no traceback) and publishes nothing; a
failure after a good build leaves the earlier version intact and LATEST unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from curation.publish import list_versions, verify_version
from flows.cli import main


@pytest.fixture
def project(tmp_path, monkeypatch, ray_session, prefect_api):
    """A working directory with small real data and a recipe writer."""
    monkeypatch.chdir(tmp_path)
    df = pl.DataFrame({
        "doc_id": [f"d{i}" for i in range(60)],
        "text": [f"prompt number {i} about {'chess' if i % 3 else 'poetry'}" for i in range(60)],
        "lang": ["en", "de", "fr"] * 20,
    })
    df.write_parquet("docs.parquet")

    def recipe(**over) -> str:
        r = {
            "name": "bad", "seed": 0,
            "sources": [{"name": "docs", "kind": "files", "path": "docs.parquet", "id": "doc_id", "text": "text"}],
            "groups": ["lang"], "embed": {"model": "hashing"}, "cluster": {"k": 4},
            "select": {"method": "stratified", "budget": 12, "mode": "equal"}, "output": {"root": "out"},
        }
        for key, value in over.items():
            node = r
            *path, last = key.split("__")
            for p in path:
                node = node[int(p)] if isinstance(node, list) else node[p]
            node[last] = value
        Path("recipe.yaml").write_text(yaml.safe_dump(r))
        return "recipe.yaml"

    return recipe


def fails(capsys, args, match):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert lines, err
    import re

    assert re.search(match, lines[-1] + "\n" + err, re.S), err
    assert not list_versions("out/bad")
    return err


def test_missing_file(project, capsys):
    fails(capsys, ["build", project(sources__0__path="nope.parquet")], r"sources\[docs\]\.path: file 'nope\.parquet' does not exist")


def test_no_prefect_with_a_prefect_secret_says_where_the_secret_lives(project, capsys):
    fails(capsys, ["build", project(sources__0__path="${prefect:docs-dir}/docs.parquet"), "--no-prefect"],
          r"reads \$\{prefect:\.\.\.\} secrets, which live on Prefect's server; drop --no-prefect")


def test_empty_source(project, capsys):
    Path("empty.jsonl").write_text("")
    fails(capsys, ["build", project(sources__0__path="empty.jsonl")], r"source 'docs' is empty: 'empty\.jsonl' holds no rows")


def test_text_column_missing_lists_available_columns(project, capsys):
    fails(capsys, ["build", project(sources__0__text="body")],
          r"sources\[docs\]\.text names column 'body'.*Available columns: doc_id, text, lang")


def test_group_column_missing(project, capsys):
    fails(capsys, ["build", project(groups=["country"])], r"groups: \[country\] names column 'country'.*Available columns")


@pytest.mark.parametrize("budget", [61, 0, -5])
def test_budget_out_of_range(project, capsys, budget):
    match = r"budget=61 should be <= n_samples=60" if budget > 0 else r"budget must be > 0"
    fails(capsys, ["build", project(), "--set", f"select.budget={budget}"], match)


def test_k_larger_than_pool(project, capsys):
    fails(capsys, ["build", project(cluster={"k": 100})], r"cluster\.k=100 is larger than the pool \(60 items\)")


def test_duplicate_ids_name_examples(project, capsys):
    pl.DataFrame({"doc_id": ["a", "a", "b"], "text": ["x", "y", "z"], "lang": ["en"] * 3}).write_parquet("dup.parquet")
    fails(capsys, ["build", project(sources__0__path="dup.parquet")], r"1 id\(s\) appear more than once, e\.g\. 'a' x2 in docs")


def test_unknown_selector_lists_known_ones(project, capsys):
    fails(capsys, ["build", project(), "--set", "select.method=magic"], r"select\.method='magic' is not a known selector\. Known: chain, group-adaptive, kmq, kmq-iterative, quad, random, stratified, value-threshold\.")


def test_unknown_connector_kind(project, capsys):
    fails(capsys, ["build", project(sources__0__kind="ftp")], r"sources\[docs\]\.kind='ftp' is not a known connector kind\. Known: files")


def test_null_and_non_utf8_rows_are_skipped_and_counted(project, capsys):
    Path("mixed.csv").write_bytes(b"doc_id,text,lang\n1,good one,en\n2,,en\n3,bad \xff bytes,de\n4,also good,de\n5,fine,en\n")
    assert main(["build", project(sources__0__path="mixed.csv", select={"method": "random", "budget": 3},
                                  cluster={"k": 2})]) == 0
    out = capsys.readouterr().out
    version = Path(out.strip().splitlines()[-1])
    report = pl.read_parquet(version / "report.parquet")
    assert report.height == 5 and report["selected"].sum() == 3
    skipped = report.filter(pl.col("status") == "skipped").sort("id")
    # an empty CSV field is null text; a non-UTF-8 one is invalid_utf8 (the human reason is unchanged)
    assert skipped.select("id", "reason_code", "reason").rows() == [
        ("2", "skipped_null_text", "skipped: null_text"), ("3", "skipped_invalid_utf8", "skipped: invalid_utf8")]
    assert skipped["cluster"].is_null().all()
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["summary"]["budget"]["skipped"] == {"skipped_invalid_utf8": 1, "skipped_null_text": 1}
    assert manifest["counts"]["skipped"] == 2 and manifest["counts"]["pool"] == 3
    assert "skipped rows: skipped_invalid_utf8=1, skipped_null_text=1" in out


def test_failed_run_keeps_previous_version(project, capsys):
    assert main(["build", project()]) == 0
    v1 = Path(capsys.readouterr().out.strip().splitlines()[-1])
    code = main(["build", project(), "--set", "cluster.k=1000"])
    assert code == 2
    assert list_versions("out/bad") == ["v0001"] and Path("out/bad/LATEST").read_text().strip() == "v0001"
    assert verify_version(v1) == []
    assert not [p for p in Path("out/bad").iterdir() if p.name.startswith(".tmp")]
    # no half-written stage output; the failed run reused ingest and embed and added no cluster entry
    assert not list(Path("out/.stages").glob("*/.tmp-*"))
    entries = sorted(p.parent.parent.name for p in Path("out/.stages").glob("*/*/record.json"))
    assert entries == ["cluster", "embed", "ingest", "select"]


def test_tabular_source_end_to_end(tmp_path, monkeypatch, ray_session, prefect_api, capsys):
    """The issue's tabular recipe shape: features + label, intersectional groups, min_per_group."""
    monkeypatch.chdir(tmp_path)
    import numpy as np

    rng = np.random.default_rng(0)
    n = 800
    pl.DataFrame({
        "age": rng.integers(18, 80, n), "income": rng.normal(50, 10, n).round(2),
        "city": rng.choice(["a", "b", "c"], n), "sex": rng.choice(["f", "m"], n, p=[0.3, 0.7]),
        "race": rng.choice(["x", "y", "z"], n, p=[0.8, 0.15, 0.05]), "outcome": rng.integers(0, 2, n),
    }).write_csv("people.csv")
    Path("tab.yaml").write_text(yaml.safe_dump({
        "name": "tabular-mix", "seed": 1,
        "sources": [{"name": "people", "kind": "files", "path": "people.csv", "features": ["age", "income", "city"],
                     "label": "outcome"}],
        "groups": ["sex", "race"], "cluster": {"k": 16},
        "select": {"method": "stratified", "budget": 200, "mode": "proportional", "min_per_group": 20},
        "output": {"root": "out"},
    }))
    assert main(["build", "tab.yaml"]) == 0
    version = Path(capsys.readouterr().out.strip().splitlines()[-1])
    data = pl.read_parquet(version / "data")
    assert data.height == 200
    counts = dict(data.group_by("group").len().iter_rows())
    report = pl.read_parquet(version / "report.parquet")
    usable = report.filter(pl.col("status").is_in(["selected", "not_selected"]))
    sizes = dict(usable.group_by("group").len().iter_rows())
    assert len(sizes) == 6 and set(counts) == set(sizes)  # every intersectional sex x race group selected
    assert any(n < 20 for n in sizes.values())  # the data has a group below the floor (x|f: ~12 rows)
    for g, c in counts.items():
        # min_per_group 20: at least 20 from each group, and all of a group that has fewer
        assert c == sizes[g] if sizes[g] < 20 else c >= 20, (g, c, sizes[g])
    assert set(usable["label"].unique()) == {0, 1}
