"""How embedding actors are sized, what Ray resources they ask for, and when Ray is not needed
at all (no Ray started here)."""

from __future__ import annotations

import pytest

from flows.ray_runtime import actor_options, plan_actors


def test_actors_fit_on_one_node_each_and_fill_every_node():
    assert plan_actors([2], None, None) == (1, 2)  # this machine: one actor of 2 threads
    assert plan_actors([1, 1], None, None) == (2, 1)  # two 1-CPU nodes: one actor each, never one of 2
    assert plan_actors([8, 8, 2], None, None) == (4, 4)  # 2 + 2 + 0: a 2-CPU node cannot hold a 4-thread actor
    assert plan_actors([8], 3, 2) == (3, 2) and plan_actors(4, None, None) == (1, 4)


def test_a_cuda_embedder_asks_ray_for_one_gpu_per_actor():
    assert actor_options("cuda", 2, {"CPU": 8}) == {"num_cpus": 2, "num_gpus": 1}
    assert actor_options("auto", 2, {"CPU": 8, "GPU": 2}) == {"num_cpus": 2, "num_gpus": 1}
    assert actor_options("auto", 2, {"CPU": 8}) == {"num_cpus": 2}  # no GPU in the cluster: CPU actors
    assert actor_options("cpu", 1, {"CPU": 8, "GPU": 2}) == {"num_cpus": 1}  # forced CPU


def test_a_light_embedder_embeds_in_the_driver_unless_a_cluster_is_joined(monkeypatch):
    import flows.ray_runtime
    from curation.embed import make_text_embedder
    from flows.ray_runtime import RayChunks

    chunks = [["a text", "another text"], ["a third"]]
    hashing = make_text_embedder("hashing")
    assert hashing.light and not make_text_embedder("all-MiniLM-L6-v2").light
    monkeypatch.setattr(flows.ray_runtime, "joins_cluster", lambda: False)
    monkeypatch.setattr(flows.ray_runtime, "ensure_ray", lambda: pytest.fail("Ray was started"))
    chunked = RayChunks(None, None)
    out = list(chunked(hashing, chunks))
    assert [v.tolist() for v in out] == [hashing.embed(c).tolist() for c in chunks]
    assert chunked.placement == {"ray_actors": 0, "nodes": []}


def test_joining_a_cluster_is_what_ray_address_says(monkeypatch):
    from flows.ray_runtime import joins_cluster

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert joins_cluster()
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # never imported: not connected
    assert not joins_cluster()
