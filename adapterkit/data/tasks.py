"""The GLUE task table: where each task's files live, which columns hold text and label.

One `GlueTask` per task, registered by name. A task knows two layouts:
the GLUE TSV download (`folder/train.tsv`, `folder/dev.tsv`) and the Hugging Face
hub dataset `nyu-mll/glue`, whose label ids follow the same `labels` order.
Users add a task with `register_task(GlueTask(...))`.
"""
from __future__ import annotations

from dataclasses import dataclass

from adapterkit.errors import AdapterkitError

SPLITS = ("train", "dev")


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task.

    Args:
        name: short name used on the command line (`cola`, `sst2`, ...).
        folder: folder name in the GLUE layout (`CoLA`, `SST-2`, ...).
        text_columns: one (single sentence) or two (pair) column names in the TSV.
        label_column: column holding the label (class name or regression score).
        labels: class names in label-id order; None for a regression task.
        metric_keys: the GLUE metric names reported for this task.
        dev_file: dev split file name inside `folder`.
        columns: column names of a header-less file (CoLA); None when the file has a header.
        hub_text_columns: text columns of the hub dataset `nyu-mll/glue`.
        hub_dev_split: the hub split that plays the role of `dev`.
        skip_malformed: skip (with a warning naming the lines) rows with the wrong
            column count instead of failing; only for files with known defects.
        label_names: readable class names in label-id order where the files hold ids
            (CoLA's 0/1 are unacceptable/acceptable: the hub dataset's names); predictions show them.
    """

    name: str
    folder: str
    text_columns: tuple[str, ...]
    label_column: str
    labels: tuple[str, ...] | None
    metric_keys: tuple[str, ...]
    hub_text_columns: tuple[str, ...]
    dev_file: str = "dev.tsv"
    columns: tuple[str, ...] | None = None
    hub_dev_split: str = "validation"
    skip_malformed: bool = False
    label_names: tuple[str, ...] | None = None

    @property
    def display_labels(self) -> tuple[str, ...] | None:
        """Class names for people: `label_names` where the files hold ids, else `labels`."""
        return self.label_names or self.labels

    def __post_init__(self) -> None:
        if len(self.text_columns) not in (1, 2):
            raise ValueError(f"task {self.name}: text_columns must hold 1 or 2 names")
        if len(self.hub_text_columns) != len(self.text_columns):
            raise ValueError(f"task {self.name}: hub_text_columns must match text_columns")
        if self.labels is not None and len(self.labels) < 2:
            raise ValueError(f"task {self.name}: a classification task needs >= 2 labels")
        if not self.metric_keys:
            raise ValueError(f"task {self.name}: metric_keys is empty")
        if self.columns is not None:
            missing = set(self.text_columns + (self.label_column,)) - set(self.columns)
            if missing:
                raise ValueError(f"task {self.name}: columns lack {sorted(missing)}")

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def num_labels(self) -> int:
        """Output size of the task head (1 for regression)."""
        return 1 if self.labels is None else len(self.labels)

    def split_file(self, split: str) -> str:
        """File name of `split` ('train' or 'dev') inside the task folder."""
        if split not in SPLITS:
            raise AdapterkitError(f"unknown split {split!r} for task {self.name}; use one of {SPLITS}")
        return "train.tsv" if split == "train" else self.dev_file


TASKS: dict[str, GlueTask] = {}


def register_task(task: GlueTask) -> GlueTask:
    """Add `task` to the table; refuses a name that is already taken."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> GlueTask:
    """The task called `name` (case-insensitive), or an error listing the known ones."""
    task = TASKS.get(name.lower())
    if task is None:
        raise AdapterkitError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return task


_NLI = ("entailment", "not_entailment")

register_task(GlueTask(
    "cola", "CoLA", ("sentence",), "label", ("0", "1"), ("matthews_correlation",),
    hub_text_columns=("sentence",), label_names=("unacceptable", "acceptable"),
    columns=("source", "label", "original_mark", "sentence"),
))
register_task(GlueTask(
    "sst2", "SST-2", ("sentence",), "label", ("0", "1"), ("accuracy",),
    hub_text_columns=("sentence",), label_names=("negative", "positive"),
))
register_task(GlueTask(
    "mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"), ("accuracy", "f1"),
    hub_text_columns=("sentence1", "sentence2"), label_names=("not_equivalent", "equivalent"),
))
register_task(GlueTask(
    "rte", "RTE", ("sentence1", "sentence2"), "label", _NLI, ("accuracy",),
    hub_text_columns=("sentence1", "sentence2"),
))
register_task(GlueTask(
    "stsb", "STS-B", ("sentence1", "sentence2"), "score", None, ("pearson", "spearmanr"),
    hub_text_columns=("sentence1", "sentence2"),
))
# GLUE's QQP train.tsv holds a few rows broken by newlines inside a question
# (nyu-mll/GLUE-baselines#5); the hub loader drops such rows, and so do we.
register_task(GlueTask(
    "qqp", "QQP", ("question1", "question2"), "is_duplicate", ("0", "1"), ("accuracy", "f1"),
    hub_text_columns=("question1", "question2"), skip_malformed=True, label_names=("not_duplicate", "duplicate"),
))
register_task(GlueTask(
    "qnli", "QNLI", ("question", "sentence"), "label", _NLI, ("accuracy",),
    hub_text_columns=("question", "sentence"),
))
register_task(GlueTask(
    "mnli", "MNLI", ("sentence1", "sentence2"), "gold_label",
    ("entailment", "neutral", "contradiction"), ("accuracy",),
    hub_text_columns=("premise", "hypothesis"),
    dev_file="dev_matched.tsv", hub_dev_split="validation_matched",
))
