"""Pieces every transfer algorithm shares: domain data, the model, a training loop, scoring.

Kept small on purpose: an algorithm composes these with adapter operations
(`add_adapter`, `set_active`, `adapter_parameters`) and its own loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from adapterkit import backbone
from adapterkit.transfer.registry import TransferSpec

QUICK_ROWS = 32  # rows per split in --quick mode


@dataclass
class DomainData:
    """Encoded train/dev/test rows of one domain (lists of dicts ready for PadCollator)."""

    name: str
    train: list[dict]
    dev: list[dict]
    test: list[dict]


def load_domains(spec: TransferSpec, tokenizer) -> dict[str, DomainData]:
    """Source domains in full (or QUICK_ROWS), the target with `target_shots` train rows."""
    from adapterkit.data import encode, few_shot, load_domain_splits

    out = {}
    for name in [*spec.source, spec.target]:
        splits = load_domain_splits(name, seed=0, data_dir=spec.data_dir)
        parts = {}
        for split in ("train", "dev", "test"):
            data = splits[split]
            if name == spec.target and split == "train" and spec.target_shots:
                data = few_shot(data, spec.target_shots, seed=spec.seed)
            if spec.quick:
                data = data.shuffle(seed=spec.seed).select(range(min(QUICK_ROWS, len(data))))
            rows = encode(data.select_columns(["text", "label"]), tokenizer, "sst2", spec.max_seq_len)
            parts[split] = [dict(r) for r in rows]
        out[name] = DomainData(name, parts["train"], parts["dev"], parts["test"])
    return out


def make_model(spec: TransferSpec, num_labels: int = 2):
    model = backbone.load_model(spec.model, num_labels=num_labels)
    tokenizer = backbone.load_tokenizer(spec.model)
    return model, tokenizer


def batches(rows: list[dict], batch_size: int, pad_id: int, seed: int, shuffle: bool = True) -> list[dict]:
    """Padded batches of rows (shuffled with `seed`), each with `_rows` = the row indices."""
    from adapterkit.data import PadCollator

    order = list(range(len(rows)))
    if shuffle:
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    collate = PadCollator(pad_id)
    out = []
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        out.append({**collate([rows[j] for j in idx]), "_rows": idx})
    return out


def cycle(make: Callable[[int], list[dict]]) -> Iterator[dict]:
    """Endless batches: a new shuffle (seed = pass number) every pass."""
    epoch = 0
    while True:
        yield from make(epoch)
        epoch += 1


def model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def fit(params: Iterable[nn.Parameter], steps: int, loss_fn: Callable[[int], torch.Tensor], lr: float,
        warmup_ratio: float = 0.1, title: str = "train") -> list[float]:
    """AdamW with linear warm-up/decay over `steps` calls of loss_fn(step); returns the losses.
    Progress (a bar, or plain lines off a terminal) is reported under `title`."""
    from adapterkit.progress import progress

    params = list(params)
    optimizer = torch.optim.AdamW(params, lr=lr)
    warmup = int(steps * warmup_ratio)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / (warmup + 1) if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    losses = []
    with progress(title, steps) as bar:
        for step in range(steps):
            loss = loss_fn(step)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar(loss=sum(losses[-20:]) / len(losses[-20:]))
    return losses


def steps_for(n_rows: int, spec: TransferSpec) -> int:
    return max(1, math.ceil(n_rows / spec.batch_size) * spec.epochs) if not spec.quick else 4


@torch.inference_mode()
@torch.no_grad()
def predict(model, rows: list[dict], pad_id: int, batch_size: int = 64, title: str = "predict") -> torch.Tensor:
    """Logits (N, C) in row order (progress reported under `title`)."""
    from adapterkit.progress import progress

    was_training = model.training
    model.eval()
    logits = torch.empty(len(rows), model.config.num_labels)
    with progress(title, -(-len(rows) // batch_size)) as bar:
        for batch in batches(rows, batch_size, pad_id, seed=0, shuffle=False):
            logits[batch["_rows"]] = model(**model_inputs(batch)).logits.float()
            bar(examples=len(batch["_rows"]))
    model.train(was_training)
    return logits


def score(model, rows: list[dict], pad_id: int) -> dict[str, float]:
    """Accuracy and binary F1 on labelled rows."""
    from adapterkit.metrics import accuracy, f1

    preds = predict(model, rows, pad_id).argmax(-1).numpy()
    labels = torch.tensor([r["labels"] for r in rows]).numpy()
    return {"accuracy": accuracy(preds, labels), "f1": f1(preds, labels)}
