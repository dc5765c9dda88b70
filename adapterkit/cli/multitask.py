"""`adapterkit multitask build/add/remove/predict/info`: the flexible multi-task model (thin
wrappers over adapterkit.multitask.train and .io)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from adapterkit.cli import options as opt

multitask_app = typer.Typer(help="One frozen trunk, one branch per task: build, add, remove, predict.",
                            no_args_is_help=True)

Budget = Annotated[str, typer.Option("--budget", help="Branch per task: kd1, kd2, kd3 (distilled layers), teacher (no KD), mixed (growth rule with --c), adapter (--sharing/--bottleneck/--reduction-factor, --branch-layer).")]
C = Annotated[float, typer.Option("--c", help="mixed: add a task layer only if it gains at least this many dev points (0-100 scale) per layer.")]
NMin = Annotated[int, typer.Option("--n-min", help="Fewest fine-tuned top layers L tried per task.")]
NMax = Annotated[int, typer.Option("--n-max", help="Most fine-tuned top layers L tried per task.")]
Epochs = Annotated[int, typer.Option("--epochs", help="Epochs of partial fine-tuning (and of the adapter variant).")]
KdEpochs = Annotated[int, typer.Option("--kd-epochs", help="Distillation epochs per student.")]
Lr = Annotated[float, typer.Option("--lr", help="Learning rate of partial fine-tuning (adapter variant: use ~1e-3).")]
KdLr = Annotated[float, typer.Option("--kd-lr", help="Learning rate of the students.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Batch size.")]
SeqLen = Annotated[int, typer.Option("--max-seq-len", help="Longest input in tokens.")]
TrainLimit = Annotated[Optional[int], typer.Option("--train-limit", help="Train on a seeded sample of this many rows per task.")]
DataDir = Annotated[Optional[str], typer.Option("--data-dir", help="Folder with GLUE-layout task folders.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
BundleOpt = Annotated[Optional[Path], typer.Option("--bundle", metavar="DIR", help="The merged multi-task model folder (from `multitask build`). Required.")]
LegacyBundleOpt = Annotated[Optional[Path], typer.Option("--model", hidden=True, help="Deprecated name of --bundle.")]
OldBottleneck = Annotated[Optional[int], typer.Option("--adapter-bottleneck", hidden=True, help="Old name of --bottleneck.")]
BranchLayer = Annotated[Optional[int], typer.Option("--branch-layer", help="Adapter variant: adapters only in layers >= this one.")]


def register(app: typer.Typer) -> None:
    app.add_typer(multitask_app, name="multitask")


def _config(tasks: list[str], model, budget, c, n_min, n_max, epochs, kd_epochs, lr, kd_lr, batch_size, max_seq_len,
            train_limit, data_dir, seed, shape: dict, branch_layer, precision="fp32"):
    from adapterkit.multitask.train import MultiTaskConfig

    return MultiTaskConfig(tasks=tasks, model=model, budget=budget, c=c, n_min=n_min, n_max=n_max, epochs=epochs,
                           kd_epochs=kd_epochs, lr=lr, kd_lr=kd_lr, batch_size=batch_size, max_seq_len=max_seq_len,
                           train_limit=train_limit, data_dir=data_dir, seed=seed,
                           adapter=shape if budget == "adapter" else None,
                           branch_layer=branch_layer, precision=precision)


@multitask_app.command("build")
def build(
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated GLUE tasks, e.g. cola,sst2,mrpc,rte.")],
    output: Annotated[Path, typer.Option("--output", help="Folder for the merged model and search.json.")],
    model: opt.ModelOpt = None, budget: Budget = "mixed", c: C = 1.0, n_min: NMin = 2, n_max: NMax = 5,
    epochs: Epochs = 3, kd_epochs: KdEpochs = 3, lr: Lr = 5e-5, kd_lr: KdLr = 1e-4, batch_size: BatchSize = 32,
    max_seq_len: SeqLen = 128, train_limit: TrainLimit = None, data_dir: DataDir = None, seed: Seed = 42,
    sharing: opt.SharingOpt = "1", bottleneck: opt.BottleneckOpt = None, reduction_factor: opt.ReductionOpt = None,
    adapter_bottleneck: OldBottleneck = None, branch_layer: BranchLayer = None, precision: opt.PrecisionOpt = "fp32", overwrite: opt.OverwriteOpt = False,
) -> None:
    """Partial fine-tuning search, distillation and merging for every task; saves the merged model."""
    from adapterkit.io.atomic import write_json
    from adapterkit.io.files import check_output
    from adapterkit.multitask.io import save_multitask
    from adapterkit.multitask.train import build_multitask

    cfg = _config([t for t in tasks.split(",") if t], model, budget, c, n_min, n_max, epochs, kd_epochs, lr, kd_lr,
                  batch_size, max_seq_len, train_limit, data_dir, seed,
                  opt.adapter_shape(sharing, bottleneck or adapter_bottleneck, reduction_factor), branch_layer, precision)
    check_output(output, overwrite, folder=True)
    merged, results, tokenizer = build_multitask(cfg, log=typer.echo)
    save_multitask(merged, output, tokenizer)
    write_json(output / "search.json", {"config": cfg.to_dict(), "tasks": [r.summary() for r in results]}, default=str)
    _print_overhead(merged)
    typer.echo(f"wrote {output}")


@multitask_app.command("add")
def add(
    task: Annotated[str, typer.Option("--task", help="GLUE task to train and add (or to update, with --replace).")],
    bundle: BundleOpt = None, model_dir: LegacyBundleOpt = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace the task's branch if it exists (an update).")] = False,
    budget: Budget = "mixed", c: C = 1.0, n_min: NMin = 2, n_max: NMax = 5, epochs: Epochs = 3, kd_epochs: KdEpochs = 3,
    lr: Lr = 5e-5, kd_lr: KdLr = 1e-4, batch_size: BatchSize = 32, max_seq_len: SeqLen = 128,
    train_limit: TrainLimit = None, data_dir: DataDir = None, seed: Seed = 42,
    sharing: opt.SharingOpt = "1", bottleneck: opt.BottleneckOpt = None, reduction_factor: opt.ReductionOpt = None,
    adapter_bottleneck: OldBottleneck = None, branch_layer: BranchLayer = None, precision: opt.PrecisionOpt = "fp32",
) -> None:
    """Train one task and add its branch; only that task's file and the manifest are rewritten."""
    from adapterkit.multitask.io import load_multitask, save_task
    from adapterkit.multitask.train import add_task

    model_dir = _bundle(bundle, model_dir)
    merged = load_multitask(model_dir)
    cfg = _config([task], merged.base_model_name, budget, c, n_min, n_max, epochs, kd_epochs, lr, kd_lr, batch_size,
                  max_seq_len, train_limit, data_dir, seed,
                  opt.adapter_shape(sharing, bottleneck or adapter_bottleneck, reduction_factor), branch_layer, precision)
    result = add_task(merged, task, cfg, replace=replace, log=typer.echo)
    save_task(merged, model_dir, task)
    typer.echo(f"added {task}: branch {result}")
    _print_overhead(merged)


@multitask_app.command("remove")
def remove(
    task: Annotated[str, typer.Option("--task", help="Task to remove.")],
    bundle: BundleOpt = None, model_dir: LegacyBundleOpt = None,
) -> None:
    """Remove a task's branch; the other tasks' files are untouched."""
    from adapterkit.multitask.io import delete_task, load_multitask

    model_dir = _bundle(bundle, model_dir)
    merged = load_multitask(model_dir)
    merged.remove(task)
    delete_task(merged, model_dir, task)
    typer.echo(f"removed {task}; tasks now: {', '.join(merged.tasks) or 'none'}")


@multitask_app.command("predict")
def predict(
    input: Annotated[Path, typer.Option("--input", help="JSONL or TSV rows: sentence (or sentence1/sentence2), optional 'task' (a name, or a list in JSONL).")],
    output: Annotated[Path, typer.Option("--output", help="JSONL file: per row, the predictions of its tasks.")],
    tasks: Annotated[Optional[str], typer.Option("--tasks", help="Tasks for rows without a 'task' field (default: all).")] = None,
    bundle: BundleOpt = None, model_dir: LegacyBundleOpt = None,
    max_seq_len: SeqLen = 128,
    batch_size: BatchSize = 64,
    overwrite: opt.OverwriteOpt = False,
    precision: opt.InferencePrecisionOpt = "fp32",
) -> None:
    """Run the trunk once per batch and each row's tasks' branches; write one JSON line per row."""
    from adapterkit import backbone
    from adapterkit.io.atomic import write_text
    from adapterkit.io.files import check_output
    from adapterkit.multitask.io import load_multitask, predict_file
    from adapterkit.precision import autocast_for

    check_output(output, overwrite, inputs=[input])
    model_dir = _bundle(bundle, model_dir)
    merged = load_multitask(model_dir)
    tokenizer = backbone.load_tokenizer(str(model_dir / "tokenizer") if (model_dir / "tokenizer").is_dir() else merged.base_model_name)
    default = [t for t in tasks.split(",") if t] if tasks else merged.tasks
    with autocast_for(precision, training=False, note=typer.echo):
        records = predict_file(merged, tokenizer, input, default, max_seq_len, batch_size)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text(output, "".join(json.dumps(r) + "\n" for r in records))
    typer.echo(f"wrote {len(records)} rows to {output}")


@multitask_app.command("info")
def info(bundle: BundleOpt = None, model_dir: LegacyBundleOpt = None) -> None:
    """Print the branches and the serving overhead."""
    from adapterkit.multitask.io import load_multitask
    from adapterkit.multitask.train import shown

    merged = load_multitask(_bundle(bundle, model_dir))
    for task, branch in merged.branches.items():
        score = branch.info.get("score")
        typer.echo(f"{task:<8} {branch.kind:<8} branch layer {branch.branch_layer}  task layers {branch.num_layers}"
                   + (f"  dev {shown(score)}" if isinstance(score, (int, float)) else ""))
    _print_overhead(merged)


def _bundle(bundle: Path | None, legacy: Path | None) -> Path:
    """The --bundle folder (`--model` still accepted here, with a note: elsewhere it names the backbone)."""
    from adapterkit.errors import AdapterkitError

    if legacy is not None:
        if bundle is not None:
            raise AdapterkitError("give --bundle only (--model is its deprecated name here)")
        typer.echo("note: --model is deprecated for the merged model folder; use --bundle", err=True)
        return legacy
    if bundle is None:
        raise AdapterkitError("missing --bundle DIR: the merged model folder from `adapterkit multitask build`")
    return bundle


def _print_overhead(merged) -> None:
    o = merged.overhead()
    typer.echo(f"transformer layers to serve {len(o['per_task'])} tasks: {o['total']} "
               f"({100 * o['fraction']:.1f}% of {o['separate']} for separate models); trunk {o['trunk']}")
