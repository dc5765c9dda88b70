"""Options shared by several commands, defined once, and their conversion to configs."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from adapterkit.errors import AdapterkitError

ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", help="Backbone: local folder, bare config.json, or hub name. Default: all-MiniLM-L6-v2 (bundled)."),
]
SharingOpt = Annotated[
    str, typer.Option("--sharing", help="Layers per shared adapter: N, 'all' (one per stack) or 'none' (one per site).")
]
BottleneckOpt = Annotated[
    Optional[int], typer.Option("--bottleneck", help="Bottleneck width m. Default 64 unless --reduction-factor is given.")
]
ReductionOpt = Annotated[
    Optional[float], typer.Option("--reduction-factor", help="Bottleneck width as hidden size / R (instead of --bottleneck).")
]
PlacementOpt = Annotated[
    str, typer.Option("--placement", help="houlsby: after attention and feed-forward; pfeiffer: after feed-forward only.")
]
LayersOpt = Annotated[
    str, typer.Option("--layers", help="Adapted layers: 'all', a list '0,1,5', or 'topN' for the top N layers.")
]
LeaveOutOpt = Annotated[str, typer.Option("--leave-out", help="Layers to leave without adapters, e.g. '0,1'.")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing output file or non-empty folder (refused by default).")
]
LayerNormOpt = Annotated[
    bool, typer.Option("--train-layer-norms", help="Also train the layer norms of adapted layers (changes the backbone's norms).")
]
PrecisionOpt = Annotated[
    str,
    typer.Option("--precision", help="fp32, bf16 or fp16: the forward runs under autocast, trained weights stay fp32 "
                 "(fp16 adds loss scaling on CUDA). bf16 needs a GPU with bf16 or a CPU with avx512_bf16/AMX; "
                 "elsewhere training refuses it. Saved with the run."),
]
RunPrecisionOpt = Annotated[
    Optional[str],
    typer.Option("--precision", help="fp32, bf16 or fp16. Default: the run's (run_config.json); where this machine "
                 "lacks it, fp32 with a note."),
]
InferencePrecisionOpt = Annotated[
    str,
    typer.Option("--precision", help="fp32, bf16 or fp16: the model runs under autocast. Where this machine lacks "
                 "the format natively, fp32 with a note."),
]
BackboneDtypeOpt = Annotated[
    str,
    typer.Option("--backbone-dtype", help="fp32, or bf16: store the frozen backbone's weights in bf16 (half the "
                 "memory; needs --precision bf16; adapters and head stay fp32)."),
]

GradientCheckpointingOpt = Annotated[
    bool, typer.Option("--gradient-checkpointing", help="Recompute layer activations in the backward pass instead of "
                       "keeping them: less memory for long inputs, slower steps. Off by default.")
]
TrunkCacheOpt = Annotated[
    bool, typer.Option("--trunk-cache", help="When adapters start at layer k > 0 (--layers topN, --leave-out): compute "
                       "the frozen layers below k once per example (first epoch) and reuse them; same results in fp32, "
                       "later epochs run only layers >= k. Needs the backbone's dropout off (the default).")
]
TrunkCacheMbOpt = Annotated[
    float, typer.Option("--trunk-cache-mb", help="Memory for --trunk-cache states; beyond it they go to a file in "
                        "OUTPUT/trunk-cache/ (removed at the end).")
]
CompileOpt = Annotated[
    bool, typer.Option("--compile", help="torch.compile the model's forward and backward (pays a compile time first; "
                       "see benchmarks/README.md for when it pays back). Off by default.")
]


def adapter_shape(sharing: str = "1", bottleneck: int | None = None, reduction_factor: float | None = None) -> dict:
    """--sharing/--bottleneck/--reduction-factor (the option group every command that creates
    adapters takes) as keyword arguments: sharing, bottleneck_dim, reduction_factor."""
    from adapterkit.config import BottleneckConfig

    config = BottleneckConfig(bottleneck_dim=bottleneck, reduction_factor=reduction_factor, sharing=sharing)
    return {"sharing": config.sharing, "bottleneck_dim": config.bottleneck_dim, "reduction_factor": config.reduction_factor}


def adapter_config(
    sharing: str = "1",
    bottleneck: int | None = None,
    reduction_factor: float | None = None,
    placement: str = "houlsby",
    layers: str = "all",
    leave_out: str = "",
    train_layer_norms: bool = False,
):
    from adapterkit.config import BottleneckConfig

    layer_list, top_n = parse_layers(layers)
    return BottleneckConfig(
        bottleneck_dim=bottleneck,
        reduction_factor=reduction_factor,
        sharing=sharing,
        placement=placement,
        layers=layer_list,
        top_n=top_n,
        leave_out=_int_list(leave_out, "--leave-out") if leave_out else [],
        train_layer_norms=train_layer_norms,
    )


def parse_layers(text: str) -> tuple[list[int] | None, int | None]:
    text = text.strip().lower()
    if text in ("", "all"):
        return None, None
    if text.startswith("top"):
        number = text[3:].lstrip(":-")
        if not number.isdigit() or int(number) < 1:
            raise AdapterkitError(f"--layers {text!r}: expected topN with N >= 1, e.g. top4")
        return None, int(number)
    return _int_list(text, "--layers"), None


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise AdapterkitError(f"{flag} {text!r}: expected 'all', 'topN' or comma-separated layer indices") from None
