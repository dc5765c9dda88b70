"""Weight merging: several adapters with one architecture become one adapter.

Three ways to combine the tensors of adapters whose configs and sharing plans agree:

- "linear": sum_i w_i * t_i. Weights default to 1/N (an average); negative weights subtract an
  adapter ("task arithmetic"), e.g. (1, -1).
- "ties" (Yadav et al. 2023): per tensor, keep each adapter's `density` fraction of largest
  magnitude entries (trim), elect a sign per entry from the sum of the trimmed weighted values,
  and average the entries that agree with it (disjoint mean). Weights default to 1.
- "dare" (Yu et al. 2024): drop each entry with probability `drop` and rescale the rest by
  1 / (1 - drop) (the expectation is unchanged), then combine linearly. Weights default to 1/N.

The tensors themselves are the "task vectors" (relative to zero): the up-projection starts at
zero, so its tensors are exact updates; down-projections start random, so merging adapters
that did not start from one initialisation mixes unrelated bottleneck units. Merge adapters
trained from a common init (same seed) for weight merging to be meaningful; output averaging
(composition="average") and fusion need no such thing.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from adapterkit.errors import AdapterkitError

METHODS = ("linear", "ties", "dare")
# config fields that must agree for two adapters' tensors to mean the same thing
_ARCH_FIELDS = ("kind", "bottleneck_dim", "reduction_factor", "activation", "scaling", "placement", "sharing",
                "share_sites", "layers", "top_n", "leave_out", "targets", "train_layer_norms")


def default_weights(method: str, n: int) -> list[float]:
    return [1.0] * n if method == "ties" else [1.0 / n] * n


def merge_tensors(tensors: Sequence[torch.Tensor], weights: Sequence[float], method: str = "linear",
                  density: float = 1.0, drop: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """One merged tensor from N same-shaped tensors."""
    if method not in METHODS:
        raise AdapterkitError(f"merge method must be one of {', '.join(METHODS)}; got {method!r}")
    stacked = torch.stack([t.detach().float() for t in tensors])  # (N, ...)
    w = torch.tensor(list(weights), dtype=stacked.dtype).view(-1, *([1] * (stacked.dim() - 1)))
    if method == "linear":
        out = (w * stacked).sum(0)
    elif method == "dare":
        keep = torch.rand(stacked.shape, generator=generator) >= drop  # (N, ...)
        out = (w * stacked * keep / (1.0 - drop)).sum(0)
    else:
        out = _ties(w * stacked, density)
    return out.to(tensors[0].dtype)


def _ties(weighted: torch.Tensor, density: float) -> torch.Tensor:
    """Trim, elect sign, disjoint mean over the first axis of (N, ...)."""
    flat = weighted.reshape(weighted.shape[0], -1)  # (N, P)
    k = max(1, round(density * flat.shape[1]))
    if k < flat.shape[1]:
        threshold = flat.abs().kthvalue(flat.shape[1] - k + 1, dim=1, keepdim=True).values  # (N, 1)
        flat = torch.where(flat.abs() >= threshold, flat, torch.zeros_like(flat))
    sign = torch.sign(flat.sum(0, keepdim=True))  # (1, P)
    agree = (torch.sign(flat) == sign) & (flat != 0)
    count = agree.sum(0).clamp(min=1)
    return ((flat * agree).sum(0) / count).reshape(weighted.shape[1:])


def check_mergeable(model: nn.Module, names: Sequence[str]) -> None:
    """Raise a clear error if the adapters `names` cannot be merged weight by weight."""
    from adapterkit.model import adapter_config, adapter_plan, get_bank

    if len(names) < 2:
        raise AdapterkitError(f"merging needs at least two adapters, got {list(names)}")
    first = names[0]
    base_cfg, base_plan = adapter_config(model, first), adapter_plan(model, first)
    base_shapes = {k: tuple(v.shape) for k, v in get_bank(model).adapters[first].state_dict().items()}
    for name in names[1:]:
        cfg, plan = adapter_config(model, name), adapter_plan(model, name)
        diffs = [f"{f} {getattr(base_cfg, f)!r} vs {getattr(cfg, f)!r}" for f in _ARCH_FIELDS
                 if getattr(base_cfg, f) != getattr(cfg, f)]
        if not diffs and plan.group_of() != base_plan.group_of():
            diffs.append("the sites map to different groups")
        shapes = {k: tuple(v.shape) for k, v in get_bank(model).adapters[name].state_dict().items()}
        if not diffs and shapes != base_shapes:
            diffs.append("tensor shapes differ")
        if diffs:
            raise AdapterkitError(
                f"cannot merge {first!r} and {name!r} weight by weight: {'; '.join(diffs)}. Merging needs one "
                f"architecture: retrain {name!r} with {first!r}'s settings (sharing, bottleneck, placement, layers), "
                f"or combine them without merging: set_active(..., composition='average') or a fusion, which accept "
                f"different plans and sizes")


def merge_adapters(model: nn.Module, names: Sequence[str], into: str, weights: Sequence[float] | None = None,
                   method: str = "linear", density: float = 1.0, drop: float = 0.0, seed: int = 0,
                   activate: bool = False) -> None:
    """Add adapter `into` to `model`: the merge of adapters `names` (same config and plan)."""
    from adapterkit.model import add_adapter, adapter_config, get_bank

    names = list(names)
    check_mergeable(model, names)
    weights = list(weights) if weights is not None else default_weights(method, len(names))
    if len(weights) != len(names):
        raise AdapterkitError(f"{len(weights)} weights for {len(names)} adapters")
    if not 0.0 < density <= 1.0:
        raise AdapterkitError(f"density must be in (0, 1], got {density}")
    if not 0.0 <= drop < 1.0:
        raise AdapterkitError(f"drop must be in [0, 1), got {drop}")
    bank = get_bank(model)
    states = [bank.adapters[n].state_dict() for n in names]
    generator = torch.Generator().manual_seed(seed)
    merged = {key: merge_tensors([s[key] for s in states], weights, method, density, drop, generator) for key in states[0]}
    add_adapter(model, into, adapter_config(model, names[0]), activate=activate)
    bank.adapters[into].load_state_dict(merged)
