"""Learning-curve models and fitters (docs/methods/group-adaptive.md#invariants)."""

from __future__ import annotations

import numpy as np
import pytest

from curation.equity.curves import ROLF_P0, PowerLaw, TwoTerm, fit_power_law, fit_two_term
from curation.exceptions import DataError, InvalidParameterError

SIZES = np.array([10.0, 20, 40, 80, 160, 320, 640, 1280])


def test_power_law_error_derivative_need_are_consistent():
    cv = PowerLaw(a=2.0, b=0.5, c=0.1)
    assert cv.error(100.0) == pytest.approx(0.3)
    assert cv.error(0.0) == np.inf
    h = 1e-4
    assert cv.derivative(50.0) == pytest.approx((cv.error(50.0 + h) - cv.error(50.0 - h)) / (2 * h), rel=1e-6)
    assert cv.derivative(50.0) < 0
    # need() inverts error() above the asymptote and is infinite at or below it
    assert cv.need(cv.error(123.0)) == pytest.approx(123.0)
    assert cv.need(0.1) == np.inf and cv.need(0.05) == np.inf
    np.testing.assert_allclose(cv.error(np.array([1.0, 4.0])), [2.1, 1.1])
    assert PowerLaw.from_dict(cv.to_dict()) == cv


@pytest.mark.parametrize("field, kwargs", [("a", {"a": 0.0, "b": 0.5}), ("b", {"a": 1.0, "b": -1.0}),
                                           ("c", {"a": 1.0, "b": 0.5, "c": -0.1})])
def test_power_law_rejects_out_of_range_parameters(field, kwargs):
    with pytest.raises(InvalidParameterError, match=rf"The '{field}' parameter of PowerLaw must be"):
        PowerLaw(**kwargs)


@pytest.mark.parametrize("a, b, c", [(1.0, 0.5, 0.0), (2.0, 0.3, 0.05), (5.0, 1.2, 0.2), (0.5, 0.8, 0.01),
                                     (3.0, 0.1, 0.3), (1.0, 2.0, 0.1)])
def test_fit_recovers_noiseless_power_law(a, b, c):
    fit = fit_power_law(SIZES, a * SIZES**-b + c)
    assert fit.curve.a == pytest.approx(a, rel=1e-3)
    assert fit.curve.b == pytest.approx(b, rel=1e-3)
    assert fit.curve.c == pytest.approx(c, rel=1e-3, abs=1e-6)  # abs only matters for c = 0
    assert fit.residual < 1e-8
    assert np.isnan(fit.params_std).all()  # no bootstrap asked for


def test_fit_with_repeats_noise_and_bootstrap_is_bounded_and_reproducible():
    rng = np.random.default_rng(0)
    n = np.repeat(SIZES, 3)
    err = (2.0 * n**-0.4 + 0.05) * np.exp(rng.normal(0, 0.05, len(n)))
    fit = fit_power_law(n, err, bootstrap=30, rng=1)
    again = fit_power_law(n, err, bootstrap=30, rng=1)
    assert fit.curve == again.curve
    np.testing.assert_array_equal(fit.params_std, again.params_std)
    assert np.isfinite(fit.params_std).all() and (fit.params_std > 0).all()
    assert 0 < fit.curve.b <= 2 and 0 <= fit.curve.c < err.min()
    assert fit.curve.b == pytest.approx(0.4, abs=0.15)  # noisy but sane


def test_fit_with_two_sizes_fixes_the_asymptote():
    n = np.array([10.0, 10, 100, 100])
    fit = fit_power_law(n, 3.0 * n**-0.5)
    assert fit.c_fixed and fit.curve.c == 0.0
    assert fit.curve.a == pytest.approx(3.0, rel=1e-6) and fit.curve.b == pytest.approx(0.5, rel=1e-6)


def test_zero_errors_are_read_as_below_resolution_not_minus_infinity():
    err = 1.0 * SIZES**-0.5
    err[-1] = 0.0  # a perfect score on a small validation split
    fit = fit_power_law(SIZES, err)
    floored = err.copy()
    floored[-1] = 0.5 * err[:-1].min()
    assert fit.curve == fit_power_law(SIZES, floored).curve
    assert 0.3 < fit.curve.b < 1.0 and np.isfinite(fit.residual)


def test_fit_input_errors_name_the_problem():
    with pytest.raises(InvalidParameterError, match=r"n has 3 values but err has 2"):
        fit_power_law([1, 2, 3], [0.5, 0.4])
    with pytest.raises(DataError, match=r"n must be >= 1"):
        fit_power_law([0, 2, 3], [0.5, 0.4, 0.3])
    with pytest.raises(DataError, match=r"at least 2 distinct sample sizes"):
        fit_power_law([5, 5, 5], [0.5, 0.4, 0.3])
    with pytest.raises(InvalidParameterError, match=r"'bootstrap' parameter of fit_power_law must be an int >= 0"):
        fit_power_law(SIZES, 1 / SIZES, bootstrap=-1)


def test_two_term_error_and_derivative():
    cv = TwoTerm(delta=0.1, sigma2=1.0, p=0.5, tau2=2.0, q=0.5)
    assert cv.error(100.0, 400.0) == pytest.approx(0.1 + 0.1 + 0.1)
    # one more sample of the group raises n_g and n together
    h = 1e-4
    fd = (cv.error(100 + h, 400 + h) - cv.error(100 - h, 400 - h)) / (2 * h)
    assert cv.derivative(100.0, 400.0) == pytest.approx(fd, rel=1e-6)
    assert TwoTerm.from_dict(cv.to_dict()) == cv
    with pytest.raises(InvalidParameterError, match=r"The 'p' parameter of TwoTerm must be in \[0, 2\]"):
        TwoTerm(delta=0.1, sigma2=1.0, p=3.0, tau2=1.0, q=0.5)


def _two_term_design():
    # n_g / n must vary, otherwise the two terms are the same function of the data
    n_g, n = [], []
    for own in (20, 50, 100, 200, 500, 1000):
        for others in (0, 50, 200, 1000):
            n_g.append(own)
            n.append(own + others)
    return np.array(n_g, float), np.array(n, float)


@pytest.mark.parametrize("true", [TwoTerm(0.05, 1.0, 0.5, 0.5, 0.3), TwoTerm(0.1, 2.0, 0.7, 1.0, 0.4),
                                  TwoTerm(0.02, 0.5, 0.3, 0.2, 0.8)])
def test_two_term_fit_recovers_noiseless_parameters(true):
    n_g, n = _two_term_design()
    fit = fit_two_term(n_g, n, true.error(n_g, n))
    # measured: about 1e-8 relative on this design; 1e-4 is the tolerance we promise
    for name in ("delta", "sigma2", "p", "tau2", "q"):
        assert getattr(fit.curve, name) == pytest.approx(getattr(true, name), rel=1e-4), name
    # the reference single start (Rolf et al.'s p0) also gets there on this case
    rolf = fit_two_term(n_g, n, true.error(n_g, n), p0=ROLF_P0)
    for name in ("delta", "sigma2", "p", "tau2", "q"):
        assert getattr(rolf.curve, name) == pytest.approx(getattr(true, name), rel=1e-4), name


def test_two_term_fit_input_errors():
    with pytest.raises(InvalidParameterError, match=r"n_total must be >= n_g"):
        fit_two_term([10, 20, 30, 40, 50], [5, 20, 30, 40, 50], [0.5] * 5)
    with pytest.raises(DataError, match=r"at least 5 points"):
        fit_two_term([0, 20, 30, 40, 50], [10, 20, 30, 40, 50], [0.5] * 5)
