"""`adapterkit fuse` (train a fusion, average or split of saved adapters on a task) and
`adapterkit merge` (one adapter from several adapters' weights): thin wrappers over
adapterkit.compose and adapterkit.training."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from adapterkit.cli import options as opt
from adapterkit.errors import AdapterkitError


def register(app: typer.Typer) -> None:
    app.command("fuse")(fuse)
    app.command("merge")(merge)


AdaptersOpt = Annotated[str, typer.Option("--adapters", help="Comma-separated saved adapters: folders or hub:REPO[:TAG].")]


def fuse(
    adapters: AdaptersOpt,
    task: Annotated[str, typer.Option("--task", help="GLUE task to train the combination on: cola, sst2, mrpc, rte, ...")],
    composition: Annotated[str, typer.Option("--composition", help="fusion: AdapterFusion layers + head; average: head over the averaged outputs; split: head over adapter i on span i.")] = "fusion",
    fusion_sharing: Annotated[str, typer.Option("--fusion-sharing", help="Layers per shared fusion layer: N, 'all' or 'none' (each fusion layer has 3d^2+2d parameters).")] = "1",
    temperature: Annotated[float, typer.Option("--temperature", help="Fusion softmax temperature (> 1: flatter weights over adapters).")] = 1.0,
    weights: Annotated[Optional[str], typer.Option("--weights", help="average: comma-separated weights, one per adapter (default: equal).")] = None,
    splits: Annotated[Optional[str], typer.Option("--splits", help="split: token positions where the next adapter takes over, e.g. 64.")] = None,
    segments: Annotated[bool, typer.Option("--segments", help="split: adapter i on segment i (token_type_ids: the two sentences of a pair).")] = False,
    model: opt.ModelOpt = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training set.")] = 3,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many optimizer steps.")] = None,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate of the fusion layers and the head.")] = 1e-3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size.")] = 32,
    max_seq_len: Annotated[int, typer.Option("--max-seq-len", help="Longest input in tokens.")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 42,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="Folder with GLUE-layout task folders.")] = None,
    output: Annotated[Optional[str], typer.Option("--output", help="Output folder. Default: runs/<task>-<composition>-s<seed>.")] = None,
    drop_layers: Annotated[int, typer.Option("--drop-layers", help="AdapterDrop: no adapters (nor fusion) in the lowest k layers.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Train a combination of saved adapters on a task: only the fusion layers (or nothing) and a
    new head train; the adapters stay frozen. `adapterkit eval --adapter OUTPUT` scores it."""
    from adapterkit.cli.train import _print_summary
    from adapterkit.config import check_number, parse_sharing
    from adapterkit.training import TrainConfig
    from adapterkit.training import train as run_training

    for flag, value, wanted in (("--weights", weights, "average"), ("--splits", splits, "split")):
        if value and composition != wanted:
            raise AdapterkitError(f"{flag} is for --composition {wanted}, not {composition!r}")
    check_number("--drop-layers", drop_layers, minimum=0, integer=True)
    combine = {"adapters": _list(adapters), "composition": composition,
               "fusion": {"sharing": parse_sharing(fusion_sharing), "temperature": temperature},
               "weights": _numbers(weights, "--weights") if weights else None,
               "splits": _numbers(splits, "--splits", integer=True) if splits else None, "segments": segments}
    cfg = TrainConfig(task=task, model=model, epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size,
                      max_seq_len=max_seq_len, seed=seed, data_dir=data_dir,
                      output=output or f"runs/{task}-{composition}-s{seed}", combine=combine, drop_layers=drop_layers)
    metrics = run_training(cfg, progress=not quiet)
    _print_summary(metrics, cfg.output)


def merge(
    adapters: AdaptersOpt,
    output: Annotated[str, typer.Option("--output", help="Folder for the merged adapter.")],
    method: Annotated[str, typer.Option("--method", help="linear (weighted sum), ties (trim, elect sign, disjoint mean) or dare (random drop and rescale, then linear).")] = "linear",
    weights: Annotated[Optional[str], typer.Option("--weights", help="Comma-separated, one per adapter; negative subtracts. Default: 1/N (linear, dare), 1 (ties).")] = None,
    density: Annotated[float, typer.Option("--density", help="ties: fraction of largest-magnitude entries each adapter keeps.")] = 1.0,
    drop: Annotated[float, typer.Option("--drop", help="dare: probability of dropping an entry.")] = 0.0,
    name: Annotated[str, typer.Option("--name", help="Name of the merged adapter.")] = "merged",
    model: opt.ModelOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (dare).")] = 0,
    overwrite: opt.OverwriteOpt = False,
) -> None:
    """Merge saved adapters with one architecture (config and sharing plan) into one adapter."""
    from pathlib import Path

    from adapterkit import backbone
    from adapterkit.compose.merge import merge_adapters
    from adapterkit.compose.setup import load_sources
    from adapterkit.io import read_manifest, save_adapter
    from adapterkit.io.files import check_output

    sources = _list(adapters)
    if weights:
        _numbers(weights, "--weights")  # before the model is loaded
    check_output(output, overwrite, inputs=[s for s in sources if not s.startswith("hub:")], folder=True)
    base = model
    if base is None and not sources[0].startswith("hub:"):
        base = read_manifest(Path(sources[0]))["base_model"].get("name_or_path")
    net = backbone.load_model(base)
    names = load_sources(net, sources)
    merge_adapters(net, names, name, weights=_numbers(weights, "--weights") if weights else None,
                   method=method, density=density, drop=drop, seed=seed)
    save_adapter(net, name, output, include_head=False)
    typer.echo(f"merged {', '.join(names)} ({method}) into {output}")


def _numbers(text: str, flag: str, integer: bool = False) -> list:
    """Comma-separated finite numbers (integers >= 1 when `integer`); anything else one clear error."""
    from adapterkit.config import check_number

    out = []
    for part in _list(text):
        try:
            value = int(part) if integer else float(part)
        except ValueError:
            raise AdapterkitError(f"{flag}: {part!r} is not a number") from None
        out.append(check_number(flag, value, minimum=1 if integer else None, integer=integer))
    return out


def _list(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]
