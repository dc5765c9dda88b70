"""Tokenize a loaded split and batch it with dynamic padding.

`encode` truncates to `max_seq_len` but does not pad; `PadCollator` pads each
batch to its own longest row, so a CPU batch of short sentences costs what
its longest sentence costs, not `max_seq_len`. `length_grouped_order` puts
rows of similar length into the same batch to shrink that padding further.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

from adapterkit.data.tasks import GlueTask, get_task
from adapterkit.errors import AdapterkitError

MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


def encode(dataset, tokenizer, task: str | GlueTask | None, max_seq_len: int = 128,
           keep_columns: Sequence[str] = ()):
    """Tokenize text_a[/text_b] into input_ids, attention_mask[, token_type_ids], labels.

    Args:
        dataset: a `datasets.Dataset` from `load_glue`, `read_predict_file`, or a
            domain dataset (`load_amazon`, ...) whose single text column is `text`.
        tokenizer: a Hugging Face tokenizer (fast ones are much quicker here).
        task: decides the label dtype (float for regression); None for unlabelled data.
        max_seq_len: longest sequence kept, special tokens included.
        keep_columns: other columns to carry through unchanged (e.g. `domain`).
    Returns a `datasets.Dataset` holding model inputs, `labels` (if labelled) and `keep_columns`.
    """
    if max_seq_len < 2:
        raise AdapterkitError(f"max_seq_len must be >= 2 (room for the special tokens), got {max_seq_len}")
    task = get_task(task) if isinstance(task, str) else task
    names = dataset.column_names
    first = "text_a" if "text_a" in names else "text"
    if first not in names:
        raise ValueError(f"dataset has no text_a or text column; columns are {names}")
    missing = [c for c in keep_columns if c not in names]
    if missing:
        raise ValueError(f"keep_columns {missing} are not in the dataset's columns {names}")
    has_pair = "text_b" in names

    def tokenize(batch: dict) -> dict:
        pair = batch["text_b"] if has_pair else None
        out = tokenizer(batch[first], pair, truncation=True, max_length=max_seq_len)
        encoded = {k: out[k] for k in MODEL_COLUMNS if k in out}
        if "label" in batch:
            labels = batch["label"]
            encoded["labels"] = [float(x) for x in labels] if task and task.is_regression else labels
        return encoded

    dropped = [c for c in names if c not in keep_columns]
    return dataset.map(tokenize, batched=True, remove_columns=dropped,
                       desc="tokenizing", load_from_cache_file=False)


class PadCollator:
    """Turn a list of encoded rows into a batch of tensors padded to the batch's longest row.

    Args:
        pad_token_id: id written into padded positions of input_ids.
        regression: labels become float32 (else int64); also multi-hot label rows.
        label_pad: labels are per-token sequences (tagging, causal LM), padded with this value
            (-100: ignored by the loss); None: one label (or label vector) per row.
    """

    def __init__(self, pad_token_id: int = 0, regression: bool = False, label_pad: int | None = None):
        self.pad_token_id = pad_token_id
        self.regression = regression
        self.label_pad = label_pad

    def __call__(self, rows: Sequence[dict]) -> dict:
        from adapterkit.toolkit.batching import collate  # the one padding

        return collate(rows, self.pad_token_id, self.regression, self.label_pad)


def length_grouped_order(lengths: Sequence[int], batch_size: int, seed: int = 0,
                         window: int = 50) -> list[int]:
    """A shuffled row order whose consecutive batches hold rows of similar length.

    Rows are shuffled, cut into windows of `window` batches, sorted by length
    inside each window, cut into batches, and the batches shuffled again, so
    the order stays random across epochs (pass a different `seed`) while
    padding inside a batch stays small.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * window
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: lengths[i])
        batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return [i for b in batches for i in b]


def batches(rows, batch_size: int, collate, seed: int | None = None):
    """(row indices, padded batch) over encoded `rows`: with a seed, shuffled in length-grouped
    order (training), else sorted by length (evaluation: least padding). The one batcher every
    task type and the training loop use (adapterkit.toolkit.batching.batches in this order);
    `collate` pads a list of rows into tensors."""
    from adapterkit.toolkit.batching import batches as toolkit_batches

    lengths = [len(ids) for ids in rows["input_ids"]]
    if seed is None:
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
    else:
        order = length_grouped_order(lengths, batch_size, seed=seed)
    columns = {k: rows[k] for k in rows.column_names}
    records = _Rows(columns, len(lengths))
    for start in range(0, len(order), batch_size):  # one batch at a time: a datasets column is lazy
        for batch in toolkit_batches(records, batch_size, make=collate, order=order[start:start + batch_size]):
            idx = batch.pop("_rows")
            yield idx, batch


class _Rows:
    """Row i of a dict of columns, as a dict."""

    def __init__(self, columns: dict, n: int) -> None:
        self.columns, self.n = columns, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.columns.items()}
