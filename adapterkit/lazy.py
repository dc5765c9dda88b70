"""Names a package exports, each loaded from its module on first use (so importing the package
imports neither torch nor transformers nor any optional extra).

    _EXPORTS = {"Engine": "adapterkit.serve.engine", ...}
    __all__ = list(_EXPORTS)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
"""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """The module-level `__getattr__` and `__dir__` of `package`: a name in `exports` (name ->
    module) is imported from its module when first asked for and kept in `namespace`."""
    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return list(namespace.get("__all__", exports))

    return __getattr__, __dir__
