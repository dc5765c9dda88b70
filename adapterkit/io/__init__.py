"""Everything adapterkit saves and loads, in one place.

    adapter.py     save_adapter / load_adapter: an adapter folder (safetensors + one JSON manifest)
    checkpoint.py  training checkpoints (weights, optimizer, schedule, RNG) for --resume
    atomic.py      the one writer: temporary file, fsync, rename, fsync of the folder
    files.py       the one validation layer for files read (size caps, UTF-8, JSON shape,
                   safetensors headers) and `check_output` for paths about to be written

`atomic` and `files` import only the standard library (the hub server uses them without torch);
the adapter names below load `adapter.py` (torch, transformers) on first use.
"""
from __future__ import annotations

from adapterkit.lazy import lazy_exports

_EXPORTS = {name: "adapterkit.io.adapter" for name in (
    "save_adapter", "load_adapter", "read_manifest", "describe_base_model", "config_hash",
    "check_compatible", "CONFIG_FILE", "WEIGHTS_FILE", "HEAD_FILE", "FORMAT", "FORMAT_VERSION")}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
