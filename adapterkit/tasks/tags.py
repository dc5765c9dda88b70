"""Word-level tag files and tag schemes for token classification.

Files: CoNLL-style column files (one token per line, columns split on whitespace, a blank line
ends a sentence, `-DOCSTART-` lines skipped; the word is the first column, the tag the last)
or JSON Lines with a list of tokens and a list of tags per row.

Schemes: IOB1 (CoNLL-2003: an entity starts with I-, B- only between two adjacent entities
of one type), IOB2 (every entity starts with B-) and BIOES (B-, I-, E-, S-). IOB1 is converted
to IOB2 on reading (same entities), the others are kept; `detect_scheme` tells them apart.
"""
from __future__ import annotations

import json
from pathlib import Path

from adapterkit.errors import AdapterkitError

SCHEMES = ("iob1", "iob2", "bioes")
PREFIXES = {"iob1": "BI", "iob2": "BI", "bioes": "BIES"}
RULES = {"iob2": "I-X only inside an X entity; IOB1 files: --tag-scheme iob1",
         "bioes": "an entity is S-X, or B-X, I-X..., E-X"}
TOKEN_GUESSES = ("tokens", "words")
TAG_GUESSES = ("tags", "ner_tags", "labels", "label")


def read_tagged(path, tag_column: str | None = None, token_column: str | None = None) -> list[tuple[list[str], list[str], str]]:
    """[(words, tags, where)] from a CoNLL column file or a JSONL file (where = file:line)."""
    from adapterkit.io.files import require_file

    path = require_file(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        return _read_jsonl(path, tag_column, token_column)
    return _read_conll(path)


def _read_conll(path: Path):
    from adapterkit.io.files import text_lines

    sentences, words, tags, start, width = [], [], [], 0, None
    for number, line in text_lines(path, "a CoNLL file"):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sentences.append((words, tags, f"{path}:{start}"))
            words, tags = [], []
            continue
        if width is None:
            width = len(fields)
            if width < 2:
                raise AdapterkitError(f"{path}:{number}: expected a word and a tag separated by whitespace, "
                                      f"found {line.strip()!r}")
        if len(fields) != width:
            raise AdapterkitError(f"{path}:{number}: expected {width} columns like the first token line, "
                                  f"found {len(fields)}")
        if not words:
            start = number
        check_tag(fields[-1], f"{path}:{number}")
        words.append(fields[0])
        tags.append(fields[-1])
    if words:
        sentences.append((words, tags, f"{path}:{start}"))
    if not sentences:
        raise AdapterkitError(f"{path}: no tagged sentences")
    return sentences


def _read_jsonl(path: Path, tag_column, token_column):
    from adapterkit.data.user_files import iter_records

    sentences = []
    for number, record in iter_records(path):
        where = f"{path}:{number}"
        tok = token_column or next((c for c in TOKEN_GUESSES if c in record), None)
        tag = tag_column or next((c for c in TAG_GUESSES if c in record), None)
        if tok not in record or tag not in record:
            raise AdapterkitError(f"{where}: expected a token list ({'/'.join(TOKEN_GUESSES)}) and a tag list "
                                  f"({'/'.join(TAG_GUESSES)}); keys are {list(record)}")
        words, tags = record[tok], record[tag]
        if not isinstance(words, list) or not isinstance(tags, list) or len(words) != len(tags) or not words:
            raise AdapterkitError(f"{where}: columns {tok!r} and {tag!r} must be non-empty lists of one length")
        for w, t in zip(words, tags):
            if not isinstance(w, str) or not w:
                raise AdapterkitError(f"{where}: column {tok!r}: bad token {w!r}")
            check_tag(t, where, tag)
        sentences.append((words, tags, where))
    if not sentences:
        raise AdapterkitError(f"{path}: no tagged sentences")
    return sentences


def check_tag(tag, where: str, column: str = "tag") -> None:
    if not isinstance(tag, str) or not (tag == "O" or (len(tag) > 2 and tag[0] in "BIES" and tag[1] == "-")):
        raise AdapterkitError(f"{where}: column {column!r}: bad tag {tag!r} (expected O, or B-/I-/E-/S- and a type)")


def detect_scheme(tag_rows) -> str:
    """bioes if any E-/S- tag, iob1 if an entity starts with I-, else iob2."""
    iob1 = False
    for tags in tag_rows:
        prev = "O"
        for tag in tags:
            if tag[0] in "ES":
                return "bioes"
            if tag[0] == "I" and (prev == "O" or prev[2:] != tag[2:]):
                iob1 = True
            prev = tag
    return "iob1" if iob1 else "iob2"


def to_iob2(tags: list[str]) -> list[str]:
    """IOB1 -> IOB2: an I-X that does not continue an X entity starts one (B-X)."""
    out, prev = [], "O"
    for tag in tags:
        if tag[0] == "I" and (prev == "O" or prev[2:] != tag[2:]):
            tag = "B" + tag[1:]
        out.append(tag)
        prev = tag
    return out


def normalise(tag_rows, scheme: str | None, where: str, wheres: list[str] | None = None) -> tuple[list[list[str]], str]:
    """(tags as trained, the files' scheme): IOB1 becomes IOB2; a tag outside the scheme, or a
    sequence the scheme does not allow (IOB2: I-X only inside an X entity; BIOES: an entity is
    S-X or B-X I-X* E-X), is refused naming the sentence (`wheres`: each row's file:line)."""
    scheme = (scheme or detect_scheme(tag_rows)).lower()
    if scheme not in SCHEMES:
        raise AdapterkitError(f"unknown tag scheme {scheme!r}; one of {', '.join(SCHEMES)}")
    allowed = PREFIXES[scheme]
    for n, tags in enumerate(tag_rows):
        at = wheres[n] if wheres else f"{where} sentence {n + 1}"
        bad = next((t for t in tags if t != "O" and t[0] not in allowed), None)
        if bad:
            raise AdapterkitError(f"{at}: tag {bad!r} is not part of the {scheme} scheme")
        i = _broken_at(tags, scheme)
        if i is not None:
            shown = " ".join(tags[max(0, i - 2):i + 1]) if i < len(tags) else " ".join(tags[-2:]) + " (end)"
            raise AdapterkitError(f"{at}: tags {shown!r} break the {scheme} scheme ({RULES[scheme]})")
    rows = [to_iob2(t) for t in tag_rows] if scheme == "iob1" else [list(t) for t in tag_rows]
    return rows, scheme


def _broken_at(tags: list[str], scheme: str) -> int | None:
    """Index of the first tag the scheme does not allow after the previous one (len(tags): an
    entity left open at the end), else None. IOB1 allows every sequence."""
    prev = "O"
    for i, tag in enumerate([*tags, "O"]):
        opened, same = prev[0] in "BI", tag[2:] == prev[2:]  # an entity of type prev[2:] is open
        if scheme == "iob2" and tag[0] == "I" and not (opened and same):
            return i
        if scheme == "bioes" and (opened != (tag[0] in "IE") or (opened and not same)):  # I-/E- exactly inside
            return i
        prev = tag
    return None


def write_jsonl_row(words: list[str], tags: list[str]) -> str:
    return json.dumps({"tokens": words, "tags": tags})
