"""Batching, evaluation and prediction for sequence-classification models (adapters or not)."""
from __future__ import annotations

from pathlib import Path

import torch

from adapterkit import backbone
from adapterkit.errors import AdapterkitError
from adapterkit.io.files import read_json


def make_batches(rows, batch_size: int, pad_id: int, regression: bool, seed: int | None = None):
    """Padded batches of encoded rows (`data.batches` with PadCollator), each with its `_rows`."""
    from adapterkit.data import PadCollator
    from adapterkit.data.encode import batches

    for idx, batch in batches(rows, batch_size, PadCollator(pad_id, regression=regression), seed):
        yield batch | {"_rows": idx}


def predict_logits(model, rows, batch_size: int, pad_id: int, regression: bool = False,
                   title: str = "eval") -> torch.Tensor:
    """Logits (N, C) in the rows' original order (eval mode, restored after; progress under `title`)."""
    from adapterkit.progress import progress
    from adapterkit.toolkit.scoring import logits_in_row_order

    with progress(title, -(-len(rows) // batch_size)) as bar:
        return logits_in_row_order(model, make_batches(rows, batch_size, pad_id, regression), len(rows), bar)


def evaluate(model, rows, task, batch_size: int = 128, pad_id: int = 0) -> dict[str, float]:
    from adapterkit.data.metrics import compute_metrics

    logits = predict_logits(model, rows, batch_size, pad_id, task.is_regression)
    return compute_metrics(task, logits.numpy(), rows["labels"])


RUN_SCHEMA = {"task?": (str, None), "full_finetune?": bool, "model?": (str, None), "max_seq_len?": int,
              "data_dir?": (str, None), "attention?": (str, None), "rsa?": (dict, None),
              "precision?": str, "backbone_dtype?": str, "drop_layers?": int, "drop_robust?": bool}


def load_run(folder: str | Path, task_name: str | None = None, precision: str | None = None, note=print,
             drop_layers: int | None = None):
    """(model, tokenizer, task, run_config) from an `adapterkit train` output folder or a bare
    adapter folder (then the backbone named in its adapterkit_config.json is used).

    The run's precision (or `precision`, when given) is resolved for this machine (fp32 with a
    note where it is not native, see adapterkit.precision) and its backbone dtype applied;
    run_config["precision"] and ["backbone_dtype"] then say what the model runs with: run the
    forward under `adapterkit.precision.run_autocast(run_config)`. AdapterDrop: `drop_layers`, else
    the run's k (adapterkit.compose.drop.drop_for_run)."""
    from adapterkit.compose.drop import drop_for_run
    from adapterkit.data import get_task
    from adapterkit.io import load_adapter, read_manifest

    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterkitError(f"{folder}: no such folder")
    if (folder / "student.json").is_file():
        return _load_student_run(folder, task_name, precision, note)
    run = read_json(folder / "run_config.json", "a run config", schema=RUN_SCHEMA) if (folder / "run_config.json").exists() else {}
    name = task_name or run.get("task")
    if name is None:
        raise AdapterkitError(f"{folder} has no run_config.json: pass --task")
    task = get_task(name)
    full = run.get("full_finetune", False)
    from adapterkit.compose.io import is_combination, load_combination

    combined = not full and is_combination(folder)
    if full:
        model_source = folder / "model"
    elif combined:
        model_source = run.get("model")  # None: the default backbone
    else:
        model_source = run.get("model") or read_manifest(folder)["base_model"]["name_or_path"]
    tokenizer_dir = folder / "tokenizer"
    tokenizer = backbone.load_tokenizer(str(tokenizer_dir) if tokenizer_dir.is_dir() else model_source)
    problem = "regression" if task.is_regression else "single_label_classification"
    model = backbone.load_model(str(model_source) if full else model_source, num_labels=task.num_labels,
                                problem_type=problem)
    backbone.set_attention(model, run.get("attention"), run.get("rsa"))
    if combined:
        load_combination(model, folder)
    elif not full:
        load_adapter(model, folder, name=task.name)
    drop_for_run(model, run, drop_layers)
    _apply_precision(model, run, precision, None if full else (None if combined else task.name), note,
                     combined=combined)
    model.eval()
    return model, tokenizer, task, run


def _apply_precision(model, run: dict, precision: str | None, adapter: str | None, note,
                     combined: bool = False) -> None:
    from adapterkit.model import adapter_parameters, get_bank, head_parameters
    from adapterkit.precision import model_device_type, resolve

    name = precision or run.get("precision", "fp32")
    backbone_dtype = run.get("backbone_dtype", "fp32") if name == "bf16" else "fp32"
    resolved = resolve(name, model_device_type(model), backbone_dtype, training=False, note=note)
    if adapter is not None or combined:  # a combination keeps all its adapters and fusion layers as saved
        own = get_bank(model).parameters() if combined else adapter_parameters(model, adapter).values()
        resolved.prepare(model, [*own, *head_parameters(model).values()])
    run.update(resolved.to_dict())


def _load_student_run(folder: Path, task_name: str | None, precision: str | None, note):
    """(model, tokenizer, task, run_config) from an `adapterkit distill` student folder."""
    from adapterkit.data import get_task
    from adapterkit.transfer.student import load_student

    model, info = load_student(folder)
    run = read_json(folder / "run_config.json", "a run config", schema=RUN_SCHEMA) if (folder / "run_config.json").exists() else info
    name = task_name or run.get("task") or info.get("task")
    if name is None:
        raise AdapterkitError(f"{folder}: the student records no task; pass --task")
    tokenizer_dir = folder / "tokenizer"
    tokenizer = backbone.load_tokenizer(str(tokenizer_dir) if tokenizer_dir.is_dir() else None)
    _apply_precision(model, run, precision, None, note)
    model.eval()
    return model, tokenizer, get_task(name), run
