"""Static optima, integer rounding, baselines and metrics (docs/methods/group-adaptive.md#algorithms, #invariants, #the-maxmin-objective)."""

from __future__ import annotations

import numpy as np
import pytest

from curation.allocation import allocate
from curation.equity import (
    PowerLaw,
    equal_allocation,
    error_summary,
    gap,
    group_errors,
    integer_allocation,
    maxmin_optimum,
    oracle_allocation,
    proportional_allocation,
    weighted_optimum,
    worst_group,
)
from curation.exceptions import InvalidParameterError

TWO = [PowerLaw(1.0, 0.5, 0.0), PowerLaw(4.0, 0.5, 0.0)]


# ---------------------------------------------------------------- known answers (§3.4 tests 3-5)


def test_maxmin_known_answer():
    r = maxmin_optimum(TWO, [1, 1], 1000)
    np.testing.assert_allclose(r.n, [58.82, 941.18], atol=0.01)
    np.testing.assert_allclose(r.errors, [0.13038, 0.13038], atol=1e-5)
    assert r.level == pytest.approx(0.13038, abs=1e-5)
    assert not r.floor_limited and r.floor_groups == ()
    assert r.gap == pytest.approx(0.0, abs=1e-12)


def test_weighted_known_answer():
    n = weighted_optimum(TWO, [1, 1], 1000, [0.5, 0.5])
    np.testing.assert_allclose(n, [284.1, 715.9], atol=0.05)
    assert n[1] / n[0] == pytest.approx(4 ** (1 / 1.5), rel=1e-9)
    assert n[1] / n[0] == pytest.approx(2.5198, abs=1e-4)


def test_utilitarian_with_population_weights_is_flatter_than_proportional():
    pi = np.array([0.9, 0.1])
    curves = [PowerLaw(2.0, 0.5, 0.05)] * 2
    n = weighted_optimum(curves, [1, 1], 1000, weights=pi)
    expected = pi ** (1 / 1.5) / (pi ** (1 / 1.5)).sum() * 1000
    np.testing.assert_allclose(n, expected, rtol=1e-9)
    assert n[1] / n.sum() > pi[1]  # the minority gets more than its population share


def test_weighted_closed_form_with_costs_and_kkt_with_mixed_exponents():
    curves = [PowerLaw(1.0, 0.4), PowerLaw(3.0, 0.4), PowerLaw(2.0, 0.4)]
    kappa, w = np.array([1.0, 2.0, 0.5]), np.array([0.2, 0.3, 0.5])
    n = weighted_optimum(curves, kappa, 500, w)
    shape = (w * np.array([1.0, 3.0, 2.0]) / kappa) ** (1 / 1.4)
    np.testing.assert_allclose(n / n.sum(), shape / shape.sum(), rtol=1e-9)
    assert (kappa * n).sum() == pytest.approx(500, rel=1e-12)
    # different exponents: the KKT marginal gain per unit cost is equal across groups
    curves = [PowerLaw(1.0, 0.3, 0.1), PowerLaw(3.0, 0.7), PowerLaw(2.0, 1.1, 0.02)]
    n = weighted_optimum(curves, kappa, 500, w)
    marginal = [w[g] * -curves[g].derivative(n[g]) / kappa[g] for g in range(3)]
    np.testing.assert_allclose(marginal, marginal[0], rtol=1e-8)
    assert (kappa * n).sum() == pytest.approx(500, rel=1e-12)


def test_maxmin_equalises_errors_and_no_split_beats_it():
    curves = [PowerLaw(1.0, 0.3, 0.02), PowerLaw(2.0, 0.8, 0.05)]
    kappa = np.array([1.0, 3.0])
    r = maxmin_optimum(curves, kappa, 600)
    assert r.errors[0] == pytest.approx(r.errors[1], rel=1e-9)
    assert (kappa * r.n).sum() == pytest.approx(600, rel=1e-9)
    n0 = np.linspace(1, 599, 5000)
    worst = np.maximum(curves[0].error(n0), curves[1].error((600 - n0) / 3))
    assert worst.min() >= r.level - 1e-9


def test_identical_groups_static_optima_and_equal_allocation_coincide():
    curves = [PowerLaw(2.0, 0.5, 0.1)] * 3
    mm = maxmin_optimum(curves, [1, 1, 1], 900).n
    ws = weighted_optimum(curves, [1, 1, 1], 900)
    np.testing.assert_allclose(mm, [300, 300, 300], rtol=1e-9)
    np.testing.assert_allclose(ws, [300, 300, 300], rtol=1e-9)
    assert equal_allocation([1, 1, 1], 900).tolist() == [300, 300, 300]


# ---------------------------------------------------------------- floors (§6)

FLOOR = [PowerLaw(1.0, 0.5, 0.3), PowerLaw(1.0, 0.5, 0.0), PowerLaw(3.0, 0.5, 0.0)]


def test_unreachable_floor_fixes_the_worst_group_value_for_every_allocation_funding_it():
    tol = 0.01
    need0 = FLOOR[0].need(0.3 + tol)  # 1e4: group 0's floor-level need
    rng = np.random.default_rng(0)
    lows = np.array([need0, FLOOR[1].need(0.3 + tol), FLOOR[2].need(0.3 + tol)])
    for _ in range(200):  # random feasible allocations that fund everyone to the floor level
        extra = rng.dirichlet(np.ones(3)) * (20_000 - lows.sum()) * rng.uniform(0, 1)
        worst = group_errors(FLOOR, lows + extra).max()
        assert 0.3 <= worst <= 0.3 + tol + 1e-12
    for secondary in ("weighted_sum", "leximin"):
        r = maxmin_optimum(FLOOR, [1, 1, 1], 20_000, secondary=secondary, floor_tol=tol)
        assert r.floor_limited and r.floor_groups == (0,)
        assert r.level == pytest.approx(0.3 + tol)
        assert 0.3 <= r.worst <= 0.3 + tol + 1e-12
        assert r.n[0] == pytest.approx(need0)
        assert r.n.sum() == pytest.approx(20_000)


def test_floor_secondary_objectives_decide_the_rest_as_documented():
    ws = maxmin_optimum(FLOOR, [1, 1, 1], 20_000, secondary="weighted_sum", floor_tol=0.01)
    lx = maxmin_optimum(FLOOR, [1, 1, 1], 20_000, secondary="leximin", floor_tol=0.01)
    # leximin: the groups that can still improve are equalised (second MaxMin stage)
    assert lx.errors[1] == pytest.approx(lx.errors[2], rel=1e-9)
    # weighted sum: equal marginal gains a b n^(-b-1) among the groups above their lower bound
    assert ws.n[2] / ws.n[1] == pytest.approx(3 ** (1 / 1.5), rel=1e-6)
    assert ws.errors.mean() < lx.errors.mean() - 1e-3
    assert lx.errors[1:].max() < ws.errors[1:].max() - 1e-3


def test_pure_maxmin_without_floor_tolerance_starves_the_other_groups():
    pure = maxmin_optimum(FLOOR, [1, 1, 1], 20_000, floor_tol=0.0)
    assert not pure.floor_limited
    assert pure.n[0] > 0.99 * 20_000 and np.ptp(pure.errors) < 1e-9
    floored = maxmin_optimum(FLOOR, [1, 1, 1], 20_000, floor_tol=0.01)
    # the worst group is at most floor_tol worse, everyone else far better
    assert floored.worst - pure.worst < 0.01
    assert floored.errors[1:].max() < pure.errors[1:].min() / 5


def test_capacity_acts_as_a_floor():
    r = maxmin_optimum(TWO, [1, 1], 1000, capacity=[np.inf, 500])
    assert r.floor_limited and r.floor_groups == (1,)
    assert r.level == pytest.approx(TWO[1].error(500))
    np.testing.assert_allclose(r.n, [500, 500])


# ---------------------------------------------------------------- integer rounding (§3.4 test 9)


def test_integer_rounding_of_the_known_maxmin_answer():
    r = maxmin_optimum(TWO, [1, 1], 1000)
    n = integer_allocation(r.n, TWO, [1, 1], 1000, objective="maxmin")
    assert n.tolist() == [59, 941] and n.dtype == np.int64


@pytest.mark.parametrize("objective", ["weighted", "maxmin"])
def test_integer_allocation_spends_the_budget_and_is_deterministic(objective):
    curves = [PowerLaw(1.0, 0.5, 0.05), PowerLaw(3.0, 0.4), PowerLaw(2.0, 0.6, 0.1)]
    kappa = np.array([1.0, 3.0, 7.0])
    n_cont = weighted_optimum(curves, kappa, 1000) if objective == "weighted" else maxmin_optimum(
        curves, kappa, 1000).n
    n = integer_allocation(n_cont, curves, kappa, 1000, objective=objective)
    left = 1000 - (kappa * n).sum()
    assert 0 <= left < kappa.min()
    assert np.abs(n - n_cont).max() <= 1000 / kappa.min() * 0.01 + 1  # close to the continuous optimum
    np.testing.assert_array_equal(n, integer_allocation(n_cont, curves, kappa, 1000, objective=objective))


def test_integer_allocation_capacity_redistributes_and_ties_go_to_lower_index():
    n = integer_allocation([600.0, 400.0], TWO, [1, 1], 1000, objective="weighted", capacity=[300, np.inf])
    assert n.tolist() == [300, 700]
    same = [PowerLaw(1.0, 0.5)] * 2
    assert integer_allocation([0.0, 0.0], same, [1, 1], 1, objective="weighted").tolist() == [1, 0]
    # everyone full: the leftover stays unspent rather than breaking a capacity
    n = integer_allocation([5.0, 5.0], TWO, [1, 1], 1000, objective="maxmin", capacity=[10, 20])
    assert n.tolist() == [10, 20]


def test_integer_allocation_minimum_and_errors():
    n_cont = weighted_optimum(TWO, [1, 1], 100, [0.01, 0.99], minimum=[10, 0])
    assert n_cont[0] == pytest.approx(10)  # the minimum binds in the continuous optimum
    n = integer_allocation(n_cont, TWO, [1, 1], 100, objective="weighted", minimum=[10, 0], weights=[0.01, 0.99])
    assert n[0] >= 10 and n.sum() == 100
    with pytest.raises(InvalidParameterError, match=r"The 'minimum' parameter lifts n_cont=\[0.0, 100.0\]"):
        integer_allocation([0.0, 100.0], TWO, [1, 1], 100, objective="weighted", minimum=[10, 0])
    with pytest.raises(InvalidParameterError, match=r"The 'minimum' parameter asks for \[60.0, 60.0\].*budget=100"):
        integer_allocation([0.0, 0.0], TWO, [1, 1], 100, objective="weighted", minimum=60)
    with pytest.raises(InvalidParameterError, match=r"The 'n_cont' parameter costs 200"):
        integer_allocation([100.0, 100.0], TWO, [1, 1], 100, objective="weighted")
    with pytest.raises(InvalidParameterError, match=r"'objective' parameter of integer_allocation must be one of"):
        integer_allocation([1.0, 1.0], TWO, [1, 1], 100, objective="sum")


# ---------------------------------------------------------------- baselines


def test_equal_allocation_formula_costs_and_capacity():
    assert equal_allocation([1, 1, 1], 10).tolist() == [4, 3, 3]
    n = equal_allocation([1, 2, 3], 100)
    assert (n >= 100 // 6).all() and 0 <= 100 - (np.array([1, 2, 3]) * n).sum() < 1
    # a small group gives what it has; the others share the rest equally
    assert equal_allocation([1, 1, 1], 90, capacity=[10, 100, 100]).tolist() == [10, 40, 40]
    assert equal_allocation([1, 2], 90, capacity=[10, 100]).tolist() == [10, 40]


def test_proportional_allocation_formula_costs_and_capacity():
    # n_g = π_g B / Σ π_h κ_h
    assert proportional_allocation([0.8, 0.2], [1, 3], 140).tolist() == [80, 20]
    assert proportional_allocation([0.5, 0.5], [1, 1], 100, capacity=[10, 1000]).tolist() == [10, 90]
    assert proportional_allocation([0.5, 0.5], [1, 2], 100, capacity=[10, 1000]).tolist() == [10, 45]
    # equal costs: exactly the library's largest-remainder allocation
    shares, cap = np.array([0.55, 0.3, 0.15]), np.array([40, 1000, 1000])
    assert proportional_allocation(shares, [2, 2, 2], 201, capacity=cap).tolist() == \
        allocate(shares, 100, cap).tolist()


# ---------------------------------------------------------------- metrics, oracle, validation


def test_metrics():
    e = group_errors(TWO, [100, 400])
    np.testing.assert_allclose(e, [0.1, 0.2])
    assert worst_group(e) == (1, pytest.approx(0.2))
    assert gap(e) == pytest.approx(0.1)
    s = error_summary(e, weights=[3, 1])
    assert s["worst_group"] == 1 and s["mean"] == pytest.approx(0.15) and s["weighted"] == pytest.approx(0.125)


def test_oracle_allocation_is_the_rounded_static_optimum():
    assert oracle_allocation(TWO, [1, 1], 1000).tolist() == [59, 941]
    assert oracle_allocation(TWO, [1, 1], 1000, objective="weighted", weights=[0.5, 0.5]).tolist() == [284, 716]


@pytest.mark.parametrize("call, message", [
    (lambda: weighted_optimum(TWO, [1, -1], 100), r"The 'costs' parameter must be finite and > 0 for every group\. "
                                                  r"Got \[1\.0, -1\.0\] instead"),
    (lambda: maxmin_optimum(TWO, [1, 1, 1], 100), r"The 'costs' parameter must have one value per group \(2\)"),
    (lambda: maxmin_optimum(TWO, [1, 1], 0), r"The 'budget' parameter must be a finite number > 0\. Got 0 instead"),
    (lambda: weighted_optimum(TWO, [1, 1], 100, [-1, 1]), r"The 'weights' parameter must be finite, >= 0"),
    (lambda: maxmin_optimum(TWO, [1, 1], 100, secondary="min"), r"'secondary' parameter of maxmin_optimum"),
    (lambda: maxmin_optimum(TWO, [1, 1], 100, floor_tol=-1), r"'floor_tol' parameter of maxmin_optimum"),
    (lambda: maxmin_optimum(TWO, [1, 1], 100, minimum=[80, 80]), r"The 'minimum' parameter asks for"),
    (lambda: proportional_allocation([0.5], [1, 1], 100), r"The 'costs' parameter must have one value per group"),
    (lambda: equal_allocation([1, 1], 100, capacity=[-1, 5]), r"The 'capacity' parameter must be >= 0"),
])
def test_invalid_inputs_name_the_parameter_value_and_what_is_allowed(call, message):
    with pytest.raises(InvalidParameterError, match=message):
        call()
