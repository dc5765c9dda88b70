"""Reading GLUE-layout TSV files, strictly and without CSV quoting.

The GLUE files are tab-separated and never quoted: a field may begin with `"`
(RTE train index 2164), so lines are split on tabs only (what
`csv.QUOTE_NONE` does). MRPC begins with a UTF-8 byte-order mark, CoLA has no
header, the last line may lack its newline. A row with the wrong number of
columns, an unknown label or an unparseable score raises `AdapterkitError`
naming the file and the 1-based line number. Tasks marked `skip_malformed`
(QQP, whose GLUE file has a few rows split by stray newlines) skip rows with
the wrong column count instead, with one warning naming their lines.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path

from adapterkit.data.tasks import GlueTask
from adapterkit.errors import AdapterkitError


def iter_tsv_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (1-based line number, fields) for each non-empty line of `path`."""
    from adapterkit.io.files import text_lines

    for number, line in text_lines(path, "a TSV file", newline=""):
        line = line.rstrip("\n").rstrip("\r")
        if line:
            yield number, line.split("\t")


def parse_label(task: GlueTask, value: str, where: str) -> int | float:
    """A label id (classification) or a finite float (regression) from a TSV field."""
    if task.labels is None:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise AdapterkitError(f"{where}: score {value!r} is not a number")
        return score
    try:
        return task.labels.index(value.strip())
    except ValueError:
        raise AdapterkitError(
            f"{where}: unknown label {value!r} for task {task.name}; expected one of {list(task.labels)}"
        ) from None


def _column_positions(task: GlueTask, header: list[str], path: Path) -> list[int]:
    wanted = list(task.text_columns) + [task.label_column]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise AdapterkitError(
            f"{path}:1: header lacks column(s) {missing} for task {task.name}; header is {header}"
        )
    return [header.index(c) for c in wanted]


def read_glue_tsv(path: str | Path, task: GlueTask, limit: int | None = None) -> dict[str, list]:
    """Read one GLUE split file into columns text_a, [text_b,] label.

    Args:
        path: the TSV file (e.g. `glue/RTE/train.tsv`).
        task: the task whose layout the file follows.
        limit: read at most this many rows (None: all).
    """
    path = Path(path)
    lines = iter_tsv_lines(path)
    if task.columns is not None:
        header = list(task.columns)
    else:
        first = next(lines, None)
        if first is None:
            raise AdapterkitError(f"{path}: file is empty (expected a header line)")
        header = first[1]
    positions = _column_positions(task, header, path)
    text_names = ["text_a", "text_b"][: len(task.text_columns)]
    out: dict[str, list] = {name: [] for name in text_names + ["label"]}
    skipped: list[int] = []
    for number, fields in lines:
        if limit is not None and len(out["label"]) >= limit:
            break
        where = f"{path}:{number}"
        if len(fields) != len(header):
            if task.skip_malformed:
                skipped.append(number)
                continue
            raise AdapterkitError(f"{where}: expected {len(header)} tab-separated columns, found {len(fields)}")
        for name, pos in zip(text_names, positions):
            out[name].append(fields[pos])
        out["label"].append(parse_label(task, fields[positions[-1]], where))
    if not out["label"] and limit != 0:
        raise AdapterkitError(f"{path}: no data rows")
    if skipped:
        shown = ", ".join(map(str, skipped[:10])) + (", ..." if len(skipped) > 10 else "")
        warnings.warn(f"{path}: skipped {len(skipped)} row(s) without {len(header)} columns "
                      f"(a known defect of GLUE's {task.folder} file), lines {shown}", stacklevel=2)
    return out
