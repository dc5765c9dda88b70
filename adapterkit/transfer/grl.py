"""Adversarial pieces: gradient reversal, a domain classifier, the shared/private orthogonality.

Gradient reversal (Ganin & Lempitsky, ICML 2015): identity forward, gradient times -weight
backward. A domain classifier reading `grad_reverse(features)` learns to tell domains apart
while whatever produced `features` (the shared adapter) is pushed to make them indistinguishable,
in one backward pass. Used by SharedPrivate-Adv / DRSS-Adv (Liu, Qiu & Huang, ACL 2017,
https://aclanthology.org/P17-1001) and by MGTL's discriminator.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.weight * grad, None


def grad_reverse(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """x forward; -weight * grad backward."""
    return _GradReverse.apply(x, weight)


class DomainClassifier(nn.Module):
    """Features (B, H) -> domain logits (B, n_domains): one hidden layer, as in Liu et al."""

    def __init__(self, hidden: int, n_domains: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, width), nn.ReLU(), nn.Linear(width, n_domains))

    def forward(self, features: torch.Tensor, reverse: float | None = None) -> torch.Tensor:
        """Logits; with `reverse` set, the gradient into `features` is reversed and scaled by it."""
        return self.net(grad_reverse(features, reverse) if reverse is not None else features)


def orthogonality(shared: torch.Tensor, private: torch.Tensor) -> torch.Tensor:
    """Liu et al.'s difference loss ||S^T P||_F^2 for feature matrices S, P of shape (B, H), made
    scale-free: rows L2-normalised (as in Bousmalis et al.'s domain separation networks) and the
    sum divided by B^2, i.e. the mean squared cosine between a shared and a private feature, in
    [0, 1] (about 1/H for unrelated directions). Liu et al.'s LSTM states are bounded by tanh;
    adapter updates are not, and the raw sum swamped the task loss (see benchmarks/README.md)."""
    s, p = F.normalize(shared, dim=-1), F.normalize(private, dim=-1)
    return (s.transpose(0, 1) @ p).pow(2).sum() / (len(s) * len(p))
