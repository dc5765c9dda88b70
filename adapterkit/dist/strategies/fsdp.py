"""`fsdp`: FSDP2 `fully_shard` on every transformer layer and on the root, frozen backbone
included, so the weights each rank holds fall with the number of ranks.

With several nodes (and `hybrid`), the mesh is 2-D (replicate across nodes, shard inside a
node: HSDP): weights are gathered over the fast intra-node links only, and gradients are
reduce-scattered inside the node and all-reduced across nodes, the same hierarchy as the ddp
hook, run by FSDP itself. fp16/bf16 compression maps to FSDP's `reduce_dtype`; topk has no
FSDP counterpart and is refused.

Adapters live in the model's adapter bank (`model.adapterkit`), so they fall in the root's
parameter group: they are gathered once per forward, and a module shared by several layers
stays one parameter. Frozen parameters never get gradients and are never reduce-scattered.
FSDP runs its own collectives: comm_stats.json holds steps and times, not bytes.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from adapterkit.dist.compression import Compression
from adapterkit.dist.run import DistRun, trainable_names
from adapterkit.dist.strategies import DistConfig, register_strategy
from adapterkit.dist.strategies.ddp import loss_step
from adapterkit.dist.topology import detect_nnodes
from adapterkit.errors import AdapterkitError


def fsdp_mesh(config: DistConfig):
    """1-D ("shard",) mesh, or 2-D ("replicate", "shard") across nodes for the hybrid form."""
    from torch.distributed.device_mesh import init_device_mesh

    device = "cuda" if torch.cuda.is_available() else "cpu"
    world, nnodes = dist.get_world_size(), detect_nnodes(config.nnodes)
    if config.hybrid and 1 < nnodes < world:
        return init_device_mesh(device, (nnodes, world // nnodes), mesh_dim_names=("replicate", "shard"))
    return init_device_mesh(device, (world,), mesh_dim_names=("shard",))


def shard_model(model: nn.Module, mesh, compression: Compression) -> nn.Module:
    """fully_shard each layer of each layer stack, then the root (embeddings, head, adapters)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from adapterkit.sharing.sites import find_layer_stacks

    if compression.kind == "topk":
        raise AdapterkitError("fsdp does not support topk compression (use ddp or pipeline+ddp)")
    policy = MixedPrecisionPolicy(reduce_dtype=compression.wire_dtype if compression.kind != "none" else None)
    modules = dict(model.named_modules())
    for stack in find_layer_stacks(model):
        for path in stack.layers:
            fully_shard(modules[path], mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def gather_full(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full tensors of the trainable parameters (all-gathers the DTensor shards; collective)."""
    out = {}
    for name, p in trainable_names(model).items():
        out[name] = p.full_tensor().detach() if hasattr(p, "full_tensor") else p.detach()
    return out


@register_strategy("fsdp")
def build(model: nn.Module, config: DistConfig) -> DistRun:
    mesh = fsdp_mesh(config)
    shard_model(model, mesh, Compression.parse(config.compression))
    replicas = mesh.size(0) if mesh.ndim == 2 else 1
    dims = dict(zip(mesh.mesh_dim_names, mesh.shape))
    return DistRun(
        strategy="fsdp", model=model, module=model, config=config, step_fn=loss_step(model),
        gather_fn=lambda: gather_full(model),
        dp_rank=dist.get_rank(), dp_size=dist.get_world_size(),
        meta={"mesh": dims, "hybrid": replicas > 1, "bytes_instrumented": False},
    )
