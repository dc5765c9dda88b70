"""`ddp`: data parallel over the adapter and head gradients only.

DDP registers only parameters that require gradients, so the frozen backbone is never
bucketed nor communicated; it is also left out of DDP's start-up broadcast (it must be the same
on every rank, e.g. loaded from one checkpoint): only adapters and head are sent from rank 0. Gradient buckets (`bucket_mb`, ordered by readiness after the first
step) go through the hierarchical, optionally compressed hook of adapterkit.dist.hook.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from adapterkit.dist.hook import register_hook
from adapterkit.dist.run import DistRun, trainable_names
from adapterkit.dist.strategies import DistConfig, register_strategy
from adapterkit.dist.topology import build_topology
from adapterkit.errors import AdapterkitError


def wrap_ddp(module: nn.Module, config: DistConfig, topo, group=None) -> tuple[DDP, object]:
    """DDP over `group` with the hierarchical hook on `topo`; returns (ddp, hook state)."""
    if not any(p.requires_grad for p in module.parameters()):
        raise AdapterkitError("nothing to train: every parameter is frozen (call adapterkit.train_adapter first)")
    frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
    DDP._set_params_and_buffers_to_ignore_for_model(module, frozen + [n for n, _ in module.named_buffers()])
    ddp = DDP(module, process_group=group, bucket_cap_mb=config.bucket_mb, forward_sync_buffers=False)
    state = register_hook(ddp, topo, config.compression, overlap=config.overlap)
    return ddp, state


def loss_step(module: nn.Module):
    """Forward + backward of a Hugging Face model on a batch with labels; returns the loss."""

    def step(batch: dict) -> torch.Tensor:
        loss = module(**batch).loss
        if loss is None:
            raise AdapterkitError("the model returned no loss: batches must include labels")
        loss.backward()
        return loss.detach()

    return step


@register_strategy("ddp")
def build(model: nn.Module, config: DistConfig) -> DistRun:
    topo = build_topology(hierarchical=config.hierarchical, nnodes=config.nnodes)
    ddp, state = wrap_ddp(model, config, topo)
    return DistRun(
        strategy="ddp", model=model, module=ddp, config=config, step_fn=loss_step(ddp),
        gather_fn=lambda: {n: p.detach() for n, p in trainable_names(model).items()},
        dp_rank=dist.get_rank(), dp_size=dist.get_world_size(), stats=state.stats,
        meta={"topology": topo.describe()},
    )
