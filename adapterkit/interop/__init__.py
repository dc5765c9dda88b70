"""Interop with other adapter libraries. Nothing here imports them: the formats are files.

  adapterkit.interop.adapterhub   AdapterHub `adapters` bottleneck adapters: export an adapterkit
                                  adapter to their folder format, import theirs into a model.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "export_adapterhub": "adapterkit.interop.adapterhub",
    "convert_to_adapterhub": "adapterkit.interop.adapterhub",
    "import_adapterhub": "adapterkit.interop.adapterhub",
    "convert_from_adapterhub": "adapterkit.interop.adapterhub",
    "read_adapterhub": "adapterkit.interop.adapterhub",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'adapterkit.interop' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
