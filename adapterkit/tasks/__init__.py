"""Task types: what an adapter is trained to do, from the user's own files or a GLUE preset.

    from adapterkit.tasks import DataFiles, load_task_files, get_task_type
    data = DataFiles(train="train.csv", text_column="review", label_column="stars")

Built-in types (one module each): classification, regression, multilabel,
token-classification, extractive-qa, causal-lm. Add one with `register_task_type`.
Names load lazily: `import adapterkit.tasks` does not import torch.
"""
from __future__ import annotations

from adapterkit.lazy import lazy_exports

_EXPORTS = {
    "TaskSpec": "adapterkit.tasks.spec",
    "TaskData": "adapterkit.tasks.spec",
    "Split": "adapterkit.tasks.spec",
    "register_task_type": "adapterkit.tasks.registry",
    "get_task_type": "adapterkit.tasks.registry",
    "task_type_names": "adapterkit.tasks.registry",
    "DataFiles": "adapterkit.tasks.load",
    "load_task_files": "adapterkit.tasks.load",
    "glue_task_data": "adapterkit.tasks.presets",
    "model_for": "adapterkit.tasks.heads",
    "saved_spec": "adapterkit.tasks.heads",
    "load_for_inference": "adapterkit.tasks.heads",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
