"""Metrics of the task types, each a plain function of predictions and gold values.

Classification, regression and multilabel use scikit-learn and scipy; token classification
uses `seqeval` (entity-level, CoNLL-eval compatible); extractive QA uses the definitions of the
official SQuAD v1.1 evaluation script (adapterkit.tasks.squad_metric); causal LM reports
perplexity from the mean token loss.
"""
from __future__ import annotations

import math

import numpy as np


def classification_metrics(predictions, labels, num_labels: int) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    gold = np.asarray(labels)
    preds = np.asarray(predictions)
    return {
        "accuracy": float(accuracy_score(gold, preds)),
        "macro_f1": float(f1_score(gold, preds, labels=list(range(num_labels)), average="macro", zero_division=0.0)),
    }


def regression_metrics(scores, labels) -> dict[str, float]:
    from adapterkit.data.metrics import pearson, spearmanr

    preds, gold = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    return {"pearson": pearson(preds, gold), "spearmanr": spearmanr(preds, gold),
            "mse": float(np.mean((preds - gold) ** 2))}


def multilabel_metrics(probabilities, labels, threshold: float) -> dict[str, float]:
    """Micro and macro F1 over labels, and the share of rows whose label set is exactly right."""
    from sklearn.metrics import f1_score

    preds = (np.asarray(probabilities) >= threshold).astype(int)
    gold = np.asarray(labels).astype(int)
    return {
        "micro_f1": float(f1_score(gold, preds, average="micro", zero_division=0.0)),
        "macro_f1": float(f1_score(gold, preds, average="macro", zero_division=0.0)),
        "exact_match": float((preds == gold).all(axis=1).mean()),
    }


def entity_metrics(predicted: list[list[str]], gold: list[list[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (seqeval's default, conlleval-compatible mode:
    IOB1, IOB2 and BIOES chunks), plus token accuracy."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    return {
        "precision": float(precision_score(gold, predicted, zero_division=0)),
        "recall": float(recall_score(gold, predicted, zero_division=0)),
        "f1": float(f1_score(gold, predicted, zero_division=0)),
        "accuracy": float(accuracy_score(gold, predicted)),
    }


def perplexity(total_loss: float, tokens: int) -> dict[str, float]:
    """exp(mean token loss) over `tokens` scored tokens."""
    loss = total_loss / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}
