"""The tasks a meta-learner sees: sentiment domains or GLUE tasks, encoded, with fixed splits.

A name is a domain when `adapterkit.data.load_domain_splits` knows it (books, dvd, electronics,
kitchen, sst2, or one added from a domain file: fixed seeded train/dev/test) and a GLUE task
otherwise (cola, mrpc, rte, ...).
GLUE test labels are not public, so a GLUE task's `test` is its dev file (the meta-learning
algorithms select nothing on held-out data: they train for a fixed number of steps) and its
`dev` is empty. `spec.data_dir` is the Amazon folder for domains and the GLUE folder for tasks.

Sources are capped at `max_rows` training rows (a seeded random subset, label proportions kept
in expectation); the target keeps `spec.target_shots` rows balanced over labels (`few_shot`).
"""
from __future__ import annotations

from dataclasses import dataclass

from adapterkit.transfer.common import QUICK_ROWS
from adapterkit.transfer.registry import TransferSpec


@dataclass
class MetaTask:
    """Encoded train/dev/test rows of one domain or task and its number of classes."""

    name: str
    num_labels: int
    train: list[dict]
    dev: list[dict]
    test: list[dict]


def load_meta_tasks(spec: TransferSpec, tokenizer, max_rows: int | None = None,
                    names: list[str] | None = None) -> dict[str, MetaTask]:
    """`spec.source` (capped at `max_rows` train rows) and `spec.target` (`target_shots` rows)."""
    names = names if names is not None else [*spec.source, spec.target]
    return {name: load_meta_task(name, spec, tokenizer, None if name == spec.target else max_rows) for name in names}


def load_meta_task(name: str, spec: TransferSpec, tokenizer, max_rows: int | None = None) -> MetaTask:
    from adapterkit.data import encode, few_shot

    splits, task, num_labels = _raw_splits(name, spec.data_dir)
    parts = {}
    for split, data in splits.items():
        if split == "train" and name == spec.target and spec.target_shots:
            data = few_shot(data, spec.target_shots, seed=spec.seed)
        elif split == "train" and max_rows is not None and len(data) > max_rows:
            data = data.shuffle(seed=spec.seed).select(range(max_rows))
        if spec.quick:
            data = data.shuffle(seed=spec.seed).select(range(min(QUICK_ROWS, len(data))))
        columns = [c for c in ("text", "text_a", "text_b", "label") if c in data.column_names]
        parts[split] = [dict(r) for r in encode(data.select_columns(columns), tokenizer, task, spec.max_seq_len)]
    return MetaTask(name, num_labels, parts["train"], parts.get("dev", []), parts["test"])


def _raw_splits(name: str, data_dir: str | None):
    """({'train', 'dev'?, 'test'} datasets, task used for encoding, number of classes)."""
    from adapterkit.data import DOMAINS, get_task, load_domain_splits, load_glue
    from adapterkit.data.domains import is_user_domain

    if name in DOMAINS or name == "sst2" or is_user_domain(name):
        splits = load_domain_splits(name, seed=0, data_dir=data_dir)
        return {s: splits[s] for s in ("train", "dev", "test")}, "sst2", 2
    task = get_task(name)
    if task.is_regression:
        from adapterkit.errors import AdapterkitError

        raise AdapterkitError(f"meta-learning needs classification tasks; {name} is a regression task")
    return {"train": load_glue(task, "train", data_dir), "test": load_glue(task, "dev", data_dir)}, task, task.num_labels
