"""Which key blocks each (head, query block) attends to in Random Sparse Attention.

The sequence is cut into blocks of `block_size` tokens. Every query block i of
every head h attends to its own (diagonal) block, so no real token is left
without keys, plus a random choice of other key blocks, so that it sees about
`density` of the blocks it may see (all of them, or blocks 0..i when causal).
Heads choose independently, so together they cover more of the matrix than any
one of them (EasyTransfer, section 3.3).

The choice is a hash of (seed, head, query block, key block), not a stateful
generator: the same arguments give the same layout on every machine, and in
causal mode the layout of a prefix is the prefix of the layout (so decoding one
token at a time sees the blocks that training saw).
"""
from __future__ import annotations

import functools
import math

import torch

from adapterkit.errors import AdapterkitError

_M32 = 0xFFFFFFFF


class RSAError(AdapterkitError, ValueError):
    """Invalid Random Sparse Attention arguments."""


def check_settings(density: float, block_size: int) -> None:
    if not (isinstance(density, (int, float)) and 0.0 < density <= 1.0):
        raise RSAError(f"RSA density must be in (0, 1], got {density!r}")
    if not (isinstance(block_size, int) and block_size > 0):
        raise RSAError(f"RSA block_size must be a positive integer, got {block_size!r}")


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser on int64 tensors; multipliers < 2**31 keep products < 2**63."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _M32
    return x ^ (x >> 16)


def block_scores(seed: int, heads: int, n_blocks: int) -> torch.Tensor:
    """Pseudo-random int64 scores in [0, 2**32) of shape (heads, n_blocks, n_blocks)."""
    h = torch.arange(heads, dtype=torch.int64)[:, None, None]
    i = torch.arange(n_blocks, dtype=torch.int64)[None, :, None]
    j = torch.arange(n_blocks, dtype=torch.int64)[None, None, :]
    x = _mix((h + (int(seed) & _M32)) & _M32)
    x = _mix((x + i * 0x3C6EF372) & _M32)
    return _mix((x + j * 0x1B873593) & _M32)


def blocks_per_row(n_blocks: int, density: float, causal: bool) -> torch.Tensor:
    """How many key blocks each query block attends to (the diagonal included)."""
    candidates = torch.arange(1, n_blocks + 1) if causal else torch.full((n_blocks,), n_blocks)
    wanted = torch.floor(density * candidates.double() + 0.5).long()
    return torch.minimum(wanted.clamp(min=1), candidates)


@functools.lru_cache(maxsize=64)
def _layout(seq_len: int, heads: int, block_size: int, density: float, seed: int, causal: bool):
    n = math.ceil(seq_len / block_size)
    if n == 0:
        return torch.empty(heads, 0, 1, dtype=torch.int32)
    scores = block_scores(seed, heads, n)                      # (H, n, n)
    rows = torch.arange(n)
    scores = scores.masked_fill(rows[:, None] == rows[None, :], -1)    # diagonal first
    if causal:
        scores = scores.masked_fill(rows[None, :] > rows[:, None], 1 << 40)  # never picked
    count = blocks_per_row(n, density, causal)                 # (n,)
    k = int(count.max())
    picked = torch.argsort(scores, dim=-1, stable=True)[..., :k]   # (H, n, k)
    picked = picked.masked_fill(torch.arange(k)[None, None, :] >= count[None, :, None], n)
    picked = torch.sort(picked, dim=-1).values
    return picked.masked_fill(picked == n, -1).to(torch.int32).contiguous()


def cached_layout(seq_len: int, heads: int, block_size: int, density: float, seed: int,
                  causal: bool, device: torch.device | str = "cpu") -> torch.Tensor:
    """Like `rsa_layout`, but shared between calls: do not modify the result."""
    check_settings(density, block_size)
    layout = _layout(int(seq_len), int(heads), int(block_size), float(density), int(seed), bool(causal))
    return layout if torch.device(device).type == "cpu" else _on_device(layout, str(device))


@functools.lru_cache(maxsize=64)
def _on_device(layout: torch.Tensor, device: str) -> torch.Tensor:
    return layout.to(device)  # tensors hash by identity: one copy per cached CPU layout


def max_blocks_per_row(n_blocks, density: float) -> int:
    """Columns of a layout: the last row has the most candidates, causal or not."""
    if isinstance(n_blocks, int) and n_blocks == 0:
        return 1
    return min(n_blocks, max(1, math.floor(density * n_blocks + 0.5)))


@torch.library.custom_op("adapterkit::rsa_layout", mutates_args=())
def layout_op(seq_len: int, heads: int, block_size: int, density: float, seed: int,
              causal: bool) -> torch.Tensor:
    """`rsa_layout` as an op, so that torch.compile keeps it out of the traced graph."""
    return cached_layout(seq_len, heads, block_size, density, seed, causal).clone()


@layout_op.register_fake
def _(seq_len, heads, block_size, density, seed, causal):
    n = (seq_len + block_size - 1) // block_size
    return torch.empty((heads, n, max_blocks_per_row(n, density)), dtype=torch.int32)


def rsa_layout(seq_len: int, num_heads: int, *, block_size: int = 64, density: float = 0.25,
               seed: int = 0, causal: bool = False) -> torch.Tensor:
    """Selected key blocks: int32 (num_heads, n_blocks, k), ascending, -1 padded.

    Row [h, i] lists the key blocks that query block i of head h attends to;
    it always contains i. In causal mode only blocks <= i are chosen.
    """
    return cached_layout(seq_len, num_heads, block_size, density, seed, causal).clone()


def layout_block_mask(layout: torch.Tensor) -> torch.Tensor:
    """Dense bool (heads, n_blocks, n_blocks) view of a layout: [h, i, j] = block j selected."""
    heads, n, _ = layout.shape
    mask = torch.zeros(heads, n, n + 1, dtype=torch.bool, device=layout.device)
    mask.scatter_(-1, layout.long().clamp(min=-1) % (n + 1), True)  # -1 lands in the spare column
    return mask[..., :n]


def rsa_token_mask(layout: torch.Tensor, block_size: int, kv_length: int, causal: bool,
                   q_positions: torch.Tensor | None = None) -> torch.Tensor:
    """Token-level bool mask (heads, q_len, kv_length): True where the query may see the key.

    `q_positions` are the absolute positions of the queries (default: all of
    0..kv_length-1, i.e. self-attention without a cache).
    """
    device = layout.device
    q_pos = torch.arange(kv_length, device=device) if q_positions is None else q_positions.to(device)
    k_pos = torch.arange(kv_length, device=device)
    blocks = layout_block_mask(layout)                                  # (H, n, n)
    allowed = blocks[:, q_pos // block_size][:, :, k_pos // block_size]  # (H, q, kv)
    if causal:
        allowed = allowed & (k_pos[None, :] <= q_pos[:, None])
    return allowed
