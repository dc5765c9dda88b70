"""Save and load adapters: safetensors weights + one JSON file, never pickle.

A saved adapter is a folder:
  adapterkit_config.json        format, adapterkit version, the adapter config, the base model
                                (name, type, config hash, hidden size, layers), every site with
                                its group, and `groups`: the aliases of each shared module
  adapterkit_weights.safetensors one tensor per distinct parameter: "<group>.down.weight", ...
                                (a module shared by many sites is stored once; the sites that
                                use it are listed under `groups`), plus "layer_norms.<path>" when
                                the adapter trains the backbone's layer norms
  adapterkit_head.safetensors   the task head, by model-level parameter names (optional)
The names are chosen so PEFT's and AdapterHub's `adapter_config.json` readers never pick
these folders up by mistake. Each file is written to a temporary name and renamed, the config
last, so a folder with `adapterkit_config.json` is complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from adapterkit.backbone import canonical_name
from adapterkit.config import BottleneckConfig
from adapterkit.errors import AdapterkitError, IncompatibleAdapterError
from adapterkit.io.atomic import atomic_write, write_json
from adapterkit.io.files import read_manifest_json, read_safetensors
from adapterkit.model import (
    adapter_config,
    adapter_plan,
    add_adapter,
    get_bank,
    head_parameters,
    layer_norm_parameters,
    plan_adapter,
    remove_adapter,
)
from adapterkit.sharing import SharingPlan
from adapterkit.sharing.sites import find_sites, hidden_size

CONFIG_FILE = "adapterkit_config.json"
WEIGHTS_FILE = "adapterkit_weights.safetensors"
HEAD_FILE = "adapterkit_head.safetensors"
LAYER_NORMS = "layer_norms."
FORMAT = "adapterkit.adapter"
FORMAT_VERSION = 1

# Config keys that define the architecture; the hash ignores everything else (label maps,
# dtype, transformers version) so it is stable across transformers releases.
_ARCH_KEYS = (
    "model_type", "hidden_size", "d_model", "n_embd", "num_hidden_layers", "n_layer", "num_layers",
    "num_decoder_layers", "num_attention_heads", "n_head", "num_heads", "num_key_value_heads",
    "intermediate_size", "d_ff", "n_inner", "vocab_size", "hidden_act", "activation_function",
)


def save_adapter(model: nn.Module, name: str, path: str | os.PathLike, include_head: bool = True,
                 task: dict | None = None) -> Path:
    """Write adapter `name` (and the task head) to folder `path`; `task` is the head's metadata
    (adapterkit.tasks.TaskSpec.to_dict(): type, label names, sizes), stored under "task"."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config, plan = adapter_config(model, name), adapter_plan(model, name)
    tensors = {k: v.detach().contiguous() for k, v in get_bank(model).adapters[name].state_dict().items()}
    if config.train_layer_norms:
        for pname, p in layer_norm_parameters(model, plan.sites).items():
            tensors[f"{LAYER_NORMS}{pname}"] = p.detach().contiguous()
    atomic_write(path / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
    head = {n: p.detach().contiguous() for n, p in head_parameters(model).items()} if include_head else {}
    if head:
        atomic_write(path / HEAD_FILE, lambda tmp: save_file(head, tmp, metadata={"format": FORMAT}))
    elif (path / HEAD_FILE).exists():
        (path / HEAD_FILE).unlink()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "adapterkit_version": _version(),
        "name": name,
        "kind": config.kind,
        "config": config.to_dict(),
        "base_model": describe_base_model(model, config.targets),
        "sites": [
            {"path": s.path, "stack": s.stack, "layer": s.layer, "kind": s.kind, "hidden": s.hidden, "group": gid}
            for gid, sites in plan.groups.items() for s in sites
        ],
        "groups": {gid: [s.path for s in sites] for gid, sites in plan.groups.items()},
        "head": sorted(head),
    }
    if task is not None:
        manifest["task"] = task
    write_json(path / CONFIG_FILE, manifest)
    return path


# What load_adapter relies on in adapterkit_config.json (checked before use: one clear error).
MANIFEST_SCHEMA = {"name": str, "config": dict, "base_model": {"hidden_size?": (int, None), "num_layers?": (list, None)},
                   "sites": [{"path": str, "hidden": int}], "groups?": dict, "head?": [str]}


def read_manifest(path: str | os.PathLike) -> dict:
    path = Path(path)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        what = "folder" if path.is_dir() else "path"
        raise AdapterkitError(f"{path}: not an adapterkit adapter ({what} has no {CONFIG_FILE})")
    return read_manifest_json(config_path, FORMAT, FORMAT_VERSION, "an adapterkit adapter config", MANIFEST_SCHEMA)


def load_adapter(model: nn.Module, path: str | os.PathLike, name: str | None = None, activate: bool = True,
                 head: bool = True) -> str:
    """Load a saved adapter (a folder, or "hub:REPO[:TAG|@VERSION]") into `model`; returns its name.
    With head=False the model's head is left alone (a server keeps one head per adapter itself)."""
    if isinstance(path, str) and path.startswith("hub:"):
        from adapterkit.hub import pull_adapter

        path = pull_adapter(path[len("hub:"):])
    path = Path(path)
    manifest = read_manifest(path)
    config = BottleneckConfig.from_dict(manifest["config"])
    name = name or manifest["name"]
    plan = plan_adapter(model, config)
    check_compatible(model, manifest, plan, path)
    tensors = read_safetensors(path / WEIGHTS_FILE)
    norms = {k[len(LAYER_NORMS):]: tensors.pop(k) for k in [k for k in tensors if k.startswith(LAYER_NORMS)]}
    head_path = path / HEAD_FILE
    head_tensors = read_safetensors(head_path) if head and head_path.exists() else {}
    # Adapters come from hubs: outside its own modules an adapter may write only the head's
    # parameters and (when its config trains them) the layer norms of the layers it adapts.
    declared = set(manifest["head"]) if isinstance(manifest.get("head"), list) else None
    writes = _backbone_writes(model, head_tensors, head_parameters(model), head_path, "head parameter", declared)
    allowed_norms = layer_norm_parameters(model, plan.sites) if config.train_layer_norms else {}
    writes += _backbone_writes(model, norms, allowed_norms, path / WEIGHTS_FILE, "layer-norm parameter")
    add_adapter(model, name, config, activate=activate)
    try:
        _fill(model, name, tensors, path / WEIGHTS_FILE)
    except Exception:
        remove_adapter(model, name)  # leave the model as it was
        raise
    with torch.no_grad():
        for param, value in writes:
            param.copy_(value)
    _restore_label_names(model, manifest.get("task"))
    return name


def _restore_label_names(model: nn.Module, task) -> None:
    """The head's label (tag) names from the saved task metadata into the model's config."""
    config = getattr(model, "config", None)
    labels = task.get("labels") if isinstance(task, dict) else None
    if config is None or not isinstance(labels, list) or len(labels) != getattr(config, "num_labels", None):
        return
    config.id2label = dict(enumerate(str(label) for label in labels))
    config.label2id = {str(label): i for i, label in enumerate(labels)}


def describe_base_model(model: nn.Module, targets: dict[str, str] | None = None) -> dict:
    config = getattr(model, "config", None)
    stacks: dict[int, int] = {}
    for site in find_sites(model, targets):
        stacks[site.stack] = max(stacks.get(site.stack, 0), site.layer + 1)
    return {
        "name_or_path": canonical_name(getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None)),
        "model_type": getattr(config, "model_type", None),
        "class": type(model).__name__,
        "config_hash": config_hash(config),
        "hidden_size": hidden_size(model),
        "num_layers": [stacks[s] for s in sorted(stacks)],
    }


def config_hash(config) -> str | None:
    if config is None:
        return None
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    arch = {k: data[k] for k in _ARCH_KEYS if k in data}
    return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]


def check_compatible(model: nn.Module, manifest: dict, plan: SharingPlan, path: Path) -> None:
    """Raise IncompatibleAdapterError saying what differs between the adapter's base and `model`."""
    saved = manifest["base_model"]
    here = describe_base_model(model, manifest["config"].get("targets"))
    problems = []
    for key, label in (("hidden_size", "hidden size"), ("num_layers", "layers per stack")):
        if saved.get(key) != here.get(key):
            problems.append(f"{label}: adapter {saved.get(key)} vs model {here.get(key)}")
    saved_sites = {s["path"]: s for s in manifest["sites"]}
    model_sites = {s.path: s for s in plan.sites}
    missing = sorted(set(saved_sites) - set(model_sites))
    if missing:
        problems.append(f"sites missing in the model: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    widths = [p for p in saved_sites if p in model_sites and saved_sites[p]["hidden"] != model_sites[p].hidden]
    if widths:
        problems.append(f"site widths differ at {widths[0]}")
    if problems:
        raise IncompatibleAdapterError(
            f"adapter {path} was trained on {saved.get('class')} ({saved.get('name_or_path')}) and does not fit "
            f"{type(model).__name__}: " + "; ".join(problems)
        )
    if saved.get("config_hash") and saved["config_hash"] != here["config_hash"]:
        warnings.warn(
            f"adapter {path} was trained on a base model with a different config "
            f"({saved.get('name_or_path')}, hash {saved['config_hash']} vs {here['config_hash']}); shapes match, loading anyway",
            stacklevel=3,
        )


def _fill(model: nn.Module, name: str, tensors: dict[str, torch.Tensor], source: Path) -> None:
    modules = get_bank(model).adapters[name]
    expected = modules.state_dict()
    missing, extra = set(expected) - set(tensors), set(tensors) - set(expected)
    if missing or extra:
        raise IncompatibleAdapterError(
            f"{source}: tensors do not match the adapter's modules (missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]})"
        )
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise IncompatibleAdapterError(f"{source}: {key} has shape {tuple(value.shape)}, the model needs {tuple(expected[key].shape)}")
    modules.load_state_dict(tensors)


def _backbone_writes(model: nn.Module, tensors: dict[str, torch.Tensor], allowed: dict[str, nn.Parameter],
                     source: Path, what: str, declared: set[str] | None = None) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """(parameter, value) pairs for tensors that name an allowed parameter of the right shape;
    any other name (a frozen backbone weight, a buffer, an undeclared tensor) is refused."""
    writes = []
    for key, value in tensors.items():
        if key not in allowed or (declared is not None and key not in declared):
            raise IncompatibleAdapterError(
                f"{source}: {key} is not a {what} {'declared by this adapter' if key in allowed else 'of ' + type(model).__name__}; "
                "refusing to load it (an adapter may only write its own modules and the head)"
            )
        if value.shape != allowed[key].shape:
            raise IncompatibleAdapterError(
                f"{source}: {what} {key} has shape {tuple(value.shape)}, the model's is {tuple(allowed[key].shape)}"
                + (" (a different number of labels?)" if what == "head parameter" else "")
            )
        if not (value.is_floating_point() or value.is_complex()) and allowed[key].is_floating_point():
            raise IncompatibleAdapterError(f"{source}: {what} {key} holds {value.dtype}, not floating-point values")
        writes.append((allowed[key], value))
    return writes


def _version() -> str:
    from adapterkit import __version__

    return __version__
