"""Seeded, stratified splits and few-shot samples of a labelled dataset."""
from __future__ import annotations

import random
from collections.abc import Hashable, Sequence

from adapterkit.errors import AdapterkitError


def _groups(rows: list[int], keys: Sequence[Hashable] | None) -> list[list[int]]:
    """`rows` grouped by equal key, groups in order of first appearance (singletons without keys)."""
    if keys is None:
        return [[i] for i in rows]
    by_key: dict[Hashable, list[int]] = {}
    for i in rows:
        by_key.setdefault(keys[i], []).append(i)
    return list(by_key.values())


def stratified_split(labels: Sequence[int], sizes: Sequence[int], seed: int = 0,
                     keys: Sequence[Hashable] | None = None) -> list[list[int]]:
    """Row indices of each split; each split holds each label in proportion to its size.

    Per label, rows with equal `keys` (e.g. duplicate texts) form one group, so
    they never land in two splits. The groups are shuffled with
    `random.Random(f"{seed}/{label}")`; split k (in order) then takes the
    groups in shuffled order that still fit its share
    `round(sizes[k] * count(label) / len(labels))`. Rows beyond `sum(sizes)`
    are left out.
    """
    if sum(sizes) > len(labels):
        raise AdapterkitError(f"split sizes {tuple(sizes)} exceed the {len(labels)} rows")
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    parts: list[list[int]] = [[] for _ in sizes]
    for label in sorted(by_label):
        rows = by_label[label]
        pending = _groups(rows, keys)
        random.Random(f"{seed}/{label}").shuffle(pending)
        for k, size in enumerate(sizes):
            share, taken, rest = round(size * len(rows) / len(labels)), 0, []
            for group in pending:
                if taken + len(group) <= share:
                    parts[k] += group
                    taken += len(group)
                else:
                    rest.append(group)
            pending = rest
    return [sorted(p) for p in parts]


def few_shot(dataset, shots: int, seed: int = 0, label_column: str = "label"):
    """`shots` rows of `dataset`, balanced over labels, chosen with `seed`.

    Each label gets `shots // n_labels` rows (the first `shots % n_labels`
    labels one more). Per label the rows are shuffled once with
    `random.Random(f"{seed}/{label}")`, so a smaller shot count with the same
    seed is a subset of a larger one.
    """
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(dataset[label_column]):
        by_label.setdefault(label, []).append(i)
    chosen = []
    for k, label in enumerate(sorted(by_label)):
        want = shots // len(by_label) + (1 if k < shots % len(by_label) else 0)
        rows = by_label[label]
        if want > len(rows):
            raise AdapterkitError(f"{shots} shots need {want} rows of label {label}, only {len(rows)} exist")
        random.Random(f"{seed}/{label}").shuffle(rows)
        chosen += rows[:want]
    return dataset.select(sorted(chosen))
