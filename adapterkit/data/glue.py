"""Load a GLUE split as a `datasets.Dataset` with columns text_a, [text_b,] label.

Where the data comes from, first match wins:
1. `data_dir` (the `--data-dir` flag), else the `ADAPTERKIT_DATA_DIR` environment
   variable: a folder in the GLUE layout (`<dir>/CoLA/train.tsv`, ...). Given
   explicitly, a missing task folder or file is an error, never a fallback.
2. `./data/glue` in the working directory, when it holds the task's folder.
3. The Hugging Face hub dataset `nyu-mll/glue`: needs network, or
   `HF_HUB_OFFLINE=1` and a copy in the `datasets` cache. An unreachable hub is
   reported at once rather than after `datasets`' retries.
"""
from __future__ import annotations

import os
from pathlib import Path

from adapterkit.data.tasks import GlueTask, get_task
from adapterkit.data.tsv import read_glue_tsv
from adapterkit.errors import AdapterkitError

ENV_VAR = "ADAPTERKIT_DATA_DIR"
HUB_DATASET = "nyu-mll/glue"
_WELL_KNOWN = ("data/glue",)  # relative to the working directory, never to where adapterkit is installed
_HOW_TO_POINT = f"pass --data-dir DIR or set {ENV_VAR} to a folder in the GLUE layout"


def candidate_dirs() -> list[Path]:
    """Well-known local GLUE folders, in search order (existing or not)."""
    return [(Path.cwd() / rel).resolve() for rel in _WELL_KNOWN]


def resolve_glue_dir(task: str | GlueTask, data_dir: str | Path | None = None) -> Path | None:
    """The folder holding `task`'s files, or None when only the hub is left.

    An explicit `data_dir` (or `ADAPTERKIT_DATA_DIR`) must hold the task folder.
    """
    task = get_task(task) if isinstance(task, str) else task
    explicit = data_dir if data_dir is not None else os.environ.get(ENV_VAR) or None
    if explicit is not None:
        root = Path(explicit).expanduser()
        if not root.is_dir():
            raise AdapterkitError(f"data folder {root} does not exist; {_HOW_TO_POINT}")
        folder = root / task.folder
        if not folder.is_dir():
            raise AdapterkitError(
                f"no {task.folder} folder for task {task.name} in {root} (looked for {folder}); {_HOW_TO_POINT}"
            )
        return folder
    for root in candidate_dirs():
        if (root / task.folder).is_dir():
            return root / task.folder
    return None


def load_glue(task: str | GlueTask, split: str = "train", data_dir: str | Path | None = None,
              limit: int | None = None):
    """One split ('train' or 'dev') of a GLUE task as a `datasets.Dataset`.

    Columns: text_a (str), text_b (str, pair tasks only), label (int class id,
    or float score for STS-B). `limit` keeps the first rows only.
    """
    import datasets

    task = get_task(task) if isinstance(task, str) else task
    split = "dev" if split == "validation" else split
    filename = task.split_file(split)
    folder = resolve_glue_dir(task, data_dir)
    if folder is None:
        columns = load_from_hub(task, split)
        if limit is not None:
            columns = {k: v[:limit] for k, v in columns.items()}
    else:
        path = folder / filename
        if not path.is_file():
            raise AdapterkitError(f"missing GLUE file {path} for task {task.name}; {_HOW_TO_POINT}")
        columns = read_glue_tsv(path, task, limit=limit)
    return datasets.Dataset.from_dict(columns, features=glue_features(task))


def glue_features(task: GlueTask):
    """The `datasets.Features` of a loaded split (float32 label for regression)."""
    import datasets

    names = ["text_a", "text_b"][: len(task.text_columns)]
    features = {name: datasets.Value("string") for name in names}
    features["label"] = datasets.Value("float32" if task.is_regression else "int64")
    return datasets.Features(features)


def load_from_hub(task: GlueTask, split: str) -> dict[str, list]:
    """Columns of `task`'s split from the hub dataset, renamed to text_a/text_b/label."""
    hub_split = "train" if split == "train" else task.hub_dev_split
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    if not offline and not _hub_reachable():
        raise AdapterkitError(
            f"no local data for task {task.name} and the Hugging Face hub is unreachable; {_HOW_TO_POINT} "
            f"(or set HF_HUB_OFFLINE=1 to use a copy of {HUB_DATASET} in the datasets cache)"
        )
    try:
        raw = _hub_load(task.name, hub_split)
    except Exception as e:  # datasets raises many types when offline
        raise AdapterkitError(
            f"no local data for task {task.name} and the hub dataset {HUB_DATASET} "
            f"could not be loaded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            f"{_HOW_TO_POINT}"
        ) from e
    names = ["text_a", "text_b"][: len(task.text_columns)]
    columns = {name: list(raw[col]) for name, col in zip(names, task.hub_text_columns)}
    columns["label"] = list(raw["label"])
    return columns


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub host accepts a TCP connection (fails fast where `datasets` would retry for long)."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hub_load(config: str, split: str):
    """`datasets.load_dataset` on the hub GLUE dataset (kept apart so tests can replace it)."""
    import datasets

    return datasets.load_dataset(HUB_DATASET, config, split=split)
