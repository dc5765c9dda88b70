"""Students for distillation: a shallower (and possibly narrower) model built from a teacher.

`make_student(teacher, num_layers)` builds a model of the teacher's class with `num_layers`
layers and initialises it from the teacher's *bottom* layers: embeddings, layers
0..num_layers-1, pooler and classifier are exact copies, and so are the teacher's adapters on
those layers (the multi-task paper's section 3.2 initialisation, Wei et al. 2022,
https://aclanthology.org/2022.acl-short.89/). Before training, the student's hidden states
0..num_layers equal the teacher's bit for bit.

With `hidden_size=` (or heads / intermediate size) the widths differ and nothing can be copied:
the student then starts from `init` (a model folder of that width) or from a random
initialisation, and the distillation losses map its hidden states through a learned projection
(see adapterkit.transfer.kd_losses).

`save_student` / `load_student` store a student as safetensors: `model/` (the backbone and head,
`save_pretrained`) and, when it carries adapters, `adapters/<name>/` (adapterkit's adapter format).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from adapterkit.backbone import quiet_loading
from adapterkit.errors import AdapterkitError
from adapterkit.io.atomic import write_json
from adapterkit.model import (
    BANK,
    adapter_config,
    adapter_plan,
    add_adapter,
    full_saves,
    get_bank,
    list_adapters,
    set_active,
)
from adapterkit.sharing.sites import find_layer_stacks

_DEPTH_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")
_WIDTH_KEYS = {"hidden_size": "hidden_size", "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size"}


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's (first) stack of transformer layers."""
    path = find_layer_stacks(model)[0].path
    return model.get_submodule(path)


def depth(model: nn.Module) -> int:
    return len(encoder_layers(model))


def make_student(teacher: nn.Module, num_layers: int, init: str | None = None, **widths: int) -> nn.Module:
    """A `num_layers`-layer student of the teacher's class, initialised from its bottom layers.

    Args:
        teacher: a sequence-classification model (with or without adapters).
        num_layers: student depth, 1 <= num_layers <= teacher depth when widths match.
        init: with different widths, a model folder to start from (else random weights).
        widths: hidden_size=, num_heads=, intermediate_size= to make a narrower student.
    """
    unknown = set(widths) - set(_WIDTH_KEYS)
    if unknown:
        raise AdapterkitError(f"unknown student width options {sorted(unknown)}; use {sorted(_WIDTH_KEYS)}")
    if num_layers < 1:
        raise AdapterkitError(f"a student needs at least one layer, got {num_layers}")
    config = copy.deepcopy(teacher.config)
    _set_depth(config, num_layers)
    changed = {k: v for k, v in widths.items() if v is not None and getattr(config, _WIDTH_KEYS[k]) != v}
    for key, value in changed.items():
        setattr(config, _WIDTH_KEYS[key], value)
    if not changed:
        if num_layers > depth(teacher):
            raise AdapterkitError(f"student has {num_layers} layers but the teacher only {depth(teacher)}")
        student = type(teacher)(config)
        _copy_bottom(teacher, student)
        _copy_adapters(teacher, student, num_layers)
    elif init:
        from adapterkit import backbone

        student = backbone.load_model(init, num_labels=config.num_labels)
        _check_widths(student, config, init)
    else:
        student = type(teacher)(config)
    return student.to(next(teacher.parameters()).device).train(teacher.training)


def _set_depth(config, num_layers: int) -> None:
    for key in _DEPTH_KEYS:
        if isinstance(getattr(config, key, None), int):
            setattr(config, key, num_layers)
            return
    raise AdapterkitError(f"cannot set the depth of a {type(config).__name__}: none of {_DEPTH_KEYS} in its config")


def _copy_bottom(teacher: nn.Module, student: nn.Module) -> None:
    source = {k: v for k, v in teacher.state_dict().items() if not k.startswith(f"{BANK}.")}
    target = student.state_dict()
    missing = [k for k in target if k not in source or source[k].shape != target[k].shape]
    if missing:
        raise AdapterkitError(f"cannot initialise the student from the teacher: no matching tensor for {missing[:3]}")
    student.load_state_dict({k: source[k] for k in target}, strict=True)


def _copy_adapters(teacher: nn.Module, student: nn.Module, num_layers: int) -> None:
    """Give the student the teacher's adapters on layers < num_layers, weights copied per site."""
    active = _active(teacher)
    copied = []
    for name in list_adapters(teacher):
        config = adapter_config(teacher, name)
        layers = sorted({s.layer for s in adapter_plan(teacher, name).sites if s.stack == 0 and s.layer < num_layers})
        if not layers:
            continue
        sub = copy.deepcopy(config)
        sub.layers, sub.top_n, sub.leave_out = layers, None, []
        plan = add_adapter(student, name, sub, activate=False)
        _copy_groups(teacher, student, name, plan)
        copied.append(name)
    if copied:
        set_active(student, [a for a in active if a in copied])


def _copy_groups(teacher: nn.Module, student: nn.Module, name: str, plan) -> None:
    teacher_group = adapter_plan(teacher, name).group_of()
    t_modules, s_modules = get_bank(teacher).adapters[name], get_bank(student).adapters[name]
    for gid, sites in plan.groups.items():
        sources = {teacher_group[s.path] for s in sites}
        if len(sources) != 1:
            raise AdapterkitError(f"adapter {name!r}: student group {gid} spans teacher groups {sorted(sources)}")
        s_modules[gid].load_state_dict(t_modules[sources.pop()].state_dict())


def _active(model: nn.Module) -> list[str]:
    bank = getattr(model, BANK, None)
    return list(bank.active) if bank is not None else []


def _check_widths(student: nn.Module, config, init: str) -> None:
    """The `init` model must have the requested widths; it keeps its bottom layers only."""
    for key in _WIDTH_KEYS.values():
        if getattr(student.config, key) != getattr(config, key):
            raise AdapterkitError(f"student init {init}: {key} is {getattr(student.config, key)}, expected {getattr(config, key)}")
    wanted = _depth_of(config)
    if depth(student) < wanted:
        raise AdapterkitError(f"student init {init} has {depth(student)} layers, fewer than {wanted}")
    del encoder_layers(student)[wanted:]
    _set_depth(student.config, wanted)


def _depth_of(config) -> int:
    return next(getattr(config, k) for k in _DEPTH_KEYS if isinstance(getattr(config, k, None), int))


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors without its adapters."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(f"{BANK}.")}


def save_student(model: nn.Module, folder: str | Path, tokenizer=None, info: dict | None = None) -> Path:
    """Write `model/` (+ `adapters/<name>/`, `tokenizer/`) and `student.json` with `info`."""
    from adapterkit.io import save_adapter

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with quiet_loading(), full_saves(model):
        model.save_pretrained(str(folder / "model"), state_dict=plain_state_dict(model))
    names = list_adapters(model)
    for name in names:
        save_adapter(model, name, folder / "adapters" / name, include_head=False)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder / "tokenizer"))
    meta = {"format": "adapterkit.student", "adapters": names, "active": _active(model), **(info or {})}
    write_json(folder / "student.json", meta, default=str)
    return folder


def load_student(folder: str | Path):
    """(model, info) from a `save_student` folder."""
    from transformers import AutoModelForSequenceClassification

    from adapterkit.io import load_adapter

    folder = Path(folder)
    meta_path = folder / "student.json"
    if not meta_path.is_file():
        raise AdapterkitError(f"{folder}: not a distilled student (no student.json)")
    info = json.loads(meta_path.read_text())
    with quiet_loading():
        model = AutoModelForSequenceClassification.from_pretrained(str(folder / "model"))
    for name in info.get("adapters", []):
        load_adapter(model, folder / "adapters" / name, name=name, activate=False)
    if info.get("adapters"):
        set_active(model, info.get("active", []))
    return model.eval(), info
