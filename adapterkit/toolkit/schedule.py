"""The learning-rate schedule (linear warm-up, then linear decay to 0) and a small AdamW loop."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn


def linear_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Factor (s+1)/(warmup+1) for the first `warmup` steps, then (total-s)/(total-warmup), floored at 0."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1.0, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(params: Iterable[nn.Parameter], steps: int, loss_fn: Callable[[int], torch.Tensor], lr: float,
        warmup_ratio: float = 0.1, title: str = "train", after_step: Callable[[int], None] | None = None) -> list[float]:
    """AdamW with `linear_warmup` over `steps` calls of loss_fn(step); returns the losses.
    `after_step(step)` runs after each optimizer step (e.g. a second learner's own update).
    Progress (a bar, or plain lines off a terminal) is reported under `title`."""
    from adapterkit.progress import progress

    optimizer = torch.optim.AdamW(list(params), lr=lr)
    schedule = linear_warmup(optimizer, int(steps * warmup_ratio), steps)
    losses = []
    with progress(title, steps) as bar:
        for step in range(steps):
            loss = loss_fn(step)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step(step)
            losses.append(loss.item())
            bar(loss=sum(losses[-20:]) / len(losses[-20:]))
    return losses
