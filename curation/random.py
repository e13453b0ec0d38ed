"""The one place random number generators are made.

Algorithms take a keyword-only ``rng`` (a :class:`numpy.random.Generator`) and never create
their own. The flow owns one root seed (recorded in the manifest) and derives child streams
with :func:`spawn`, so parallel shards are independent and stable across runs.
"""

from __future__ import annotations

import numpy as np

Seed = int | np.random.Generator | None


def check_rng(seed: Seed) -> np.random.Generator:
    """Turn a seed into a Generator (a Generator is passed through unchanged).

    >>> check_rng(1).integers(0, 10) == check_rng(1).integers(0, 10)
    True
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (int, np.integer)):
        return np.random.default_rng(seed)
    raise TypeError(f"seed must be None, an int or a numpy Generator; got {type(seed).__name__}")


def spawn(root_seed: int, n: int) -> list[np.random.Generator]:
    """``n`` independent child streams of ``root_seed`` (stable across runs and machines)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(root_seed).spawn(n)]


def int_seed(rng: np.random.Generator) -> int:
    """An int seed drawn from ``rng``, for libraries that want one (faiss ``seed=``, torch)."""
    return int(rng.integers(0, 2**31 - 1))
