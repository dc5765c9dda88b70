"""Split: different adapters for different token spans (AdapterHub's Split).

Adapter i runs on span i of every sequence; the other tokens pass its site unchanged:

    out = h + sum_i m_i * (a_i(h) - h),   m_i = 1 on the tokens of span i, else 0

Spans are either fixed token positions (`splits=[p]`: tokens [0, p) to the first adapter,
[p, T) to the second) or the input's segments (`segments=True`: token_type_ids 0 to the first
adapter, 1 to the second, e.g. the two sentences of a pair; the forward must get
token_type_ids). Every adapter runs on the whole sequence and its update is masked, so a
split costs what "parallel" costs. Adapters may differ in plans and sizes.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from adapterkit.errors import AdapterkitError
from adapterkit.model import register_composition


class Split:
    def __init__(self, model: nn.Module, bank, names: list[str], splits: Sequence[int] | None, segments: bool):
        if (splits is None) == (not segments):
            raise AdapterkitError("split: give splits=[positions] or segments=True (one of them)")
        if splits is not None and (len(splits) != len(names) - 1 or list(splits) != sorted(splits)):
            raise AdapterkitError(f"split: {len(names)} adapters need {len(names) - 1} increasing positions, got {list(splits)}")
        self.boundaries = None if splits is None else torch.tensor(list(splits))
        self.options = {"segments": True} if segments else {"splits": list(splits)}
        self.n = len(names)
        self.index: dict[str, list[int]] = {}  # site path -> adapter index of each chain entry
        for i, name in enumerate(names):
            for path in bank.plans[name].group_of():
                self.index.setdefault(path, []).append(i)
        self.segments: torch.Tensor | None = None
        base = getattr(model, "base_model", model)  # called by the task model, or directly
        self._handle = base.register_forward_pre_hook(self._capture, with_kwargs=True) if segments else None

    def _capture(self, module, args, kwargs):
        self.segments = kwargs.get("token_type_ids")

    def span_of(self, h: torch.Tensor) -> torch.Tensor:
        """Span index of every token: (B, T) or (T,)."""
        if self.boundaries is not None:
            positions = torch.arange(h.shape[-2], device=h.device)
            return torch.bucketize(positions, self.boundaries.to(h.device), right=True)
        if self.segments is None:
            raise AdapterkitError("split by segments needs token_type_ids in the model's inputs (BERT-like tokenizers "
                                  "give them for sentence pairs); use splits=[position] otherwise")
        return self.segments.clamp(max=self.n - 1)

    def __call__(self, path: str, h: torch.Tensor, chain: list[nn.Module]) -> torch.Tensor:
        span = self.span_of(h).unsqueeze(-1)  # (B, T, 1) or (T, 1)
        return h + sum((span == i).to(h.dtype) * (adapter(h) - h) for i, adapter in zip(self.index[path], chain))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


@register_composition("split")
def split(model: nn.Module, bank, names: list[str], splits: Sequence[int] | None = None, segments: bool = False) -> Split:
    return Split(model, bank, names, splits, segments)
