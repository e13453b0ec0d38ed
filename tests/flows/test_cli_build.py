"""`curate build` end to end: the real CLI, real Ray, real Prefect, the real MiniLM, real data.

The CLI runs in a subprocess that joins this session's Ray (RAY_ADDRESS) and Prefect test
server (PREFECT_API_URL), so both start once per test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml

from curation.publish import verify_version

CURATE = str(Path(sys.executable).with_name("curate"))


def run_cli(args, env_extra, cwd, check=True):
    env = {**os.environ, **env_extra}
    proc = subprocess.run([CURATE, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"curate {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def built(tmp_path_factory, evals_sample, ray_session, prefect_api):
    """Builds of one recipe: the first, a forced rebuild (every stage reused), and an unforced
    rerun (nothing changed: nothing published)."""
    work = tmp_path_factory.mktemp("e2e")
    recipe = {
        "name": "instr-mix",
        "seed": 7,
        "sources": [{"name": "evals", "kind": "files", "path": str(evals_sample), "id": "prompt_id", "text": "text"}],
        "groups": ["task"],
        "embed": {"model": "all-MiniLM-L6-v2", "max_seq_length": 64},
        "cluster": {"k": 12},
        "select": {"method": "stratified", "budget": 140, "mode": "equal"},
        "output": {"root": "out"},
    }
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    env = {"RAY_ADDRESS": ray_session, "PREFECT_API_URL": prefect_api}
    first = run_cli(["build", "recipe.yaml"], env, work)
    second = run_cli(["build", "recipe.yaml", "--force"], env, work)
    third = run_cli(["build", "recipe.yaml"], env, work)
    return work, first, second, env, third


@pytest.mark.slow
def test_build_publishes_a_complete_version(built, evals_sample):
    work, first, *_ = built
    version = Path(first.stdout.strip().splitlines()[-1])  # the last stdout line is the version dir
    assert version == Path("out/instr-mix/v0001") and (work / version).is_dir()
    v = work / version
    assert (work / "out/instr-mix/LATEST").read_text().strip() == "v0002"
    assert sorted(p.name for p in v.iterdir()) == ["data", "manifest.json", "report.parquet"]
    assert verify_version(v) == []  # every file's sha256 and size match the manifest

    manifest = json.loads((v / "manifest.json").read_text())
    for key in ("version", "parent", "created_at", "recipe", "recipe_sha256", "inputs", "seed", "code_version",
                "counts", "files", "timings", "summary"):
        assert key in manifest, key
    assert manifest["seed"] == 7 and manifest["inputs"][0]["units"][0]["sha256"]
    assert set(manifest["timings"]) >= {"ingest", "embed", "cluster", "select"}
    # each stage's peak memory of the flow's process (Prefect tasks run the stages in it)
    assert all(0 < manifest["stages"][s]["peak_rss_gb"] < 24 for s in ("ingest", "embed", "cluster", "select"))
    assert manifest["embedding"]["embedder"].startswith("st:all-MiniLM-L6-v2@")
    pool = pl.read_parquet(evals_sample)
    assert manifest["embedding"]["embedded"] == pool["text"].n_unique()  # each distinct text once

    report = pl.read_parquet(v / "report.parquet")
    assert report.height == pool.height  # one row per candidate
    data = pl.read_parquet(v / "data")
    assert data.height == 140 == int(report["selected"].sum())  # exactly the budget
    assert data["id"].n_unique() == 140 and set(data["id"]) <= set(pool["prompt_id"])
    assert {"text", "task", "lang", "cluster", "reason", "selected_rank"} <= set(data.columns)
    # equal quotas: 7 tasks x 20
    assert data.group_by("task").len()["len"].to_list() == [20] * 7
    assert "groups (7)" in first.stdout and "clusters covered:" in first.stdout


@pytest.mark.slow
def test_rebuild_embeds_nothing_and_gives_identical_shards_stamped_with_their_version(built):
    work = built[0]
    v1, v2 = work / "out/instr-mix/v0001", work / "out/instr-mix/v0002"
    m1, m2 = (json.loads((v / "manifest.json").read_text()) for v in (v1, v2))
    # the rerun reused every stage the first build wrote; nothing was embedded again
    assert {k: v["reused"] for k, v in m1["stages"].items()} == dict.fromkeys(["ingest", "embed", "cluster", "select"], False)
    assert {k: v["reused"] for k, v in m2["stages"].items()} == dict.fromkeys(["ingest", "embed", "cluster", "select"], True)
    assert {k: v["key"] for k, v in m2["stages"].items()} == {k: v["key"] for k, v in m1["stages"].items()}
    assert m2["parent"] == "v0001" and m2["recipe_sha256"] == m1["recipe_sha256"]
    shards = sorted(p.name for p in (v1 / "data").iterdir())
    assert shards == sorted(p.name for p in (v2 / "data").iterdir())
    for rel in [f"data/{name}" for name in shards] + ["report.parquet"]:
        t1, t2 = pq.read_table(v1 / rel), pq.read_table(v2 / rel)
        assert t1.equals(t2)  # the same rows and values; only the version stamp differs
        assert (t1.schema.metadata[b"curation.version"], t2.schema.metadata[b"curation.version"]) == (b"v0001", b"v0002")
        assert m1["files"][rel]["bytes"] == m2["files"][rel]["bytes"]


@pytest.mark.slow
def test_unchanged_rerun_publishes_nothing_and_says_since_which_version(built):
    work, *_, third = built
    lines = third.stdout.strip().splitlines()
    assert lines[0].startswith("unchanged since v0002:") and "--force" in lines[0]
    assert lines[-1] == "out/instr-mix/v0002"  # the last line is still the version directory
    assert (work / "out/instr-mix/LATEST").read_text().strip() == "v0002"
    assert not (work / "out/instr-mix/v0003").exists()
    # Prefect and Ray were never started for it: no flow-run logs
    assert "Created flow run" not in third.stderr and "Starting temporary server" not in third.stderr


@pytest.mark.slow
def test_without_a_prefect_server_the_build_runs_in_process_and_publishes_the_same_shards(built, tmp_path):
    """No PREFECT_API_URL: the library build with Ray placement, no flow run and no temporary
    server; the stage logs still reach stderr, and the version's files equal the flow's."""
    work = built[0]
    (tmp_path / "recipe.yaml").write_text((work / "recipe.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["RAY_ADDRESS"] = built[3]["RAY_ADDRESS"]  # MiniLM embeds on this session's Ray actors
    proc = subprocess.run([CURATE, "build", "recipe.yaml"], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "out/instr-mix/v0001"
    assert "Flow run" not in proc.stderr and "Task run" not in proc.stderr
    assert "curation.builder - embed: started" in proc.stderr and "curation.progress - embedding:" in proc.stderr
    mine, flows = (json.loads((d / "out/instr-mix/v0001/manifest.json").read_text()) for d in (tmp_path, work))
    assert mine["placement"]["ray_actors"] >= 1 and mine["placement"]["nodes"]
    assert {rel: f["sha256"] for rel, f in mine["files"].items()} == {
        rel: f["sha256"] for rel, f in flows["files"].items()}


@pytest.mark.slow
def test_build_tags_its_flow_run_with_dataset_and_method_but_not_its_tasks(built):
    """The UI filters runs by tag; tasks stay untagged so none waits on a tag concurrency lease."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, TaskRunFilter, TaskRunFilterFlowRunId

    with get_client(sync_client=True) as client:  # this session's Prefect (PREFECT_API_URL)
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_="instr-mix v0")))
        assert sorted(r.name for r in runs) == ["instr-mix v0001", "instr-mix v0002"]
        assert all(set(r.tags) == {"instr-mix", "stratified"} for r in runs)
        tasks = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[r.id for r in runs])))
    assert sorted(t.name.rsplit("-", 1)[0] for t in tasks if t.flow_run_id == runs[0].id) == sorted(
        ["ingest", "embed", "cluster", "select", "publish"])
    assert [t.tags for t in tasks] == [[]] * len(tasks)


@pytest.mark.slow
def test_report_summary_sql_and_formats(built):
    work, _, _, env, _ = built
    summary = run_cli(["report", "out/instr-mix"], env, work).stdout
    assert "dataset instr-mix v0002" in summary and "budget_used" in summary
    old = run_cli(["report", "out/instr-mix", "--version", "v0001"], env, work).stdout
    assert "dataset instr-mix v0001" in old
    sql = 'SELECT task, COUNT(*) AS n FROM selected GROUP BY task ORDER BY task'
    table = run_cli(["report", "out/instr-mix", "--sql", sql], env, work).stdout.splitlines()
    assert table[0].split() == ["task", "n"] and len(table) == 2 + 7
    csv = run_cli(["report", "out/instr-mix", "--sql", sql, "--format", "csv"], env, work).stdout.splitlines()
    assert csv[0] == "task,n" and all(line.endswith(",20") for line in csv[1:])
    rows = json.loads(run_cli(["report", "out/instr-mix", "--sql",
                               "SELECT COUNT(*) AS n FROM report WHERE NOT selected", "--format", "json"], env, work).stdout)
    assert rows == [{"n": 420 - 140}]
    bad = run_cli(["report", "out/instr-mix", "--sql", "SELECT nope FROM report"], env, work, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def page_charts(html: str) -> dict[str, dict[str, dict[str, float]]]:
    """Each chart of the report page by its caption: {series: {category (full label): value}},
    read from the figure data the page hands to ``Plotly.newPlot`` (bar charts; a bar's full
    category label is its ``customdata``, the axis may show it cut)."""
    import re
    from html import unescape

    decoder, charts = json.JSONDecoder(), {}
    for m in re.finditer(r"<figure><figcaption>(.*?)</figcaption>", html):
        call = re.compile(r'Plotly\.newPlot\(\s*"[^"]+",\s*').search(html, m.end())
        data, _ = decoder.raw_decode(html, call.end())
        charts[unescape(m.group(1))] = {t["name"]: dict(zip(t.get("customdata") or t["x"], t["y"]))
                                        for t in data if t["type"] == "bar"}
    return charts


@pytest.mark.slow
def test_html_report_plots_show_the_group_shares_and_cluster_counts(built):
    work, _, _, env, _ = built
    out = run_cli(["report", "out/instr-mix", "--html", "r.html"], env, work).stdout.strip()
    assert out == "r.html"
    html = (work / "r.html").read_text()
    assert "<h1>instr-mix <small>v0002</small></h1>" in html and "clusters covered: " in html
    charts = page_charts(html)
    # what each chart should show, computed from the report table (not from the HTML)
    report = pl.read_parquet(work / "out/instr-mix/v0002/report.parquet")
    picked = report.filter(pl.col("selected"))
    groups = sorted(report["group"].unique())
    assert len(groups) == 7

    def shares(df):
        return {g: round(n / df.height, 4) for g, n in df.group_by("group").len().iter_rows()}

    shown = charts["Group shares before and after selection"]  # all 7 groups: none left out of the chart
    assert {k: {g: round(v, 4) for g, v in shown[k].items()} for k in ("pool share", "selected share")} == {
        "pool share": shares(report), "selected share": shares(picked)}
    assert set(shares(report)) == set(groups) and set(shares(picked).values()) == {0.1429}  # 20 of 140 each

    per = report.filter(pl.col("cluster").is_not_null()).group_by("cluster").agg(pl.len().alias("pool"), pl.col("selected").sum().alias("selected"))
    assert charts["Items per cluster: pool and selected"] == {
        "pool": {str(c): float(n) for c, n, _ in per.iter_rows()},
        "selected": {str(c): float(s) for c, _, s in per.iter_rows()}}
    assert per.height == 12 and per["selected"].sum() == 140


@pytest.mark.slow
def test_bad_data_in_a_real_run_gives_one_clear_line(built):
    """A data error found inside the flow: exit 2, the fix on the last line, no traceback anywhere."""
    work, _, _, env, _ = built
    proc = run_cli(["build", "recipe.yaml", "--set", "select.budget=100000"], env, work, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: budget=100000 should be <= n_samples=420. The pool has only 420 usable items; "
        "lower select.budget or add data.")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert (work / "out/instr-mix/LATEST").read_text().strip() == "v0002"  # nothing new published


@pytest.mark.slow
def test_versions_diff_explain_and_verify_on_a_real_build(built):
    work, _, _, env, _ = built
    # a third version whose recipe differs only in the budget (every stage but select reused)
    run_cli(["build", "recipe.yaml", "--set", "select.budget=161"], env, work)
    versions = run_cli(["versions", "out/instr-mix"], env, work).stdout.splitlines()
    assert versions[0].split() == ["version", "created_at", "method", "budget", "selected", "pool", "skipped",
                                   "recipe", "parent"]
    rows = [line.split() for line in versions[2:]]
    assert [r[0] for r in rows] == ["v0001", "v0002", "v0003"] and rows[2][1] == "*"  # * marks LATEST
    assert rows[2][4:6] == ["161", "161"] and rows[2][-1] == "v0002" and rows[0][-1] != "v0001"

    diff = json.loads(run_cli(["diff", "out/instr-mix", "v0002", "v0003", "--format", "json"], env, work).stdout)
    sel = {v: set(pl.read_parquet(work / f"out/instr-mix/{v}/report.parquet").filter(pl.col("selected"))["id"])
           for v in ("v0002", "v0003")}
    assert set(diff["added"]) == sel["v0003"] - sel["v0002"] and set(diff["removed"]) == sel["v0002"] - sel["v0003"]
    assert len(diff["added"]) - len(diff["removed"]) == 21
    assert diff["recipe"] == [{"key": "select.budget", "a": 140, "b": 161}] and diff["inputs"] == []
    text = run_cli(["diff", "out/instr-mix", "v0002", "v0003"], env, work).stdout
    assert text.startswith(f"dataset instr-mix: v0002 -> v0003: {len(diff['added'])} added") and "select.budget" in text
    csv = run_cli(["diff", "out/instr-mix", "v0002", "v0003", "--format", "csv"], env, work).stdout.splitlines()
    assert csv[0].startswith("id,change,") and len(csv) == 1 + len(diff["added"]) + len(diff["removed"])

    item = diff["added"][0]
    said = run_cli(["explain", "out/instr-mix", item], env, work).stdout
    assert said.startswith(f"{item} in instr-mix v0003: IN the selection") and "cluster " in said
    facts = json.loads(run_cli(["explain", "out/instr-mix", item, "--format", "json"], env, work).stdout)
    assert facts["status"] == "selected" and facts["location"].rsplit(":", 1)[0].endswith("sample.parquet")
    assert facts["groups"]["task"] == facts["group"]  # groups: [task]
    ok = run_cli(["verify", "out/instr-mix"], env, work).stdout
    assert ok.startswith("ok: 3 version(s)")
