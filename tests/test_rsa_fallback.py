"""The block-sparse SDPA fallback (no compiled kernel) against the pure-PyTorch reference."""
from __future__ import annotations

import pytest
import torch

from adapterkit.ops import blocksparse, rsa_layout
from adapterkit.ops.reference import reference_forward

# (batch, heads, seq, head_dim, block, density, causal, padded, (global, min_random, count_diagonal))
CASES = [
    (1, 2, 256, 16, 16, 0.25, False, False, (0, 0, True)),   # 16 blocks, no mask at all
    (2, 3, 150, 16, 16, 0.3, False, True, (0, 0, True)),     # tail block, padding
    (2, 2, 150, 16, 16, 0.3, True, True, (0, 0, True)),      # causal, padding
    (2, 3, 200, 8, 16, 0.25, False, True, (1, 1, True)),     # global [CLS] block
    (1, 2, 200, 8, 16, 0.25, True, False, (1, 1, True)),     # global block, causal
    (2, 2, 137, 8, 16, 0.2, False, True, (2, 0, False)),     # two global blocks, density on top
    (2, 2, 128, 8, 16, 0.25, False, True, (0, 0, True)),     # rows whose blocks are all padding
]


def _inputs(B, H, S, D, padded, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, S, D, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3))
    mask = None
    if padded:
        mask = torch.ones(B, S, dtype=torch.bool)
        mask[0, S - 40:] = False   # right padding: whole padded blocks in sequence 0
        mask[-1, :5] = False       # left padding
    return q, k, v, mask


@pytest.mark.parametrize("formulation", ["blocks", "masked"])
@pytest.mark.parametrize("case", CASES)
def test_fallback_matches_reference(case, formulation, monkeypatch):
    B, H, S, D, bs, density, causal, padded, (g, m, counted) = case
    monkeypatch.setattr(blocksparse, "CHUNK_BYTES", 1 << 15)   # several chunks of query blocks
    q, k, v, mask = _inputs(B, H, S, D, padded)
    layout = rsa_layout(S, H, block_size=bs, density=density, causal=causal, seed=3, global_blocks=g,
                        min_random_blocks=m, count_diagonal=counted)
    scale = D ** -0.5
    if formulation == "blocks":
        out = blocksparse.blocks_attention(q, k, v, layout, mask, bs, causal, scale, g)
    else:
        out = blocksparse.masked_attention(q, k, v, layout, mask, bs, causal, scale)
    ref = reference_forward(q, k, v, layout, mask, bs, causal, scale)[0]
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    if formulation == "blocks":   # without autograd the chunks share two reused gather buffers
        with torch.no_grad():
            again = blocksparse.blocks_attention(q, k, v, layout, mask, bs, causal, scale, g)
        torch.testing.assert_close(again, ref.detach(), atol=1e-10, rtol=1e-10)
    grad = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_choice_between_formulations():
    assert blocksparse.choose(rsa_layout(64 * 32, 2, density=0.25)) == "blocks"
    assert blocksparse.choose(rsa_layout(64 * 32, 2, density=0.25, global_blocks=1)) == "blocks"
    assert blocksparse.choose(rsa_layout(64 * 4, 2, density=0.25)) == "masked"    # too few blocks
    assert blocksparse.choose(rsa_layout(64 * 32, 2, density=1.0)) == "masked"    # nothing to skip


def test_full_layout_is_plain_sdpa_with_padding():
    q, k, v, mask = _inputs(2, 2, 100, 8, True)
    layout = rsa_layout(100, 2, block_size=16, density=1.0)
    out = blocksparse.fallback_attention(q, k, v, layout, mask, 16, False, 8 ** -0.5)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    torch.testing.assert_close(out, want)
