"""Pooling, switching adapters off, and running a function over rows in their order."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from adapterkit.toolkit.batching import batches, model_inputs


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: (B, T, H), (B, T) -> (B, H) (an all-padding row gives 0)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


@contextmanager
def using_adapters(model: nn.Module, names: list[str], composition: str = "stack") -> Iterator[nn.Module]:
    """`names` active ("stack" or "parallel") inside the block; what was active before (set,
    composition, a registered composition's state) comes back on exit, also after an error.
    An empty list: the bare backbone."""
    from adapterkit.model import BANK, AdapterBank, get_bank

    bank = getattr(model, BANK, None)
    if not isinstance(bank, AdapterBank):
        if names:
            get_bank(model)  # the library's one-line error: the model has no adapters
        yield model
        return
    with bank.activated(names, composition):
        yield model


def adapters_off(model: nn.Module):
    """Run the bare backbone inside the block; the active adapters (and composition) come back."""
    return using_adapters(model, [])


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Modules in eval mode inside the block (no dropout); their training flags come back."""
    flags = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, flag in zip(modules, flags):
            m.train(flag)


@torch.inference_mode()
def in_row_order(batches: Iterable[dict], fn: Callable[[dict], torch.Tensor], n: int) -> torch.Tensor:
    """fn(batch) for every batch, scattered by the batches' `_rows` into (n, ...) float32."""
    out = None
    for batch in batches:
        y = fn(batch).float()
        if out is None:
            out = torch.empty(n, *y.shape[1:])
        out[batch["_rows"]] = y
    return out if out is not None else torch.empty(0)


def frozen_features(model: nn.Module, rows: list[dict], pad_id: int = 0, batch_size: int = 64) -> torch.Tensor:
    """Sentence features of the bare pre-trained backbone: the mean-pooled last hidden state with
    every adapter off and no dropout, (N, H) in row order."""
    base = getattr(model, "base_model", model)
    with adapters_off(model), eval_mode(model):
        return in_row_order(batches(rows, batch_size, pad_id),
                            lambda b: masked_mean(base(**model_inputs(b)).last_hidden_state.float(), b["attention_mask"]),
                            len(rows))

