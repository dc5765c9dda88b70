"""Save and load merged multi-task models: safetensors + a JSON manifest of branches, never pickle.

Folder layout (format version 2; version 1 folders, written for BERT by earlier releases, load too):
  multitask.json             format, versions, the backbone config and class, the layer-list path,
                             the head's module paths, trunk depth, and per task: kind, branch
                             layer, number of layers, labels, file, free-form info
  trunk.safetensors          embeddings.<model key> (everything before the first layer) and
                             layers.<i>.* of the shared frozen trunk
  branch-<task>.safetensors  layers.<j>.* and head.<module path>.* (kind "layers"), or
                             adapter.<group>.* and head.* (kind "adapter", with its adapter config
                             in the manifest)
  tokenizer/                 optional
`save_multitask` writes everything; `save_task` / `delete_task` rewrite one task's file and the
manifest (and the trunk when its depth changed), so updating a task leaves the others' files alone.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from adapterkit.errors import AdapterkitError
from adapterkit.io.atomic import atomic_write, write_json
from adapterkit.io.files import read_manifest_json, read_safetensors
from adapterkit.multitask.model import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    TRUNK_FILE,
    Branch,
    Head,
    MultiTaskModel,
    _num_labels,
    _set_path,
    pre_state,
    renumbered,
)


def branch_file(task: str) -> str:
    return f"branch-{task}.safetensors"


def _tensors(states: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().contiguous().clone() for prefix, sd in states.items() for k, v in sd.items()}


def _write(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))


def write_trunk(model: MultiTaskModel, folder: Path) -> None:
    states = {"embeddings": pre_state(model.runner, model.stack, model.head_paths),
              **{f"layers.{i}": x.state_dict() for i, x in enumerate(model.layers)}}
    _write(folder / TRUNK_FILE, _tensors(states))


def write_branch(model: MultiTaskModel, folder: Path, task: str) -> None:
    from adapterkit.model import get_bank

    branch = model.branches[task]
    states = {"head": branch.head.state_by_path(), **{f"layers.{j}": x.state_dict() for j, x in enumerate(branch.layers)}}
    if branch.kind == "adapter":
        states["adapter"] = get_bank(model).adapters[task].state_dict()
    _write(folder / branch_file(task), _tensors(states))


def write_manifest(model: MultiTaskModel, folder: Path) -> None:
    from adapterkit import __version__

    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "adapterkit_version": __version__,
        "config": model.config.to_dict(), "attn_implementation": model.config._attn_implementation,
        "model_class": type(model.runner).__name__, "stack": model.stack, "head_paths": model.head_paths,
        "base_model": model.base_model_name, "trunk_layers": len(model.layers),
        "branches": {t: {"kind": b.kind, "branch_layer": b.branch_layer, "num_layers": b.num_layers,
                         "num_labels": _num_labels(b.head), "file": branch_file(t), "info": b.info}
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
    folder = Path(folder)
    manifest = read_manifest(folder)
    runner, stack, head_paths, template = _runner(manifest)
    trunk = read_safetensors(folder / TRUNK_FILE)
    old = manifest.get("format_version", 1) < 2
    if old:  # version 1 (BERT): embeddings.* were the base model's embeddings module
        trunk = {(f"embeddings.{runner.base_model_prefix}.{k}" if k.startswith("embeddings.") else k): v for k, v in trunk.items()}
    layer = lambda: copy.deepcopy(template)  # noqa: E731  (weights are loaded next)
    model = MultiTaskModel(runner, stack, renumbered(nn.ModuleList(layer() for _ in range(manifest["trunk_layers"]))), head_paths)
    _load_trunk(model, trunk, folder / TRUNK_FILE)
    model.base_model_name = manifest.get("base_model")
    for task, entry in manifest["branches"].items():
        tensors = read_safetensors(folder / entry["file"])
        if old:
            tensors = {_v1_head_key(k, runner.base_model_prefix): v for k, v in tensors.items()}
        head = _fresh_head(runner, head_paths, entry["num_labels"])
        branch = Branch(entry["kind"], entry["branch_layer"], nn.ModuleList(layer() for _ in range(entry["num_layers"])),
                        head, entry.get("info"))
        branch.layers.load_state_dict({k[len("layers."):]: v for k, v in tensors.items() if k.startswith("layers.")})
        _load_head(head, {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}, folder / entry["file"])
        model.branches[task] = branch
        if entry["kind"] == "adapter":
            _load_adapter(model, task, entry, tensors)
    probe = next((x for x in [*model.layers, *(x for b in model.branches.values() for x in b.layers)]), None)
    if probe is not None:
        model.slicer.layer_output_len(probe)
    return model.requires_grad_(False).eval()


def _runner(manifest: dict):
    """The family's model from the manifest's config with an empty layer list, its layer-list path,
    head paths, and one layer as the template of every layer."""
    import transformers
    from transformers import AutoConfig

    data = dict(manifest["config"])
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    config._attn_implementation = manifest.get("attn_implementation") or "sdpa"
    cls = getattr(transformers, manifest.get("model_class") or "AutoModelForSequenceClassification", None)
    if cls is None:
        raise AdapterkitError(f"this transformers has no {manifest.get('model_class')}; the multi-task model needs it")
    model = cls.from_config(config) if hasattr(cls, "from_config") else cls._from_config(config)
    from adapterkit.slicing import StackSlicer

    slicer = StackSlicer(model, manifest.get("stack"))
    stack, head_paths, template = slicer.stack, manifest.get("head_paths") or slicer.head_paths(), slicer.layers[0]
    _set_path(model, stack, nn.ModuleList())
    return model.requires_grad_(False).eval(), stack, head_paths, template.requires_grad_(False)


def _fresh_head(runner: nn.Module, head_paths: list[str], num_labels: int) -> Head:
    """Copies of the runner's head modules, the last Linear sized for `num_labels` (weights loaded next)."""
    parts = {p: copy.deepcopy(runner.get_submodule(p)) for p in head_paths}
    for path in reversed(head_paths):
        linears = [(name, m) for name, m in parts[path].named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            continue
        name, last = linears[-1]
        if last.out_features != num_labels:
            replacement = nn.Linear(last.in_features, num_labels, bias=last.bias is not None)
            if name:
                _set_path(parts[path], name, replacement)
            else:
                parts[path] = replacement
        break
    return Head(parts)


def _load_trunk(model: MultiTaskModel, tensors: dict[str, torch.Tensor], path: Path) -> None:
    pre = {k[len("embeddings."):]: v for k, v in tensors.items() if k.startswith("embeddings.")}
    layers = {k[len("layers."):]: v for k, v in tensors.items() if k.startswith("layers.")}
    expected = set(pre_state(model.runner, model.stack, model.head_paths))
    missing, extra = expected - set(pre), set(pre) - expected
    if missing or extra or len(pre) + len(layers) != len(tensors):
        raise AdapterkitError(f"{path}: tensors do not match the manifest (missing {sorted(missing)[:3]}, "
                              f"unexpected {sorted(extra)[:3]})")
    model.runner.load_state_dict(pre, strict=False)
    try:
        model.layers.load_state_dict(layers, strict=True)
    except RuntimeError:
        raise AdapterkitError(f"{path}: layer tensors do not match the manifest's trunk depth") from None


def _load_head(head: Head, tensors: dict[str, torch.Tensor], path: Path) -> None:
    expected = set(head.state_by_path())
    if set(tensors) != expected:
        raise AdapterkitError(f"{path}: head tensors do not match the manifest")
    head.load_by_path(tensors)


def head_tensors_by_model_key(manifest: dict, tensors: dict[str, torch.Tensor], base_prefix: str) -> dict[str, torch.Tensor]:
    """A branch file's head tensors under the task model's own keys (e.g. bert.pooler.dense.weight)."""
    if manifest.get("format_version", 1) < 2:
        tensors = {_v1_head_key(k, base_prefix): v for k, v in tensors.items()}
    return {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}


def _v1_head_key(key: str, prefix: str) -> str:
    """Version 1 branch keys (BERT): head.pooler.* was the base model's pooler."""
    return f"head.{prefix}.pooler." + key[len("head.pooler."):] if key.startswith("head.pooler.") else key


def _load_adapter(model: MultiTaskModel, task: str, entry: dict, tensors: dict[str, torch.Tensor]) -> None:
    from adapterkit.config import BottleneckConfig
    from adapterkit.model import add_adapter, get_bank

    add_adapter(model, task, BottleneckConfig.from_dict(entry["info"]["adapter"]), activate=False)
    prefix = "adapter."
    get_bank(model).adapters[task].load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})


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
