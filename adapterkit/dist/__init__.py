"""Distributed adapter training on torch.distributed: launch, strategies, and gradient
communication that is hierarchical (inside a node first, then across nodes), fused into
buckets in the order gradients become ready, and optionally compressed (fp16, bf16, top-k
with error feedback), as in the EasyTransfer paper's Whale engine (section 3.2).

    from adapterkit import dist as akd
    if akd.maybe_launch(argv, nproc=4, nnodes=2):   # re-runs the command under torchrun
        return
    akd.init_distributed()
    run = akd.wrap_for_strategy(model, "ddp", akd.DistConfig(compression="fp16", bucket_mb=4))
    loss = run.step(run.shard(batch))               # forward, backward, gradient sync

Names load lazily: `import adapterkit.dist` does not import torch.
"""
from __future__ import annotations

from adapterkit.lazy import lazy_exports

_EXPORTS = {
    "maybe_launch": "adapterkit.dist.launch",
    "under_torchrun": "adapterkit.dist.launch",
    "init_distributed": "adapterkit.dist.launch",
    "is_main_process": "adapterkit.dist.launch",
    "Topology": "adapterkit.dist.topology",
    "build_topology": "adapterkit.dist.topology",
    "Compression": "adapterkit.dist.compression",
    "all_reduce_mean": "adapterkit.dist.collectives",
    "CommStats": "adapterkit.dist.stats",
    "write_comm_stats": "adapterkit.dist.stats",
    "hierarchical_hook": "adapterkit.dist.hook",
    "register_hook": "adapterkit.dist.hook",
    "BucketReducer": "adapterkit.dist.reducer",
    "run_local": "adapterkit.dist.local",
    "DistConfig": "adapterkit.dist.strategies",
    "wrap_for_strategy": "adapterkit.dist.strategies",
    "register_strategy": "adapterkit.dist.strategies",
    "DistRun": "adapterkit.dist.run",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
