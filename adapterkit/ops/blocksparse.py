"""Random Sparse Attention without the compiled kernel: block-sparse SDPA in plain PyTorch.

Where neither the prebuilt nor the first-use-compiled kernel can be loaded (no
C++ compiler, ADAPTERKIT_SKIP_BUILD, ADAPTERKIT_NO_KERNELS), `rsa_attention`
runs this instead of the reference. Two formulations, both differentiable by
autograd and equal to the reference (tests/test_rsa_fallback.py):

  "blocks"  each query block gathers the key and value blocks its layout row
            selects, (B, H, blocks, kept * block_size, D), and runs
            `scaled_dot_product_attention` on them: work proportional to the
            kept blocks. Global query blocks (they see every block) run as one
            dense SDPA call of their own. Queries go in chunks of blocks so
            the gathered copies stay under ~256 MB.
  "masked"  dense SDPA over the whole sequence with the RSA pattern as a
            boolean mask: quadratic, but one call; or plain dense SDPA (with
            the padding mask only) where the layout keeps every block.

`choose` takes "blocks" unless the layout keeps every block or the sequence
has fewer than `MIN_BLOCKS` blocks, where the gathering costs more than it
saves (measured by benchmarks/bench_rsa.py; see benchmarks/README.md, rsa).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from adapterkit.ops.layout import layout_block_mask, rsa_token_mask

MIN_BLOCKS = 8          # below this many blocks the masked dense call is faster
CHUNK_BYTES = 256 << 20  # gathered keys + values per chunk of query blocks


def choose(layout: torch.Tensor) -> str:
    """ "blocks" or "masked" for a layout (heads, n_blocks, k); see the module docstring."""
    n = layout.shape[1]
    return "masked" if n < MIN_BLOCKS or _keeps_everything(layout) else "blocks"


def _keeps_everything(layout: torch.Tensor) -> bool:
    return layout.shape[2] == layout.shape[1] and bool((layout >= 0).all())


def _key_valid(key_mask: torch.Tensor | None, batch: int, seq: int, padded: int, device) -> torch.Tensor | None:
    """(B, padded) bool: a real key (None when every position < padded is real)."""
    if key_mask is None and padded == seq:
        return None
    valid = torch.zeros(batch, padded, dtype=torch.bool, device=device)
    valid[:, :seq] = True if key_mask is None else key_mask
    return valid


def _sdpa(q, k, v, allowed: torch.Tensor | None, scale: float) -> torch.Tensor:
    """SDPA where a query row with no allowed key gets zeros (as in the reference).

    Leading dimensions beyond (batch, heads) are folded into the heads: ATen's
    fused CPU kernel takes 4-D inputs only.
    """
    shape = q.shape
    q, k, v = (x.reshape(x.shape[0], -1, *x.shape[-2:]) for x in (q, k, v))
    if allowed is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale).view(shape)
    allowed = allowed.expand(*shape[:-1], k.shape[-2])
    allowed = allowed.reshape(allowed.shape[0], -1, *allowed.shape[-2:])
    has_key = allowed.any(-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | ~has_key, scale=scale)
    return out.masked_fill(~has_key, 0.0).view(shape)


def masked_attention(q, k, v, layout, key_mask, block_size: int, causal: bool, scale: float):
    """Dense SDPA under the RSA token mask (or only the padding mask where every block is kept)."""
    seq = q.shape[2]
    allowed = None
    if not _keeps_everything(layout):
        allowed = rsa_token_mask(layout.to(q.device), block_size, seq, causal)[None]  # (1, H, S, S)
    elif causal:
        allowed = torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()[None, None]
    if key_mask is not None:
        keys = key_mask.to(device=q.device, dtype=torch.bool)[:, None, None, :]
        allowed = keys if allowed is None else allowed & keys
    return _sdpa(q, k, v, allowed, scale)


def _block_mask(rows: torch.Tensor, cols: torch.Tensor, valid, block_size: int, causal: bool):
    """(B|1, H, m, bs, W * bs) bool mask of gathered keys, or None if every key is allowed.

    rows: (m,) query block indices; cols: (H, m, W) key block indices, -1 for none.
    """
    bs = block_size
    offsets = torch.arange(bs, device=cols.device)
    k_pos = (cols.clamp(min=0)[..., None] * bs + offsets).flatten(-2)         # (H, m, W*bs)
    allowed = (cols >= 0)[..., None].expand(*cols.shape, bs).flatten(-2)      # (H, m, W*bs)
    needed = not bool(allowed.all())
    allowed = allowed[:, :, None, :]                                          # (H, m, 1, W*bs)
    if causal:
        q_pos = rows[:, None] * bs + offsets                                  # (m, bs)
        allowed = allowed & (k_pos[:, :, None, :] <= q_pos[None, :, :, None])
        needed = True
    allowed = allowed[None]                                                   # (1, H, m, ., W*bs)
    if valid is not None:
        allowed = allowed & valid[:, k_pos][:, :, :, None, :]                 # (B, H, m, ., W*bs)
        needed = True
    return allowed.expand(-1, -1, -1, bs, -1) if needed else None


def blocks_attention(q, k, v, layout, key_mask, block_size: int, causal: bool, scale: float,
                     global_blocks: int = 0):
    """Each query block against its gathered key blocks; see the module docstring."""
    B, H, S, D = q.shape
    bs, n = block_size, layout.shape[1]
    padded = n * bs
    if padded != S:
        q, k, v = (F.pad(x, (0, 0, 0, padded - S)) for x in (q, k, v))
    valid = _key_valid(key_mask, B, S, padded, q.device)
    layout = layout.to(q.device).long()
    g = min(global_blocks, n)
    parts = []
    if g:  # global query blocks: all their key blocks, as one dense call
        blocks = layout_block_mask(layout)[:, :g]                               # (H, g, n)
        allowed = blocks.repeat_interleave(bs, -1).repeat_interleave(bs, -2)    # (H, g*bs, padded)
        if causal:
            allowed = allowed & torch.ones(g * bs, padded, dtype=torch.bool, device=q.device).tril()
        allowed = allowed[None] if valid is None else allowed[None] & valid[:, None, None, :]
        parts.append(_sdpa(q[:, :, :g * bs], k, v, allowed, scale))
    rows = layout[:, g:]
    width = int((rows >= 0).sum(-1).max()) if rows.numel() else 0
    rows = rows[..., :width]                                   # rows are ascending, -1 padded
    kb, vb = (x.reshape(B, H * n, bs * D) for x in (k, v))    # one row per (head, block)
    qb = q.view(B, H, n, bs, D)
    first = (torch.arange(H, device=q.device) * n)[:, None, None]
    step = max(1, CHUNK_BYTES // max(1, 2 * B * H * width * bs * D * q.element_size()))
    # without autograd, the gathered blocks go to two buffers reused by every chunk: fresh
    # allocations of this size are fresh pages from the OS, which cost as much as the copy
    reuse = not (torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)))
    buffers = [torch.empty(B * H * min(step, n - g) * width * bs * D, dtype=q.dtype, device=q.device)
               for _ in range(2)] if reuse and n > g else None
    for start in range(g, n, step):
        cols = rows[:, start - g:start - g + step]             # (H, m, W)
        m = cols.shape[1]
        flat = (cols.clamp(min=0) + first).flatten()           # rows of kb / vb, (H * m * W,)
        if buffers is None:
            kg, vg = (torch.index_select(x, 1, flat) for x in (kb, vb))
        else:
            kg, vg = (torch.index_select(x, 1, flat, out=buf[:x.shape[0] * flat.numel() * bs * D].view(
                x.shape[0], flat.numel(), bs * D)) for x, buf in zip((kb, vb), buffers))
        kg, vg = (x.view(B, H, m, width * bs, D) for x in (kg, vg))
        mask = _block_mask(torch.arange(start, start + m, device=q.device), cols, valid, bs, causal)
        out = _sdpa(qb[:, :, start:start + m], kg, vg, mask, scale)  # (B, H, m, bs, D)
        parts.append(out.flatten(2, 3))
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    return out[:, :, :S]


def fallback_attention(q, k, v, layout, key_mask, block_size: int, causal: bool, scale: float,
                       global_blocks: int = 0):
    """The op's contract without a kernel: the faster of the two formulations for this layout."""
    if choose(layout) == "masked":
        return masked_attention(q, k, v, layout, key_mask, block_size, causal, scale)
    return blocks_attention(q, k, v, layout, key_mask, block_size, causal, scale, global_blocks)
