"""The bottleneck adapter: h + s * up(act(down(h))), with 2md + d + m parameters."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "swish": F.silu,
    "silu": F.silu,
    "tanh": torch.tanh,
}


class BottleneckAdapter(nn.Module):
    """Down-projection d -> m, nonlinearity, up-projection m -> d, internal residual.

    init="zero": the up-projection starts at zero, so the adapter is exactly the identity and
    the adapted model computes the base function at step 0.
    init="houlsby": both projections start near zero (normal, std 1e-2), a near-identity.
    """

    def __init__(
        self,
        hidden_dim: int,
        bottleneck_dim: int,
        activation: str = "gelu",
        scaling: float = 1.0,
        init: str = "zero",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_dim, bottleneck_dim)
        self.up = nn.Linear(bottleneck_dim, hidden_dim)
        self.activation = activation
        self.act = _ACTIVATIONS[activation]
        self.scaling = scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.reset_parameters(init)

    def reset_parameters(self, init: str = "zero") -> None:
        if init == "houlsby":
            nn.init.normal_(self.down.weight, std=1e-2)
            nn.init.normal_(self.up.weight, std=1e-2)
        else:
            self.down.reset_parameters()
            nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (..., d) -> (..., d)
        z = self.act(self.down(h))  # (..., m)
        if self.dropout is not None:
            z = self.dropout(z)
        # residual add fused into the up-projection GEMM: h + s * (z @ W_up^T + b_up)
        flat_h, flat_z = h.reshape(-1, h.shape[-1]), z.reshape(-1, z.shape[-1])
        if self.scaling == 1.0:
            out = torch.addmm(flat_h + self.up.bias, flat_z, self.up.weight.t())
        else:
            out = torch.addmm(flat_h + self.scaling * self.up.bias, flat_z, self.up.weight.t(), alpha=self.scaling)
        return out.view(h.shape)

    def extra_repr(self) -> str:
        return f"activation={self.activation}, scaling={self.scaling}"
