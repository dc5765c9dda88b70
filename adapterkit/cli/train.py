"""`adapterkit train`, `adapterkit eval`, `adapterkit predict`: thin wrappers over
adapterkit.training and adapterkit.evaluation."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from adapterkit.cli import options as opt
from adapterkit.cli import task_options as topt


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(eval_)
    app.command("predict")(predict)


def train(
    task: Annotated[Optional[str], typer.Option("--task", help="GLUE task: cola, sst2, mrpc, rte, stsb, qqp, qnli, mnli. Default: cola (without --task-type).")] = None,
    model: opt.ModelOpt = None,
    sharing: opt.SharingOpt = "1",
    bottleneck: opt.BottleneckOpt = None,
    reduction_factor: opt.ReductionOpt = None,
    placement: opt.PlacementOpt = "houlsby",
    layers: opt.LayersOpt = "all",
    leave_out: opt.LeaveOutOpt = "",
    train_layer_norms: opt.LayerNormOpt = False,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training set.")] = 3,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many optimizer steps (overrides --epochs).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (linear warm-up 10%, linear decay). Default 1e-3 for adapters, 5e-5 with --full-finetune.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size.")] = 32,
    max_seq_len: Annotated[int, typer.Option("--max-seq-len", help="Longest input in tokens; batches are padded to their own longest row.")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (init, data order).")] = 42,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="Folder with GLUE-layout task folders (CoLA/train.tsv ...). Default: $ADAPTERKIT_DATA_DIR, known local folders, then the hub.")] = None,
    output: Annotated[Optional[str], typer.Option("--output", help="Output folder. Default: runs/<task>-<sharing|full>-s<seed>.")] = None,
    full_finetune: Annotated[bool, typer.Option("--full-finetune", help="Train the whole backbone instead of an adapter (baseline).")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --output from its last checkpoint.")] = False,
    init_adapter: Annotated[Optional[str], typer.Option("--init-adapter", help="Start from a saved adapter: a folder or hub:REPO[:TAG].")] = None,
    attention: Annotated[Optional[str], typer.Option("--attention", help="Attention implementation: sdpa, eager, or rsa (random sparse attention). Default: the backbone's own (sdpa for all-MiniLM-L6-v2).")] = None,
    rsa_density: Annotated[float, typer.Option("--rsa-density", help="With --attention rsa: fraction of key blocks each query block attends to.")] = 0.25,
    rsa_block_size: Annotated[int, typer.Option("--rsa-block-size", help="With --attention rsa: block size in tokens.")] = 64,
    push: Annotated[Optional[str], typer.Option("--push", help="Publish the trained adapter to the hub as REPO[:TAG].")] = None,
    hub: Annotated[Optional[str], typer.Option("--hub", help="Hub for --push: a folder or http://host:port. Default: $ADAPTERKIT_HUB or the user cache.")] = None,
    token: Annotated[Optional[str], typer.Option("--token", envvar="ADAPTERKIT_HUB_TOKEN", help="Bearer token for a hub server.")] = None,
    backbone_dropout: Annotated[bool, typer.Option("--backbone-dropout", help="Keep dropout inside the frozen backbone when training an adapter (off by default: faster, see README).")] = False,
    nproc: Annotated[int, typer.Option("--nproc", help="Worker processes on this machine (torchrun); 1 = not distributed.")] = 1,
    nnodes: Annotated[int, typer.Option("--nnodes", help="Simulated nodes on this machine (--nproc must be a multiple); under torchrun the real nodes are used.")] = 1,
    strategy: Annotated[str, typer.Option("--strategy", help="Distributed strategy: ddp, fsdp, pipeline or pipeline+ddp.")] = "ddp",
    compression: Annotated[str, typer.Option("--compression", help="Gradient compression: none, fp16, bf16, topk:FRACTION[,momentum=M][,warmup=N].")] = "none",
    bucket_mb: Annotated[float, typer.Option("--bucket-mb", help="Gradient bucket size in MB (fusion).")] = 25.0,
    precision: opt.PrecisionOpt = "fp32",
    backbone_dtype: opt.BackboneDtypeOpt = "fp32",
    gradient_checkpointing: opt.GradientCheckpointingOpt = False,
    compile: opt.CompileOpt = False,
    drop_layers: Annotated[int, typer.Option("--drop-layers", help="AdapterDrop: no adapters in the lowest k layers (the backward pass stops at layer k).")] = 0,
    drop_robust: Annotated[bool, typer.Option("--drop-robust", help="Robust AdapterDrop: a random k in 0..--drop-layers per step; dev scores at k=0, `eval --drop-layers k` for others.")] = False,
    trunk_cache: opt.TrunkCacheOpt = False,
    trunk_cache_mb: opt.TrunkCacheMbOpt = 2048.0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    task_type: topt.TaskTypeOpt = None,
    train_file: topt.TrainFileOpt = None,
    validation_file: topt.ValidationFileOpt = None,
    test_file: topt.TestFileOpt = None,
    text_column: topt.TextColumnOpt = None,
    text_pair_column: topt.TextPairColumnOpt = None,
    label_column: topt.LabelColumnOpt = None,
    tag_scheme: topt.TagSchemeOpt = None,
    validation_fraction: topt.ValidationFractionOpt = 0.1,
    threshold: topt.ThresholdOpt = 0.5,
    doc_stride: topt.DocStrideOpt = 128,
    max_answer_length: topt.MaxAnswerOpt = 30,
    n_best: topt.NBestOpt = 20,
    max_new_tokens: topt.MaxNewTokensOpt = 32,
    eval_steps: topt.EvalStepsOpt = None,
    gradient_accumulation_steps: topt.AccumulationOpt = 1,
    early_stopping_patience: topt.PatienceOpt = None,
) -> None:
    """Train an adapter on a GLUE task (--task) or on your own files (--task-type, --train-file),
    evaluate on the validation data after every epoch (or --eval-steps), keep the best."""
    import sys

    from adapterkit.dist import maybe_launch
    from adapterkit.errors import AdapterkitError
    from adapterkit.training import TrainConfig
    from adapterkit.training import train as run_training

    # every setting is checked here, before workers start or anything is trained
    if task is not None and task_type is not None:
        raise AdapterkitError(f"--task {task} (a GLUE task) and --task-type {task_type} (your files) exclude each other")
    adapter = opt.adapter_config(sharing, bottleneck, reduction_factor, placement, layers, leave_out, train_layer_norms)
    data = topt.data_files(task_type, train_file, validation_file, test_file, text_column, text_pair_column,
                           label_column, tag_scheme, validation_fraction)
    options = dict(threshold=threshold, doc_stride=doc_stride, max_answer_length=max_answer_length, n_best=n_best,
                   max_new_tokens=max_new_tokens)
    cfg = TrainConfig(task=task or "cola", model=model, adapter=adapter, full_finetune=full_finetune, epochs=epochs,
                      max_steps=max_steps, lr=lr, batch_size=batch_size, max_seq_len=max_seq_len, seed=seed,
                      data_dir=data_dir, output=output, resume=resume, init_adapter=init_adapter,
                      attention=_attention(attention), rsa=_rsa(attention, rsa_density, rsa_block_size, seed),
                      backbone_dropout=backbone_dropout, strategy=strategy, compression=compression,
                      bucket_mb=bucket_mb, precision=precision, backbone_dtype=backbone_dtype,
                      gradient_checkpointing=gradient_checkpointing, compile=compile,
                      drop_layers=drop_layers, drop_robust=drop_robust, trunk_cache=trunk_cache,
                      trunk_cache_mb=trunk_cache_mb,
                      task_type=task_type, data=data, task_options=options if data else {},
                      eval_steps=eval_steps, gradient_accumulation_steps=gradient_accumulation_steps,
                      early_stopping_patience=early_stopping_patience)
    if push:
        from adapterkit.hub.refs import parse_ref

        parse_ref(push, allow_version=False)  # a bad --push reference is refused before training, not after

    if maybe_launch(sys.argv[1:], nproc, nnodes):
        typer.echo(f"{nproc} workers finished; outputs in {output or 'runs/'}")
        return  # the workers ran the job; rank 0 wrote the outputs

    if quiet:
        from adapterkit.progress import set_enabled

        set_enabled(False)  # evaluation's progress too
    metrics = run_training(cfg, progress=not quiet)
    if not metrics:
        return  # a worker other than rank 0
    _print_summary(metrics, cfg.output)
    if push:
        from adapterkit.hub import push_adapter

        version = push_adapter(cfg.output, push, hub=hub, token=token)
        typer.echo(f"pushed {push} version {version}")


def eval_(
    adapter: Annotated[Path, typer.Option("--adapter", help="Output folder of `adapterkit train`, or an adapter folder.")],
    task: Annotated[Optional[str], typer.Option("--task", help="GLUE task (default: the one the run trained on).")] = None,
    split: Annotated[str, typer.Option("--split", help="Split to score: dev or train (runs on your files: also test).")] = "dev",
    file: Annotated[Optional[str], typer.Option("--file", help="Runs on your files: score this labelled file (default: the run's --split file).")] = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="Folder with GLUE-layout task folders.")] = None,
    max_seq_len: Annotated[Optional[int], typer.Option("--max-seq-len", help="Default: the run's.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Evaluation batch size.")] = 128,
    precision: opt.RunPrecisionOpt = None,
    drop_layers: Annotated[Optional[int], typer.Option("--drop-layers", help="AdapterDrop at inference: no adapters in the lowest k layers. Default: the run's (0 after robust training).")] = None,
) -> None:
    """Score a saved adapter on a GLUE split, or a run on your files on its own or another file,
    and print the task's metrics."""
    from adapterkit.backbone import check_positions
    from adapterkit.data import encode, load_glue
    from adapterkit.evaluation import evaluate, load_run
    from adapterkit.precision import run_autocast

    _check_sizes(max_seq_len, batch_size, drop_layers)
    if split not in ("dev", "validation", "train", "test"):
        from adapterkit.errors import AdapterkitError

        raise AdapterkitError(f"--split {split!r}: use dev, train or test")
    if task is None and _file_task(adapter):
        from adapterkit.tasks.inference import evaluate_file

        for key, value in evaluate_file(adapter, file, split, batch_size, max_seq_len, precision, typer.echo,
                                        drop_layers).items():
            typer.echo(f"{key}: {value:.4f}")
        return

    model, tokenizer, task_, run = load_run(adapter, task, precision, note=typer.echo, drop_layers=drop_layers)
    check_positions(model, max_seq_len or run.get("max_seq_len", 128))
    rows = encode(load_glue(task_, split, data_dir or run.get("data_dir")), tokenizer, task_,
                  max_seq_len or run.get("max_seq_len", 128))
    with run_autocast(run):
        metrics = evaluate(model, rows, task_, batch_size, tokenizer.pad_token_id or 0)
    for key, value in metrics.items():
        typer.echo(f"{key}: {value:.4f}")


def predict(
    adapter: Annotated[Path, typer.Option("--adapter", help="Output folder of `adapterkit train`, or an adapter folder.")],
    input: Annotated[Path, typer.Option("--input", help="TSV (with header) or JSONL file of inputs (sentence / sentence1+sentence2).")],
    output: Annotated[Path, typer.Option("--output", help="Where to write predictions (.jsonl or .tsv).")],
    task: Annotated[Optional[str], typer.Option("--task", help="Default: the task the run trained on.")] = None,
    max_seq_len: Annotated[Optional[int], typer.Option("--max-seq-len", help="Default: the run's.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size.")] = 128,
    overwrite: opt.OverwriteOpt = False,
    server: Annotated[Optional[str], typer.Option("--server", help="Ask a running `adapterkit serve` at this URL instead; --adapter is then the adapter's name there.")] = None,
    precision: opt.RunPrecisionOpt = None,
    id_column: Annotated[Optional[str], typer.Option("--id-column", metavar="NAME", help="Input column copied to each prediction to identify its row. Default: `id`, if the input has one.")] = None,
) -> None:
    """Predict labels (or scores) for a file of inputs with a saved adapter (or a server's).

    Each output row holds the row's id (if any), its input text and the prediction: the label
    name (CoLA: acceptable / unacceptable), its id and probability, or a score. GLUE's own task
    files (CoLA/dev.tsv without a header included) are accepted as input."""
    from adapterkit.data import encode
    from adapterkit.data.user_files import predict_inputs
    from adapterkit.errors import AdapterkitError
    from adapterkit.evaluation import load_run, predict_logits
    from adapterkit.io.files import check_output
    from adapterkit.precision import run_autocast

    if output.suffix not in (".jsonl", ".tsv"):
        raise AdapterkitError(f"--output {output}: use a .jsonl or .tsv file name")
    check_output(output, overwrite, inputs=[input])
    _check_sizes(max_seq_len, batch_size)
    if server:
        from adapterkit.cli.serve import predict_remote

        data, text_columns, id_name = predict_inputs(input, task, id_column)
        pairs = zip(data["text_a"], data["text_b"] if "text_b" in data.column_names else [None] * len(data))
        records = predict_remote(server, str(adapter), [{"text": a, "text_pair": b} for a, b in pairs])
        given = data.to_dict()
        records = [_with_inputs(given, text_columns, id_name, i) | r for i, r in enumerate(records)]
        _write_predictions(output, records)
        typer.echo(f"wrote {len(records)} predictions to {output}")
        return
    if task is None and _file_task(adapter):
        from adapterkit.tasks.inference import predict_file

        records = predict_file(adapter, input, batch_size, max_seq_len, precision, typer.echo, id_column)
        _write_predictions(output, records)
        typer.echo(f"wrote {len(records)} predictions to {output}")
        return
    model, tokenizer, task_, run = load_run(adapter, task, precision, note=typer.echo)
    from adapterkit.backbone import check_positions

    check_positions(model, max_seq_len or run.get("max_seq_len", 128))
    data, text_columns, id_name = predict_inputs(input, task_, id_column)
    texts = [c for c in ("text_a", "text_b") if c in data.column_names]
    rows = encode(data.select_columns(texts), tokenizer, None, max_seq_len or run.get("max_seq_len", 128))
    with run_autocast(run):
        logits = predict_logits(model, rows, batch_size, tokenizer.pad_token_id or 0, title="predict")
    names = getattr(task_, "display_labels", None) or task_.labels
    given, records = data.to_dict(), []
    for i, logit in enumerate(logits):
        record = _with_inputs(given, text_columns, id_name, i)
        if task_.is_regression:
            record["score"] = float(logit[0])
        else:
            k = int(logit.argmax())
            record |= {"label": names[k], "label_id": k, "probability": float(logit.softmax(-1)[k])}
        records.append(record)
    _write_predictions(output, records)
    typer.echo(f"wrote {len(records)} predictions to {output}")


def _check_sizes(max_seq_len: int | None, batch_size: int, drop_layers: int | None = None) -> None:
    """Before any loading (--drop-layers' upper bound is checked once the model is known)."""
    from adapterkit.config import check_number

    if max_seq_len is not None:
        check_number("--max-seq-len", max_seq_len, minimum=2, integer=True)
    check_number("--batch-size", batch_size, minimum=1, integer=True)
    if drop_layers is not None:
        check_number("--drop-layers", drop_layers, minimum=0, integer=True)


def _with_inputs(given: dict[str, list], text_columns, id_name: str | None, i: int) -> dict:
    """Row i's id (named as in the input) and input texts, which each prediction starts with."""
    record = {id_name: given["id"][i]} if id_name else {}
    return record | {name: given[text][i] for name, text in zip(text_columns, ("text_a", "text_b"))}


def _file_task(folder: Path) -> bool:
    """True for a run or adapter trained with --task-type (not a GLUE preset)."""
    from adapterkit.io.files import read_json
    from adapterkit.tasks.heads import run_spec

    run_file = folder / "run_config.json"
    run = read_json(run_file, "run config", dict) if run_file.is_file() else {}
    try:
        return run_spec(folder, run).preset is None
    except Exception:
        return False  # let the GLUE path report what is wrong with the folder


def _attention(name: str | None) -> str | None:
    if name in (None, "sdpa", "eager"):
        return name
    if name == "rsa":
        return "adapterkit_rsa"
    from adapterkit.errors import AdapterkitError

    raise AdapterkitError(f"--attention must be sdpa, eager or rsa; got {name!r}")


def _rsa(name: str | None, density: float, block_size: int, seed: int) -> dict | None:
    """The Random Sparse Attention settings of `--attention rsa` (checked here, saved with the run)."""
    if name != "rsa":
        return None
    from adapterkit.ops.hf import RSAConfig

    RSAConfig(density=density, block_size=block_size, seed=seed)  # refuses bad settings here, before training
    return {"density": density, "block_size": block_size, "seed": seed}


def _write_predictions(path: Path, records: list[dict]) -> None:
    from adapterkit.io.atomic import write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in records)
    else:
        keys = list(records[0]) if records else []
        cell = lambda v: json.dumps(v) if isinstance(v, (list, dict)) else " ".join(str(v).split())  # noqa: E731
        text = "\t".join(keys) + "\n" + "".join("\t".join(cell(r[k]) for k in keys) + "\n" for r in records)
    write_text(path, text)


def parameter_summary(metrics: dict) -> str:
    """"trained parameters: 247,810 (adapter 99,200 + head 148,610)", labelled by part."""
    trained, adapter, head = (metrics.get(k) for k in ("trainable_parameters", "adapter_parameters", "head_parameters"))
    if adapter is None or head is None:
        return f"trained parameters: {trained:,} (the whole model)"
    parts = [f"adapter {adapter:,}", f"head {head:,}"]
    if trained - adapter - head > 0:
        parts.append(f"layer norms {trained - adapter - head:,}")
    return f"trained parameters: {trained:,} ({' + '.join(parts)})"


def _print_summary(metrics: dict, output: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{metrics['task']}: dev metrics per epoch (best: epoch {metrics['best_epoch']})"
                  if not metrics.get("stepwise") else f"{metrics['task']}: dev metrics (best: step {metrics['best_step']})")
    keys = [k for k in metrics["best"]]
    for column in ("epoch", "train loss", *keys):
        table.add_column(column, justify="right")
    for h in metrics["epochs"]:
        mark = " *" if h["step"] == metrics.get("best_step", h["step"]) and h["epoch"] == metrics["best_epoch"] else ""
        where = f"{h['epoch']} (step {h['step']})" if metrics.get("stepwise") else f"{h['epoch']}"
        table.add_row(f"{where}{mark}", f"{h['train_loss']:.4f}", *(f"{h['dev'][k]:.4f}" for k in keys))
    console = Console()
    console.print(table)
    console.print(f"{parameter_summary(metrics)}   train time: {metrics['train_seconds']:.0f} s"
                  + (f"   {metrics['examples_per_second']:.1f} examples/s" if metrics["examples_per_second"] else ""))
    console.print(f"best dev {metrics['metric']}: {metrics['best'][metrics['metric']]:.4f}   saved to {output}")
    if metrics.get("stopped_early"):
        console.print("stopped early: no better dev metric for --early-stopping-patience evaluations")
    if metrics.get("test"):
        console.print("test " + "  ".join(f"{k} {v:.4f}" for k, v in metrics["test"].items()))
