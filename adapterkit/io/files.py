"""The one validation layer for files adapterkit reads, and the one check for paths it writes.

Reading: `require_file` (an existing file, not a folder), `read_text` (a size cap, UTF-8 with a clear message, never a folder), `read_json`
(also: JSON depth capped, the shape checked against a small schema), `read_manifest_json`
(versioned manifests), `safetensors_header` (checked exactly as the safetensors library checks
it) and `read_safetensors`. Writing: `check_output` refuses to destroy an input or, without
`overwrite`, anything that exists, and says at once when a folder cannot be written.
Every problem is an AdapterkitError whose message names the file: the CLI prints it as one line.
(Writing itself goes through adapterkit.io.atomic.) Only the standard library is imported here.
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any, Iterable, Iterator

from adapterkit.errors import AdapterkitError

MAX_TEXT_BYTES = 64 << 20  # configs, manifests, token files, run records
MAX_JSON_DEPTH = 64
MAX_ST_HEADER = 100_000_000  # the safetensors library's own limit
# bits per element, as the safetensors library knows them
ST_DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "U16": 16, "I16": 16,
                 "F16": 16, "BF16": 16, "U32": 32, "I32": 32, "F32": 32, "U64": 64, "I64": 64, "F64": 64,
                 "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


class FileFormatError(AdapterkitError):
    """A file adapterkit reads is missing, unreadable, too large or malformed."""


# -- reading --------------------------------------------------------------------------------
def read_bytes(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    path = Path(path)
    try:
        if path.is_dir():
            raise FileFormatError(f"{path}: is a folder, expected {what}")
        size = path.stat().st_size
        if size > max_bytes:
            raise FileFormatError(f"{path}: {size:,} bytes, more than the {max_bytes:,} allowed for {what}")
        return path.read_bytes()
    except FileNotFoundError:
        raise FileFormatError(f"{path}: no such file ({what})") from None
    except PermissionError:
        raise FileFormatError(f"{path}: permission denied (reading {what})") from None
    except OSError as e:
        raise FileFormatError(f"{path}: cannot read {what} ({e.strerror or e})") from None


def require_file(path: str | os.PathLike, what: str = "data file") -> Path:
    """`path` when it is an existing file; a folder or a missing path is one error naming it."""
    path = Path(path)
    if path.is_dir():
        raise FileFormatError(f"{path}: is a folder, not a file ({what})")
    if not path.is_file():
        raise FileFormatError(f"{what} {path} does not exist")
    return path


def decode_text(data: bytes, path: str | os.PathLike, what: str = "file") -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FileFormatError(f"{path}: not UTF-8 text (byte {e.start}); {what} must be UTF-8") from None


def read_text(path: str | os.PathLike, what: str = "text file", max_bytes: int = MAX_TEXT_BYTES) -> str:
    return decode_text(read_bytes(path, what, max_bytes), path, what)


def text_lines(path: str | os.PathLike, what: str = "text file", newline: str | None = None) -> Iterator[tuple[int, str]]:
    """(1-based number, line) of a UTF-8 text file, streamed; a folder, a missing or unreadable
    file, or bytes that are not UTF-8 (at any line) are a FileFormatError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise FileFormatError(f"{path}: is a folder, expected {what}")
    number = 0
    try:
        with open(path, encoding="utf-8-sig", newline=newline) as f:
            for number, line in enumerate(f, start=1):
                yield number, line
    except FileNotFoundError:
        raise FileFormatError(f"{path}: no such file ({what})") from None
    except PermissionError:
        raise FileFormatError(f"{path}: permission denied (reading {what})") from None
    except UnicodeDecodeError:
        bad = _first_bad_line(path) or number + 1  # the decoder reads ahead: find the line itself
        raise FileFormatError(f"{path}:{bad}: not UTF-8 text; {what} must be UTF-8 (binary file?)") from None


def _first_bad_line(path: Path) -> int | None:
    """The number of the first line of `path` that is not UTF-8 (a slow path, for error messages)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError:
                return number
    return None


def parse_json(text: str | bytes, where: str, schema: Any = None, allow_nan: bool = True,
               max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON text parsed, its depth capped, NaN/Infinity refused unless allowed, shape checked."""
    def constant(name):
        raise FileFormatError(f"{where}: {name} is not a JSON value")

    try:
        value = json.loads(text, parse_constant=None if allow_nan else constant)
    except RecursionError:
        raise FileFormatError(f"{where}: JSON nested too deeply") from None
    except UnicodeDecodeError:
        raise FileFormatError(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise FileFormatError(f"{where}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if json_depth(value) > max_depth:
        raise FileFormatError(f"{where}: JSON nested more than {max_depth} levels deep")
    if schema is not None:
        check_shape(value, schema, where)
    return value


def read_json(path: str | os.PathLike, what: str = "JSON file", schema: Any = None,
              max_bytes: int = MAX_TEXT_BYTES, allow_nan: bool = True) -> Any:
    """The JSON at `path`; `schema` (see check_shape) says what shape it must have."""
    return parse_json(read_text(path, what, max_bytes), str(path), schema, allow_nan)


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (iterative: no recursion limit to hit)."""
    depth, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            depth = max(depth, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return depth


def check_shape(value: Any, schema: Any, where: str, at: str = "") -> Any:
    """Check parsed JSON against a small schema; returns `value`.

    A schema is a type (`str`, `int`, `float` (ints accepted), `bool`, `dict`, `list`, `object`
    for anything), a tuple of schemas (any one), `None` (null), a list `[item_schema]`, or a
    dict `{key: schema}`: keys ending in "?" are optional; other keys are allowed and unchecked.
    """
    label = f"{where}: {at or 'the top level'}"
    if isinstance(schema, tuple):
        errors = []
        for option in schema:
            try:
                return check_shape(value, option, where, at)
            except FileFormatError as e:
                errors.append(str(e))
        raise FileFormatError(errors[0] if len(errors) == 1 else f"{label} has the wrong type ({_kind(value)})")
    if schema is None:
        if value is not None:
            raise FileFormatError(f"{label} must be null, got {_kind(value)}")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise FileFormatError(f"{label} must be a list, got {_kind(value)}")
        for i, item in enumerate(value):
            check_shape(item, schema[0], where, f"{at}[{i}]")
    elif isinstance(schema, dict):
        if not isinstance(value, dict):
            raise FileFormatError(f"{label} must be an object, got {_kind(value)}")
        for key, sub in schema.items():
            name = key.rstrip("?")
            if name not in value:
                if not key.endswith("?"):
                    raise FileFormatError(f"{where}: missing key {(at + '.' if at else '') + name!r}")
                continue
            check_shape(value[name], sub, where, f"{at}.{name}" if at else name)
    elif schema is not object and not _is(value, schema):
        raise FileFormatError(f"{label} must be {_TYPE_NAMES.get(schema, schema.__name__)}, got {_kind(value)}")
    return value


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               dict: "an object", list: "a list"}


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def read_manifest_json(path: Path, fmt: str, version: int, what: str, schema: Any = None) -> dict:
    """The JSON at `path`, checked to carry `"format": fmt` and a format_version <= `version`;
    `what` names the kind of file in errors ("an adapterkit adapter config", ...)."""
    manifest = read_json(path, what)
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise FileFormatError(f"{path}: not {what} (format {found!r})")
    check_shape(manifest, {"format_version?": int}, str(path))
    if manifest.get("format_version", 0) > version:
        raise FileFormatError(f"{path}: written by a newer adapterkit (format {manifest['format_version']})")
    if schema is not None:
        check_shape(manifest, schema, str(path))
    return manifest


# -- safetensors ----------------------------------------------------------------------------
def safetensors_header(path: str | os.PathLike, data: bytes | None = None, name: str | None = None) -> dict:
    """The header of a safetensors file, checked as the safetensors library checks it: header
    length within the file and at most 100 MB, a UTF-8 JSON object (a repeated key: the last wins), known
    dtypes, shapes of non-negative integers, `data_offsets` that tile the data area exactly
    (sorted, contiguous from 0, no gap, no overlap, nothing after the last tensor), each span
    the size its dtype and shape need, and `__metadata__` a string-to-string map."""
    name = name or Path(path).name
    try:
        if data is None:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                prefix = f.read(8)
                n = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
                raw = f.read(n) if n is not None and n <= min(MAX_ST_HEADER, size - 8) else b""
        else:
            size, prefix = len(data), data[:8]
            n = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
            raw = data[8:8 + n] if n is not None and n <= min(MAX_ST_HEADER, size - 8) else b""
    except FileNotFoundError:
        raise FileFormatError(f"{path}: missing") from None
    except OSError as e:
        raise FileFormatError(f"{path}: cannot read ({e.strerror or e})") from None
    bad = f"{name}: not a safetensors file"
    if n is None:
        raise FileFormatError(f"{bad} (shorter than 8 bytes)")
    if n > MAX_ST_HEADER or n > size - 8:
        raise FileFormatError(f"{bad} (header length {n} does not fit the file of {size} bytes)")
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise FileFormatError(f"{bad} (header is not a JSON object)") from None
    if not isinstance(header, dict):
        raise FileFormatError(f"{bad} (header is not a JSON object)")
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise FileFormatError(f"{bad} (__metadata__ must map strings to strings)")
    spans = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        nbytes, offsets = _tensor_bytes(info)
        if nbytes is None:
            raise FileFormatError(f"{bad} (tensor {key[:80]!r}: malformed dtype, shape or data_offsets)")
        if offsets[1] - offsets[0] != nbytes:
            raise FileFormatError(f"{bad} (tensor {key[:80]!r} spans {offsets[1] - offsets[0]} bytes, needs {nbytes})")
        spans.append((offsets, key))
    end = 0
    for (start, stop), key in sorted(spans):
        if start != end:
            raise FileFormatError(f"{bad} (tensor {key[:80]!r} starts at {start}, expected {end}: gap or overlap)")
        end = stop
    if end != size - 8 - n:
        raise FileFormatError(f"{bad} (tensors cover {end} bytes of a {size - 8 - n}-byte data area)")
    return header


def _no_constant(name):
    raise ValueError(name)


def _uint(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_bytes(info) -> tuple[int | None, tuple[int, int]]:
    if not isinstance(info, dict) or info.get("dtype") not in ST_DTYPE_BITS:
        return None, (0, 0)
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(_uint(d) for d in shape):
        return None, (0, 0)
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_uint(o) for o in offsets) or offsets[0] > offsets[1]:
        return None, (0, 0)
    bits = math.prod(shape) * ST_DTYPE_BITS[info["dtype"]]
    if bits % 8:
        return None, (0, 0)
    return bits // 8, (offsets[0], offsets[1])


def read_safetensors(path: Path) -> dict:
    """Every tensor of a safetensors file; a missing or corrupt file is an AdapterkitError."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: missing")
    safetensors_header(path, name=str(path))
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise FileFormatError(f"{path}: unreadable safetensors file ({e})") from None


# -- writing --------------------------------------------------------------------------------
def check_output(path: str | os.PathLike, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = (),
                 folder: bool = False, flag: str = "--output") -> Path:
    """Refuse an output path that would destroy something, before any work is done.

    Never: the same path as one of `inputs` (or, for a `folder` output, a folder holding an
    input). Without `overwrite`: an existing file, or a non-empty folder. Always: a path under a
    file, or a folder this process cannot write."""
    path = Path(path)
    here = path.resolve()
    for source in inputs:
        source = Path(source).resolve()
        if source == here or (folder and here in source.parents):
            raise AdapterkitError(f"{flag} {path} would overwrite the input {source}; choose another path")
    if path.exists() or path.is_symlink():
        if folder and not path.is_dir():
            raise AdapterkitError(f"{flag} {path} exists and is not a folder")
        if not folder and path.is_dir():
            raise AdapterkitError(f"{flag} {path} is a folder; give a file name")
        if not overwrite and (not folder or any(path.iterdir())):
            what = "folder is not empty" if folder else "file exists"
            raise AdapterkitError(f"{flag} {path}: the {what}; pass --overwrite to replace it, or choose another path")
    parent = here if folder and path.is_dir() else here.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise AdapterkitError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        raise AdapterkitError(f"{flag} {path}: cannot write in {parent} (permission denied)")
    return path
