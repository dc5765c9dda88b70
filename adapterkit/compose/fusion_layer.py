"""The AdapterFusion layer (Pfeiffer et al., EACL 2021) and its config.

At one site with input h and N adapter outputs z_1..z_N (each z_n = h + f_n(h)):

    q = Q h,  k_n = K z_n,  alpha = softmax_n(q . k_n / T)
    out = h + V sum_n alpha_n (z_n - h)

Attention over adapters, the query from the site's input, keys and values from each adapter's
output. Values are taken relative to h (V(z_n) - V(h)), so the backbone's residual path passes
unchanged whatever V learns. V starts as the identity: with one adapter the layer returns that
adapter's output exactly, and with N it starts near the mean of their updates. Q and K start
small (normal, std 0.02). 3d^2 + 2d parameters per layer (Q and K with bias, V without).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adapterkit.config import Sharing, parse_sharing
from adapterkit.errors import AdapterkitError


@dataclass
class FusionConfig:
    """How fusion layers are built and shared.

    `sharing` groups fusion layers like adapters (adapterkit.sharing): N consecutive layers
    share one fusion layer, "all" one per stack, "none" one per site; with `share_sites` the
    attention and feed-forward sites of a group share it. Each distinct fusion layer has
    3d^2 + 2d parameters, so sharing=3 divides the count by 3 (rounded up over the layers).
    `temperature` T divides the attention scores (T > 1: flatter weights over adapters).
    """

    sharing: Sharing = 1
    share_sites: bool = True
    temperature: float = 1.0
    query_init_std: float = 0.02

    def __post_init__(self) -> None:
        self.sharing = parse_sharing(self.sharing)
        if not self.temperature > 0:
            raise AdapterkitError(f"fusion temperature must be > 0, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FusionConfig":
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise AdapterkitError(f"unknown fusion config fields: {sorted(unknown)}")
        return cls(**data)


class FusionLayer(nn.Module):
    """Attention over N adapter outputs at one site."""

    def __init__(self, hidden: int, temperature: float = 1.0, init_std: float = 0.02) -> None:
        super().__init__()
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden, bias=False)
        self.temperature = temperature
        for lin in (self.query, self.key):
            nn.init.normal_(lin.weight, std=init_std)
            nn.init.zeros_(lin.bias)
        with torch.no_grad():
            self.value.weight.copy_(torch.eye(hidden))

    def weights(self, h: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """(..., d), (..., N, d) -> attention over adapters (..., N)."""
        q = self.query(h).unsqueeze(-1)  # (..., d, 1)
        scores = (self.key(outputs) @ q).squeeze(-1)  # (..., N)
        return torch.softmax(scores / self.temperature, dim=-1)

    def forward(self, h: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
        z = torch.stack(outputs, dim=-2)  # (..., N, d)
        alpha = self.weights(h, z).unsqueeze(-1)  # (..., N, 1)
        update = (alpha * (z - h.unsqueeze(-2))).sum(-2)  # (..., d)
        return h + self.value(update)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


def layer_parameters(hidden: int) -> int:
    """Parameters of one fusion layer at width `hidden`: Q, K (with bias) and V (no bias)."""
    return 3 * hidden * hidden + 2 * hidden
