"""Trunk caching: compute the frozen layers below the lowest adapter once, not every epoch.

When adapters (and the head) start at layer k > 0 (`--layers topN`, `--leave-out`, AdapterDrop's
dropped lower layers), the embeddings and layers 0..k-1 are frozen and, with the backbone's
dropout off (the default), compute the same states for an example in every epoch. `TrunkCache`
keeps those states, the output of layer k-1, per example: the first time a row is seen they are
computed (no grad, in the run's precision) and stored without padding; afterwards a batch is
assembled from the store, padded with zeros, and only layers k.. and the head run, through
adapterkit.slicing's StackSlicer, which keeps each family's mask and position handling.

Rows are keyed by their tokens (input ids and token type ids, unpadded), so any batching, any
length grouping and any shuffle order find them; a padded position never reaches a real token
(the attention mask hides it), so the assembled batch gives the real tokens the states the full
forward gives them. Stored states take `memory_mb` of memory at most; beyond it they go to a
file in `folder` (read back per batch), removed by `close()`.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from adapterkit.errors import AdapterkitError


def trunk_depth(model, slicer) -> int:
    """k: the first layer that holds an active adapter site (above AdapterDrop's dropped layers)
    or a trainable parameter (0 when the embeddings train, the number of layers when only the
    head does)."""
    from adapterkit.model import BANK, head_parameters

    from adapterkit.compose.drop import _ROBUST

    if model in _ROBUST:
        raise AdapterkitError("trunk caching: robust AdapterDrop draws the dropped layers per batch, so the frozen "
                              "trunk changes between batches; use a fixed k (set_adapter_drop(model, k))")
    depth = slicer.num_layers
    bank = getattr(model, BANK, None)
    dropped = getattr(bank, "drop_layers", 0)  # AdapterDrop: sites below this pass their input unchanged
    for name in getattr(bank, "active", []):
        depth = min([depth, *(max(site.layer, dropped) for site in bank.plans[name].sites)])
    layer_of = {id(p): i for i, layer in enumerate(slicer.layers) for p in layer.parameters()}
    head = {id(p) for p in head_parameters(model).values()}
    for name, p in model.named_parameters():
        if not p.requires_grad or name.startswith(f"{BANK}.") or id(p) in head:
            continue
        if id(p) not in layer_of:
            return 0  # a trainable parameter below the layers (embeddings)
        depth = min(depth, layer_of[id(p)])
    return depth


class TrunkCache:
    """States entering layer `start`, per example; `logits(batch)` runs the rest of the model."""

    def __init__(self, model, precision=None, memory_mb: float = 2048.0, folder: str | Path | None = None):
        from adapterkit.precision import Precision
        from adapterkit.slicing import StackSlicer

        if not type(model).__name__.endswith("ForSequenceClassification"):
            raise AdapterkitError(f"trunk caching serves sequence classification; {type(model).__name__} is not")
        self.model, self.slicer = model, StackSlicer(model)
        self.start = trunk_depth(model, self.slicer)
        if self.start == 0:
            raise AdapterkitError("trunk caching: adapters or trainable weights start at layer 0, so there is no "
                                  "frozen trunk to cache (use --layers topN or --leave-out)")
        _check_deterministic(model, self.slicer, self.start)
        self.precision = precision or Precision()
        self.budget = memory_mb * 2**20
        self.folder = Path(folder) if folder else None
        self.memory: dict[bytes, torch.Tensor] = {}
        self.on_disk: dict[bytes, tuple[int, int]] = {}  # key -> (offset, rows)
        self.bytes_in_memory = 0
        self._file = None
        self.hits = self.misses = 0

    def logits(self, batch: dict) -> torch.Tensor:
        """The model's logits for `batch` (input_ids, attention_mask[, token_type_ids])."""
        mask = batch["attention_mask"]
        states = self.states(batch)
        states = self.slicer.run(states, mask, self.start, self.slicer.num_layers)
        return self.slicer.head(states, mask)

    def states(self, batch: dict) -> torch.Tensor:
        """(B, T, H): the states entering layer `start`, zero at padded positions."""
        ids, real = batch["input_ids"], batch["attention_mask"].bool()
        keys = [self._key(batch, i, real[i]) for i in range(len(ids))]
        missing = [i for i, key in enumerate(keys) if key not in self.memory and key not in self.on_disk]
        self.hits, self.misses = self.hits + len(keys) - len(missing), self.misses + len(missing)
        if missing:
            self._compute(batch, missing, keys)
        out = torch.zeros(*ids.shape, self.slicer.hidden, dtype=self.precision.dtype)
        for i, key in enumerate(keys):
            out[i, real[i]] = self._get(key)
        return out

    def loss(self, batch: dict) -> torch.Tensor:
        return sequence_classification_loss(self.model.config, self.logits(batch), batch["labels"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            os.unlink(self._file.name)
            self._file = None
        self.memory.clear()
        self.on_disk.clear()

    @torch.no_grad()
    def _compute(self, batch: dict, rows: list[int], keys: list[bytes]) -> None:
        index = torch.tensor(rows)
        part = {k: batch[k][index] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        mask = part["attention_mask"]
        with self.precision.autocast():
            states = self.slicer.embed(part["input_ids"], mask, part.get("token_type_ids"))
            states = self.slicer.run(states, mask, 0, self.start).to(self.precision.dtype)
        for j, i in enumerate(rows):
            self._put(keys[i], states[j, mask[j].bool()].clone())

    def _put(self, key: bytes, states: torch.Tensor) -> None:
        size = states.numel() * states.element_size()
        if self.bytes_in_memory + size <= self.budget or self.folder is None:
            self.memory[key] = states
            self.bytes_in_memory += size
            return
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._file = tempfile.NamedTemporaryFile(dir=self.folder, prefix="trunk-", suffix=".bin", delete=False)
            self._dtype = states.dtype
        self._file.seek(0, os.SEEK_END)
        self.on_disk[key] = (self._file.tell(), states.shape[0])
        self._file.write(states.contiguous().view(torch.uint8).numpy().tobytes())

    def _get(self, key: bytes) -> torch.Tensor:
        if key in self.memory:
            return self.memory[key]
        offset, rows = self.on_disk[key]
        width = self.slicer.hidden * torch.empty((), dtype=self._dtype).element_size()
        self._file.seek(offset)
        raw = bytearray(self._file.read(rows * width))
        return torch.frombuffer(raw, dtype=self._dtype).view(rows, self.slicer.hidden)

    @staticmethod
    def _key(batch: dict, i: int, real: torch.Tensor) -> bytes:
        key = batch["input_ids"][i, real].numpy().tobytes()
        if "token_type_ids" in batch:
            key += b"|" + batch["token_type_ids"][i, real].numpy().tobytes()
        return key


def _check_deterministic(model, slicer, start: int) -> None:
    """Refuse dropout below layer `start` (--backbone-dropout): the trunk would differ per epoch."""
    upper = {id(m) for layer in slicer.layers[start:] for m in layer.modules()}
    for name, module in getattr(model, "base_model", model).named_modules():
        if id(module) in upper:
            continue
        rate = module.p if isinstance(module, torch.nn.Dropout) else getattr(module, "attention_dropout", 0.0)
        if isinstance(rate, float) and rate > 0:
            raise AdapterkitError(f"trunk caching: {name or 'the backbone'} below layer {start} uses dropout "
                                  f"({rate}), so the frozen layers differ every epoch; drop --backbone-dropout")


def sequence_classification_loss(config, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss transformers' *ForSequenceClassification computes from logits and labels."""
    problem = config.problem_type
    if problem is None:
        problem = "regression" if config.num_labels == 1 else \
            "single_label_classification" if labels.dtype in (torch.long, torch.int) else "multi_label_classification"
    if problem == "regression":
        return F.mse_loss(logits.squeeze(-1) if config.num_labels == 1 else logits, labels.to(logits.dtype))
    if problem == "single_label_classification":
        return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
