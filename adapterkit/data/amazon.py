"""Blitzer et al.'s multi-domain Amazon reviews (ACL 2007), "sorted_data_acl".

Files `<domain>.positive.review` / `<domain>.negative.review`, 1000 reviews
each, for the domains books, dvd, electronics, kitchen. The format is
pseudo-XML (every tag on its own line, raw `&` in text), so it is parsed
line by line, not with an XML parser; HTML entities such as `&quot;` are
unescaped afterwards.

Split (`amazon_splits`): per domain and label, the reviews are grouped by
identical text (2-4% of reviews per domain are exact duplicates), the groups
shuffled with `random.Random(f"{seed}/{label}")` (seed 0 by default), and
groups taken in that order into 700 train / 100 dev / 200 test (see
`adapterkit.data.splits.stratified_split`): a stratified 1400 / 200 / 400 split
with balanced labels and no review text in two splits. It depends only on the
files and the seed.
"""
from __future__ import annotations

import html
import os
from pathlib import Path

from adapterkit.data.splits import stratified_split
from adapterkit.errors import AdapterkitError

DOMAINS = ("books", "dvd", "electronics", "kitchen")
POLARITIES = (("negative", 0), ("positive", 1))
SPLIT_SIZES = (1400, 200, 400)  # train, dev, test per domain
ENV_VAR = "ADAPTERKIT_AMAZON_DIR"
_WELL_KNOWN = "data/amazon"  # relative to the working directory, never to where adapterkit is installed


def resolve_amazon_dir(data_dir: str | Path | None = None) -> Path:
    """`data_dir`, else `$ADAPTERKIT_AMAZON_DIR`, else ./data/amazon."""
    explicit = data_dir if data_dir is not None else os.environ.get(ENV_VAR) or None
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise AdapterkitError(f"Amazon reviews folder {path} does not exist")
        return path
    if (Path.cwd() / _WELL_KNOWN).is_dir():
        return (Path.cwd() / _WELL_KNOWN).resolve()
    raise AdapterkitError(
        f"Amazon reviews not found in ./data/amazon; pass --data-dir or set {ENV_VAR} to the folder "
        f"holding <domain>.positive.review"
    )


def parse_reviews(path: str | Path) -> list[dict]:
    """Every review of one Blitzer file as a dict of its tags (title, review_text, rating, ...)."""
    from adapterkit.io.files import text_lines

    path = Path(path)
    reviews, current, tag, lines = [], None, None, []
    for number, raw in text_lines(path, "an Amazon review file"):
        line = raw.rstrip("\n")
        stripped = line.strip()
        if stripped == "<review>":
            current = {}
        elif stripped == "</review>":
            if current is None or tag is not None:
                raise AdapterkitError(f"{path}:{number}: </review> without an open, complete <review>")
            reviews.append(current)
            current = None
        elif current is None:
            if stripped:
                raise AdapterkitError(f"{path}:{number}: text outside a <review> block")
        elif tag is None and stripped.startswith("<") and stripped.endswith(">"):
            tag, lines = stripped[1:-1], []
        elif tag is not None and stripped == f"</{tag}>":
            current[tag] = html.unescape("\n".join(lines).strip())
            tag = None
        elif tag is not None:
            lines.append(line)
        elif stripped:
            raise AdapterkitError(f"{path}:{number}: text outside a tag in a review")
    if current is not None:
        raise AdapterkitError(f"{path}: last <review> is not closed")
    return reviews


def review_text(review: dict) -> str:
    """Title and body joined by one space, whitespace runs collapsed."""
    text = f"{review.get('title', '')} {review.get('review_text', '')}"
    return " ".join(text.split())


def load_amazon(domain: str, data_dir: str | Path | None = None):
    """All 2000 labelled reviews of `domain`: a `datasets.Dataset` with text, label (1 pos / 0 neg), domain.

    Rows are negatives then positives, each in file order.
    """
    import datasets

    if domain not in DOMAINS:
        raise AdapterkitError(f"unknown Amazon domain {domain!r}; known: {', '.join(DOMAINS)}")
    root = resolve_amazon_dir(data_dir)
    out: dict[str, list] = {"text": [], "label": [], "domain": []}
    for polarity, label in POLARITIES:
        path = root / f"{domain}.{polarity}.review"
        if not path.is_file():
            raise AdapterkitError(f"missing Amazon file {path}")
        texts = [review_text(r) for r in parse_reviews(path)]
        out["text"] += texts
        out["label"] += [label] * len(texts)
        out["domain"] += [domain] * len(texts)
    return datasets.Dataset.from_dict(out)


def amazon_splits(domain: str, seed: int = 0, sizes: tuple[int, int, int] = SPLIT_SIZES,
                  data_dir: str | Path | None = None):
    """`datasets.DatasetDict` train/dev/test of one domain: stratified, seeded (see module doc)."""
    import datasets

    full = load_amazon(domain, data_dir)
    parts = stratified_split(full["label"], sizes, seed, keys=full["text"])
    return datasets.DatasetDict({name: full.select(rows) for name, rows in zip(("train", "dev", "test"), parts)})
