"""random.py, validation.py and types.py."""

from __future__ import annotations

import numpy as np
import pytest

from curation.exceptions import InvalidParameterError
from curation.random import check_rng, int_seed, spawn
from curation.types import Pool, Selection
from curation.validation import Interval, Options, check_budget, validate_params


def test_check_rng_branches():
    g = np.random.default_rng(3)
    assert check_rng(g) is g
    assert check_rng(5).integers(0, 1000) == np.random.default_rng(5).integers(0, 1000)
    with pytest.raises(TypeError, match="seed must be None, an int or a numpy Generator; got str"):
        check_rng("5")


def test_spawn_is_stable_and_independent():
    a = [r.integers(0, 2**31, 4).tolist() for r in spawn(7, 3)]
    b = [r.integers(0, 2**31, 4).tolist() for r in spawn(7, 3)]
    assert a == b
    assert len({tuple(x) for x in a}) == 3  # all pairwise distinct (a chained != skips a[0] vs a[2])
    assert [r.integers(0, 2**31, 4).tolist() for r in spawn(8, 3)] != a  # another root seed, other streams
    assert 0 <= int_seed(np.random.default_rng(0)) < 2**31 - 1


def test_constraint_message_format():
    class Thing:
        _constraints = {"alpha": Interval(0, 1, closed="right"), "mode": Options({"x", "y"})}

        def __init__(self, alpha, mode):
            self.alpha, self.mode = alpha, mode

    validate_params(Thing(0.5, "x"))
    with pytest.raises(InvalidParameterError, match=r"The 'alpha' parameter of Thing must be a number in the range \(0, 1\]\. Got 0 instead\."):
        validate_params(Thing(0, "x"))
    with pytest.raises(InvalidParameterError, match=r"The 'mode' parameter of Thing must be one of 'x', 'y'\. Got 'z' instead\."):
        validate_params(Thing(1, "z"))


def test_interval_rejects_bools_nan_and_non_integers():
    c = Interval(0, None, integer=True)
    assert c.accepts(3) and c.accepts(3.0)
    assert not c.accepts(True) and not c.accepts(2.5) and not c.accepts(-1) and not c.accepts(float("nan"))


@pytest.mark.parametrize("budget,match", [(9, r"budget=9 should be <= n_samples=8"), (0, r"budget=0 should be > 0"),
                                          (-3, r"budget=-3 should be > 0")])
def test_check_budget_messages(budget, match):
    with pytest.raises(InvalidParameterError, match=match):
        check_budget(budget, 8)


def test_pool_invariants():
    ok = dict(ids=np.array(["a", "b"]), embeddings=np.zeros((2, 3), np.float32), groups=np.array([0, 1]), group_names=("x", "y"))
    assert Pool(**ok).group_sizes().tolist() == [1, 1]
    with pytest.raises(ValueError, match=r"embeddings must have shape \(n=2, d\)"):
        Pool(**{**ok, "embeddings": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="groups has 1 rows but ids has 2"):
        Pool(**{**ok, "groups": np.array([0])})
    with pytest.raises(ValueError, match=r"group codes must lie in \[0, 2\)"):
        Pool(**{**ok, "groups": np.array([0, 2])})
    with pytest.raises(ValueError, match="clusters has 3 rows"):
        Pool(**ok, clusters=np.zeros(3))


def test_selection_rejects_duplicates_and_builds_mask():
    assert Selection(indices=np.array([2, 0])).mask(3).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="duplicates"):
        Selection(indices=np.array([1, 1]))
