"""Logits of a classifier over rows, and the accuracy/F1 scores the algorithms report."""
from __future__ import annotations

import torch
from torch import nn

from adapterkit.toolkit.batching import batches, model_inputs
from adapterkit.toolkit.features import eval_mode, in_row_order


def predict_logits(model: nn.Module, rows: list[dict], pad_id: int = 0, batch_size: int = 64,
                   title: str = "predict") -> torch.Tensor:
    """A sequence classifier's logits (N, C) in row order (eval mode, restored afterwards;
    progress reported under `title`)."""
    from adapterkit.progress import progress

    with progress(title, -(-len(rows) // batch_size)) as bar, eval_mode(model):
        def logits(batch: dict) -> torch.Tensor:
            bar(examples=len(batch["_rows"]))
            return model(**model_inputs(batch)).logits

        return in_row_order(batches(rows, batch_size, pad_id), logits, len(rows))


def classification_scores(logits: torch.Tensor, rows: list[dict]) -> dict[str, float]:
    """Accuracy and binary F1 of logits (N, C) against the rows' labels."""
    from adapterkit.metrics import accuracy, f1

    preds = logits.argmax(-1).numpy()
    labels = torch.tensor([r["labels"] for r in rows]).numpy()
    return {"accuracy": accuracy(preds, labels), "f1": f1(preds, labels)}


def score(model: nn.Module, rows: list[dict], pad_id: int = 0) -> dict[str, float]:
    """Accuracy and binary F1 of a sequence classifier on labelled rows."""
    return classification_scores(predict_logits(model, rows, pad_id), rows)
