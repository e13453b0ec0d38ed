"""Largest-remainder rounding and capacity-aware allocation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.allocation import allocate, largest_remainder
from curation.exceptions import InvalidParameterError


def test_largest_remainder_known_answers():
    assert largest_remainder(np.array([1.0, 1.0, 1.0]), 10).tolist() == [4, 3, 3]
    # exact shares 5.7, 3.2, 1.1 -> floors 5,3,1 (9) + the largest remainder (.7) gets the last one
    assert largest_remainder(np.array([57, 32, 11.0]), 10).tolist() == [6, 3, 1]
    assert largest_remainder(np.array([0.0, 2.0]), 5).tolist() == [0, 5]
    assert largest_remainder(np.array([1.0]), 0).tolist() == [0]


def test_allocate_redistributes_shortfall_of_small_group():
    # equal weights, budget 30 over 3 groups, but group 0 has only 4 rows: its 6 missing rows
    # go to the others in proportion to their weights (3 each)
    n = allocate(np.ones(3), 30, capacity=np.array([4, 100, 100]))
    assert n.tolist() == [4, 13, 13]


def test_allocate_minimum_lifts_small_groups():
    # proportional weights 90:9:1 with budget 20 would give group 2 nothing; a minimum of 3 lifts it
    n = allocate(np.array([90, 9, 1.0]), 20, capacity=np.array([90, 9, 1]), minimum=3)
    assert n.tolist()[2] == 1  # capped at its size
    assert n[1] >= 3 and n.sum() == 20


def test_allocate_budget_above_total_capacity_takes_everything():
    assert allocate(np.ones(2), 50, capacity=np.array([3, 4])).tolist() == [3, 4]


def test_allocate_minimums_above_budget_is_a_clear_error():
    with pytest.raises(InvalidParameterError, match=r"min_per_group needs 30 rows across 3 groups but the budget is 20"):
        allocate(np.ones(3), 20, capacity=np.array([50, 50, 50]), minimum=10)


@settings(max_examples=300, deadline=None)
@given(
    caps=st.lists(st.integers(0, 50), min_size=1, max_size=8),
    weights=st.lists(st.floats(0, 10, allow_nan=False), min_size=8, max_size=8),
    budget=st.integers(0, 300),
    minimum=st.integers(0, 5),
)
def test_allocate_invariants(caps, weights, budget, minimum):
    cap = np.array(caps)
    w = np.array(weights[: len(caps)])
    mins = np.minimum(minimum, cap)
    if mins.sum() > min(budget, cap.sum()):
        with pytest.raises(InvalidParameterError):
            allocate(w, budget, cap, minimum)
        return
    n = allocate(w, budget, cap, minimum)
    assert n.sum() == min(budget, cap.sum())      # exact budget (or everything there is)
    assert (n <= cap).all() and (n >= mins).all()  # capacities and floors hold
