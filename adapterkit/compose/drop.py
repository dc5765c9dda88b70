"""AdapterDrop (Rücklé et al., EMNLP 2021): no adapters in the lowest k layers.

`set_adapter_drop(model, k)` makes every adapter site in layers 0..k-1 of each layer stack
pass its input unchanged (in training and inference alike, for every adapter and composition);
k = 0 is the plain adapted model, k >= the number of layers the bare backbone. The skipped
modules stay in the model (a module shared across layers still runs at its sites from layer k
up), so one trained adapter can be run at several k.

Training cost: with the backbone frozen, nothing below the lowest active adapter requires a
gradient, so autograd records no graph there and the backward pass stops at layer k (tested).
Trainable layer norms (train_layer_norms) in those layers would carry it further down.

Robust AdapterDrop: `set_adapter_drop(model, k, robust_max=K)` draws k uniformly from 0..K
before every forward in training mode (one draw per batch, from the torch RNG), so the adapter
learns to work at every k up to K; in eval mode the given k is used.
"""
from __future__ import annotations

import weakref

import torch
from torch import nn

from adapterkit.errors import AdapterkitError
from adapterkit.model import get_bank

_ROBUST: "weakref.WeakKeyDictionary[nn.Module, object]" = weakref.WeakKeyDictionary()  # model -> hook handle


def set_adapter_drop(model: nn.Module, k: int = 0, robust_max: int | None = None) -> None:
    """Skip adapters in the lowest k layers; with robust_max, a random k in 0..robust_max per
    training forward (the eval k stays `k`). k=0 without robust_max switches AdapterDrop off."""
    if k < 0 or (robust_max is not None and robust_max < 0):
        raise AdapterkitError(f"drop layers must be >= 0, got k={k}, robust_max={robust_max}")
    bank = get_bank(model)
    handle = _ROBUST.pop(model, None)
    if handle is not None:
        handle.remove()
    bank.drop_layers = k
    if robust_max is not None:
        def draw(module, args):
            bank.drop_layers = int(torch.randint(0, robust_max + 1, ())) if module.training else k

        _ROBUST[model] = model.register_forward_pre_hook(draw)


def drop_for_run(model: nn.Module, run: dict, k: int | None = None) -> int:
    """Set the AdapterDrop k that scoring a saved run uses and return it: `k` when given, else
    the run's own (its --drop-layers; 0 after robust training, whose dev scores are at k = 0).
    A fully fine-tuned run has no adapters: an explicit k > 0 is refused, one line."""
    if k is not None and k < 0:
        raise AdapterkitError(f"--drop-layers must be >= 0, got {k}")
    chosen = k if k is not None else (0 if run.get("drop_robust") else int(run.get("drop_layers") or 0))
    if chosen and run.get("full_finetune"):
        raise AdapterkitError("--drop-layers: this run is full fine-tuning; it has no adapters to drop")
    if chosen:
        set_adapter_drop(model, chosen)
    return chosen


def adapter_drop(model: nn.Module) -> int:
    """The k in use: adapters in the lowest k layers are skipped (0: none)."""
    return get_bank(model).drop_layers
