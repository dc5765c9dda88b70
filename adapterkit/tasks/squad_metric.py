"""Exact match and F1 as the official SQuAD v1.1 evaluation script defines them.

An answer is normalised by lower-casing, removing punctuation (string.punctuation), removing
the articles a/an/the as whole words and collapsing whitespace, in that order. EM: the
normalised prediction equals a normalised gold answer. F1: over the whitespace tokens of the
normalised strings, 2PR/(P+R) with P and R from the multiset overlap (0 without overlap).
Each question takes its best score over its gold answers; a question without a prediction
scores 0; both figures are means over all questions, times 100.
"""
from __future__ import annotations

import re
import string
from collections import Counter

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], golds: dict[str, list[str]]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent over the questions of `golds` (id -> gold answers)."""
    if not golds:
        raise ValueError("no questions to score")
    em = f1_total = 0.0
    for qid, answers in golds.items():
        if qid not in predictions:
            continue
        em += max(exact_match(predictions[qid], a) for a in answers)
        f1_total += max(f1(predictions[qid], a) for a in answers)
    return {"exact_match": 100.0 * em / len(golds), "f1": 100.0 * f1_total / len(golds)}
