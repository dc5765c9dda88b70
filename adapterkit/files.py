"""Reading adapterkit's own files with one clear error per problem: versioned JSON manifests and
safetensors weights. (Writing goes through adapterkit.atomic.)"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from adapterkit.errors import AdapterkitError


def read_manifest_json(path: Path, fmt: str, version: int, what: str) -> dict:
    """The JSON at `path`, checked to carry `"format": fmt` and a format_version <= `version`;
    `what` names the kind of file in errors ("an adapterkit adapter config", ...)."""
    try:
        manifest = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise AdapterkitError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise AdapterkitError(f"{path}: not {what} (format {found!r})")
    if manifest.get("format_version", 0) > version:
        raise AdapterkitError(f"{path}: written by a newer adapterkit (format {manifest['format_version']})")
    return manifest


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a missing or corrupt file is an AdapterkitError."""
    path = Path(path)
    if not path.is_file():
        raise AdapterkitError(f"{path}: missing")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise AdapterkitError(f"{path}: unreadable safetensors file ({e})") from None
