"""What a hub stores of an adapter folder, and how each file is checked.

Stored: `*.safetensors`, `*.json`, `*.txt` and `*.log` (tokenizer vocabularies, merges and
training logs are plain text). Refused outright: pickle-based files (`.bin`, `.pt`, `.pth`,
`.pkl`, `.ckpt`, ...), so a pushed folder can never smuggle one in. Anything else (an image,
`.DS_Store`) is left out of the push and reported. Training state (`checkpoint/`, for
`--resume`) is left out unless asked for: a consumer needs the adapter, head, configs, metrics,
tokenizer and log. Files are checked by content, not only by name: a `.safetensors`
must have a well-formed header whose tensors fit the file, a `.json` must parse, a `.txt` must
be UTF-8 without NUL bytes.

A version id is the sha256 of the sorted `sha256sum`-style listing of the files
("<sha256>  <path>\\n" per file), so identical content always gets the same id.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from adapterkit.hub.errors import HubError, IntegrityError, UnsupportedFile
from adapterkit.hub.refs import check_file_path, check_sha256
from adapterkit.io import files

CONFIG_FILE = "adapterkit_config.json"
METRICS_FILE = "metrics.json"
STORED_SUFFIXES = (".safetensors", ".json", ".txt", ".log")
TRAINING_STATE = ("checkpoint", "checkpoint.tmp")  # top-level folders only `--resume` reads
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")
MAX_FILES = 256
CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, d: dict) -> "FileEntry":
        if not isinstance(d, dict) or not isinstance(d.get("size"), int) or d["size"] < 0:
            raise HubError(f"malformed file entry {str(d)[:120]}")
        return cls(check_file_path(d.get("path")), check_sha256(d.get("sha256")), d["size"])


def check_suffix(path: str) -> None:
    """Refuse pickles and anything that is not safetensors, JSON or text."""
    lower = path.lower()
    if lower.endswith(PICKLE_SUFFIXES):
        raise UnsupportedFile(f"{path}: pickle-based files are never stored on a hub; "
                              "save weights as safetensors")
    if not lower.endswith(STORED_SUFFIXES):
        raise UnsupportedFile(f"{path}: a hub stores only {', '.join(STORED_SUFFIXES)} files")


def version_id(entries: Iterable[FileEntry]) -> str:
    listing = "".join(f"{e.sha256}  {e.path}\n" for e in sorted(entries, key=lambda e: e.path))
    return hashlib.sha256(listing.encode()).hexdigest()


def check_entries(entries: list[FileEntry]) -> None:
    """A pushable file list: within limits, unique paths, allowed types, with the adapter config."""
    if not entries:
        raise HubError("an adapter must have at least one file")
    if len(entries) > MAX_FILES:
        raise HubError(f"too many files ({len(entries)}); a hub version holds at most {MAX_FILES}")
    paths = [e.path for e in entries]
    if len(set(paths)) != len(paths):
        raise HubError("duplicate file names in the file list")
    for e in entries:
        check_suffix(e.path)
    folders = {"/".join(parts[:i]) for parts in (p.split("/") for p in paths) for i in range(1, len(parts))}
    clash = sorted(folders & set(paths))
    if clash:
        raise HubError(f"{clash[0]} is both a file and a folder in the file list")
    if CONFIG_FILE not in paths:
        raise HubError(f"not an adapter: no {CONFIG_FILE} among the files")


def scan_folder(folder: str | os.PathLike) -> tuple[list[tuple[Path, str]], list[str]]:
    """(files to push as (absolute path, relative name), names left out) of an adapter folder."""
    root = Path(folder)
    if not (root / CONFIG_FILE).is_file():
        what = "folder" if root.is_dir() else "path"
        raise HubError(f"{root}: not an adapterkit adapter ({what} has no {CONFIG_FILE})")
    keep, skipped = [], []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")) or path.is_dir():
            continue
        if path.is_symlink() or not path.is_file():
            skipped.append(rel)
            continue
        lower = rel.lower()
        if lower.endswith(PICKLE_SUFFIXES):
            check_suffix(rel)  # raises: a pickle in the folder refuses the whole push
        if lower.endswith(STORED_SUFFIXES):
            keep.append((path, check_file_path(rel)))
        else:
            skipped.append(rel)
    return keep, skipped


def is_training_state(rel: str) -> bool:
    """Whether a pushed file's relative path lies in a training-state folder (`checkpoint/`)."""
    return rel.split("/", 1)[0] in TRAINING_STATE


def hash_file(path: str | os.PathLike) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def read_chunks(path: str | os.PathLike) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from iter(lambda: f.read(CHUNK), b"")


def safetensors_header(path: str | os.PathLike, name: str | None = None) -> dict:
    """The parsed header of a safetensors file, checked exactly as the safetensors library checks it."""
    try:
        return files.safetensors_header(path, name=name)
    except files.FileFormatError as e:
        raise IntegrityError(str(e)) from None


def count_parameters(path: str | os.PathLike) -> int:
    total = 0
    for name, t in safetensors_header(path).items():
        if name != "__metadata__":
            count = 1
            for d in t["shape"]:
                count *= int(d)
            total += count
    return total


def check_content(path: str | os.PathLike, name: str) -> None:
    """Refuse a file whose content is not what its name says (safetensors, JSON or text)."""
    lower = name.lower()
    if lower.endswith(".safetensors"):
        safetensors_header(path, name)
        return
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError(f"{name}: not UTF-8 text") from None
    if lower.endswith(".json"):
        try:  # strict: no NaN/Infinity (not JSON; other readers refuse them), depth capped
            files.parse_json(text, name, allow_nan=False)
        except files.FileFormatError as e:
            raise IntegrityError(str(e)) from None
    elif "\x00" in text:
        raise IntegrityError(f"{name}: not plain text (contains NUL bytes)")
