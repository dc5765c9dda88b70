"""adapterkit_rsa as a Hugging Face attention implementation: masks, loading, generation, adapters."""
from __future__ import annotations

import pytest
import torch
import transformers as T

import adapterkit as ak
from adapterkit.ops import hf as rsa_hf
from adapterkit.ops.hf import RSAConfig, config_of, configure_rsa, use_rsa
from adapterkit.ops.reference import rsa_attention_reference

SEQ = 100


@pytest.fixture(autouse=True)
def _default_settings():
    before = config_of()
    yield
    rsa_hf._default_config = before


def _bert() -> T.BertModel:
    config = T.BertConfig(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=128, max_position_embeddings=256,
                          attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0)
    torch.manual_seed(0)
    return T.BertModel(config, add_pooling_layer=False).eval()


def _llama() -> T.LlamaForCausalLM:
    config = T.LlamaConfig(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512)
    torch.manual_seed(0)
    return T.LlamaForCausalLM(config).eval()


def _batch(left_pad: bool):
    ids = torch.randint(3, 99, (2, SEQ), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, SEQ, dtype=torch.long)
    if left_pad:
        mask[1, :37] = 0
    else:
        mask[1, 63:] = 0
    return ids, mask


def _out(model, ids, mask):
    out = model(input_ids=ids, attention_mask=mask)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


BUILDERS = {"bert": (_bert, False), "llama": (_llama, True)}


def test_register_adds_attention_and_mask_functions():
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    assert configure_rsa(density=0.5) == "adapterkit_rsa"
    assert "adapterkit_rsa" in ALL_ATTENTION_FUNCTIONS.valid_keys()
    assert "adapterkit_rsa" in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping
    assert config_of().density == 0.5


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_full_density_equals_sdpa_with_padding(family):
    build, left_pad = BUILDERS[family]
    model = build()
    ids, mask = _batch(left_pad)
    want = _out(model, ids, mask)
    use_rsa(model, density=1.0, block_size=32)
    assert model.config._attn_implementation == "adapterkit_rsa"
    got = _out(model, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_sparse_model_matches_reference_and_differs_from_dense(family, monkeypatch):
    build, left_pad = BUILDERS[family]
    model = build()
    ids, mask = _batch(left_pad)
    dense = _out(model, ids, mask)
    use_rsa(model, density=0.25, block_size=16, seed=7)
    got = _out(model, ids, mask)
    monkeypatch.setattr(rsa_hf, "rsa_attention", rsa_attention_reference)
    want = _out(model, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=2e-5, rtol=2e-5)
    assert (got[real] - dense[real]).abs().max() > 1e-3   # sparsity is really applied


def test_padding_reaches_the_kernel():
    model = use_rsa(_bert(), density=0.5, block_size=16)
    ids, mask = _batch(left_pad=False)
    out = _out(model, ids, mask)
    other = ids.clone()
    other[~mask.bool()] = 5          # different tokens under the padding
    torch.testing.assert_close(_out(model, other, mask)[mask.bool()], out[mask.bool()])


def test_causal_mask_reaches_the_kernel():
    model = use_rsa(_llama(), density=0.5, block_size=16)
    ids, mask = _batch(left_pad=True)
    out = _out(model, ids, mask)
    later = ids.clone()
    later[:, 70:] = 7                # change only the future of positions < 70
    torch.testing.assert_close(_out(model, later, mask)[:, :70], out[:, :70])


def test_settings_saved_and_from_pretrained(tmp_path):
    model = use_rsa(_bert(), density=0.25, block_size=16, seed=3)
    ids, mask = _batch(left_pad=False)
    out = _out(model, ids, mask)
    model.save_pretrained(tmp_path)
    loaded = T.BertModel.from_pretrained(tmp_path, attn_implementation="adapterkit_rsa").eval()
    assert config_of(loaded) == RSAConfig(density=0.25, block_size=16, seed=3)
    torch.testing.assert_close(_out(loaded, ids, mask), out)
    loaded.set_attn_implementation("sdpa")
    assert (_out(loaded, ids, mask) - out)[mask.bool()].abs().max() > 1e-3
    loaded.set_attn_implementation("adapterkit_rsa")
    torch.testing.assert_close(_out(loaded, ids, mask), out)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_whole_model_compiles_without_graph_breaks(family):
    build, left_pad = BUILDERS[family]
    model = use_rsa(build(), density=0.5, block_size=16)
    ids, mask = _batch(left_pad)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(_out(compiled, ids, mask), _out(model, ids, mask))


def test_layers_use_different_layouts():
    cfg = RSAConfig(seed=0)
    assert len({cfg.layer_seed(i) for i in range(12)}) == 12
    assert RSAConfig(seed=0, per_layer_layout=False).layer_seed(5) == 0
    with pytest.raises(ValueError, match="density"):
        RSAConfig(density=1.5)


def test_generation_with_cache_sees_training_layout():
    model = use_rsa(_llama(), density=0.5, block_size=8, seed=1)
    ids, mask = _batch(left_pad=True)
    prompt, prompt_mask = ids[:, :45], mask[:, :45]
    cached = model.generate(input_ids=prompt, attention_mask=prompt_mask, max_new_tokens=6,
                            do_sample=False, pad_token_id=0)
    uncached = model.generate(input_ids=prompt, attention_mask=prompt_mask, max_new_tokens=6,
                              do_sample=False, pad_token_id=0, use_cache=False)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_adapters_train_under_rsa(family):
    build, left_pad = BUILDERS[family]
    model = build()
    ak.add_adapter(model, "task", ak.BottleneckConfig(bottleneck_dim=8))
    ak.train_adapter(model, "task", train_head=False)
    with torch.no_grad():        # move the adapters off their identity initialisation
        for p in ak.adapter_parameters(model, "task").values():
            p.add_(0.05 * torch.randn_like(p))
    ids, mask = _batch(left_pad)
    model.eval()
    want = _out(model, ids, mask)
    use_rsa(model, density=1.0, block_size=32)
    got = _out(model, ids, mask)
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=2e-5, rtol=2e-5)
    use_rsa(model, density=0.25, block_size=16)
    model.train()
    _out(model, ids, mask)[mask.bool()].pow(2).mean().backward()
    adapter = ak.adapter_parameters(model, "task")
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.values())
    frozen = [p for n, p in model.named_parameters() if p.grad is not None and not p.requires_grad]
    assert not frozen
