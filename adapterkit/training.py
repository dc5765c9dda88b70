"""Train an adapter (or, as the baseline, the whole backbone) on a GLUE task.

`train(TrainConfig(...))` is what `adapterkit train` runs. The output folder holds
  adapterkit_config.json, adapterkit_*.safetensors   the best adapter and head (adapter runs)
  model/                                            the best full model (--full-finetune runs)
  tokenizer/                                        the tokenizer (JSON/text files only)
  run_config.json                                   the resolved configuration
  metrics.json                                      dev metrics per epoch, best epoch, speed, sizes
  train.log                                         one line per epoch
  checkpoint/                                       the last finished epoch, for --resume
Every file is written under a temporary name and renamed; the checkpoint folder is swapped in
with one rename, so a killed run leaves the previous complete checkpoint or none.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adapterkit import backbone
from adapterkit.checkpoint import load_checkpoint, save_checkpoint
from adapterkit.config import BottleneckConfig
from adapterkit.errors import AdapterkitError
from adapterkit.evaluation import evaluate, make_batches
from adapterkit.atomic import write_json
from adapterkit.io import save_adapter
from adapterkit.model import add_adapter, count_parameters, train_adapter
from adapterkit.progress import progress as progress_bar

ADAPTER_LR, FULL_LR = 1e-3, 5e-5


@dataclass
class TrainConfig:
    task: str = "cola"
    model: str | None = None  # default: the bundled all-MiniLM-L6-v2
    adapter: BottleneckConfig = field(default_factory=BottleneckConfig)
    full_finetune: bool = False
    epochs: int = 3
    max_steps: int | None = None
    lr: float | None = None  # default: 1e-3 for adapters, 5e-5 for full fine-tuning
    batch_size: int = 32
    max_seq_len: int = 128
    seed: int = 42
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    data_dir: str | None = None
    output: str | None = None  # default: runs/<task>-<adapter|full>-s<seed>
    resume: bool = False
    init_adapter: str | None = None  # start from a saved adapter (folder or hub:REPO[:TAG])
    attention: str | None = None  # attn_implementation passed to transformers (e.g. "sdpa", "adapterkit_rsa")
    rsa: dict | None = None  # with "adapterkit_rsa": {"density", "block_size", "seed"} (saved: eval rebuilds the layout)
    eval_batch_size: int = 128
    backbone_dropout: bool = False  # dropout inside the frozen backbone (adapter runs)
    strategy: str = "ddp"  # under torchrun: ddp, fsdp, pipeline, pipeline+ddp (see adapterkit.dist)
    compression: str = "none"  # gradient compression: none, fp16, bf16, topk:FRACTION
    bucket_mb: float = 25.0  # gradient bucket size (fusion)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_seq_len", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise AdapterkitError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise AdapterkitError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.lr is not None and not self.lr > 0:
            raise AdapterkitError(f"lr must be > 0, got {self.lr}")
        if self.lr is None:
            self.lr = FULL_LR if self.full_finetune else ADAPTER_LR
        if self.output is None:
            kind = "full" if self.full_finetune else f"sharing{self.adapter.sharing}"
            self.output = f"runs/{self.task}-{kind}-s{self.seed}"

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["adapter"] = None if self.full_finetune else self.adapter.to_dict()
        return data


def train(cfg: TrainConfig, progress: bool = True, log=print) -> dict:
    """Train, evaluate on dev after every epoch, keep the best; returns the metrics dict.

    Under torchrun (`adapterkit train --nproc N`) every rank builds the same batches and takes
    its shard of each; rank 0 evaluates, logs and writes the outputs (see adapterkit.dist).
    """
    from adapterkit.data import get_task
    from adapterkit.metrics import main_metric, main_score

    task = get_task(cfg.task)
    run = _distributed(cfg)
    main = run is None or run.is_main
    torch.manual_seed(cfg.seed)  # every rank initialises adapters and head identically
    out = Path(cfg.output)
    if main:
        _prepare_output(out, cfg.resume)
    tokenizer = backbone.load_tokenizer(cfg.model)
    train_rows, dev_rows = _load_data(task, tokenizer, cfg)
    model = _build_model(task, cfg)
    stepper = run.wrap(model, cfg) if run else None
    trainable = stepper.parameters() if stepper else [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_rows) / cfg.batch_size)
    total = min(cfg.max_steps or math.inf, cfg.epochs * steps_per_epoch)
    epochs_run = math.ceil(total / steps_per_epoch)  # --max-steps may end the run early: "epoch 1/1", not 1/3
    scheduler = _linear_schedule(optimizer, int(total * cfg.warmup_ratio), total)
    history, start_epoch, step = [], 0, 0
    if cfg.resume and (out / "checkpoint").exists():
        state = load_checkpoint(out / "checkpoint", model, optimizer, scheduler, cfg.full_finetune)
        history, start_epoch, step = state["history"], state["epoch"] + 1, state["step"]
        log(f"resumed from {out / 'checkpoint'} after epoch {state['epoch'] + 1} (step {step})")
    if main:
        write_json(out / "run_config.json", cfg.to_dict())
        tokenizer.save_pretrained(str(out / "tokenizer"))
    key = main_metric(task)
    best = max(history, key=lambda h: main_score(task, h["dev"]), default=None)
    train_seconds = sum(h["train_seconds"] for h in history)
    examples = sum(h["examples"] for h in history)
    pad_id = tokenizer.pad_token_id or 0
    for epoch in range(start_epoch, cfg.epochs):
        if step >= total:
            break
        model.train()
        t0, seen, losses = time.perf_counter(), 0, []
        batches = make_batches(train_rows, cfg.batch_size, pad_id, task.is_regression, seed=cfg.seed + epoch)
        limit = min(steps_per_epoch, int(total - step))
        with progress_bar(f"epoch {epoch + 1}/{epochs_run}", limit, enabled=progress and main) as bar:
            for i, batch in zip(range(limit), batches):
                batch.pop("_index")
                if stepper:
                    loss = stepper.step(stepper.shard(batch))
                else:
                    loss = model(**batch).loss
                    loss.backward()
                    loss = loss.item()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss)
                seen += len(batch["input_ids"])
                step += 1
                bar(loss=sum(losses[-20:]) / len(losses[-20:]), examples=len(batch["input_ids"]))
        seconds = time.perf_counter() - t0
        dev = run.evaluate(stepper, dev_rows, task, cfg, pad_id) if run else \
            evaluate(model, dev_rows, task, cfg.eval_batch_size, pad_id)
        record = {"epoch": epoch + 1, "step": step, "train_loss": sum(losses) / len(losses), "dev": dev,
                  "train_seconds": seconds, "examples": seen}
        history.append(record)
        train_seconds, examples = train_seconds + seconds, examples + seen
        is_best = main and (best is None or main_score(task, dev) > main_score(task, best["dev"]))
        if run:
            is_best = run.broadcast(is_best)
        if is_best:
            best = record
            run.save_adapter(stepper, task.name, out) if run else _save_best(model, task.name, out, cfg.full_finetune)
        if main:
            line = f"epoch {epoch + 1}: loss {record['train_loss']:.4f}  dev {key} {dev[key]:.4f}  {seen / seconds:.1f} ex/s"
            log(line)
            with open(out / "train.log", "a") as f:
                f.write(line + "\n")
        if not run:
            save_checkpoint(out / "checkpoint", model, optimizer, scheduler, cfg.full_finetune,
                            {"epoch": epoch, "step": step, "history": history})
    if run:
        stepper.write_stats(out)
    if not main:
        return {}
    metrics = {
        "task": task.name,
        "metric": key,
        "epochs": history,
        "best_epoch": best["epoch"],
        "best": best["dev"],
        "train_seconds": train_seconds,
        "examples_per_second": examples / train_seconds if train_seconds else None,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "adapter_parameters": None if cfg.full_finetune else count_parameters(model, task.name),
    }
    write_json(out / "metrics.json", metrics)
    return metrics


class _Distributed:
    """The training loop's view of a torchrun job (adapterkit.dist does the work)."""

    def __init__(self) -> None:
        from adapterkit import dist as akd

        akd.init_distributed()
        self.akd = akd
        self.is_main = akd.is_main_process()

    def wrap(self, model, cfg: TrainConfig):
        config = self.akd.DistConfig(compression=cfg.compression, bucket_mb=cfg.bucket_mb)
        return self.akd.wrap_for_strategy(model, cfg.strategy, config)

    def evaluate(self, stepper, rows, task, cfg: TrainConfig, pad_id: int):
        with stepper.eval_model() as model:
            dev = evaluate(model, rows, task, cfg.eval_batch_size, pad_id) if model is not None else None
        return self.broadcast(dev)

    def broadcast(self, value):
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def save_adapter(self, stepper, name: str, out: Path) -> None:
        stepper.save_adapter(name, out)


def _distributed(cfg: TrainConfig) -> _Distributed | None:
    from adapterkit.dist import under_torchrun

    if not under_torchrun():
        return None
    if cfg.full_finetune:
        raise AdapterkitError("distributed training (--nproc > 1) trains adapters; drop --full-finetune")
    if cfg.resume:
        raise AdapterkitError("--resume is not supported for distributed runs yet")
    return _Distributed()


def _load_data(task, tokenizer, cfg: TrainConfig):
    from adapterkit.data import encode, load_glue

    train_ds = load_glue(task, "train", cfg.data_dir)
    dev_ds = load_glue(task, "dev", cfg.data_dir)
    return encode(train_ds, tokenizer, task, cfg.max_seq_len), encode(dev_ds, tokenizer, task, cfg.max_seq_len)


def _build_model(task, cfg: TrainConfig):
    problem = "regression" if task.is_regression else "single_label_classification"
    model = backbone.load_model(cfg.model, num_labels=task.num_labels, problem_type=problem)
    backbone.set_attention(model, cfg.attention, cfg.rsa)
    if cfg.full_finetune:
        return model
    if cfg.init_adapter:
        from adapterkit.io import load_adapter

        load_adapter(model, cfg.init_adapter, name=task.name)
    else:
        add_adapter(model, task.name, cfg.adapter)
    train_adapter(model, task.name, backbone_dropout=cfg.backbone_dropout)
    return model


def _save_best(model, name: str, out: Path, full_finetune: bool) -> None:
    if full_finetune:
        tmp = out / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with backbone.quiet_loading():
            model.save_pretrained(str(tmp))
        shutil.rmtree(out / "model", ignore_errors=True)
        os.replace(tmp, out / "model")
    else:
        save_adapter(model, name, out)


def _linear_schedule(optimizer, warmup: int, total: float):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1.0, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _prepare_output(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise AdapterkitError(f"output {out} exists and is not a folder")
    if not resume and ((out / "metrics.json").exists() or (out / "checkpoint").exists()):
        raise AdapterkitError(f"output {out} already holds a run; choose another --output, or pass --resume to continue it")
    out.mkdir(parents=True, exist_ok=True)
