"""Score and predict with a saved run or adapter of any task type (what `adapterkit eval` and
`adapterkit predict` run for runs trained on the user's files)."""
from __future__ import annotations

from pathlib import Path

from adapterkit.errors import AdapterkitError
from adapterkit.precision import run_autocast
from adapterkit.tasks.heads import load_for_inference
from adapterkit.tasks.registry import get_task_type
from adapterkit.tasks.spec import Split

SPLIT_FILES = {"train": "train", "dev": "validation", "validation": "validation", "test": "test"}


def evaluate_file(folder: str | Path, file: str | None = None, split: str = "dev", batch_size: int = 128,
                  max_seq_len: int | None = None, precision: str | None = None, note=print,
                  drop_layers: int | None = None) -> dict[str, float]:
    """The task's metrics of the saved run on `file`, or on the run's own `split` file; with
    `drop_layers`, no adapters in the lowest k layers (default: the run's own k)."""
    model, tokenizer, spec, run = load_for_inference(folder, precision, note, drop_layers)
    if file is None:
        key = SPLIT_FILES.get(split)
        file = (run.get("data") or {}).get(key) if key else None
        if file is None:
            raise AdapterkitError(f"{folder}: the run has no {split} file; pass --file")
    kind = get_task_type(spec.type)
    raw = kind.read(file, spec, [])
    rows = kind.encode(raw, tokenizer, spec, max_seq_len or run.get("max_seq_len", 128))
    with run_autocast(run):
        return kind.evaluate(model, Split(raw, rows), spec, tokenizer, batch_size)


def predict_file(folder: str | Path, file: str | Path, batch_size: int = 128, max_seq_len: int | None = None,
                 precision: str | None = None, note=print, id_column: str | None = None) -> list[dict]:
    """One record per input of `file`: label and scores, labels, tags per word, answer span
    with character offsets, or generated text (see each task type's `predict`), led by the
    input's `id_column` (default: `id`, if the input has one; extractive-qa: the question's id)."""
    model, tokenizer, spec, run = load_for_inference(folder, precision, note)
    kind = get_task_type(spec.type)
    raw = kind.read_inputs(file, spec)
    ids = _ids(file, id_column, len(raw)) if id_column is not None else None
    rows = kind.encode(raw, tokenizer, spec, max_seq_len or run.get("max_seq_len", 128))
    with run_autocast(run):
        records = kind.predict(model, Split(raw, rows), spec, tokenizer, batch_size)
    if ids is not None:
        records = [{id_column: i, **r} for i, r in zip(ids, records)]
    elif "id" in raw.column_names and spec.type != "extractive-qa":
        records = [{"id": i, **r} for i, r in zip(raw["id"], records)]
    return records


def _ids(file, column: str, rows: int) -> list[str]:
    """Column `column` of a table input (one row per input), as strings: `predict --id-column`."""
    from adapterkit.data.user_files import read_table

    if Path(file).suffix.lower() not in (".csv", ".tsv", ".jsonl", ".parquet"):
        raise AdapterkitError(f"--id-column: {file} is not a table (CSV, TSV, JSONL or Parquet) with one row per input")
    table = read_table(file)
    if column not in table.column_names:
        raise AdapterkitError(f"{file}: no id column {column!r} among {table.column_names}")
    if len(table) != rows:
        raise AdapterkitError(f"--id-column: {file} has {len(table)} rows but {rows} inputs")
    return [str(v) for v in table[column]]
