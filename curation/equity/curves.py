"""Learning-curve models for per-group error and how to fit them.

Two families (docs/methods/group-adaptive.md#the-problem):

* :class:`PowerLaw` (model (a)): ``e(n) = a · n^(−b) + c`` with ``a > 0``, ``b > 0`` and an
  asymptote (irreducible error, "floor") ``c ≥ 0``. It is what the static optimisers in
  :mod:`curation.equity.static` take.
* :class:`TwoTerm` (model (b), Rolf et al. 2021): ``e_g(n_g, n) = δ + σ² n_g^(−p) + τ² n^(−q)``
  where ``n = Σ_h n_h`` is the whole training set, so data of other groups also helps group g.

Both are fitted on the **log** of the error (errors span orders of magnitude along a learning
curve; a fit on the raw scale would only look at the smallest-n points).

To add a family: a frozen dataclass with ``error``, ``derivative``, ``to_dict`` and a
``fit_*`` function returning an object with ``.curve`` and ``.residual``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curation.exceptions import DataError, InvalidParameterError
from curation.random import Seed, check_rng

# The smallest error a fit ever takes the log of (see _floor_zeros for how zeros are handled).
ERROR_FLOOR = 1e-9

# b is kept in (0, 2] as in Rolf et al.; the lower end is a small positive number because a
# curve with b = 0 is flat and has no finite need().
_B_MIN, _B_MAX = 1e-6, 2.0
# The asymptote is fitted as c = s · min(err) with s in [0, _S_MAX]: c stays strictly below the
# smallest observed error, otherwise log(err − c) is undefined at that point.
_S_MAX = 1.0 - 1e-9


def _out(x: np.ndarray) -> float | np.ndarray:
    """A Python float for scalar input, the array otherwise."""
    return float(x) if np.ndim(x) == 0 else x


@dataclass(frozen=True)
class PowerLaw:
    """``e(n) = a · n^(−b) + c``: error after training on ``n`` samples of the group.

    Args:
        a: scale, > 0.
        b: learning rate (exponent), > 0.
        c: asymptote (the error no amount of this group's data removes), ≥ 0.

    >>> curve = PowerLaw(a=1.0, b=0.5, c=0.0)
    >>> curve.error(100.0), curve.need(0.1)
    (0.1, 100.0)
    """

    a: float
    b: float
    c: float = 0.0

    def __post_init__(self) -> None:
        for name, value, ok, allowed in (
            ("a", self.a, self.a > 0, "> 0"),
            ("b", self.b, self.b > 0, "> 0"),
            ("c", self.c, self.c >= 0, ">= 0"),
        ):
            if not (isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value) and ok):
                raise InvalidParameterError(f"The {name!r} parameter of PowerLaw must be finite and {allowed}. "
                                            f"Got {value!r} instead.")

    def error(self, n: float | np.ndarray) -> float | np.ndarray:
        """``a · n^(−b) + c`` (``inf`` at ``n = 0``)."""
        n = np.asarray(n, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return _out(self.a * np.power(n, -self.b) + self.c)

    def derivative(self, n: float | np.ndarray) -> float | np.ndarray:
        """``de/dn = −a · b · n^(−b−1)`` (negative: more data lowers the error)."""
        n = np.asarray(n, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return _out(-self.a * self.b * np.power(n, -self.b - 1.0))

    def need(self, t: float | np.ndarray) -> float | np.ndarray:
        """Samples needed to bring the error down to ``t``: ``(a / (t − c))^(1/b)``.

        ``inf`` when ``t ≤ c`` (the asymptote is never reached with finite data).
        """
        t = np.asarray(t, dtype=np.float64)
        gap = t - self.c
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = np.where(gap > 0, np.power(self.a / np.where(gap > 0, gap, 1.0), 1.0 / self.b), np.inf)
        return _out(out)

    def to_dict(self) -> dict[str, Any]:
        return {"model": "power_law", "a": float(self.a), "b": float(self.b), "c": float(self.c)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PowerLaw:
        return cls(a=float(d["a"]), b=float(d["b"]), c=float(d["c"]))


@dataclass(frozen=True)
class CurveFit:
    """A fitted :class:`PowerLaw` and how well it is pinned down.

    Attributes:
        curve: the least-squares fit (on log error) to all points.
        params_std: standard deviation of ``(a, b, c)`` over bootstrap refits (points resampled
            with replacement); NaN when ``bootstrap=0`` or fewer than two resamples could be fitted.
        residual: root-mean-square residual of the fit on the log-error scale.
        n_points: number of points used.
        c_fixed: True when fewer than three distinct sample sizes were available, so ``c`` was
            fixed at 0 and only ``a, b`` were fitted.
    """

    curve: PowerLaw
    params_std: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    residual: float = float("nan")
    n_points: int = 0
    c_fixed: bool = False

    def to_dict(self) -> dict[str, Any]:
        a_std, b_std, c_std = (float(x) for x in self.params_std)
        return {**self.curve.to_dict(), "a_std": a_std, "b_std": b_std, "c_std": c_std,
                "residual": float(self.residual), "n_points": int(self.n_points), "c_fixed": bool(self.c_fixed)}


def _check_points(name_n: str, n: Any, err: Any) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(n, dtype=np.float64).ravel()
    err = np.asarray(err, dtype=np.float64).ravel()
    if len(n) != len(err):
        raise InvalidParameterError(f"{name_n} has {len(n)} values but err has {len(err)}; they must be row-aligned.")
    if not (np.isfinite(n).all() and np.isfinite(err).all()):
        raise DataError(f"{name_n} and err must be finite; got {name_n}={n.tolist()}, err={err.tolist()}")
    if (n < 1).any():
        raise DataError(f"{name_n} must be >= 1 (a model trained on no data has no point on the curve); "
                        f"got {name_n}={n.tolist()}")
    if (err < 0).any():
        raise DataError(f"err must be >= 0; got {err.tolist()}")
    return n, _floor_zeros(err)


def _floor_zeros(err: np.ndarray) -> np.ndarray:
    """Replace zero errors before the log.

    A zero error on a finite validation set means "below its resolution", not minus infinity on
    the log scale: it becomes half the smallest positive error observed (``ERROR_FLOOR`` when
    every error is zero). Otherwise one perfect score on a small split would dominate the fit.
    """
    pos = err[err > 0]
    floor = 0.5 * float(pos.min()) if len(pos) else ERROR_FLOOR
    return np.maximum(err, max(floor, ERROR_FLOOR))


def _fit_core(n: np.ndarray, err: np.ndarray) -> tuple[PowerLaw, float, bool]:
    """Least squares on ``log err`` over ``θ = (log a, b, s)`` with ``c = s · min(err)``.

    Initialisation: for each ``s`` on a grid that crowds towards 1 (where the curve bends most),
    ``log(err − c) = log a − b log n`` is linear, so ``(log a, b)`` comes from ordinary least
    squares; the grid point with the smallest log-error residual starts ``curve_fit``. Fitting
    ``log a`` instead of ``a`` and ``c`` as a fraction of ``min(err)`` keeps the three parameters
    on comparable scales, which the trust-region solver needs to converge tightly.

    Repeated sizes are collapsed to their mean log error with weight = multiplicity first: the
    sum of squares differs only by a constant, so the minimiser is the same and the fit is
    cheaper (the adaptive loop evaluates every size several times).
    """
    from scipy.optimize import OptimizeWarning, curve_fit  # 0.9 s to import: only when a curve is fitted

    logn_all, logy_all = np.log(n), np.log(err)
    y_min = float(err.min())
    uniq, inv, mult = np.unique(logn_all, return_inverse=True, return_counts=True)
    if len(uniq) < 2:
        raise DataError(f"fitting a learning curve needs at least 2 distinct sample sizes; got n={n.tolist()}")
    logn = uniq
    logy = np.bincount(inv, weights=logy_all) / mult
    const = float(((logy_all - logy[inv]) ** 2).sum())  # within-size scatter: no parameter can fit it
    c_fixed = len(uniq) < 3  # two sizes determine a and b only

    def sse_of(log_a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        pred = np.log(np.exp(log_a[:, None] - b[:, None] * logn[None, :]) + c[:, None])
        return (mult * (pred - logy) ** 2).sum(axis=1) + const

    # grid initialisation, vectorised over the candidate asymptotes
    grid = np.zeros(1) if c_fixed else np.append(1.0 - np.geomspace(1.0, 1e-4, 40), 1.0 - 1e-6)
    z = np.log(np.exp(logy)[None, :] - grid[:, None] * y_min)  # log(err − c), err = mean on the log scale
    wts = mult / mult.sum()
    xm = (wts * logn).sum()
    zm = (z * wts).sum(axis=1)
    slope = ((wts * (logn - xm))[None, :] * (z - zm[:, None])).sum(axis=1) / (wts * (logn - xm) ** 2).sum()
    b0 = np.clip(-slope, _B_MIN, _B_MAX)
    log_a0 = zm + b0 * xm
    sse0 = sse_of(log_a0, b0, grid * y_min)
    k = int(np.nanargmin(sse0))
    best = (float(log_a0[k]), float(b0[k]), float(grid[k]), float(sse0[k]))

    # Refinement: curve_fit with Levenberg-Marquardt (MINPACK; ~40x faster than the bounded
    # trust-region solver on these tiny problems, which matters inside the adaptive loop). The
    # bounds are kept by the change of variables b = 2·expit(u), s = S_MAX·expit(v).
    from scipy.special import expit, logit  # here: scipy's import is 0.3 s of every build's start

    def unpack(u: float, v: float) -> tuple[float, float]:
        return _B_MAX * expit(u), _S_MAX * expit(v)

    def model(x: np.ndarray, log_a: float, u: float, v: float = -np.inf) -> np.ndarray:
        b, s = unpack(u, v)
        return np.log(np.exp(log_a - b * x) + s * y_min)

    def jac(x: np.ndarray, log_a: float, u: float, v: float = -np.inf) -> np.ndarray:
        b, s = unpack(u, v)
        p = np.exp(log_a - b * x)
        d = p + s * y_min
        cols = [p / d, -x * p / d * b * (1.0 - b / _B_MAX)]
        if not c_fixed:
            cols.append(np.full_like(x, y_min * s * (1.0 - s / _S_MAX)) / d)
        return np.stack(cols, axis=1)

    u0 = float(logit(min(max(best[1] / _B_MAX, 1e-12), 1 - 1e-12)))
    v0 = float(logit(min(max(best[2] / _S_MAX, 1e-12), 1 - 1e-12)))
    p0 = [best[0], u0] if c_fixed else [best[0], u0, v0]
    try:
        with warnings.catch_warnings(), np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, _ = curve_fit(model, logn, logy, p0=p0, sigma=1.0 / np.sqrt(mult), jac=jac, method="lm",
                                ftol=1e-14, xtol=1e-14, gtol=1e-14, maxfev=2000)
        b1, s1 = unpack(popt[1], popt[2] if not c_fixed else -np.inf)
        b1 = max(b1, _B_MIN)
        sse = float(sse_of(popt[:1], np.array([b1]), np.array([s1 * y_min]))[0])
        if np.isfinite(sse) and sse <= best[3]:
            best = (float(popt[0]), float(b1), float(s1), sse)
    except (RuntimeError, ValueError):  # the grid start is a valid (if rougher) fit: keep it
        pass
    log_a, b, s, sse = best
    curve = PowerLaw(a=float(np.exp(log_a)), b=float(b), c=float(s * y_min))
    return curve, math.sqrt(max(sse, 0.0) / len(n)), c_fixed


def fit_power_law(n: Any, err: Any, *, bootstrap: int = 0, rng: Seed = None) -> CurveFit:
    """Fit ``err ≈ a · n^(−b) + c`` by least squares on ``log err``.

    Bounds: ``a > 0``, ``b ∈ (0, 2]``, ``0 ≤ c < min(err)``. With only two distinct sample
    sizes ``c`` is fixed at 0 (three parameters need three sizes). Repeated sizes (several
    evaluations at the same ``n``) are fine and average the noise.

    Args:
        n: training-set sizes, each ≥ 1.
        err: validation error at each size, ≥ 0. Zeros (below the validation set's resolution)
            are replaced by half the smallest positive error before the log.
        bootstrap: number of bootstrap refits (points resampled with replacement) used for
            ``params_std``; resamples with fewer distinct sizes than the full data are skipped.
        rng: seed or Generator for the bootstrap (only used when ``bootstrap > 0``).

    Returns:
        A :class:`CurveFit`. On noiseless samples of a power law the parameters are recovered to
        about 1e−6 relative error.

    Raises:
        InvalidParameterError: mismatched lengths or a negative ``bootstrap``.
        DataError: non-finite values, ``n < 1``, ``err < 0`` or fewer than two distinct sizes.

    >>> n = np.array([10.0, 30, 100, 300, 1000])
    >>> fit = fit_power_law(n, 2.0 * n ** -0.5 + 0.05)
    >>> [round(v, 4) for v in (fit.curve.a, fit.curve.b, fit.curve.c)]
    [2.0, 0.5, 0.05]
    """
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise InvalidParameterError(f"The 'bootstrap' parameter of fit_power_law must be an int >= 0. "
                                    f"Got {bootstrap!r} instead.")
    n, err = _check_points("n", n, err)
    curve, residual, c_fixed = _fit_core(n, err)
    std = np.full(3, np.nan)
    if bootstrap > 0:
        gen = check_rng(rng)
        distinct = len(np.unique(n))
        params = []
        for _ in range(int(bootstrap)):
            idx = gen.integers(0, len(n), size=len(n))
            # a resample that lost sizes would be fitted by a smaller model: not the same estimator
            if len(np.unique(n[idx])) < min(distinct, 3):
                continue
            boot, _, _ = _fit_core(n[idx], err[idx])
            params.append((boot.a, boot.b, boot.c))
        if len(params) >= 2:
            std = np.asarray(params).std(axis=0, ddof=1)
    return CurveFit(curve=curve, params_std=std, residual=residual, n_points=len(n), c_fixed=c_fixed)


@dataclass(frozen=True)
class TwoTerm:
    """Rolf et al. (2021): ``e_g(n_g, n) = δ + σ² n_g^(−p) + τ² n^(−q)``.

    ``n_g`` is the number of the group's own samples, ``n`` the whole training set (all groups,
    ``n ≥ n_g``). ``σ², τ², δ ≥ 0`` and ``p, q ∈ [0, 2]`` (the bounds of the reference fit).

    >>> TwoTerm(delta=0.1, sigma2=1.0, p=0.5, tau2=1.0, q=0.5).error(100.0, 400.0)
    0.25
    """

    delta: float
    sigma2: float
    p: float
    tau2: float
    q: float

    def __post_init__(self) -> None:
        for name in ("delta", "sigma2", "tau2"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise InvalidParameterError(f"The {name!r} parameter of TwoTerm must be finite and >= 0. "
                                            f"Got {v!r} instead.")
        for name in ("p", "q"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 <= v <= 2):
                raise InvalidParameterError(f"The {name!r} parameter of TwoTerm must be in [0, 2]. Got {v!r} instead.")

    def error(self, n_g: float | np.ndarray, n: float | np.ndarray) -> float | np.ndarray:
        n_g = np.asarray(n_g, dtype=np.float64)
        n = np.asarray(n, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return _out(self.delta + self.sigma2 * np.power(n_g, -self.p) + self.tau2 * np.power(n, -self.q))

    def derivative(self, n_g: float | np.ndarray, n: float | np.ndarray) -> float | np.ndarray:
        """Change in error per extra sample of the group (it raises both ``n_g`` and ``n``):
        ``−p σ² n_g^(−p−1) − q τ² n^(−q−1)``."""
        n_g = np.asarray(n_g, dtype=np.float64)
        n = np.asarray(n, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return _out(-self.p * self.sigma2 * np.power(n_g, -self.p - 1.0)
                        - self.q * self.tau2 * np.power(n, -self.q - 1.0))

    def to_dict(self) -> dict[str, Any]:
        return {"model": "two_term", "delta": float(self.delta), "sigma2": float(self.sigma2), "p": float(self.p),
                "tau2": float(self.tau2), "q": float(self.q)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TwoTerm:
        return cls(**{k: float(d[k]) for k in ("delta", "sigma2", "p", "tau2", "q")})


# Rolf et al.'s initial guess (σ², p, τ², q, δ) = (1, 1, 1, 1, 1e-8), in this module's field order.
ROLF_P0 = TwoTerm(delta=1e-8, sigma2=1.0, p=1.0, tau2=1.0, q=1.0)


@dataclass(frozen=True)
class TwoTermFit:
    """A fitted :class:`TwoTerm`; ``residual`` is the RMS residual on the log-error scale."""

    curve: TwoTerm
    residual: float
    n_points: int

    def to_dict(self) -> dict[str, Any]:
        return {**self.curve.to_dict(), "residual": float(self.residual), "n_points": int(self.n_points)}


def fit_two_term(n_g: Any, n_total: Any, err: Any, *, p0: TwoTerm | None = None, max_nfev: int = 1000,
                 min_pts: int = 1) -> TwoTermFit:
    """Fit Rolf et al.'s two-term curve for one group, as in their ``fit_scaling_law``.

    ``scipy.optimize.curve_fit`` on ``log err`` with bounds ``σ², τ², δ ∈ [0, ∞)``,
    ``p, q ∈ [0, 2]``, initial guess :data:`ROLF_P0` and ``max_nfev=1000``, on the points with
    ``n_g ≥ min_pts`` and ``n_total ≥ min_pts``. When ``p0`` is None the reference start is tried
    first and, because that single start can stop in a poor local minimum, a few other starts
    are tried as well; the fit with the smallest residual wins.

    The two terms are only separable when ``n_g / n_total`` varies across points (otherwise
    ``σ² n_g^(−p)`` and ``τ² n^(−q)`` are the same function); design the subsamples so it does.

    Args:
        n_g: the group's own sample count at each point.
        n_total: the whole training set size at each point (≥ ``n_g``).
        err: validation error of the group at each point (≥ 0; zeros handled as in
            :func:`fit_power_law`).
        p0: initial guess; None = the reference start plus restarts.
        max_nfev: function-evaluation cap per start (1000 in the reference).
        min_pts: points with fewer samples than this are dropped (1 in the reference).

    Raises:
        InvalidParameterError: mismatched lengths, ``n_total < n_g``.
        DataError: fewer than 5 usable points (five parameters).
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    n_g = np.asarray(n_g, dtype=np.float64).ravel()
    n_total = np.asarray(n_total, dtype=np.float64).ravel()
    err = np.asarray(err, dtype=np.float64).ravel()
    if not (len(n_g) == len(n_total) == len(err)):
        raise InvalidParameterError(f"n_g, n_total and err must be row-aligned; got lengths "
                                    f"{len(n_g)}, {len(n_total)}, {len(err)}.")
    if (n_total < n_g).any():
        raise InvalidParameterError("n_total must be >= n_g at every point (n_total counts all groups); "
                                    f"got n_g={n_g.tolist()}, n_total={n_total.tolist()}")
    keep = (n_g >= min_pts) & (n_total >= min_pts) & np.isfinite(err)
    if keep.sum() < 5:
        raise DataError(f"fit_two_term needs at least 5 points with n_g, n_total >= min_pts={min_pts}; "
                        f"got {int(keep.sum())}")
    x = np.vstack([n_g[keep], n_total[keep]])
    if (err[keep] < 0).any():
        raise DataError(f"err must be >= 0; got {err[keep].tolist()}")
    logy = np.log(_floor_zeros(err[keep]))

    # Rolf's parameter order (σ², p, τ², q, δ) inside the optimiser.
    def model(xx: np.ndarray, s2: float, p: float, t2: float, q: float, d: float) -> np.ndarray:
        return np.log(d + s2 * np.exp(-p * np.log(xx[0])) + t2 * np.exp(-q * np.log(xx[1])))

    lb, ub = [0.0, 0.0, 0.0, 0.0, 0.0], [np.inf, 2.0, np.inf, 2.0, np.inf]
    starts = [p0 if p0 is not None else ROLF_P0]
    if p0 is None:
        y = float(np.exp(logy).min())
        starts += [TwoTerm(delta=0.5 * y, sigma2=1.0, p=0.5, tau2=1.0, q=0.5),
                   TwoTerm(delta=0.9 * y, sigma2=1.0, p=0.3, tau2=0.1, q=1.0),
                   TwoTerm(delta=0.1 * y, sigma2=0.1, p=1.0, tau2=1.0, q=0.3)]
    best: tuple[float, np.ndarray] | None = None
    for st in starts:
        guess = [st.sigma2, st.p, st.tau2, st.q, st.delta]
        try:
            with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
                warnings.simplefilter("ignore", OptimizeWarning)
                popt, _ = curve_fit(model, x, logy, p0=guess, bounds=(lb, ub), max_nfev=max_nfev)
        except (RuntimeError, ValueError):
            continue
        sse = float(((model(x, *popt) - logy) ** 2).sum())
        if np.isfinite(sse) and (best is None or sse < best[0]):
            best = (sse, popt)
    if best is None:
        raise DataError("fit_two_term: curve_fit did not converge from any start; check the points")
    sse, (s2, p, t2, q, d) = best
    curve = TwoTerm(delta=float(d), sigma2=float(s2), p=float(p), tau2=float(t2), q=float(q))
    return TwoTermFit(curve=curve, residual=math.sqrt(sse / x.shape[1]), n_points=int(x.shape[1]))
