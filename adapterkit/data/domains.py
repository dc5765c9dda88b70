"""Sentiment domains for transfer learning, all as text / label / domain datasets.

`load_domain_splits(name)` gives a train/dev/test `DatasetDict` for an Amazon
domain (books, dvd, electronics, kitchen; seeded stratified split, see
`adapterkit.data.amazon`) or for `sst2`, the far source domain: GLUE SST-2
train as train, and its dev set cut in half (seeded, stratified) into dev
and test, since GLUE's SST-2 test labels are not public.
"""
from __future__ import annotations

from pathlib import Path

from adapterkit.data.amazon import DOMAINS, amazon_splits
from adapterkit.data.splits import stratified_split
from adapterkit.errors import AdapterkitError

SST2 = "sst2"


def sst2_as_domain(split: str = "train", data_dir: str | Path | None = None, limit: int | None = None):
    """SST-2 ('train' or 'dev') renamed to text / label / domain='sst2'."""
    from adapterkit.data.glue import load_glue

    data = load_glue(SST2, split, data_dir=data_dir, limit=limit).rename_column("text_a", "text")
    return data.add_column("domain", [SST2] * len(data))


def load_domain_splits(name: str, seed: int = 0, data_dir: str | Path | None = None):
    """Train/dev/test of an Amazon domain or of `sst2`.

    `data_dir` is the Amazon folder for Amazon domains and the GLUE folder for sst2.
    """
    import datasets

    if name in DOMAINS:
        return amazon_splits(name, seed=seed, data_dir=data_dir)
    if name != SST2:
        raise AdapterkitError(f"unknown domain {name!r}; known: {', '.join(DOMAINS + (SST2,))}")
    dev = sst2_as_domain("dev", data_dir)
    half = len(dev) // 2
    dev_rows, test_rows = stratified_split(dev["label"], (half, len(dev) - half), seed, keys=dev["text"])
    return datasets.DatasetDict({
        "train": sst2_as_domain("train", data_dir),
        "dev": dev.select(dev_rows),
        "test": dev.select(test_rows),
    })
