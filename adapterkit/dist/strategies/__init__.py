"""Strategies for adapter training on a frozen backbone, one module each, behind one verb:

    run = wrap_for_strategy(model, "ddp", DistConfig(compression="fp16"))
    for batch in loader:                      # this replica's part: run.shard(global batch)
        loss = run.step(batch)                # forward + backward + gradient sync
        optimizer.step(); optimizer.zero_grad()   # optimizer over run.parameters()
    run.save_adapter("cola", out_dir)         # collective; rank 0 writes
    run.write_stats(out_dir)                  # collective; rank 0 writes comm_stats.json

  ddp           data parallel; only adapter and head gradients communicate, through the
                hierarchical / compressed hook (adapterkit.dist.hook)
  fsdp          FSDP2 `fully_shard` per layer + root, frozen backbone sharded too; with several
                nodes the hybrid form (shard inside a node, replicate across) on a 2-D mesh
  pipeline      layers split into stages with torch.distributed.pipelining (GPipe or 1F1B)
  pipeline+ddp  pipeline stages inside a node, data parallel across replicas (hook as ddp)
Users add strategies with `@register_strategy("name")` on a `build(model, config) -> DistRun`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from adapterkit.dist.compression import Compression
from adapterkit.errors import AdapterkitError

SCHEDULES = ("gpipe", "1f1b")
_STRATEGIES: dict = {}
_BUILTIN = {
    "ddp": "adapterkit.dist.strategies.ddp",
    "fsdp": "adapterkit.dist.strategies.fsdp",
    "pipeline": "adapterkit.dist.strategies.pipeline",
    "pipeline+ddp": "adapterkit.dist.strategies.pipeline",
}


@dataclass(frozen=True)
class DistConfig:
    compression: str = "none"  # none | fp16 | bf16 | topk:FRACTION[,momentum=M][,warmup=N]
    bucket_mb: float = 25.0  # gradient bucket size (fusion), as DDP's bucket_cap_mb
    hierarchical: bool = True  # intra-node first, then across nodes
    overlap: bool = True  # ddp: communicate buckets on a thread while backward continues
    nnodes: int | None = None  # None: from torchrun (LOCAL_WORLD_SIZE) or $ADAPTERKIT_DIST_NNODES
    microbatches: int = 4  # pipeline: microbatches per step
    schedule: str = "1f1b"  # pipeline: gpipe | 1f1b
    stages: int | None = None  # pipeline stages; default: all ranks (pipeline), local ranks (pipeline+ddp)
    hybrid: bool = True  # fsdp: replicate across nodes when there are several (HSDP)
    sync_loss: bool = True  # step() returns the loss averaged over replicas (one scalar all-reduce)

    def __post_init__(self) -> None:
        Compression.parse(self.compression)  # raises ValueError on a bad spec
        if self.bucket_mb <= 0:
            raise ValueError(f"bucket_mb must be > 0, got {self.bucket_mb}")
        if self.microbatches < 1:
            raise ValueError(f"microbatches must be >= 1, got {self.microbatches}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.stages is not None and self.stages < 1:
            raise ValueError(f"stages must be >= 1, got {self.stages}")


def register_strategy(name: str):
    """Decorator: register `build(model, config) -> DistRun` under `name` (no duplicates)."""

    def wrap(build):
        if name in _STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        _STRATEGIES[name] = build
        return build

    return wrap


def strategy_names() -> list[str]:
    return sorted({*_BUILTIN, *_STRATEGIES})


def wrap_for_strategy(model, strategy: str, config: DistConfig | None = None, **overrides):
    """Wrap `model` (adapters added, backbone frozen, process group initialised) for `strategy`.
    Collective: every rank calls it with the same arguments. Returns a DistRun."""
    if strategy in _BUILTIN and strategy not in _STRATEGIES:
        importlib.import_module(_BUILTIN[strategy])
    build = _STRATEGIES.get(strategy)
    if build is None:
        raise AdapterkitError(f"unknown strategy {strategy!r} (known: {', '.join(strategy_names())})")
    config = config or DistConfig()
    if overrides:
        config = DistConfig(**{**config.__dict__, **overrides})
    return build(model, config)
