"""Pure-PyTorch Random Sparse Attention: dense attention under the RSA block mask.

It is the test oracle of the compiled kernels and of the block-sparse fallback
(adapterkit/ops/blocksparse.py). It materialises the (batch, heads, seq, seq) score matrix, so its
memory is quadratic: use it for checking, not for long sequences.
"""
from __future__ import annotations

import torch

from adapterkit.ops.layout import cached_layout, rsa_token_mask


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor,
                     scale: float, bias: torch.Tensor | None = None):
    """softmax(q k^T * scale + bias) v over the `allowed` entries -> (out, lse).

    Computes in float32 (float64 for float64 inputs). A query row with no
    allowed key (a padding token) gets a zero output and lse = -inf.
    """
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    scores = torch.matmul(q.to(work), k.to(work).transpose(-1, -2)) * scale  # (B, H, q, kv)
    if bias is not None:
        scores = scores + bias.to(work)
    scores = scores.masked_fill(~allowed, float("-inf"))
    empty = ~allowed.any(dim=-1, keepdim=True)
    scores = scores.masked_fill(empty, 0.0)  # keeps softmax and its gradient finite
    probs = torch.softmax(scores, dim=-1).masked_fill(empty, 0.0)
    out = torch.matmul(probs, v.to(work)).to(q.dtype)
    lse = torch.logsumexp(scores, dim=-1).masked_fill(empty.squeeze(-1), float("-inf"))
    return out, lse


def reference_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: torch.Tensor,
                      key_mask: torch.Tensor | None, block_size: int, causal: bool, scale: float):
    """The op's contract, given an explicit layout -> (out, lse)."""
    seq = q.shape[2]
    allowed = rsa_token_mask(layout.to(q.device), block_size, seq, causal)[None]  # (1, H, S, S)
    if key_mask is not None:
        allowed = allowed & key_mask.to(device=q.device, dtype=torch.bool)[:, None, None, :]
    return masked_attention(q, k, v, allowed, scale)


def rsa_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                            block_size: int = 64, density: float = 0.25, seed: int = 0,
                            attention_mask: torch.Tensor | None = None, causal: bool = False,
                            scale: float | None = None, global_blocks: int = 0,
                            min_random_blocks: int = 0, count_diagonal: bool = True) -> torch.Tensor:
    """Same arguments and result as `adapterkit.ops.rsa_attention`, in plain PyTorch."""
    _, heads, seq, dim = q.shape
    layout = cached_layout(seq, heads, block_size, density, seed, causal, global_blocks=global_blocks,
                           min_random_blocks=min_random_blocks, count_diagonal=count_diagonal)
    scale = dim ** -0.5 if scale is None else float(scale)
    return reference_forward(q, k, v, layout, attention_mask, block_size, causal, scale)[0]
