"""The DDP communication hook: hierarchical all-reduce with compression, per gradient bucket.

Fusion and ordering come from DDP's reducer: gradients are packed into buckets of
`bucket_cap_mb`, and after the first iteration DDP rebuilds the buckets in the order the
gradients became ready during that backward (`Reducer::rebuild_buckets`), which is the
"fuse tensors generated at about the same time" of the EasyTransfer/Whale engine, measured
instead of estimated. Buckets are handed to this hook in bucket order as they fill up.

With `overlap` (the default) the hook queues the bucket to one communication thread per model
and returns at once, so a bucket's three phases run while backward computes the gradients of
earlier layers; DDP waits for every future at the end of backward. One thread and one queue
keep the collectives in bucket order, the same order on every rank. Without overlap the phases
run on the backward thread and the hook returns a completed future.
tests/test_dist_comm.py::test_buckets_follow_readiness_order checks the order.

topk keeps one residual per bucket index. DDP's bucket rebuild after step 1 changes bucket
sizes, and a residual whose bucket changed size starts again from zero; with the default
warm-up (dense steps, which leave no residual) nothing is lost.

No `from __future__ import annotations` here: DDP checks the hook's annotations at runtime.
"""

import queue
import threading
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from adapterkit.dist.collectives import all_reduce_mean
from adapterkit.dist.compression import Compression
from adapterkit.dist.stats import CommStats
from adapterkit.dist.topology import Topology


@dataclass
class HookState:
    topo: Topology
    compression: Compression = field(default_factory=Compression)
    stats: CommStats = field(default_factory=CommStats)
    residuals: dict = field(default_factory=dict)
    overlap: bool = True
    worker: "CommThread | None" = field(default=None, repr=False)


class CommThread:
    """One daemon thread running queued communication jobs in order; each job's result
    completes the future `submit` returned."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="adapterkit-comm", daemon=True).start()

    def submit(self, job) -> torch.futures.Future:
        fut: torch.futures.Future = torch.futures.Future()
        self.jobs.put((job, fut))
        return fut

    def _loop(self) -> None:
        while True:
            job, fut = self.jobs.get()
            try:
                fut.set_result(job())
            except BaseException as e:  # handed to the backward pass that waits on it
                fut.set_exception(e)


def hierarchical_hook(state: HookState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: replaces the bucket's all-reduce by the hierarchical, compressed mean."""
    buffer, index, ntensors, last = bucket.buffer(), bucket.index(), len(bucket.gradients()), bucket.is_last()

    def job() -> torch.Tensor:
        with state.stats.timed():
            out = all_reduce_mean(buffer, state.topo, state.compression, state.stats, state.residuals, key=index)
        state.stats.buckets += 1
        state.stats.tensors += ntensors
        state.stats.steps += int(last)
        return out

    if state.overlap:
        state.worker = state.worker or CommThread()
        return state.worker.submit(job)
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_result(job())
    return fut


def register_hook(ddp_model, topo: Topology, compression: Compression | str | None = None,
                  overlap: bool = True) -> HookState:
    """Install the hook on a DistributedDataParallel model; returns its state (stats inside)."""
    state = HookState(topo=topo, compression=Compression.parse(compression), overlap=overlap)
    ddp_model.register_comm_hook(state, hierarchical_hook)
    return state
