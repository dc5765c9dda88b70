"""Named adapters on a model: add, remove, activate, compose, freeze, count.

The adapters of a model live in one `AdapterBank` attached as `model.adapterkit`: a
ModuleDict name -> ModuleDict group id -> adapter module. Each site (see adapterkit.sharing.sites)
gets one forward hook that passes the site's output through the active adapters' modules for
that site. A shared adapter is one module object that several sites route to, so it is stored
once in `state_dict()` and its gradient sums over the sites. The backbone's own modules and
state_dict keys are never changed, and `torch.func.functional_call(model, params, ...)` sees
adapter parameters under `adapterkit.<name>.<group>.*`.
"""
from __future__ import annotations

import contextlib
import importlib
import weakref
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from adapterkit.config import BottleneckConfig
from adapterkit.errors import AdapterkitError
from adapterkit.modules import build_adapter
from adapterkit.sharing import SharingPlan, make_plan
from adapterkit.sharing.sites import BANK, Site, backbone_modules, backbone_parameters, find_sites

COMPOSITIONS = ("stack", "parallel")  # built in; adapterkit.compose registers average, split, fusion
# composition name -> builder(model, bank, names, **options) -> composer(path, h, chain) -> h
_COMPOSERS: dict[str, Callable] = {}
BUILTIN_COMPOSITIONS = "adapterkit.compose"  # the package whose import registers average, split, fusion


def register_composition(name: str) -> Callable[[Callable], Callable]:
    """Register a composition builder; `set_active(model, names, composition=name, **options)`
    calls it and the bank then passes every active site through the composer it returns."""
    def decorate(builder: Callable) -> Callable:
        if name in COMPOSITIONS or name in _COMPOSERS:
            raise ValueError(f"composition {name!r} is already registered")
        _COMPOSERS[name] = builder
        return builder

    return decorate

# site module -> the banks hooked on it (lets `detached_hooks` find the hooks inside a subtree)
_HOOKED: "weakref.WeakKeyDictionary[nn.Module, weakref.WeakSet]" = weakref.WeakKeyDictionary()


class SiteHook:
    """The forward hook on one site: passes the site's output through the bank's active chain."""

    def __init__(self, bank: "AdapterBank", path: str) -> None:
        self.bank, self.path = bank, path

    def __call__(self, module: nn.Module, args, output):
        return self.bank.adapt_site(self.path, output)


class AdapterBank(nn.Module):
    """All adapters of one model, the routes from sites to modules, and the active set.

    Every change to the bank goes through its methods (add, remove, activate, hook_sites,
    set_backbone_dropout, slim_saves); the module-level functions below are the public verbs
    that find the bank on a model and call them."""

    def __init__(self) -> None:
        super().__init__()
        self.adapters = nn.ModuleDict()
        self.configs: dict[str, BottleneckConfig] = {}
        self.plans: dict[str, SharingPlan] = {}
        self.active: list[str] = []
        self.composition = "stack"
        self._hooks: dict[str, tuple[nn.Module, torch.utils.hooks.RemovableHandle]] = {}  # site path -> (module, handle)
        self._chains: dict[str, list[nn.Module]] = {}  # site path -> active modules, in order
        self._dropout: dict[tuple[int, str], float] = {}  # backbone dropout rates switched off
        self._unsaved: set[str] = set()  # keys this bank added to the model's _keys_to_ignore_on_save
        self.router = None  # a routing.RowRouter during a per-row routed forward
        self.composer: Callable | None = None  # a registered composition's composer (None: stack/parallel)
        self.fusions = nn.ModuleDict()  # fusion name -> group id -> fusion layer (adapterkit.compose.fusion)
        self.fusion_specs: dict[str, object] = {}
        self.drop_layers = 0  # AdapterDrop: sites in layers below this pass unchanged (adapterkit.compose.drop)
        self.site_layers: dict[str, int] = {}  # site path -> layer index within its stack
        self.row_drop: dict[str, int] = {}  # adapter -> its own AdapterDrop k in routed forwards (serving)

    # --- adapters -------------------------------------------------------------------------------
    def require(self, name: str) -> None:
        if name not in self.adapters:
            known = ", ".join(self.adapters) or "none"
            raise AdapterkitError(f"no adapter named {name!r} (adapters on this model: {known})")

    def add(self, name: str, config: BottleneckConfig, plan: SharingPlan, modules: nn.ModuleDict) -> None:
        if name in self.adapters:
            raise AdapterkitError(f"model already has an adapter named {name!r}")
        self.adapters[name] = modules
        self.configs[name], self.plans[name] = config, plan

    def remove(self, name: str) -> None:
        """Drop adapter `name`, deactivate it and unhook the sites no other adapter uses."""
        self.require(name)
        del self.adapters[name]
        del self.configs[name], self.plans[name]
        self.row_drop.pop(name, None)
        self.activate([a for a in self.active if a != name], self.composition)
        used = {site.path for plan in self.plans.values() for site in plan.sites}
        for path in [p for p in self._hooks if p not in used]:
            module, handle = self._hooks.pop(path)
            handle.remove()
            _HOOKED.get(module, set()).discard(self)

    def activate(self, names: list[str], composition: str = "stack", composer: Callable | None = None) -> None:
        """A registered composition comes with its `composer` (see set_active); re-activating
        without one (an adapter added or removed) falls back to "stack"."""
        if composition not in COMPOSITIONS and composer is None:
            if composition in _COMPOSERS:
                composition = "stack"
            else:
                known = ", ".join([*COMPOSITIONS, *_COMPOSERS])
                raise AdapterkitError(f"composition must be one of {known}; got {composition!r}")
        for name in names:
            self.require(name)
        close = getattr(self.composer, "close", None)
        if close is not None:
            close()
        self.active, self.composition, self.composer = list(names), composition, composer
        self.rebuild_chains()

    @contextlib.contextmanager
    def activated(self, names: list[str], composition: str = "stack") -> Iterator[None]:
        """`names` active ("stack" or "parallel") inside the block; the active set, composition and
        composer that were there come back on exit, also after an error (the composer is set
        aside, not closed, so a registered composition survives the block)."""
        if composition not in COMPOSITIONS:
            raise AdapterkitError(f"a temporary activation is 'stack' or 'parallel'; got {composition!r}")
        for name in names:
            self.require(name)
        saved = self.active, self.composition, self.composer
        self.active, self.composition, self.composer = list(names), composition, None
        self.rebuild_chains()
        try:
            yield
        finally:
            self.active, self.composition, self.composer = saved
            self.rebuild_chains()

    def rebuild_chains(self) -> None:
        self._chains = {}
        for name in self.active:
            route = self.plans[name].group_of()
            for path, gid in route.items():
                self._chains.setdefault(path, []).append(self.adapters[name][gid])

    # --- forward --------------------------------------------------------------------------------
    def adapt_site(self, path: str, output):
        """The site's output passed through the active adapters for that site (stack or parallel)."""
        if self.router is not None:  # per-row adapters (adapterkit.routing)
            return self.router.apply(path, output)
        chain = self._chains.get(path)
        if not chain or self.site_layers[path] < self.drop_layers:
            return output
        h = output[0] if isinstance(output, tuple) else output
        if self.composer is not None:
            h = self.composer(path, h, chain)
        elif self.composition == "stack":
            for adapter in chain:
                h = adapter(h)
        else:  # parallel: h + sum_i (a_i(h) - h)
            h = h + sum(adapter(h) - h for adapter in chain)
        return (h, *output[1:]) if isinstance(output, tuple) else h

    def hook_sites(self, model: nn.Module, sites: Iterable[Site]) -> None:
        """One forward hook per site path (idempotent)."""
        modules = dict(backbone_modules(model))
        for site in sites:
            self.site_layers[site.path] = site.layer
            if site.path not in self._hooks:
                self._hook(site.path, modules[site.path])

    def _hook(self, path: str, module: nn.Module) -> None:
        self._hooks[path] = (module, module.register_forward_hook(SiteHook(self, path)))
        _HOOKED.setdefault(module, weakref.WeakSet()).add(self)

    @contextlib.contextmanager
    def hooks_removed(self) -> Iterator[None]:
        """The backbone without this bank's hooks for the duration (re-registered on exit)."""
        hooked = {path: module for path, (module, _) in self._hooks.items()}
        for path, (module, handle) in list(self._hooks.items()):
            handle.remove()
            _HOOKED.get(module, set()).discard(self)
        self._hooks = {}
        try:
            yield
        finally:
            for path, module in hooked.items():
                self._hook(path, module)

    # --- training switches ----------------------------------------------------------------------
    def set_backbone_dropout(self, base: nn.Module, enabled: bool) -> None:
        """Switch dropout inside `base` off (rates remembered) or back to the original rates."""
        for module in base.modules():
            if isinstance(module, AdapterBank):
                continue
            for attr in ("p", "attention_dropout"):
                value = getattr(module, attr, None)
                if (attr == "p" and not isinstance(module, nn.Dropout)) or not isinstance(value, float):
                    continue
                key = (id(module), attr)
                if enabled and key in self._dropout:
                    setattr(module, attr, self._dropout.pop(key))
                elif not enabled and value > 0:
                    self._dropout.setdefault(key, value)
                    setattr(module, attr, 0.0)

    @property
    def saves_slim(self) -> bool:
        return bool(self._unsaved)

    def slim_saves(self, model: nn.Module, enabled: bool) -> None:
        """With `enabled`, `model.save_pretrained` leaves out every frozen tensor (transformers'
        documented `_keys_to_ignore_on_save`); off, the keys this bank added are taken out again."""
        ignore = getattr(model, "_keys_to_ignore_on_save", None)
        if not isinstance(ignore, set):  # not a transformers model (or an older one): nothing to do
            return
        ignore -= self._unsaved
        self._unsaved = set()
        if enabled:
            trainable = {n for n, p in model.named_parameters() if p.requires_grad}
            self._unsaved = {k for k in model.state_dict() if k not in trainable and k not in ignore}
            ignore |= self._unsaved


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
    bank.add(name, config, plan, modules.to(device=device, dtype=dtype))
    bank.hook_sites(model, plan.sites)
    if activate:
        bank.activate([*bank.active, name], bank.composition)
    return plan


def remove_adapter(model: nn.Module, name: str) -> None:
    bank = get_bank(model)
    bank.remove(name)
    if not bank.adapters:
        bank.set_backbone_dropout(getattr(model, "base_model", model), True)
        bank.slim_saves(model, False)
        delattr(model, BANK)


def set_active(model: nn.Module, names: str | Iterable[str], composition: str = "stack", **options) -> None:
    """Activate adapters in order: with "stack" one adapter's output feeds the next; with
    "parallel" their residual updates are summed; "average" (weights=...), "split" (splits=...
    or segments=True) and "fusion" (fusion=NAME) are in adapterkit.compose. An empty list runs
    the bare backbone. Adding or removing an adapter later resets those three to "stack"."""
    names = [names] if isinstance(names, str) else list(names)
    bank = get_bank(model)
    composer = None
    if composition not in COMPOSITIONS:
        importlib.import_module(BUILTIN_COMPOSITIONS)  # a plugin, loaded by name: it builds on this module

        if composition in _COMPOSERS:
            for name in names:
                bank.require(name)
            composer = _COMPOSERS[composition](model, bank, names, **options)
    elif options:
        raise AdapterkitError(f"composition {composition!r} takes no options, got {sorted(options)}")
    bank.activate(names, composition, composer)


def active_adapters(model: nn.Module) -> list[str]:
    bank = getattr(model, BANK, None)
    return list(bank.active) if isinstance(bank, AdapterBank) else []


def list_adapters(model: nn.Module) -> list[str]:
    bank = getattr(model, BANK, None)
    return list(bank.adapters) if isinstance(bank, AdapterBank) else []


def adapter_config(model: nn.Module, name: str) -> BottleneckConfig:
    bank = get_bank(model)
    bank.require(name)
    return bank.configs[name]


def adapter_plan(model: nn.Module, name: str) -> SharingPlan:
    bank = get_bank(model)
    bank.require(name)
    return bank.plans[name]


def adapter_parameters(model: nn.Module, name: str) -> dict[str, nn.Parameter]:
    """The distinct parameters of adapter `name` by their model-level names (shared ones once),
    plus the layer norms it trains when its config has train_layer_norms."""
    bank = get_bank(model)
    bank.require(name)
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
    return {n: p for n, p in backbone_parameters(model) if id(p) not in base_ids}


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
    and the head, and `load_best_model_at_end` restores them into the frozen backbone. This uses
    transformers' own `_keys_to_ignore_on_save` list (no method is replaced); `full_saves(model)`
    (a context) or remove_adapter takes the frozen keys out of it again.
    """
    names = [names] if isinstance(names, str) else list(names)
    set_active(model, names)
    params = [p for name in names for p in adapter_parameters(model, name).values()]
    train_only(model, params + (list(head_parameters(model).values()) if train_head else []), backbone_dropout)


def train_only(model: nn.Module, params: Iterable[nn.Parameter], backbone_dropout: bool = False) -> None:
    """Freeze every parameter of `model` except `params`; backbone dropout and slim saves as in train_adapter."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    set_backbone_dropout(model, backbone_dropout)
    get_bank(model).slim_saves(model, True)


@contextlib.contextmanager
def full_saves(model: nn.Module) -> Iterator[nn.Module]:
    """`model.save_pretrained` writes every tensor inside this block, also after train_adapter."""
    bank = getattr(model, BANK, None)
    slim = isinstance(bank, AdapterBank) and bank.saves_slim
    if slim:
        bank.slim_saves(model, False)
    try:
        yield model
    finally:
        if slim:
            bank.slim_saves(model, True)


def set_backbone_dropout(model: nn.Module, enabled: bool) -> None:
    """Switch dropout inside `model.base_model` off (rates remembered) or back to the original rates."""
    get_bank(model).set_backbone_dropout(getattr(model, "base_model", model), enabled)


@contextlib.contextmanager
def detached_hooks(module: nn.Module) -> Iterator[nn.Module]:
    """`module` (any part of a model) without adapterkit's site hooks for the duration, e.g. to
    deep-copy a layer of a model with adapters; other hooks are left alone."""
    banks = {id(b): b for m in module.modules() for b in list(_HOOKED.get(m, ()))}
    with contextlib.ExitStack() as stack:
        for bank in banks.values():
            stack.enter_context(bank.hooks_removed())
        yield module


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


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32

