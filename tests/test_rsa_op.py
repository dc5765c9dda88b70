"""Random Sparse Attention: layout, compiled CPU kernel against the reference, opcheck, gradcheck."""
from __future__ import annotations

import math

import pytest
import torch

from adapterkit.ops import extension, rsa_attention, rsa_attention_reference, rsa_layout
from adapterkit.ops.layout import RSAError, layout_block_mask, rsa_token_mask
from adapterkit.ops.reference import reference_forward
from adapterkit.ops.rsa import ensure_registered

needs_kernel = pytest.mark.skipif(not extension.available("cpu"),
                                  reason="compiled adapterkit._C not built (ADAPTERKIT_SKIP_BUILD?)")


# ---------------------------------------------------------------- layout

@pytest.mark.parametrize("causal", [False, True])
def test_layout_rows_hold_diagonal_and_density_share(causal):
    layout = rsa_layout(64 * 16, 4, block_size=64, density=0.25, causal=causal)
    assert layout.shape[:2] == (4, 16) and layout.dtype == torch.int32
    blocks = layout_block_mask(layout)                          # (H, 16, 16)
    assert blocks.diagonal(dim1=1, dim2=2).all()
    for i in range(16):
        allowed = i + 1 if causal else 16
        assert (blocks[:, i].sum(-1) == max(1, math.floor(0.25 * allowed + 0.5))).all()
    if causal:
        assert not blocks.triu(diagonal=1).any()
    rows = layout.long()
    assert (rows[..., 1:][rows[..., 1:] >= 0] > rows[..., :-1][rows[..., 1:] >= 0]).all()  # ascending


def test_layout_is_seeded_per_head_and_prefix_stable():
    a = rsa_layout(2048, 8, block_size=64, density=0.25, seed=3)
    assert torch.equal(a, rsa_layout(2048, 8, block_size=64, density=0.25, seed=3))
    assert not torch.equal(a, rsa_layout(2048, 8, block_size=64, density=0.25, seed=4))
    assert len({tuple(a[h].flatten().tolist()) for h in range(8)}) == 8   # heads choose apart
    union = layout_block_mask(a).any(0).float().mean().item()
    assert union > 0.75   # 8 heads at 1/4 cover 1 - 0.75**8 ~ 0.9 of the blocks
    long, short = (rsa_layout(n, 2, block_size=16, density=0.5, causal=True, seed=1) for n in (320, 160))
    assert torch.equal(layout_block_mask(long)[:, :10, :10], layout_block_mask(short))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("count_diagonal", [True, False])
def test_layout_global_blocks_and_minimum_random(causal, count_diagonal):
    n, g, density = 12, 1, 0.25
    layout = rsa_layout(64 * n, 4, block_size=64, density=density, causal=causal, global_blocks=g,
                        min_random_blocks=2, count_diagonal=count_diagonal)
    blocks = layout_block_mask(layout)                          # (H, n, n)
    visible = torch.ones(n, n, dtype=torch.bool).tril() if causal else torch.ones(n, n, dtype=torch.bool)
    assert torch.equal(blocks[:, 0], visible[0].expand(4, n))   # block 0 attends to every block
    assert blocks[:, :, 0].all()                                 # every block attends to block 0
    assert blocks.diagonal(dim1=1, dim2=2).all()
    assert not (blocks & ~visible).any()
    for i in range(1, n):
        candidates = i + 1 if causal else n
        fixed = 1 + min(g, candidates - 1)
        share = density * (candidates if count_diagonal else candidates - fixed)
        random = math.floor(share + 0.5) - (fixed if count_diagonal else 0)
        want = fixed + min(max(random, 2), candidates - fixed)
        assert (blocks[:, i].sum(-1) == want).all(), (i, want)


def test_layout_density_counting_the_diagonal_or_not():
    # 8 blocks at density 1/4: 2 blocks in all when the diagonal counts, 1 + round(7 / 4) = 3 when not
    counted = layout_block_mask(rsa_layout(512, 2, block_size=64, density=0.25)).sum(-1)
    extra = layout_block_mask(rsa_layout(512, 2, block_size=64, density=0.25, count_diagonal=False)).sum(-1)
    assert (counted == 2).all() and (extra == 3).all()
    # a 4-block input at 1/4 is block-local in the original layout; min_random_blocks=1 adds one
    assert (layout_block_mask(rsa_layout(256, 2, block_size=64, density=0.25)).sum(-1) == 1).all()
    short = layout_block_mask(rsa_layout(256, 2, block_size=64, density=0.25, min_random_blocks=1))
    assert (short.sum(-1) == 2).all()


def test_layout_options_keep_causal_prefixes():
    kw = dict(block_size=16, density=0.3, causal=True, seed=2, global_blocks=1, min_random_blocks=1)
    long, short = (rsa_layout(n, 3, **kw) for n in (320, 160))
    assert torch.equal(layout_block_mask(long)[:, :10, :10], layout_block_mask(short))


def test_layout_op_for_torch_compile():
    torch.library.opcheck(torch.ops.adapterkit.rsa_layout.default, (300, 3, 64, 0.3, 1, True))
    torch.library.opcheck(torch.ops.adapterkit.rsa_layout.default, (300, 3, 32, 0.3, 1, False, 1, 1, False))
    assert torch.equal(torch.ops.adapterkit.rsa_layout(300, 3, 64, 0.3, 1, True),
                       rsa_layout(300, 3, block_size=64, density=0.3, seed=1, causal=True))


def test_layout_rejects_bad_settings():
    with pytest.raises(RSAError, match="density"):
        rsa_layout(128, 2, density=0.0)
    with pytest.raises(RSAError, match="block_size"):
        rsa_layout(128, 2, block_size=0)
    with pytest.raises(RSAError, match="global_blocks"):
        rsa_layout(128, 2, global_blocks=-1)
    with pytest.raises(RSAError, match="min_random_blocks"):
        rsa_layout(128, 2, min_random_blocks=1.5)


def test_token_mask_expands_blocks():
    layout = rsa_layout(40, 1, block_size=16, density=0.5, seed=2)
    mask = rsa_token_mask(layout, 16, 40, causal=False)
    blocks = layout_block_mask(layout)[0]
    for q in (0, 17, 39):
        for k in (0, 15, 16, 33, 39):
            assert mask[0, q, k] == blocks[q // 16, k // 16]


# ---------------------------------------------------------------- kernel against the reference

# (batch, heads, seq, head_dim, block, density, causal, padded)
SHAPES = [
    (1, 2, 64, 16, 16, 0.5, False, False),   # exact multiple of the block
    (2, 3, 37, 16, 16, 0.5, False, True),    # odd length, padding
    (2, 2, 37, 16, 16, 0.5, True, True),     # causal + padding
    (1, 2, 130, 32, 32, 0.3, True, False),   # tail block of 2 tokens
    (2, 2, 100, 64, 128, 1.0, False, True),  # one block longer than the sequence
    (1, 1, 96, 8, 16, 0.25, False, False),   # head dim below a vector
]
LAYOUT_OPTIONS = [  # (global_blocks, min_random_blocks, count_diagonal)
    (0, 0, True),      # the original layout
    (1, 1, True),      # [CLS] block global, at least one random block
    (2, 0, False),     # two global blocks, density on top of the fixed blocks
]
TOL = {torch.float32: 2e-5, torch.float64: 1e-10, torch.bfloat16: 3e-2}


def _inputs(B, H, S, D, padded, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, S, D, generator=g).to(dtype).requires_grad_() for _ in range(3))
    mask = None
    if padded:
        mask = torch.ones(B, S, dtype=torch.long)
        mask[0, S - 7:] = 0      # right padding
        mask[-1, :5] = 0         # left padding
    return q, k, v, mask


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_matches_reference(shape, dtype):
    B, H, S, D, bs, density, causal, padded = shape
    q, k, v, mask = _inputs(B, H, S, D, padded, dtype)
    kw = dict(block_size=bs, density=density, seed=5, attention_mask=mask, causal=causal)
    out, ref = rsa_attention(q, k, v, **kw), rsa_attention_reference(q, k, v, **kw)
    tol = TOL[dtype]
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=tol)


@needs_kernel
@pytest.mark.parametrize("options", LAYOUT_OPTIONS[1:])
@pytest.mark.parametrize("shape", SHAPES[1:4])
def test_kernel_matches_reference_with_layout_options(shape, options):
    B, H, S, D, bs, density, causal, padded = shape
    q, k, v, mask = _inputs(B, H, S, D, padded, torch.float32)
    g, m, counted = options
    kw = dict(block_size=bs, density=density, seed=5, attention_mask=mask, causal=causal, global_blocks=g,
              min_random_blocks=m, count_diagonal=counted)
    out, ref = rsa_attention(q, k, v, **kw), rsa_attention_reference(q, k, v, **kw)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    grad = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lse_and_rows_without_keys(dtype):
    # density 1/4 of 4 blocks: each query block sees only its own block, so the
    # all-padding last block (tokens 48..63 of sequence 0) has no real key at all.
    q, k, v, _ = _inputs(2, 2, 64, 16, False, dtype)
    key_mask = torch.ones(2, 64, dtype=torch.bool)
    key_mask[0, 44:] = False
    layout = rsa_layout(64, 2, block_size=16, density=0.25)
    out, lse = torch.ops.adapterkit.rsa_fwd(q, k, v, layout, key_mask, 16, False, 0.25)
    _, ref_lse = reference_forward(q, k, v, layout, key_mask, 16, False, 0.25)
    torch.testing.assert_close(lse, ref_lse.float(), atol=TOL[dtype], rtol=TOL[dtype])
    assert torch.isinf(lse[0, :, 48:]).all() and torch.isfinite(lse[0, :, :48]).all()
    assert (out[0, :, 48:] == 0).all() and (out[0, :, 44:48] != 0).any()


@needs_kernel
def test_padded_keys_have_no_influence():
    q, k, v, mask = _inputs(2, 2, 50, 16, True, torch.float32)
    kw = dict(block_size=16, density=0.6, attention_mask=mask)
    out = rsa_attention(q, k, v, **kw)
    hidden = ~mask.bool()[:, None, :, None]
    k2 = torch.where(hidden, torch.randn_like(k) * 100, k)
    v2 = torch.where(hidden, torch.randn_like(v) * 100, v)
    torch.testing.assert_close(rsa_attention(q, k2, v2, **kw), out, atol=0, rtol=0)


@needs_kernel
def test_causal_output_ignores_future():
    q, k, v, _ = _inputs(1, 2, 80, 16, False, torch.float32)
    kw = dict(block_size=16, density=0.5, causal=True)
    out = rsa_attention(q, k, v, **kw)
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[:, :, 50:] += 5.0
    v2[:, :, 50:] -= 5.0
    torch.testing.assert_close(rsa_attention(q, k2, v2, **kw)[:, :, :50], out[:, :, :50])


@needs_kernel
def test_full_density_is_dense_attention():
    q, k, v, mask = _inputs(2, 2, 45, 16, True, torch.float32)
    out = rsa_attention(q, k, v, block_size=16, density=1.0, attention_mask=mask)
    dense = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask.bool()[:, None, None, :])
    real = mask.bool()[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], dense[real], atol=2e-5, rtol=2e-5)


@needs_kernel
def test_non_contiguous_inputs():
    base = torch.randn(2, 40, 3, 16)            # (B, S, H, D) as Hugging Face projects it
    q = base.transpose(1, 2)
    out = rsa_attention(q, q, q, block_size=16, density=0.5)
    ref = rsa_attention_reference(q.contiguous(), q.contiguous(), q.contiguous(), block_size=16,
                                  density=0.5)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)


@needs_kernel
def test_kernel_rejects_bad_layout():
    q = torch.randn(1, 2, 32, 8)
    bad = torch.full((2, 2, 1), 5, dtype=torch.int32)
    ensure_registered()
    with pytest.raises(RuntimeError, match="past the end"):
        torch.ops.adapterkit.rsa_fwd(q, q, q, bad, None, 16, False, 1.0)


# ---------------------------------------------------------------- opcheck, gradcheck, compile

OPCHECK_CASES = [
    (2, 2, 37, 16, 16, 0.5, False, True, torch.float32),
    (1, 2, 45, 8, 16, 0.4, True, True, torch.float64),
    (1, 1, 33, 16, 16, 0.5, True, False, torch.bfloat16),
]


@needs_kernel
@pytest.mark.parametrize("case", OPCHECK_CASES)
def test_opcheck(case):
    B, H, S, D, bs, density, causal, padded, dtype = case
    q, k, v, mask = _inputs(B, H, S, D, padded, dtype)
    layout = rsa_layout(S, H, block_size=bs, density=density, causal=causal)
    key_mask = None if mask is None else mask.bool()
    ensure_registered()
    torch.library.opcheck(torch.ops.adapterkit.rsa_fwd.default,
                          (q, k, v, layout, key_mask, bs, causal, D ** -0.5))
    out, lse = torch.ops.adapterkit.rsa_fwd(q, k, v, layout, key_mask, bs, causal, D ** -0.5)
    torch.library.opcheck(torch.ops.adapterkit.rsa_bwd.default,
                          (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(),
                           lse, layout, key_mask, bs, causal, D ** -0.5))


@needs_kernel
@pytest.mark.parametrize("causal,padded", [(False, True), (True, True), (True, False)])
def test_gradcheck(causal, padded):
    q, k, v, mask = _inputs(2, 2, 21, 8, padded, torch.float64)
    fn = lambda q, k, v: rsa_attention(q, k, v, block_size=8, density=0.5, seed=1,  # noqa: E731
                                       attention_mask=mask, causal=causal)
    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-7)


@needs_kernel
def test_torch_compile_traces_the_op():
    q, k, v, mask = _inputs(2, 2, 37, 16, True, torch.float32)
    layout = rsa_layout(37, 2, block_size=16, density=0.5)
    key_mask = mask.bool()
    ensure_registered()

    def f(q, k, v):
        out, _ = torch.ops.adapterkit.rsa_fwd(q, k, v, layout, key_mask, 16, False, 0.25)
        return (out * 2).sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), f(q, k, v))
    got = torch.autograd.grad(compiled(q, k, v), (q, k, v))
    want = torch.autograd.grad(f(q, k, v), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
