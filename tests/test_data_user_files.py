"""Users' prediction inputs and labelled domain files (TSV and JSONL)."""
from __future__ import annotations

import json

import pytest

from adapterkit.data import read_domain_file, read_predict_file
from adapterkit.errors import AdapterkitError


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_predict_tsv_pair_with_quotes_and_id(tmp_path):
    path = tmp_path / "in.tsv"
    path.write_text('id\tsentence1\tsentence2\nx1\t"Quoted start\tsecond\nx2\ta\tb', encoding="utf-8")
    data = read_predict_file(path, task="rte")
    assert data.column_names == ["text_a", "text_b", "id"]
    assert data["text_a"] == ['"Quoted start', "a"] and data["id"] == ["x1", "x2"]


def test_predict_jsonl_single_and_blank_lines(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "good film"}\n\n{"text": "bad"}\n', encoding="utf-8")
    data = read_predict_file(path, task="sst2")
    assert data.column_names == ["text_a"] and data["text_a"] == ["good film", "bad"]


def test_predict_without_task_detects_pairs(tmp_path):
    path = _jsonl(tmp_path / "in.jsonl", [{"premise": "p", "hypothesis": "h"}])
    assert read_predict_file(path).column_names == ["text_a", "text_b"]


@pytest.mark.parametrize("name,content,message", [
    ("a.jsonl", '{"text": "ok"}\n{"text": "cut\n', r"a.jsonl:2: not valid JSON"),
    ("b.jsonl", '{"text": "ok"}\n[1, 2]\n', r"b.jsonl:2: expected a JSON object, got list"),
    ("c.jsonl", '{"text": "ok"}\n{"text": 3}\n', r"c.jsonl:2: column 'text' must be a string"),
    ("d.tsv", "sentence\nok\nfine\textra\n", r"d.tsv:3: expected 1 tab-separated columns, found 2"),
    ("e.tsv", "words\nok\n", r"e.tsv:2: no text column\(s\) found in \['words'\]"),
    ("f.csv", "sentence\nok\n", r"unknown file type '.csv'"),
    ("g.tsv", "sentence\n", r"g.tsv: no rows to predict"),
])
def test_predict_errors_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(AdapterkitError, match=message):
        read_predict_file(path)


def test_predict_pair_task_rejects_single_column(tmp_path):
    path = _jsonl(tmp_path / "in.jsonl", [{"sentence": "only one"}])
    with pytest.raises(AdapterkitError, match=r"in.jsonl:1: no text column.*sentence1"):
        read_predict_file(path, task="mrpc")
    with pytest.raises(AdapterkitError, match="does not exist"):
        read_predict_file(tmp_path / "missing.tsv")


def test_domain_file_tsv_and_jsonl(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_text("text\tlabel\tdomain\ngreat\t1\tbooks\nawful\t0\ttoys\n", encoding="utf-8")
    data = read_domain_file(tsv)
    assert data.to_dict() == {"text": ["great", "awful"], "label": [1, 0], "domain": ["books", "toys"]}
    js = _jsonl(tmp_path / "d.jsonl", [{"sentence": "meh", "label": "negative"}])
    data = read_domain_file(js, label_names=["negative", "positive"], default_domain="mine")
    assert data.to_dict() == {"text": ["meh"], "label": [0], "domain": ["mine"]}


@pytest.mark.parametrize("record,message", [
    ({"text": "x", "label": 1}, r"d.jsonl:2: no domain"),
    ({"text": "x", "label": "pos", "domain": "a"}, r"d.jsonl:2: bad label 'pos'"),
    ({"text": "x", "label": 1.5, "domain": "a"}, r"d.jsonl:2: bad label 1.5"),
    ({"text": "x", "domain": "a"}, r"d.jsonl:2: no 'label' column"),
])
def test_domain_file_errors(tmp_path, record, message):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "ok", "label": 0, "domain": "a"}, record])
    with pytest.raises(AdapterkitError, match=message):
        read_domain_file(path)


def test_predict_reads_the_tasks_own_glue_files(tmp_path):
    """GLUE's CoLA/dev.tsv has no header: with task cola its own layout is used; MRPC's own
    '#1 String'/'#2 String' header is read too; a named id column is kept."""
    from adapterkit.data.user_files import predict_inputs

    cola = tmp_path / "dev.tsv"
    cola.write_text("gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tThey drank the pub.\n", encoding="utf-8")
    data, columns, id_name = predict_inputs(cola, "cola")
    assert data["text_a"] == ["Our friends won't buy this analysis.", "They drank the pub."]
    assert columns == ("sentence",) and id_name is None
    with pytest.raises(AdapterkitError, match="no text column"):
        read_predict_file(cola)  # without the task, a header-less file is not guessed
    mrpc = tmp_path / "mrpc.tsv"
    mrpc.write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t7\t8\tA cat.\tThe cat.\n", encoding="utf-8")
    data, columns, id_name = predict_inputs(mrpc, "mrpc", id_column="#1 ID")
    assert columns == ("#1 String", "#2 String") and id_name == "#1 ID"
    assert data["text_b"] == ["The cat."] and data["id"] == ["7"]
    with pytest.raises(AdapterkitError, match="no id column 'key'"):
        predict_inputs(mrpc, "mrpc", id_column="key")
