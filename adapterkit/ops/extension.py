"""Loading the compiled kernels (`adapterkit._C`, `adapterkit._C_cuda`) and saying so.

The extension is built by setup.py at install time. If it is missing (built
with ADAPTERKIT_SKIP_BUILD=1, or no compiler), or disabled with
ADAPTERKIT_NO_KERNELS=1, the ops fall back to the pure-PyTorch reference and
warn once per device type. `kernel_status()` reports what is loaded.
"""
from __future__ import annotations

import importlib
import logging
import os
import threading
import warnings
from dataclasses import dataclass, field

logger = logging.getLogger("adapterkit.ops")

DISABLE_ENV = "ADAPTERKIT_NO_KERNELS"


@dataclass
class _Kernels:
    loaded: bool = False
    modules: dict[str, bool] = field(default_factory=dict)  # "cpu" / "cuda" -> importable
    reasons: dict[str, str] = field(default_factory=dict)   # why a module is not there
    announced: set[str] = field(default_factory=set)


_state = _Kernels()
_lock = threading.Lock()


def _try_import(kind: str, module: str) -> None:
    try:
        importlib.import_module(module)
        _state.modules[kind] = True
    except Exception as e:  # ImportError, or OSError for a .so built against another torch
        _state.modules[kind] = False
        _state.reasons[kind] = f"{module} could not be loaded: {e}"


def load() -> _Kernels:
    """Import the extension modules once; their static initialisers register the ops."""
    if _state.loaded:  # lock-free after the first call (and traceable by torch.compile)
        return _state
    with _lock:
        if _state.loaded:
            return _state
        _state.loaded = True
        if os.environ.get(DISABLE_ENV, "0") not in ("", "0"):
            for kind in ("cpu", "cuda"):
                _state.modules[kind] = False
                _state.reasons[kind] = f"disabled by {DISABLE_ENV}=1"
            return _state
        import torch  # the schemas reference torch's op registry

        _try_import("cpu", "adapterkit._C")
        if _state.modules["cpu"]:
            _try_import("cuda", "adapterkit._C_cuda")
        else:
            _state.modules["cuda"] = False
            _state.reasons["cuda"] = "needs adapterkit._C, which is not loaded"
        if not _state.modules["cuda"] and torch.version.cuda is None:
            _state.reasons["cuda"] = "torch was built without CUDA"
        return _state


def available(device_type: str) -> bool:
    """Whether the compiled RSA kernel serves tensors on this device type ("cpu", "cuda")."""
    return load().modules.get(device_type, False)


def announce_fallback(device_type: str) -> None:
    """Warn (once per device type and process) that the reference implementation is used."""
    state = load()
    if device_type in state.announced:
        return
    state.announced.add(device_type)
    reason = state.reasons.get(device_type, f"no compiled kernel for device type {device_type!r}")
    message = (f"adapterkit: compiled RSA attention kernel unavailable for {device_type} ({reason}); "
               "using the pure-PyTorch reference, which is slower and quadratic in memory. "
               "Rebuild with `pip install --no-build-isolation -e .`; `adapterkit info` shows the kernels.")
    logger.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def kernel_status() -> dict:
    """{"cpu": bool, "cuda": bool, "cpu_detail": str | None, "reasons": {...}} for `adapterkit info`."""
    state = load()
    detail = None
    if state.modules.get("cpu"):
        import torch

        detail = torch.ops.adapterkit.rsa_cpu_info()
    return {
        "cpu": state.modules.get("cpu", False),
        "cuda": state.modules.get("cuda", False),
        "cpu_detail": detail,
        "reasons": dict(state.reasons),
    }
