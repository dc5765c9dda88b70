"""The card of a version: what it is, what it was trained on, what it scored, what it holds.

Built by the store from the pushed content itself (`adapterkit_config.json`, `metrics.json`,
the safetensors headers), never from what a client claims, so a card cannot lie about its
files. Fields whose source is missing are null.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from adapterkit.hub.errors import IntegrityError
from adapterkit.hub.files import CONFIG_FILE, METRICS_FILE, FileEntry, count_parameters
from adapterkit.io.files import FileFormatError, parse_json

CARD_FORMAT = "adapterkit.hub.card"
CARD_FORMAT_VERSION = 1
_PARAMETER_FILES = {"adapter": "adapterkit_weights.safetensors", "head": "adapterkit_head.safetensors"}


def build_card(repo: str, version: str, entries: list[FileEntry], path_of: Callable[[str], Path]) -> dict:
    """The card of `version` of `repo`; `path_of(name)` is where the stored file lies."""
    names = {e.path for e in entries}
    config = _read_json(path_of(CONFIG_FILE), CONFIG_FILE)
    if not isinstance(config, dict):
        raise IntegrityError(f"{CONFIG_FILE} must hold a JSON object")
    metrics = _read_json(path_of(METRICS_FILE), METRICS_FILE) if METRICS_FILE in names else {}
    metrics = metrics if isinstance(metrics, dict) else {}
    adapter_cfg = config.get("config") if isinstance(config.get("config"), dict) else {}
    params = {k: count_parameters(path_of(f)) for k, f in _PARAMETER_FILES.items() if f in names}
    return {
        "format": CARD_FORMAT,
        "format_version": CARD_FORMAT_VERSION,
        "repo": repo,
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pushed_with": _adapterkit_version(),
        "adapterkit_version": _scalar(config.get("adapterkit_version")),
        "name": _scalar(config.get("name")),
        "kind": _scalar(config.get("kind")),
        "task": _scalar(metrics.get("task")),
        "base_model": _base_model(config.get("base_model")),
        "sharing": _scalar(adapter_cfg.get("sharing")),
        "bottleneck_dim": _scalar(adapter_cfg.get("bottleneck_dim")),
        "num_groups": _length(config.get("groups")),
        "num_sites": _length(config.get("sites")),
        "metrics": _metrics(metrics.get("best")),
        "parameters": {**params, "total": sum(params.values())} if params else None,
        "size": sum(e.size for e in entries),
        "files": [e.to_dict() for e in sorted(entries, key=lambda e: e.path)],
    }


def _read_json(path: Path, name: str) -> Any:
    try:  # NaN/Infinity refused (not JSON: a client could not read the card), depth capped
        return parse_json(Path(path).read_bytes(), name, allow_nan=False)
    except FileFormatError as e:
        raise IntegrityError(str(e)) from None


# A card copies only small values: it is listed and served often, the files hold the rest.
MAX_CARD_STRING = 256
MAX_CARD_METRICS = 32


def _scalar(value: Any) -> Any:
    """`value` when it is a number, boolean or short string; otherwise null."""
    if isinstance(value, str):
        return value if len(value) <= MAX_CARD_STRING else None
    return value if isinstance(value, (int, float, bool)) else None


def _metrics(value: Any) -> dict | None:
    if not isinstance(value, dict):
        return None
    items = [(k, _scalar(v)) for k, v in value.items() if len(k) <= MAX_CARD_STRING]
    return dict(items[:MAX_CARD_METRICS])


def _base_model(value: Any) -> dict | None:
    if not isinstance(value, dict):
        return None
    keys = ("name_or_path", "model_type", "config_hash", "hidden_size")
    layers = value.get("num_layers")
    layers = layers[:16] if isinstance(layers, list) and all(isinstance(n, int) for n in layers) else None
    return {**{k: _scalar(value.get(k)) for k in keys}, "num_layers": layers}


def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, (list, dict)) else None


def _adapterkit_version() -> str:
    from adapterkit import __version__

    return __version__


def card_entries(card: dict) -> list[FileEntry]:
    """The files a card lists, checked for shape (names, hashes, sizes)."""
    files = card.get("files") if isinstance(card, dict) else None
    if not isinstance(files, list):
        raise IntegrityError("malformed card: no file list")
    return [FileEntry.from_dict(f) for f in files]


def summary_lines(card: dict) -> list[str]:
    """A human-readable card, one `key: value` per line, for `adapterkit hub show`."""
    base = card.get("base_model") or {}
    params = card.get("parameters") or {}
    metrics = card.get("metrics") or {}
    lines = [
        f"repo:          {card.get('repo')}",
        f"version:       {card.get('version')}",
        f"created:       {card.get('created')}  (adapterkit {card.get('pushed_with')})",
        f"adapter:       {card.get('name')} ({card.get('kind')}), task {card.get('task')}",
        f"base model:    {base.get('name_or_path')} ({base.get('model_type')}, "
        f"hidden {base.get('hidden_size')}, {base.get('num_layers')} layers, config {base.get('config_hash')})",
        f"sharing:       {card.get('sharing')}  bottleneck {card.get('bottleneck_dim')}  "
        f"groups {card.get('num_groups')}  sites {card.get('num_sites')}",
        "parameters:    " + (", ".join(f"{k} {v:,}" for k, v in params.items()) or "-"),
        "metrics:       " + (", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items()) or "-"),
        f"files:         {len(card.get('files', []))}, {card.get('size', 0):,} bytes",
    ]
    lines += [f"  {f['sha256'][:12]}  {f['size']:>12,}  {f['path']}" for f in card.get("files", [])]
    return lines


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)
