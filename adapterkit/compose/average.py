"""Output averaging: the weighted sum of the active adapters' updates at every site.

At a site with input h, adapters a_1..a_N (a_i(h) = h + f_i(h)) and weights w_1..w_N:

    out = h + sum_i w_i (a_i(h) - h)

Weights default to 1/N; with weights summing to 1 this is the weighted mean of the adapters'
outputs, and weights (1, 0) give the first adapter's output. All weights 1 is "parallel".
Adapters need not agree on plans, sizes or placements: an adapter without a module at a site
adds nothing there.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from adapterkit.errors import AdapterkitError
from adapterkit.model import register_composition


@register_composition("average")
def average(model: nn.Module, bank, names: list[str], weights: Sequence[float] | None = None):
    weights = [1.0 / len(names)] * len(names) if weights is None else [float(w) for w in weights]
    if len(weights) != len(names):
        raise AdapterkitError(f"average: {len(weights)} weights for {len(names)} adapters")
    # per site, the weights of the adapters present there, in chain order
    per_site: dict[str, list[float]] = {}
    for name, w in zip(names, weights):
        for path in bank.plans[name].group_of():
            per_site.setdefault(path, []).append(w)

    def compose(path: str, h: torch.Tensor, chain: list[nn.Module]) -> torch.Tensor:
        return h + sum(w * (adapter(h) - h) for w, adapter in zip(per_site[path], chain))

    compose.options = {"weights": weights}  # what a saved combination records
    return compose
