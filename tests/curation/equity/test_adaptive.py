"""The sequential adaptive loop (docs/methods/group-adaptive.md#adaptive-allocation, #invariants)."""

from __future__ import annotations

import numpy as np
import pytest

from curation.equity import (
    PowerLaw,
    adaptive_allocate,
    equal_allocation,
    group_errors,
    oracle_allocation,
    proportional_allocation,
)
from curation.exceptions import DataError, InvalidParameterError

TRUE = [PowerLaw(1.0, 0.5, 0.05), PowerLaw(3.0, 0.4, 0.02), PowerLaw(2.0, 0.6, 0.1)]
KAPPA = np.array([1.0, 1.0, 2.0])
UNLIMITED = np.full(3, np.inf)


def synthetic(curves, noise: float = 0.0):
    """evaluate(): the true curves at the counts, optionally with multiplicative log-normal noise."""
    def evaluate(counts, rng):
        err = np.array([cv.error(k) if k > 0 else np.nan for cv, k in zip(curves, counts)])
        return err * np.exp(rng.normal(0.0, noise, len(err))) if noise else err
    return evaluate


@pytest.mark.parametrize("mode", ["replan", "gradient", "worst-group"])
def test_feasible_at_every_step_and_pilot_floor_kept(mode):
    cap = np.array([np.inf, 30, np.inf])  # group 1 has fewer items than the pilot asks for
    r = adaptive_allocate(cap, KAPPA, 1549, evaluate=synthetic(TRUE, noise=0.05), rng=0, n0=40, step_frac=0.07,
                          repeats=2, explore_p=0.3, shares=[0.6, 0.3, 0.1], mode=mode)
    assert r.history[0]["action"] == "pilot" and r.history[0]["counts"] == [40, 30, 40]
    prev = np.zeros(3)
    for h in r.history:
        counts = np.array(h["counts"])
        assert (KAPPA * counts).sum() <= 1549 + 1e-9
        assert h["spent"] == pytest.approx((KAPPA * counts).sum())
        assert (counts >= np.minimum(40, cap)).all() and (counts <= cap).all()
        assert (counts >= prev).all()
        prev = counts
    assert 0 <= 1549 - r.spent < KAPPA[np.asarray(r.counts) < cap].min()
    assert r.stop_reason == "budget"
    assert any(h["action"] == "explore" for h in r.history)


def test_identical_groups_adaptive_matches_equal_and_static_up_to_one_batch():
    same = [PowerLaw(2.0, 0.5, 0.05)] * 3
    for objective in ("maxmin", "weighted"):
        r = adaptive_allocate(UNLIMITED, [1, 1, 1], 1200, evaluate=synthetic(same), rng=0, objective=objective,
                              n0=20, step_frac=0.05, repeats=1)
        batch = 0.05 * 1200
        eq = equal_allocation([1, 1, 1], 1200)
        static = oracle_allocation(same, [1, 1, 1], 1200, objective=objective)
        assert np.abs(r.counts - eq).max() <= batch
        assert np.abs(static - eq).max() <= 1
        assert r.counts.sum() == 1200


@pytest.mark.parametrize("objective", ["maxmin", "weighted"])
def test_adaptive_noiseless_is_near_oracle_and_beats_equal_and_proportional(objective):
    def value(n):
        e = group_errors(TRUE, n)
        return e.max() if objective == "maxmin" else e.mean()

    r = adaptive_allocate(UNLIMITED, KAPPA, 3000, evaluate=synthetic(TRUE), rng=0, objective=objective, n0=20,
                          step_frac=0.02, repeats=1)
    oracle = oracle_allocation(TRUE, KAPPA, 3000, objective=objective)
    assert (KAPPA * r.counts).sum() <= 3000
    assert value(r.counts) <= 1.05 * value(oracle)
    assert value(r.counts) < value(equal_allocation(KAPPA, 3000)) - 1e-3
    assert value(r.counts) < value(proportional_allocation([0.6, 0.3, 0.1], KAPPA, 3000)) - 1e-3
    # noiseless points: the fitted curves are the true ones
    for fitted, true in zip(r.power_laws(), TRUE):
        assert fitted.b == pytest.approx(true.b, rel=1e-3)
    np.testing.assert_allclose(r.predicted_errors, group_errors(TRUE, r.counts), rtol=1e-3)


def test_worst_group_mode_buys_from_the_measured_worst_group_and_skips_full_groups():
    cap = np.array([np.inf, 200, np.inf])
    r = adaptive_allocate(cap, KAPPA, 1500, evaluate=synthetic(TRUE), rng=0, mode="worst-group", n0=20,
                          step_frac=0.05, repeats=1)
    assert r.mode == "worst-group" and r.counts[1] == 200
    skipped_full = False
    for h in r.history[1:]:
        errs = np.array(h["errors"])
        ranked = [g for g in np.argsort(-errs, kind="stable")]
        passed = [s["group"] for s in h["skipped"]]
        assert ranked[: len(passed) + 1] == passed + [h["group"]]  # served the worst group that could take data
        skipped_full |= any(s["group"] == 1 and s["reason"] == "full" for s in h["skipped"])
    assert skipped_full


def test_same_seed_same_result_with_noise_and_bootstrap():
    kw = dict(evaluate=synthetic(TRUE, noise=0.1), n0=20, step_frac=0.1, repeats=2, bootstrap=10,
              explore_p=0.2, shares=[0.5, 0.3, 0.2])
    a = adaptive_allocate(UNLIMITED, KAPPA, 1000, rng=3, **kw)
    b = adaptive_allocate(UNLIMITED, KAPPA, 1000, rng=3, **kw)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert a.curves == b.curves and a.history == b.history
    assert all(np.isfinite(c["a_std"]) for c in a.curves)


def test_explore_every_batch_follows_the_population_mix():
    r = adaptive_allocate(UNLIMITED, [1, 1, 1], 1000, evaluate=synthetic(TRUE), rng=0, n0=10, step_frac=0.1,
                          repeats=1, explore_p=1.0, shares=[0.7, 0.2, 0.1])
    assert all(h["action"] == "explore" for h in r.history[1:])
    np.testing.assert_allclose((r.counts - 10) / (r.counts - 10).sum(), [0.7, 0.2, 0.1], atol=0.01)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(budget=50), InvalidParameterError, r"The 'budget' parameter \(50\) cannot pay for the pilot: n0=20"),
    (dict(costs=[1, -1, 1]), InvalidParameterError, r"The 'costs' parameter must be finite and > 0"),
    (dict(costs=[1, 1]), InvalidParameterError, r"The 'costs' parameter must have one value per group \(3\)"),
    (dict(capacity=[10, 2.5, 10]), InvalidParameterError, r"The 'capacity' parameter must hold whole numbers"),
    (dict(explore_p=0.5), InvalidParameterError, r"The 'shares' parameter of adaptive_allocate is required"),
    (dict(mode="greedy"), InvalidParameterError, r"The 'mode' parameter of adaptive_allocate must be one of"),
    (dict(step_frac=0.0), InvalidParameterError, r"The 'step_frac' parameter of adaptive_allocate must be a number "
                                                 r"in the range \(0, 1\]\. Got 0\.0 instead"),
    (dict(n0=0), InvalidParameterError, r"The 'n0' parameter of adaptive_allocate must be an int"),
    (dict(fractions=(0.0, 1.0)), InvalidParameterError, r"The 'fractions' parameter"),
    (dict(evaluate=lambda counts, rng: np.zeros(2)), DataError, r"evaluate must return one error per group"),
])
def test_invalid_inputs(kwargs, error, message):
    args = dict(capacity=UNLIMITED, costs=KAPPA, budget=1000, evaluate=synthetic(TRUE), rng=0, n0=20)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        adaptive_allocate(args.pop("capacity"), args.pop("costs"), args.pop("budget"), **args)


# A flat, high curve (b near 0: 5,000 more items lower it by < 0.002) beside two that learn.
FLAT = [PowerLaw(0.4, 0.0005, 0.0), PowerLaw(1.0, 0.5, 0.05), PowerLaw(2.0, 0.5, 0.05)]


@pytest.mark.parametrize("mode", ["replan", "gradient"])
def test_maxmin_stops_buying_a_group_whose_curve_is_flat(mode):
    cap = np.array([3000, np.inf, np.inf])
    off = adaptive_allocate(cap, [1, 1, 1], 3000, evaluate=synthetic(FLAT), rng=0, n0=50, step_frac=0.05,
                            repeats=1, mode=mode, flat_tol=0.0)
    on = adaptive_allocate(cap, [1, 1, 1], 3000, evaluate=synthetic(FLAT), rng=0, n0=50, step_frac=0.05,
                           repeats=1, mode=mode, flat_tol=0.005)
    assert off.counts[0] > 1000  # without the rule MaxMin pours the budget into the flat, worst group
    assert on.counts[0] == 50 and on.counts.sum() == 3000  # with it: the pilot only, the rest elsewhere
    assert any(0 in h.get("flat", []) for h in on.history[1:])
    # what the rule gives up on the flat group is tiny; what it buys for the others is not
    err_on, err_off = group_errors(FLAT, on.counts), group_errors(FLAT, off.counts)
    assert err_on[0] - err_off[0] < 0.005
    assert (err_off[1:] - err_on[1:]).max() > 0.005


def test_oracle_holds_a_flat_group_at_its_minimum():
    with_rule = oracle_allocation(FLAT, [1, 1, 1], 3000, capacity=[3000, np.inf, np.inf], minimum=[50, 50, 50],
                                  flat_tol=0.005)
    without = oracle_allocation(FLAT, [1, 1, 1], 3000, capacity=[3000, np.inf, np.inf], minimum=[50, 50, 50])
    assert with_rule[0] == 50 and with_rule.sum() == 3000
    assert without[0] > 1000


def test_a_group_without_data_is_never_flat():
    from curation.equity.static import flat_groups

    assert flat_groups(FLAT, [1, 1, 1], 3000, minimum=[0, 50, 50]).tolist() == [False, False, False]
    assert flat_groups(FLAT, [1, 1, 1], 3000, minimum=[50, 50, 50], flat_tol=0.0).tolist() == [False] * 3


def test_when_every_group_is_flat_the_oracle_still_spends_the_budget():
    flat3 = [PowerLaw(0.4, 0.0005, 0.0), PowerLaw(0.3, 0.0004, 0.0), PowerLaw(0.2, 0.0003, 0.0)]
    n = oracle_allocation(flat3, [1, 1, 1], 3000, capacity=[5000] * 3, minimum=[50] * 3, flat_tol=0.005)
    assert n.sum() == 3000 and (n >= 50).all()


def test_budget_the_learning_groups_cannot_take_goes_to_the_flat_group():
    n = oracle_allocation(FLAT, [1, 1, 1], 3000, capacity=[3000, 400, 400], minimum=[50, 50, 50], flat_tol=0.005)
    assert n.tolist()[1:] == [400, 400] and n.sum() == 3000
