"""The task-type registry: one object per type, added with `@register_task_type`.

A task type is any object with these members (a Protocol, not a base class):

    name: str                    registry key ("classification", ...)
    head: str                    model head: "sequence", "token", "qa" or "causal-lm"
    metric: str                  the main metric (best evaluation, early stopping)
    greater_is_better: bool
    read(path, spec, notes) -> datasets.Dataset
                                 a user's file as normalised columns; fills the spec (labels,
                                 columns) from the first file it reads
    encode(raw, tokenizer, spec, max_seq_len) -> datasets.Dataset   model inputs and labels
    collator(pad_id) -> callable(list[dict]) -> dict                 one padded batch
    evaluate(model, split, spec, tokenizer, batch_size) -> dict[str, float]
    predict(model, split, spec, tokenizer, batch_size) -> list[dict] one record per raw row
    stratify_column: str | None  the raw column a validation split is stratified on
"""
from __future__ import annotations

import importlib
from typing import Any, Protocol

from adapterkit.errors import AdapterkitError

_BUILTIN = {
    "classification": "adapterkit.tasks.classification",
    "regression": "adapterkit.tasks.regression",
    "multilabel": "adapterkit.tasks.multilabel",
    "token-classification": "adapterkit.tasks.token_classification",
    "extractive-qa": "adapterkit.tasks.extractive_qa",
    "causal-lm": "adapterkit.tasks.causal_lm",
}
TASK_TYPES: dict[str, Any] = {}


class TaskType(Protocol):
    name: str
    head: str
    metric: str
    greater_is_better: bool
    stratify_column: str | None

    def read(self, path, spec, notes: list[str]): ...
    def encode(self, raw, tokenizer, spec, max_seq_len: int): ...
    def collator(self, pad_id: int): ...
    def evaluate(self, model, split, spec, tokenizer, batch_size: int) -> dict[str, float]: ...
    def predict(self, model, split, spec, tokenizer, batch_size: int) -> list[dict]: ...


def register_task_type(task_type):
    """Add a task type (an instance, or a class instantiated without arguments); refuses a
    name that is taken. Usable as a class decorator."""
    instance = task_type() if isinstance(task_type, type) else task_type
    if instance.name in TASK_TYPES:
        raise ValueError(f"task type {instance.name!r} is already registered")
    TASK_TYPES[instance.name] = instance
    return task_type


def get_task_type(name: str):
    """The task type called `name` (built-ins load on first use)."""
    if name not in TASK_TYPES and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in TASK_TYPES:
        known = sorted(set(_BUILTIN) | set(TASK_TYPES))
        raise AdapterkitError(f"unknown task type {name!r}; one of: {', '.join(known)}")
    return TASK_TYPES[name]


def task_type_names() -> list[str]:
    return list(dict.fromkeys([*_BUILTIN, *TASK_TYPES]))
