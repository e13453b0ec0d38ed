"""How embedding actors are sized and what Ray resources they ask for (no Ray needed)."""

from __future__ import annotations

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
