"""`pipeline` and `pipeline+ddp`: the backbone's layers split into stages with
torch.distributed.pipelining (GPipe or 1F1B schedule over microbatches).

A stage is a contiguous run of layers, plus the embeddings on the first stage and the task
head on the last; the adapter modules those layers route to move with them, so each stage's
optimizer and gradient sync see exactly its own adapters. A module shared by layers in two
stages would need its gradient summed across stages: stage boundaries are chosen between
sharing groups (e.g. multiples of 3 layers with sharing=3), and a model where that is
impossible is refused. Stages pass (hidden states, attention mask) to the next one.

`pipeline+ddp` lays ranks out as (replica, stage), stages of one replica on consecutive ranks
(so inside a node, where activations travel), and averages each stage's gradients across
replicas once per step, after the last microbatch, with adapterkit's own BucketReducer
(readiness-ordered buckets, hierarchical / compressed all-reduce). DDP itself does not fit
here: with several backward passes per step its first-iteration bucket rebuild fails
(reducer.cpp "rebuilt parameter indices size is not same as original model parameters size").

Every single-stack family adapterkit.sharing.sites places adapters in works (the stages are slices
of adapterkit.slicing.StackSlicer: each family keeps its own masks, positions and head).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from adapterkit.dist.run import DistRun
from adapterkit.dist.strategies import DistConfig, register_strategy
from adapterkit.dist.reducer import BucketReducer
from adapterkit.dist.topology import build_topology, detect_nnodes
from adapterkit.errors import AdapterkitError

class Stage(nn.Module):
    """Layers [start, end) of the model's stack (adapterkit.slicing), with the embeddings on the
    first stage and the task head on the last. The stage registers the parameters it trains:
    the adapter modules its layers route to, and the trainable head (last stage) or other
    trainable parameters outside the layers (first stage); the frozen backbone is run through
    the model itself."""

    def __init__(self, slicer, start: int, end: int, adapters: list[nn.Module], extra: list[nn.Parameter],
                 first: bool, last: bool) -> None:
        super().__init__()
        object.__setattr__(self, "slicer", slicer)  # not a submodule: its other layers belong to other stages
        self.start, self.end, self.first, self.last = start, end, first, last
        self.layers = nn.ModuleList(slicer.layers[start:end])
        self.adapters = nn.ModuleList(adapters)  # called by the layers' site hooks
        self.extra = nn.ParameterList(extra)

    def forward(self, x, attention_mask, token_type_ids=None):
        h = self.slicer.embed(x, attention_mask, token_type_ids) if self.first else x  # (B, T, H)
        h = self.slicer.run(h, attention_mask, self.start, self.end)
        if not self.last:
            return h, attention_mask
        return self.slicer.head(h, attention_mask)  # (B, num_labels)


def plan_stages(model: nn.Module, n_stages: int) -> list[tuple[int, int]]:
    """Layer ranges of the stages: balanced, with cuts only where no adapter module is shared
    across the cut."""
    n_layers = len(_layer_list(model))
    if not 1 <= n_stages <= n_layers:
        raise AdapterkitError(f"cannot split {n_layers} layers into {n_stages} pipeline stages")
    spans = [(min(ls), max(ls)) for ls in _adapter_layers(model).values()]
    valid = [c for c in range(1, n_layers) if not any(lo < c <= hi for lo, hi in spans)]
    cuts: list[int] = []
    for i in range(1, n_stages):
        options = [c for c in valid if c > (cuts[-1] if cuts else 0) and c <= n_layers - (n_stages - i)]
        if not options:
            raise AdapterkitError(
                f"cannot split {n_layers} layers into {n_stages} stages without splitting a shared adapter "
                f"(possible stage boundaries: {valid or 'none'}); use fewer stages or less sharing"
            )
        cuts.append(min(options, key=lambda c: abs(c - i * n_layers / n_stages)))
    bounds = [0, *cuts, n_layers]
    return list(zip(bounds[:-1], bounds[1:]))


def build_stage(model: nn.Module, n_stages: int, stage: int) -> Stage:
    return build_stages(model, n_stages)[stage]


def build_stages(model: nn.Module, n_stages: int) -> list[Stage]:
    """Every stage of the model, cut as plan_stages says (each rank keeps its own)."""
    from adapterkit.model import head_parameters
    from adapterkit.slicing import StackSlicer

    slicer = StackSlicer(model)
    ranges = plan_stages(model, n_stages)
    owners = _adapter_layers(model)
    in_layers = {id(p) for p in slicer.layers.parameters()} | {id(p) for m in owners for p in m.parameters()}
    head = [p for p in head_parameters(model).values() if p.requires_grad]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in in_layers and
            all(p is not q for q in head)]
    stages = [
        Stage(slicer, a, b, [m for m, ls in owners.items() if a <= min(ls) and max(ls) < b],
              (rest if i == 0 else []) + (head if i == n_stages - 1 else []), first=i == 0, last=i == n_stages - 1)
        for i, (a, b) in enumerate(ranges)
    ]
    _check_coverage(model, stages)
    return stages


def _check_coverage(model: nn.Module, stages: list[nn.Module]) -> None:
    """Every trainable parameter must live in some stage, or it would silently stop training."""
    covered = {id(p) for s in stages for p in s.parameters()}
    left = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
    if left:
        raise AdapterkitError(f"pipeline stages do not hold these trainable parameters: {left[:5]}")


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """What HF sequence-classification models compute: MSE for one label, else cross-entropy."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


def _layer_list(model: nn.Module) -> nn.ModuleList:
    from adapterkit.slicing import StackSlicer

    return StackSlicer(model).layers


def _adapter_layers(model: nn.Module) -> dict[nn.Module, list[int]]:
    """Each adapter module of the active adapters -> the layer indices its sites are in."""
    from adapterkit.model import get_bank

    bank = get_bank(model)
    owners: dict[nn.Module, list[int]] = {}
    for name in bank.active:
        for gid, sites in bank.plans[name].groups.items():
            owners.setdefault(bank.adapters[name][gid], []).extend(s.layer for s in sites)
    return owners


def _mesh(config: DistConfig, with_ddp: bool):
    """(pipeline stages, replicas), stages innermost so a replica's stages share a node."""
    world = dist.get_world_size()
    if not with_ddp:
        stages = config.stages or world
        if stages != world:
            raise AdapterkitError(f"pipeline uses every rank as a stage: stages={stages} but {world} ranks")
        return stages, 1
    stages = config.stages or world // detect_nnodes(config.nnodes)
    if stages < 1 or world % stages or world == stages:
        raise AdapterkitError(f"pipeline+ddp: {world} ranks cannot form >1 replicas of {stages} stages")
    return stages, world // stages


def _build(model: nn.Module, config: DistConfig, with_ddp: bool) -> DistRun:
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    n_stages, replicas = _mesh(config, with_ddp)
    if config.schedule == "1f1b" and config.microbatches < n_stages:
        raise AdapterkitError(f"1f1b needs at least as many microbatches as stages ({n_stages}), got {config.microbatches}")
    rank = dist.get_rank()
    replica, stage_idx = divmod(rank, n_stages)
    pp_lists = [[r * n_stages + s for s in range(n_stages)] for r in range(replicas)]
    dp_lists = [[r * n_stages + s for r in range(replicas)] for s in range(n_stages)]
    pp_groups = [dist.new_group(g) if replicas > 1 else None for g in pp_lists]
    stage_module = build_stage(model, n_stages, stage_idx)
    names = {id(p): n for n, p in model.named_parameters()}
    meta = {"stages": n_stages, "replicas": replicas, "schedule": config.schedule, "microbatches": config.microbatches,
            "bytes_instrumented": "data-parallel gradients only; activations between stages are not counted"}
    reducer = None
    if with_ddp:
        topo = build_topology(hierarchical=config.hierarchical, nnodes=config.nnodes, dp_groups=dp_lists)
        reducer = BucketReducer(list(stage_module.parameters()), topo, config.compression, config.bucket_mb)
        meta["topology"] = topo.describe()
    pipe_stage = PipelineStage(stage_module, stage_idx, n_stages, torch.device("cpu"), group=pp_groups[replica])
    schedule_cls = ScheduleGPipe if config.schedule == "gpipe" else Schedule1F1B
    schedule = schedule_cls(pipe_stage, config.microbatches, loss_fn=classification_loss)
    run = DistRun(
        strategy="pipeline+ddp" if with_ddp else "pipeline", model=model, module=stage_module, config=config,
        step_fn=_step_fn(schedule, stage_idx, n_stages, reducer),
        gather_fn=lambda: _gather_stages(stage_module, names),
        dp_rank=replica, dp_size=replicas, meta=meta,
    )
    if reducer is not None:
        run.stats = reducer.stats
    return run


def _step_fn(schedule, stage_idx: int, n_stages: int, reducer: BucketReducer | None):
    first, last = stage_idx == 0, stage_idx == n_stages - 1

    def step(batch: dict) -> torch.Tensor | None:
        args = ()
        if first:
            args = (batch["input_ids"], batch["attention_mask"])
            if batch.get("token_type_ids") is not None:
                args = (*args, batch["token_type_ids"])
        losses: list[torch.Tensor] = []
        schedule.step(*args, target=batch["labels"] if last else None, losses=losses if last else None)
        if reducer is not None:
            reducer.reduce()
        return torch.stack(losses).mean().detach() if last else None

    return step


def _gather_stages(stage_module: nn.Module, names: dict[int, str]) -> dict[str, torch.Tensor]:
    """Every stage's trainable tensors, by model-level names, on every rank. Collective."""
    mine = {names[id(p)]: p.detach().clone() for p in stage_module.parameters() if p.requires_grad}
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return {k: v for part in everyone for k, v in part.items()}


@register_strategy("pipeline")
def build_pipeline(model: nn.Module, config: DistConfig) -> DistRun:
    return _build(model, config, with_ddp=False)


@register_strategy("pipeline+ddp")
def build_pipeline_ddp(model: nn.Module, config: DistConfig) -> DistRun:
    return _build(model, config, with_ddp=True)
