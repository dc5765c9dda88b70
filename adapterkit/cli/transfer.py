"""`adapterkit transfer run ALGORITHM ...` and `adapterkit transfer list`."""
from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from adapterkit.cli import options as opt

transfer_app = typer.Typer(help="Transfer-learning algorithms built on adapters.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(transfer_app, name="transfer")


@transfer_app.command("list")
def list_algorithms() -> None:
    """List the registered transfer algorithms."""
    from adapterkit.transfer.registry import ALGORITHMS, load_builtin_algorithms

    load_builtin_algorithms()
    for name, fn in sorted(ALGORITHMS.items()):
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        typer.echo(f"{name:<14} {summary}")


@transfer_app.command("run")
def run(
    algorithm: Annotated[str, typer.Argument(metavar="ALGORITHM", help="Algorithm name (see `adapterkit transfer list`).")],
    target: Annotated[str, typer.Option("--target", help="Target domain: books, dvd, electronics, kitchen, sst2, or one from --domain-file; metaft, metadtl, reptile and fomaml also take GLUE tasks (cola, mrpc, rte, ...).")],
    source: Annotated[str, typer.Option("--source", help="Comma-separated source domains (or GLUE tasks, for the meta-learning algorithms).")] = "",
    target_shots: Annotated[Optional[int], typer.Option("--target-shots", help="Labelled target training rows (balanced); default all.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Backbone. Default: bundled all-MiniLM-L6-v2.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 42,
    output: Annotated[Optional[str], typer.Option("--output", help="Folder for results.json and trained adapters.")] = None,
    max_seq_len: Annotated[int, typer.Option("--max-seq-len", help="Longest input in tokens.")] = 128,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training data.")] = 3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size.")] = 32,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 1e-3,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="Folder with the Amazon review files (or GLUE for sst2).")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", metavar="KEY=VALUE", help="Algorithm setting KEY=VALUE (JSON value), repeatable.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny sizes for a smoke run.")] = False,
    domain_file: Annotated[Optional[list[str]], typer.Option("--domain-file", metavar="FILE", help="Your own labelled domains: a TSV/JSONL file with text, label and domain columns (repeatable); each domain is split 70/10/20 into train/dev/test.")] = None,
    precision: opt.PrecisionOpt = "fp32",
) -> None:
    """Run one transfer algorithm and print its target-domain test metrics."""
    from adapterkit.data import add_domain_file
    from adapterkit.transfer.registry import TransferSpec, run_algorithm

    for path in domain_file or []:
        typer.echo(f"{path}: domains {', '.join(add_domain_file(path))}")

    spec = TransferSpec(source=[s for s in source.split(",") if s], target=target, target_shots=target_shots,
                        model=model, seed=seed, output=output, max_seq_len=max_seq_len, epochs=epochs,
                        batch_size=batch_size, lr=lr, quick=quick, data_dir=data_dir, options=_options(option or []),
                        precision=precision)
    result = run_algorithm(algorithm, spec)
    test = result.get("test", {})
    typer.echo(f"{algorithm}: " + "  ".join(f"{k} {v:.4f}" for k, v in test.items()) + f"  ({result['seconds']:.0f} s)")
    if output:
        typer.echo(f"results: {output}/results.json")


def _options(pairs: list[str]) -> dict:
    from adapterkit.errors import AdapterkitError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AdapterkitError(f"--option {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
