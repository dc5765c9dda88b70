"""Logits of a classifier over rows, and the accuracy/F1 scores the algorithms report."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from adapterkit.toolkit.batching import batches, model_inputs
from adapterkit.toolkit.features import eval_mode, in_row_order


def logits_in_row_order(model: nn.Module, batched: Iterable[dict], n: int, bar=None) -> torch.Tensor:
    """A sequence classifier's logits (n, C) over batches carrying `_rows`, in row order (eval
    mode, restored afterwards); `bar` (adapterkit.progress) is told each batch's row count."""
    def logits(batch: dict) -> torch.Tensor:
        if bar is not None:
            bar(examples=len(batch["_rows"]))
        return model(**model_inputs(batch)).logits

    with eval_mode(model):
        return in_row_order(batched, logits, n)


def predict_logits(model: nn.Module, rows: list[dict], pad_id: int = 0, batch_size: int = 64,
                   title: str = "predict") -> torch.Tensor:
    """A sequence classifier's logits (N, C) on encoded rows, in row order (progress under `title`)."""
    from adapterkit.progress import progress

    with progress(title, -(-len(rows) // batch_size)) as bar:
        return logits_in_row_order(model, batches(rows, batch_size, pad_id), len(rows), bar)




def classification_scores(logits: torch.Tensor, rows: list[dict]) -> dict[str, float]:
    """Accuracy and binary F1 of logits (N, C) against the rows' labels."""
    from adapterkit.data.metrics import accuracy, f1

    preds = logits.argmax(-1).numpy()
    labels = torch.tensor([r["labels"] for r in rows]).numpy()
    return {"accuracy": accuracy(preds, labels), "f1": f1(preds, labels)}


def score(model: nn.Module, rows: list[dict], pad_id: int = 0) -> dict[str, float]:
    """Accuracy and binary F1 of a sequence classifier on labelled rows."""
    return classification_scores(predict_logits(model, rows, pad_id), rows)
