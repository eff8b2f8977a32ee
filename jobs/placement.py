"""Where the model actors go: a plan made from each node's resources, not the cluster's total.

Ray places an actor on any node with room for its CPUs, GPUs and memory, and fills a node
as far as those allow.  The job's read and write tasks (and, with GPUs, the tokenize actors)
need a little CPU too; when the actors take every CPU on every node they never run and the
job hangs without a word.  Summing the cluster hides that: two 1-CPU nodes look like one
2-CPU node, where two 0.875-CPU actors leave 0.25 CPU free, but each node keeps only 0.125.

So the plan picks one CPU amount per actor that, on *every* node, leaves room for a task
however many actors Ray packs onto it (``max_on_node``), and counts how many actors the
nodes hold.  Autoscaling clusters also plan for the node types their autoscaler may add.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

logger = logging.getLogger(__name__)

# Memory one CPU model actor needs beyond its weights: the Python process with torch, Ray
# and pyarrow loaded, activations of a 2,048-token forward and the blocks it holds.
ACTOR_OVERHEAD_BYTES = 600 * 2**20
# CPU one read or write task reserves (Ray CPUs are a reservation; the writes take
# milliseconds).  Every node that hosts actors keeps this much free.  A larger reserve can't
# be kept safely: with one CPU amount c per actor, a node of C CPUs keeps R free under any
# packing only if k < C / R - 1 actors fit, so a whole CPU kept free on 8-CPU nodes would
# cost two actors per node.
TASK_CPUS = 0.25
# Of a node's memory resource, the share the actors' weight copies may take: the rest is
# for the blocks in flight and the tasks.
ACTOR_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class NodeShape:
    """A node (alive now), or a node type the autoscaler may start ``count`` of."""

    name: str
    cpus: float
    gpus: float = 0.0
    memory: float = 0.0   # Ray's memory resource, bytes (0: unknown)
    count: int = 1
    alive: bool = True

    def reserve(self) -> float:
        """CPUs that stay free for tasks on this node when it hosts actors."""
        return TASK_CPUS


@dataclass
class Resources:
    """How the model actors are placed (decided once, before the pipeline starts)."""

    num_gpus: float
    num_cpus: float
    threads: int
    min_actors: int
    max_actors: int
    task_cpus: float
    tokenize_actors: int
    # CPU-only: the model actors tokenize too (actors.fused); with GPUs a CPU pool does.
    fused_tokenize: bool = False
    # Ray memory resource per actor (bytes): Ray then packs no more copies than fit on a node.
    memory: float = 0.0
    # Per node (or node type): the most actors Ray may place there under this plan.
    nodes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def plan_resources(asked: Any, nodes: Sequence[NodeShape], weights_bytes: int = 0,
                   units: Optional[int] = None) -> Resources:
    """The actor shape and pool size on ``nodes``, given what the user ``asked`` (a
    :class:`jobs.spec.Placement`; its unset fields are planned).

    GPU actors when asked (``--num-gpus-per-actor``) or when a node has, or the autoscaler
    can add, GPUs.  On CPUs, single-threaded actors, one per CPU: a forward's threads wait for
    each other at every operator, so whenever Ray's own processes take a core from one thread
    the others stall too (2 cores, MiniLM, 6,000 texts, bench/job_vs_st.py: the whole job took
    125 s with two 1-thread actors, 160 s with one 2-thread actor).  The actors tokenize their
    own rows.  Each actor holds its own copy of the weights: a node takes no more than fit in
    half its memory.  By default no more actors start than there are ``units`` to compute: a
    unit is one actor call, and an actor without one only takes CPU from the others.

    The user's ``--actors``, ``--cpus-per-actor`` and ``--threads-per-actor`` win; a choice
    that starves a node of CPU for the tasks is logged (the stall watchdog ends such a run).
    """
    if not nodes:
        raise ValueError("the Ray cluster has no alive node with resources")
    num_gpus = gpus_per_actor(asked, nodes)
    if num_gpus > 0:
        threads = asked.threads_per_actor or max(1, math.ceil(asked.cpus_per_actor or 1.0))
        ceiling = asked.cpus_per_actor or 1.0
    else:
        threads = asked.threads_per_actor or (math.ceil(asked.cpus_per_actor) if asked.cpus_per_actor else 1)
        ceiling = asked.cpus_per_actor or float(threads)
    memory = float(weights_bytes + ACTOR_OVERHEAD_BYTES) if weights_bytes and num_gpus == 0 else 0.0

    def fits(node: NodeShape) -> int:
        """Weight copies that fit in the node's share of memory for them."""
        return int(ACTOR_MEMORY_SHARE * node.memory // memory) if memory and node.memory else 1 << 30

    def useful(node: NodeShape) -> int:
        """Actors worth placing on the node: one per GPU share, or one per ``threads`` CPUs
        (beside the reserve, when the user fixed the CPUs per actor)."""
        if num_gpus > 0:
            wanted = int(node.gpus / num_gpus + 1e-9)
        else:
            wanted = max(1, int(node.cpus // threads)) if node.cpus > node.reserve() else 0
        if asked.cpus_per_actor:
            wanted = min(wanted, int((node.cpus - node.reserve()) / asked.cpus_per_actor + 1e-9))
        return min(wanted, fits(node))

    total = sum(useful(n) * n.count for n in nodes)
    if total == 0:
        if num_gpus > 0 and asked.num_gpus_per_actor is not None:
            logger.warning("no node has %g GPU now: the model actors wait for GPU nodes (from the autoscaler); the "
                           "stall watchdog ends the job if none come", num_gpus)
        else:
            raise ValueError(_nothing_fits(nodes, num_gpus, asked.cpus_per_actor, memory))
    low, high = asked.actors or (1, max(1, min(total, units) if units is not None else total))
    num_cpus = asked.cpus_per_actor or _cpus_per_actor(nodes, ceiling, high, num_gpus, fits)
    placement = [_node_plan(n, num_cpus, num_gpus, high, fits) for n in nodes]
    starved = [p["node"] for p in placement if p["max_actors"] and p["free_cpus"] < TASK_CPUS]
    if starved:
        logger.warning("%d actors x %g CPUs may leave node(s) %s less than the %g CPU a read or write task needs: "
                       "the job may stall waiting for CPUs; lower --actors or --cpus-per-actor",
                       high, num_cpus, ", ".join(starved), TASK_CPUS)
    capacity = sum(p["max_actors"] * n.count for p, n in zip(placement, nodes))
    if capacity < high:
        logger.warning("the cluster's nodes hold %d actors of %g CPUs / %g GPUs, %d asked for: the others wait for "
                       "nodes (the autoscaler's, if any)", capacity, num_cpus, num_gpus, high)
    pool = asked.tokenize_pool if asked.tokenize_pool is not None else num_gpus > 0
    total_cpus = sum(n.cpus for n in nodes if n.alive)
    return Resources(num_gpus=num_gpus, num_cpus=num_cpus, threads=threads, min_actors=low, max_actors=high,
                     task_cpus=TASK_CPUS,
                     # Tokenizing is tens of times cheaper than a forward: a few CPUs keep up with the model.
                     tokenize_actors=max(1, int(total_cpus) // 8), fused_tokenize=not pool, memory=memory,
                     nodes=placement)


def gpus_per_actor(asked: Any, nodes: Sequence[NodeShape]) -> float:
    """GPUs per model actor: what the user asked, else 1 when a node has (or the autoscaler can
    add) GPUs, else 0."""
    if asked.num_gpus_per_actor is not None:
        return float(asked.num_gpus_per_actor)
    return 1.0 if any(n.gpus > 0 for n in nodes) else 0.0


def max_on_node(node: NodeShape, num_cpus: float, num_gpus: float, actors: int, fits: Any) -> int:
    """The most actors of this shape Ray could place on ``node`` (it packs as far as
    resources allow), out of ``actors``."""
    most = min(actors, fits(node))
    if num_cpus > 0:
        most = min(most, int(node.cpus / num_cpus + 1e-9))
    if num_gpus > 0:
        most = min(most, int(node.gpus / num_gpus + 1e-9))
    return max(0, most)


def _cpus_per_actor(nodes: Sequence[NodeShape], ceiling: float, actors: int, num_gpus: float, fits: Any) -> float:
    """The CPU reservation per actor: the largest, up to ``ceiling``, for which every node keeps
    its reserve free however Ray packs ``actors`` onto it, among those that place the most
    actors.  Candidates are (node CPUs - reserve) / k: the amounts at which a node just fits
    k actors beside its reserve."""
    candidates = {ceiling} | {(n.cpus - n.reserve()) / k for n in nodes for k in range(1, max(1, math.ceil(n.cpus)) + 1)
                              if n.cpus > n.reserve()}
    best: Optional[tuple[int, float]] = None
    for cpus in sorted((c for c in candidates if 0 < c <= ceiling), reverse=True):
        counts = [max_on_node(n, cpus, num_gpus, actors, fits) for n in nodes]
        if any(k and k * cpus > n.cpus - n.reserve() + 1e-9 for k, n in zip(counts, nodes)):
            continue
        placed = min(actors, sum(k * n.count for k, n in zip(counts, nodes)))
        if best is None or placed > best[0]:
            best = (placed, cpus)
        if placed >= actors:
            break
    if best is None:  # no amount keeps every reserve: the smallest node can't host an actor and a task
        return ceiling
    return _round_down(best[1])


def _round_down(cpus: float) -> float:
    """Ray keeps resources in 1/10,000 units: a finer amount would be rounded, maybe up."""
    return math.floor(cpus * 10_000 + 1e-6) / 10_000


def _node_plan(node: NodeShape, num_cpus: float, num_gpus: float, actors: int, fits: Any) -> dict[str, Any]:
    most = max_on_node(node, num_cpus, num_gpus, actors, fits)
    return {"node": node.name, "alive": node.alive, "count": node.count, "cpus": node.cpus, "gpus": node.gpus,
            "memory": node.memory, "max_actors": most, "free_cpus": round(node.cpus - most * num_cpus, 4)}


def _nothing_fits(nodes: Sequence[NodeShape], num_gpus: float, cpus_per_actor: Optional[float], memory: float) -> str:
    shapes = ", ".join(f"{n.name}: {n.cpus:g} CPU, {n.gpus:g} GPU, {n.memory / 2**30:.1f} GiB" for n in nodes)
    if num_gpus > 0:
        need = f"{num_gpus:g} GPU per actor"
    elif cpus_per_actor:
        need = f"{cpus_per_actor:g} CPU per actor (--cpus-per-actor) and {TASK_CPUS:g} CPU left for the read/write tasks"
    else:
        need = f"more than {TASK_CPUS:g} CPU per node"
    if memory:
        need += f", {memory / ACTOR_MEMORY_SHARE / 2**30:.1f} GiB of memory per actor (weights plus overhead, doubled)"
    return (f"No node of the cluster can host a model actor ({need}); nodes: {shapes}. "
            "Use bigger nodes, or change --num-gpus-per-actor / --cpus-per-actor.")


# -- the cluster, as Ray reports it ------------------------------------------------------------
def cluster_nodes() -> list[NodeShape]:
    """Alive nodes, plus the node types an autoscaler may add (when the cluster has one)."""
    import ray

    alive = [NodeShape(name=node["NodeID"][:12], cpus=float(node["Resources"].get("CPU", 0)),
                       gpus=float(node["Resources"].get("GPU", 0)), memory=float(node["Resources"].get("memory", 0)))
             for node in ray.nodes() if node.get("Alive")]
    return alive + autoscaler_node_types()


def autoscaler_node_types() -> list[NodeShape]:
    """Node types the cluster's autoscaler can launch (none without an autoscaler).

    Read from the autoscaler's cluster config in the GCS, a Ray-internal record: when it
    can't be read, the plan uses the alive nodes only and says so."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception as err:  # an internal API: its absence must not stop the job
        logger.info("can't read the autoscaler's node types (%s: %s); planning for the alive nodes", type(err).__name__, err)
        return []
    if config is None:
        return []
    types = []
    for group in config.node_group_configs:
        resources = dict(group.resources)
        if group.max_count == 0 or not resources.get("CPU"):
            continue
        types.append(NodeShape(name=f"type {group.name}", cpus=float(resources.get("CPU", 0)),
                               gpus=float(resources.get("GPU", 0)), memory=float(resources.get("memory", 0)),
                               count=group.max_count if group.max_count > 0 else 1 << 16, alive=False))
    return types


def actors_per_node(actor_nodes: dict[str, str]) -> dict[str, int]:
    """Node id → how many model actors ran there, from {actor id: node id}."""
    counts: dict[str, int] = {}
    for node in actor_nodes.values():
        counts[node[:12]] = counts.get(node[:12], 0) + 1
    return counts
