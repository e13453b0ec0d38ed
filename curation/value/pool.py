"""Value every item of a pool against its held-out set: the recipe's ``value:`` section.

``value_pool(pool, config)`` picks the method, shards the work through ``map_fn`` (the flow
passes a Ray map; serial by default) and returns a :class:`ValuationResult` with one value per
pool row:

* ``knn-shapley``: the held-out rows are split into shards, each shard's values are computed
  where ``map_fn`` runs them, and the shard means are combined weighted by shard size (the
  value is a mean over test points, so this is exact);
* model-based methods (``tmc-shapley``, ``g-shapley``, ``loo``, ``beta-shapley``, ``banzhaf``):
  a logistic regression per evaluated subset, scored by accuracy on the held-out rows;
  permutations / samples are batched through ``map_fn``. With ``players: groups`` each group is
  one player and its value is split equally among its items.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from curation.exceptions import DataError
from curation.recipe import ValueConfig
from curation.types import Pool
from curation.value.gshapley import g_shapley
from curation.value.knn_shapley import knn_shapley
from curation.value.result import ValuationResult
from curation.value.semivalues import banzhaf_msr, beta_shapley, expand_group_values, loo, serial_map, tmc_shapley
from curation.value.utility import ModelUtility

MapFn = Callable[[Callable[[Any], Any], list[Any]], list[Any]]


def _knn_shard(args: tuple) -> np.ndarray:
    X, y, Xt, yt, k, eps = args
    return knn_shapley(X, y, Xt, yt, k, epsilon=eps) * len(Xt)


def value_pool(pool: Pool, config: ValueConfig, *, rng: np.random.Generator, map_fn: MapFn | None = None,
               n_jobs: int = 1) -> ValuationResult:
    """One value (and standard error where the method has one) per pool row.

    Raises:
        DataError: no held-out set or labels, or a model-based method on a pool above ``max_items``.
    """
    map_fn = map_fn or serial_map
    ref = pool.require_reference(f"value.method={config.method!r}")
    y, y_val, _ = pool.encode_labels()
    t0 = time.perf_counter()
    if config.method == "knn-shapley":
        # one shard of held-out rows per worker: each task carries the pool's vectors once
        size = -(-len(ref) // max(1, n_jobs))
        shards = [(pool.embeddings, y, ref.embeddings[a : a + size], y_val[a : a + size], config.k,
                   config.epsilon) for a in range(0, len(ref), size)]
        values = np.sum(map_fn(_knn_shard, shards), axis=0) / len(ref)
        # exact for the held-out set (or within epsilon): no sampling error to report
        res = ValuationResult(values=values, stderr=np.full(len(values), np.nan), counts=np.zeros(len(values), np.int64),
                              method="knn_shapley", info={"k": config.k, "epsilon": config.epsilon,
                                                          "shards": len(shards)})
    else:
        if len(pool) > config.max_items:
            raise DataError(
                f"value.method={config.method} trains a model per evaluated subset and would not finish on "
                f"{len(pool)} items (value.max_items={config.max_items}). Use value.method=knn-shapley, "
                "value.players=groups, or a smaller pool (sources[].limit).")
        res = _model_based(pool, config, y, ref.embeddings, y_val, rng=rng, map_fn=map_fn, n_jobs=n_jobs)
    res.info["seconds"] = round(time.perf_counter() - t0, 3)
    res.info["validation_rows"] = len(ref)
    return res


def _model_based(pool: Pool, config: ValueConfig, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *,
                 rng: np.random.Generator, map_fn: MapFn, n_jobs: int) -> ValuationResult:
    X = pool.embeddings
    groups = ([np.flatnonzero(pool.groups == g) for g in range(len(pool.group_names))]
              if config.players == "groups" else None)
    if groups is not None:
        groups = [g for g in groups if len(g)]
    m = config.method
    # one batch per worker and round (results do not depend on the batching, only the speed does)
    draws = config.samples if m in ("beta-shapley", "banzhaf") else config.max_permutations
    batch = int(np.clip(-(-draws // max(1, n_jobs)), 1, 100))
    common = {"rng": rng, "map_fn": map_fn, "n_jobs": n_jobs, "batch": batch}
    if m == "g-shapley":
        if groups is not None:
            raise DataError("value.method=g-shapley values items, not groups: use value.players=items")
        return g_shapley(X, y, X_val, y_val, max_permutations=config.max_permutations, conv_rtol=config.conv_rtol,
                         **common)
    utility = ModelUtility(X, y, X_val, y_val)
    if m == "tmc-shapley":
        res = tmc_shapley(utility, max_permutations=config.max_permutations, truncation_rtol=config.truncation_rtol,
                          truncation_patience=config.truncation_patience, conv_rtol=config.conv_rtol, groups=groups,
                          **common)
    elif m == "loo":
        res = loo(utility, groups=groups, map_fn=map_fn, batch=max(1, -(-len(X) // max(1, n_jobs))))
    elif m == "beta-shapley":
        res = beta_shapley(utility, alpha=config.alpha, beta=config.beta, n_samples=config.samples, groups=groups,
                           **common)
    else:
        res = banzhaf_msr(utility, n_samples=config.samples, groups=groups, **common)
    if groups is None:
        return res
    # per item: the group's value (and its standard error) split equally among its items
    info = {**res.info, "players": "groups",
            "group_values": {pool.group_names[pool.groups[g[0]]]: float(v) for g, v in zip(groups, res.values)}}
    return ValuationResult(values=expand_group_values(res, groups, len(X)),
                           stderr=expand_group_values(res.stderr, groups, len(X)),
                           counts=np.zeros(len(X), np.int64), method=res.method, info=info)
