"""Padded batches of encoded rows; every batch carries `_rows`, the indices of its rows."""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def pad(seqs: Sequence, value: float = 0, dtype: torch.dtype | None = None,
        length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad sequences (lists of ids, or (T_i, ...) tensors) to `length` (default: the
    longest): (B, T, ...) and the (B, T) mask of real positions."""
    items = [s if isinstance(s, torch.Tensor) else torch.tensor(list(s), dtype=dtype or torch.long) for s in seqs]
    longest = length or max(len(s) for s in items)
    out = torch.full((len(items), longest, *items[0].shape[1:]), value, dtype=dtype or items[0].dtype)
    mask = torch.zeros(len(items), longest, dtype=torch.long)
    for i, s in enumerate(items):
        out[i, : len(s)], mask[i, : len(s)] = s, 1
    return out, mask


def collate(rows: Sequence[dict], pad_id: int = 0, regression: bool = False, label_pad: int | None = None) -> dict:
    """A batch of tensors padded to the longest row: input_ids (pad_id), other id columns (0), labels:
    float32 with `regression` (also multi-hot rows), else int64; with `label_pad`, per-token label
    sequences padded with it to the inputs' length (-100: ignored by the loss)."""
    batch = {}
    for key in MODEL_INPUTS:
        if key in rows[0]:
            batch[key] = pad([r[key] for r in rows], pad_id if key == "input_ids" else 0)[0]  # (B, T)
    if "labels" in rows[0]:
        labels, dtype = [r["labels"] for r in rows], torch.float32 if regression else torch.long
        if label_pad is None:
            batch["labels"] = torch.tensor(labels, dtype=dtype)  # (B,) or (B, C)
        else:
            width = batch["input_ids"].shape[1] if "input_ids" in batch else None
            batch["labels"] = pad(labels, label_pad, dtype, width)[0]  # (B, T)
    return batch


def shuffled(n: int, seed: int | None) -> list[int]:
    """0..n-1, permuted with torch's generator seeded `seed` (None: in order)."""
    if seed is None:
        return list(range(n))
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def batches(rows: Sequence, batch_size: int, pad_id: int = 0, seed: int | None = None, *,
            make: Callable[[list], dict] | None = None, order: Sequence[int] | None = None) -> list[dict]:
    """Batches of `rows` in `order` (default: shuffled with `seed`, or as given when seed is
    None), each `make(rows_of_batch)` (default: `collate` with `pad_id`) plus `_rows`."""
    make = make or (lambda part: collate(part, pad_id))
    order = list(order) if order is not None else shuffled(len(rows), seed)
    return [{**make([rows[j] for j in order[i:i + batch_size]]), "_rows": order[i:i + batch_size]}
            for i in range(0, len(order), batch_size)]


def cycle(make: Callable[[int], Iterator[dict]]) -> Iterator[dict]:
    """Endless batches: make(pass) for pass 0, 1, 2, ... (a new shuffle every pass)."""
    epoch = 0
    while True:
        yield from make(epoch)
        epoch += 1


def model_inputs(batch: dict) -> dict:
    """The keys a Hugging Face model's forward takes from a batch."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}
