"""Sentiment domains for transfer learning, all as text / label / domain datasets.

`load_domain_splits(name)` gives a train/dev/test `DatasetDict` for an Amazon
domain (books, dvd, electronics, kitchen; seeded stratified split, see
`adapterkit.data.amazon`) or for `sst2`, the far source domain: GLUE SST-2
train as train, and its dev set cut in half (seeded, stratified) into dev
and test, since GLUE's SST-2 test labels are not public.

Users' own domains: `add_domain_file(path)` reads a labelled TSV/JSONL file with
text, label and domain columns (`adapterkit.data.read_domain_file`) and makes each
of its domains loadable by name, split 70/10/20 into train/dev/test (seeded,
stratified by label, like the Amazon split).
"""
from __future__ import annotations

from pathlib import Path

from adapterkit.data.amazon import DOMAINS, amazon_splits
from adapterkit.data.splits import stratified_split
from adapterkit.errors import AdapterkitError

SST2 = "sst2"
USER_SPLIT = (0.7, 0.1, 0.2)  # train, dev, test shares of a user's domain
_user_domains: dict = {}  # name -> datasets.Dataset of that domain's rows


def add_domain_file(path: str | Path, label_names=None) -> list[str]:
    """Register the domains of a labelled TSV/JSONL file; returns their names."""
    from adapterkit.data.user_files import read_domain_file

    data = read_domain_file(path, label_names)
    domains = data["domain"]
    names = sorted(set(domains))
    for name in names:
        if name in DOMAINS or name == SST2:
            raise AdapterkitError(f"{path}: domain {name!r} is a built-in domain's name; rename it in the file")
        rows = [i for i, d in enumerate(domains) if d == name]
        if len(rows) < 10:
            raise AdapterkitError(f"{path}: domain {name!r} has {len(rows)} rows; at least 10 are needed to split it")
        _user_domains[name] = data.select(rows)
    return names


def is_user_domain(name: str) -> bool:
    """Whether `name` was added from a domain file (add_domain_file)."""
    return name in _user_domains


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
    if name in _user_domains:
        return _split_user_domain(_user_domains[name], seed)
    if name != SST2:
        known = ", ".join(DOMAINS + (SST2,) + tuple(_user_domains))
        raise AdapterkitError(f"unknown domain {name!r}; known: {known} (add your own with a domain file)")
    dev = sst2_as_domain("dev", data_dir)
    half = len(dev) // 2
    dev_rows, test_rows = stratified_split(dev["label"], (half, len(dev) - half), seed, keys=dev["text"])
    return datasets.DatasetDict({
        "train": sst2_as_domain("train", data_dir),
        "dev": dev.select(dev_rows),
        "test": dev.select(test_rows),
    })


def _split_user_domain(data, seed: int):
    import datasets

    n = len(data)
    n_dev, n_test = max(1, round(USER_SPLIT[1] * n)), max(1, round(USER_SPLIT[2] * n))
    parts = stratified_split(data["label"], (n - n_dev - n_test, n_dev, n_test), seed, keys=data["text"])
    return datasets.DatasetDict({split: data.select(rows) for split, rows in zip(("train", "dev", "test"), parts)})
