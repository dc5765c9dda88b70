"""GLUE metrics computed offline with scikit-learn and scipy, under GLUE key names.

`compute_metrics(task, predictions, labels)` returns the task's metric keys
(`matthews_correlation`, `accuracy`, `f1`, `pearson`, `spearmanr`) and, for
tasks GLUE scores with two numbers (MRPC, QQP, STS-B), their mean as
`combined_score`. `main_metric(task)` names the key used to pick the best
epoch. Metric functions live in a registry users extend with `register_metric`.

A correlation of constant predictions is undefined: it is reported as NaN, and
`main_score` ranks NaN below every number.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from adapterkit.data.tasks import GlueTask, get_task

MetricFn = Callable[[np.ndarray, np.ndarray], float]
METRICS: dict[str, MetricFn] = {}


def register_metric(name: str) -> Callable[[MetricFn], MetricFn]:
    """Decorator adding `fn(predictions, labels) -> float` under `name`; refuses duplicates."""
    def add(fn: MetricFn) -> MetricFn:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = fn
        return fn
    return add


@register_metric("accuracy")
def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float((predictions == labels).mean())


@register_metric("f1")
def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 of the positive class 1 (paraphrase / duplicate), as GLUE reports it."""
    from sklearn.metrics import f1_score

    return float(f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0.0))


@register_metric("matthews_correlation")
def matthews_correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, predictions))


def _constant(x: np.ndarray) -> bool:
    return bool(np.all(x == x[0]))


@register_metric("pearson")
def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import pearsonr

    if _constant(predictions) or _constant(labels):
        return math.nan
    return float(pearsonr(predictions, labels)[0])


@register_metric("spearmanr")
def spearmanr(predictions: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import spearmanr as scipy_spearmanr

    if _constant(predictions) or _constant(labels):
        return math.nan
    return float(scipy_spearmanr(predictions, labels)[0])


def _task(task: str | GlueTask) -> GlueTask:
    return get_task(task) if isinstance(task, str) else task


def to_predictions(task: str | GlueTask, outputs) -> np.ndarray:
    """Class ids from logits (N, C) or ids (N,); scores (N,) from (N,) or (N, 1) for regression."""
    task = _task(task)
    out = np.asarray(outputs)
    if task.is_regression:
        return out.reshape(-1).astype(np.float64)
    if out.ndim == 2:
        return out.argmax(axis=-1)
    if out.ndim != 1:
        raise ValueError(f"predictions for {task.name} must be (N,) ids or (N, C) logits, got {out.shape}")
    return out.astype(np.int64)


def compute_metrics(task: str | GlueTask, predictions, labels) -> dict[str, float]:
    """The task's GLUE metrics, plus `combined_score` (their mean) when there are two.

    Args:
        predictions: class ids (N,), logits (N, C), or regression scores (N,)/(N, 1).
        labels: gold class ids or scores (N,).
    """
    task = _task(task)
    preds = to_predictions(task, predictions)
    gold = np.asarray(labels).reshape(-1)
    if len(preds) != len(gold):
        raise ValueError(f"{len(preds)} predictions for {len(gold)} labels")
    if len(gold) == 0:
        raise ValueError("cannot compute metrics on zero examples")
    result = {key: METRICS[key](preds, gold) for key in task.metric_keys}
    if len(task.metric_keys) > 1:
        result["combined_score"] = float(np.mean([result[k] for k in task.metric_keys]))
    return result


def main_metric(task: str | GlueTask) -> str:
    """The key that picks the best epoch: the single metric, or `combined_score`."""
    task = _task(task)
    return task.metric_keys[0] if len(task.metric_keys) == 1 else "combined_score"


def main_score(task: str | GlueTask, metrics: dict[str, float]) -> float:
    """`metrics[main_metric(task)]`, with NaN mapped to -inf so it never wins."""
    value = metrics[main_metric(task)]
    return -math.inf if math.isnan(value) else value
