"""Our own gradient reducer, for where DDP does not fit (pipeline stages run several backward
passes per step, one per microbatch, and DDP's bucket rebuild counts every one of them).

During the first backward, post-accumulate-grad hooks record the order in which gradients
become ready; that order (taken from the group's first rank, so every replica agrees) is cut
into buckets of `bucket_mb`, and every `reduce()` after a backward sends bucket by bucket
through the hierarchical, optionally compressed all-reduce of adapterkit.dist.collectives.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from adapterkit.dist.collectives import all_reduce_mean
from adapterkit.dist.compression import Compression
from adapterkit.dist.stats import CommStats
from adapterkit.dist.topology import Topology


class BucketReducer:
    def __init__(self, params: list[nn.Parameter], topo: Topology, compression: Compression | str | None = None,
                 bucket_mb: float = 25.0, stats: CommStats | None = None):
        self.params = [p for p in params if p.requires_grad]
        self.topo, self.compression = topo, Compression.parse(compression)
        self.bucket_bytes = int(bucket_mb * 2**20)
        self.stats = stats if stats is not None else CommStats()
        self.residuals: dict = {}
        self.buckets: list[list[int]] | None = None
        self._ready: list[int] = []
        index = {id(p): i for i, p in enumerate(self.params)}
        self._hooks = [p.register_post_accumulate_grad_hook(lambda p: self._mark(index[id(p)])) for p in self.params]

    def _mark(self, i: int) -> None:
        if i not in self._ready:
            self._ready.append(i)

    def reduce(self) -> None:
        """Replace every gradient by its mean over the data-parallel group. Collective."""
        if self.buckets is None:
            self.buckets = self._make_buckets()
        with self.stats.timed():
            for b, bucket in enumerate(self.buckets):
                grads = [self._grad(i) for i in bucket]
                flat = torch.cat([g.reshape(-1) for g in grads])
                out = all_reduce_mean(flat, self.topo, self.compression, self.stats, self.residuals, key=b)
                for g, chunk in zip(grads, out.split([g.numel() for g in grads])):
                    g.copy_(chunk.view_as(g))
        self.stats.buckets += len(self.buckets)
        self.stats.tensors += len(self.params)
        self.stats.steps += 1

    def _grad(self, i: int) -> torch.Tensor:
        p = self.params[i]
        if p.grad is None:  # unused this step: contributes zeros, still gets the mean
            p.grad = torch.zeros_like(p)
        return p.grad

    def _make_buckets(self) -> list[list[int]]:
        """Readiness order (from the group's first rank), cut into buckets of bucket_bytes."""
        for h in self._hooks:
            h.remove()
        order = self._ready + [i for i in reversed(range(len(self.params))) if i not in self._ready]
        box = [order]
        if self.topo.size > 1:
            dist.broadcast_object_list(box, src=self.topo.ranks[0], group=self.topo.group)
        buckets: list[list[int]] = [[]]
        size = 0
        for i in box[0]:
            nbytes = self.params[i].numel() * self.params[i].element_size()
            if buckets[-1] and size + nbytes > self.bucket_bytes:
                buckets.append([])
                size = 0
            buckets[-1].append(i)
            size += nbytes
        return buckets
