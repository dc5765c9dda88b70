"""`adapterkit distill`: compress a teacher into a shallower student (thin wrapper over
adapterkit.transfer.distill)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from adapterkit.cli import options as opt


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)


def distill(
    student_layers: Annotated[int, typer.Option("--student-layers", help="Layers of the student, initialised from the teacher's bottom layers.")],
    output: Annotated[Path, typer.Option("--output", help="Folder for the student (model/, adapters/, tokenizer/) and metrics.json.")],
    teacher: Annotated[Optional[Path], typer.Option("--teacher", metavar="DIR", help="Required (except with --method metakd): an `adapterkit train` output folder or a distilled student. With --method metakd it is optional: a meta-teacher folder from an earlier run, else one is trained.")] = None,
    method: Annotated[str, typer.Option("--method", help="A registered distillation method: vanilla (soft targets), pkd (+ normalised [CLS] states), tinybert (+ hidden states, attention maps, embeddings), metakd, or one added with register_kd_method.")] = "vanilla",
    task: Annotated[Optional[str], typer.Option("--task", help="GLUE task (default: the teacher's).")] = None,
    domains: Annotated[str, typer.Option("--domains", help="--method metakd: all domains of the meta-teacher, comma-separated.")] = "books,dvd,electronics,kitchen",
    targets: Annotated[Optional[str], typer.Option("--targets", help="--method metakd: domains to distil a student for (default: all).")] = None,
    model: opt.ModelOpt = None,
    sharing: opt.SharingOpt = "1",
    bottleneck: opt.BottleneckOpt = None,
    reduction_factor: opt.ReductionOpt = None,
    teacher_mode: Annotated[str, typer.Option("--teacher-mode", help="--method metakd: train the meta-teacher's 'adapter' or the 'full' backbone.")] = "adapter",
    teacher_epochs: Annotated[int, typer.Option("--teacher-epochs", help="--method metakd: meta-teacher epochs.")] = 3,
    teacher_lr: Annotated[Optional[float], typer.Option("--teacher-lr", help="--method metakd: meta-teacher learning rate (default 1e-3 adapter, 5e-5 full).")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Distillation epochs.")] = 3,
    lr: Annotated[float, typer.Option("--lr", help="Student learning rate.")] = 1e-4,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size.")] = 32,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="Softmax temperature (default 2; 1 for tinybert and metakd).")] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="vanilla/pkd: weight of the soft targets (1 - alpha on the labels).")] = 0.5,
    beta: Annotated[float, typer.Option("--beta", help="pkd: weight of the [CLS] state term.")] = 100.0,
    layer_map: Annotated[str, typer.Option("--layer-map", help="Student layer j -> teacher layer: skip (j*Nt/Ns), last, bottom, or a list '2,4'.")] = "skip",
    student_hidden: Annotated[Optional[int], typer.Option("--student-hidden", help="A narrower student of this width (random init, learned projection).")] = None,
    train_limit: Annotated[Optional[int], typer.Option("--train-limit", help="Use only this many training rows (per domain for metakd).")] = None,
    eval_limit: Annotated[Optional[int], typer.Option("--eval-limit", help="--method metakd: score on the first N test rows per domain.")] = None,
    max_seq_len: Annotated[Optional[int], typer.Option("--max-seq-len", help="Longest input in tokens (default: the teacher run's, 128 for metakd).")] = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="GLUE folder (or Amazon folder for metakd).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 42,
    overwrite: opt.OverwriteOpt = False,
    precision: opt.PrecisionOpt = "fp32",
) -> None:
    """Distil a teacher into a student with the teacher's bottom --student-layers layers."""
    from adapterkit.errors import AdapterkitError
    from adapterkit.io.files import check_output
    from adapterkit.transfer.kd import KDConfig, TrainConfig
    from adapterkit.transfer.kd_losses import KD_METHODS

    if method not in KD_METHODS:
        raise AdapterkitError(f"--method must be one of {', '.join(sorted(KD_METHODS))}; got {method!r}")
    check_output(output, overwrite, inputs=[teacher] if teacher else [], folder=True)
    cfg = KDConfig(method=method, temperature=temperature if temperature is not None else (1.0 if method in ("tinybert", "metakd") else 2.0),
                   alpha=alpha, beta=beta, layer_map=_layer_map(layer_map), epochs=epochs, lr=lr,
                   batch_size=batch_size, seed=seed, precision=precision)
    if method == "metakd":
        from adapterkit.transfer.distill import metakd_run

        names = [d for d in domains.split(",") if d]
        tcfg = TrainConfig(epochs=teacher_epochs, lr=teacher_lr or (1e-3 if teacher_mode == "adapter" else 5e-5),
                           batch_size=batch_size, seed=seed, mode=teacher_mode,
                           adapter="teacher" if teacher_mode == "adapter" else None)
        result = metakd_run(names, [t for t in (targets or domains).split(",") if t], student_layers, cfg, tcfg, output,
                            model=model, teacher_dir=teacher, max_seq_len=max_seq_len or 128, data_dir=data_dir,
                            train_limit=train_limit, eval_limit=eval_limit,
                            **opt.adapter_shape(sharing, bottleneck, reduction_factor))
        for d, acc in result["student_test"].items():
            typer.echo(f"{d}: student accuracy {acc['accuracy']:.4f}  meta-teacher {result['teacher_test'][d]['accuracy']:.4f}")
    else:
        if teacher is None:
            raise AdapterkitError(f"--method {method} needs --teacher")
        from adapterkit.transfer.distill import distill_run

        result = distill_run(teacher, student_layers, cfg, output, task=task, data_dir=data_dir,
                             max_seq_len=max_seq_len, train_limit=train_limit, student_hidden=student_hidden)
        typer.echo(f"{result['task']} dev: student {json.dumps(_round(result['student_dev']))}  "
                   f"teacher {json.dumps(_round(result['teacher_dev']))}")
        typer.echo(f"parameters: student {result['params']['student']:,}  teacher {result['params']['teacher']:,}")
    typer.echo(f"wrote {output}")


def _layer_map(text: str):
    text = text.strip()
    if text and all(part.strip().isdigit() for part in text.split(",")):
        return [int(part) for part in text.split(",")]
    return text


def _round(metrics: dict) -> dict:
    return {k: round(v, 4) for k, v in metrics.items()}
