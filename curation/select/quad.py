"""Quad (Zhang et al., ICLR 2025): clusters as arms of a UCB bandit, scored by probes.

Each round takes the ``clusters_per_round`` clusters with the highest cluster score (CS), scores a
probe of ``probe`` items drawn from each one's next chunk of ``chunk`` items with the quality
scorer, and accepts the chunk when ``r = mean(probe scores) − tau > 0``. The reward r is
propagated to every cluster whose centroid lies within cosine distance ``rho`` of the pulled one
(itself included) with weight ``1 − d/rho`` (a radius search per pull, never a dense K×K
matrix), and the scores are refreshed:

* ``ucb="code"`` (default, the reference code): ``CS_i = R_i/N_i + α·sqrt(2·ln N_tot / (N_i + 1))``
  with R, N the propagated reward sums and counts (mean 0 where N_i = 0);
* ``ucb="paper"``: ``CS_i = Ī_i + α·sqrt(2·ln Σ_j T_j / T_i)`` over each cluster's own pulls
  (unpulled clusters first).

Library defaults (docs/methods/quad.md#the-algorithm): only accepted chunks are emitted; the probe is
drawn from the chunk it judges; a last, shorter chunk may be pulled; the last accepted chunk is
trimmed so the selection never exceeds the budget. Only probed items are scored
(``info["scorer_calls"]``). When no chunk is good enough, Quad returns fewer items than the
budget: it never pads with items it judged bad.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import polars as pl

from curation.report_schema import PlotSpec, SummarySection
from curation.score import build_scorer
from curation.select.base import Selector, scorer_calls_section
from curation.select.kmq import require_clusters
from curation.types import Pool, Selection
from curation.validation import Interval, Options, TypeOf


class QuadSelector(Selector, name="quad"):
    """Cluster-bandit selection balancing quality (probe scores) and diversity (UCB bonus).

    Args:
        scorer: the quality scorer (``length``, ``knn-agreement``, ``python:mod:fn``, ...).
        clusters_per_round: k, clusters pulled per round.
        probe: b, items scored per pull.
        chunk: m, items admitted per accepted pull.
        tau: threshold subtracted from the probe mean; a chunk is accepted iff mean − tau > 0.
        alpha: exploration weight (scale it to the scorer's spread).
        rho: neighbour radius (cosine distance between centroids) for reward propagation; 0 = none.
        max_rounds: upper bound on rounds.
        ucb: ``code`` or ``paper`` (see the module docstring).
    """

    exact_budget: ClassVar[bool] = False
    _constraints = {
        "clusters_per_round": Interval(1, None, integer=True),
        "probe": Interval(1, None, integer=True),
        "chunk": Interval(1, None, integer=True),
        "tau": TypeOf((int, float)),
        "alpha": Interval(0, None),
        "rho": Interval(0, 2),
        "max_rounds": Interval(1, None, integer=True),
        "ucb": Options({"code", "paper"}),
    }
    report_columns: ClassVar[dict[str, str]] = {
        "round": "the round the row's chunk was pulled in (0: never pulled)",
        "probe_score": "probe mean score of the row's chunk (null: chunk never pulled)",
        "chunk_accepted": "in an accepted chunk and kept (not trimmed by the budget)",
        "ucb_mean": "the chunk's cluster mean reward when it was pulled",
        "ucb_bonus": "the chunk's cluster exploration bonus when it was pulled",
    }
    reason_codes: ClassVar[dict[str, str]] = {
        "chunk_rejected": "its chunk's probe mean was <= tau",
        "chunk_not_reached": "its cluster was not pulled far enough to reach its chunk",
        "budget_reached": "its chunk was accepted but trimmed: the budget was full",
    }

    @classmethod
    def summary_section(cls, info: Mapping[str, Any], summary: Mapping[str, Any],
                        params: Mapping[str, Any]) -> list[SummarySection]:
        return scorer_calls_section(info, summary)

    @classmethod
    def report_plots(cls, report: pl.DataFrame, info: Mapping[str, Any], params: Mapping[str, Any]) -> list[PlotSpec]:
        probed = report.filter(pl.col("probe_score").is_not_null())
        if not probed.height:
            return []
        # accepted vs rejected from the reason codes (exact), the threshold from the build's own params
        rejected = pl.col("reason_code") == "chunk_rejected"
        plots = [PlotSpec("histogram", heading="Quad probes", xlabel="probe mean score of the item's chunk",
                          title=f"Probe mean score of every pulled chunk's items (tau = {params['tau']:g})",
                          series={"accepted chunks": probed.filter(~rejected)["probe_score"].to_numpy(),
                                  "rejected chunks": probed.filter(rejected)["probe_score"].to_numpy()})]
        pulls = info.get("history") or []
        if pulls:  # per round: the chunks pulled, accepted or not (info["history"]: one entry per pull)
            last = max(int(h["round"]) for h in pulls)
            count = Counter((int(h["round"]), bool(h["accepted"])) for h in pulls)
            plots.append(PlotSpec("bar", title="Chunks pulled in each round: accepted vs rejected", stacked=True,
                                  categories=[str(r) for r in range(1, last + 1)], xlabel="round", ylabel="chunks",
                                  series={name: [count.get((r, ok), 0) for r in range(1, last + 1)]
                                          for name, ok in (("accepted", True), ("rejected", False))}))
        return plots

    def __init__(self, *, scorer: Any = "length", clusters_per_round: int = 50, probe: int = 10, chunk: int = 50,
                 tau: float = 0.002, alpha: float = 1e-4, rho: float = 0.2, max_rounds: int = 200,
                 ucb: str = "code") -> None:
        self.scorer = scorer
        self.clusters_per_round = clusters_per_round
        self.probe = probe
        self.chunk = chunk
        self.tau = tau
        self.alpha = alpha
        self.rho = rho
        self.max_rounds = max_rounds
        self.ucb = ucb

    def validate(self) -> None:
        super().validate()
        build_scorer(self.scorer)

    def _select(self, pool: Pool, budget: int, *, rng: np.random.Generator) -> Selection:
        clusters = require_clusters(pool, "quad")
        K = int(clusters.max()) + 1
        n = len(pool)
        scorer = build_scorer(self.scorer, rng=rng)  # rng: a seeded scorer (influence) follows the recipe seed
        order = [rng.permutation(np.flatnonzero(clusters == c)) for c in range(K)]
        cent = np.stack([pool.embeddings[o].mean(0) if len(o) else np.zeros(pool.embeddings.shape[1]) for o in order])
        cent = cent / np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
        pulls = np.zeros(K, np.int64)
        R, N, Ntot = np.zeros(K), np.zeros(K), 0.0          # propagated rewards (code UCB)
        own_sum = np.zeros(K)                               # own probe rewards (paper UCB)
        mean, bonus = np.zeros(K), np.zeros(K)
        cs = np.zeros(K)
        sizes = np.array([len(o) for o in order])
        picked: list[np.ndarray] = []
        n_picked = 0
        round_of = np.zeros(n, np.int64)
        probe_score = np.full(n, np.nan)
        accepted = np.zeros(n, bool)  # in an accepted chunk and kept
        pulled = np.zeros(n, bool)
        chunk_ok = np.zeros(n, bool)  # in a chunk whose probe passed (the report's reason codes)
        ucb_mean, ucb_bonus = np.full(n, np.nan), np.full(n, np.nan)
        history: list[dict[str, Any]] = []
        for t in range(self.max_rounds):
            exhausted = pulls * self.chunk >= sizes          # never chosen again
            ranking = np.lexsort((rng.random(K), -cs))      # by CS, ties broken at random
            chosen = [c for c in ranking if not exhausted[c]][: self.clusters_per_round]
            if not chosen:
                break
            for c in chosen:
                part = order[c][pulls[c] * self.chunk : (pulls[c] + 1) * self.chunk]
                probe = rng.choice(part, size=min(self.probe, len(part)), replace=False)
                r = float(scorer.score(pool, probe).mean()) - self.tau
                pulls[c] += 1
                pulled[part] = True
                chunk_ok[part] = r > 0
                probe_score[part] = r + self.tau
                ucb_mean[part], ucb_bonus[part], round_of[part] = mean[c], bonus[c], t + 1
                take = part[: max(0, budget - n_picked)] if r > 0 else part[:0]
                if len(take):
                    accepted[take] = True
                    picked.append(take)
                    n_picked += len(take)
                own_sum[c] += r
                if self.rho > 0:
                    d = 1.0 - cent @ cent[c]
                    nb = np.flatnonzero(d < self.rho)
                    R[nb] += r * (1 - d[nb] / self.rho)
                    N[nb] += 1
                    Ntot += len(nb)
                else:
                    R[c] += r
                    N[c] += 1
                    Ntot += 1
                history.append({"round": t + 1, "cluster": int(c), "probe_mean": r + self.tau, "accepted": r > 0,
                                "cs": float(cs[c])})
                if n_picked >= budget:
                    break
            if self.ucb == "code":
                mean = np.where(N > 0, R / np.maximum(N, 1), 0.0)
                bonus = self.alpha * np.sqrt(2 * np.log(max(Ntot, 1.0)) / (N + 1))
            else:
                mean = np.where(pulls > 0, own_sum / np.maximum(pulls, 1), 0.0)
                total = max(int(pulls.sum()), 1)
                bonus = np.where(pulls > 0, self.alpha * np.sqrt(2 * np.log(total) / np.maximum(pulls, 1)), np.inf)
            cs = mean + bonus
            if n_picked >= budget:
                break
        idx = np.concatenate(picked) if picked else np.zeros(0, np.int64)
        chosen_mask = np.zeros(n, bool)
        chosen_mask[idx] = True
        reasons = np.array([
            self._reason(rd, j, ps, pu, sel, pulls[j])
            for rd, j, ps, pu, sel in zip(round_of, clusters, probe_score, pulled, chosen_mask)
        ], dtype=object)
        codes = np.where(chosen_mask, "selected", np.where(
            ~pulled, "chunk_not_reached", np.where(chunk_ok, "budget_reached", "chunk_rejected")))
        info = {"scorer_calls": scorer.calls, "rounds": int(max((h["round"] for h in history), default=0)),
                "pulls": int(pulls.sum()), "accepted_chunks": int(sum(h["accepted"] for h in history)),
                "clusters_covered": int(len(np.unique(clusters[idx]))) if len(idx) else 0,
                "scorer": {"name": scorer.name, **scorer.facts()}, "history": history}
        columns = {"round": round_of, "probe_score": probe_score, "chunk_accepted": accepted,
                   "ucb_mean": ucb_mean, "ucb_bonus": ucb_bonus}
        return Selection(indices=idx.astype(np.int64), reasons=reasons, info=info, columns=columns,
                         reason_codes=codes.astype(object))

    def _reason(self, rd: int, cluster: int, probe_mean: float, pulled: bool, selected: bool, pulls: int) -> str:
        if not pulled:
            return f"quad: cluster {cluster} chunk not reached (cluster pulled {pulls} time(s))"
        where = f"quad: round {rd}, cluster {cluster}: probe mean {probe_mean:.4g}"
        if probe_mean - self.tau <= 0:
            return f"{where} <= tau {self.tau:g}, chunk rejected"
        return f"{where} > tau {self.tau:g}, chunk accepted" + ("" if selected else " (trimmed: budget reached)")
