"""GLUE task names as presets over the classification and regression types.

`adapterkit train --task cola` reads the GLUE files, encodes them, batches, scores with the
GLUE metrics and picks the best epoch exactly as before the task types existed; only the
head metadata (`TaskSpec(type="classification", labels=[...], preset="cola")`) is new.
"""
from __future__ import annotations

from adapterkit.tasks.spec import Split, TaskData, TaskSpec


def glue_spec(name: str) -> TaskSpec:
    from adapterkit.data import get_task

    task = get_task(name)
    kind = "regression" if task.is_regression else "classification"
    return TaskSpec(type=kind, labels=list(task.labels) if task.labels else None, preset=task.name)


def glue_task_data(name: str, tokenizer, max_seq_len: int, data_dir: str | None = None,
                   eval_batch_size: int = 128) -> TaskData:
    """The GLUE task `name` (train and dev splits) as the training loop's TaskData."""
    from adapterkit.data import PadCollator, encode, get_task, load_glue
    from adapterkit.evaluation import evaluate
    from adapterkit.data.metrics import main_metric

    task = get_task(name)
    pad_id = tokenizer.pad_token_id or 0
    splits = {}
    for split in ("train", "dev"):
        raw = load_glue(task, split, data_dir)
        splits[split] = Split(raw, encode(raw, tokenizer, task, max_seq_len))
    return TaskData(
        name=task.name,
        spec=glue_spec(task.name),
        train=splits["train"],
        dev=splits["dev"],
        collate=PadCollator(pad_id, regression=task.is_regression),
        evaluate=lambda model, split: evaluate(model, split.rows, task, eval_batch_size, pad_id),
        metric=main_metric(task),
    )
