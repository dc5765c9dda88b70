"""Sharing plans: which adapter sites share one module object.

A plan maps every selected site to a group id; one adapter module is built per group and
referenced from all of its sites, so its gradient sums over them.

  sharing=N     N consecutive adapted layers of a stack share one module (1 = per layer,
                3 = "3-shared"); with share_sites the attn and ffn sites of those layers
                share it too (the reference report's choice), else each site kind has its own;
  sharing="all" one module per stack (per site kind without share_sites);
  sharing="none" every site has its own module.
"""
from __future__ import annotations

from dataclasses import dataclass

from adapterkit.config import BottleneckConfig
from adapterkit.errors import AdapterkitError
from adapterkit.sharing.sites import Site


@dataclass(frozen=True)
class SharingPlan:
    groups: dict[str, tuple[Site, ...]]  # group id -> sites, in model order

    def group_of(self) -> dict[str, str]:
        """site path -> group id"""
        return {site.path: gid for gid, sites in self.groups.items() for site in sites}

    @property
    def sites(self) -> list[Site]:
        return [site for sites in self.groups.values() for site in sites]


def select_layers(n_layers: int, config: BottleneckConfig) -> list[int]:
    """Indices of the adapted layers of a stack with n_layers layers."""
    if config.layers is not None:
        bad = [i for i in config.layers if not -n_layers <= i < n_layers]
        if bad:
            raise AdapterkitError(f"layers {bad} out of range for a stack of {n_layers} layers")
        chosen = sorted({i % n_layers for i in config.layers})
    elif config.top_n is not None:
        chosen = list(range(max(0, n_layers - config.top_n), n_layers))
    else:
        chosen = list(range(n_layers))
    leave_out = {i % n_layers for i in config.leave_out}
    return [i for i in chosen if i not in leave_out]


def make_plan(sites: list[Site], config: BottleneckConfig) -> SharingPlan:
    kinds = config.site_kinds()
    missing = _missing_kinds(sites, kinds)
    if missing:
        raise AdapterkitError(
            f"no {missing} site found in some layers; use placement='pfeiffer' or give targets "
            f"(regexes for 'attn'/'ffn' module names)"
        )
    groups: dict[str, list[Site]] = {}
    n_stacks = max(s.stack for s in sites) + 1
    for stack in range(n_stacks):
        stack_sites = [s for s in sites if s.stack == stack and s.kind in kinds]
        n_layers = max(s.layer for s in sites if s.stack == stack) + 1
        rank = {layer: r for r, layer in enumerate(select_layers(n_layers, config))}
        for site in stack_sites:
            if site.layer in rank:
                gid = _group_id(site, rank[site.layer], config, n_stacks)
                groups.setdefault(gid, []).append(site)
    if not groups:
        raise AdapterkitError("the layer selection leaves no layer to adapt")
    for gid, members in groups.items():
        widths = {s.hidden for s in members}
        if len(widths) > 1:
            raise AdapterkitError(f"sites sharing group {gid} have different widths {sorted(widths)}")
    return SharingPlan({gid: tuple(members) for gid, members in groups.items()})


def _group_id(site: Site, rank: int, config: BottleneckConfig, n_stacks: int) -> str:
    prefix = f"s{site.stack}_" if n_stacks > 1 else ""
    suffix = "" if config.share_sites else f"_{site.kind}"
    if config.sharing == "none":
        return f"{prefix}L{site.layer}_{site.kind}"
    if config.sharing == "all":
        return f"{prefix}all{suffix}"
    first = rank - rank % config.sharing  # first rank of this group among selected layers
    return f"{prefix}G{first // config.sharing}{suffix}"


def _missing_kinds(sites: list[Site], kinds: tuple[str, ...]) -> str | None:
    per_layer: dict[tuple[int, int], set[str]] = {}
    for s in sites:
        per_layer.setdefault((s.stack, s.layer), set()).add(s.kind)
    if not per_layer:
        return "attn or ffn"
    for kind in kinds:
        if any(kind not in found for found in per_layer.values()):
            return kind
    return None
