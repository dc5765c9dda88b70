"""Serving adapters: one frozen backbone, many adapters, batches that mix them.

    from adapterkit.serve import Engine, EngineConfig      # in-process, no HTTP
    from adapterkit.serve import Client                    # a client of `adapterkit serve`

`engine.py` batches and routes, `loading.py` turns references into resident weights, `cache.py`
bounds what stays resident, `app.py` is the HTTP server (FastAPI), `client.py` its client.
Names load lazily: importing this package imports neither torch nor FastAPI.
"""
from __future__ import annotations

from adapterkit.lazy import lazy_exports

_EXPORTS = {
    "Engine": "adapterkit.serve.engine",
    "EngineConfig": "adapterkit.serve.engine",
    "Client": "adapterkit.serve.client",
    "create_app": "adapterkit.serve.app",
    "ServeError": "adapterkit.serve.errors",
    "UnknownAdapter": "adapterkit.serve.errors",
    "AdapterLoadError": "adapterkit.serve.errors",
    "InputTooLong": "adapterkit.serve.errors",
    "QueueFull": "adapterkit.serve.errors",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
