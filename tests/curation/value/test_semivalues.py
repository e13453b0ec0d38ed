"""Shapley-family semivalues against exact answers and the axioms (docs/methods/valuation.md#invariants)."""

from __future__ import annotations

import functools
import itertools
import math
import pickle

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from curation.exceptions import InvalidParameterError
from curation.value.result import ValuationResult
from curation.value.semivalues import (
    banzhaf_msr,
    banzhaf_weight,
    beta_shapley,
    beta_weights,
    exact_semivalue,
    expand_group_values,
    loo,
    shapley_weight,
    tmc_shapley,
)
from curation.value.utility import GameUtility, GroupUtility, ModelUtility, Utility

# The 3-player game of §4.3 (the `semivalues` PyPI example).
GAME3 = {frozenset(): 0.0, frozenset({0}): 180.0, frozenset({1}): 0.0, frozenset({2}): 0.0, frozenset({1, 2}): 0.0,
         frozenset({0, 1}): 360.0, frozenset({0, 2}): 540.0, frozenset({0, 1, 2}): 540.0}
SHAPLEY3 = np.array([390.0, 30.0, 120.0])
BANZHAF3 = np.array([405.0, 45.0, 135.0])
# Beta(16, 1) by hand: w = (16/18, 16/306, 2/306) for k = 0, 1, 2.
BETA16_3 = np.array([160 + 900 * 16 / 306 + 540 * 2 / 306, 180 * 16 / 306, 360 * 16 / 306 + 180 * 2 / 306])


class Additive(Utility):
    """U(S) = Σ_{i∈S} u_i: every semivalue is u_i."""

    def __init__(self, u: np.ndarray) -> None:
        super().__init__(len(u))
        self.u = np.asarray(u, dtype=float)

    def _evaluate(self, indices: np.ndarray) -> float:
        return float(self.u[indices].sum())


class Saturating(Utility):
    """U(S) = 1 − 2^−|S|: every prefix gets close to U(D), so truncation kicks in."""

    def _evaluate(self, indices: np.ndarray) -> float:
        return 1.0 - 0.5 ** len(indices)


class SymmetricNull(Utility):
    """4 players: 0 and 1 interchangeable, 2 a null player, 3 only helps together with 0 or 1."""

    def __init__(self) -> None:
        super().__init__(4)

    def _evaluate(self, indices: np.ndarray) -> float:
        s = set(indices.tolist())
        pair = len(s & {0, 1})
        return 10.0 * min(pair, 1) + 7.0 * (3 in s) * pair + 1.0 * (3 in s)


def random_game(n: int, rng: np.random.Generator) -> GameUtility:
    table = {frozenset(c): float(rng.normal()) for r in range(1, n + 1) for c in itertools.combinations(range(n), r)}
    table[frozenset()] = 0.0
    return GameUtility(table, n)


def reversed_map(func, args):
    """A 'parallel' map that finishes batches in reverse order (results still in input order)."""
    return [func(a) for a in reversed(args)][::-1]


# -- exact answers on the 3-player game -----------------------------------------------------------


def test_exact_shapley_and_banzhaf_on_three_player_game():
    game = GameUtility(GAME3)
    shap = exact_semivalue(game, shapley_weight)
    np.testing.assert_allclose(shap.values, SHAPLEY3, atol=1e-9)
    assert shap.values.sum() == pytest.approx(540.0)  # efficiency
    np.testing.assert_allclose(exact_semivalue(game, banzhaf_weight).values, BANZHAF3, atol=1e-9)
    np.testing.assert_allclose(exact_semivalue(game, beta_weights(3, 16, 1)).values, BETA16_3, atol=1e-9)
    assert shap.stderr.tolist() == [0.0, 0.0, 0.0]


def test_beta_1_1_is_shapley_and_weights_sum_to_one():
    game = GameUtility(GAME3)
    np.testing.assert_allclose(exact_semivalue(game, beta_weights(3, 1, 1)).values, SHAPLEY3, atol=1e-9)
    np.testing.assert_allclose(beta_weights(7, 1, 1), shapley_weight(7, np.arange(7)), rtol=1e-12)
    for n, a, b in [(1, 16, 1), (3, 16, 1), (10, 16, 1), (10, 1, 16), (25, 4, 2), (40, 0.5, 3)]:
        binom = np.array([math.comb(n - 1, k) for k in range(n)], dtype=float)
        assert (binom * beta_weights(n, a, b)).sum() == pytest.approx(1.0, abs=1e-10), (n, a, b)


def test_tmc_20000_permutations_within_3_of_exact():
    result = tmc_shapley(GameUtility(GAME3), max_permutations=20_000, truncation_rtol=0, conv_rtol=0, batch=5000,
                         rng=np.random.default_rng(0))
    assert np.abs(result.values - SHAPLEY3).max() < 3
    assert result.info["permutations"] == 20_000 and result.info["stop_reason"] == "max_permutations"
    assert result.counts.tolist() == [20_000] * 3
    # The reported standard error is the real one: sd(marginal of 0) = sqrt(26100) by hand.
    assert result.stderr[0] == pytest.approx(math.sqrt(26100 / 20_000), rel=0.05)


def test_tmc_error_within_reported_stderr(seed):
    result = tmc_shapley(GameUtility(GAME3), max_permutations=1500, truncation_rtol=0, conv_rtol=0,
                         rng=np.random.default_rng(seed))
    assert (result.stderr < 6).all()
    assert (np.abs(result.values - SHAPLEY3) < 5 * result.stderr).all()


def test_msr_converges_to_banzhaf(seed):
    result = banzhaf_msr(GameUtility(GAME3), n_samples=4000, rng=np.random.default_rng(seed))
    assert (result.stderr < 8).all()
    assert (np.abs(result.values - BANZHAF3) < 5 * result.stderr).all()
    assert result.counts.tolist() == [4000] * 3
    assert abs(result.values.sum() - 540) > 10  # Banzhaf is not efficient


def test_beta_16_1_monte_carlo_matches_exact(seed):
    result = beta_shapley(GameUtility(GAME3), alpha=16, beta=1, n_samples=1500, rng=np.random.default_rng(seed))
    assert (result.stderr < 5).all()
    assert (np.abs(result.values - BETA16_3) < 5 * result.stderr + 1e-9).all()


def test_loo_on_game():
    result = loo(GameUtility(GAME3))
    np.testing.assert_allclose(result.values, [540.0, 0.0, 180.0])  # U(D) − U(D∖i)
    assert np.isnan(result.stderr).all() and result.counts.tolist() == [1, 1, 1]


# -- axioms ----------------------------------------------------------------------------------------


def test_efficiency_of_every_untruncated_permutation(seed):
    rng = np.random.default_rng(seed)
    game = random_game(6, rng)
    total = game.full() - game.empty
    for _ in range(5):
        one = tmc_shapley(game, max_permutations=1, truncation_rtol=0, rng=rng)
        assert one.values.sum() == pytest.approx(total, abs=1e-12)


def test_truncation_bound_and_patience():
    u = Saturating(12)
    total = u.full() - u.empty
    truncated = {}
    for patience in (0, 5):
        rng = np.random.default_rng(3)
        for _ in range(5):
            one = tmc_shapley(u, max_permutations=1, truncation_rtol=0.01, truncation_patience=patience, rng=rng)
            assert abs(one.values.sum() - total) <= 0.01 * abs(u.full()) + 1e-12
        truncated[patience] = one.info["truncated_marginals"]
    # 1 − 2^−7 is the first prefix within 1% of U(D) ≈ 1: patience 0 stops after it, patience 5 five steps later.
    assert truncated == {0: 12 - 7, 5: 0}


def test_additive_utility_every_semivalue_is_u(seed):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=6)
    game = Additive(u)
    for weight in (shapley_weight, banzhaf_weight, beta_weights(6, 16, 1), beta_weights(6, 3, 5)):
        np.testing.assert_allclose(exact_semivalue(game, weight).values, u, atol=1e-10)
    np.testing.assert_allclose(tmc_shapley(game, max_permutations=7, truncation_rtol=0, rng=rng).values, u,
                               atol=1e-12)
    np.testing.assert_allclose(beta_shapley(game, n_samples=5, rng=rng).values, u, atol=1e-12)
    msr = banzhaf_msr(game, n_samples=3000, rng=rng)
    assert (np.abs(msr.values - u) < 5 * msr.stderr).all()


def test_symmetry_and_null_player(seed):
    game = SymmetricNull()
    exact = exact_semivalue(game, shapley_weight).values
    assert exact[0] == pytest.approx(exact[1]) and exact[2] == 0
    mc = tmc_shapley(game, max_permutations=800, truncation_rtol=0, rng=np.random.default_rng(seed))
    assert mc.values[2] == 0.0 and mc.stderr[2] == 0.0  # every marginal of a null player is exactly 0
    assert abs(mc.values[0] - mc.values[1]) < 5 * math.hypot(mc.stderr[0], mc.stderr[1])
    beta = beta_shapley(game, n_samples=200, rng=np.random.default_rng(seed))
    assert beta.values[2] == 0.0


def test_duplicated_training_points_get_equal_value():
    X = np.array([[-2.0, 0.0], [-1.0, 0.5], [1.0, -0.5], [2.0, 0.0], [0.5, 1.0], [0.5, 1.0]])
    y = np.array([0, 0, 1, 1, 1, 1])  # points 4 and 5 are the same labelled point
    Xv = np.array([[-1.5, 0.0], [-0.2, 0.9], [0.2, 0.9], [1.5, 0.0], [0.0, -1.0], [-0.5, 2.0]])
    yv = np.array([0, 0, 1, 1, 0, 1])
    phi = exact_semivalue(ModelUtility(X, y, Xv, yv), shapley_weight).values
    assert phi[4] == pytest.approx(phi[5], abs=1e-9)
    assert phi.sum() == pytest.approx(ModelUtility(X, y, Xv, yv).full() - 0.5)  # efficiency, U(∅) = 3/6


# -- seeds, batching, parallel maps, resume, merge -------------------------------------------------


def test_same_seed_same_values_and_independent_of_batching(seed):
    game = random_game(5, np.random.default_rng(seed))
    kw = dict(max_permutations=23, truncation_rtol=0.05, truncation_patience=0, conv_rtol=0)
    a = tmc_shapley(game, **kw, batch=100, rng=np.random.default_rng(seed))
    b = tmc_shapley(game, **kw, batch=3, n_jobs=4, map_fn=reversed_map, rng=np.random.default_rng(seed))
    c = tmc_shapley(game, **kw, rng=np.random.default_rng(seed + 1))
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.stderr, b.stderr)
    assert a.info["utility_calls"] == b.info["utility_calls"]
    assert not np.array_equal(a.values, c.values)
    for method, extra in ((beta_shapley, {}), (banzhaf_msr, {})):
        x = method(game, n_samples=11, batch=100, rng=np.random.default_rng(seed), **extra)
        y = method(game, n_samples=11, batch=2, n_jobs=3, map_fn=reversed_map, rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(x.values, y.values)


def test_convergence_stops_at_the_first_stable_window():
    game = Additive(np.array([1.0, -2.0, 3.0]))  # every marginal is u_i: the running mean never moves
    for batch in (4, 100):
        result = tmc_shapley(game, max_permutations=500, truncation_rtol=0, conv_window=10, conv_rtol=0.05,
                             batch=batch, rng=np.random.default_rng(0))
        assert result.info["converged"] and result.info["stop_reason"] == "converged"
        assert result.info["permutations"] == 11  # first t with a running mean from t − 10 ≥ 1
        assert result.counts.tolist() == [11, 11, 11]


def test_resume_equals_one_longer_run(seed):
    game = random_game(5, np.random.default_rng(seed))
    kw = dict(truncation_rtol=0.05, conv_rtol=0)
    rng = np.random.default_rng(seed)
    part = tmc_shapley(game, max_permutations=12, batch=5, rng=rng, **kw)
    resumed = tmc_shapley(game, max_permutations=30, batch=7, previous=part, rng=rng, **kw)
    whole = tmc_shapley(game, max_permutations=30, rng=np.random.default_rng(seed), **kw)
    np.testing.assert_array_equal(resumed.values, whole.values)
    np.testing.assert_array_equal(resumed.stats["sum_sq"], whole.stats["sum_sq"])
    assert resumed.info["permutations"] == 30 and resumed.info["utility_calls"] == whole.info["utility_calls"]


def test_merge_adds_running_sums_exactly(seed):
    game = random_game(4, np.random.default_rng(seed))
    a = tmc_shapley(game, max_permutations=9, truncation_rtol=0, rng=np.random.default_rng(seed))
    b = tmc_shapley(game, max_permutations=4, truncation_rtol=0, rng=np.random.default_rng(seed + 100))
    m = a + b
    for k in ("sum", "sum_sq", "count"):
        np.testing.assert_array_equal(m.stats[k], a.stats[k] + b.stats[k])
    np.testing.assert_allclose(m.values, (9 * a.values + 4 * b.values) / 13, atol=1e-12)
    assert m.info["permutations"] == 13 and m.counts.tolist() == [13] * 4
    x = banzhaf_msr(game, n_samples=50, rng=np.random.default_rng(seed))
    y = banzhaf_msr(game, n_samples=70, rng=np.random.default_rng(seed + 1))
    xy = x.merge(y)
    expect = ValuationResult.from_sums(x.stats["sum"] + y.stats["sum"], x.stats["sum_sq"] + y.stats["sum_sq"],
                                       x.stats["count"] + y.stats["count"], method="banzhaf_msr",
                                       neg_sums=x.stats["neg_sum"] + y.stats["neg_sum"],
                                       neg_sums_sq=x.stats["neg_sum_sq"] + y.stats["neg_sum_sq"],
                                       neg_counts=x.stats["neg_count"] + y.stats["neg_count"])
    np.testing.assert_array_equal(xy.values, expect.values)
    assert xy.info["samples"] == 120 and xy.counts.tolist() == [120] * 4
    with pytest.raises(InvalidParameterError, match="different methods"):
        a.merge(x)
    with pytest.raises(InvalidParameterError, match="without running sums"):
        exact_semivalue(game, shapley_weight).merge(exact_semivalue(game, shapley_weight))


# -- groups ----------------------------------------------------------------------------------------


def test_group_values_are_shapley_values_of_groups_as_players(seed):
    rng = np.random.default_rng(seed)
    game = random_game(5, rng)
    groups = [np.array([0, 3]), np.array([1]), np.array([2, 4])]
    # Brute force: average each group's marginal over all 3! orders of the groups.
    brute = np.zeros(3)
    for order in itertools.permutations(range(3)):
        members: list[int] = []
        for g in order:
            before = game(np.array(members, dtype=int))
            members += groups[g].tolist()
            brute[g] += (game(np.array(members)) - before) / 6
    exact = exact_semivalue(GroupUtility(game, groups), shapley_weight).values
    np.testing.assert_allclose(exact, brute, atol=1e-12)
    mc = tmc_shapley(game, groups=groups, max_permutations=600, truncation_rtol=0, rng=rng)
    assert len(mc) == 3 and mc.info["groups"] == 3
    assert (np.abs(mc.values - brute) < 5 * mc.stderr + 1e-9).all()
    assert mc.values.sum() == pytest.approx(game.full() - game.empty)
    items = expand_group_values(mc, groups, 6)  # point 5 is in no group
    assert items[[0, 3]].tolist() == [mc.values[0] / 2] * 2 and items[5] == 0.0
    np.testing.assert_allclose([items[g].sum() for g in groups], mc.values)
    loo_g = loo(game, groups=groups)
    assert loo_g.values[2] == pytest.approx(game.full() - game(np.array([0, 1, 3])))


# -- ModelUtility ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(X))
    tr, va = idx[:16], idx[100:300]
    return X[tr], y[tr], X[va], y[va]


def test_model_utility_empty_set_guard_and_cache(cancer):
    Xt, yt, Xv, yv = cancer
    u = ModelUtility(Xt, yt, Xv, yv)
    assert u.empty == pytest.approx(np.bincount(yv).max() / len(yv))  # majority-class frequency
    assert u([]) == u.empty
    ones = np.flatnonzero(yt == 1)[:3]
    assert u(ones) == u.empty and u.n_fits == 0  # small-set guard: class 0 missing, no model trained
    both = np.array([np.flatnonzero(yt == 0)[0], *ones])
    first = u(both)
    assert u.n_fits == 1 and first > u.empty
    assert u(both[::-1]) == first and u(np.concatenate([both, both])) == first  # a set: order, repeats ignored
    assert u.n_fits == 1 and u.n_evaluations == 2  # the guarded subset was evaluated (and cached) too
    ref = LogisticRegression(max_iter=200).fit(Xt[np.sort(both)], yt[np.sort(both)])
    assert first == pytest.approx(np.mean(ref.predict(Xv) == yv))
    clone = pickle.loads(pickle.dumps(u))
    assert clone._cache == {} and clone(both) == first and clone.n_fits == 2
    with pytest.raises(InvalidParameterError, match="n=16"):
        u([0, 16])


def test_model_utility_custom_model_and_metric(cancer):
    Xt, yt, Xv, yv = cancer
    factory = functools.partial(LogisticRegression, C=0.01, max_iter=200)  # picklable zero-arg callable
    err = ModelUtility(Xt, yt, Xv, yv, model=factory, metric=lambda t, p: -np.mean(t != p), empty_score=-0.5)
    acc = ModelUtility(Xt, yt, Xv, yv, model=factory)
    assert err.empty == -0.5
    assert err.full() == pytest.approx(acc.full() - 1.0)
    with pytest.raises(InvalidParameterError, match="empty_score"):
        ModelUtility(Xt, yt, Xv, yv, metric=lambda t, p: 0.0)
    with pytest.raises(InvalidParameterError, match="'model' parameter"):
        ModelUtility(Xt, yt, Xv, yv, model="forest")


def test_tmc_on_a_model_utility_reuses_fits(cancer):
    Xt, yt, Xv, yv = cancer
    u = ModelUtility(Xt[:8], yt[:8], Xv, yv)
    result = tmc_shapley(u, max_permutations=6, rng=np.random.default_rng(0))
    assert u.n_evaluations < result.info["utility_calls"]  # the cache answered the rest
    assert abs(result.values.sum() - (u.full() - u.empty)) <= 0.01 * u.full() + 1e-12
    # What a Ray map does to the arguments: every batch gets its own unpickled copy (empty cache).
    shipped = tmc_shapley(u, max_permutations=6, batch=2, n_jobs=3, rng=np.random.default_rng(0),
                          map_fn=lambda f, xs: [f(pickle.loads(pickle.dumps(x))) for x in xs])
    np.testing.assert_array_equal(result.values, shipped.values)


# -- parameter validation --------------------------------------------------------------------------


def test_bad_parameters_name_the_parameter_and_the_value():
    game = GameUtility(GAME3)
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidParameterError, match=r"'max_permutations' parameter of tmc_shapley.*Got 0 instead"):
        tmc_shapley(game, max_permutations=0, rng=rng)
    with pytest.raises(InvalidParameterError, match=r"'truncation_rtol'.*Got -0.1 instead"):
        tmc_shapley(game, max_permutations=5, truncation_rtol=-0.1, rng=rng)
    with pytest.raises(InvalidParameterError, match=r"'rng' parameter of tmc_shapley must be a numpy"):
        tmc_shapley(game, max_permutations=5, rng=42)
    with pytest.raises(InvalidParameterError, match=r"'alpha' parameter of beta_shapley.*Got 0 instead"):
        beta_shapley(game, alpha=0, n_samples=3, rng=rng)
    with pytest.raises(InvalidParameterError, match=r"'n_samples' parameter of banzhaf_msr"):
        banzhaf_msr(game, n_samples=-1, rng=rng)
    with pytest.raises(InvalidParameterError, match="n=21 is above the limit 20"):
        exact_semivalue(Additive(np.zeros(21)), shapley_weight)
    with pytest.raises(InvalidParameterError, match="disjoint"):
        GroupUtility(game, [[0, 1], [1, 2]])
    with pytest.raises(InvalidParameterError, match="'previous' parameter of tmc_shapley"):
        tmc_shapley(game, max_permutations=5, rng=rng, previous=loo(game))


def test_tmc_warns_when_full_data_is_within_the_truncation_tolerance_of_empty():
    from curation.value.utility import Utility

    class NearEmpty(Utility):  # U(∅) = 0.70, U(D) = 0.705: 1% truncation would cut at once
        def _evaluate_empty(self):
            return 0.70

        def _evaluate(self, idx):
            return 0.705 if len(idx) == self.n else 0.70 + 0.2 * (idx[0] == 0)

    with pytest.warns(UserWarning, match="within truncation_rtol=0.01"):
        res = tmc_shapley(NearEmpty(6), max_permutations=5, conv_rtol=0, rng=np.random.default_rng(0))
    assert res.info["truncation_near_empty"] is True


@pytest.mark.parametrize("tol", [4.0, 2.0])
def test_tmc_on_the_three_player_game_stops_when_every_stderr_is_below_the_tolerance(tol, seed):
    result = tmc_shapley(GameUtility(GAME3), max_permutations=50_000, truncation_rtol=0, conv_rtol=0,
                         stderr_tol=tol, conv_window=50, batch=16, rng=np.random.default_rng(seed))
    assert result.info["converged"] and result.info["converged_by"] == "stderr"
    assert result.info["stderr_max"] <= tol and result.stderr.max() == pytest.approx(result.info["stderr_max"])
    # it stopped at the first permutation that met the rule: sd(marginal of 0) = sqrt(26100) by hand
    t = result.info["permutations"]
    assert t < 50_000 and abs(t - 26100 / tol**2) < 0.2 * 26100 / tol**2
    assert (np.abs(result.values - SHAPLEY3) < 4 * tol).all()



def test_beta_and_banzhaf_stop_by_the_stderr_rule_near_the_exact_values(seed):
    game = GameUtility(GAME3)
    beta = beta_shapley(game, alpha=16, beta=1, n_samples=100_000, stderr_tol=3.0, min_samples=50,
                        rng=np.random.default_rng(seed))
    assert beta.info["converged"] and beta.info["stderr_max"] <= 3.0 and beta.info["samples"] < 100_000
    exact = exact_semivalue(game, beta_weights(3, 16, 1)).values
    assert (np.abs(beta.values - exact) < 4 * 3.0).all()
    msr = banzhaf_msr(game, n_samples=100_000, stderr_tol=3.0, min_samples=50, rng=np.random.default_rng(seed))
    assert msr.info["converged"] and msr.info["stderr_max"] <= 3.0 and msr.info["samples"] < 100_000
    assert msr.stderr.max() == pytest.approx(msr.info["stderr_max"])
    assert (np.abs(msr.values - exact_semivalue(game, banzhaf_weight).values) < 4 * 3.0).all()
