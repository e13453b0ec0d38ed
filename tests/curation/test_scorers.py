"""Quality scorers and the python hooks for scorers and feedback."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from curation.exceptions import DataError, InvalidParameterError
from curation.score import KnnAgreementScorer, LengthScorer, build_scorer
from curation.select import IterativeKMQSelector, KMQSelector
from curation.types import Pool

sys.path.insert(0, str(Path(__file__).parent / "plugins"))


def pool(n=6, texts=True, labels=True):
    X = np.array([[1, 0], [0.9, 0.1], [0.95, 0.05], [0, 1], [0.1, 0.9], [0.05, 0.95]], np.float32)[:n]
    return Pool(ids=np.arange(n).astype(str), embeddings=X, groups=np.zeros(n, int), group_names=("*",),
                clusters=np.array([0, 0, 0, 1, 1, 1])[:n], labels=np.array(["a", "a", "b", "b", "b", "b"])[:n] if labels else None,
                texts=np.array(["a", "bb", "cccc", "d", "ee", "ffffffff"], dtype=object)[:n] if texts else None)


def test_length_is_normalised_log_length():
    q = LengthScorer().score(pool())
    np.testing.assert_allclose(q, np.log1p([1, 2, 4, 1, 2, 8]) / np.log1p(8))
    with pytest.raises(DataError, match="quality: length needs a text source"):
        LengthScorer().score(pool(texts=False))


def test_knn_agreement_counts_neighbours_with_the_same_label():
    s = KnnAgreementScorer(k=2)
    q = s.score(pool())
    # item 2 ('b') sits among two 'a' items; item 0 ('a') has one 'a' and one 'b' neighbour
    assert q[2] == 0.0 and q[0] == 0.5 and q[4] == 1.0
    assert s.calls == 6
    with pytest.raises(DataError, match=r"needs labels: set sources\[\]\.label"):
        KnnAgreementScorer().score(pool(labels=False))


def test_build_scorer_specs():
    assert isinstance(build_scorer("length"), LengthScorer)
    assert build_scorer({"name": "knn-agreement", "k": 3}).k == 3
    assert build_scorer(None).score(pool()).tolist() == [0.0] * 6
    with pytest.raises(InvalidParameterError, match=r"quality scorer='qual' is not a known quality scorer\. Known: constant, influence"):
        build_scorer("qual")
    with pytest.raises(InvalidParameterError, match=r"cannot be loaded"):
        build_scorer("python:nope_module:fn").score(pool())


def test_python_quality_hook_drives_kmq():
    sel = KMQSelector(quality="python:myhooks:id_number", temperature=0.001).select(pool(), 2, rng=np.random.default_rng(0))
    assert sorted(sel.indices.tolist()) == [2, 5]  # the best id in each cluster


def test_python_feedback_hook_drives_weights():
    p = Pool(ids=np.arange(40).astype(str), embeddings=np.zeros((40, 2), np.float32), groups=np.zeros(40, int),
             group_names=("*",), clusters=np.repeat([0, 1], 20))
    sel = IterativeKMQSelector(rounds=2, feedback="python:myhooks:prefer_cluster_zero").select(
        p, 20, rng=np.random.default_rng(0))
    w = sel.info["cluster_weights"][-1]
    assert w[0] > 0.99 and sum(w) == pytest.approx(1)
    round2 = sel.indices[sel.columns["round"][sel.indices] == 2]
    assert (p.clusters[round2] == 0).all()


# ----------------------------------------------------------------- scorers against a reference set
def reference_pool(seed: int = 0, n: int = 400, noisy: int = 40):
    """Three labelled blobs; the first ``noisy`` pool rows have wrong labels; a clean reference."""
    from curation.types import Reference

    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(3, 8)) * 2
    y = rng.integers(0, 3, n)
    X = (mu[y] + rng.normal(size=(n, 8))).astype(np.float32)
    labels = y.copy()
    labels[:noisy] = (labels[:noisy] + 1) % 3
    yr = rng.integers(0, 3, 150)
    ref = Reference(ids=np.arange(150).astype(str), embeddings=(mu[yr] + rng.normal(size=(150, 8))).astype(np.float32),
                    labels=yr.astype(str))
    return Pool(ids=np.arange(n).astype(str), embeddings=X, groups=np.zeros(n, np.int64), group_names=("*",),
                labels=labels.astype(str), reference=ref)


@pytest.mark.parametrize("spec", [{"name": "influence", "fit_rows": 100, "seed": 3}, {"name": "knn-shapley", "k": 5},
                                  {"name": "knn-agreement", "k": 5}])
def test_a_part_of_a_pool_is_scored_within_the_whole_pool(spec):
    pool = reference_pool()
    rows = np.arange(7, 400, 3)
    whole = build_scorer(spec).score(pool)[rows]
    part = build_scorer(spec).score(pool.part(rows))
    np.testing.assert_allclose(part, whole)
    np.testing.assert_allclose(build_scorer(spec).score(pool.part(rows).part(np.arange(5))), whole[:5])  # nested
    assert not np.allclose(build_scorer(spec).score(pool.take(rows)), whole)  # a cut-out pool alone differs


def test_a_chain_scores_each_groups_items_within_the_whole_filtered_pool():
    import myhooks

    from curation.select import build_selector

    pool = reference_pool()
    pool = Pool(**{**{f: getattr(pool, f) for f in ("ids", "embeddings", "labels", "reference")},
                   "groups": np.arange(400) % 3, "group_names": ("a", "b", "c"), "clusters": np.arange(400) % 4})
    myhooks.SCORED_POOL_SIZES.clear()
    chain = build_selector("chain", allocate={"method": "stratified", "mode": "equal"},
                           within={"method": "kmq", "quality": "python:myhooks:record_pool_size"})
    sel = chain.select(pool, 60, rng=np.random.default_rng(0))
    assert len(sel.indices) == 60
    assert myhooks.SCORED_POOL_SIZES and set(myhooks.SCORED_POOL_SIZES) == {400}


@pytest.mark.parametrize("spec", ["influence", {"name": "knn-shapley", "k": 5}, {"name": "knn-shapley", "epsilon": None}])
def test_reference_scorers_rank_mislabelled_rows_low(spec, seed):
    pool = reference_pool(seed)
    scorer = build_scorer(spec)
    s = scorer.score(pool)
    noisy = np.zeros(len(pool), bool)
    noisy[:40] = True
    assert s[noisy].mean() < 0 < s[~noisy].mean()
    lowest = np.argsort(s, kind="stable")[:40]
    assert noisy[lowest].mean() >= 0.7  # most of the lowest-scored rows are the mislabelled ones
    assert scorer.calls == len(pool) and scorer.facts()["reference_rows"] == 150


def test_influence_scorer_scores_probes_without_scoring_the_pool():
    pool = reference_pool()
    scorer = build_scorer({"name": "influence", "fit_rows": 100})
    a = scorer.score(pool, np.array([5, 50, 300]))
    assert scorer.calls == 3 and scorer.facts()["train_rows"] == 100
    np.testing.assert_allclose(scorer.score(pool, np.array([300, 5])), a[[2, 0]])  # fitted once, same values


@pytest.mark.parametrize("name", ["influence", "knn-shapley"])
def test_reference_scorers_explain_what_is_missing(name, toy_pool):
    with pytest.raises(DataError, match=r"reference: \{fraction: 0.1\}"):
        build_scorer(name).score(toy_pool)
    unlabelled = reference_pool()
    from dataclasses import replace

    with pytest.raises(DataError, match="sources\\[\\].label"):
        build_scorer(name).score(replace(unlabelled, labels=None))


def test_constant_scorer_is_free():
    s = build_scorer("constant")
    assert (s.score(pool()) == 0).all() and (s.score(pool(), np.array([1, 2])) == 0).all()
    assert s.calls == 0  # nothing was evaluated: kM-Random reports no scorer calls


def test_value_scorer_reads_the_value_stage():
    from dataclasses import replace

    p = replace(pool(), values=np.array([0.5, -1.0, 0.0, 2.0, 1.0, -0.5]))
    s = build_scorer("value")
    np.testing.assert_array_equal(s.score(p, np.array([3, 1])), [2.0, -1.0])
    with pytest.raises(DataError, match="add a `value:` section"):
        build_scorer("value").score(pool())


# ------------------------------------------------------------ the recipe seed reaches the scorer
def test_build_scorer_seeds_influence_from_the_selector_rng():
    pool = reference_pool()
    spec = {"name": "influence", "fit_rows": 50}  # a 50-row sample of 400: the seed picks the rows
    a, a_again, b = (build_scorer(spec, rng=np.random.default_rng(s)) for s in (0, 0, 1))
    assert a.seed == a_again.seed != b.seed
    np.testing.assert_array_equal(a.score(pool), a_again.score(pool))
    assert not np.allclose(a.score(pool), b.score(pool))
    assert a.facts()["train_loss"] != b.facts()["train_loss"]


def test_build_scorer_keeps_an_explicit_seed_and_draws_nothing_for_unseeded_scorers():
    rng = np.random.default_rng(0)
    assert build_scorer({"name": "influence", "seed": 5}, rng=rng).seed == 5
    state = rng.bit_generator.state
    build_scorer("length", rng=rng)
    build_scorer({"name": "knn-shapley", "k": 3}, rng=rng)
    assert rng.bit_generator.state == state  # selectors without a seeded scorer keep their stream


@pytest.mark.parametrize("selector", ["quad", "kmq"])
def test_recipe_seed_decides_the_influence_proxy_in_selectors(selector):
    from dataclasses import replace

    from curation.builder import stage_rng
    from curation.select import QuadSelector

    pool = replace(reference_pool(), clusters=np.arange(400) % 4)
    spec = {"name": "influence", "fit_rows": 50}

    def run(recipe_seed):
        sel = (QuadSelector(scorer=spec, clusters_per_round=2, probe=5, chunk=20, tau=-1.0) if selector == "quad"
               else KMQSelector(quality=spec))
        out = sel.select(pool, 40, rng=stage_rng(recipe_seed, "select"))  # the rng the build gives the selector
        return out, (out.info["scorer"] if selector == "quad" else out.columns["quality"])

    (sel_a, a), (sel_a2, a2), (_, b) = run(0), run(0), run(1)
    np.testing.assert_array_equal(sel_a.indices, sel_a2.indices)
    if selector == "quad":  # the proxy's fit (train loss) is a function of its seeded training sample
        assert a == a2 and a["train_loss"] != b["train_loss"]
    else:  # kmq scores the whole pool: the influence scores themselves
        np.testing.assert_array_equal(a, a2)
        assert not np.allclose(a, b)
