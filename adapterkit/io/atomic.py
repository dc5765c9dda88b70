"""Write files so that a reader sees the old content or the new, never half of it.

Every file adapterkit writes goes through `atomic_write`: the content goes to a temporary file
beside the target, is flushed to disk (fsync), gets the mode an ordinary `open()` would give it
under the process umask (temporary files are created 0600; a shared run folder or folder hub
must stay readable by the team), and is renamed over the target; the folder is then fsynced so
the rename itself survives a power cut. A failure at any point leaves the old file untouched
and no temporary file behind.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

_MODE: int | None = None


def file_mode() -> int:
    """The mode `open(path, "w")` gives a new file: 0o666 less the process umask."""
    global _MODE
    if _MODE is None:
        _MODE = 0o666 & ~_umask()
    return _MODE


def _umask() -> int:
    try:  # Linux reports it without changing it (os.umask would race with other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make renames inside `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(target: Path, write: Callable[[str], object]) -> None:
    """Call write(tmp_path) on a temporary file beside `target`, then rename it over `target`."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        os.fchmod(fd, file_mode())
        os.close(fd)
        fd = -1
        write(tmp)
        with open(tmp, "rb+") as f:  # `write` may have reopened the path itself (safetensors, torch)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data, **dumps_kwargs) -> None:
    write_text(path, json.dumps(data, indent=2, **dumps_kwargs) + "\n")
