"""G-Shapley: Data Shapley from one epoch of SGD per permutation (Ghorbani & Zou 2019; docs/methods/valuation.md#g-shapley).

TMC-Shapley retrains a model for every prefix of every permutation. G-Shapley replaces
"train on the prefix" by "take one more SGD step": for a permutation π, logistic
regression is trained for **one epoch with batch size 1** from zero weights, visiting the
points in the order π, and the point seen at step j gets

    marginal_{π_j} = V(θ_j) − V(θ_{j−1})

with V the validation accuracy; the value is the mean over permutations. As in the
reference code's convention for U(∅) (§4.0), ``V(θ_0)`` is the majority-class frequency of
the validation labels (a zero-weight model has no preferred class). Each permutation's
marginals sum to ``V(θ_n) − V(θ_0)``.

The model is binary logistic regression (sigmoid, one weight vector) for two classes and
multinomial (softmax) otherwise, with a bias, no regularisation, and gradient
``(p − e_y) ⊗ x̃`` per point (x̃ = [x, 1]). The numpy SGD runs a whole batch of
permutations at once: step j updates all of their weight vectors with one vectorised
operation, and the validation accuracy of all of them is one matrix product, so a
permutation of n ≈ 1000 points costs n small matrix products, not n model fits.
Standardise the features first: the learning-rate grid assumes features of order 1.

``lr="auto"`` picks the learning rate as the reference code does: over 10^(−i),
i ∈ {1, 1.5, …, 4.5}, the one maximising mean − std of the one-epoch validation accuracy
over ``lr_runs`` random orders (the same orders for every rate).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curation.exceptions import DataError, InvalidParameterError
from curation.validation import Interval
from curation.value.result import ValuationResult
from curation.value.semivalues import (
    MapFn,
    _check,
    _check_previous,
    _child_seeds,
    _Convergence,
    _drive,
    _new_stats,
    serial_map,
)
from curation.value.utility import blas_threads

#: Learning rates tried by ``lr="auto"``: 10^(−i) for i = 1, 1.5, …, 4.5 (reference code).
LR_GRID = tuple(10.0 ** -i for i in np.arange(1.0, 5.0, 0.5))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1/(1+e^−z) without overflow


def _sgd_epoch(Xa: np.ndarray, y: np.ndarray, perms: np.ndarray, lr: np.ndarray, n_classes: int,
               Xv: np.ndarray | None = None, yv: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """One epoch of batch-size-1 SGD from zero weights for P orders at once.

    Args:
        Xa: (n, d+1) features with a trailing 1 (bias). y: (n,) class codes 0..C−1.
        perms: (P, n) visiting orders. lr: (P,) learning rate of each run.
        Xv, yv: validation set; when given, the accuracy after every step is recorded.

    Returns:
        W: final weights, (P, d+1) for two classes, else (P, d+1, C);
        acc: (P, n) validation accuracy after step j (None without a validation set).
    """
    P, n = perms.shape
    d = Xa.shape[1]
    binary = n_classes == 2
    W = np.zeros((P, d)) if binary else np.zeros((P, d, n_classes))
    acc = np.empty((P, n)) if Xv is not None else None
    runs = np.arange(P)
    for j in range(n):
        idx = perms[:, j]
        x, t = Xa[idx], y[idx]
        if binary:
            g = _sigmoid(np.einsum("pd,pd->p", x, W)) - t
            W -= (lr * g)[:, None] * x
            if acc is not None:
                acc[:, j] = _accuracy(W, Xv, yv, n_classes)
        else:
            z = np.einsum("pd,pdc->pc", x, W)
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[runs, t] -= 1.0  # softmax − one-hot
            W -= lr[:, None, None] * x[:, :, None] * p[:, None, :]
            if acc is not None:
                acc[:, j] = _accuracy(W, Xv, yv, n_classes)
    return W, acc


def _accuracy(W: np.ndarray, Xv: np.ndarray, yv: np.ndarray, n_classes: int) -> np.ndarray:
    """Validation accuracy (P,) of P weight sets: one (m, d+1) @ (d+1, P·C) product."""
    if n_classes == 2:
        return ((Xv @ W.T > 0) == (yv[:, None] == 1)).mean(0)
    P, d, C = W.shape
    logits = (Xv @ W.transpose(1, 0, 2).reshape(d, P * C)).reshape(len(Xv), P, C)
    return (logits.argmax(-1) == yv[:, None]).mean(0)


def _g_batch(args: tuple[Any, list[np.random.SeedSequence]]) -> np.ndarray:
    """Marginals (one row per permutation) of one batch of G-Shapley permutations."""
    (Xa, y, Xv, yv, n_classes, lr, v0), seeds = args
    n = len(Xa)
    perms = np.stack([np.random.default_rng(s).permutation(n) for s in seeds])
    with blas_threads(1):
        # n tiny matrix products: a multi-threaded BLAS only adds hand-off cost (60x slower on a busy host).
        _, acc = _sgd_epoch(Xa, y, perms, np.full(len(seeds), lr), n_classes, Xv, yv)
    assert acc is not None
    marg = np.diff(acc, axis=1, prepend=v0)
    rows = np.zeros_like(marg)
    rows[np.arange(len(seeds))[:, None], perms] = marg  # step j's marginal belongs to point perms[:, j]
    return rows


def search_lr(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *, runs: int = 10,
              grid: tuple[float, ...] = LR_GRID, rng: np.random.Generator) -> tuple[float, dict[float, float]]:
    """The learning rate of ``grid`` maximising mean − std of one-epoch validation accuracy.

    Every rate is tried on the same ``runs`` random orders (common random numbers, so rates
    are compared on equal footing); ties go to the first (largest) rate.

    Returns:
        (best rate, {rate: mean − std}).
    """
    Xa, yi, Xva, yvi, C = _prepare(X, y, X_val, y_val, "search_lr")
    _check("search_lr", "runs", runs, Interval(1, None, integer=True))
    n = len(Xa)
    orders = np.stack([np.random.default_rng(s).permutation(n) for s in _child_seeds(rng, int(runs))])
    perms = np.tile(orders, (len(grid), 1))
    lrs = np.repeat(np.asarray(grid, dtype=np.float64), int(runs))
    with blas_threads(1):
        W, _ = _sgd_epoch(Xa, yi, perms, lrs, C)
    acc = _accuracy(W, Xva, yvi, C).reshape(len(grid), int(runs))
    scores = acc.mean(1) - acc.std(1)
    best = int(np.argmax(scores))
    return float(grid[best]), {float(g): float(s) for g, s in zip(grid, scores)}


def _prepare(X: Any, y: Any, X_val: Any, y_val: Any, func: str) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                      np.ndarray, int]:
    X, X_val = np.asarray(X, dtype=np.float64), np.asarray(X_val, dtype=np.float64)
    y, y_val = np.asarray(y), np.asarray(y_val)
    if X.ndim != 2 or len(X) != len(y) or len(X) == 0:
        raise InvalidParameterError(
            f"{func}: X must be 2-d and non-empty with one label per row; got X.shape={X.shape}, len(y)={len(y)}."
        )
    if X_val.ndim != 2 or len(X_val) != len(y_val) or len(X_val) == 0 or X_val.shape[1] != X.shape[1]:
        raise InvalidParameterError(
            f"{func}: X_val must be 2-d, non-empty, with {X.shape[1]} features and one label per row; "
            f"got X_val.shape={X_val.shape}, len(y_val)={len(y_val)}."
        )
    classes = np.unique(np.concatenate([y, y_val]))
    if len(classes) < 2:
        raise DataError(f"{func}: the labels hold a single class ({classes.tolist()}); there is nothing to learn.")
    one = np.ones((len(X), 1))
    Xa = np.hstack([X, one])
    Xva = np.hstack([X_val, np.ones((len(X_val), 1))])
    return Xa, np.searchsorted(classes, y), Xva, np.searchsorted(classes, y_val), len(classes)


def g_shapley(
    X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *, max_permutations: int,
    lr: float | str = "auto", lr_runs: int = 10, conv_window: int = 100, conv_rtol: float = 0.05,
    batch: int = 50, n_jobs: int = 1, rng: np.random.Generator, map_fn: MapFn | None = None,
    previous: ValuationResult | None = None,
) -> ValuationResult:
    """G-Shapley values of the n training points (docs/methods/valuation.md#g-shapley).

    ``φ_i = E_π[V(θ_{j(i)}) − V(θ_{j(i)−1})]``, θ_j the logistic-regression weights after
    the first j SGD steps (batch size 1, zero start) in the order π, j(i) the step that
    visits i, V the validation accuracy, ``V(θ_0)`` = majority-class frequency.

    Args:
        lr: learning rate, or ``"auto"`` for :func:`search_lr` (reused from ``previous``
            when resuming, so a resumed run keeps its rate).
        lr_runs: random orders per rate in the search (the reference code uses 10).
        max_permutations: total permutations (``previous`` included).
        conv_window, conv_rtol: the paper's stopping criterion, as in
            :func:`~curation.value.semivalues.tmc_shapley` (``conv_rtol = 0`` turns it off).
        batch: permutations per batch; a batch is one vectorised SGD pass.
        n_jobs, map_fn, rng, previous: as in :func:`~curation.value.semivalues.tmc_shapley`.

    Returns:
        ValuationResult (method ``"g_shapley"``), ``info``: ``lr``, ``lr_scores``,
        ``permutations``, ``converged``, ``stop_reason``, ``v_empty``.
    """
    func = "g_shapley"
    Xa, yi, Xva, yvi, C = _prepare(X, y, X_val, y_val, func)
    n = len(Xa)
    if not isinstance(rng, np.random.Generator):
        raise InvalidParameterError(
            f"The 'rng' parameter of {func} must be a numpy.random.Generator. Got {rng!r} instead."
        )
    if not (lr == "auto" or Interval(0, None, closed="neither").accepts(lr)):
        raise InvalidParameterError(f"The 'lr' parameter of {func} must be 'auto' or a number > 0. Got {lr!r} instead.")
    _check(func, "lr_runs", lr_runs, Interval(1, None, integer=True))
    _check(func, "max_permutations", max_permutations, Interval(1, None, integer=True))
    _check(func, "conv_window", conv_window, Interval(1, None, integer=True))
    _check(func, "conv_rtol", conv_rtol, Interval(0, None))
    _check(func, "batch", batch, Interval(1, None, integer=True))
    _check(func, "n_jobs", n_jobs, Interval(1, None, integer=True))
    _check_previous(func, func, previous, n)

    lr_scores: dict[float, float] | None = None
    if lr == "auto":
        if previous is not None and "lr" in previous.info:
            lr, lr_scores = previous.info["lr"], previous.info.get("lr_scores")
        else:
            lr, lr_scores = search_lr(X, y, X_val, y_val, runs=int(lr_runs), rng=rng)
    _, counts = np.unique(yvi, return_counts=True)
    v0 = float(counts.max() / len(yvi))

    stats = _new_stats(n, previous)
    counters = {"done": int(previous.info.get("permutations", 0)) if previous is not None else 0}
    conv = _Convergence(int(conv_window), float(conv_rtol))

    def consume(rows: np.ndarray) -> bool:
        for row in rows:
            stats["sum"] += row
            stats["sum_sq"] += row * row
            stats["count"] += 1
            counters["done"] += 1
            if conv.update(stats["sum"] / stats["count"]):
                return True
        return False

    payload = (Xa, yi, Xva, yvi, C, float(lr), v0)
    converged = _drive(_g_batch, payload, total=int(max_permutations), done=counters["done"], batch=int(batch),
                       n_jobs=int(n_jobs), rng=rng, map_fn=map_fn or serial_map, consume=consume)
    info = {"lr": float(lr), "lr_scores": lr_scores, "permutations": counters["done"], "converged": converged,
            "stop_reason": "converged" if converged else "max_permutations", "convergence": conv.last,
            "v_empty": v0, "conv_window": conv_window, "conv_rtol": conv_rtol}
    return ValuationResult._from_stats(stats, method=func, info=info)
