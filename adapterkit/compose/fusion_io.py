"""Save and load a fusion: its layers, its head, and its adapters embedded or referenced.

A saved fusion is a folder:
  adapterkit_fusion.json                 format, adapterkit version, the fusion's name and config,
                                         its groups (aliases of shared fusion layers) and, per
                                         fused adapter, where it comes from: "adapters/<name>"
                                         (embedded, a saved adapter folder inside this one) or a
                                         reference (a folder path or "hub:REPO[:TAG]")
  adapterkit_fusion_weights.safetensors  one tensor per distinct fusion parameter ("<group>.query.weight", ...)
  adapterkit_head.safetensors            the task head (optional)
  adapters/<name>/                       embedded adapters (save_adapter folders, without head)
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from adapterkit.atomic import atomic_write, write_json
from adapterkit.compose.fusion import FusionConfig, add_fusion, get_bank
from adapterkit.errors import AdapterkitError, IncompatibleAdapterError
from adapterkit.files import read_manifest_json, read_safetensors
from adapterkit.io import HEAD_FILE, _backbone_writes, load_adapter, save_adapter
from adapterkit.model import head_parameters

FUSION_FILE = "adapterkit_fusion.json"
FUSION_WEIGHTS = "adapterkit_fusion_weights.safetensors"
FORMAT = "adapterkit.fusion"
FORMAT_VERSION = 1


def is_fusion(path: str | os.PathLike) -> bool:
    return (Path(path) / FUSION_FILE).is_file()


def save_fusion(model: nn.Module, name: str, path: str | os.PathLike, references: dict[str, str] | None = None,
                include_head: bool = True) -> Path:
    """Write fusion `name` to folder `path`. Adapters named in `references` (adapter -> folder or
    "hub:REPO[:TAG]") are recorded by reference; the others are embedded under adapters/."""
    from adapterkit import __version__

    bank = get_bank(model)
    if name not in bank.fusion_specs:
        raise AdapterkitError(f"no fusion named {name!r}")
    spec, references = bank.fusion_specs[name], dict(references or {})
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sources = {}
    for adapter in spec.adapters:
        if adapter in references:
            sources[adapter] = str(references[adapter])
        else:
            save_adapter(model, adapter, path / "adapters" / adapter, include_head=False)
            sources[adapter] = f"adapters/{adapter}"
    tensors = {k: v.detach().contiguous() for k, v in bank.fusions[name].state_dict().items()}
    atomic_write(path / FUSION_WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
    head = _save_head(model, path) if include_head else []
    write_json(path / FUSION_FILE, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "adapterkit_version": __version__, "name": name,
        "config": spec.config.to_dict(), "adapters": [{"name": a, "source": sources[a]} for a in spec.adapters],
        "groups": {gid: [s.path for s in sites] for gid, sites in spec.plan.groups.items()}, "head": head,
    })
    return path


def read_fusion_manifest(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not (path / FUSION_FILE).is_file():
        raise AdapterkitError(f"{path}: not an adapterkit fusion (no {FUSION_FILE})")
    return read_manifest_json(path / FUSION_FILE, FORMAT, FORMAT_VERSION, "an adapterkit fusion config")


def load_fusion(model: nn.Module, path: str | os.PathLike, name: str | None = None, activate: bool = True) -> str:
    """Load a saved fusion (its adapters first, embedded or referenced) into `model`; returns its name.
    Adapters already on the model under the fused names are used as they are."""
    path = Path(path)
    manifest = read_fusion_manifest(path)
    name = name or manifest["name"]
    have = set(get_bank(model, create=True).adapters)
    added = []
    try:
        for entry in manifest["adapters"]:
            if entry["name"] in have:
                continue
            source = entry["source"]
            if not source.startswith("hub:") and not Path(source).is_absolute():
                source = str(path / source)
            load_adapter(model, source, name=entry["name"], activate=False)
            added.append(entry["name"])
        plan = add_fusion(model, name, [e["name"] for e in manifest["adapters"]],
                          FusionConfig.from_dict(manifest["config"]), activate=activate)
        saved = {gid: list(paths) for gid, paths in manifest["groups"].items()}
        if {gid: [s.path for s in sites] for gid, sites in plan.groups.items()} != saved:
            raise IncompatibleAdapterError(f"{path}: the fusion's groups do not match this model's sites")
        _fill(get_bank(model).fusions[name], read_safetensors(path / FUSION_WEIGHTS), path)
        _load_head(model, path / HEAD_FILE, manifest.get("head") or [])
    except Exception:
        _undo(model, name, added)
        raise
    return name


def _save_head(model: nn.Module, path: Path) -> list[str]:
    head = {n: p.detach().contiguous() for n, p in head_parameters(model).items()}
    if head:
        atomic_write(path / HEAD_FILE, lambda tmp: save_file(head, tmp, metadata={"format": FORMAT}))
    return sorted(head)


def _load_head(model: nn.Module, head_path: Path, declared: list[str]) -> None:
    """The head's tensors into the head's declared parameters only (io's check for adapters)."""
    if not head_path.exists():
        return
    writes = _backbone_writes(model, read_safetensors(head_path), head_parameters(model), head_path,
                              "head parameter", set(declared))
    with torch.no_grad():
        for param, value in writes:
            param.copy_(value)


def _fill(layers: nn.Module, tensors: dict, path: Path) -> None:
    expected = layers.state_dict()
    if set(tensors) != set(expected) or any(tensors[k].shape != expected[k].shape for k in expected):
        raise IncompatibleAdapterError(f"{path / FUSION_WEIGHTS}: tensors do not match the fusion's layers")
    layers.load_state_dict(tensors)


def _undo(model: nn.Module, name: str, added: list[str]) -> None:
    from adapterkit.compose.fusion import remove_fusion
    from adapterkit.model import remove_adapter

    bank = get_bank(model)
    if name in bank.fusion_specs:
        remove_fusion(model, name)
    for adapter in added:
        remove_adapter(model, adapter)
