"""Interop with other adapter libraries. Nothing here imports them: the formats are files.

  adapterkit.interop.adapterhub   AdapterHub `adapters` bottleneck adapters: export an adapterkit
                                  adapter to their folder format, import theirs into a model.
"""
from __future__ import annotations

from adapterkit.lazy import lazy_exports

_EXPORTS = {
    "export_adapterhub": "adapterkit.interop.adapterhub",
    "convert_to_adapterhub": "adapterkit.interop.adapterhub",
    "import_adapterhub": "adapterkit.interop.adapterhub",
    "convert_from_adapterhub": "adapterkit.interop.adapterhub",
    "read_adapterhub": "adapterkit.interop.adapterhub",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
