"""AdapterDrop (Rücklé et al., EMNLP 2021): no adapters in the lowest k layers.

`set_adapter_drop(model, k)` makes every adapter site in layers 0..k-1 of each layer stack
pass its input unchanged (in training and inference alike, for every adapter and composition);
k = 0 is the plain adapted model. k must leave at least one layer adapted: k >= the number of
layers is refused (check_drop_layers, the one check every path goes through). The skipped
modules stay in the model (a module shared across layers still runs at its sites from layer k
up), so one trained adapter can be run at several k. A saved run's k is applied when it is
loaded for inference (drop_for_run: `eval`, `predict`, a test file's score).

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
from adapterkit.model import BANK, get_bank
from adapterkit.sites import find_layer_stacks

_ROBUST: "weakref.WeakKeyDictionary[nn.Module, object]" = weakref.WeakKeyDictionary()  # model -> hook handle


def set_adapter_drop(model: nn.Module, k: int = 0, robust_max: int | None = None) -> None:
    """Skip adapters in the lowest k layers; with robust_max, a random k in 0..robust_max per
    training forward (the eval k stays `k`). k=0 without robust_max switches AdapterDrop off."""
    bank = get_bank(model)
    check_drop_layers(model, k, "k")
    if robust_max is not None:
        check_drop_layers(model, robust_max, "robust_max")
    handle = _ROBUST.pop(model, None)
    if handle is not None:
        handle.remove()
    bank.drop_layers = k
    if robust_max is not None:
        def draw(module, args):
            bank.drop_layers = int(torch.randint(0, robust_max + 1, ())) if module.training else k

        _ROBUST[model] = model.register_forward_pre_hook(draw)


def adapter_drop(model: nn.Module) -> int:
    """The k in use: adapters in the lowest k layers are skipped (0: none)."""
    return get_bank(model).drop_layers


def layer_count(model: nn.Module) -> int:
    """Layers of the model's longest layer stack (the stacks its adapters were placed in, else the
    default ones): AdapterDrop's k counts layers within each stack."""
    bank = getattr(model, "_modules", {}).get(BANK)
    patterns = {(c.targets or {}).get("layers") for c in bank.configs.values()} if bank is not None else set()
    return max(len(stack.layers) for pattern in (patterns or {None}) for stack in find_layer_stacks(model, pattern))


def check_drop_layers(model: nn.Module, k, name: str = "--drop-layers") -> int:
    """`k` when 0 <= k < the model's number of layers (k = the count would skip every adapter);
    otherwise one AdapterkitError naming `name` and the layer count. `model` may be a meta-device
    skeleton (adapterkit.backbone.skeleton_from_config): refused before any data is read."""
    from adapterkit.config import check_number

    check_number(name, k, minimum=0, integer=True)
    n = layer_count(model)
    if k >= n:
        raise AdapterkitError(f"{name} {k}: the model has {n} layers; use 0..{n - 1} "
                              f"(k skips the adapters of layers 0..k-1; {n} would skip them all)")
    return k


def drop_for_run(model: nn.Module, run: dict, k: int | None = None) -> int:
    """Set the AdapterDrop k that scoring a saved run uses and return it: `k` when given
    (`eval --drop-layers`), else the run's own (its --drop-layers; 0 after robust training, whose
    dev scores are at k = 0). A k outside the model's layers, or k > 0 on a run without adapters
    (full fine-tuning), is refused in one line."""
    from adapterkit.config import check_number

    name = "--drop-layers" if k is not None else "the run's drop_layers"
    if k is None:
        k = 0 if run.get("drop_robust") else run.get("drop_layers", 0)
    if check_number(name, k, minimum=0, integer=True) == 0:
        return 0
    if run.get("full_finetune") or getattr(model, "_modules", {}).get(BANK) is None:
        raise AdapterkitError(f"{name} {k}: this run is full fine-tuning; it has no adapters to drop")
    set_adapter_drop(model, check_drop_layers(model, k, name))
    return k
