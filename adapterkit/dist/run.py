"""DistRun: what a strategy hands the training loop (step, parameters, shard, save, stats)."""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from adapterkit.dist.stats import CommStats, write_comm_stats


@dataclass
class DistRun:
    strategy: str
    model: nn.Module  # the user's model; rank 0 saves adapters from it
    module: nn.Module  # what the strategy runs (DDP / FSDP model / pipeline stage)
    config: object  # the DistConfig
    step_fn: Callable[[dict], torch.Tensor | None]  # forward + backward; local loss or None
    gather_fn: Callable[[], dict[str, torch.Tensor]]  # collective: full trainable tensors on rank 0
    dp_rank: int = 0  # this rank's data-parallel replica (which data shard it reads)
    dp_size: int = 1
    stats: CommStats = field(default_factory=CommStats)
    meta: dict = field(default_factory=dict)  # strategy details for comm_stats.json
    step_seconds: list[float] = field(default_factory=list)

    def step(self, batch: dict) -> float:
        """Forward and backward on this rank's batch, gradients synchronised; returns the loss
        (averaged over replicas when config.sync_loss, else this rank's, NaN where unknown)."""
        start = time.perf_counter()
        loss = self.step_fn(batch)
        self.step_seconds.append(time.perf_counter() - start)
        if not self.config.sync_loss:
            return float("nan") if loss is None else loss.item()
        pair = torch.tensor([0.0, 0.0] if loss is None else [loss.item(), 1.0], dtype=torch.float64)
        dist.all_reduce(pair)
        return (pair[0] / pair[1]).item() if pair[1] > 0 else float("nan")

    def parameters(self) -> list[nn.Parameter]:
        """The trainable parameters this rank updates (give these to the optimizer)."""
        return [p for p in self.module.parameters() if p.requires_grad]

    def shard(self, batch: dict) -> dict:
        """This replica's part of a global batch: tensors split along dim 0 into dp_size chunks
        (sizes differ by at most one), so N processes take the same steps as one process."""
        if self.dp_size == 1:
            return batch
        return {
            k: v.tensor_split(self.dp_size)[self.dp_rank] if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()
        }

    @contextmanager
    def eval_model(self):
        """A model to evaluate with, or None on ranks that should skip evaluation. Collective.

        ddp: rank 0's own model. pipeline: rank 0's model with every stage's trained tensors
        gathered in. fsdp: the sharded model on every rank (its forward is collective, so all
        ranks run the same evaluation; only rank 0 should log it)."""
        if self.strategy == "fsdp":
            from torch.distributed.fsdp import FSDPModule

            yield self.model
            for m in self.model.modules():  # a forward without backward leaves the root unsharded
                if isinstance(m, FSDPModule):
                    m.reshard()
        elif self.strategy.startswith("pipeline"):
            state = self.trainable_state()
            if dist.get_rank() == 0:
                with swapped_parameters(self.model, state):
                    yield self.model
            else:
                yield None
        else:
            yield self.model if dist.get_rank() == 0 else None
        dist.barrier()

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Full adapter and head tensors by model-level names (valid on rank 0). Collective."""
        return self.gather_fn()

    def save_adapter(self, name: str, path: str | Path, task: dict | None = None) -> Path | None:
        """ak.save_adapter from a distributed run (with the task head's metadata): gather,
        rank 0 writes. Collective."""
        from adapterkit.io import save_adapter

        state = self.trainable_state()
        written = None
        if dist.get_rank() == 0:
            with swapped_parameters(self.model, state):
                written = save_adapter(self.model, name, path, task=task)
        dist.barrier()
        return written

    def write_stats(self, out_dir: str | Path) -> dict | None:
        """Rank 0 writes `out_dir/comm_stats.json`. Collective."""
        steps = self.step_seconds[1:] or self.step_seconds  # the first step builds buckets
        meta = {
            "strategy": self.strategy,
            "world_size": dist.get_world_size(),
            "compression": getattr(self.config, "compression", "none"),
            "bucket_mb": getattr(self.config, "bucket_mb", None),
            "step_seconds_median": statistics.median(steps) if steps else None,
            **self.meta,
        }
        return write_comm_stats(self.stats, Path(out_dir) / "comm_stats.json", meta)


@contextmanager
def swapped_parameters(model: nn.Module, tensors: dict[str, torch.Tensor]):
    """Temporarily make `model`'s parameters named in `tensors` plain tensors with these values
    (e.g. in place of FSDP's DTensor shards), so ordinary single-process code can read them."""
    modules = dict(model.named_modules())
    saved = []
    for name, value in tensors.items():
        owner, _, leaf = name.rpartition(".")
        module = modules[owner]
        saved.append((module, leaf, module._parameters[leaf]))
        module._parameters[leaf] = nn.Parameter(value.detach().clone(), requires_grad=False)
    try:
        yield model
    finally:
        for module, leaf, param in reversed(saved):
            module._parameters[leaf] = param


def trainable_names(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}
