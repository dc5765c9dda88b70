"""Which key blocks each (head, query block) attends to in Random Sparse Attention.

The sequence is cut into blocks of `block_size` tokens. Every query block i of
every head h attends to its own (diagonal) block, so no real token is left
without keys, plus a random choice of other key blocks, so that it sees about
`density` of the blocks it may see (all of them, or blocks 0..i when causal).
Heads choose independently, so together they cover more of the matrix than any
one of them (EasyTransfer, section 3.3).

Options (all off by default, which is the original layout):
  global_blocks      the first `global_blocks` blocks (block 0 holds [CLS]) are
                     global: every query block attends to them, and they attend
                     to every block (BigBird's and Longformer's global tokens).
  min_random_blocks  at least this many random blocks besides the diagonal and
                     global ones, where the row has that many; without it a
                     short input at density 1/4 (4 blocks or fewer) gets purely
                     block-local attention.
  count_diagonal     True (default): density is the share of *all* the blocks a
                     row may see, its fixed blocks (diagonal, global) included:
                     1/4 of 8 blocks keeps 2 in all. False: density is the share
                     of the *other* blocks, picked at random on top of the fixed
                     ones: 1/4 of 8 blocks keeps the diagonal + round(7/4) = 2.

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


def _non_negative_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def check_settings(density: float, block_size: int, global_blocks: int = 0,
                   min_random_blocks: int = 0) -> None:
    if not (isinstance(density, (int, float)) and 0.0 < density <= 1.0):
        raise RSAError(f"RSA density must be in (0, 1], got {density!r}")
    if not (isinstance(block_size, int) and block_size > 0):
        raise RSAError(f"RSA block_size must be a positive integer, got {block_size!r}")
    if not _non_negative_int(global_blocks):
        raise RSAError(f"RSA global_blocks must be an integer >= 0, got {global_blocks!r}")
    if not _non_negative_int(min_random_blocks):
        raise RSAError(f"RSA min_random_blocks must be an integer >= 0, got {min_random_blocks!r}")


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


def row_count(candidates, i, density: float, global_blocks: int = 0, min_random_blocks: int = 0,
              count_diagonal: bool = True):
    """Key blocks kept by query block `i`, which may see `candidates` blocks (ints or SymInts)."""
    if i < global_blocks:                                 # a global row sees everything
        return candidates
    fixed = 1 + min(global_blocks, candidates - 1)       # the diagonal and the global blocks
    if count_diagonal:
        random = math.floor(density * candidates + 0.5) - fixed
    else:
        random = math.floor(density * (candidates - fixed) + 0.5)
    return fixed + min(max(random, min_random_blocks, 0), candidates - fixed)


def blocks_per_row(n_blocks: int, density: float, causal: bool, global_blocks: int = 0,
                   min_random_blocks: int = 0, count_diagonal: bool = True) -> torch.Tensor:
    """How many key blocks each query block attends to (diagonal and global ones included)."""
    return torch.tensor([row_count(i + 1 if causal else n_blocks, i, density, global_blocks,
                                   min_random_blocks, count_diagonal) for i in range(n_blocks)],
                        dtype=torch.long)


def max_blocks_per_row(n_blocks, density: float, global_blocks: int = 0, min_random_blocks: int = 0,
                       count_diagonal: bool = True):
    """Columns of a layout. Causal or not, the last row has the most candidates; a global
    query block (non-causal) sees all of them."""
    if isinstance(n_blocks, int) and n_blocks == 0:
        return 1
    last = row_count(n_blocks, n_blocks - 1, density, global_blocks, min_random_blocks, count_diagonal)
    return n_blocks if global_blocks > 0 else last


@functools.lru_cache(maxsize=64)
def _layout(seq_len: int, heads: int, block_size: int, density: float, seed: int, causal: bool,
            global_blocks: int, min_random_blocks: int, count_diagonal: bool):
    n = math.ceil(seq_len / block_size)
    if n == 0:
        return torch.empty(heads, 0, 1, dtype=torch.int32)
    scores = block_scores(seed, heads, n)                      # (H, n, n)
    rows = torch.arange(n)
    fixed = (rows[:, None] == rows[None, :]) | (rows[None, :] < global_blocks)
    scores = scores.masked_fill(fixed, -1)                     # diagonal and global blocks first
    if causal:
        scores = scores.masked_fill(rows[None, :] > rows[:, None], 1 << 40)  # never picked
    count = blocks_per_row(n, density, causal, global_blocks, min_random_blocks, count_diagonal)
    k = max_blocks_per_row(n, density, global_blocks, min_random_blocks, count_diagonal)
    picked = torch.argsort(scores, dim=-1, stable=True)[..., :k]   # (H, n, k)
    picked = picked.masked_fill(torch.arange(k)[None, None, :] >= count[None, :, None], n)
    picked = torch.sort(picked, dim=-1).values
    return picked.masked_fill(picked == n, -1).to(torch.int32).contiguous()


def cached_layout(seq_len: int, heads: int, block_size: int, density: float, seed: int,
                  causal: bool, device: torch.device | str = "cpu", *, global_blocks: int = 0,
                  min_random_blocks: int = 0, count_diagonal: bool = True) -> torch.Tensor:
    """Like `rsa_layout`, but shared between calls: do not modify the result."""
    check_settings(density, block_size, global_blocks, min_random_blocks)
    layout = _layout(int(seq_len), int(heads), int(block_size), float(density), int(seed), bool(causal),
                     int(global_blocks), int(min_random_blocks), bool(count_diagonal))
    return layout if torch.device(device).type == "cpu" else _on_device(layout, str(device))


@functools.lru_cache(maxsize=64)
def _on_device(layout: torch.Tensor, device: str) -> torch.Tensor:
    return layout.to(device)  # tensors hash by identity: one copy per cached CPU layout


@torch.library.custom_op("adapterkit::rsa_layout", mutates_args=())
def layout_op(seq_len: int, heads: int, block_size: int, density: float, seed: int,
              causal: bool, global_blocks: int = 0, min_random_blocks: int = 0,
              count_diagonal: bool = True) -> torch.Tensor:
    """`rsa_layout` as an op, so that torch.compile keeps it out of the traced graph."""
    return cached_layout(seq_len, heads, block_size, density, seed, causal, global_blocks=global_blocks,
                         min_random_blocks=min_random_blocks, count_diagonal=count_diagonal).clone()


@layout_op.register_fake
def _(seq_len, heads, block_size, density, seed, causal, global_blocks=0, min_random_blocks=0,
      count_diagonal=True):
    n = (seq_len + block_size - 1) // block_size
    k = max_blocks_per_row(n, density, global_blocks, min_random_blocks, count_diagonal)
    return torch.empty((heads, n, k), dtype=torch.int32)


def rsa_layout(seq_len: int, num_heads: int, *, block_size: int = 64, density: float = 0.25,
               seed: int = 0, causal: bool = False, global_blocks: int = 0, min_random_blocks: int = 0,
               count_diagonal: bool = True) -> torch.Tensor:
    """Selected key blocks: int32 (num_heads, n_blocks, k), ascending, -1 padded.

    Row [h, i] lists the key blocks that query block i of head h attends to;
    it always contains i (and the global blocks). In causal mode only blocks
    <= i are chosen. See the module docstring for the options.
    """
    return cached_layout(seq_len, num_heads, block_size, density, seed, causal, global_blocks=global_blocks,
                         min_random_blocks=min_random_blocks, count_diagonal=count_diagonal).clone()


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
