"""A reinforced data selector: a small policy network deciding, per source example, keep or drop.

Used by RTL (Qu et al., WSDM 2019, https://arxiv.org/abs/1812.11561) and MGTL (Wang et al.,
KDD 2019, https://doi.org/10.1145/3292500.3330841). The selector is trained with REINFORCE:
loss = -sum_i A_i log pi(a_i | s_i), so a decision with a positive advantage A_i becomes more
likely. A moving-average baseline of past rewards centres the delayed reward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Selector(nn.Module):
    """State (B, S) -> probability of selecting each example (B,)."""

    def __init__(self, state_dim: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(state_dim, width), nn.Tanh(), nn.Linear(width, 1))
        nn.init.zeros_(self.net[-1].weight)  # start at p = sigmoid(bias): every example equally likely
        nn.init.constant_(self.net[-1].bias, 1.0)  # p ~ 0.73: keep most source data at first

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(states).squeeze(-1))

    @torch.no_grad()
    def act(self, states: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sampled actions (B,) in {0., 1.}."""
        return torch.bernoulli(self(states), generator=generator)


def log_prob(selector: Selector, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log pi(a_i | s_i), (B,)."""
    logits = selector.net(states).squeeze(-1)
    return -F.binary_cross_entropy_with_logits(logits, actions, reduction="none")


def reinforce_loss(selector: Selector, states: torch.Tensor, actions: torch.Tensor,
                   advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE: -mean_i A_i log pi(a_i | s_i); advantages (B,) or a scalar."""
    return -(advantages * log_prob(selector, states, actions)).mean()


def immediate_advantages(actions: torch.Tensor, p_target: torch.Tensor) -> torch.Tensor:
    """MGTL's per-decision reward (2a - 1)(p_target - 1/2): keeping an example the discriminator
    finds target-like, or dropping a source-like one, is rewarded; the opposite is penalised."""
    return (2 * actions - 1) * (p_target - 0.5)


class Baseline:
    """Exponential moving average of rewards (the REINFORCE baseline)."""

    def __init__(self, decay: float = 0.9):
        self.decay, self.value = decay, None

    def advantage(self, reward: float) -> float:
        advantage = reward - (self.value if self.value is not None else 0.0)
        self.value = reward if self.value is None else self.decay * self.value + (1 - self.decay) * reward
        return advantage
