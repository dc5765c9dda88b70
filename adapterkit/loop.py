"""The training loop: one loop for every task type, single-process or distributed.

`fit` runs epochs of optimizer steps over `task.train` (one batcher, one linear schedule,
gradient accumulation), evaluates on `task.dev` at the end of every epoch or every
`eval_steps` optimizer steps, keeps the best evaluation's weights, stops early when the main
metric has not improved for `early_stopping_patience` evaluations, and checkpoints every
finished epoch. What differs between a plain run and a torchrun job is the runner:
`LocalRunner` here, `adapterkit.dist.runner.DistRunner` beside it. What differs between task
types is only `task` (rows, collate, evaluate, main metric).
"""
from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adapterkit.config import Schedule
from adapterkit.data.encode import batches
from adapterkit.io.atomic import write_text
from adapterkit.io.checkpoint import load_checkpoint, recover_checkpoint, save_checkpoint
from adapterkit.model import get_bank
from adapterkit.progress import progress as progress_bar
from adapterkit.toolkit.schedule import linear_warmup


@dataclass
class LoopSettings(Schedule):
    """The loop's knobs (a TrainConfig carries them; the loop reads nothing else)."""

    weight_decay: float = 0.0
    gradient_accumulation_steps: int = 1
    eval_steps: int | None = None
    early_stopping_patience: int | None = None
    full_finetune: bool = False
    resume: bool = False


class LocalRunner:
    """The plain single-process path: forward, backward, save from this process."""

    is_main = True

    def __init__(self, model, precision=None, trunk_cache=None):
        from adapterkit.precision import Precision

        self.model = model
        self.precision = precision or Precision()
        self.loss_step = self.precision.trainer()
        self.trunk_cache = trunk_cache  # adapterkit.trunk_cache.TrunkCache: frozen lower layers computed once

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def step(self, batch: dict) -> float:
        with self.precision.autocast():
            loss = self.trunk_cache.loss(batch) if self.trunk_cache else self.model(**batch).loss
        self.loss_step.backward(loss)
        return loss.item()

    def optimizer_step(self, optimizer) -> None:
        self.loss_step.step(optimizer)

    def evaluate(self, fn):
        with self.precision.autocast():
            return fn(self.model)

    def broadcast(self, value):
        return value

    def save_best(self, name: str, out: Path, full_finetune: bool, task_meta: dict) -> None:
        if full_finetune:
            tmp = out / ".model.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            from adapterkit.backbone import quiet_loading

            with quiet_loading():
                self.model.save_pretrained(str(tmp))
            shutil.rmtree(out / "model", ignore_errors=True)
            os.replace(tmp, out / "model")
        elif get_bank(self.model).composer is not None:  # `adapterkit fuse`: a combination of adapters
            from adapterkit.compose.io import save_combination

            save_combination(self.model, out, task=task_meta)
        else:
            from adapterkit.io import save_adapter

            save_adapter(self.model, name, out, task=task_meta)

    def checkpoint(self, path: Path, optimizer, scheduler, full_finetune: bool, progress: dict) -> None:
        save_checkpoint(path, self.model, optimizer, scheduler, full_finetune, progress)

    def finish(self, out: Path) -> None:
        if self.trunk_cache:
            self.trunk_cache.close()


@dataclass
class _State:
    history: list = field(default_factory=list)
    step: int = 0
    best: dict | None = None
    stale: int = 0  # evaluations since the best one
    seconds: float = 0.0
    examples: int = 0


def fit(model, task, runner, cfg: LoopSettings, out: Path, progress=None, log=print) -> dict:
    """Train `model` on `task` (a TaskData) with `runner`; returns the metrics dict (rank 0) or {}."""
    optimizer = torch.optim.AdamW(runner.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    accum = cfg.gradient_accumulation_steps
    steps_per_epoch = math.ceil(math.ceil(len(task.train.rows) / cfg.batch_size) / accum)
    total = min(cfg.max_steps or math.inf, cfg.epochs * steps_per_epoch)
    scheduler = linear_warmup(optimizer, int(total * cfg.warmup_ratio), total)
    state, start_epoch = _State(), 0
    if cfg.resume and recover_checkpoint(out / "checkpoint", resume=True):
        saved = load_checkpoint(out / "checkpoint", model, optimizer, scheduler, cfg.full_finetune)
        state.history, state.step, start_epoch = saved["history"], saved["step"], saved["epoch"] + 1
        state.best = max(state.history, key=lambda h: task.score(h["dev"]), default=None)
        state.stale = _stale(state.history, task)
        state.seconds = sum(h["train_seconds"] for h in state.history)
        state.examples = sum(h["examples"] for h in state.history)
        _write_log(out, state.history, cfg, task.metric)  # epochs after the checkpoint are run again
        log(f"resumed from {out / 'checkpoint'} after epoch {saved['epoch'] + 1} (step {state.step})")
    stopped = False
    for epoch in range(start_epoch, cfg.epochs):
        if state.step >= total or stopped:
            break
        stopped = _epoch(model, task, runner, cfg, out, epoch, optimizer, scheduler, total, steps_per_epoch,
                         state, progress, log)
        runner.checkpoint(out / "checkpoint", optimizer, scheduler, cfg.full_finetune,
                              {"epoch": epoch, "step": state.step, "history": state.history})
    runner.finish(out)
    if not runner.is_main:
        return {}
    best = state.best
    metrics = {
        "task": task.name,
        "task_type": task.spec.type,
        "metric": task.metric,
        "epochs": state.history,
        "best_epoch": best["epoch"],
        "best_step": best["step"],
        "best": best["dev"],
        "stopped_early": stopped,
        "stepwise": bool(cfg.eval_steps),
        "train_seconds": state.seconds,
        "examples_per_second": state.examples / state.seconds if state.seconds else None,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    return metrics


def _epoch(model, task, runner, cfg, out, epoch, optimizer, scheduler, total, steps_per_epoch, state,
           progress, log) -> bool:
    """One pass over the training rows; returns True when early stopping ended the run."""
    model.train()
    t0, seen, losses = time.perf_counter(), 0, []
    limit = min(steps_per_epoch, int(total - state.step))
    micro = batches(task.train.rows, cfg.batch_size, task.collate, seed=cfg.seed + epoch)
    epochs_run = math.ceil(total / steps_per_epoch)  # --max-steps may end the run early: "epoch 1/1", not 1/3
    with progress_bar(f"epoch {epoch + 1}/{epochs_run}", limit, enabled=bool(progress)) as bar:
        for i in range(limit):
            loss, n = _optimizer_step(runner, micro, cfg.gradient_accumulation_steps, optimizer, scheduler)
            if n == 0:
                break
            losses.append(loss)
            seen += n
            state.step += 1
            bar(loss=sum(losses[-20:]) / len(losses[-20:]), examples=n)
            if cfg.eval_steps and state.step % cfg.eval_steps == 0 and i < limit - 1:
                stop = _evaluate(model, task, runner, cfg, out, epoch, state, losses, seen, t0, log)
                t0, seen, losses = time.perf_counter(), 0, []
                model.train()
                if stop:
                    return True
    if not losses:
        return False
    return _evaluate(model, task, runner, cfg, out, epoch, state, losses, seen, t0, log)


def _optimizer_step(runner, micro, accum: int, optimizer, scheduler) -> tuple[float, int]:
    """Accumulate gradients over up to `accum` batches, average them, take one step.
    Returns (mean loss, rows seen); (nan, 0) when the batches ran out."""
    losses, rows = [], 0
    for _, batch in zip(range(accum), micro):
        _, batch = batch
        losses.append(runner.step(batch))
        rows += len(batch["input_ids"])
    if not losses:
        return math.nan, 0
    if len(losses) > 1:
        for p in runner.parameters():
            if p.grad is not None:
                p.grad.div_(len(losses))
    runner.optimizer_step(optimizer)
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return sum(losses) / len(losses), rows


def _evaluate(model, task, runner, cfg, out, epoch, state, losses, seen, t0, log) -> bool:
    """Evaluate, record, keep the best; True when early stopping says stop."""
    seconds = time.perf_counter() - t0
    dev = runner.evaluate(lambda m: task.evaluate(m, task.dev))
    record = {"epoch": epoch + 1, "step": state.step, "train_loss": sum(losses) / len(losses), "dev": dev,
              "train_seconds": seconds, "examples": seen}
    state.history.append(record)
    state.seconds, state.examples = state.seconds + seconds, state.examples + seen
    is_best = runner.is_main and (state.best is None or task.score(dev) > task.score(state.best["dev"]))
    is_best = runner.broadcast(is_best)
    if is_best:
        state.best, state.stale = record, 0
        runner.save_best(task.name, out, cfg.full_finetune, task.spec.to_dict())
    else:
        state.stale += 1
    if runner.is_main:
        log(_log_line(record, cfg, task.metric))
        _write_log(out, state.history, cfg, task.metric)
    patience = cfg.early_stopping_patience
    if patience and state.stale >= patience:
        if runner.is_main:
            log(f"early stopping: dev {task.metric} has not improved for {patience} evaluations")
        return True
    return False


def _log_line(record: dict, cfg, metric: str) -> str:
    where = f"step {record['step']}" if cfg.eval_steps else f"epoch {record['epoch']}"
    rate = record["examples"] / record["train_seconds"] if record["train_seconds"] else 0.0
    return f"{where}: loss {record['train_loss']:.4f}  dev {metric} {record['dev'][metric]:.4f}  {rate:.1f} ex/s"


def _write_log(out: Path, history: list, cfg, metric: str) -> None:
    """train.log: one line per evaluation in `history` (rewritten whole, so a resumed run never
    repeats the lines of evaluations its checkpoint did not keep)."""
    write_text(out / "train.log", "".join(_log_line(r, cfg, metric) + "\n" for r in history))


def _stale(history: list, task) -> int:
    best, stale = None, 0
    for h in history:
        if best is None or task.score(h["dev"]) > best:
            best, stale = task.score(h["dev"]), 0
        else:
            stale += 1
    return stale
