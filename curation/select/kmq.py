"""Diversify and Conquer (Yu, Chen, Ahmadian, Fadaee 2024): kMQ and iterative kMQ.

**kMQ** (``kmq``). Given k-means clusters X_1..X_K of the pool:

1. cluster budgets ``b_j ∝ |X_j|`` (``cluster_budget="proportional"``, the paper) or equal
   (``"equal"``, the reference code), rounded with largest remainders; a cluster smaller than
   its budget gives all it has and the shortfall goes to the others (Σ b_j = b exactly);
2. inside each cluster, ``b_j`` items sampled **without replacement** with ``p(x) ∝ exp(q(x)/T)``
   (Gumbel-top-k: ``argtop_{b_j} q/T + G``, G ~ Gumbel(0, 1), which is sequential sampling
   without replacement with those weights). With a constant quality this is kM-Random.

**Iterative kMQ** (``kmq-iterative``, Algorithm 1). ``N = rounds`` rounds of ``b/N`` items
(largest remainders). Each round picks ``b_it`` not-yet-selected items with per-cluster counts
∝ ``w_j · base_j`` (base_j = |X_j| or 1, as in kMQ, so with uniform w round 1 *is* kMQ with
b/N) and the same within-cluster sampling. After each round but the last, a feedback scores
every selected item (higher = more to learn), ``s_j`` is the mean over cluster j's selected
items (clusters with none get the mean of the others: neutral), and

* ``mode="multiplicative"`` (default, the paper's Eq. 6 made well defined):
  ``w_j ← w_j · g_j / Σ_c w_c g_c`` with ``g = softmax(s / feedback_temperature)``;
* ``mode="replace"`` (the reference code): ``w = softmax(s / feedback_temperature)``.

Weights stay ≥ 0 and sum to 1; equal s keeps them unchanged; a lower s_j lowers cluster j's
next-round share. ``within="uniform"`` samples uniformly inside clusters (the reference code).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import polars as pl

from curation.allocation import allocate, largest_remainder
from curation.exceptions import DataError
from curation.report_schema import PlotSpec, SummarySection
from curation.score import build_scorer
from curation.select.base import Selector, formatted, scorer_calls_section
from curation.select.feedback import build_feedback
from curation.types import Pool, RowReasons, Selection
from curation.validation import Interval, Options


def softmax(x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64) / temperature
    z = np.exp(z - z.max())
    return z / z.sum()


def require_clusters(pool: Pool, method: str) -> np.ndarray:
    if pool.clusters is None:
        raise DataError(f"select.method={method!r} needs clusters: run the cluster stage (cluster.k) first")
    return np.asarray(pool.clusters, dtype=np.int64)


def sample_within_clusters(clusters: np.ndarray, counts: np.ndarray, quality: np.ndarray, temperature: float,
                           available: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``counts[j]`` available rows of each cluster j, without replacement, p ∝ exp(q/T).

    Gumbel-top-k over ``q/T + G`` draws exactly that distribution in one pass per cluster.
    The Gumbel noise is drawn a block at a time into the keys (the same numbers as one draw of
    all of them: one uniform each), not as a second pool-sized array (10M rows: 80 MB).
    """
    keys = np.divide(quality, temperature, dtype=np.float64)
    for s in range(0, len(keys), 1 << 16):
        block = keys[s : s + (1 << 16)]
        block += rng.gumbel(size=len(block))
    picks = []
    for j in np.flatnonzero(counts):
        members = np.flatnonzero((clusters == j) & available)
        top = members[np.argsort(-keys[members], kind="stable")[: counts[j]]]
        picks.append(top)
    return np.concatenate(picks).astype(np.int64) if picks else np.zeros(0, np.int64)


class _KMQBase(Selector):
    _constraints = {
        "temperature": Interval(0, None, closed="neither"),
        "cluster_budget": Options({"proportional", "equal"}),
    }

    @classmethod
    def summary_section(cls, info: Mapping[str, Any], summary: Mapping[str, Any],
                        params: Mapping[str, Any]) -> list[SummarySection]:
        return scorer_calls_section(info, summary)

    def _base(self, sizes: np.ndarray) -> np.ndarray:
        return sizes.astype(np.float64) if self.cluster_budget == "proportional" else (sizes > 0).astype(np.float64)

    def _quality(self, pool: Pool, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        scorer = build_scorer(self.quality, rng=rng)  # rng: a seeded scorer (influence) follows the recipe seed
        return scorer.score(pool), scorer.calls

    def validate(self) -> None:
        super().validate()
        build_scorer(self.quality)  # unknown scorer names fail before any work


class KMQSelector(_KMQBase, name="kmq"):
    """kMQ: size-proportional cluster budgets, quality-softmax sampling inside clusters.

    Args:
        quality: the quality scorer (``length``, ``knn-agreement``, ``python:mod:fn``; None = constant).
        temperature: T in ``p ∝ exp(q/T)``; large T -> uniform.
        cluster_budget: ``proportional`` (paper) or ``equal`` (reference code).

    >>> import numpy as np
    >>> from curation.types import Pool
    >>> pool = Pool(ids=np.arange(6).astype(str), embeddings=np.zeros((6, 2), np.float32),
    ...             groups=np.zeros(6, int), group_names=("*",), clusters=np.array([0, 0, 0, 0, 1, 1]))
    >>> sel = KMQSelector().select(pool, 3, rng=np.random.default_rng(0))
    >>> np.bincount(pool.clusters[sel.indices]).tolist()      # 3 x 4/6 = 2, 3 x 2/6 = 1
    [2, 1]
    """

    report_columns: ClassVar[dict[str, str]] = {"quality": "the row's quality score q (constant without a scorer)"}

    def __init__(self, *, quality: Any = None, temperature: float = 1.0, cluster_budget: str = "proportional") -> None:
        self.quality = quality
        self.temperature = temperature
        self.cluster_budget = cluster_budget

    def _select(self, pool: Pool, budget: int, *, rng: np.random.Generator) -> Selection:
        clusters = require_clusters(pool, "kmq")
        q, calls = self._quality(pool, rng)
        sizes = np.bincount(clusters, minlength=clusters.max() + 1)
        counts = allocate(self._base(sizes), budget, sizes)
        idx = sample_within_clusters(clusters, counts, q, self.temperature, np.ones(len(pool), bool), rng)
        chosen = np.zeros(len(pool), bool)
        chosen[idx] = True
        template = f"kmq: {{}} from cluster {{}} (quota {{}} of {{}}, quality {{}}, p ∝ exp(q/{self.temperature:g}))"

        def reasons(rows: slice | np.ndarray) -> pl.Series:
            # column-wise, for the rows asked for (a report block): one Python string per
            # distinct quality, and never the pool's reasons at once (10M rows: ~0.9 GB)
            c = clusters[rows]
            return pl.DataFrame({
                "verdict": np.where(chosen[rows], "drawn", "not drawn"), "cluster": c,
                "quota": counts[c], "size": sizes[c], "quality": formatted(q[rows], "{:.3g}"),
            }).select(pl.format(template, "verdict", "cluster", "quota", "size", "quality")).to_series()

        info = {"cluster_budgets": counts.tolist(), "scorer_calls": calls}
        return Selection(indices=idx, reasons=RowReasons(len(pool), reasons), info=info, columns={"quality": q})


class IterativeKMQSelector(_KMQBase, name="kmq-iterative"):
    """Iterative kMQ: N rounds, cluster weights re-estimated from feedback after each.

    Args:
        rounds: N (N = 1 is kMQ).
        quality, temperature, cluster_budget: as in :class:`KMQSelector`.
        mode: ``multiplicative`` (default) or ``replace``.
        feedback: ``proxy-loss`` (default), ``{name: proxy-loss, folds: 5}`` or ``python:mod:fn``.
        feedback_temperature: T in ``softmax(s / T)``.
        within: ``quality`` (softmax of quality in clusters) or ``uniform``.
    """

    _constraints = {
        **_KMQBase._constraints,
        "rounds": Interval(1, None, integer=True),
        "mode": Options({"multiplicative", "replace"}),
        "feedback_temperature": Interval(0, None, closed="neither"),
        "within": Options({"quality", "uniform"}),
    }
    report_columns: ClassVar[dict[str, str]] = {
        "round": "the round that picked the row (0: not picked)",
        "quality": "the row's quality score q (0 with within='uniform')",
        "cluster_weight": "its cluster's weight when picked (not picked: the final weight)",
    }

    @classmethod
    def report_plots(cls, report: pl.DataFrame, info: Mapping[str, Any], params: Mapping[str, Any]) -> list[PlotSpec]:
        """Per round: the cluster weights it drew with (``info["cluster_weights"]``: uniform in
        round 1, then re-weighted by the feedback) and the items it picked per cluster (the
        report's ``round`` column)."""
        weights = info.get("cluster_weights") or []
        if not weights:
            return []
        clusters = [str(j) for j in range(len(weights[0]))]
        plots = [PlotSpec("bar", heading="Rounds", categories=clusters, xlabel="cluster",
                          ylabel="cluster weight", yformat=".0%",
                          title="Cluster weights in each round (uniform in round 1; after each round the clusters "
                                "whose items the proxy still gets wrong gain weight)",
                          series={f"round {r + 1}": w for r, w in enumerate(weights)})]
        if "round" in report.columns:
            picked = report.filter(pl.col("round") > 0).group_by("round", "cluster").len()
            n = {(r, c): k for r, c, k in picked.iter_rows()}
            plots.append(PlotSpec("bar", title="Items picked in each round, per cluster (stacked: the bar is the "
                                  "cluster's share of the selection)", categories=clusters, stacked=True,
                                  xlabel="cluster", ylabel="items picked",
                                  series={f"round {r}": [n.get((r, j), 0) for j in range(len(clusters))]
                                          for r in range(1, len(weights) + 1)}))
        return plots

    def __init__(self, *, rounds: int = 3, quality: Any = None, temperature: float = 1.0,
                 cluster_budget: str = "proportional", mode: str = "multiplicative", feedback: Any = "proxy-loss",
                 feedback_temperature: float = 1.0, within: str = "quality") -> None:
        self.rounds = rounds
        self.quality = quality
        self.temperature = temperature
        self.cluster_budget = cluster_budget
        self.mode = mode
        self.feedback = feedback
        self.feedback_temperature = feedback_temperature
        self.within = within

    def validate(self) -> None:
        super().validate()
        build_feedback(self.feedback)

    def update_weights(self, w: np.ndarray, s: np.ndarray) -> np.ndarray:
        """One weight update from per-cluster feedback means ``s`` (see the module docstring)."""
        g = softmax(s, self.feedback_temperature)
        new = w * g if self.mode == "multiplicative" else g
        return new / new.sum()

    def _select(self, pool: Pool, budget: int, *, rng: np.random.Generator) -> Selection:
        clusters = require_clusters(pool, "kmq-iterative")
        n, K = len(pool), int(clusters.max()) + 1
        q, calls = self._quality(pool, rng) if self.within == "quality" else (np.zeros(n), 0)
        feedback = build_feedback(self.feedback)
        sizes = np.bincount(clusters, minlength=K)
        base = self._base(sizes)
        w = np.full(K, 1.0 / K)
        history = [w.copy()]
        per_round = largest_remainder(np.ones(self.rounds), budget)
        available = np.ones(n, bool)
        round_of = np.zeros(n, np.int64)
        weight_at_pick = np.full(n, np.nan)
        selected: list[np.ndarray] = []
        feedback_means: list[list[float]] = []
        for r, b_r in enumerate(per_round):
            remaining = np.bincount(clusters[available], minlength=K)
            counts = allocate(w * base, int(b_r), remaining)
            picks = sample_within_clusters(clusters, counts, q, self.temperature, available, rng)
            available[picks] = False
            round_of[picks] = r + 1
            weight_at_pick[picks] = w[clusters[picks]]
            selected.append(picks)
            if r == self.rounds - 1:
                break
            so_far = np.concatenate(selected)
            S = feedback(pool, so_far, rng)
            sums = np.bincount(clusters[so_far], weights=S, minlength=K)
            cnt = np.bincount(clusters[so_far], minlength=K)
            s = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
            s = np.where(np.isnan(s), np.nanmean(s), s)  # unseen clusters: neutral
            feedback_means.append(s.tolist())
            w = self.update_weights(w, s)
            history.append(w.copy())
        idx = np.concatenate(selected)
        unpicked = round_of == 0
        weight_at_pick[unpicked] = w[clusters[unpicked]]  # not picked: its cluster's final weight
        reasons = np.array([
            f"kmq-iterative: picked in round {rd} from cluster {j} (cluster weight {wt:.3g})" if rd
            else f"kmq-iterative: not picked; cluster {j} final weight {w[j]:.3g}"
            for rd, j, wt in zip(round_of, clusters, weight_at_pick)
        ], dtype=object)
        info = {
            "rounds": self.rounds,
            "round_budgets": per_round.tolist(),
            "cluster_weights": [h.tolist() for h in history],
            "cluster_feedback": feedback_means,
            "scorer_calls": calls,
        }
        # round 0 = not picked (rounds count from 1)
        columns = {"round": round_of, "quality": q, "cluster_weight": weight_at_pick}
        return Selection(indices=idx, reasons=reasons, info=info, columns=columns)
