"""Model-based transfer by combining source adapters: AdapterFusion, output averaging, merging.

Stage 1 (shared by the three): one adapter and head per source, trained on that source's rows
for `source_epochs` passes. Every source adapter starts from the same initialisation (the seed
is reset before each), which weight merging needs and the others do not mind. With
`source_adapters=DIR` the adapters are read from DIR/<source>/ when there (trained elsewhere,
or pulled from the hub and saved there) and written there when not, so several runs share them.
Stage 2: the source adapters are frozen and a new target head is trained on the target rows,
with the same step budget as Tgt-Only:
- fusion:  fusion layers over the source adapters (adapterkit.compose.fusion) and the head;
- average: the head alone, over the mean of the source adapters' outputs;
- merge:   the head alone, over one adapter merged from their weights (`merge_method`).
Sources and targets are Amazon domains or GLUE tasks (cola, sst2, mrpc, rte: then test = dev).
"""
from __future__ import annotations

from pathlib import Path

import torch

from adapterkit.compose import FusionConfig, add_fusion, fusion_parameters, merge_adapters, save_fusion
from adapterkit.io import load_adapter, save_adapter
from adapterkit.model import get_bank
from adapterkit.toolkit.schedule import fit
from adapterkit.transfer.kit import Run, setup
from adapterkit.transfer.registry import TransferSpec, register_algorithm

DEFAULTS = {"source_adapters": None, "source_epochs": 3, "fusion_sharing": 1, "temperature": 1.0,
            "fusion_lr": None, "merge_method": "linear", "density": 1.0, "drop": 0.0}
HEAD = "target"


def source_adapters(run: Run, folder: str | None) -> list[str]:
    """Stage 1: an adapter per source (read from `folder`/<source> when saved there)."""
    names = []
    for source in run.sources:
        name, saved = f"src_{source}", Path(folder) / source if folder else None
        if saved is not None and (saved / "adapterkit_config.json").exists():
            load_adapter(run.model, saved, name=name, activate=False)
        else:
            torch.manual_seed(run.spec.seed)  # one initialisation for every source adapter
            run.add_adapters(name)
            run.add_heads(name)
            batches = run.stream(run.data[source].train)
            steps = max(1, len(run.data[source].train) // run.spec.batch_size) * run.opts["source_epochs"]
            fit(run.params([name]), 4 if run.spec.quick else steps,
                lambda i: run.loss(next(batches), [name], name), run.spec.lr)
            if saved is not None:
                save_adapter(run.model, name, saved, include_head=False)
        for p in get_bank(run.model).adapters[name].parameters():
            p.requires_grad_(False)
        names.append(name)
    return names


def _start(spec: TransferSpec) -> tuple[Run, list[str]]:
    run, opts = setup(spec, DEFAULTS)
    run.opts = opts
    names = source_adapters(run, opts["source_adapters"])
    torch.manual_seed(spec.seed)
    run.add_heads(HEAD)
    return run, names


def _train_head(run: Run, adapters: list[str], composition: str, extra: list | None = None) -> list[float]:
    batches = run.stream(run.target.train)
    params = list(run.heads[HEAD].parameters()) + list(extra or [])
    return fit(params, run.steps(len(run.target.train)),
               lambda i: run.loss(next(batches), adapters, HEAD, composition), run.spec.lr)


@register_algorithm("fusion")
def fusion(spec: TransferSpec) -> dict:
    """AdapterFusion: attention over frozen source adapters; fusion layers and a head trained on the target."""
    run, names = _start(spec)
    config = FusionConfig(sharing=run.opts["fusion_sharing"], temperature=run.opts["temperature"])
    add_fusion(run.model, "fusion", names, config, activate=False)
    params = list(fusion_parameters(run.model, "fusion").values())
    batches = run.stream(run.target.train)
    groups = [{"params": list(run.heads[HEAD].parameters())},
              {"params": params, "lr": run.opts["fusion_lr"] or spec.lr}]
    losses = fit(groups, run.steps(len(run.target.train)),  # AdamW takes parameter groups
                 lambda i: run.loss(next(batches), names, HEAD, "fusion"), spec.lr)
    result = run.result(names, HEAD, "fusion", steps=len(losses),
                        fusion_parameters=sum(p.numel() for p in params))
    if spec.output:
        save_fusion(run.model, "fusion", Path(spec.output) / "fusion", include_head=False)
    return result


@register_algorithm("average")
def average(spec: TransferSpec) -> dict:
    """Output averaging: the mean of the frozen source adapters' outputs; a head trained on the target."""
    run, names = _start(spec)
    losses = _train_head(run, names, "average")
    return run.result(names, HEAD, "average", steps=len(losses))


@register_algorithm("merge")
def merge(spec: TransferSpec) -> dict:
    """Weight merging: one adapter merged from the source adapters' weights; a head trained on the target."""
    run, names = _start(spec)
    merge_adapters(run.model, names, "merged", method=run.opts["merge_method"], density=run.opts["density"],
                   drop=run.opts["drop"], seed=spec.seed)
    losses = _train_head(run, ["merged"], "stack")
    return run.result(["merged"], HEAD, steps=len(losses))

