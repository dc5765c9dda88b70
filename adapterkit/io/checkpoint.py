"""Training checkpoints for --resume: trainable weights, optimizer and scheduler state, the
random-number generators' state, progress.

Tensors go to safetensors, everything else to JSON (no pickle). A checkpoint folder is
complete when its state.json (written last, after the weights were flushed) parses and its two
safetensors files pass the header check. A save writes `NAME.tmp`, then swaps it in with two
renames (`NAME` -> `NAME.old`, `NAME.tmp` -> `NAME`) and removes `NAME.old`. A crash can stop
that sequence anywhere; `recover_checkpoint` (called by --resume and before every save) looks
at all three names, keeps the complete one with the most progress as `NAME` and clears the
rest, so --resume always continues from the newest complete checkpoint. Folders that cannot be
removed (made read-only) are made writable again or, failing that, renamed aside.
"""
from __future__ import annotations

import os
import secrets
import shutil
import stat
from pathlib import Path

import torch
from safetensors.torch import save_file

from adapterkit.errors import AdapterkitError
from adapterkit.io.atomic import atomic_write, fsync_dir, write_json
from adapterkit.io.files import FileFormatError, read_json, read_safetensors, safetensors_header
from adapterkit.model import trainable_state_dict

WEIGHTS, OPTIMIZER, STATE = "weights.safetensors", "optimizer.safetensors", "state.json"
_RNG = "__rng__."  # generator states stored beside the optimizer tensors
_STATE_SCHEMA = {"param_groups": [dict], "scalars": dict, "scheduler": int,
                 "progress": {"epoch": int, "step": int, "history": [dict]}}


def save_checkpoint(path: Path, model, optimizer, scheduler, full_finetune: bool, progress: dict) -> None:
    path = Path(path)
    recover_checkpoint(path)  # a crash in an earlier swap must not cost the newest checkpoint
    tmp = _sibling(path, "tmp")
    _remove(tmp)
    tmp.mkdir(parents=True)
    weights = model.state_dict() if full_finetune else trainable_state_dict(model)
    _save_tensors(tmp / WEIGHTS, {k: v.detach().contiguous() for k, v in weights.items()})
    tensors, meta = _optimizer_state(optimizer)
    _save_tensors(tmp / OPTIMIZER, {**tensors, **_rng_state()})
    meta["scheduler"] = scheduler.state_dict()["last_epoch"]
    meta["progress"] = progress
    write_json(tmp / STATE, meta)  # last: its presence marks the folder complete
    fsync_dir(tmp)
    old = _sibling(path, "old")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    _remove(old)


def recover_checkpoint(path: Path, resume: bool = False) -> Path | None:
    """After any crash: the newest complete checkpoint moved to `path` (others removed), or None.
    With `resume`, folders that are all incomplete are an error (kept, for the user to look at),
    not a silent fresh start."""
    path = Path(path)
    candidates = [p for p in (path, _sibling(path, "tmp"), _sibling(path, "old")) if p.exists()]
    complete = [(progress_of(p), p) for p in candidates]
    complete = [(key, p) for key, p in complete if key is not None]
    if not complete:
        if resume and candidates:
            raise AdapterkitError(f"{path}: no complete checkpoint to resume from ({_problem(candidates[0])}); "
                                  "remove the checkpoint folders to start the run over")
        for p in candidates:
            _remove(p)
        return None
    _, best = max(complete, key=lambda item: (item[0], item[1] == path))
    if best != path:
        if path.exists():
            _remove(path)
        os.replace(best, path)
        fsync_dir(path.parent)
    for p in candidates:
        if p != best and p != path:
            _remove(p)
    return path


def progress_of(folder: Path) -> tuple[int, int] | None:
    """(epoch, step) of a complete checkpoint folder; None when it is incomplete or corrupt."""
    try:
        meta = read_json(folder / STATE, "a checkpoint state", schema=_STATE_SCHEMA)
        safetensors_header(folder / WEIGHTS)
        safetensors_header(folder / OPTIMIZER)
    except (FileFormatError, OSError):
        return None
    return meta["progress"]["epoch"], meta["progress"]["step"]


def _problem(folder: Path) -> str:
    try:
        read_json(folder / STATE, "a checkpoint state", schema=_STATE_SCHEMA)
        safetensors_header(folder / WEIGHTS, name=str(folder / WEIGHTS))
        safetensors_header(folder / OPTIMIZER, name=str(folder / OPTIMIZER))
    except (FileFormatError, OSError) as e:
        return str(e)
    return "unreadable"


def load_checkpoint(path: Path, model, optimizer, scheduler, full_finetune: bool) -> dict:
    path = Path(path)
    meta = read_json(path / STATE, "a checkpoint state", schema=_STATE_SCHEMA)
    weights = read_safetensors(path / WEIGHTS)
    _check_fits(path, weights, model.state_dict() if full_finetune else trainable_state_dict(model))
    model.load_state_dict(weights, strict=full_finetune)
    tensors = read_safetensors(path / OPTIMIZER)
    rng = {k[len(_RNG):]: tensors.pop(k) for k in [k for k in tensors if k.startswith(_RNG)]}
    try:
        _load_optimizer_state(optimizer, tensors, meta)
    except (ValueError, KeyError, RuntimeError) as e:
        raise AdapterkitError(f"{path}: optimizer state does not fit this run ({e}); resume with the run's settings") from None
    scheduler.last_epoch = meta["scheduler"]
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    _set_rng_state(rng)
    return meta["progress"]


def check_resume(path: Path, model, full_finetune: bool) -> None:
    """Refuse, before anything is written, a checkpoint whose tensors do not fit `model` (a
    resume with other settings) or that is corrupt; no checkpoint at all is fine."""
    if recover_checkpoint(path, resume=True):
        weights = read_safetensors(Path(path) / WEIGHTS)
        _check_fits(path, weights, model.state_dict() if full_finetune else trainable_state_dict(model))


def _check_fits(path: Path, weights: dict, expected: dict) -> None:
    unknown, missing = sorted(set(weights) - set(expected)), sorted(set(expected) - set(weights))
    if unknown or missing:
        raise AdapterkitError(f"{path}: checkpoint does not fit the model (unknown {unknown[:3]}, missing {missing[:3]}); "
                              "resume with the settings the run started with (its run_config.json)")
    for key, value in weights.items():
        if value.shape != expected[key].shape:
            raise AdapterkitError(f"{path}: checkpoint tensor {key} has shape {tuple(value.shape)}, the model's is "
                                  f"{tuple(expected[key].shape)}; resume with the settings the run started with "
                                  "(its run_config.json: --bottleneck, --sharing, ...)")


def _save_tensors(target: Path, tensors: dict) -> None:
    atomic_write(target, lambda tmp: save_file(tensors, tmp))


def _rng_state() -> dict[str, torch.Tensor]:
    """Dropout draws from these: a resumed run continues the same random stream."""
    states = {f"{_RNG}cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            states[f"{_RNG}cuda{i}"] = s
    return states


def _set_rng_state(states: dict[str, torch.Tensor]) -> None:
    if "cpu" in states:
        torch.set_rng_state(states["cpu"].to(torch.uint8))
    cuda = [states[k] for k in sorted(states) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in cuda])


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(f"{path.name}.{suffix}")


def _remove(folder: Path) -> None:
    """Remove `folder` even when made read-only; if it still cannot go, rename it aside."""
    if not folder.exists() and not folder.is_symlink():
        return

    def writable_and_retry(func, target, _exc):
        parent = os.path.dirname(target)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)
        func(target)

    try:
        if folder.is_dir() and not folder.is_symlink():
            os.chmod(folder, os.stat(folder).st_mode | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)
            shutil.rmtree(folder, onerror=writable_and_retry)
        else:
            folder.unlink()
    except OSError:
        aside = folder.with_name(f".{folder.name}.stale-{secrets.token_hex(4)}")
        try:
            os.replace(folder, aside)
        except OSError as e:
            raise AdapterkitError(f"{folder}: cannot remove or rename this stale checkpoint ({e.strerror}); "
                                  "remove it by hand") from None


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
