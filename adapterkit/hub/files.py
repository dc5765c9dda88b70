"""What a hub stores of an adapter folder, and how each file is checked.

Stored: `*.safetensors`, `*.json` and `*.txt` (tokenizer vocabularies and merges are plain
text). Refused outright: pickle-based files (`.bin`, `.pt`, `.pth`, `.pkl`, `.ckpt`, ...), so a
pushed folder can never smuggle one in. Anything else (a training log, `.DS_Store`) is left out
of the push and reported. Files are checked by content, not only by name: a `.safetensors`
must have a well-formed header whose tensors fit the file, a `.json` must parse, a `.txt` must
be UTF-8 without NUL bytes.

A version id is the sha256 of the sorted `sha256sum`-style listing of the files
("<sha256>  <path>\\n" per file), so identical content always gets the same id.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from adapterkit.hub.errors import HubError, IntegrityError, UnsupportedFile
from adapterkit.hub.refs import check_file_path, check_sha256

CONFIG_FILE = "adapterkit_config.json"
METRICS_FILE = "metrics.json"
STORED_SUFFIXES = (".safetensors", ".json", ".txt")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")
MAX_FILES = 256
CHUNK = 1 << 20
_MAX_ST_HEADER = 100 << 20
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2,
                "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}


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


def safetensors_header(path: str | os.PathLike) -> dict:
    """The parsed header of a safetensors file, after checking every tensor fits the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if n < 2 or n > min(_MAX_ST_HEADER, size - 8):
            raise IntegrityError(f"{Path(path).name}: not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise IntegrityError(f"{Path(path).name}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise IntegrityError(f"{Path(path).name}: not a safetensors file (header is not an object)")
    data = size - 8 - n
    for name, t in header.items():
        if name != "__metadata__" and not _tensor_fits(t, data):
            raise IntegrityError(f"{Path(path).name}: not a safetensors file (tensor {name!r} is malformed)")
    return header


def _tensor_fits(t, data_bytes: int) -> bool:
    try:
        start, end = t["data_offsets"]
        count = 1
        for d in t["shape"]:
            count *= int(d)
        width = _DTYPE_BYTES[t["dtype"]]
    except (KeyError, TypeError, ValueError):
        return False
    return 0 <= start <= end <= data_bytes and end - start == count * width


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
        safetensors_header(path)
        return
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError(f"{name}: not UTF-8 text") from None
    if lower.endswith(".json"):
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            raise IntegrityError(f"{name}: not valid JSON ({e.msg} at line {e.lineno})") from None
    elif "\x00" in text:
        raise IntegrityError(f"{name}: not plain text (contains NUL bytes)")
