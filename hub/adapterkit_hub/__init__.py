"""adapterkit's hub server (`adapterkit hub serve`, or `python -m adapterkit_hub`).

Lives in the repository's top-level hub/ folder next to README.md, which documents the storage
layout and the HTTP protocol; installed as the `adapterkit_hub` package with adapterkit.
"""
from adapterkit_hub.app import create_app, read_tokens
from adapterkit_hub.serve import serve

__all__ = ["create_app", "read_tokens", "serve"]
