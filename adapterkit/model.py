"""Named adapters on a model: add, remove, activate, compose, freeze, count.

The adapters of a model live in one `AdapterBank` attached as `model.adapterkit`: a
ModuleDict name -> ModuleDict group id -> adapter module. Each site (see adapterkit.sites)
gets one forward hook that passes the site's output through the active adapters' modules for
that site. A shared adapter is one module object that several sites route to, so it is stored
once in `state_dict()` and its gradient sums over the sites. The backbone's own modules and
state_dict keys are never changed, and `torch.func.functional_call(model, params, ...)` sees
adapter parameters under `adapterkit.<name>.<group>.*`.
"""
from __future__ import annotations

import types
from functools import partial
from typing import Iterable

import torch
from torch import nn

from adapterkit.config import BottleneckConfig
from adapterkit.errors import AdapterkitError
from adapterkit.modules import build_adapter
from adapterkit.sharing import SharingPlan, make_plan
from adapterkit.sites import Site, find_sites

BANK = "adapterkit"
COMPOSITIONS = ("stack", "parallel")


class AdapterBank(nn.Module):
    """All adapters of one model, the routes from sites to modules, and the active set."""

    def __init__(self) -> None:
        super().__init__()
        self.adapters = nn.ModuleDict()
        self.configs: dict[str, BottleneckConfig] = {}
        self.plans: dict[str, SharingPlan] = {}
        self.active: list[str] = []
        self.composition = "stack"
        self._hooks: dict[str, torch.utils.hooks.RemovableHandle] = {}
        self._chains: dict[str, list[nn.Module]] = {}  # site path -> active modules, in order
        self._dropout: dict[tuple[int, str], float] = {}  # backbone dropout rates switched off

    def rebuild_chains(self) -> None:
        self._chains = {}
        for name in self.active:
            route = self.plans[name].group_of()
            for path, gid in route.items():
                self._chains.setdefault(path, []).append(self.adapters[name][gid])

    def apply(self, path: str, output):
        chain = self._chains.get(path)
        if not chain:
            return output
        h = output[0] if isinstance(output, tuple) else output
        if self.composition == "stack":
            for adapter in chain:
                h = adapter(h)
        else:  # parallel: h + sum_i (a_i(h) - h)
            h = h + sum(adapter(h) - h for adapter in chain)
        return (h, *output[1:]) if isinstance(output, tuple) else h


def _site_hook(bank: AdapterBank, path: str, module: nn.Module, args, output):
    return bank.apply(path, output)


def get_bank(model: nn.Module, create: bool = False) -> AdapterBank:
    bank = getattr(model, BANK, None)
    if isinstance(bank, AdapterBank):
        return bank
    if not create:
        raise AdapterkitError(f"{type(model).__name__} has no adapters; add one with adapterkit.add_adapter")
    bank = AdapterBank()
    model.add_module(BANK, bank)
    return bank


def plan_adapter(model: nn.Module, config: BottleneckConfig) -> SharingPlan:
    """Where adapters with this config would go in this model (nothing is changed)."""
    return make_plan(find_sites(model, config.targets), config)


def add_adapter(model: nn.Module, name: str, config: BottleneckConfig | None = None, activate: bool = True) -> SharingPlan:
    """Insert adapter `name` into `model` following `config`; returns its sharing plan."""
    config = config or BottleneckConfig()
    if not name.isidentifier():
        raise AdapterkitError(f"adapter name must be a Python identifier (letters, digits, _), got {name!r}")
    bank = get_bank(model, create=True)
    if name in bank.adapters:
        raise AdapterkitError(f"model already has an adapter named {name!r}")
    plan = plan_adapter(model, config)
    device, dtype = _device_dtype(model)
    modules = nn.ModuleDict({gid: build_adapter(config, sites[0].hidden) for gid, sites in plan.groups.items()})
    bank.adapters[name] = modules.to(device=device, dtype=dtype)
    bank.configs[name], bank.plans[name] = config, plan
    _hook_sites(model, bank, plan.sites)
    if activate:
        set_active(model, [*bank.active, name])
    return plan


def remove_adapter(model: nn.Module, name: str) -> None:
    bank = get_bank(model)
    _require(bank, name)
    del bank.adapters[name]
    del bank.configs[name], bank.plans[name]
    bank.active = [a for a in bank.active if a != name]
    bank.rebuild_chains()
    used = {site.path for plan in bank.plans.values() for site in plan.sites}
    for path in list(bank._hooks):
        if path not in used:
            bank._hooks.pop(path).remove()
    if not bank.adapters:
        set_backbone_dropout(model, True)
        delattr(model, BANK)
        model.__dict__.pop("save_pretrained", None)


def set_active(model: nn.Module, names: str | Iterable[str], composition: str = "stack") -> None:
    """Activate adapters in order: with "stack" one adapter's output feeds the next; with
    "parallel" their residual updates are summed. An empty list runs the bare backbone."""
    names = [names] if isinstance(names, str) else list(names)
    if composition not in COMPOSITIONS:
        raise AdapterkitError(f"composition must be one of {COMPOSITIONS}, got {composition!r}")
    bank = get_bank(model)
    for name in names:
        _require(bank, name)
    bank.active, bank.composition = names, composition
    bank.rebuild_chains()


def active_adapters(model: nn.Module) -> list[str]:
    bank = getattr(model, BANK, None)
    return list(bank.active) if isinstance(bank, AdapterBank) else []


def list_adapters(model: nn.Module) -> list[str]:
    bank = getattr(model, BANK, None)
    return list(bank.adapters) if isinstance(bank, AdapterBank) else []


def adapter_config(model: nn.Module, name: str) -> BottleneckConfig:
    bank = get_bank(model)
    _require(bank, name)
    return bank.configs[name]


def adapter_plan(model: nn.Module, name: str) -> SharingPlan:
    bank = get_bank(model)
    _require(bank, name)
    return bank.plans[name]


def adapter_parameters(model: nn.Module, name: str) -> dict[str, nn.Parameter]:
    """The distinct parameters of adapter `name` by their model-level names (shared ones once),
    plus the layer norms it trains when its config has train_layer_norms."""
    bank = get_bank(model)
    _require(bank, name)
    params = {f"{BANK}.adapters.{name}.{n}": p for n, p in bank.adapters[name].named_parameters()}
    if bank.configs[name].train_layer_norms:
        params.update(layer_norm_parameters(model, bank.plans[name].sites))
    return params


def count_parameters(model: nn.Module, name: str) -> int:
    """Number of distinct trainable values adapter `name` adds (shared modules counted once)."""
    return sum(p.numel() for p in adapter_parameters(model, name).values())


def head_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The task head: parameters outside the backbone (`model.base_model`) and the adapters,
    plus the backbone's pooler if it has one (trained with the head)."""
    base = getattr(model, "base_model", model)
    if base is model:
        return {}
    base_ids = {id(p) for n, p in base.named_parameters() if ".pooler." not in f".{n}"}
    return {
        n: p
        for n, p in model.named_parameters()
        if id(p) not in base_ids and not n.startswith(f"{BANK}.")
    }


def train_adapter(
    model: nn.Module, names: str | Iterable[str], train_head: bool = True, backbone_dropout: bool = False
) -> None:
    """Freeze everything except adapters `names` (activated in this stack order) and the head.

    With backbone_dropout=False (the default) dropout inside the frozen backbone is switched off
    (the frozen function stays deterministic; regularise with the adapter's own `dropout` or the
    head's). On CPU this matters for speed: attention-probability dropout sends
    scaled_dot_product_attention to its slow math path. remove_adapter restores the rates.

    While adapters are being trained, `model.save_pretrained` (what `transformers.Trainer`
    calls for checkpoints) writes only the trainable weights, so checkpoints hold the adapters
    and the head, and `load_best_model_at_end` restores them into the frozen backbone.
    """
    names = [names] if isinstance(names, str) else list(names)
    set_active(model, names)
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        for p in adapter_parameters(model, name).values():
            p.requires_grad_(True)
    if train_head:
        for p in head_parameters(model).values():
            p.requires_grad_(True)
    set_backbone_dropout(model, backbone_dropout)
    model.save_pretrained = types.MethodType(_save_trainable_only, model)


def set_backbone_dropout(model: nn.Module, enabled: bool) -> None:
    """Switch dropout inside `model.base_model` off (rates remembered) or back to the original rates."""
    bank = get_bank(model)
    base = getattr(model, "base_model", model)
    for module in base.modules():
        if isinstance(module, AdapterBank):
            continue
        for attr in ("p", "attention_dropout"):
            value = getattr(module, attr, None)
            if attr == "p" and not isinstance(module, nn.Dropout) or not isinstance(value, float):
                continue
            key = (id(module), attr)
            if enabled and key in bank._dropout:
                setattr(module, attr, bank._dropout.pop(key))
            elif not enabled and value > 0:
                bank._dropout.setdefault(key, value)
                setattr(module, attr, 0.0)


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in trainable}


def layer_norm_parameters(model: nn.Module, sites: Iterable[Site]) -> dict[str, nn.Parameter]:
    """Parameters of the normalisation layers inside the layers that hold `sites`."""
    modules = dict(model.named_modules())
    layer_paths = sorted({site.layer_path for site in sites})
    params: dict[str, nn.Parameter] = {}
    for layer_path in layer_paths:
        for mname, module in modules[layer_path].named_modules():
            if isinstance(module, nn.LayerNorm) or "norm" in type(module).__name__.lower():
                for pname, p in module.named_parameters(recurse=False):
                    params[f"{layer_path}.{mname}.{pname}"] = p
    return params


def _save_trainable_only(self: nn.Module, save_directory, *args, state_dict=None, **kwargs):
    if state_dict is None:
        state_dict = trainable_state_dict(self)
    else:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        state_dict = {k: v for k, v in state_dict.items() if k in trainable}
    return type(self).save_pretrained(self, save_directory, *args, state_dict=state_dict, **kwargs)


def _hook_sites(model: nn.Module, bank: AdapterBank, sites: Iterable[Site]) -> None:
    modules = dict(model.named_modules())
    for site in sites:
        if site.path not in bank._hooks:
            hook = partial(_site_hook, bank, site.path)
            bank._hooks[site.path] = modules[site.path].register_forward_hook(hook)


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _require(bank: AdapterBank, name: str) -> None:
    if name not in bank.adapters:
        known = ", ".join(bank.adapters) or "none"
        raise AdapterkitError(f"no adapter named {name!r} (adapters on this model: {known})")
