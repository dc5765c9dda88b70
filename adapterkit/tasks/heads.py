"""Build the model a task spec needs, and read the spec back from a saved adapter."""
from __future__ import annotations

from pathlib import Path

from adapterkit.tasks.registry import get_task_type
from adapterkit.tasks.spec import TaskSpec


def model_for(spec: TaskSpec, model_name: str | None):
    """A backbone with the head `spec` describes (fresh head weights, label names in id2label)."""
    from adapterkit import backbone

    kind = get_task_type(spec.type)
    return backbone.load_model(model_name, num_labels=spec.num_labels, problem_type=getattr(kind, "problem_type", None),
                               head=kind.head, labels=spec.labels)


def saved_spec(folder: str | Path) -> TaskSpec | None:
    """The TaskSpec stored with an adapter (None for adapters saved before task types)."""
    from adapterkit.io import read_manifest

    data = read_manifest(folder).get("task")
    return TaskSpec.from_dict(data) if data else None
