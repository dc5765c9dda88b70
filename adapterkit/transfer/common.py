"""What every transfer algorithm shares besides adapterkit.toolkit: domain data, the model, step counts.

An algorithm composes these and the toolkit (batching, pooling, frozen features, scoring,
`fit`) with adapter operations (`add_adapter`, `set_active`, `adapter_parameters`) and its own loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from adapterkit import backbone
from adapterkit.transfer.registry import TransferSpec

QUICK_ROWS = 32  # rows per split in --quick mode


@dataclass
class DomainData:
    """Encoded train/dev/test rows of one domain (lists of dicts ready for toolkit.batching.collate)."""

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


def steps_for(n_rows: int, spec: TransferSpec) -> int:
    return max(1, math.ceil(n_rows / spec.batch_size) * spec.epochs) if not spec.quick else 4
