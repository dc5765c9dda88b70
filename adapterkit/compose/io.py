"""Save and load a combination of adapters: the adapters (embedded or referenced), how they are
composed (fusion with its layers, average with its weights, split with its spans), and the head.

A saved combination is a folder:
  adapterkit_combination.json            format, adapterkit version, the composition and its options,
                                         per adapter where it comes from ("adapters/<name>":
                                         embedded, a saved adapter folder inside this one; else a
                                         reference: a folder path or "hub:REPO[:TAG]"), and for a
                                         fusion its name, config and groups (aliases of shared layers)
  adapterkit_fusion_weights.safetensors  a fusion's layers, one tensor per distinct parameter
  adapterkit_head.safetensors            the task head (optional)
  adapters/<name>/                       embedded adapters (save_adapter folders, without head)
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from adapterkit.compose.fusion import FusionConfig, add_fusion, remove_fusion
from adapterkit.errors import AdapterkitError, IncompatibleAdapterError
from adapterkit.io.adapter import HEAD_FILE, _backbone_writes, load_adapter, save_adapter
from adapterkit.io.atomic import atomic_write, write_json
from adapterkit.io.files import read_manifest_json, read_safetensors
from adapterkit.model import get_bank, head_parameters, remove_adapter, set_active

COMBINATION_FILE = "adapterkit_combination.json"
FUSION_WEIGHTS = "adapterkit_fusion_weights.safetensors"
FORMAT = "adapterkit.combination"
FORMAT_VERSION = 1


def is_combination(path: str | os.PathLike) -> bool:
    return (Path(path) / COMBINATION_FILE).is_file()


def save_combination(model: nn.Module, path: str | os.PathLike, references: dict[str, str] | None = None,
                     include_head: bool = True, task: dict | None = None) -> Path:
    """Write the model's active combination (average, split or fusion) to folder `path`. Adapters
    named in `references` (adapter -> folder or "hub:REPO[:TAG]") are recorded by reference; the
    others are embedded under adapters/."""
    from adapterkit import __version__

    bank = get_bank(model)
    options = dict(getattr(bank.composer, "options", None) or {})
    if bank.composer is None:
        raise AdapterkitError("no combination is active: set_active(model, names, composition='average'|'split'|'fusion')")
    references, path = dict(references or {}), Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sources = {}
    for adapter in bank.active:
        if adapter in references:
            sources[adapter] = str(references[adapter])
        else:
            save_adapter(model, adapter, path / "adapters" / adapter, include_head=False)
            sources[adapter] = f"adapters/{adapter}"
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "adapterkit_version": __version__,
                "composition": bank.composition, "options": options,
                "adapters": [{"name": a, "source": sources[a]} for a in bank.active]}
    if bank.composition == "fusion":
        spec = bank.fusion_specs[options["fusion"]]
        tensors = {k: v.detach().contiguous() for k, v in bank.fusions[options["fusion"]].state_dict().items()}
        atomic_write(path / FUSION_WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
        manifest["fusion"] = {"config": spec.config.to_dict(),
                              "groups": {gid: [s.path for s in sites] for gid, sites in spec.plan.groups.items()}}
    head = {n: p.detach().contiguous() for n, p in head_parameters(model).items()} if include_head else {}
    if head:
        atomic_write(path / HEAD_FILE, lambda tmp: save_file(head, tmp, metadata={"format": FORMAT}))
    write_json(path / COMBINATION_FILE, manifest | {"head": sorted(head), "task": task})
    return path


def save_fusion(model: nn.Module, name: str, path: str | os.PathLike, references: dict[str, str] | None = None,
                include_head: bool = True) -> Path:
    """Activate fusion `name` and save it (see save_combination)."""
    from adapterkit.compose.fusion import activate_fusion

    activate_fusion(model, name)
    return save_combination(model, path, references, include_head)


def read_combination_manifest(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not is_combination(path):
        raise AdapterkitError(f"{path}: not a saved adapter combination (no {COMBINATION_FILE})")
    return read_manifest_json(path / COMBINATION_FILE, FORMAT, FORMAT_VERSION, "an adapterkit combination")


def load_combination(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load a saved combination into `model` and activate it; returns the adapters' names. Its
    adapters come first (embedded or referenced); adapters already on the model under those names
    are used as they are. On any error the model is left as it was."""
    path = Path(path)
    manifest = read_combination_manifest(path)
    names = [entry["name"] for entry in manifest["adapters"]]
    have = set(get_bank(model, create=True).adapters)
    added, fusion = [], None
    try:
        for entry in manifest["adapters"]:
            if entry["name"] not in have:
                source = entry["source"]
                if not source.startswith("hub:") and not Path(source).is_absolute():
                    source = str(path / source)
                load_adapter(model, source, name=entry["name"], activate=False)
                added.append(entry["name"])
        options = dict(manifest.get("options") or {})
        if manifest["composition"] == "fusion":
            fusion = options["fusion"]
            _load_fusion_layers(model, fusion, names, manifest["fusion"], path)
        _load_head(model, path / HEAD_FILE, manifest.get("head") or [])
        set_active(model, names, manifest["composition"], **options)
    except Exception:
        if fusion is not None and fusion in get_bank(model).fusion_specs:
            remove_fusion(model, fusion)
        for adapter in added:
            remove_adapter(model, adapter)
        raise
    return names


def load_fusion(model: nn.Module, path: str | os.PathLike) -> str:
    """Load a saved fusion (see load_combination); returns the fusion's name."""
    load_combination(model, path)
    bank = get_bank(model)
    if bank.composition != "fusion":
        raise AdapterkitError(f"{path} holds a {bank.composition!r} combination, not a fusion")
    return bank.composer.name


def _load_fusion_layers(model: nn.Module, name: str, adapters: list[str], saved: dict, path: Path) -> None:
    if name in get_bank(model).fusion_specs:
        raise AdapterkitError(f"model already has a fusion named {name!r}")
    plan = add_fusion(model, name, adapters, FusionConfig.from_dict(saved["config"]), activate=False)
    if {gid: [s.path for s in sites] for gid, sites in plan.groups.items()} != saved["groups"]:
        raise IncompatibleAdapterError(f"{path}: the fusion's groups do not match this model's sites")
    layers, tensors = get_bank(model).fusions[name], read_safetensors(path / FUSION_WEIGHTS)
    expected = layers.state_dict()
    if set(tensors) != set(expected) or any(tensors[k].shape != expected[k].shape for k in expected):
        raise IncompatibleAdapterError(f"{path / FUSION_WEIGHTS}: tensors do not match the fusion's layers")
    layers.load_state_dict(tensors)


def _load_head(model: nn.Module, head_path: Path, declared: list[str]) -> None:
    """The head's tensors into the head's declared parameters only (io's check for adapters)."""
    if not head_path.exists():
        return
    writes = _backbone_writes(model, read_safetensors(head_path), head_parameters(model), head_path,
                              "head parameter", set(declared))
    with torch.no_grad():
        for param, value in writes:
            param.copy_(value)
