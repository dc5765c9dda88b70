"""What every transfer algorithm shares besides adapterkit.toolkit: domain data, the model, step counts.

An algorithm composes these and the toolkit (batching, pooling, frozen features, scoring,
`fit`) with adapter operations (`add_adapter`, `set_active`, `adapter_parameters`) and its own loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from adapterkit import backbone
from adapterkit.errors import AdapterkitError
from adapterkit.transfer.registry import TransferSpec

QUICK_ROWS = 32  # rows per split in --quick mode


@dataclass
class DomainData:
    """Encoded train/dev/test rows of one domain (lists of dicts ready for toolkit.batching.collate)."""

    name: str
    train: list[dict]
    dev: list[dict]
    test: list[dict]
    num_labels: int = 2


def load_domains(spec: TransferSpec, tokenizer, max_rows: int | None = None, eval_rows: int | None = None,
                 sample_seed: int | None = None) -> dict[str, DomainData]:
    """Source domains in full (or QUICK_ROWS), the target with `target_shots` train rows; the
    limits and the sampling seed as in `load_rows`."""
    return {name: load_rows(name, spec, tokenizer, max_rows, tasks=False, eval_rows=eval_rows, sample_seed=sample_seed)
            for name in [*spec.source, spec.target]}


def load_rows(name: str, spec: TransferSpec, tokenizer, max_rows: int | None = None, tasks: bool = True,
              eval_rows: int | None = None, sample_seed: int | None = None) -> DomainData:
    """One domain (fixed seeded split) or, with `tasks`, a GLUE classification task (its dev file
    as `test`), encoded: the target's train split cut to `spec.target_shots` rows (balanced),
    other train splits to `max_rows` and dev/test to `eval_rows` (a random sample seeded
    `sample_seed`, default `spec.seed`), every split to QUICK_ROWS in quick mode."""
    from adapterkit.data import encode, few_shot

    splits, task, num_labels = _raw_splits(name, spec.data_dir, tasks)
    seed = spec.seed if sample_seed is None else sample_seed
    parts = {}
    for split, data in splits.items():
        limit = max_rows if split == "train" else eval_rows
        if split == "train" and name == spec.target and spec.target_shots:
            data = few_shot(data, spec.target_shots, seed=spec.seed)
        elif limit is not None and len(data) > limit:  # splits are stored label by label: sample, do not cut
            data = data.shuffle(seed=seed).select(range(limit))
        if spec.quick:
            data = data.shuffle(seed=spec.seed).select(range(min(QUICK_ROWS, len(data))))
        columns = [c for c in ("text", "text_a", "text_b", "label") if c in data.column_names]
        parts[split] = [dict(r) for r in encode(data.select_columns(columns), tokenizer, task, spec.max_seq_len)]
    return DomainData(name, parts["train"], parts.get("dev", []), parts["test"], num_labels)


def _raw_splits(name: str, data_dir: str | None, tasks: bool):
    """({'train', 'dev'?, 'test'} datasets, task used for encoding, number of classes)."""
    from adapterkit.data import DOMAINS, get_task, load_domain_splits, load_glue
    from adapterkit.data.domains import is_user_domain

    if name in DOMAINS or name == "sst2" or is_user_domain(name) or not tasks:
        splits = load_domain_splits(name, seed=0, data_dir=data_dir)  # an unknown domain: one line
        return {s: splits[s] for s in ("train", "dev", "test")}, "sst2", 2
    task = get_task(name)
    if task.is_regression:
        raise AdapterkitError(f"meta-learning needs classification tasks; {name} is a regression task")
    return {"train": load_glue(task, "train", data_dir), "test": load_glue(task, "dev", data_dir)}, task, task.num_labels


def make_model(spec: TransferSpec, num_labels: int = 2):
    model = backbone.load_model(spec.model, num_labels=num_labels)
    tokenizer = backbone.load_tokenizer(spec.model)
    return model, tokenizer


def steps_for(n_rows: int, spec: TransferSpec) -> int:
    return max(1, math.ceil(n_rows / spec.batch_size) * spec.epochs) if not spec.quick else 4
