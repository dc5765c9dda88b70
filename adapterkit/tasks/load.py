"""The user's files as the training loop's TaskData, for any task type.

    data = DataFiles(train="reviews.csv", text_column="review", label_column="stars")
    task = load_task_files("classification", data, tokenizer, max_seq_len=128)

Every file is read and checked before anything is written. Without a validation file a seeded
split of the training file (stratified by label where the type has one) is held out, and the
notes say so.
"""
from __future__ import annotations

from dataclasses import dataclass

from adapterkit.errors import AdapterkitError
from adapterkit.tasks.registry import get_task_type
from adapterkit.tasks.spec import Split, TaskData, TaskSpec


@dataclass
class DataFiles:
    """The user's files and where their columns are.

    Args:
        train, validation, test: file paths (CSV, TSV, JSONL, Parquet; SQuAD JSON for
            extractive-qa; CoNLL column files or JSONL tokens/tags for token-classification;
            .txt or JSONL for causal-lm).
        text_column, text_pair_column, label_column: column names (guessed when None).
        tag_scheme: token classification: iob1, iob2 or bioes (None: detected from the tags).
        validation_fraction: share of train held out when there is no validation file.
    """

    train: str
    validation: str | None = None
    test: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    tag_scheme: str | None = None
    validation_fraction: float = 0.1

    def __post_init__(self) -> None:
        from adapterkit.config import check_number

        check_number("validation_fraction", self.validation_fraction, above=0.0, below=1.0)


def task_spec(task_type: str, data: DataFiles, options: dict | None = None) -> TaskSpec:
    get_task_type(task_type)
    return TaskSpec(type=task_type, text_column=data.text_column, text_pair_column=data.text_pair_column,
                    label_column=data.label_column, tag_scheme=data.tag_scheme, **(options or {}))


def load_task_files(task_type: str, data: DataFiles, tokenizer, max_seq_len: int = 128, options: dict | None = None,
                    eval_batch_size: int = 128, seed: int = 42, name: str | None = None) -> TaskData:
    """Read, check, split and encode the user's files for `task_type`."""
    kind = get_task_type(task_type)
    spec = task_spec(task_type, data, options)
    notes: list[str] = []
    train_raw = kind.read(data.train, spec, notes)
    if data.validation:
        dev_raw = kind.read(data.validation, spec, notes)
    else:
        train_raw, dev_raw = hold_out(train_raw, kind.stratify_column, data.validation_fraction, seed)
        how = f", stratified by {kind.stratify_column}" if kind.stratify_column else ""
        notes.append(f"no validation file: held out {len(dev_raw)} of {len(train_raw) + len(dev_raw)} rows of "
                     f"{data.train} for validation (seed {seed}{how})")
    test_raw = kind.read(data.test, spec, notes) if data.test else None

    def split(raw):
        return Split(raw, kind.encode(raw, tokenizer, spec, max_seq_len))

    return TaskData(
        name=name or task_type.replace("-", "_"),
        spec=spec,
        train=split(train_raw),
        dev=split(dev_raw),
        test=split(test_raw) if test_raw is not None else None,
        collate=kind.collator(tokenizer.pad_token_id or 0),
        evaluate=lambda model, s: kind.evaluate(model, s, spec, tokenizer, eval_batch_size),
        metric=kind.metric,
        greater_is_better=kind.greater_is_better,
        notes=notes,
    )


def hold_out(raw, stratify_column: str | None, fraction: float, seed: int):
    """(train, validation): a seeded split, stratified by `stratify_column` when given
    (multi-hot labels stratify by their label set)."""
    from adapterkit.data import stratified_split

    n = len(raw)
    n_dev = max(1, round(n * fraction))
    if n - n_dev < 1:
        raise AdapterkitError(f"{n} rows are too few to hold out a validation split; pass a validation file")
    keys = [str(v) for v in raw[stratify_column]] if stratify_column else ["all"] * n
    train_idx, dev_idx = stratified_split(keys, [n - n_dev, n_dev], seed=seed)
    rest = sorted(set(range(n)) - set(train_idx) - set(dev_idx))  # rounding leftovers stay in train
    moved = (rest + train_idx)[: n_dev - len(dev_idx)]  # per-label rounding can leave few rows' split short (even empty)
    dev_idx = sorted(dev_idx + moved)
    return raw.select(sorted(set(train_idx + rest) - set(moved))), raw.select(dev_idx)


def read_for_predict(task_type: str, spec: TaskSpec, path, tokenizer, max_seq_len: int) -> Split:
    """A file of inputs to predict (labels, answers or tags not needed)."""
    kind = get_task_type(task_type)
    raw = kind.read_inputs(path, spec)
    return Split(raw, kind.encode(raw, tokenizer, spec, max_seq_len))
