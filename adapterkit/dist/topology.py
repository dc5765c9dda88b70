"""Which processes share a node, and the process groups hierarchical collectives run on.

torchrun numbers ranks node by node, so with `LOCAL_WORLD_SIZE` processes per node the node of
global rank r is `r // LOCAL_WORLD_SIZE`. On one machine, nodes can be simulated: `nnodes=M`
(or `ADAPTERKIT_DIST_NNODES=M`) splits the world into M consecutive blocks of ranks.

For a data-parallel group spread over nodes, the hierarchy uses two kinds of sub-groups:
  intra: the group members on this rank's node              (fast links)
  cross: one member per node, the ones with this local index (the slow link)
`dist.new_group` is collective over the whole world, so every rank builds every group, in the
same order, even the groups it is not in.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch.distributed as dist

from adapterkit.errors import AdapterkitError

NNODES_ENV = "ADAPTERKIT_DIST_NNODES"


@dataclass(frozen=True)
class Topology:
    rank: int  # this process's global rank
    ranks: tuple[int, ...]  # global ranks of the data-parallel group, in group order
    nodes: tuple[int, ...]  # node of each member of `ranks`
    group: dist.ProcessGroup | None  # the whole data-parallel group (None: the default group)
    intra: dist.ProcessGroup | None  # members on this node; None when flat or one per node
    cross: dist.ProcessGroup | None  # the group the cross-node phase runs on
    cross_ranks: tuple[int, ...]  # global ranks of `cross`, in group order
    hierarchical: bool

    @property
    def size(self) -> int:
        return len(self.ranks)

    @property
    def nnodes(self) -> int:
        return len(set(self.nodes))

    @property
    def local_size(self) -> int:
        return self.nodes.count(self.node_of(self.rank))

    def node_of(self, global_rank: int) -> int:
        return self.nodes[self.ranks.index(global_rank)]

    def describe(self) -> dict:
        return {
            "world": self.size,
            "nnodes": self.nnodes,
            "local_world_size": self.local_size,
            "hierarchical": self.hierarchical,
        }


def detect_nnodes(nnodes: int | None = None) -> int:
    """Number of nodes: `nnodes` if given, else $ADAPTERKIT_DIST_NNODES, else from torchrun's
    LOCAL_WORLD_SIZE; 1 outside torchrun."""
    world = dist.get_world_size()
    if nnodes is None and os.environ.get(NNODES_ENV):
        nnodes = int(os.environ[NNODES_ENV])
    if nnodes is None:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        nnodes = max(1, world // max(1, local))
    if nnodes < 1 or world % nnodes:
        raise AdapterkitError(f"{world} processes cannot be split evenly into {nnodes} nodes")
    return nnodes


def node_map(world: int, nnodes: int) -> list[int]:
    """Node of each global rank: consecutive blocks, as torchrun assigns them."""
    per_node = world // nnodes
    return [r // per_node for r in range(world)]


def build_topology(
    hierarchical: bool = True,
    nnodes: int | None = None,
    dp_groups: list[list[int]] | None = None,
    groups: list[dist.ProcessGroup | None] | None = None,
) -> Topology:
    """Build the topology of this rank's data-parallel group. Collective: call on every rank.

    dp_groups: all data-parallel groups (lists of global ranks), one per model replica slot;
    default: the whole world is one group. `groups` are their process groups if the caller
    already made them (e.g. from a DeviceMesh); else they are made here.
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    nodes = node_map(world, detect_nnodes(nnodes))
    dp_groups = dp_groups or [list(range(world))]
    if groups is None:
        groups = [None if len(g) == world else dist.new_group(g) for g in dp_groups]
    mine = None
    for members, group in zip(dp_groups, groups):
        topo = _group_topology(members, group, nodes, rank, hierarchical)
        if rank in members:
            mine = topo
    if mine is None:
        raise AdapterkitError(f"rank {rank} is in none of the data-parallel groups {dp_groups}")
    return mine


def _group_topology(members, group, nodes, rank, hierarchical) -> Topology:
    """Make the intra and cross sub-groups of one data-parallel group (on every rank)."""
    member_nodes = [nodes[r] for r in members]
    per_node: dict[int, list[int]] = {}
    for r, n in zip(members, member_nodes):
        per_node.setdefault(n, []).append(r)
    sizes = {len(v) for v in per_node.values()}
    if len(sizes) != 1:
        raise AdapterkitError(f"data-parallel group {members} has unequal members per node: {per_node}")
    local = sizes.pop()
    use_hier = hierarchical and local > 1 and len(per_node) > 1
    intra = cross = group
    cross_ranks = tuple(members)
    if use_hier:
        intra_of = {n: dist.new_group(rs) for n, rs in sorted(per_node.items())}
        cross_lists = [[rs[i] for _, rs in sorted(per_node.items())] for i in range(local)]
        cross_of = [dist.new_group(c) for c in cross_lists]
        if rank in members:
            node = nodes[rank]
            index = per_node[node].index(rank)
            intra, cross, cross_ranks = intra_of[node], cross_of[index], tuple(cross_lists[index])
    else:
        intra = None
    return Topology(
        rank=rank,
        ranks=tuple(members),
        nodes=tuple(member_nodes),
        group=group,
        intra=intra,
        cross=cross,
        cross_ranks=cross_ranks,
        hierarchical=use_hier,
    )
