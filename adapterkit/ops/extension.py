"""Loading the compiled kernels and saying so.

In order: the prebuilt extension (`adapterkit._C`, `adapterkit._C_cuda`, built
by setup.py at install time), else a first-use build from the packaged sources
into a cache folder (adapterkit/ops/build.py; skipped with
ADAPTERKIT_SKIP_BUILD=1). Where neither loads, or with ADAPTERKIT_NO_KERNELS=1,
the ops run the block-sparse SDPA fallback (adapterkit/ops/blocksparse.py) and
warn once per device type. `kernel_status()` (and `adapterkit info`) reports
which kernel is loaded and from where.
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
    sources: dict[str, str] = field(default_factory=dict)   # where a loaded kernel came from
    announced: set[str] = field(default_factory=set)


_state = _Kernels()
_lock = threading.Lock()


def _try_import(kind: str, module: str) -> None:
    try:
        importlib.import_module(module)
        _state.modules[kind] = True
        _state.sources[kind] = f"prebuilt ({module})"
    except Exception as e:  # ImportError, or OSError for a .so built against another torch
        _state.modules[kind] = False
        _state.reasons[kind] = f"{module} could not be loaded: {e}"


def _try_build(kind: str) -> None:
    """No prebuilt module: compile the packaged sources once into the cache and load them."""
    from adapterkit.ops import build

    if build.skip_build():
        _state.reasons[kind] = f"no prebuilt kernel, and {build.SKIP_ENV}=1 skips the first-use build"
        return
    try:
        done = build.build_and_load(kind)
    except Exception as e:  # BuildError, or the compiler's own error for an unexpected setup
        _state.reasons[kind] = str(e).splitlines()[0] if str(e) else type(e).__name__
        return
    _state.modules[kind] = True
    _state.reasons.pop(kind, None)
    how = "cache hit" if done["compiled_s"] is None else f"compiled in {done['compiled_s']:.0f} s"
    _state.sources[kind] = f"first-use build, {how}: {done['path']}"


def _cuda_buildable(torch) -> bool:
    """Try the first-use CUDA build where torch sees a CUDA device (an nvcc alone is no reason);
    without a toolkit for torch to compile with, say so instead of trying."""
    if not torch.cuda.is_available():
        return False
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        _state.reasons["cuda"] = "a CUDA device is available but no CUDA toolkit (CUDA_HOME) to compile the kernel"
        return False
    return True


def load() -> _Kernels:
    """Import (or first-use build) the extension once; its static initialisers register the ops."""
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
        if not _state.modules["cpu"]:
            _try_build("cpu")
        if not _state.modules["cpu"]:
            _state.modules["cuda"] = False
            _state.reasons["cuda"] = "needs the CPU kernel library, which is not loaded"
        elif _state.sources["cpu"].startswith("prebuilt"):
            _try_import("cuda", "adapterkit._C_cuda")
        else:
            _state.modules["cuda"] = False
            _state.reasons["cuda"] = "no prebuilt CUDA kernel"
        if not _state.modules["cuda"] and _cuda_buildable(torch):
            _try_build("cuda")   # NOTE: this path has never run on a GPU (no device was available)
        if not _state.modules["cuda"] and torch.version.cuda is None:
            _state.reasons["cuda"] = "torch was built without CUDA"
        return _state


def available(device_type: str) -> bool:
    """Whether the compiled RSA kernel serves tensors on this device type ("cpu", "cuda")."""
    return load().modules.get(device_type, False)


def announce_fallback(device_type: str) -> None:
    """Warn (once per device type and process) that the block-sparse SDPA fallback is used."""
    state = load()
    if device_type in state.announced:
        return
    state.announced.add(device_type)
    reason = state.reasons.get(device_type, f"no compiled kernel for device type {device_type!r}")
    message = (f"adapterkit: compiled RSA attention kernel unavailable for {device_type} ({reason}); "
               f"using the {FALLBACK}. `adapterkit info` shows the kernels.")
    logger.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


FALLBACK = ("block-sparse SDPA fallback (gathered key blocks; dense SDPA under the block mask "
            "below 8 blocks or where every block is kept)")


def kernel_status() -> dict:
    """What `adapterkit info` shows: per device type whether a kernel is loaded, from where, or why not.

    {"cpu": bool, "cuda": bool, "cpu_detail": str | None, "sources": {...}, "reasons": {...},
     "fallback": str}
    """
    state = load()
    detail = None
    if state.modules.get("cpu"):
        import torch

        detail = torch.ops.adapterkit.rsa_cpu_info()
    return {
        "cpu": state.modules.get("cpu", False),
        "cuda": state.modules.get("cuda", False),
        "cpu_detail": detail,
        "sources": dict(state.sources),
        "reasons": dict(state.reasons),
        "fallback": FALLBACK,
    }
