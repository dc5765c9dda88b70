"""Compiled attention ops: Random Sparse Attention (RSA) on CPU (C++) and CUDA.

    from adapterkit.ops import rsa_attention, rsa_layout
    out = rsa_attention(q, k, v, density=0.25, block_size=64, attention_mask=mask)

`rsa_attention` runs the compiled kernel from `adapterkit/csrc` where it was
built and otherwise the pure-PyTorch `rsa_attention_reference`, announcing that
once. `kernel_status()` (and `adapterkit info`) says which kernels are loaded.
Hugging Face models use it through `adapterkit.ops.hf.use_rsa(model, ...)` or
`attn_implementation="adapterkit_rsa"` after `adapterkit.ops.hf.register()`.

Nothing heavy happens at import: torch and the extension load on first use.
"""
from __future__ import annotations

from adapterkit.lazy import lazy_exports

_EXPORTS = {
    "rsa_attention": "adapterkit.ops.rsa",
    "rsa_attention_reference": "adapterkit.ops.reference",
    "rsa_layout": "adapterkit.ops.layout",
    "rsa_token_mask": "adapterkit.ops.layout",
    "kernel_status": "adapterkit.ops.extension",
    "RSAConfig": "adapterkit.ops.hf",
    "configure_rsa": "adapterkit.ops.hf",
    "use_rsa": "adapterkit.ops.hf",
    "config_of": "adapterkit.ops.hf",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
