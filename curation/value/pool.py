"""Value every item of a pool against its held-out set: the recipe's ``value:`` section.

Each method is a typed parameter model registered by name (:class:`ValueMethod`; plugins
register under the entry-point group ``curation.value_methods``): the recipe's ``value``
section validates into the method's model, whose ``run`` does the work. ``value_pool(pool,
config)`` shards the work through ``map_fn`` (the flow
passes a Ray map; serial by default) and returns a :class:`ValuationResult` with one value per
pool row:

* ``knn-shapley``: truncated (``epsilon``), the pool's rows are split into shards of
  :data:`curation.value.knn_shapley.SHARD_ROWS`, each shard's nearest rows to every held-out
  row are found where ``map_fn`` runs them, and merged (exact: the same K* nearest as one
  search); exact, the held-out rows are split into shards, each ranking the whole pool, and
  the shard means are combined weighted by shard size (the value is a mean over test points);
* model-based methods (``tmc-shapley``, ``g-shapley``, ``loo``, ``beta-shapley``, ``banzhaf``):
  a logistic regression per evaluated subset, scored by accuracy on the held-out rows;
  permutations / samples are batched through ``map_fn``. With ``players: groups`` each group is
  one player and its value is split equally among its items.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from curation.exceptions import DataError
from curation.registry import Registered, Registry
from curation.types import Pool
from curation.value.gshapley import g_shapley
from curation.value.knn_shapley import knn_shapley, truncated_knn_shapley
from curation.value.result import ValuationResult
from curation.value.semivalues import banzhaf_msr, beta_shapley, expand_group_values, loo, serial_map, tmc_shapley
from curation.value.utility import ModelUtility

MapFn = Callable[[Callable[[Any], Any], list[Any]], list[Any]]


class ValueMethod(Registered, BaseModel):
    """A valuation method's recipe settings (``value: {method: ..., <settings>}``) and its run."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    registry: ClassVar[Registry] = Registry("value method", "curation.value_methods", builtins="curation.value.pool")

    method: str

    def run(self, pool: Pool, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *, rng: np.random.Generator,
            map_fn: MapFn, n_jobs: int) -> ValuationResult:
        raise NotImplementedError


def _knn_shard(args: tuple) -> np.ndarray:
    X, y, Xt, yt, k = args
    return knn_shapley(X, y, Xt, yt, k) * len(Xt)


class KnnShapley(ValueMethod, name="knn-shapley"):
    """Exact (or ``epsilon``-truncated) KNN-Shapley: closed form, scales to millions of items."""

    method: Literal["knn-shapley"] = Field(default="knn-shapley", description="the valuation method")
    k: int = Field(default=5, gt=0, description="neighbours of the KNN classifier")
    epsilon: float | None = Field(default=None, gt=0, le=1, description="truncation (null = exact)")

    def run(self, pool, y, X_val, y_val, *, rng, map_fn, n_jobs):
        X = pool.embeddings
        if self.epsilon is not None:
            # truncated: the pool streams through in shards of rows, each task holding one shard
            # and all held-out rows; the shards' nearest rows merge into each test point's K*
            values, n_shards = truncated_knn_shapley(X, y, X_val, y_val, self.k, self.epsilon, map_fn=map_fn)
        else:
            # exact: every test point ranks the whole pool; one shard of held-out rows per worker,
            # each task carrying the pool's vectors once; the value is a mean over test points,
            # so the size-weighted mean of shard values is exact
            size = -(-len(X_val) // max(1, n_jobs))
            shards = [(X, y, X_val[a : a + size], y_val[a : a + size], self.k) for a in range(0, len(X_val), size)]
            values = np.sum(map_fn(_knn_shard, shards), axis=0) / len(X_val)
            n_shards = len(shards)
        # exact for the held-out set (or within epsilon): no sampling error to report
        return ValuationResult(values=values, stderr=np.full(len(values), np.nan),
                               counts=np.zeros(len(values), np.int64), method="knn_shapley",
                               info={"k": self.k, "epsilon": self.epsilon, "shards": n_shards})


class _ModelBased(ValueMethod):
    """Methods that train a logistic regression per evaluated subset (scored by held-out accuracy)."""

    players: Literal["items", "groups"] = Field(default="items", description="value items, or each group as one "
                                                "player (its value split equally among its items)")
    max_items: int = Field(default=5000, gt=0, description="largest pool accepted (the cost grows with it)")

    def draws(self) -> int:
        return 1

    def run(self, pool, y, X_val, y_val, *, rng, map_fn, n_jobs):
        if len(pool) > self.max_items:
            raise DataError(
                f"value.method={self.method} trains a model per evaluated subset and would not finish on "
                f"{len(pool)} items (value.max_items={self.max_items}). Use value.method=knn-shapley, "
                "value.players=groups, or a smaller pool (sources[].limit).")
        X = pool.embeddings
        groups = None
        if self.players == "groups":
            groups = [g for g in (np.flatnonzero(pool.groups == c) for c in range(len(pool.group_names))) if len(g)]
        # one batch per worker and round (results do not depend on the batching, only the speed does)
        batch = int(np.clip(-(-self.draws() // max(1, n_jobs)), 1, 100))
        res = self._run(X, y, X_val, y_val, groups, rng=rng, map_fn=map_fn, n_jobs=n_jobs, batch=batch)
        if groups is None:
            return res
        # per item: the group's value (and its standard error) split equally among its items
        info = {**res.info, "players": "groups",
                "group_values": {pool.group_names[pool.groups[g[0]]]: float(v) for g, v in zip(groups, res.values)}}
        return ValuationResult(values=expand_group_values(res, groups, len(X)),
                               stderr=expand_group_values(res.stderr, groups, len(X)),
                               counts=np.zeros(len(X), np.int64), method=res.method, info=info)

    def _run(self, X, y, X_val, y_val, groups, *, rng, map_fn, n_jobs, batch) -> ValuationResult:
        raise NotImplementedError


class TmcShapley(_ModelBased, name="tmc-shapley"):
    """Truncated Monte Carlo Shapley (Ghorbani & Zou 2019)."""

    method: Literal["tmc-shapley"] = Field(default="tmc-shapley", description="the valuation method")
    max_permutations: int = Field(default=500, gt=0, description="permutations at most")
    truncation_rtol: float = Field(default=0.01, ge=0, description="a permutation stops when the utility is "
                                   "this close (relative) to the full set's")
    truncation_patience: int = Field(default=5, ge=0, description="... for this many items in a row")
    conv_rtol: float = Field(default=0.05, ge=0, description="stop when the values move less than this (relative)")
    stderr_tol: float = Field(default=0.0, ge=0, description="or stop when every value's standard error is at most "
                              "this (utility units, e.g. 0.001 of accuracy; 0: off)")

    def draws(self) -> int:
        return self.max_permutations

    def _run(self, X, y, X_val, y_val, groups, *, rng, map_fn, n_jobs, batch):
        return tmc_shapley(ModelUtility(X, y, X_val, y_val), max_permutations=self.max_permutations,
                           truncation_rtol=self.truncation_rtol, truncation_patience=self.truncation_patience,
                           conv_rtol=self.conv_rtol, stderr_tol=self.stderr_tol, groups=groups, rng=rng,
                           map_fn=map_fn, n_jobs=n_jobs, batch=batch)


class GShapley(_ModelBased, name="g-shapley"):
    """Gradient Shapley: one SGD epoch of logistic regression per permutation (items only)."""

    method: Literal["g-shapley"] = Field(default="g-shapley", description="the valuation method")
    max_permutations: int = Field(default=500, gt=0, description="permutations at most")
    conv_rtol: float = Field(default=0.05, ge=0, description="stop when the values move less than this (relative)")

    def draws(self) -> int:
        return self.max_permutations

    def _run(self, X, y, X_val, y_val, groups, *, rng, map_fn, n_jobs, batch):
        if groups is not None:
            raise DataError("value.method=g-shapley values items, not groups: use value.players=items")
        return g_shapley(X, y, X_val, y_val, max_permutations=self.max_permutations, conv_rtol=self.conv_rtol,
                         rng=rng, map_fn=map_fn, n_jobs=n_jobs, batch=batch)


class Loo(_ModelBased, name="loo"):
    """Leave-one-out: the utility lost when one item (or group) is removed; n + 1 fits."""

    method: Literal["loo"] = Field(default="loo", description="the valuation method")

    def _run(self, X, y, X_val, y_val, groups, *, rng, map_fn, n_jobs, batch):
        return loo(ModelUtility(X, y, X_val, y_val), groups=groups, map_fn=map_fn,
                   batch=max(1, -(-len(X) // max(1, n_jobs))))


class BetaShapley(_ModelBased, name="beta-shapley"):
    """Beta(alpha, beta) semivalue (Kwon & Zou 2022): weights small coalitions more."""

    method: Literal["beta-shapley"] = Field(default="beta-shapley", description="the valuation method")
    samples: int = Field(default=2000, gt=0, description="utility samples")
    alpha: float = Field(default=16.0, gt=0, description="Beta weight's alpha")
    beta: float = Field(default=1.0, gt=0, description="Beta weight's beta")
    stderr_tol: float = Field(default=0.0, ge=0, description="stop early when every value's standard error is at "
                              "most this (utility units; 0: off)")

    def draws(self) -> int:
        return self.samples

    def _run(self, X, y, X_val, y_val, groups, *, rng, map_fn, n_jobs, batch):
        return beta_shapley(ModelUtility(X, y, X_val, y_val), alpha=self.alpha, beta=self.beta,
                            n_samples=self.samples, groups=groups, rng=rng, map_fn=map_fn, n_jobs=n_jobs, batch=batch,
                            stderr_tol=self.stderr_tol)


class Banzhaf(_ModelBased, name="banzhaf"):
    """Data Banzhaf by maximum sample reuse (Wang & Jia 2023): robust to noisy utilities."""

    method: Literal["banzhaf"] = Field(default="banzhaf", description="the valuation method")
    samples: int = Field(default=2000, gt=0, description="utility samples")
    stderr_tol: float = Field(default=0.0, ge=0, description="stop early when every value's standard error is at "
                              "most this (utility units; 0: off)")

    def draws(self) -> int:
        return self.samples

    def _run(self, X, y, X_val, y_val, groups, *, rng, map_fn, n_jobs, batch):
        return banzhaf_msr(ModelUtility(X, y, X_val, y_val), n_samples=self.samples, groups=groups, rng=rng,
                           map_fn=map_fn, n_jobs=n_jobs, batch=batch, stderr_tol=self.stderr_tol)


def value_method(settings: dict[str, Any] | ValueMethod | None = None, /, **keys: Any) -> ValueMethod:
    """The typed settings of a ``value`` mapping or keywords (``method`` defaults to ``knn-shapley``)."""
    if isinstance(settings, ValueMethod):
        return settings
    settings = {**(settings or {}), **keys}
    name = settings.get("method", "knn-shapley")
    return ValueMethod.registry.get(name, field="value.method").model_validate({**settings, "method": name})


def value_pool(pool: Pool, config: ValueMethod | dict[str, Any], *, rng: np.random.Generator,
               map_fn: MapFn | None = None, n_jobs: int = 1) -> ValuationResult:
    """One value (and standard error where the method has one) per pool row.

    Raises:
        DataError: no held-out set or labels, or a model-based method on a pool above ``max_items``.
    """
    config = value_method(config)
    ref = pool.require_reference(f"value.method={config.method!r}")
    y, y_val, _ = pool.encode_labels()
    t0 = time.perf_counter()
    res = config.run(pool, y, ref.embeddings, y_val, rng=rng, map_fn=map_fn or serial_map, n_jobs=n_jobs)
    res.info["seconds"] = round(time.perf_counter() - t0, 3)
    res.info["validation_rows"] = len(ref)
    return res
