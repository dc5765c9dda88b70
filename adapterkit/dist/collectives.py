"""Hierarchical all-reduce (mean) of one flat gradient buffer, with compression and accounting.

With L processes per node and N nodes (`Topology.hierarchical`):
  1. intra-node reduce-scatter: each local rank gets the node's sum of one 1/L shard;
  2. cross-node all-reduce of that shard among the N processes holding the same shard
     (one per node): N-1 ring hops of n/L values instead of the flat ring's;
  3. intra-node all-gather of the reduced shards.
Flat (`hierarchical=False`, or one process per node) is phase 2 alone over the whole group.
With topk, phase 2 becomes a sparse all-gather of (index, value) pairs, see compression.py.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from adapterkit.dist.compression import Compression, Residual
from adapterkit.dist.stats import (
    CommStats,
    all_gather_bytes,
    all_reduce_bytes,
    reduce_scatter_bytes,
    ring_successor_crosses,
)
from adapterkit.dist.topology import Topology


def all_reduce_mean(
    flat: torch.Tensor,
    topo: Topology,
    compression: Compression | None = None,
    stats: CommStats | None = None,
    residuals: dict | None = None,
    key=0,
) -> torch.Tensor:
    """Mean of `flat` (1-D) over the data-parallel group. Collective over `topo.ranks`.

    residuals: where topk keeps its error-feedback state, keyed by `key` (one per bucket)."""
    compression = compression or Compression()
    stats = stats if stats is not None else CommStats()
    n = flat.numel()
    local = topo.local_size if topo.intra is not None else 1
    x = flat.to(torch.float32) / topo.size  # (n,) divide first: fp16 sums cannot overflow
    x = F.pad(x, (0, (-n) % local)).to(compression.wire_dtype)  # (L * shard,)
    shard = _reduce_scatter(x, topo, stats) if local > 1 else x
    if compression.kind == "topk":
        shard = _sparse_cross(shard, topo, compression, _residual(residuals, key, shard, compression), stats)
    else:
        shard = _dense_cross(shard, topo, stats)
    full = _all_gather(shard, topo, stats) if local > 1 else shard
    return full[:n].to(flat.dtype)


def _reduce_scatter(x: torch.Tensor, topo: Topology, stats: CommStats) -> torch.Tensor:
    local = topo.local_size
    shard = torch.empty(x.numel() // local, dtype=x.dtype)
    dist.reduce_scatter_single(shard, x, group=topo.intra)
    stats.add(reduce_scatter_bytes(x.numel() * x.element_size(), local), cross=False)
    return shard


def _all_gather(shard: torch.Tensor, topo: Topology, stats: CommStats) -> torch.Tensor:
    local = topo.local_size
    full = torch.empty(shard.numel() * local, dtype=shard.dtype)
    dist.all_gather_single(full, shard, group=topo.intra)
    stats.add(all_gather_bytes(shard.numel() * shard.element_size(), local), cross=False)
    return full


def _dense_cross(shard: torch.Tensor, topo: Topology, stats: CommStats) -> torch.Tensor:
    p = len(topo.cross_ranks)
    if p > 1:
        dist.all_reduce(shard, group=topo.cross)
        crosses = ring_successor_crosses(topo.cross_ranks, topo.rank, topo.node_of)
        stats.add(all_reduce_bytes(shard.numel() * shard.element_size(), p), cross=crosses)
    return shard


def _sparse_cross(
    shard: torch.Tensor, topo: Topology, comp: Compression, residual: Residual, stats: CommStats
) -> torch.Tensor:
    """DGC across nodes: accumulate into the residual, send its top-k, sum what everyone sent."""
    v = residual.accumulate(shard, comp.momentum)
    k = comp.k(v.numel())
    if residual.step <= comp.warmup_steps or k >= v.numel() // 2:
        return _dense_cross(residual.clear(), topo, stats)  # dense is cheaper than 8 bytes/entry
    idx, values = residual.select(k)
    p = len(topo.cross_ranks)
    all_idx = torch.empty(k * p, dtype=torch.int32)
    all_values = torch.empty(k * p, dtype=values.dtype)
    dist.all_gather_single(all_idx, idx.to(torch.int32), group=topo.cross)
    dist.all_gather_single(all_values, values, group=topo.cross)
    crosses = ring_successor_crosses(topo.cross_ranks, topo.rank, topo.node_of)
    stats.add(all_gather_bytes(k * 4, p), cross=crosses)
    stats.add(all_gather_bytes(k * values.element_size(), p), cross=crosses)
    return torch.zeros_like(v).index_add_(0, all_idx.long(), all_values)  # (n/L,)


def _residual(residuals: dict | None, key, shard: torch.Tensor, comp: Compression) -> Residual:
    """The residual for `key`, made anew when the bucket's layout (size) changed."""
    if residuals is None:
        return Residual.zeros(shard.numel(), comp.momentum)
    res = residuals.get(key)
    if res is None or res.velocity.numel() != shard.numel():
        step = res.step if res is not None else 0
        res = residuals[key] = Residual.zeros(shard.numel(), comp.momentum)
        res.step = step
    return res
