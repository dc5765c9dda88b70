"""Sentence features through chosen adapters, with the frozen bottom layers computed once.

`Encoder.features(batch, adapters)` activates `adapters` and returns the mean-pooled last
hidden state (B, H): the representation every feature- and instance-based algorithm here reads
(all-MiniLM-L6-v2 was trained as a mean-pooling sentence encoder). Heads are the algorithms' own.

Frozen prefix: when adapters sit only in the layers from `split` up (`BottleneckConfig.top_n`),
the embeddings and layers below `split` compute the same function at every step, so
`Encoder.prepare(rows)` runs them once per row (cached per process, keyed by the backbone and
the token ids) and later forwards run only the top layers on the cached hidden states. This is
exact (tested against the full forward) and is what makes the transfer benchmark fit on a CPU.
It swaps `base_model.embeddings` for a pass-through and the layer list for its top slice for
the duration of one forward, so it needs a BERT-like encoder (`base_model.embeddings`).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from adapterkit.errors import AdapterkitError
from adapterkit.model import list_adapters, set_active
from adapterkit.toolkit.batching import batches, pad
from adapterkit.toolkit.features import adapters_off, eval_mode, masked_mean
from adapterkit.sites import find_sites

_PREFIX_CACHE: dict[tuple, torch.Tensor] = {}  # (backbone key, split, token ids) -> (T, H)


def clear_prefix_cache() -> None:
    _PREFIX_CACHE.clear()


class _PassThrough(nn.Module):
    """Stands in for the embeddings: the cached hidden states come in as `inputs_embeds`."""

    def forward(self, input_ids=None, inputs_embeds=None, **kwargs):
        return inputs_embeds


class Encoder:
    """Mean-pooled features of `model` through named adapters; `split` = first adapted layer
    (None: no prefix cache, every forward runs the whole model)."""

    def __init__(self, model: nn.Module, pad_id: int, split: int | None = None):
        self.model, self.pad_id, self.split = model, pad_id, split or None
        self.base = model.base_model
        if self.split is not None:
            if not isinstance(getattr(self.base, "embeddings", None), nn.Module):
                raise AdapterkitError("the frozen-prefix cache needs a BERT-like model (base_model.embeddings)")
            layer_path = find_sites(model)[0].layer_path  # e.g. "bert.encoder.layer.0"
            holder, self._attr = layer_path.rsplit(".", 2)[0], layer_path.rsplit(".", 2)[1]
            self._holder = model.get_submodule(holder)
            self._key = (type(model).__name__, float(self.base.embeddings.word_embeddings.weight[:64].sum()))

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
            with self._layers(slice(self.split, None), skip_embeddings=True):
                hidden = self.base(inputs_embeds=batch["prefix"], attention_mask=mask).last_hidden_state
        return masked_mean(hidden, mask)

    @torch.no_grad()
    def _bottom(self, keys: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [{"input_ids": list(k[-1]), "labels": 0} for k in keys]
        batch = Encoder(self.model, self.pad_id).collate(rows)
        # no adapters, no dropout: the cached prefix is the frozen function itself
        with adapters_off(self.model), eval_mode(self.model), self._layers(slice(0, self.split), skip_embeddings=False):
            hidden = self.base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return hidden, batch["attention_mask"]

    @contextmanager
    def _layers(self, part: slice, skip_embeddings: bool):
        layers, embeddings = getattr(self._holder, self._attr), self.base.embeddings
        setattr(self._holder, self._attr, nn.ModuleList(list(layers)[part]))
        if skip_embeddings:
            self.base.embeddings = _PassThrough()
        try:
            yield
        finally:
            setattr(self._holder, self._attr, layers)
            self.base.embeddings = embeddings

