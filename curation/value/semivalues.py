"""Model-based data valuation: TMC-Shapley, leave-one-out, Beta Shapley, Data Banzhaf (MSR), exact semivalues.

All methods value the n players of a :class:`~curation.value.utility.Utility` (training
points, or groups of them via ``groups=``) and return a
:class:`~curation.value.result.ValuationResult`. The utility says what a subset is worth,
the sampler (permutations, Beta-Binomial subsets, Bernoulli subsets) what to evaluate, and
the method how to average: the three stay apart (pyDVL's split; docs/methods/valuation.md).

A **semivalue** with weight w(k) on subsets S ∌ i of size k is (§4.0)

    φ_i = Σ_{S ⊆ D∖{i}} w(|S|) · [U(S ∪ {i}) − U(S)]

* Shapley:  w(k) = k!(n−k−1)!/n!  (the only efficient one: Σ_i φ_i = U(D) − U(∅));
* Banzhaf:  w(k) = 2^−(n−1);
* Beta(α, β): w(k) = B(k+β, n−k−1+α) / B(α, β)   (Beta(1, 1) = Shapley).

Randomness and parallelism. Every random function takes a keyword-only
``rng: numpy.random.Generator`` and creates no root RNG of its own. Each Monte Carlo sample
(a permutation, a subset draw) gets its own child :class:`numpy.random.SeedSequence`,
spawned from ``rng`` in sample order, so the estimate does not depend on ``batch``, on
``n_jobs`` or on how ``map_fn`` schedules batches, and a resumed run (``previous=``) fed the
same ``rng`` continues exactly where the first one stopped. Samples are grouped into
batches of ``batch``; ``n_jobs`` batches at a time are handed to
``map_fn(func, list_of_args) -> list_of_results`` (default: serial). Pass a Ray-based map to
parallelise; ``func`` is a module-level function and each argument a picklable tuple
holding the utility. Results are folded in sample order, and a stopping rule is checked
after every sample, so work a parallel round did beyond the stopping point is discarded.
(The child-seed counter of ``rng`` still advances past it.)

To add a Monte Carlo semivalue: write a module-level batch function
``f((payload, seeds)) -> rows`` that draws one sample per seed, then fold its rows into
running sums with :func:`_drive` and return :meth:`ValuationResult.from_sums`.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.special import betaln, gammaln

from curation.exceptions import InvalidParameterError
from curation.validation import Constraint, Interval
from curation.value.result import ValuationResult
from curation.value.utility import GroupUtility, Utility

MapFn = Callable[[Callable[[Any], Any], list[Any]], list[Any]]
MAX_EXACT_PLAYERS = 20


def serial_map(func: Callable[[Any], Any], args: list[Any]) -> list[Any]:
    """The default ``map_fn``: ``[func(a) for a in args]`` in this process."""
    return [func(a) for a in args]


# -- weights -----------------------------------------------------------------------------------


def shapley_weight(n: int, k: int | np.ndarray) -> float | np.ndarray:
    """Shapley weight ``w(k) = k!(n−k−1)!/n! = 1 / (n·C(n−1, k))`` of a coalition of size k ∌ i."""
    k = np.asarray(k, dtype=np.float64)
    w = np.exp(gammaln(k + 1) + gammaln(n - k) - gammaln(n + 1))
    return float(w) if w.ndim == 0 else w


def banzhaf_weight(n: int, k: int | np.ndarray) -> float | np.ndarray:
    """Banzhaf weight ``w(k) = 2^−(n−1)`` (every coalition of the others counts equally)."""
    k = np.asarray(k, dtype=np.float64)
    w = np.full(k.shape, 2.0 ** -(n - 1))
    return float(w) if w.ndim == 0 else w


def beta_weights(n: int, alpha: float, beta: float) -> np.ndarray:
    """Beta Shapley weights ``w(k) = B(k+β, n−k−1+α) / B(α, β)`` for k = 0..n−1 (docs/methods/valuation.md#beta-shapley).

    ``Σ_k C(n−1, k)·w(k) = 1``: the semivalue is the mean marginal over |S| ~
    BetaBinomial(n−1; a=β, b=α) with S uniform given its size. α = 16, β = 1 (the
    recommended Beta(16, 1)) puts the weight on small coalitions; α = β = 1 is Shapley.
    """
    _check("beta_weights", "n", n, Interval(1, None, integer=True))
    _check("beta_weights", "alpha", alpha, Interval(0, None, closed="neither"))
    _check("beta_weights", "beta", beta, Interval(0, None, closed="neither"))
    k = np.arange(n, dtype=np.float64)
    return np.exp(betaln(k + beta, n - k - 1 + alpha) - betaln(alpha, beta))


# -- validation and shared machinery -----------------------------------------------------------


def _check(func: str, name: str, value: Any, constraint: Constraint) -> None:
    if not constraint.accepts(value):
        raise InvalidParameterError(
            f"The {name!r} parameter of {func} must be {constraint}. Got {value!r} instead."
        )


def _check_common(func: str, utility: Any, rng: Any, map_fn: Any, batch: int, n_jobs: int) -> None:
    if not isinstance(utility, Utility):
        raise InvalidParameterError(
            f"The 'utility' parameter of {func} must be a curation.value.utility.Utility. "
            f"Got {type(utility).__name__} instead."
        )
    if not isinstance(rng, np.random.Generator):
        raise InvalidParameterError(
            f"The 'rng' parameter of {func} must be a numpy.random.Generator (curation.random.check_rng(seed)). "
            f"Got {rng!r} instead."
        )
    if map_fn is not None and not callable(map_fn):
        raise InvalidParameterError(
            f"The 'map_fn' parameter of {func} must be None or a callable map_fn(func, list_of_args) -> list. "
            f"Got {map_fn!r} instead."
        )
    _check(func, "batch", batch, Interval(1, None, integer=True))
    _check(func, "n_jobs", n_jobs, Interval(1, None, integer=True))


def _players(utility: Utility, groups: Sequence[np.ndarray | Sequence[int]] | None) -> Utility:
    return utility if groups is None else GroupUtility(utility, groups)


def _child_seeds(rng: np.random.Generator, k: int) -> list[np.random.SeedSequence]:
    """k child seeds of ``rng``, the next ones in its spawn order (one per Monte Carlo sample)."""
    try:
        return list(rng.bit_generator.seed_seq.spawn(k))
    except (AttributeError, TypeError):  # a generator without a SeedSequence: draw entropy from it instead
        return [np.random.SeedSequence(int(e)) for e in rng.integers(0, 2**63 - 1, size=k)]


def _drive(job: Callable[[Any], Any], payload: Any, *, total: int, done: int, batch: int, n_jobs: int,
           rng: np.random.Generator, map_fn: MapFn, consume: Callable[[Any], bool]) -> bool:
    """Run ``job((payload, seeds))`` over batches of child seeds until ``total`` samples.

    ``n_jobs`` batches go to ``map_fn`` at a time; their outputs are handed to ``consume``
    in batch order, which folds them sample by sample and returns True to stop early.
    Returns whether ``consume`` stopped the run.
    """
    while done < total:
        args = []
        scheduled = done
        for _ in range(n_jobs):
            size = min(batch, total - scheduled)
            if size <= 0:
                break
            args.append((payload, _child_seeds(rng, size)))
            scheduled += size
        outs = list(map_fn(job, args))
        if len(outs) != len(args):
            raise RuntimeError(f"map_fn returned {len(outs)} results for {len(args)} batches.")
        for out in outs:
            if consume(out):
                return True
        done = scheduled
    return False


class _Convergence:
    """The paper's criterion ``(1/n)·Σ_i |φ_i^t − φ_i^{t−w}| / |φ_i^t| < rtol`` (docs/methods/valuation.md#tmc-shapley).

    Fed the running means after every sample; true once t > w and the mean relative change
    over the last w samples is below ``rtol`` (1e−12 guards points whose value is 0).
    ``rtol = 0`` disables it. Only the last w running means are kept (w × n floats).
    """

    def __init__(self, window: int, rtol: float) -> None:
        self.rtol = rtol
        self.past: deque[np.ndarray] = deque(maxlen=window)
        self.last: float = math.nan

    def update(self, phi: np.ndarray) -> bool:
        if self.rtol <= 0:
            return False
        done = False
        if len(self.past) == self.past.maxlen:
            self.last = float(np.mean(np.abs(phi - self.past[0]) / (np.abs(phi) + 1e-12)))
            done = self.last < self.rtol
        self.past.append(phi.copy())
        return done


class _StandardError:
    """Stop when every value's standard error is at most ``tol`` (absolute, in utility units):
    ``max_i sd_i / sqrt(t) ≤ tol`` once ``t ≥ min_samples``, with ``sd_i`` the sample standard
    deviation of point i's marginals (docs/methods/valuation.md#stopping-rules). Unlike the
    relative-change criterion it is not fooled by values near 0, whose relative changes stay
    large however long the run. ``tol = 0`` disables it."""

    def __init__(self, tol: float, min_samples: int) -> None:
        self.tol, self.min_samples = tol, min_samples
        self.last: float = math.nan

    def update(self, stats: dict[str, np.ndarray]) -> bool:
        """With Banzhaf's two arms (``neg_*`` sums: samples without the point) the standard
        error of the difference of the two means, both arms' in quadrature."""
        if self.tol <= 0:
            return False
        arms = [("sum", "sum_sq", "count")] + ([("neg_sum", "neg_sum_sq", "neg_count")] if "neg_sum" in stats else [])
        var_of_mean = 0.0
        for s_, sq, c in arms:
            t = stats[c]
            if t.min() < max(self.min_samples, 2):
                return False
            mean = stats[s_] / t
            var_of_mean = var_of_mean + np.maximum(stats[sq] / t - mean * mean, 0.0) / (t - 1)
        self.last = float(np.sqrt(var_of_mean).max())
        return self.last <= self.tol


def _new_stats(n: int, previous: ValuationResult | None) -> dict[str, np.ndarray]:
    if previous is None:
        return {"sum": np.zeros(n), "sum_sq": np.zeros(n), "count": np.zeros(n, np.int64)}
    assert previous.stats is not None
    return {k: v.copy() for k, v in previous.stats.items()}  # continue the sums: resume = one longer run


def _check_previous(func: str, method: str, previous: ValuationResult | None, n: int) -> None:
    if previous is None:
        return
    if not isinstance(previous, ValuationResult) or previous.method != method or previous.stats is None:
        raise InvalidParameterError(
            f"The 'previous' parameter of {func} must be a {method!r} ValuationResult with running sums. "
            f"Got {getattr(previous, 'method', type(previous).__name__)!r} instead."
        )
    if len(previous) != n:
        raise InvalidParameterError(
            f"The 'previous' result of {func} has {len(previous)} values but the utility has {n} players."
        )


# -- TMC-Shapley ----------------------------------------------------------------------------------


def _tmc_batch(args: tuple[Any, list[np.random.SeedSequence]]) -> dict[str, np.ndarray]:
    """Marginals of one batch of permutations (one row per permutation, zeros after truncation)."""
    (u, u_empty, u_full, rtol, patience), seeds = args
    n = u.n
    rows = np.zeros((len(seeds), n))
    truncated = np.zeros(len(seeds), np.int64)
    calls = np.zeros(len(seeds), np.int64)
    tol = rtol * abs(u_full)
    for b, seed in enumerate(seeds):
        perm = np.random.default_rng(seed).permutation(n)
        prev, streak, j = u_empty, 0, 0
        for j in range(n):
            v = u(perm[: j + 1])
            rows[b, perm[j]] = v - prev
            prev = v
            if rtol > 0:
                # Reference-code rule: count consecutive prefixes within rtol·|U(D)| of U(D);
                # after patience+1 of them the remaining marginals are taken as 0.
                streak = streak + 1 if abs(v - u_full) <= tol else 0
                if streak > patience:
                    break
        calls[b] = j + 1
        truncated[b] = n - j - 1
    return {"rows": rows, "truncated": truncated, "calls": calls}


def tmc_shapley(
    utility: Utility, *, max_permutations: int, truncation_rtol: float = 0.01, truncation_patience: int = 5,
    conv_window: int = 100, conv_rtol: float = 0.05, groups: Sequence[np.ndarray | Sequence[int]] | None = None,
    batch: int = 100, n_jobs: int = 1, rng: np.random.Generator, map_fn: MapFn | None = None,
    previous: ValuationResult | None = None, stderr_tol: float = 0.0,
) -> ValuationResult:
    """Truncated Monte Carlo Shapley (Ghorbani & Zou 2019, Algorithm 1; docs/methods/valuation.md#tmc-shapley).

    For each random permutation π, the point at position j gets the marginal
    ``v_j − v_{j−1}`` with ``v_j = U({π_1..π_j})`` and ``v_0 = U(∅)``; the value is the mean
    over permutations, ``φ_i = E_π[U(P_i^π ∪ {i}) − U(P_i^π)]``.

    Truncation (reference code): after each addition, if ``|v_j − U(D)| ≤ rtol·|U(D)|`` a
    counter goes up, else it resets; once it exceeds ``truncation_patience`` the permutation
    stops and every later point gets marginal 0 (patience 5 = the code's "6 consecutive
    hits", 0 = the paper's rule). The code compares with a bootstrap mean of the full-data
    score; we use U(D) itself. ``truncation_rtol = 0`` turns truncation off, and then every
    permutation is efficient: ``Σ_i marginal_i = U(D) − U(∅)``. With truncation each
    permutation's sum is off by at most ``rtol·|U(D)|``.

    Stops at ``max_permutations`` (the total, ``previous`` included) or when the paper's
    criterion ``(1/n)·Σ_i |φ_i^t − φ_i^{t−w}| / |φ_i^t| < conv_rtol`` holds (w =
    ``conv_window``; checked after every permutation once t > w; ``conv_rtol = 0`` turns it
    off). A resumed run checks it only after w new permutations (older running means are not
    stored in the result). Or, with ``stderr_tol > 0``, when every value's standard error is at
    most ``stderr_tol`` after at least ``conv_window`` permutations (:class:`_StandardError`):
    the criterion to use when many values are near 0, where the relative one never settles.

    Args:
        utility: the game; ``utility.n`` points.
        groups: optional disjoint index arrays; each group is one player (e.g. a data source)
            and its marginal is the change in U when the whole group joins. The result then
            holds one value per group; :func:`expand_group_values` splits each equally among
            its points (the reference code's ``/= len(sources[idx])``).
        batch: permutations per batch (one ``map_fn`` task).
        n_jobs: batches per ``map_fn`` call (set it to the number of workers).
        rng: source of the per-permutation child seeds.
        map_fn: ``map_fn(func, list_of_args) -> list``; default serial.
        previous: a partial ``tmc_shapley`` result to continue (same utility and groups). Fed
            the same ``rng`` (continued), the result equals one longer run.

    Returns:
        ValuationResult (method ``"tmc_shapley"``) with ``info``: ``permutations``,
        ``converged``, ``stop_reason``, ``utility_calls``, ``truncated_marginals``,
        ``convergence`` (last criterion value), ``u_full``, ``u_empty`` and the parameters.
    """
    func = "tmc_shapley"
    _check_common(func, utility, rng, map_fn, batch, n_jobs)
    _check(func, "max_permutations", max_permutations, Interval(1, None, integer=True))
    _check(func, "truncation_rtol", truncation_rtol, Interval(0, None))
    _check(func, "truncation_patience", truncation_patience, Interval(0, None, integer=True))
    _check(func, "conv_window", conv_window, Interval(1, None, integer=True))
    _check(func, "conv_rtol", conv_rtol, Interval(0, None))
    _check(func, "stderr_tol", stderr_tol, Interval(0, None))
    players = _players(utility, groups)
    n = players.n
    _check_previous(func, func, previous, n)
    map_fn = map_fn or serial_map

    u_empty, u_full = players.empty, players.full()
    near_empty = truncation_rtol > 0 and abs(u_full - u_empty) <= truncation_rtol * abs(u_full)
    if near_empty:
        # every permutation would be cut almost at once and all values collapse towards 0
        warnings.warn(f"tmc_shapley: U(D)={u_full:.4g} is within truncation_rtol={truncation_rtol:g} of "
                      f"U(empty)={u_empty:.4g}, so truncation stops every permutation almost at once and the "
                      "values shrink towards 0; lower truncation_rtol (0 turns truncation off)", stacklevel=2)
    stats = _new_stats(n, previous)
    done = int(previous.info.get("permutations", 0)) if previous is not None else 0
    counters = {"calls": int(previous.info.get("utility_calls", 0)) if previous is not None else 0,
                "truncated": int(previous.info.get("truncated_marginals", 0)) if previous is not None else 0,
                "done": done}
    conv = _Convergence(int(conv_window), float(conv_rtol))
    se_rule = _StandardError(float(stderr_tol), int(conv_window))
    stopped_by: list[str] = []

    def consume(out: dict[str, np.ndarray]) -> bool:
        for row, trunc, calls in zip(out["rows"], out["truncated"], out["calls"]):
            stats["sum"] += row
            stats["sum_sq"] += row * row
            stats["count"] += 1
            counters["done"] += 1
            counters["calls"] += int(calls)
            counters["truncated"] += int(trunc)
            if conv.update(stats["sum"] / stats["count"]):
                stopped_by.append("relative_change")
                return True
            if se_rule.update(stats):
                stopped_by.append("stderr")
                return True
        return False

    payload = (players, u_empty, u_full, float(truncation_rtol), int(truncation_patience))
    converged = _drive(_tmc_batch, payload, total=int(max_permutations), done=done, batch=int(batch),
                       n_jobs=int(n_jobs), rng=rng, map_fn=map_fn, consume=consume)
    info = {
        "permutations": counters["done"], "converged": converged,
        "stop_reason": "converged" if converged else "max_permutations",
        "utility_calls": counters["calls"], "truncated_marginals": counters["truncated"],
        "convergence": conv.last, "stderr_max": se_rule.last, "converged_by": stopped_by[0] if stopped_by else None,
        "u_full": u_full, "u_empty": u_empty,
        "truncation_rtol": truncation_rtol, "truncation_patience": truncation_patience,
        "conv_window": conv_window, "conv_rtol": conv_rtol, "stderr_tol": stderr_tol,
        "groups": None if groups is None else len(groups), "truncation_near_empty": near_empty,
    }
    return ValuationResult._from_stats(stats, method=func, info=info)


def expand_group_values(values: np.ndarray | ValuationResult, groups: Sequence[np.ndarray | Sequence[int]],
                        n: int) -> np.ndarray:
    """Per-point values from per-group values: each group's value split equally among its points.

    ``item_i = φ_g / |g|`` for i ∈ g (docs/methods/valuation.md#tmc-shapley, the reference code's sources rule);
    points in no group get 0. The per-point values of a group sum to the group's value.
    """
    v = values.values if isinstance(values, ValuationResult) else np.asarray(values, dtype=np.float64)
    if len(v) != len(groups):
        raise InvalidParameterError(f"Got {len(v)} group values for {len(groups)} groups.")
    out = np.zeros(n)
    for g, idx in enumerate(groups):
        idx = np.asarray(idx, dtype=np.int64).ravel()
        out[idx] = v[g] / len(idx)
    return out


# -- leave-one-out ---------------------------------------------------------------------------------


def _loo_batch(args: tuple[Utility, np.ndarray]) -> np.ndarray:
    u, players = args
    everyone = np.arange(u.n)
    return np.array([u(everyone[everyone != i]) for i in players])


def loo(utility: Utility, *, groups: Sequence[np.ndarray | Sequence[int]] | None = None,
        batch: int = 100, map_fn: MapFn | None = None) -> ValuationResult:
    """Leave-one-out values ``φ_i = U(D) − U(D∖{i})`` (docs/methods/valuation.md#leave-one-out); n + 1 utility calls.

    With ``groups`` a group is left out as a whole (one value per group; split equally
    among its points with :func:`expand_group_values`, as the reference code does).
    ``stderr`` is NaN (one sample per point); the result merges as a mean of runs.
    """
    func = "loo"
    if not isinstance(utility, Utility):
        raise InvalidParameterError(
            f"The 'utility' parameter of {func} must be a Utility. Got {type(utility).__name__} instead."
        )
    _check(func, "batch", batch, Interval(1, None, integer=True))
    players = _players(utility, groups)
    n = players.n
    map_fn = map_fn or serial_map
    u_full = players.full()
    chunks = [(players, np.arange(a, min(a + int(batch), n))) for a in range(0, n, int(batch))]
    without = np.concatenate(list(map_fn(_loo_batch, chunks)))
    values = u_full - without
    return ValuationResult.from_sums(values, values**2, np.ones(n, np.int64), method=func,
                                     info={"u_full": u_full, "utility_calls": n + 1,
                                           "groups": None if groups is None else len(groups)})


# -- Beta Shapley ----------------------------------------------------------------------------------


def _beta_batch(args: tuple[Any, list[np.random.SeedSequence]]) -> np.ndarray:
    """One row per sample: for every i, U(S_i ∪ {i}) − U(S_i) with |S_i| ~ BetaBinomial(n−1; β, α)."""
    (u, alpha, beta), seeds = args
    n = u.n
    rows = np.zeros((len(seeds), n))
    for b, seed in enumerate(seeds):
        r = np.random.default_rng(seed)
        # BetaBinomial(n−1; a=β, b=α) as a Binomial with a Beta(β, α) success probability.
        sizes = r.binomial(n - 1, r.beta(beta, alpha, size=n))
        for i in range(n):
            others = r.choice(n - 1, size=int(sizes[i]), replace=False)
            S = others + (others >= i)  # uniform subset of D∖{i}: skip over i
            rows[b, i] = u(np.append(S, i)) - u(S)
    return rows


def beta_shapley(
    utility: Utility, *, alpha: float = 16.0, beta: float = 1.0, n_samples: int, rng: np.random.Generator,
    groups: Sequence[np.ndarray | Sequence[int]] | None = None, batch: int = 100, n_jobs: int = 1,
    map_fn: MapFn | None = None, stderr_tol: float = 0.0, min_samples: int = 100,
) -> ValuationResult:
    """Beta(α, β) Shapley by Monte Carlo (Kwon & Zou 2022; docs/methods/valuation.md#beta-shapley).

    ``φ_i = Σ_{S⊆D∖i} w_{α,β}(|S|)·[U(S∪i) − U(S)] = E[U(S∪i) − U(S)]`` with
    |S| = k ~ BetaBinomial(n−1; a=β, b=α) and S uniform among the k-subsets of D∖{i},
    because ``C(n−1, k)·w(k)`` is that distribution's pmf (see :func:`beta_weights`). Each
    sample draws one (k, S) per point, so it costs 2n utility calls (fewer with the cache);
    every point gets ``n_samples`` marginals. α = 16, β = 1 (default) emphasises small
    coalitions; α = β = 1 is Shapley.

    ``n_samples`` is the most; with ``stderr_tol > 0`` the run stops earlier, once every value's
    standard error is at most ``stderr_tol`` after at least ``min_samples`` samples
    (docs/methods/valuation.md#stopping-rules).

    Returns:
        ValuationResult (method ``"beta_shapley"``), ``info``: ``samples``, ``converged``,
        ``stderr_max``, ``alpha``, ``beta``.
    """
    func = "beta_shapley"
    _check_common(func, utility, rng, map_fn, batch, n_jobs)
    _check(func, "alpha", alpha, Interval(0, None, closed="neither"))
    _check(func, "beta", beta, Interval(0, None, closed="neither"))
    _check(func, "n_samples", n_samples, Interval(1, None, integer=True))
    _check(func, "stderr_tol", stderr_tol, Interval(0, None))
    _check(func, "min_samples", min_samples, Interval(1, None, integer=True))
    players = _players(utility, groups)
    stats = _new_stats(players.n, None)
    se_rule = _StandardError(float(stderr_tol), int(min_samples))

    def consume(rows: np.ndarray) -> bool:
        for row in rows:
            stats["sum"] += row
            stats["sum_sq"] += row * row
            stats["count"] += 1
            if se_rule.update(stats):
                return True
        return False

    converged = _drive(_beta_batch, (players, float(alpha), float(beta)), total=int(n_samples), done=0,
                       batch=int(batch), n_jobs=int(n_jobs), rng=rng, map_fn=map_fn or serial_map, consume=consume)
    info = {"samples": int(stats["count"].min()), "converged": converged, "stderr_max": se_rule.last,
            "stderr_tol": stderr_tol, "alpha": alpha, "beta": beta, "groups": None if groups is None else len(groups)}
    return ValuationResult._from_stats(stats, method=func, info=info)


# -- Data Banzhaf (MSR) ----------------------------------------------------------------------------


def _msr_batch(args: tuple[Utility, list[np.random.SeedSequence]]) -> tuple[np.ndarray, np.ndarray]:
    u, seeds = args
    masks = np.zeros((len(seeds), u.n), dtype=bool)
    values = np.zeros(len(seeds))
    for b, seed in enumerate(seeds):
        masks[b] = np.random.default_rng(seed).random(u.n) < 0.5
        values[b] = u(np.flatnonzero(masks[b]))
    return masks, values


def banzhaf_msr(
    utility: Utility, *, n_samples: int, rng: np.random.Generator,
    groups: Sequence[np.ndarray | Sequence[int]] | None = None, batch: int = 100, n_jobs: int = 1,
    map_fn: MapFn | None = None, stderr_tol: float = 0.0, min_samples: int = 100,
) -> ValuationResult:
    """Data Banzhaf by Maximum Sample Reuse (Wang & Jia 2023; docs/methods/valuation.md#data-banzhaf).

    Draw subsets S_1..S_M, each point included independently with probability 1/2, and
    estimate ``φ̂_i = mean_{m: i∈S_m} U(S_m) − mean_{m: i∉S_m} U(S_m)``. Every utility call
    updates all n values. The result carries both arms (``stats["sum"]`` for S ∋ i,
    ``stats["neg_sum"]`` for S ∌ i) so runs merge exactly; ``counts`` = samples per point
    (= ``n_samples``), ``stderr`` adds the two arms' standard errors in quadrature. A point
    with no sample in one arm yet has that arm's mean taken as 0. Banzhaf is not efficient.

    ``n_samples`` is the most; with ``stderr_tol > 0`` the run stops earlier, once every value's
    standard error is at most ``stderr_tol`` and each arm of every point has at least
    ``min_samples`` samples (docs/methods/valuation.md#stopping-rules).

    Returns:
        ValuationResult (method ``"banzhaf_msr"``), ``info``: ``samples``, ``converged``,
        ``stderr_max``.
    """
    func = "banzhaf_msr"
    _check_common(func, utility, rng, map_fn, batch, n_jobs)
    _check(func, "n_samples", n_samples, Interval(1, None, integer=True))
    _check(func, "stderr_tol", stderr_tol, Interval(0, None))
    _check(func, "min_samples", min_samples, Interval(1, None, integer=True))
    players = _players(utility, groups)
    se_rule = _StandardError(float(stderr_tol), int(min_samples))
    drawn = [0]
    n = players.n
    stats = {"sum": np.zeros(n), "sum_sq": np.zeros(n), "count": np.zeros(n, np.int64),
             "neg_sum": np.zeros(n), "neg_sum_sq": np.zeros(n), "neg_count": np.zeros(n, np.int64)}

    def consume(out: tuple[np.ndarray, np.ndarray]) -> bool:
        for mask, v in zip(*out):
            stats["sum"][mask] += v
            stats["sum_sq"][mask] += v * v
            stats["count"] += mask
            stats["neg_sum"][~mask] += v
            stats["neg_sum_sq"][~mask] += v * v
            stats["neg_count"] += ~mask
            drawn[0] += 1
            if se_rule.update(stats):
                return True
        return False

    converged = _drive(_msr_batch, players, total=int(n_samples), done=0, batch=int(batch), n_jobs=int(n_jobs),
                       rng=rng, map_fn=map_fn or serial_map, consume=consume)
    info = {"samples": drawn[0], "converged": converged, "stderr_max": se_rule.last, "stderr_tol": stderr_tol,
            "groups": None if groups is None else len(groups)}
    return ValuationResult._from_stats(stats, method=func, info=info)


# -- exact semivalues ------------------------------------------------------------------------------


def exact_semivalue(utility: Utility, weight: Callable[[int, np.ndarray], np.ndarray] | np.ndarray | Sequence[float],
                    ) -> ValuationResult:
    """A semivalue by enumerating all 2^n coalitions (n ≤ 20; for tests and tiny games).

    ``φ_i = Σ_{S⊆D∖{i}} w(|S|)·[U(S∪{i}) − U(S)]`` with ``weight`` either a function
    ``weight(n, k)`` vectorised over k (:func:`shapley_weight`, :func:`banzhaf_weight`) or
    the n numbers w(0..n−1) (e.g. ``beta_weights(n, 16, 1)``). Values groups with
    ``GroupUtility(utility, groups)``.

    >>> from curation.value.utility import GameUtility
    >>> g = GameUtility({frozenset({0}): 1.0, frozenset({1}): 1.0, frozenset({0, 1}): 4.0})
    >>> exact_semivalue(g, shapley_weight).values
    array([2., 2.])
    """
    func = "exact_semivalue"
    if not isinstance(utility, Utility):
        raise InvalidParameterError(
            f"The 'utility' parameter of {func} must be a Utility. Got {type(utility).__name__} instead."
        )
    n = utility.n
    if n > MAX_EXACT_PLAYERS:
        raise InvalidParameterError(
            f"{func} enumerates 2^n coalitions; n={n} is above the limit {MAX_EXACT_PLAYERS}. "
            f"Use tmc_shapley, beta_shapley or banzhaf_msr."
        )
    sizes = np.arange(n)
    w = np.asarray(weight(n, sizes) if callable(weight) else weight, dtype=np.float64)
    if w.shape != (n,):
        raise InvalidParameterError(f"The 'weight' of {func} must give n={n} numbers w(0..n−1); got shape {w.shape}.")
    masks = np.arange(2**n, dtype=np.int64)
    bits = ((masks[:, None] >> np.arange(n)) & 1).astype(bool)
    U = np.array([utility(np.flatnonzero(b)) for b in bits])
    size = bits.sum(1)
    values = np.zeros(n)
    for i in range(n):
        without = masks[~bits[:, i]]
        values[i] = np.sum(w[size[without]] * (U[without | (1 << i)] - U[without]))
    return ValuationResult.exact(values, method=func, counts=np.full(n, 2 ** (n - 1)),
                                 info={"weights": w.tolist(), "utility_calls": 2**n})
