"""GLUE metrics against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from adapterkit.data.metrics import compute_metrics, main_metric, main_score, register_metric

# TP=2 FP=1 TN=2 FN=1
PREDS = [1, 1, 0, 0, 1, 0]
GOLD = [1, 0, 0, 0, 1, 1]


def test_matthews_by_hand():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (4 - 1) / sqrt(81)
    assert compute_metrics("cola", PREDS, GOLD) == {"matthews_correlation": pytest.approx(1 / 3)}


def test_accuracy_f1_and_combined_score():
    got = compute_metrics("mrpc", PREDS, GOLD)
    # precision = recall = 2/3, so F1 = 2/3; accuracy 4/6
    assert got == pytest.approx({"accuracy": 2 / 3, "f1": 2 / 3, "combined_score": 2 / 3})
    got = compute_metrics("qqp", [1, 1, 1, 0], [1, 0, 0, 0])
    # precision 1/3, recall 1 -> F1 = 2 * (1/3) / (4/3) = 0.5; accuracy 2/4
    assert got == pytest.approx({"accuracy": 0.5, "f1": 0.5, "combined_score": 0.5})


def test_pearson_spearman_by_hand():
    got = compute_metrics("stsb", [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 5.0, 4.0])
    pearson = 3.5 / math.sqrt(5 * 4.75)   # centred cross-products / norms
    spearman = 3.0 / math.sqrt(5 * 4.5)   # same on ranks [1, 2, 3, 4] vs [1, 2.5, 4, 2.5]
    assert got == pytest.approx({"pearson": pearson, "spearmanr": spearman,
                                 "combined_score": (pearson + spearman) / 2})


def test_logits_are_argmaxed_and_regression_column_flattened():
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])  # -> 1, 0, 1
    assert compute_metrics("sst2", logits, [1, 0, 0]) == {"accuracy": pytest.approx(2 / 3)}
    mnli = np.eye(3)[[0, 2, 1, 1]]
    assert compute_metrics("mnli", mnli, [0, 2, 1, 0])["accuracy"] == 0.75
    col = np.array([[1.0], [2.0], [3.0]])
    assert compute_metrics("stsb", col, [3.0, 2.0, 1.0])["pearson"] == pytest.approx(-1.0)


def test_constant_predictions():
    assert compute_metrics("cola", [1, 1, 1, 1], [1, 0, 1, 0]) == {"matthews_correlation": 0.0}
    got = compute_metrics("stsb", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert math.isnan(got["pearson"]) and math.isnan(got["combined_score"])
    assert main_score("stsb", got) == -math.inf


def test_main_metric_per_task():
    expected = {"cola": "matthews_correlation", "sst2": "accuracy", "mrpc": "combined_score",
                "rte": "accuracy", "stsb": "combined_score", "qqp": "combined_score",
                "qnli": "accuracy", "mnli": "accuracy"}
    assert {t: main_metric(t) for t in expected} == expected
    assert main_score("mrpc", {"accuracy": 0.8, "f1": 0.9, "combined_score": 0.85}) == 0.85


def test_bad_inputs():
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        compute_metrics("rte", [0, 1, 0], [0, 1])
    with pytest.raises(ValueError, match="zero examples"):
        compute_metrics("rte", [], [])
    with pytest.raises(ValueError, match="already registered"):
        register_metric("accuracy")(lambda p, g: 0.0)
