"""Sentence features through chosen adapters, with the frozen bottom layers computed once.

`Encoder.features(batch, adapters)` activates `adapters` and returns the mean-pooled last
hidden state (B, H): the representation every feature- and instance-based algorithm here reads
(all-MiniLM-L6-v2 was trained as a mean-pooling sentence encoder). Heads are the algorithms' own.

Frozen prefix: when adapters sit only in the layers from `split` up (`BottleneckConfig.top_n`),
the embeddings and layers below `split` compute the same function at every step, so
`Encoder.prepare(rows)` runs them once per row (cached per process, keyed by the backbone and
the token ids) and later forwards run only the top layers on the cached hidden states. This is
exact (tested against the full forward) and is what makes the transfer benchmark fit on a CPU.
The pieces come from `adapterkit.slicing.StackSlicer`, so it works on every single-stack family.
"""
from __future__ import annotations

import torch
from torch import nn

from adapterkit.model import list_adapters, set_active
from adapterkit.slicing import StackSlicer
from adapterkit.toolkit.batching import batches, pad
from adapterkit.toolkit.features import adapters_off, eval_mode, masked_mean

_PREFIX_CACHE: dict[tuple, torch.Tensor] = {}  # (backbone key, split, token ids) -> (T, H)


def clear_prefix_cache() -> None:
    _PREFIX_CACHE.clear()


class Encoder:
    """Mean-pooled features of `model` through named adapters; `split` = first adapted layer
    (None: no prefix cache, every forward runs the whole model)."""

    def __init__(self, model: nn.Module, pad_id: int, split: int | None = None):
        self.model, self.pad_id, self.split = model, pad_id, split or None
        self.base = model.base_model
        if self.split is not None:
            self.slicer = StackSlicer(model)
            self._key = (type(model).__name__, float(model.get_input_embeddings().weight[:64].detach().sum()))

    # --- data -------------------------------------------------------------------------------
    def prepare(self, rows: list[dict]) -> list[dict]:
        """Rows with `prefix` (T, H) = the hidden state entering layer `split` (no-op without split)."""
        if self.split is None:
            return rows
        keys = [(*self._key, self.split, tuple(r["input_ids"])) for r in rows]
        missing = sorted({k for k in keys if k not in _PREFIX_CACHE}, key=lambda k: len(k[-1]))
        for i in range(0, len(missing), 64):
            chunk = missing[i:i + 64]
            hidden, mask = self._bottom(chunk)
            for k, h, m in zip(chunk, hidden, mask):
                _PREFIX_CACHE[k] = h[: int(m.sum())].clone()
        return [{**r, "prefix": _PREFIX_CACHE[k]} for r, k in zip(rows, keys)]

    def collate(self, rows: list[dict]) -> dict:
        """A padded batch: input_ids/attention_mask (or prefix/attention_mask) and labels."""
        ids, mask = pad([r["input_ids"] for r in rows], self.pad_id)  # (B, T)
        batch = {"attention_mask": mask, "labels": torch.tensor([r["labels"] for r in rows])}
        if self.split is not None:
            batch["prefix"] = pad([r["prefix"] for r in rows])[0]  # (B, T, H)
        else:
            batch["input_ids"] = ids
        return batch

    def batches(self, rows: list[dict], batch_size: int, seed: int | None) -> list[dict]:
        """Batches of `rows` (shuffled with `seed`; None keeps the order), each with `_rows` indices."""
        return batches(rows, batch_size, seed=seed, make=self.collate)

    # --- forward ----------------------------------------------------------------------------
    def features(self, batch: dict, adapters: list[str], composition: str = "stack") -> torch.Tensor:
        """Mean-pooled last hidden state (B, H) with `adapters` active."""
        if adapters or list_adapters(self.model):
            set_active(self.model, adapters, composition)
        mask = batch["attention_mask"]
        if self.split is None:
            hidden = self.base(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        else:
            hidden = self.slicer.last_hidden(batch["prefix"], mask, self.split)
        return masked_mean(hidden, mask)

    @torch.no_grad()
    def _bottom(self, keys: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = pad([list(k[-1]) for k in keys], self.pad_id)  # (B, T)
        # no adapters, no dropout: the cached prefix is the frozen function itself
        with adapters_off(self.model), eval_mode(self.model):
            return self.slicer.run(self.slicer.embed(ids, mask), mask, 0, self.split), mask
