"""Blitzer Amazon reviews: parsing, the fixed seeded split, few-shot sampling, SST-2 as a domain."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from adapterkit.data import (DOMAINS, amazon_splits, few_shot, load_amazon, load_domain_splits, parse_reviews,
                             stratified_split)
from adapterkit.errors import AdapterkitError
from tests.glue_fixtures import SHARED_DATA, SHARED_GLUE, write_amazon_fixture

SHARED_AMAZON = SHARED_DATA / "amazon"
needs_real = pytest.mark.skipif(not SHARED_AMAZON.is_dir(), reason="../shared/data/amazon not present")


@needs_real
@pytest.mark.parametrize("domain", DOMAINS)
def test_real_domain_has_1000_per_polarity(domain):
    data = load_amazon(domain, SHARED_AMAZON)
    assert Counter(data["label"]) == {0: 1000, 1: 1000}
    assert set(data["domain"]) == {domain}
    assert all(len(t) > 10 for t in data["text"])


@needs_real
def test_real_ratings_match_readme():
    pos = Counter(r["rating"] for r in parse_reviews(SHARED_AMAZON / "books.positive.review"))
    neg = Counter(r["rating"] for r in parse_reviews(SHARED_AMAZON / "kitchen.negative.review"))
    assert pos == {"4.0": 269, "5.0": 731} and neg == {"1.0": 687, "2.0": 313}


@needs_real
def test_text_is_title_then_body_with_entities_unescaped():
    reviews = parse_reviews(SHARED_AMAZON / "books.positive.review")
    assert reviews[0]["title"] == "One of the best Crichton novels"
    data = load_amazon("books", SHARED_AMAZON)
    first_positive = data[1000]["text"]
    assert first_positive.startswith("One of the best Crichton novels Sphere by Michael Crichton is")
    assert "\n" not in first_positive
    assert not any("&quot;" in t for t in data["text"])
    assert any('"' in t for t in data["text"])


@needs_real
@pytest.mark.parametrize("domain", DOMAINS)
def test_every_domain_split_exact_and_text_disjoint(domain):
    splits = amazon_splits(domain, seed=0, data_dir=SHARED_AMAZON)
    assert [Counter(splits[k]["label"]) for k in ("train", "dev", "test")] == \
        [{0: 700, 1: 700}, {0: 100, 1: 100}, {0: 200, 1: 200}]
    texts = [set(splits[k]["text"]) for k in ("train", "dev", "test")]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])


def test_stratified_split_keeps_equal_keys_together():
    labels = [0] * 10 + [1] * 10
    keys = ["dup-a"] * 3 + [f"a{i}" for i in range(7)] + ["dup-b"] * 2 + [f"b{i}" for i in range(8)]
    for seed in range(20):
        parts = stratified_split(labels, (10, 4, 6), seed=seed, keys=keys)
        assert [len(p) for p in parts] == [10, 4, 6]
        assert sorted(i for p in parts for i in p) == list(range(20))
        homes = [{k for k, p in enumerate(parts) if i in p} for i in range(20)]
        assert homes[0] == homes[1] == homes[2] and homes[10] == homes[11]
        assert [sum(labels[i] for i in p) for p in parts] == [5, 2, 3]
    assert stratified_split(labels, (10, 4, 6), seed=1) != stratified_split(labels, (10, 4, 6), seed=2)


@needs_real
def test_real_split_sizes_disjoint_deterministic():
    splits = amazon_splits("dvd", seed=0, data_dir=SHARED_AMAZON)
    sizes = {k: (len(v), Counter(v["label"])) for k, v in splits.items()}
    assert sizes == {"train": (1400, {0: 700, 1: 700}), "dev": (200, {0: 100, 1: 100}),
                     "test": (400, {0: 200, 1: 200})}
    texts = [set(splits[k]["text"]) for k in ("train", "dev", "test")]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    assert len(set.union(*texts)) == len(set(load_amazon("dvd", SHARED_AMAZON)["text"]))
    again = amazon_splits("dvd", seed=0, data_dir=SHARED_AMAZON)
    assert again["test"]["text"] == splits["test"]["text"]
    other = amazon_splits("dvd", seed=1, data_dir=SHARED_AMAZON)
    assert other["test"]["text"] != splits["test"]["text"]


def test_fixture_split_and_few_shot(tmp_path):
    root = write_amazon_fixture(tmp_path, domains=["kitchen"], n_per_polarity=50)
    data = load_amazon("kitchen", root)
    assert len(data) == 100 and '"kitchen" & ' in data[0]["text"]
    splits = amazon_splits("kitchen", sizes=(60, 20, 20), data_dir=root)
    assert [Counter(splits[k]["label"]) for k in ("train", "dev", "test")] == \
        [{0: 30, 1: 30}, {0: 10, 1: 10}, {0: 10, 1: 10}]
    train = splits["train"]
    shots = few_shot(train, 10, seed=2)
    assert Counter(shots["label"]) == {0: 5, 1: 5}
    assert set(few_shot(train, 6, seed=2)["text"]) < set(shots["text"])  # nested for the same seed
    assert few_shot(train, 10, seed=2)["text"] == shots["text"]
    assert few_shot(train, 10, seed=3)["text"] != shots["text"]
    assert Counter(few_shot(train, 7, seed=0)["label"]) == {0: 4, 1: 3}
    with pytest.raises(AdapterkitError, match="need 31 rows of label 0, only 30 exist"):
        few_shot(train, 62)


def test_malformed_review_file_names_line(tmp_path):
    path = tmp_path / "books.positive.review"
    path.write_text("<review>\n<title>\nok\n</title>\n</review>\nstray text\n", encoding="utf-8")
    with pytest.raises(AdapterkitError, match=r"books.positive.review:6: text outside a <review> block"):
        parse_reviews(path)
    path.write_text("<review>\n<title>\nok\n</title>\n", encoding="utf-8")
    with pytest.raises(AdapterkitError, match="last <review> is not closed"):
        parse_reviews(path)


def test_unknown_domain_and_missing_folder(tmp_path):
    with pytest.raises(AdapterkitError, match="unknown Amazon domain 'toys'"):
        load_amazon("toys")
    with pytest.raises(AdapterkitError, match="does not exist"):
        load_amazon("books", tmp_path / "nowhere")
    with pytest.raises(AdapterkitError, match="missing Amazon file .*books.negative.review"):
        load_amazon("books", tmp_path)
    with pytest.raises(AdapterkitError, match="unknown domain 'toys'"):
        load_domain_splits("toys")


@pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason="../shared/data/glue not present")
def test_sst2_as_far_domain():
    splits = load_domain_splits("sst2", data_dir=SHARED_GLUE)
    assert len(splits["train"]) == 67349 and set(splits["train"]["domain"]) == {"sst2"}
    assert (len(splits["dev"]), len(splits["test"])) == (436, 436)
    assert Counter(splits["dev"]["label"]) + Counter(splits["test"]["label"]) == {1: 444, 0: 428}
    assert not set(splits["dev"]["text"]) & set(splits["test"]["text"])
