"""Tiny GLUE-layout folders for tests, written at test time (never committed).

`write_glue_fixture(tmp_path)` writes `<root>/<Folder>/train.tsv` and the dev
file for all eight tasks in their real column layouts. CoLA, SST-2, MRPC and
RTE take the first rows of the real files in ../shared/data/glue, byte for
byte (header, MRPC's byte-order mark, CoLA's missing header); when those are
absent, and for QQP, QNLI, STS-B and MNLI, rows are generated with a seeded
generator. Generated labels follow the text (word overlap decides pairs,
a cue word decides single sentences), so a few training steps can learn them.

    from tests.glue_fixtures import write_glue_fixture
    root = write_glue_fixture(tmp_path)        # then load_glue("stsb", "dev", data_dir=root)
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterable
from pathlib import Path

# the real data (tests pass this path on to the library)
def _shared_data() -> Path:
    """$ADAPTERKIT_TEST_DATA, else the nearest shared/data above the checkout (a worktree may sit deeper)."""
    if os.environ.get("ADAPTERKIT_TEST_DATA"):
        return Path(os.environ["ADAPTERKIT_TEST_DATA"])
    above = Path(__file__).resolve().parents[1].parents
    return next((p / "shared" / "data" for p in above if (p / "shared" / "data").is_dir()), above[0] / "shared" / "data")


SHARED_DATA = _shared_data()
SHARED_GLUE = SHARED_DATA / "glue"
ALL_TASKS = ("cola", "sst2", "mrpc", "rte", "stsb", "qqp", "qnli", "mnli")
FOLDERS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "rte": "RTE", "stsb": "STS-B",
           "qqp": "QQP", "qnli": "QNLI", "mnli": "MNLI"}
REAL_TASKS = ("cola", "sst2", "mrpc", "rte")
HEADERS = {
    "cola": None,
    "sst2": ["sentence", "label"],
    "mrpc": ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
    "rte": ["index", "sentence1", "sentence2", "label"],
    "qqp": ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
    "qnli": ["index", "question", "sentence", "label"],
    "stsb": ["index", "genre", "filename", "year", "old_index", "source1", "source2",
             "sentence1", "sentence2", "score"],
}
_MNLI_HEAD = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
_WORDS = ("the cat dog bird house river stone tree music film book road city green small old "
          "quick bright cold warm night day light rain wind sea hill town car song").split()


def write_tsv(path: Path, header: list[str] | None, rows: Iterable[list[str]], bom: bool = False,
              trailing_newline: bool = True) -> Path:
    """Write a tab-separated file (no quoting), optionally with a BOM and without the final newline."""
    lines = (["\t".join(header)] if header else []) + ["\t".join(str(f) for f in r) for r in rows]
    text = ("\ufeff" if bom else "") + "\n".join(lines) + ("\n" if trailing_newline else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _sentence(rng: random.Random, n: int = 6) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _pair(rng: random.Random, related: bool) -> tuple[str, str, float]:
    """Two sentences and their word overlap in [0, 1]; related pairs share most words."""
    a = _sentence(rng).split()
    b = [w if related and rng.random() < 0.8 else rng.choice(_WORDS) for w in a]
    overlap = len(set(a) & set(b)) / len(set(a) | set(b))
    return " ".join(a), " ".join(b), overlap


def _single(rng: random.Random, label: int) -> str:
    return f"{_sentence(rng, 4)} {'good' if label else 'bad'} {_sentence(rng, 2)}"


def _row(task: str, i: int, rng: random.Random, dev: bool) -> list[str]:
    """One generated row in `task`'s real column layout."""
    label = i % (3 if task == "mnli" else 2)
    a, b, overlap = _pair(rng, related=(label == 0) if task in ("rte", "qnli", "mnli") else bool(label))
    nli = ("entailment", "not_entailment")[label] if task != "mnli" else None
    if task == "cola":
        return [f"gen{i % 7}", str(label), "" if label else "*", _single(rng, label)]
    if task == "sst2":
        return [_single(rng, label) + " ", str(label)]
    if task == "mrpc":
        return [str(label), str(1000 + i), str(2000 + i), a, b]
    if task == "rte":
        return [str(i), a, b, nli]
    if task == "qnli":
        return [str(i), a + " ?", b, nli]
    if task == "qqp":
        return [str(i), str(2 * i), str(2 * i + 1), a + " ?", b + " ?", str(label)]
    if task == "stsb":
        return [str(i), "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", a, b,
                f"{5 * overlap:.3f}"]
    gold = ("entailment", "neutral", "contradiction")[label]
    parses = [f"( {a} )", f"( {b} )", f"(ROOT {a})", f"(ROOT {b})"]
    votes = [gold] * (5 if dev else 1)
    return [str(i), str(100 + i), f"{100 + i}e", "fiction", *parses, a, b, *votes, gold]


def _header(task: str, dev: bool) -> list[str] | None:
    if task == "mnli":
        return _MNLI_HEAD + [f"label{k}" for k in range(1, 6 if dev else 2)] + ["gold_label"]
    return HEADERS[task]


def _copy_head(src: Path, dst: Path, n_rows: int, has_header: bool) -> None:
    """The first `n_rows` data lines of `src` (plus its header), bytes unchanged."""
    with open(src, "rb") as f:
        lines = [line for _, line in zip(range(n_rows + has_header), f)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(b"".join(lines))


def _generate(task: str, path: Path, n_rows: int, dev: bool, seed: int) -> None:
    rng = random.Random(f"{seed}/{task}/{dev}")
    rows = [_row(task, i, rng, dev) for i in range(n_rows)]
    write_tsv(path, _header(task, dev), rows, bom=(task == "mrpc"))


def write_glue_fixture(root: Path, tasks: Iterable[str] = ALL_TASKS, n_train: int = 40, n_dev: int = 16,
                       seed: int = 0, use_real: bool = True) -> Path:
    """Write tiny GLUE folders for `tasks` under `root`; returns `root` (a `--data-dir`)."""
    root = Path(root)
    for task in tasks:
        folder = root / FOLDERS[task]
        dev_name = "dev_matched.tsv" if task == "mnli" else "dev.tsv"
        for name, n, dev in (("train.tsv", n_train, False), (dev_name, n_dev, True)):
            real = SHARED_GLUE / FOLDERS[task] / name
            if use_real and task in REAL_TASKS and real.is_file():
                _copy_head(real, folder / name, n, has_header=(task != "cola"))
            else:
                _generate(task, folder / name, n, dev, seed)
    return root




def write_amazon_fixture(root: Path, domains: Iterable[str] = ("books", "dvd", "electronics", "kitchen"),
                         n_per_polarity: int = 20, seed: int = 0) -> Path:
    """Tiny Blitzer-format review files (`<domain>.{positive,negative}.review`) under `root`.

    Reviews use the real pseudo-XML layout, including a raw `&` and an `&quot;`
    entity; positive reviews contain 'great', negative ones 'awful'.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for domain in domains:
        for polarity, word, rating in (("positive", "great", "5.0"), ("negative", "awful", "1.0")):
            rng = random.Random(f"{seed}/{domain}/{polarity}")
            blocks = []
            for i in range(n_per_polarity):
                body = f"{_sentence(rng)} {word} &quot;{domain}&quot; & {_sentence(rng)}\n\n{_sentence(rng)}"
                tags = {"unique_id": f"{domain}-{polarity}-{i}", "asin": f"B{i:05d}",
                        "product_type": f"{domain} & more", "rating": rating,
                        "title": f"{word} {_sentence(rng, 3)}", "review_text": body}
                blocks.append("<review>\n" + "".join(f"<{t}>\n{v}\n</{t}>\n" for t, v in tags.items())
                              + "</review>\n")
            (root / f"{domain}.{polarity}.review").write_text("".join(blocks), encoding="utf-8")
    return root
