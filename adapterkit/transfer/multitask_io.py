"""Save and load merged multi-task models: safetensors + a JSON manifest of branches, never pickle.

Folder layout:
  multitask.json             format, versions, the backbone config, trunk depth, and per task:
                             kind, branch layer, number of layers, labels, file, free-form info
  trunk.safetensors          embeddings.* and layers.<i>.* of the shared frozen trunk
  branch-<task>.safetensors  layers.<j>.* and head.* (kind "layers"), or adapter.<group>.* and
                             head.* (kind "adapter", with its adapter config in the manifest)
  tokenizer/                 optional
`save_multitask` writes everything; `save_task` / `delete_task` rewrite one task's file and the
manifest (and the trunk when its depth changed), so updating a task leaves the others' files alone.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from adapterkit.atomic import atomic_write, write_json
from adapterkit.errors import AdapterkitError
from adapterkit.files import read_manifest_json, read_safetensors
from adapterkit.transfer.multitask import (FORMAT, FORMAT_VERSION, MANIFEST, TRUNK_FILE, Branch, Head,
                                           MultiTaskModel, bert_parts)


def branch_file(task: str) -> str:
    return f"branch-{task}.safetensors"


def _tensors(module_states: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().contiguous().clone() for prefix, sd in module_states.items() for k, v in sd.items()}


def _write(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))


def write_trunk(model: MultiTaskModel, folder: Path) -> None:
    states = {"embeddings": model.embeddings.state_dict(), **{f"layers.{i}": l.state_dict() for i, l in enumerate(model.layers)}}
    _write(folder / TRUNK_FILE, _tensors(states))


def write_branch(model: MultiTaskModel, folder: Path, task: str) -> None:
    from adapterkit.model import get_bank

    branch = model.branches[task]
    states = {"head": branch.head.state_dict(), **{f"layers.{j}": l.state_dict() for j, l in enumerate(branch.layers)}}
    if branch.kind == "adapter":
        states["adapter"] = get_bank(model).adapters[task].state_dict()
    _write(folder / branch_file(task), _tensors(states))


def write_manifest(model: MultiTaskModel, folder: Path) -> None:
    from adapterkit import __version__

    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "adapterkit_version": __version__,
        "config": model.config.to_dict(), "attn_implementation": model.config._attn_implementation,
        "base_model": model.base_model_name, "trunk_layers": len(model.layers),
        "branches": {t: {"kind": b.kind, "branch_layer": b.branch_layer, "num_layers": b.num_layers,
                         "num_labels": b.head.classifier.out_features, "file": branch_file(t), "info": b.info}
                     for t, b in model.branches.items()},
    }
    write_json(folder / MANIFEST, manifest, default=str)


def save_multitask(model: MultiTaskModel, folder: str | Path, tokenizer=None) -> Path:
    """Write the whole model (stale branch files of removed tasks are deleted)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_trunk(model, folder)
    for task in model.tasks:
        write_branch(model, folder, task)
    for stale in folder.glob("branch-*.safetensors"):
        if stale.name not in {branch_file(t) for t in model.tasks}:
            stale.unlink()
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder / "tokenizer"))
    write_manifest(model, folder)
    return folder


def save_task(model: MultiTaskModel, folder: str | Path, task: str) -> None:
    """After adding or updating `task`: its branch file, the trunk if it grew, the manifest."""
    folder = Path(folder)
    if read_manifest(folder)["trunk_layers"] != len(model.layers):
        write_trunk(model, folder)
    write_branch(model, folder, task)
    write_manifest(model, folder)


def delete_task(model: MultiTaskModel, folder: str | Path, task: str) -> None:
    """After `model.remove(task)`: drop its file, rewrite the manifest (and the trunk if it shrank)."""
    folder = Path(folder)
    if read_manifest(folder)["trunk_layers"] != len(model.layers):
        write_trunk(model, folder)
    write_manifest(model, folder)
    (folder / branch_file(task)).unlink(missing_ok=True)


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise AdapterkitError(f"{folder}: not a multi-task model (no {MANIFEST})")
    return read_manifest_json(path, FORMAT, FORMAT_VERSION, "a multi-task manifest")


def load_multitask(folder: str | Path) -> MultiTaskModel:
    """The merged model saved in `folder` (eval mode, frozen)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    folder = Path(folder)
    manifest = read_manifest(folder)
    data = dict(manifest["config"])
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    config._attn_implementation = manifest.get("attn_implementation") or "sdpa"
    skeleton_cfg = copy.deepcopy(config)
    skeleton_cfg.num_hidden_layers = 1
    embeddings, layers, head = bert_parts(AutoModelForSequenceClassification.from_config(skeleton_cfg))
    layer_cls, pooler_cls = type(layers[0]), type(head.pooler)
    trunk = read_safetensors(folder / TRUNK_FILE)
    model = MultiTaskModel(config, embeddings, nn.ModuleList(layer_cls(config) for _ in range(manifest["trunk_layers"])))
    model.load_state_dict(trunk, strict=False)
    _check_loaded(model, trunk, folder / TRUNK_FILE)
    model.base_model_name = manifest.get("base_model")
    for task, entry in manifest["branches"].items():
        tensors = read_safetensors(folder / entry["file"])
        head = Head(pooler_cls(config), nn.Dropout(config.hidden_dropout_prob), nn.Linear(config.hidden_size, entry["num_labels"]))
        branch = Branch(entry["kind"], entry["branch_layer"], nn.ModuleList(layer_cls(config) for _ in range(entry["num_layers"])),
                        head, entry.get("info"))
        branch.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("adapter.")}, strict=True)
        model.branches[task] = branch
        if entry["kind"] == "adapter":
            _load_adapter(model, task, entry, tensors)
    return model.requires_grad_(False).eval()


def _load_adapter(model: MultiTaskModel, task: str, entry: dict, tensors: dict[str, torch.Tensor]) -> None:
    from adapterkit.config import BottleneckConfig
    from adapterkit.model import add_adapter, get_bank

    add_adapter(model, task, BottleneckConfig.from_dict(entry["info"]["adapter"]), activate=False)
    prefix = "adapter."
    get_bank(model).adapters[task].load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})


def _check_loaded(model: MultiTaskModel, tensors: dict[str, torch.Tensor], path: Path) -> None:
    expected = {k for k in model.state_dict() if k.startswith(("embeddings.", "layers."))}
    missing, extra = expected - set(tensors), set(tensors) - expected
    if missing or extra:
        raise AdapterkitError(f"{path}: tensors do not match the manifest (missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]})")


_PAIRS = (("sentence1", "sentence2"), ("text_a", "text_b"), ("question1", "question2"), ("question", "sentence"))
_SINGLES = ("sentence", "text", "text_a")


def predict_file(model: MultiTaskModel, tokenizer, path: str | Path, default_tasks: list[str],
                 max_seq_len: int = 128, batch_size: int = 64) -> list[dict]:
    """Predictions for every row of a JSONL/TSV file: {"id"?, "predictions": {task: {...}}}.

    A row's tasks come from its `task` field (a name, a comma-separated string or a JSON list),
    else `default_tasks`; a batch runs the trunk once for all its rows."""
    from adapterkit.data import PadCollator
    from adapterkit.data.user_files import iter_records

    rows, tasks, ids = [], [], []
    for number, record in iter_records(path):
        texts = _texts(record, f"{path}:{number}")
        rows.append(dict(tokenizer(*texts, truncation=True, max_length=max_seq_len)))
        wanted = record.get("task") or default_tasks
        tasks.append(wanted.split(",") if isinstance(wanted, str) else list(wanted))
        ids.append(record.get("id"))
    collate, out = PadCollator(tokenizer.pad_token_id or 0), []
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start:start + batch_size])
        result = model(**batch, row_tasks=tasks[start:start + batch_size])
        preds: list[dict] = [{} for _ in range(len(batch["input_ids"]))]
        for task, logits in result.logits.items():
            for row, logit in zip(result.rows[task].tolist(), logits):
                preds[row][task] = _prediction(model, task, logit)
        out += [({"id": i} if i is not None else {}) | {"predictions": p} for i, p in zip(ids[start:], preds)]
    return out


def _texts(record: dict, where: str) -> tuple:
    for a, b in _PAIRS:
        if isinstance(record.get(a), str) and isinstance(record.get(b), str):
            return record[a], record[b]
    for a in _SINGLES:
        if isinstance(record.get(a), str):
            return (record[a],)
    raise AdapterkitError(f"{where}: no text column; expected sentence (or sentence1 and sentence2)")


def _prediction(model: MultiTaskModel, task: str, logit: torch.Tensor) -> dict:
    from adapterkit.data import TASKS

    k = int(logit.argmax())
    glue = TASKS.get(model.branches[task].info.get("task", task))
    labels = glue.labels if glue is not None and glue.labels else None
    return {"label": labels[k] if labels else k, "label_id": k, "probability": float(logit.float().softmax(-1)[k])}
