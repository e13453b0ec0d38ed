"""The stage store: content-addressed keys, reuse, atomic writes, stale temporaries, garbage collection."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from curation.stages import StageStore, remove_stale_tmp, stage_key, tmp_name

BASE = {"name": "cluster", "version": 1, "sections": {"cluster": {"k": 8}, "seed": 1}, "inputs": {"embed": "abc"}}


@pytest.mark.parametrize("change", [
    {"name": "select"},
    {"version": 2},
    {"sections": {"cluster": {"k": 9}, "seed": 1}},
    {"sections": {"cluster": {"k": 8}, "seed": 2}},
    {"inputs": {"embed": "abd"}},
])
def test_stage_key_changes_with_each_part(change):
    assert stage_key(**{**BASE, **change}) != stage_key(**BASE)


def test_stage_key_ignores_mapping_order():
    a = stage_key("x", 1, {"a": 1, "b": {"c": 2, "d": 3}}, {"p": "1", "q": "2"})
    b = stage_key("x", 1, {"b": {"d": 3, "c": 2}, "a": 1}, {"q": "2", "p": "1"})
    assert a == b and len(a) == 24


def test_run_computes_once_then_reuses(tmp_path):
    store = StageStore(tmp_path)
    calls = []

    def produce(d):
        calls.append(d)
        (d / "x.txt").write_text("hello")
        return {"rows": 3, "nan_free": [1.5]}

    first = store.run("ingest", "k1", produce)
    second = store.run("ingest", "k1", produce)
    assert len(calls) == 1 and not first.reused and second.reused
    assert first.dir == second.dir == tmp_path / ".stages/ingest/k1"
    assert (second.dir / "x.txt").read_text() == "hello"
    assert first.record == second.record == {"rows": 3, "nan_free": [1.5]}
    assert store.run("ingest", "k2", produce).reused is False and len(calls) == 2


def test_a_failing_stage_leaves_no_entry_and_no_temporary(tmp_path):
    store = StageStore(tmp_path)

    def boom(d):
        (d / "half.npy").write_bytes(b"x" * 10)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        store.run("embed", "k", boom)
    assert store.lookup("embed", "k") is None
    assert list((tmp_path / ".stages/embed").iterdir()) == []


def test_stale_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live = tmp_path / tmp_name()  # this process's: alive
    host = live.name.split("-", 1)[1].rsplit("-", 2)[0]
    stale = tmp_path / f".tmp-{host}-{dead_pid}-0123456789ab"
    foreign = tmp_path / ".tmp-otherhost-1-0123456789ab"  # another host's: only after a day untouched
    for d in (live, stale, foreign):
        d.mkdir()
    assert remove_stale_tmp(tmp_path) == [stale]
    old = time.time() - 2 * 86_400
    os.utime(foreign, (old, old))
    assert remove_stale_tmp(tmp_path) == [foreign]
    assert live.is_dir()


def _entry(store, name, key, nbytes, age_days):
    run = store.run(name, key, lambda d: (d / "blob").write_bytes(b"x" * nbytes) or {})
    t = time.time() - age_days * 86_400
    os.utime(run.dir / "record.json", (t, t))
    return run.dir


def test_collect_removes_old_then_least_recently_used_and_keeps_protected(tmp_path):
    store = StageStore(tmp_path)
    old = _entry(store, "embed", "old", 100, age_days=30)
    old_kept = _entry(store, "embed", "old-but-in-use", 100, age_days=30)
    lru = _entry(store, "cluster", "lru", 1000, age_days=3)
    recent = _entry(store, "cluster", "recent", 1000, age_days=1)
    removed = store.collect(max_age_days=14, max_bytes=1500, keep=[old_kept])
    assert sorted(removed) == sorted([old, lru])
    assert recent.is_dir() and old_kept.is_dir()
    # under both limits: nothing more goes while in use; unprotected, the old entry goes too
    assert store.collect(max_age_days=14, max_bytes=1500, keep=[old_kept]) == []
    assert store.collect(max_age_days=14, max_bytes=1500) == [old_kept] and recent.is_dir()


def test_reuse_refreshes_last_used(tmp_path):
    store = StageStore(tmp_path)
    d = _entry(store, "embed", "k", 10, age_days=30)
    store.run("embed", "k", lambda d: {})  # reused: now "recently used"
    assert store.collect(max_age_days=14, max_bytes=10**9) == [] and d.is_dir()


def test_a_missing_model_fails_before_any_stage_runs(tmp_path, evals_sample):
    import curation

    recipe = {"name": "m", "sources": [{"name": "e", "kind": "files", "path": str(evals_sample), "text": "text"}],
              "embed": {"model": str(tmp_path / "no-such-model")}, "select": {"method": "random", "budget": 5},
              "output": {"root": str(tmp_path / "out")}}
    with pytest.raises(FileNotFoundError, match="neither a packaged model"):
        curation.build(recipe)
    assert not (tmp_path / "out").exists()  # nothing read, nothing written
    with pytest.raises(curation.InvalidParameterError, match=r"embed.model='hashing:abc'"):
        curation.build({**recipe, "embed": {"model": "hashing:abc"}})


def test_each_stage_records_its_own_peak_memory_and_a_reused_stage_none(tmp_path, evals_sample, monkeypatch):
    """A stage that holds 300 MB shows it in its own ``peak_rss_gb`` only: the peak is reset
    before each stage, so the next stage's peak does not inherit it. The summary prints them."""
    import curation
    import curation.pipeline
    from curation.report import format_summary

    cluster = curation.pipeline.cluster

    def cluster_holding_300mb(*args, **kwargs):
        held = np.ones(300 * 2**20 // 8)  # touched: resident
        labels, facts = cluster(*args, **kwargs)
        del held
        return labels, facts

    monkeypatch.setattr(curation.pipeline, "cluster", cluster_holding_300mb)
    recipe = {"name": "peaks", "sources": [{"name": "e", "kind": "files", "path": str(evals_sample), "text": "text"}],
              "embed": {"model": "hashing"}, "cluster": {"k": 4}, "select": {"method": "random", "budget": 5},
              "output": {"root": str(tmp_path / "out")}}
    stages = curation.build(recipe).manifest["stages"]
    peaks = {k: st["peak_rss_gb"] for k, st in stages.items()}
    assert set(peaks) == {"ingest", "embed", "cluster", "select"}
    assert peaks["cluster"] - max(peaks["embed"], peaks["select"]) > 0.25
    again = curation.build({**recipe, "select": {"method": "random", "budget": 6}})
    assert "peak_rss_gb" not in again.manifest["stages"]["cluster"]  # reused: nothing ran
    assert "peak_rss_gb" in again.manifest["stages"]["select"]
    assert "peak memory of the building process (GB): select=" in format_summary(again.manifest)
    from curation.html_report import render_html

    page = render_html(again.path.parent, again.name)
    assert "<th>peak memory (GB)</th>" in page and "Peak memory: the building process" in page
