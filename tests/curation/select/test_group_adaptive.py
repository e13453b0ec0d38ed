"""group-adaptive: allocations across groups from their learning curves (docs/methods/group-adaptive.md#equitable-group-allocation-group-adaptive)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from curation.exceptions import DataError, InvalidParameterError
from curation.select import GroupAdaptiveSelector
from curation.types import Pool, Reference


def two_groups(seed=0, n=6000, minority=0.2, n_ref=1500):
    """Group b is the minority and has its own features (a block of the vectors), so one shared
    linear model learns each group from that group's items: the curves do not interact."""
    rng = np.random.default_rng(seed)

    def draw(m, p_b):
        g = (rng.random(m) < p_b).astype(np.int64)
        X = np.zeros((m, 8))
        z = rng.normal(size=(m, 4))
        X[g == 0, :4] = z[g == 0]
        X[g == 1, 4:] = z[g == 1]
        w = np.array([1.0, -1.0, 0.5, 0.0])
        noise = np.where(g == 1, 1.5, 0.3)  # b is harder: its curve starts higher
        y = ((z @ w) + noise * rng.logistic(size=m) > 0).astype(np.int64)
        return X.astype(np.float32), y, g

    X, y, g = draw(n, minority)
    Xr, yr, gr = draw(n_ref, 0.5)
    return Pool(ids=np.arange(n).astype(str), embeddings=X, groups=g, group_names=("a", "b"), labels=y,
                reference=Reference(ids=np.arange(n_ref).astype(str), embeddings=Xr, labels=yr, groups=gr))


def select(pool, budget=600, seed=0, **kw):
    return GroupAdaptiveSelector(**{"n0": 30, "step_frac": 0.1, **kw}).select(pool, budget, rng=np.random.default_rng(seed))


def test_baselines_give_equal_and_proportional_counts():
    pool = two_groups()
    eq = select(pool, allocation="equal").info["equity"]["groups"]
    assert [g["n"] for g in eq] == [300, 300]
    prop = select(pool, allocation="proportional").info["equity"]["groups"]
    share_b = pool.group_sizes()[1] / len(pool)
    assert sum(g["n"] for g in prop) == 600 and abs(prop[1]["n"] - 600 * share_b) <= 1


def test_adaptive_maxmin_helps_the_worst_group_within_budget():
    pool = two_groups()
    prop = select(pool, allocation="proportional").info["equity"]
    sel = select(pool, allocation="adaptive")
    eq = sel.info["equity"]
    counts = [g["n"] for g in eq["groups"]]
    assert sum(counts) <= 600 and min(counts) >= 30  # budget; the pilot floor
    assert len(sel.indices) == sum(counts) and len(set(sel.indices.tolist())) == len(sel.indices)
    assert np.bincount(pool.groups[sel.indices], minlength=2).tolist() == counts
    assert counts[1] > prop["groups"][1]["n"]  # the harder minority gets more than its share
    assert eq["worst_group_error"] <= prop["worst_group_error"]
    assert all(g["a"] is not None and g["predicted_error"] is not None for g in eq["groups"])
    steps = sel.columns["allocation_step"][sel.indices]
    assert steps.min() == 1 and (steps >= 1).all()  # every selected item was bought at some step
    assert eq["history"][0]["action"] == "pilot"


def test_costs_turn_the_budget_into_a_cost_budget_and_unknown_groups_are_named():
    pool = two_groups()
    eq = select(pool, allocation="equal", costs={"b": 3}).info["equity"]["groups"]
    assert eq[0]["n"] + 3 * eq[1]["n"] <= 600 and eq[0]["n"] == eq[1]["n"]
    with pytest.raises(InvalidParameterError, match=r"select.costs names group\(s\) \['c'\]"):
        select(pool, costs={"c": 2})


def test_a_tiny_group_gives_all_it_has_and_the_report_says_so():
    pool = two_groups(n=3000, minority=0.02)
    sel = select(pool, budget=1000, allocation="equal", n0=10)
    eq = sel.info["equity"]
    b = eq["groups"][1]
    assert b["n"] == b["available"] == pool.group_sizes()[1]
    assert eq["short_groups"] == ["b"] and eq["groups"][0]["n"] == 1000 - b["n"]


def test_without_a_reference_it_holds_out_part_of_the_pool():
    pool = replace(two_groups(n=2000), reference=None)
    sel = GroupAdaptiveSelector(allocation="proportional", validation=0.25).select(pool, 300, rng=np.random.default_rng(0))
    held = [i for i, r in enumerate(sel.reasons) if "held out" in r]
    assert abs(len(held) - 500) <= 4 and not set(held) & set(sel.indices.tolist())
    assert sel.info["validation_rows"] == len(held)


def test_labels_are_required_and_the_pilot_must_fit():
    pool = two_groups(n=1000)
    with pytest.raises(DataError, match="needs labels"):
        select(replace(pool, labels=None))
    with pytest.raises(InvalidParameterError, match="cannot pay the pilot"):
        select(pool, budget=50, n0=30)


def test_oracle_on_non_interacting_groups_matches_adaptive_direction():
    pool = two_groups()
    oracle = select(pool, allocation="oracle").info["equity"]
    prop = select(pool, allocation="proportional").info["equity"]
    assert oracle["groups"][1]["n"] > prop["groups"][1]["n"] and set(oracle["curves"]) == {"a", "b"}


def test_the_check_keeps_a_baseline_the_proxy_measures_better_than_a_bad_plan(monkeypatch):
    """A plan that spends everything past the pilot on the easy group loses to both baselines on
    the held-out rows: the selector ships the better baseline, says so, and its measured errors
    are those of the kept counts."""
    import curation.select.group_adaptive as ga

    real = ga.adaptive_allocate

    def lopsided(cap, costs, budget, **kw):
        res = real(cap, costs, budget, **kw)
        counts = np.array([budget - 30, 30], dtype=np.int64)  # group b stays at its pilot
        return replace(res, counts=counts)

    monkeypatch.setattr(ga, "adaptive_allocate", lopsided)
    pool = two_groups()
    sel = select(pool, allocation="adaptive")
    eq = sel.info["equity"]
    check = eq["check"]
    scores = {k: c["objective"] for k, c in check["candidates"].items()}
    assert set(scores) == {"adaptive", "proportional", "equal"}
    assert check["kept"] != "adaptive" and scores[check["kept"]] == min(scores.values()) < scores["adaptive"]
    kept = check["candidates"][check["kept"]]["counts"]
    assert np.bincount(pool.groups[sel.indices], minlength=2).tolist() == kept
    assert [g["n"] for g in eq["groups"]] == kept
    assert check["candidates"]["adaptive"]["counts"] == [570, 30]
    # the shipped rows are the rows the check measured: the same proxy error
    assert eq["worst_group_error"] == pytest.approx(scores[check["kept"]], abs=1e-4)
    assert all(f"the {check['kept']} counts measured better" in sel.reasons[i] for i in sel.indices)
    assert "allocation_step" not in sel.columns  # the loop's steps did not buy these rows


def test_the_check_keeps_a_plan_that_measures_best_and_can_be_turned_off():
    """On two non-interacting groups the plan (more of the harder minority) measures better than
    both baselines, so the check ships the plan's rows, exactly those of the unchecked selector."""
    pool = two_groups()
    sel = select(pool, allocation="adaptive")
    check = sel.info["equity"]["check"]
    scores = {k: c["objective"] for k, c in check["candidates"].items()}
    assert check["kept"] == "adaptive" and scores["adaptive"] < min(scores["equal"], scores["proportional"])
    plain = select(pool, allocation="adaptive", check=False)
    assert "check" not in plain.info["equity"]
    assert check["candidates"]["adaptive"]["counts"] == [g["n"] for g in plain.info["equity"]["groups"]]
    assert sorted(sel.indices.tolist()) == sorted(plain.indices.tolist())
    assert (sel.columns["allocation_step"] == plain.columns["allocation_step"]).all()
