"""`rsa_attention`: Random Sparse Attention through the compiled `adapterkit::rsa_fwd` op.

The op schemas and kernels come from C++ (adapterkit/csrc/rsa_ops.cpp). This
module adds what belongs to Python: the fake kernels (so `torch.compile` can
trace the op), the autograd formula (the backward is the `rsa_bwd` op), and the
block-sparse SDPA fallback (adapterkit/ops/blocksparse.py) where no kernel loads.
"""
from __future__ import annotations

import threading

import torch

from adapterkit.ops import extension
from adapterkit.ops.layout import RSAError, check_settings, layout_op
from adapterkit.ops.blocksparse import fallback_attention

_registered = False
_lock = threading.Lock()


def _fake_forward(q, k, v, layout, key_mask, block_size, causal, scale):
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    return out, torch.empty(q.shape[:3], dtype=lse_dtype, device=q.device)


def _fake_backward(grad_out, q, k, v, out, lse, layout, key_mask, block_size, causal, scale):
    return tuple(torch.empty(q.shape, dtype=q.dtype, device=q.device) for _ in range(3))


def _setup_context(ctx, inputs, output):
    q, k, v, layout, key_mask, block_size, causal, scale = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, out, lse, layout)
    ctx.key_mask = key_mask
    ctx.settings = (block_size, causal, scale)


def _backward(ctx, grad_out, _grad_lse):
    q, k, v, out, lse, layout = ctx.saved_tensors
    grads = torch.ops.adapterkit.rsa_bwd(grad_out, q, k, v, out, lse, layout, ctx.key_mask,
                                        *ctx.settings)
    return (*grads, None, None, None, None, None)


def ensure_registered() -> bool:
    """Load the extension and register the Python halves of the op once. True if loaded."""
    global _registered
    if _registered:
        return True
    if not extension.available("cpu"):
        return False
    with _lock:
        if not _registered:
            torch.library.register_fake("adapterkit::rsa_fwd", _fake_forward)
            torch.library.register_fake("adapterkit::rsa_bwd", _fake_backward)
            torch.library.register_autograd("adapterkit::rsa_fwd", _backward,
                                            setup_context=_setup_context)
            _registered = True
    return True


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise RSAError("rsa_attention expects q, k, v of one shape (batch, heads, seq, head_dim); "
                       f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.dtype not in (torch.float32, torch.bfloat16, torch.float64):
        raise RSAError(f"rsa_attention supports float32, bfloat16 and float64, got {q.dtype}")
    if attention_mask is not None and tuple(attention_mask.shape) != (q.shape[0], q.shape[2]):
        raise RSAError("attention_mask must be (batch, seq) with 1 for real tokens; got "
                       f"{tuple(attention_mask.shape)} for q of shape {tuple(q.shape)}")


def rsa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, block_size: int = 64,
                  density: float = 0.25, seed: int = 0, attention_mask: torch.Tensor | None = None,
                  causal: bool = False, scale: float | None = None, global_blocks: int = 0,
                  min_random_blocks: int = 0, count_diagonal: bool = True) -> torch.Tensor:
    """Random Sparse Attention. q, k, v: (batch, heads, seq, head_dim) -> same shape.

    Each (head, query block) attends to its diagonal block plus a seeded random
    choice of key blocks (see `rsa_layout` for `global_blocks`, `min_random_blocks`
    and `count_diagonal`). `attention_mask` is (batch, seq) with 1/True for real
    tokens; padded keys get no weight, and a query with no real key in its blocks
    returns zeros. `causal` hides later keys. `scale` defaults to head_dim**-0.5.
    """
    _check(q, k, v, attention_mask)
    _, heads, seq, dim = q.shape
    check_settings(density, block_size, global_blocks, min_random_blocks)
    layout = layout_op(seq, heads, block_size, float(density), int(seed), bool(causal), int(global_blocks),
                       int(min_random_blocks), bool(count_diagonal)).to(q.device)
    key_mask = None if attention_mask is None else attention_mask.to(torch.bool).contiguous()
    scale = dim ** -0.5 if scale is None else float(scale)
    if ensure_registered() and extension.available(q.device.type):
        out, _ = torch.ops.adapterkit.rsa_fwd(q, k, v, layout, key_mask, block_size, causal, scale)
        return out
    extension.announce_fallback(q.device.type)
    return fallback_attention(q, k, v, layout, key_mask, block_size, causal, scale, global_blocks)
