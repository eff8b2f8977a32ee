"""The placement planner over node lists (no Ray): every node that may host actors keeps CPU
for a read or write task however Ray packs the actors, and no node gets more weight copies
than fit in its memory share."""
from __future__ import annotations

import math
from typing import Optional

import pytest

from jobs.placement import ACTOR_MEMORY_SHARE, ACTOR_OVERHEAD_BYTES, TASK_CPUS, NodeShape, Resources, plan_resources
from jobs.spec import make_spec

GIB = 2**30
MINILM_BYTES = 90 * 2**20


def nodes(*shapes: tuple, memory: float = 64 * GIB) -> list[NodeShape]:
    """(cpus,) or (cpus, gpus) or (cpus, gpus, memory) per node."""
    made = []
    for k, shape in enumerate(shapes):
        cpus, gpus, mem = (*shape, 0, memory)[:3] if len(shape) < 3 else shape
        made.append(NodeShape(name=f"n{k}", cpus=float(cpus), gpus=float(gpus), memory=float(mem)))
    return made


def worst_case(node: NodeShape, plan: Resources, weights: int) -> int:
    """The most actors Ray could pack onto ``node`` under ``plan``: it places an actor wherever
    the CPUs, GPUs and memory it asks for are free (written here independently of the planner)."""
    most = plan.max_actors
    if plan.num_cpus:
        most = min(most, math.floor(node.cpus / plan.num_cpus + 1e-9))
    if plan.num_gpus:
        most = min(most, math.floor(node.gpus / plan.num_gpus + 1e-9))
    if plan.memory:
        most = min(most, math.floor(node.memory / plan.memory))
    return most


def check_plan(cluster: list[NodeShape], plan: Resources, weights: int = 0) -> list[int]:
    """Assert the plan's promises; return the worst-case actors per node."""
    packed = [worst_case(n, plan, weights) for n in cluster]
    for node, count in zip(cluster, packed):
        if count:
            assert node.cpus - count * plan.num_cpus >= TASK_CPUS - 1e-9, (node, count, plan)
        if weights and plan.num_gpus == 0:
            # Ray is asked for each copy's memory, so it never packs more than the node holds;
            # the planner counts only the copies that fit in the node's share for them.
            copy = weights + ACTOR_OVERHEAD_BYTES
            assert plan.memory == copy and count * copy <= node.memory
            planned = next(p["max_actors"] for p in plan.nodes if p["node"] == node.name)
            assert planned <= ACTOR_MEMORY_SHARE * node.memory // copy
    assert sum(k * n.count for k, n in zip(packed, cluster)) >= plan.max_actors, "the nodes can't hold every actor"
    return packed


def plan_for(cluster: list[NodeShape], flags: Optional[dict] = None, weights: int = 0,
             units: Optional[int] = None) -> Resources:
    return plan_resources(make_spec(flags or {}).placement, cluster, weights, units)


def test_the_reported_hang_two_one_cpu_nodes() -> None:
    """Two 1-CPU nodes, --actors 2: the plan summed the cluster (0.875 CPU each, 0.125 left per node)."""
    cluster = nodes((1,), (1,))
    plan = plan_for(cluster, {"actors": "2"}, MINILM_BYTES, units=8)
    assert (plan.min_actors, plan.max_actors) == (2, 2)
    assert check_plan(cluster, plan, MINILM_BYTES) == [1, 1]
    assert plan.num_cpus == pytest.approx(0.75)


def test_four_nodes_of_eight_cpus_use_every_cpu_beside_the_reserve() -> None:
    cluster = nodes(*[(8,)] * 4)
    plan = plan_for(cluster, {}, MINILM_BYTES, units=100)
    packed = check_plan(cluster, plan, MINILM_BYTES)
    assert plan.max_actors == 32 and packed == [8, 8, 8, 8]
    assert plan.num_cpus == pytest.approx((8 - TASK_CPUS) / 8, abs=1e-4)
    assert plan.threads == 1 and plan.fused_tokenize


def test_one_node_of_two_cpus_keeps_the_measured_default() -> None:
    cluster = nodes((2,))
    plan = plan_for(cluster, {})
    assert check_plan(cluster, plan) == [2]
    assert (plan.num_gpus, plan.num_cpus, plan.threads, plan.max_actors) == (0, 0.875, 1, 2)


def test_cpu_head_and_two_gpu_workers() -> None:
    cluster = nodes((4, 0), (8, 1), (8, 1))
    plan = plan_for(cluster, {}, MINILM_BYTES, units=10)
    packed = check_plan(cluster, plan)
    assert plan.num_gpus == 1 and plan.max_actors == 2 and packed == [0, 1, 1]
    assert plan.num_cpus == 1 and not plan.fused_tokenize  # a CPU pool tokenizes for the GPUs


def test_gpu_node_with_one_cpu_still_keeps_a_reserve() -> None:
    cluster = nodes((1, 1))
    plan = plan_for(cluster, {})
    assert check_plan(cluster, plan) == [1]
    assert plan.num_cpus == pytest.approx(0.75)


def test_mixed_nodes_of_two_four_and_sixteen_cpus() -> None:
    cluster = nodes((2,), (4,), (16,))
    plan = plan_for(cluster, {}, MINILM_BYTES, units=1000)
    packed = check_plan(cluster, plan, MINILM_BYTES)
    assert plan.max_actors == 22  # one per CPU
    assert packed[0] == 2 and packed[1] == 4 and packed[2] >= 16


def test_a_node_with_little_memory_takes_fewer_weight_copies() -> None:
    weights = 1_300_000_000
    small, big = 4 * GIB, 64 * GIB
    cluster = [NodeShape("small", 16, 0, small), NodeShape("big", 16, 0, big)]
    plan = plan_for(cluster, {}, weights, units=1000)
    packed = check_plan(cluster, plan, weights)
    copy = weights + ACTOR_OVERHEAD_BYTES
    assert plan.nodes[0]["max_actors"] == int(ACTOR_MEMORY_SHARE * small // copy) == 1
    assert plan.max_actors == 1 + 16 and packed[1] == 16
    assert packed[0] * copy <= small


def test_no_node_fits_an_actor_fails_naming_the_nodes() -> None:
    cluster = [NodeShape("tiny", 16, 0, 1 * GIB)]
    with pytest.raises(ValueError, match=r"No node of the cluster can host a model actor.*tiny: 16 CPU"):
        plan_for(cluster, {}, 2_000_000_000)
    with pytest.raises(ValueError, match=r"2 CPU per actor \(--cpus-per-actor\)"):
        plan_for(nodes((2,)), {"cpus_per_actor": 2})


def test_autoscaler_node_types_count_for_the_pool_and_its_shape() -> None:
    """A CPU head and a GPU worker type the autoscaler may start 8 of: GPU actors, pool up to 8."""
    cluster = [NodeShape("head", 4, 0, 16 * GIB), NodeShape("type gpu", 8, 1, 60 * GIB, count=8, alive=False)]
    plan = plan_for(cluster, {}, MINILM_BYTES, units=50)
    assert plan.num_gpus == 1 and (plan.min_actors, plan.max_actors) == (1, 8)
    check_plan(cluster, plan)


def test_gpus_asked_for_before_any_gpu_node_exists_wait_for_them() -> None:
    plan = plan_for(nodes((8,)), {"num_gpus_per_actor": 1, "actors": "1,8"})
    assert (plan.num_gpus, plan.min_actors, plan.max_actors, plan.num_cpus) == (1.0, 1, 8, 1.0)


@pytest.mark.parametrize("cluster, flags, weights, expected", [
    # CPUs: one single-threaded actor per CPU, tokenizing its own rows; a reserve for the writes.
    ([(2,)], {"actors": "2"}, 0, dict(num_cpus=0.875, threads=1, min_actors=2, max_actors=2)),
    ([(2,)], {"actors": "1", "threads_per_actor": 2}, 0, dict(num_cpus=1.75, threads=2, max_actors=1)),
    ([(16,)], {}, MINILM_BYTES, dict(num_cpus=0.9843, threads=1, max_actors=16, task_cpus=TASK_CPUS)),
    ([(16,)], {"threads_per_actor": 4}, 0, dict(num_cpus=3.9375, threads=4, max_actors=4)),
    # A fixed CPU amount: as many actors as leave the reserve free (7 of 2 CPUs, not 8).
    ([(16,)], {"cpus_per_actor": 2}, 0, dict(num_cpus=2.0, threads=2, max_actors=7)),
    # Each actor holds its own weights: 8 GiB of memory fits two 1.3 GB copies in half of it.
    ([(16, 0, 8 * GIB)], {}, 1_300_000_000, dict(num_cpus=1.0, threads=1, max_actors=2)),
    ([(2,)], {"tokenize_pool": True}, 0, dict(max_actors=2, fused_tokenize=False)),
    # GPUs: one GPU per actor, tokenizing in a CPU pool of its own.
    ([(32, 4)], {}, 0, dict(num_gpus=1.0, num_cpus=1.0, min_actors=1, max_actors=4, fused_tokenize=False)),
    ([(8, 1)], {"tokenize_pool": False}, 0, dict(num_gpus=1.0, fused_tokenize=True)),
])
def test_actor_resources(cluster: list, flags: dict, weights: int, expected: dict) -> None:
    made = nodes(*cluster)
    plan = plan_for(made, flags, weights)
    assert {k: getattr(plan, k) for k in expected} == expected
    if "cpus_per_actor" not in flags:
        check_plan(made, plan, weights)


@pytest.mark.parametrize("cluster, units, flags, actors", [
    # No more actors than units to compute, unless asked for.
    ([(16,)], 3, {}, (1, 3)),
    ([(16,)], 3, {"actors": "4"}, (4, 4)),
    ([(32, 4)], 1, {}, (1, 1)),
])
def test_no_more_actors_than_units(cluster: list, units: int, flags: dict, actors: tuple) -> None:
    plan = plan_for(nodes(*cluster), flags, 0, units)
    assert (plan.min_actors, plan.max_actors) == actors


def test_a_plan_that_starves_a_node_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    plan = plan_for(nodes((2,)), {"cpus_per_actor": 1, "actors": "2"})
    assert plan.num_cpus == 1 and plan.max_actors == 2
    assert "may stall waiting for CPUs" in caplog.text
