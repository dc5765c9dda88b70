"""Users' own files: inputs for `adapterkit predict` and labelled domain files for transfer.

Two formats, chosen by extension:
- TSV (`.tsv`, `.tab`, `.txt`): a header line, then tab-separated rows, never quoted.
- JSONL (`.jsonl`, `.json`): one JSON object per line.
Every error names the file and the 1-based line.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from adapterkit.data.tasks import GlueTask, get_task
from adapterkit.data.tsv import iter_tsv_lines
from adapterkit.errors import AdapterkitError

TSV_SUFFIXES = (".tsv", ".tab", ".txt")
JSONL_SUFFIXES = (".jsonl", ".json")
# Accepted (first, second) column names for sentence pairs, then for single sentences.
PAIR_COLUMNS = (("sentence1", "sentence2"), ("text_a", "text_b"), ("premise", "hypothesis"),
                ("question1", "question2"), ("question", "sentence"))
SINGLE_COLUMNS = ("sentence", "text", "text_a")


def iter_records(path: str | Path, headerless: Sequence[str] | None = None) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record) for each row of a TSV or JSONL file (`headerless`: column
    names for a TSV without a header line, see `_iter_tsv`)."""
    from adapterkit.io.files import require_file

    path = require_file(path, "input file")
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        yield from _iter_jsonl(path)
    elif suffix in TSV_SUFFIXES:
        yield from _iter_tsv(path, headerless)
    else:
        raise AdapterkitError(f"{path}: unknown file type {suffix!r}; use .tsv or .jsonl")


def _iter_tsv(path: Path, headerless: Sequence[str] | None = None) -> Iterator[tuple[int, dict]]:
    """Rows of a TSV with a header line; or, when the first line has as many fields as
    `headerless` names (a task's own header-less layout, CoLA's) and names none of them, rows
    under those names."""
    import itertools

    lines = iter_tsv_lines(path)
    first = next(lines, None)
    if first is None:
        raise AdapterkitError(f"{path}: file is empty (expected a header line)")
    header = [h.strip() for h in first[1]]
    known = set(headerless or ()) | set(SINGLE_COLUMNS) | {c for pair in PAIR_COLUMNS for c in pair}
    if headerless and len(header) == len(headerless) and not known & set(header):
        header, lines = list(headerless), itertools.chain([first], lines)
    for number, fields in lines:
        if len(fields) != len(header):
            raise AdapterkitError(
                f"{path}:{number}: expected {len(header)} tab-separated columns, found {len(fields)}"
            )
        yield number, dict(zip(header, fields))


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    from adapterkit.io.files import parse_json, text_lines

    for number, line in text_lines(path, "a JSONL file"):
        if not line.strip():
            continue
        record = parse_json(line, f"{path}:{number}")
        if not isinstance(record, dict):
            raise AdapterkitError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        yield number, record


def _text_columns(keys: Sequence[str], pair: bool | None, where: str) -> tuple[str, ...]:
    """The text column names found in `keys`: a pair when `pair` is True/None and one fits."""
    if pair is not False:
        for columns in PAIR_COLUMNS:
            if all(c in keys for c in columns):
                return columns
    if pair is not True:
        for column in SINGLE_COLUMNS:
            if column in keys:
                return (column,)
    wanted = PAIR_COLUMNS if pair else SINGLE_COLUMNS if pair is False else PAIR_COLUMNS + SINGLE_COLUMNS
    raise AdapterkitError(f"{where}: no text column(s) found in {list(keys)}; expected one of {list(wanted)}")


def _text(record: dict, column: str, where: str) -> str:
    value = record.get(column)
    if not isinstance(value, str):
        raise AdapterkitError(f"{where}: column {column!r} must be a string, got {value!r}")
    return value


def read_predict_file(path: str | Path, task: str | GlueTask | None = None, id_column: str | None = None):
    """Inputs for prediction as a `datasets.Dataset` with text_a[, text_b][, id].

    Text columns: a pair `sentence1`/`sentence2` (or text_a/text_b,
    premise/hypothesis, question1/question2, question/sentence), the task's own GLUE columns,
    or a single `sentence`/`text`. With `task`, a pair task requires a pair and a
    single-sentence task a single column, and the task's own header-less layout (GLUE's
    CoLA/dev.tsv) is read as such. The `id_column` (default: `id`, if present) is kept as `id`.
    """
    return predict_inputs(path, task, id_column)[0]


def predict_inputs(path: str | Path, task: str | GlueTask | None = None, id_column: str | None = None):
    """(dataset as `read_predict_file` returns it, the text column names as in the file, the id
    column's name or None): what `adapterkit predict` copies into its output."""
    import datasets

    task = get_task(task) if isinstance(task, str) else task
    pair = None if task is None else task.is_pair
    columns: tuple[str, ...] | None = None
    out: dict[str, list] = {}
    id_name = id_column
    for number, record in iter_records(path, task.columns if task else None):
        where = f"{path}:{number}"
        if columns is None:
            own = task.text_columns if task and all(c in record for c in task.text_columns) else None
            columns = own or _text_columns(list(record), pair, where)
            if id_column is not None and id_column not in record:
                raise AdapterkitError(f"{where}: no id column {id_column!r} among {list(record)}")
            id_name = id_column or ("id" if "id" in record else None)
            out = {name: [] for name in ["text_a", "text_b"][: len(columns)] + (["id"] if id_name else [])}
        for name, column in zip(("text_a", "text_b"), columns):
            out[name].append(_text(record, column, where))
        if id_name:
            out["id"].append(str(record.get(id_name, "")))
    if columns is None:
        raise AdapterkitError(f"{path}: no rows to predict")
    return datasets.Dataset.from_dict(out), columns, id_name


def _label(value, label_names: Sequence[str] | None, where: str) -> int:
    if label_names is not None and str(value) in label_names:
        return list(label_names).index(str(value))
    try:
        label = int(value)
    except (TypeError, ValueError):
        label = -1
    if label < 0 or (label_names is not None and label >= len(label_names)) or str(label) != str(value).strip():
        expected = list(label_names) if label_names else "a non-negative integer"
        raise AdapterkitError(f"{where}: bad label {value!r}; expected {expected}")
    return label


def read_domain_file(path: str | Path, label_names: Sequence[str] | None = None,
                     default_domain: str | None = None):
    """A labelled multi-domain file as a `datasets.Dataset` with text, label, domain.

    Each row needs `text` (or `sentence`), `label` and `domain` columns. Labels
    are integer ids, or names from `label_names` (mapped to their index).
    Without a `domain` column every row gets `default_domain` (else an error).
    """
    import datasets

    out: dict[str, list] = {"text": [], "label": [], "domain": []}
    for number, record in iter_records(path):
        where = f"{path}:{number}"
        column = "text" if "text" in record else "sentence"
        domain = record.get("domain", default_domain)
        if domain is None or str(domain).strip() == "":
            raise AdapterkitError(f"{where}: no domain (add a 'domain' column or pass a default domain)")
        if "label" not in record:
            raise AdapterkitError(f"{where}: no 'label' column")
        out["text"].append(_text(record, column, where))
        out["label"].append(_label(record["label"], label_names, where))
        out["domain"].append(str(domain))
    if not out["text"]:
        raise AdapterkitError(f"{path}: no rows")
    return datasets.Dataset.from_dict(out)


# Suffix -> (datasets local loader, its options). TSV is never quoted (like GLUE's files).
TABLE_LOADERS = {
    ".csv": ("csv", {"sep": ",", "quoting": 0}),
    ".tsv": ("csv", {"sep": "\t", "quoting": 3}),
    ".tab": ("csv", {"sep": "\t", "quoting": 3}),
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".parquet": ("parquet", {}),
}


def read_table(path: str | Path):
    """A CSV, TSV, JSON Lines or Parquet file as a `datasets.Dataset`, through the `datasets`
    local loaders (nothing is downloaded). CSV/TSV cells are read as strings (empty cells stay
    ""). A file the loader cannot parse gives one line naming the file and, where the parser
    or a line-by-line check can tell, the line."""
    from adapterkit.io.files import require_file

    path = require_file(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_LOADERS:
        raise AdapterkitError(f"{path}: unknown file type {suffix!r}; use .csv, .tsv, .jsonl, .json or .parquet")
    loader, options = TABLE_LOADERS[suffix]
    import datasets

    if loader == "csv":
        options = options | {"keep_default_na": False, "encoding": "utf-8-sig",
                             "features": _string_features(path, options["sep"], options["quoting"])}
    level = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity_error()
    datasets.logging.disable_progress_bar()
    try:
        logger = datasets.logging.get_logger("datasets")
        logger.setLevel(60)  # the loaders log the parser error before raising it; we say it once
        data = datasets.load_dataset(loader, data_files=str(path), split="train", **options)
    except Exception as e:  # the loaders wrap parser errors in DatasetGenerationError
        raise AdapterkitError(_load_error(path, suffix, e)) from None
    finally:
        datasets.logging.set_verbosity(level)
    if len(data) == 0:
        raise AdapterkitError(f"{path}: no rows")
    return data


def _string_features(path: Path, sep: str, quoting: int):
    """Every column of a CSV/TSV file as a string (labels and texts are parsed by the task)."""
    import csv

    import datasets

    from adapterkit.io.files import text_lines

    first = next(text_lines(path, "a data file", newline=""), (1, ""))[1]  # UTF-8 checked, the file named
    header = next(csv.reader([first], delimiter=sep, quoting=quoting), None)
    if not header:
        raise AdapterkitError(f"{path}: file is empty (expected a header line)")
    if len(set(header)) != len(header):
        raise AdapterkitError(f"{path}:1: repeated column names in the header {header}")
    return datasets.Features({name: datasets.Value("string") for name in header})


def _load_error(path: Path, suffix: str, error: Exception) -> str:
    """One line for a file a `datasets` loader refused, with the line number when known."""
    import re

    if suffix in JSONL_SUFFIXES:
        try:
            for _ in _iter_jsonl(path):
                pass
        except AdapterkitError as e:
            return str(e)
    cause = error
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    message = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
    if "corresponds to no data" in message:  # the loaders' words for a header without rows
        return f"{path}: no rows (only a header?)"
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if found:
        want, line, got = found.groups()
        return f"{path}:{line}: expected {want} columns, found {got}"
    return f"{path}: cannot read the file ({message})"
