"""`adapterkit plan`: where adapters would go in a model, and how many parameters they add."""
from __future__ import annotations

import typer

from adapterkit.cli import options as opt


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)


def plan(
    model: opt.ModelOpt = None,
    sharing: opt.SharingOpt = "1",
    bottleneck: opt.BottleneckOpt = None,
    reduction_factor: opt.ReductionOpt = None,
    placement: opt.PlacementOpt = "houlsby",
    layers: opt.LayersOpt = "all",
    leave_out: opt.LeaveOutOpt = "",
    train_layer_norms: opt.LayerNormOpt = False,
) -> None:
    """Print the layers, sites and sharing groups of an adapter on a model (no weights needed)."""
    from adapterkit import backbone
    from adapterkit.model import add_adapter, count_parameters

    config = opt.adapter_config(sharing, bottleneck, reduction_factor, placement, layers, leave_out, train_layer_norms)
    skeleton = backbone.skeleton_from_config(backbone.load_config(model))
    sharing_plan = add_adapter(skeleton, "plan", config)
    typer.echo(f"model: {type(skeleton).__name__} ({model or backbone.DEFAULT_MODEL})")
    typer.echo(f"sharing: {config.sharing}   placement: {config.placement}   bottleneck: {config.bottleneck_for(sharing_plan.sites[0].hidden)}")
    for gid, sites in sharing_plan.groups.items():
        layer_ids = sorted({s.layer for s in sites})
        kinds = sorted({s.kind for s in sites})
        typer.echo(f"  {gid:<14} layers {_ranges(layer_ids):<10} sites {'+'.join(kinds):<9} ({len(sites)} sites)")
    typer.echo(f"groups: {len(sharing_plan.groups)}   sites: {len(sharing_plan.sites)}")
    typer.echo(f"adapter parameters: {count_parameters(skeleton, 'plan')}")


def _ranges(ids: list[int]) -> str:
    if ids == list(range(ids[0], ids[-1] + 1)) and len(ids) > 1:
        return f"{ids[0]}-{ids[-1]}"
    return ",".join(map(str, ids))
