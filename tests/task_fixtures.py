"""Small slices of the real shared data as user files, for the task-type tests.

Every writer takes the shared data folder (`shared_data()`: $ADAPTERKIT_SHARED_DATA, else the
first `shared/data` beside the checkout or a folder above it, e.g. ../shared/data) and a
destination folder, and returns {"train": path, "validation": path, "test": path, "inputs": path}.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path


def shared_data() -> Path | None:
    if os.environ.get("ADAPTERKIT_SHARED_DATA"):
        return Path(os.environ["ADAPTERKIT_SHARED_DATA"])
    for parent in Path(__file__).resolve().parents[1:4]:
        if (parent / "shared" / "data" / "conll2003").is_dir():
            return parent / "shared" / "data"
    return None


def conll(data: Path, dest: Path) -> dict[str, str]:
    """CoNLL-2003 (4 columns, IOB1, -DOCSTART- lines kept): the first 60 / 30 / 30 sentences."""
    def first(path: Path, sentences: int) -> str:
        out, count, prev = [], 0, ""
        for line in path.read_text().splitlines(keepends=True):
            out.append(line)
            if not line.strip() and prev.strip() and not prev.startswith("-DOCSTART-"):
                count += 1
                if count >= sentences:
                    break
            prev = line
        return "".join(out)

    files = {"train": first(data / "conll2003/train.txt", 60), "validation": first(data / "conll2003/dev.txt", 30),
             "test": first(data / "conll2003/test.txt", 30)}
    files["inputs"] = "".join(line.split(" ")[0] + "\n" if line.strip() else "\n"
                              for line in files["test"].splitlines())
    return _write(dest, "conll", files, ".txt")


def squad(data: Path, dest: Path) -> dict[str, str]:
    """SQuAD v1.1: 24 train questions (JSONL rows), 8 dev questions kept as SQuAD JSON."""
    train = json.loads((data / "squad/train-v1.1.first-11-articles.json").read_text())["data"][0]
    dev = json.loads((data / "squad/dev-v1.1.json").read_text())["data"][0]
    rows = [{"id": qa["id"], "question": qa["question"], "context": p["context"], "answers": qa["answers"]}
            for p in train["paragraphs"][:6] for qa in p["qas"][:4]]
    dev_article = {"title": dev["title"], "paragraphs": [{"context": dev["paragraphs"][0]["context"],
                                                           "qas": dev["paragraphs"][0]["qas"][:8]}]}
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "squad_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (dest / "squad_dev.json").write_text(json.dumps({"data": [dev_article], "version": "1.1"}))
    return {"train": str(dest / "squad_train.jsonl"), "validation": str(dest / "squad_dev.json"),
            "test": str(dest / "squad_dev.json"), "inputs": str(dest / "squad_dev.json")}


def amazon_rows(data: Path, per_file: int = 12) -> list[dict]:
    from adapterkit.data import parse_reviews

    rows = []
    for domain in ("books", "kitchen"):
        for polarity in ("positive", "negative"):
            for review in parse_reviews(data / f"amazon/{domain}.{polarity}.review")[:per_file]:
                rows.append({"id": review.get("unique_id", ""), "text": review["review_text"][:400],
                             "stars": str(int(float(review["rating"]))), "domain": domain, "polarity": polarity})
    return rows


def amazon_csv(data: Path, dest: Path, column: str = "stars") -> dict[str, str]:
    """Amazon reviews as a user CSV: text, `column` (stars: 4 classes; polarity: 2); the
    validation file is left out (the trainer splits)."""
    rows = amazon_rows(data)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "reviews.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "text", column])
        writer.writeheader()
        writer.writerows({"id": r["id"], "text": r["text"], column: r[column]} for r in rows)
    inputs = dest / "reviews_inputs.jsonl"
    inputs.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows[:5]))
    return {"train": str(path), "validation": None, "test": None, "inputs": str(inputs)}


def amazon_multilabel(data: Path, dest: Path) -> dict[str, str]:
    """Amazon reviews with two labels each (domain, polarity) as JSONL lists."""
    rows = amazon_rows(data)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "multilabel.jsonl"
    path.write_text("".join(json.dumps({"text": r["text"], "labels": [r["domain"], r["polarity"]]}) + "\n"
                            for r in rows))
    inputs = dest / "multilabel_inputs.jsonl"
    inputs.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows[:5]))
    return {"train": str(path), "validation": None, "test": None, "inputs": str(inputs)}


def amazon_regression(data: Path, dest: Path) -> dict[str, str]:
    rows = amazon_rows(data)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "ratings.tsv"
    path.write_text("text\trating\n" + "".join(f"{r['text'].replace(chr(9), ' ').replace(chr(10), ' ')}\t{r['stars']}\n"
                                              for r in rows))
    inputs = dest / "ratings_inputs.tsv"
    inputs.write_text("text\n" + "".join(r["text"].replace("\t", " ").replace("\n", " ") + "\n" for r in rows[:5]))
    return {"train": str(path), "validation": None, "test": None, "inputs": str(inputs)}


def causal(data: Path, dest: Path) -> dict[str, str]:
    """Prompt/response JSONL from SQuAD questions and their answers."""
    article = json.loads((data / "squad/train-v1.1.first-11-articles.json").read_text())["data"][0]
    rows = [{"prompt": f"Question: {qa['question']} Answer:", "response": " " + qa["answers"][0]["text"]}
            for p in article["paragraphs"][:8] for qa in p["qas"][:3]]
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "lm_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:18]))
    (dest / "lm_dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[18:]))
    (dest / "lm_inputs.jsonl").write_text("".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in rows[18:21]))
    return {"train": str(dest / "lm_train.jsonl"), "validation": str(dest / "lm_dev.jsonl"), "test": None,
            "inputs": str(dest / "lm_inputs.jsonl")}


def _write(dest: Path, stem: str, files: dict[str, str], suffix: str) -> dict[str, str]:
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, text in files.items():
        path = dest / f"{stem}_{name}{suffix}"
        path.write_text(text)
        out[name] = str(path)
    return out
