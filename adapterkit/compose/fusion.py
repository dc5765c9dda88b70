"""AdapterFusion on a model: attention over trained adapters at every site they adapt.

    ak.load_adapter(model, "runs/cola"); ak.load_adapter(model, "runs/sst2")   # stage 1: trained adapters
    add_fusion(model, "glue", ["cola", "sst2"], FusionConfig(sharing=3))
    train_fusion(model, "glue")          # stage 2: only the fusion layers and the head train

The fused adapters may differ in sharing plans, sizes and placements: the fusion covers the
union of their sites, and at each site attends over the adapters present there (see
fusion_layer.py for the layer). Fusion layers are grouped by their own sharing plan
(FusionConfig.sharing), built like an adapter's over those sites; a fusion layer shared by
several sites is one module, stored once. The fusion's layers live in the adapter bank
(`adapterkit.fusions.<name>.<group>.*`), so state_dict, .to() and functional_call see them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adapterkit.compose.fusion_layer import FusionConfig, FusionLayer
from adapterkit.config import BottleneckConfig
from adapterkit.errors import AdapterkitError
from adapterkit.model import get_bank, head_parameters, register_composition, set_active, train_only
from adapterkit.sharing import SharingPlan, make_plan
from adapterkit.sharing.sites import Site


@dataclass(frozen=True)
class FusionSpec:
    adapters: tuple[str, ...]
    config: FusionConfig
    plan: SharingPlan


def fusion_plan(bank, adapters: list[str], config: FusionConfig) -> SharingPlan:
    """Fusion-layer groups over the union of the adapters' sites, by the fusion's sharing plan."""
    union: dict[str, Site] = {}
    for name in adapters:
        for site in bank.plans[name].sites:
            union.setdefault(site.path, site)
    sites = sorted(union.values(), key=lambda s: (s.stack, s.layer, s.kind != "attn"))
    layers: dict[tuple[int, int], set[str]] = {}
    for s in sites:
        layers.setdefault((s.stack, s.layer), set()).add(s.kind)
    # Houlsby grouping when every fused layer has both sites; else only the feed-forward sites
    # (an attention site then runs its single adapter, see _Fuse)
    both = all(kinds == {"attn", "ffn"} for kinds in layers.values())
    grouping = BottleneckConfig(sharing=config.sharing, share_sites=config.share_sites,
                                placement="houlsby" if both else "pfeiffer")
    return make_plan(sites, grouping)


def add_fusion(model: nn.Module, name: str, adapters: list[str], config: FusionConfig | None = None,
               activate: bool = True) -> SharingPlan:
    """Add fusion `name` over the adapters `adapters` (already on the model); returns its plan."""
    config = config or FusionConfig()
    bank = get_bank(model)
    adapters = list(adapters)
    if not name.isidentifier():
        raise AdapterkitError(f"fusion name must be a Python identifier, got {name!r}")
    if name in bank.fusions:
        raise AdapterkitError(f"model already has a fusion named {name!r}")
    if len(set(adapters)) != len(adapters) or not adapters:
        raise AdapterkitError(f"a fusion needs distinct adapters, got {adapters}")
    for adapter in adapters:
        bank.require(adapter)
    plan = fusion_plan(bank, adapters, config)
    ref = next(p for p in model.parameters() if p.is_floating_point())
    layers = nn.ModuleDict({gid: FusionLayer(sites[0].hidden, config.temperature, config.query_init_std)
                            for gid, sites in plan.groups.items()})
    bank.fusions[name] = layers.to(device=ref.device, dtype=ref.dtype)
    bank.fusion_specs[name] = FusionSpec(tuple(adapters), config, plan)
    if activate:
        activate_fusion(model, name)
    return plan


def remove_fusion(model: nn.Module, name: str) -> None:
    bank = get_bank(model)
    spec = _require(bank, name)
    if isinstance(bank.composer, _Fuse) and bank.composer.name == name:
        set_active(model, list(spec.adapters))
    del bank.fusions[name], bank.fusion_specs[name]


def activate_fusion(model: nn.Module, name: str) -> None:
    spec = _require(get_bank(model), name)
    set_active(model, list(spec.adapters), composition="fusion", fusion=name)


def fusion_parameters(model: nn.Module, name: str) -> dict[str, nn.Parameter]:
    """The distinct parameters of fusion `name` by model-level names (shared layers once)."""
    bank = get_bank(model)
    _require(bank, name)
    return {f"adapterkit.fusions.{name}.{n}": p for n, p in bank.fusions[name].named_parameters()}


def count_fusion_parameters(model: nn.Module, name: str) -> int:
    return sum(p.numel() for p in fusion_parameters(model, name).values())


def train_fusion(model: nn.Module, name: str, train_head: bool = True) -> None:
    """Freeze everything (backbone and the fused adapters) except fusion `name` and the head,
    and activate the fusion (stage 2 of AdapterFusion)."""
    activate_fusion(model, name)
    params = list(fusion_parameters(model, name).values())
    if train_head:
        params += list(head_parameters(model).values())
    train_only(model, params)


def fusion_weights(model: nn.Module, name: str, inputs: dict) -> dict[str, torch.Tensor]:
    """Attention over adapters at every fused site for one forward of `inputs`: site path -> (..., N)."""
    activate_fusion(model, name)
    fuse = get_bank(model).composer
    fuse.record = {}
    try:
        with torch.no_grad():
            model(**inputs)
        return fuse.record
    finally:
        fuse.record = None


class _Fuse:
    """The "fusion" composition: per site, the fusion layer over the chain's adapter outputs."""

    def __init__(self, name: str, layers: dict[str, FusionLayer]):
        self.name, self.layers, self.record = name, layers, None
        self.options = {"fusion": name}

    def __call__(self, path: str, h: torch.Tensor, chain: list[nn.Module]) -> torch.Tensor:
        layer = self.layers.get(path)
        outputs = [adapter(h) for adapter in chain]
        if layer is None:  # an attention site of mixed placements: its single adapter
            return outputs[0]
        if self.record is not None:
            with torch.no_grad():
                self.record[path] = layer.weights(h, torch.stack(outputs, dim=-2))
        return layer(h, outputs)


@register_composition("fusion")
def fusion(model: nn.Module, bank, names: list[str], fusion: str | None = None) -> _Fuse:
    if fusion is None:
        matches = [n for n, s in bank.fusion_specs.items() if list(s.adapters) == names]
        if len(matches) != 1:
            raise AdapterkitError(f"composition='fusion': {'several fusions' if matches else 'no fusion'} over "
                                  f"{names}; pass fusion=NAME (fusions on this model: {', '.join(bank.fusion_specs) or 'none'})")
        fusion = matches[0]
    spec = _require(bank, fusion)
    if list(spec.adapters) != names:
        raise AdapterkitError(f"fusion {fusion!r} fuses {list(spec.adapters)}, not {names}")
    route = spec.plan.group_of()
    return _Fuse(fusion, {path: bank.fusions[fusion][gid] for path, gid in route.items()})


def _require(bank, name: str) -> FusionSpec:
    if name not in bank.fusion_specs:
        raise AdapterkitError(f"no fusion named {name!r} (fusions on this model: {', '.join(bank.fusion_specs) or 'none'})")
    return bank.fusion_specs[name]
