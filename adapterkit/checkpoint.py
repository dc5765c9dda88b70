"""Training checkpoints for --resume: trainable weights, optimizer and scheduler state, progress.

Tensors go to safetensors, everything else to JSON (no pickle). The folder is written under a
temporary name and swapped in with one rename, so it is always the last complete epoch.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from adapterkit.errors import AdapterkitError
from adapterkit.model import trainable_state_dict


def save_checkpoint(path: Path, model, optimizer, scheduler, full_finetune: bool, progress: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = model.state_dict() if full_finetune else trainable_state_dict(model)
    save_file({k: v.detach().contiguous() for k, v in weights.items()}, str(tmp / "weights.safetensors"))
    tensors, meta = _optimizer_state(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    meta["scheduler"] = scheduler.state_dict()["last_epoch"]
    meta["progress"] = progress
    (tmp / "state.json").write_text(json.dumps(meta))
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, model, optimizer, scheduler, full_finetune: bool) -> dict:
    if not (path / "state.json").exists():
        raise AdapterkitError(f"{path}: incomplete checkpoint (no state.json)")
    meta = json.loads((path / "state.json").read_text())
    weights = load_file(str(path / "weights.safetensors"))
    missing = set(weights) - set(model.state_dict())
    if missing:
        raise AdapterkitError(f"{path}: checkpoint does not fit the model (unknown {sorted(missing)[:3]})")
    model.load_state_dict(weights, strict=full_finetune)
    _load_optimizer_state(optimizer, load_file(str(path / "optimizer.safetensors")), meta)
    scheduler.last_epoch = meta["scheduler"]
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    return meta["progress"]


def _optimizer_state(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer_state(optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    entries: dict[int, dict] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        index, name = key.split(".", 1)
        entries.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": entries, "param_groups": meta["param_groups"]})
