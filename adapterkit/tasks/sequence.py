"""Shared by the sequence-level types (classification, regression, multilabel): reading a
table into text_a[, text_b], label; encoding; logits in row order.

Columns are taken from the spec (--text-column, --text-pair-column, --label-column) or
guessed from common names; a guess is told, a failed guess names the columns found.
"""
from __future__ import annotations

import math
import re

from adapterkit.errors import AdapterkitError

TEXT_GUESSES = ("text", "sentence", "review", "review_text", "content", "document", "body", "text_a",
                "sentence1", "question1", "premise", "question", "input")
PAIR_GUESSES = {"sentence1": "sentence2", "text_a": "text_b", "premise": "hypothesis", "question1": "question2",
                "question": "sentence", "text": "text_pair"}
LABEL_GUESSES = ("label", "labels", "class", "category", "categories", "target", "gold_label", "score", "rating",
                 "stars", "tags", "y")
MULTILABEL_SPLIT = re.compile(r"\s*[,;|]\s*")


def guess_column(columns, given: str | None, guesses, what: str, flag: str, path, notes: list[str]) -> str:
    """`given` if the file has it, else the first of `guesses` present (told in `notes`)."""
    if given is not None:
        if given not in columns:
            raise AdapterkitError(f"{path}: no column {given!r} ({flag}); columns are {list(columns)}")
        return given
    for name in guesses:
        if name in columns:
            notes.append(f"{path}: {what} column {name!r} (guessed; {flag} chooses another)")
            return name
    raise AdapterkitError(f"{path}: cannot tell which column holds the {what} (columns: {', '.join(columns)}); "
                          f"pass {flag}")


def read(path, spec, notes: list[str], multilabel: bool = False, regression: bool = False, labelled: bool = True):
    """A table as a Dataset with text_a[, text_b], label (and `id` when present); fills the
    spec's columns and, from the first file read, its label names. With labelled=False (inputs
    to predict) only the text columns are read."""
    import datasets

    from adapterkit.data.user_files import read_table

    table = read_table(path)
    columns = table.column_names
    text = guess_column(columns, spec.text_column, TEXT_GUESSES, "text", "--text-column", path, notes)
    pair = spec.text_pair_column
    if pair is None and spec.text_column is None and PAIR_GUESSES.get(text) in columns:
        pair = PAIR_GUESSES[text]
        notes.append(f"{path}: text pair column {pair!r} (guessed; --text-pair-column chooses another)")
    pair = guess_column(columns, pair, (), "text pair", "--text-pair-column", path, notes) if pair else None
    out = {"text_a": [], **({"text_b": []} if pair else {})}
    for i, row in enumerate(table.select_columns([c for c in (text, pair) if c])):
        where = f"{path} row {i + 1}"
        out["text_a"].append(_text(row[text], where, text))
        if pair:
            out["text_b"].append(_text(row[pair], where, pair))
    if "id" in columns:
        out["id"] = [str(x) for x in table["id"]]
    if not labelled:
        return datasets.Dataset.from_dict(out)
    label = guess_column(columns, spec.label_column, LABEL_GUESSES, "label", "--label-column", path, notes)
    spec.text_column, spec.text_pair_column, spec.label_column = text, pair, label
    out["label"] = table[label]
    if regression:
        out["label"] = [_number(v, f"{path} row {i + 1}", label) for i, v in enumerate(out["label"])]
    elif multilabel:
        sets = [_label_set(v, f"{path} row {i + 1}", label) for i, v in enumerate(out["label"])]
        spec.labels = spec.labels or _sorted_names({x for s in sets for x in s})
        out["label"] = [_multi_hot(s, spec.labels, f"{path} row {i + 1}", label) for i, s in enumerate(sets)]
    else:
        names = [_name(v, f"{path} row {i + 1}", label) for i, v in enumerate(out["label"])]
        spec.labels = spec.labels or _sorted_names(set(names))
        if len(spec.labels) < 2:
            raise AdapterkitError(f"{path}: column {label!r} holds one class only ({spec.labels[0]!r}); "
                                  "classification needs at least two")
        out["label"] = [_index(n, spec.labels, f"{path} row {i + 1}", label) for i, n in enumerate(names)]
    return datasets.Dataset.from_dict(out)


def _text(value, where: str, column: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AdapterkitError(f"{where}: column {column!r} is empty or not text ({value!r})")
    return value


def _name(value, where: str, column: str) -> str:
    if value is None or isinstance(value, (list, dict)) or str(value).strip() == "":
        raise AdapterkitError(f"{where}: column {column!r}: bad label {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _number(value, where: str, column: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise AdapterkitError(f"{where}: column {column!r}: expected a number, got {value!r}")
    return number


def _label_set(value, where: str, column: str) -> list[str]:
    """Several labels: a JSON list, or one string split on , ; or |. An empty set is allowed."""
    if isinstance(value, list):
        return [_name(v, where, column) for v in value]
    if value is None or not isinstance(value, (str, int)):
        raise AdapterkitError(f"{where}: column {column!r}: expected a list of labels, got {value!r}")
    return [x for x in MULTILABEL_SPLIT.split(str(value).strip()) if x]


def _sorted_names(names: set[str]) -> list[str]:
    """Integer-looking names in numeric order (so "2" < "10"), others alphabetically."""
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _index(name: str, labels: list[str], where: str, column: str) -> int:
    try:
        return labels.index(name)
    except ValueError:
        raise AdapterkitError(f"{where}: column {column!r}: label {name!r} is not one of the training labels "
                              f"{labels}") from None


def _multi_hot(names: list[str], labels: list[str], where: str, column: str) -> list[float]:
    hot = [0.0] * len(labels)
    for name in names:
        hot[_index(name, labels, where, column)] = 1.0
    return hot


def encode(raw, tokenizer, max_seq_len: int):
    """Tokenize text_a[/text_b]; labels kept as read (class ids, numbers or multi-hot rows)."""
    from adapterkit.data import encode as encode_rows

    keep = [c for c in ("text_a", "text_b", "label") if c in raw.column_names]
    return encode_rows(raw.select_columns(keep), tokenizer, None, max_seq_len)


def logits(model, split, tokenizer, batch_size: int):
    """(N, C) logits in the split's row order."""
    from adapterkit.evaluation import predict_logits

    rows = split.rows.remove_columns([c for c in ("labels",) if c in split.rows.column_names])
    return predict_logits(model, rows, batch_size, tokenizer.pad_token_id or 0)
