"""What a task is (`TaskSpec`, saved with the adapter) and what the training loop gets (`TaskData`).

A `TaskSpec` is the head's metadata: the task type, the label (or tag) names in id order, the
columns it was read from and the type's few settings (multi-label threshold, answer length).
It is written into the adapter's `adapterkit_config.json` under "task", so `load_adapter`,
`adapterkit eval/predict` and the hub rebuild exactly the head that was trained.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapterkit.errors import AdapterkitError


@dataclass
class TaskSpec:
    """The head's metadata: everything needed to rebuild and read it.

    Args:
        type: a registered task type (`classification`, `regression`, `multilabel`,
            `token-classification`, `extractive-qa`, `causal-lm`).
        labels: class or tag names in id order (None for regression, QA, causal LM).
        text_column, text_pair_column, label_column: the file columns the task was read from.
        tag_scheme: token classification: the scheme the files were written in (iob1, iob2,
            bioes); iob1 is trained and predicted as iob2.
        threshold: multilabel: a label is predicted when its sigmoid is >= threshold.
        max_answer_length, n_best, doc_stride: extractive QA post-processing and windowing.
        max_new_tokens: causal LM: tokens `predict` generates.
        preset: the GLUE task this spec stands for (cola, sst2, ...), else None.
    """

    type: str
    labels: list[str] | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    tag_scheme: str | None = None
    threshold: float = 0.5
    max_answer_length: int = 30
    n_best: int = 20
    doc_stride: int = 128
    max_new_tokens: int = 32
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.labels is not None:
            self.labels = [str(label) for label in self.labels]
            if len(set(self.labels)) != len(self.labels):
                raise AdapterkitError(f"task {self.type}: label names repeat: {self.labels}")
        from adapterkit.config import check_number

        check_number("threshold", self.threshold, above=0.0, below=1.0)
        for name in ("max_answer_length", "n_best", "doc_stride", "max_new_tokens"):
            check_number(name, getattr(self, name), minimum=1, integer=True)

    @property
    def num_labels(self) -> int:
        """Output width of the head (1 for regression; 2 start/end logits for QA)."""
        if self.type == "regression":
            return 1
        if self.type == "extractive-qa":
            return 2
        return len(self.labels or ())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TaskSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Split:
    """One split: the rows as read (`raw`: words, contexts, answers) and as encoded (`rows`)."""

    raw: Any
    rows: Any


@dataclass
class TaskData:
    """What the training loop needs from a task, whatever its type.

    evaluate(model, split) returns the metrics dict; `metric` names the one that picks the best
    evaluation and drives early stopping; `score` ranks a metrics dict (higher is better, NaN
    never wins).
    """

    name: str  # adapter name
    spec: TaskSpec
    train: Split
    dev: Split
    collate: Callable[[list[dict]], dict]
    evaluate: Callable[[Any, Split], dict[str, float]]
    metric: str
    greater_is_better: bool = True
    test: Split | None = None
    notes: list[str] = dataclasses.field(default_factory=list)  # what was guessed or split, told to the user

    def score(self, metrics: dict[str, float]) -> float:
        value = metrics[self.metric]
        if value is None or math.isnan(value):
            return -math.inf
        return value if self.greater_is_better else -value
