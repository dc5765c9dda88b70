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

from adapterkit.transfer.common import load_rows
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
    rows = load_rows(name, spec, tokenizer, max_rows)
    return MetaTask(name, rows.num_labels, rows.train, rows.dev, rows.test)
