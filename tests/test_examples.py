"""Every script in examples/ runs as its docstring shows, on tiny models and small slices of the
real shared data: the Amazon CSV writer, the Trainer scripts for CoLA and for token classification
(each saves an adapter that adapterkit loads back with its head)."""
from __future__ import annotations

import csv
import runpy
import sys
from pathlib import Path

import pytest

from tests import task_fixtures as fx

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DATA = fx.shared_data()
needs_data = pytest.mark.skipif(DATA is None, reason="../shared/data not present")


def run_example(name: str, *args, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *map(str, args)])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(TESTED)


@needs_data
def test_amazon_to_csv_writes_one_row_per_review(tmp_path, monkeypatch, capsys):
    source = tmp_path / "amazon"
    source.mkdir()
    for name in ("books.positive.review", "kitchen.negative.review"):
        (source / name).write_bytes((DATA / "amazon" / name).read_bytes())
    run_example("amazon_to_csv.py", source, tmp_path / "reviews.csv", monkeypatch=monkeypatch)
    assert f"wrote {tmp_path / 'reviews.csv'}" in capsys.readouterr().out
    with open(tmp_path / "reviews.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2000 and set(rows[0]) == {"text", "stars", "domain", "polarity", "topics"}
    assert {r["topics"] for r in rows} == {"books|positive", "kitchen|negative"}
    assert {r["stars"] for r in rows} <= {"1", "2", "4", "5"} and all(r["text"].strip(". ") for r in rows)


def test_trainer_cola_saves_an_adapter_that_loads(tiny_bert_dir, glue_dir, tmp_path, monkeypatch):
    import adapterkit as ak
    from adapterkit.backbone import load_model

    out = tmp_path / "cola"
    run_example("trainer_cola.py", "--model", tiny_bert_dir, "--data-dir", glue_dir, "--max-steps", 4,
                "--output", out, monkeypatch=monkeypatch)
    model = load_model(str(tiny_bert_dir), num_labels=2)
    assert ak.load_adapter(model, out / "adapter") == "cola"


@needs_data
def test_trainer_token_classification_saves_a_tagger_that_loads(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    from adapterkit.tasks import load_for_inference

    files = fx.conll(DATA, tmp_path / "data")
    out = tmp_path / "ner"
    run_example("trainer_token_classification.py", "--model", tiny_bert_dir, "--train", files["train"],
                "--validation", files["validation"], "--max-steps", 4, "--output", out, monkeypatch=monkeypatch)
    assert "eval_f1" in capsys.readouterr().out
    model, _, spec, _ = load_for_inference(out / "adapter")
    assert spec.type == "token-classification" and spec.labels[0] == "O" and "B-PER" in spec.labels
    assert model.config.id2label == dict(enumerate(spec.labels))


TESTED = ["amazon_to_csv.py", "trainer_cola.py", "trainer_token_classification.py"]
