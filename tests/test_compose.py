"""Combining adapters: fusion, output averaging, weight merging, split and AdapterDrop, on
per-layer and 3-shared adapters (tiny BERT from a config; adapters given random weights so
that every adapter changes the function)."""
import pytest
import torch

import adapterkit as ak
from adapterkit.compose import (
    FusionConfig,
    add_fusion,
    count_fusion_parameters,
    fusion_parameters,
    fusion_weights,
    load_fusion,
    merge_adapters,
    save_fusion,
    set_adapter_drop,
    train_fusion,
)
from adapterkit.compose.fusion_layer import layer_parameters
from adapterkit.compose.merge import merge_tensors
from tests.tiny_models import build

SHARINGS = [1, 3]


def _model_with(*adapters, seed=0):
    """Tiny BERT with adapters given as (name, config) and random adapter weights."""
    model, inputs = build("bert")
    for i, (name, config) in enumerate(adapters):
        ak.add_adapter(model, name, config, activate=False)
        g = torch.Generator().manual_seed(seed * 100 + i)
        with torch.no_grad():
            for p in ak.adapter_parameters(model, name).values():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model, inputs


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _hidden(model, inputs):
    with torch.no_grad():
        return model.base_model(**inputs).last_hidden_state


# --- fusion ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sharing", SHARINGS)
def test_fusion_of_one_adapter_with_identity_value_is_that_adapter(sharing):
    model, inputs = _model_with(("a", ak.BottleneckConfig(bottleneck_dim=8, sharing=sharing)))
    ak.set_active(model, ["a"])
    expected = _hidden(model, inputs)
    add_fusion(model, "f", ["a"], FusionConfig(sharing=sharing, temperature=2.0))
    torch.testing.assert_close(_hidden(model, inputs), expected, rtol=0, atol=1e-6)
    ak.set_active(model, [])
    assert not torch.allclose(_hidden(model, inputs), expected)  # the adapter does change the function


@pytest.mark.parametrize("sharing", SHARINGS)
def test_fusion_gradients_reach_only_fusion_layers_and_head(sharing):
    cfg = ak.BottleneckConfig(bottleneck_dim=8, sharing=sharing)
    model, inputs = _model_with(("a", cfg), ("b", cfg), ("c", cfg))
    add_fusion(model, "f", ["a", "b", "c"])
    train_fusion(model, "f")
    model.train()
    model(**inputs, labels=torch.tensor([0, 1])).loss.backward()
    allowed = set(fusion_parameters(model, "f")) | set(ak.head_parameters(model))
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and with_grad <= allowed
    assert any(n.startswith("adapterkit.fusions.f.") for n in with_grad)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == allowed


def test_fusion_over_different_plans_sizes_and_placements_and_its_weights():
    model, inputs = _model_with(("a", ak.BottleneckConfig(bottleneck_dim=8, sharing=3)),
                                ("b", ak.BottleneckConfig(bottleneck_dim=4, sharing="none")),
                                ("c", ak.BottleneckConfig(bottleneck_dim=6, placement="pfeiffer", top_n=2)))
    add_fusion(model, "f", ["a", "b", "c"])
    out = _hidden(model, inputs)
    assert torch.isfinite(out).all()
    weights = fusion_weights(model, "f", inputs)
    ffn3 = next(p for p in weights if p.endswith("3.output.dense"))
    assert weights[ffn3].shape == (2, 7, 3)  # c adapts layer 3's ffn site: three adapters there
    attn0 = next(p for p in weights if p.endswith("0.attention.output.dense"))
    assert weights[attn0].shape == (2, 7, 2)
    torch.testing.assert_close(weights[ffn3].sum(-1), torch.ones(2, 7))


@pytest.mark.parametrize("sharing, layers", [(1, 4), (3, 2), ("all", 1)])
def test_fusion_sharing_plan_sets_the_parameter_count(sharing, layers):
    cfg = ak.BottleneckConfig(bottleneck_dim=8)
    model, _ = _model_with(("a", cfg), ("b", cfg))
    add_fusion(model, "f", ["a", "b"], FusionConfig(sharing=sharing))
    assert count_fusion_parameters(model, "f") == layers * layer_parameters(32)


def test_fusion_errors_name_the_problem():
    model, _ = _model_with(("a", ak.BottleneckConfig(bottleneck_dim=8)))
    with pytest.raises(ak.AdapterkitError, match="no adapter named 'zz'"):
        add_fusion(model, "f", ["a", "zz"])
    with pytest.raises(ak.AdapterkitError, match="temperature must be > 0"):
        FusionConfig(temperature=0)
    with pytest.raises(ak.AdapterkitError, match="no fusion over"):
        ak.set_active(model, ["a"], composition="fusion")


@pytest.mark.parametrize("sharing", SHARINGS)
@pytest.mark.parametrize("embed", [True, False])
def test_fusion_save_load_round_trip(tmp_path, sharing, embed):
    cfg = ak.BottleneckConfig(bottleneck_dim=8, sharing=sharing)
    model, inputs = _model_with(("a", cfg), ("b", ak.BottleneckConfig(bottleneck_dim=4, sharing="all")))
    add_fusion(model, "f", ["a", "b"], FusionConfig(sharing=sharing))
    with torch.no_grad():
        for p in fusion_parameters(model, "f").values():
            p.add_(torch.randn_like(p) * 0.1)
        for p in ak.head_parameters(model).values():
            p.add_(1.0)
    references = {}
    if not embed:
        for name in ("a", "b"):
            references[name] = str(ak.save_adapter(model, name, tmp_path / "refs" / name, include_head=False))
    save_fusion(model, "f", tmp_path / "fusion", references=references)
    assert (tmp_path / "fusion" / "adapters").exists() == embed
    fresh, _ = build("bert")  # the same backbone; the head comes from the saved fusion
    assert load_fusion(fresh, tmp_path / "fusion") == "f"
    assert torch.equal(_logits(fresh, inputs), _logits(model, inputs))


def test_failed_fusion_load_leaves_the_model_as_it_was(tmp_path):
    cfg = ak.BottleneckConfig(bottleneck_dim=8)
    model, _ = _model_with(("a", cfg), ("b", cfg))
    add_fusion(model, "f", ["a", "b"])
    save_fusion(model, "f", tmp_path / "fusion")
    (tmp_path / "fusion" / "adapterkit_fusion_weights.safetensors").write_bytes(b"garbage")
    fresh, _ = build("bert")
    ak.add_adapter(fresh, "other")
    with pytest.raises(ak.AdapterkitError):
        load_fusion(fresh, tmp_path / "fusion")
    assert ak.list_adapters(fresh) == ["other"] and not fresh.adapterkit.fusions


# --- output averaging and weight merging --------------------------------------------------------

@pytest.mark.parametrize("sharing", SHARINGS)
def test_average_weights_one_zero_is_the_first_adapter(sharing):
    cfg = ak.BottleneckConfig(bottleneck_dim=8, sharing=sharing)
    model, inputs = _model_with(("a", cfg), ("b", ak.BottleneckConfig(bottleneck_dim=4, sharing="none")))
    ak.set_active(model, ["a"])
    first = _hidden(model, inputs)
    ak.set_active(model, ["a", "b"], composition="average", weights=[1.0, 0.0])
    torch.testing.assert_close(_hidden(model, inputs), first, rtol=0, atol=1e-6)
    ak.set_active(model, ["a", "b"], composition="average")
    assert not torch.allclose(_hidden(model, inputs), first)
    with pytest.raises(ak.AdapterkitError, match="2 weights for 1 adapters|1 weights for 2"):
        ak.set_active(model, ["a", "b"], composition="average", weights=[1.0])


def test_average_of_one_site_is_the_weighted_mean_of_outputs():
    cfg = ak.BottleneckConfig(bottleneck_dim=8, sharing="all")
    model, _ = _model_with(("a", cfg), ("b", cfg))
    ak.set_active(model, ["a", "b"], composition="average", weights=[0.25, 0.75])
    bank = model.adapterkit
    path = next(iter(bank._chains))
    h = torch.randn(2, 5, 32)
    a, b = bank._chains[path]
    torch.testing.assert_close(bank.composer(path, h, [a, b]), 0.25 * a(h) + 0.75 * b(h))


@pytest.mark.parametrize("sharing", SHARINGS)
@pytest.mark.parametrize("method, options", [("linear", {}), ("ties", {"density": 1.0}), ("dare", {"drop": 0.0})])
def test_merging_two_copies_gives_the_adapter_back(sharing, method, options):
    cfg = ak.BottleneckConfig(bottleneck_dim=8, sharing=sharing)
    model, inputs = _model_with(("a", cfg))
    ak.add_adapter(model, "b", cfg, activate=False)
    model.adapterkit.adapters["b"].load_state_dict(model.adapterkit.adapters["a"].state_dict())
    merge_adapters(model, ["a", "b"], "m", method=method, **options)
    for key, value in model.adapterkit.adapters["a"].state_dict().items():
        torch.testing.assert_close(model.adapterkit.adapters["m"].state_dict()[key], value)
    ak.set_active(model, ["a"])
    expected = _hidden(model, inputs)
    ak.set_active(model, ["m"])
    torch.testing.assert_close(_hidden(model, inputs), expected)


def test_merge_methods_on_numbers():
    x, y = torch.tensor([1.0, -2.0, 0.5, 3.0]), torch.tensor([-1.0, -1.0, 0.25, 1.0])
    torch.testing.assert_close(merge_tensors([x, y], [1.0, -1.0]), torch.tensor([2.0, -1.0, 0.25, 2.0]))
    # ties: keep the top half by magnitude of each, elect signs, mean of the agreeing entries
    # x keeps -2, 3; y keeps -1 (index 0) and one of the -1/1 ties -> k-th value picks both |1|
    merged = merge_tensors([x, y], [1.0, 1.0], "ties", density=0.5)
    assert merged[1] == -1.5 and merged[3] == 2.0 and merged[2] == 0.0
    # dare: dropped entries are zero, kept ones rescaled by 1/(1-p); the mean is unbiased
    g = torch.Generator().manual_seed(0)
    big = torch.ones(20000)
    dare = merge_tensors([big], [1.0], "dare", drop=0.5, generator=g)
    assert set(dare.unique().tolist()) == {0.0, 2.0} and abs(dare.mean().item() - 1.0) < 0.03


def test_merging_different_plans_says_what_differs_and_what_to_do():
    model, _ = _model_with(("a", ak.BottleneckConfig(bottleneck_dim=8, sharing=3)),
                           ("b", ak.BottleneckConfig(bottleneck_dim=8, sharing=1)))
    with pytest.raises(ak.AdapterkitError, match=r"sharing 3 vs 1.*retrain 'b' with 'a''s settings.*average"):
        merge_adapters(model, ["a", "b"], "m")
    assert "m" not in ak.list_adapters(model)


# --- split ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sharing", SHARINGS)
def test_split_sends_each_span_to_its_adapter(sharing):
    cfg = ak.BottleneckConfig(bottleneck_dim=8, sharing=sharing)
    model, inputs = _model_with(("a", cfg), ("b", cfg))
    outs = {}
    for name in ("a", "b"):
        ak.set_active(model, [name])
        outs[name] = _hidden(model, inputs)
    ak.set_active(model, ["a", "b"], composition="split", splits=[7])  # every token in span 0
    torch.testing.assert_close(_hidden(model, inputs), outs["a"])
    ak.set_active(model, ["a", "b"], composition="split", splits=[0])
    torch.testing.assert_close(_hidden(model, inputs), outs["b"])
    segments = torch.tensor([[0, 0, 0, 1, 1, 1, 1]] * 2)
    ak.set_active(model, ["a", "b"], composition="split", segments=True)
    torch.testing.assert_close(_hidden(model, {**inputs, "token_type_ids": torch.zeros_like(segments)}), outs["a"])
    mixed = _hidden(model, {**inputs, "token_type_ids": segments})
    ak.set_active(model, ["a", "b"], composition="split", splits=[3])
    torch.testing.assert_close(mixed, _hidden(model, {**inputs, "token_type_ids": segments}))
    assert not torch.allclose(mixed, outs["a"]) and not torch.allclose(mixed, outs["b"])


def test_split_by_segments_without_token_types_is_a_clear_error():
    cfg = ak.BottleneckConfig(bottleneck_dim=8)
    model, inputs = _model_with(("a", cfg), ("b", cfg))
    ak.set_active(model, ["a", "b"], composition="split", segments=True)
    with pytest.raises(ak.AdapterkitError, match="needs token_type_ids"):
        model(**inputs)
    assert model.bert._forward_pre_hooks
    ak.set_active(model, ["a"])  # the capture hook goes away with the composition
    assert not model.bert._forward_pre_hooks


# --- AdapterDrop ----------------------------------------------------------------------------

@pytest.mark.parametrize("sharing", SHARINGS)
def test_adapter_drop_zero_is_the_plain_model_and_k_skips_the_lowest_layers(sharing):
    model, inputs = _model_with(("a", ak.BottleneckConfig(bottleneck_dim=8, sharing=sharing)))
    ak.set_active(model, ["a"])
    plain = _logits(model, inputs)
    ak.set_active(model, [])
    bare = _logits(model, inputs)
    ak.set_active(model, ["a"])
    set_adapter_drop(model, 0)
    assert torch.equal(_logits(model, inputs), plain)
    for k in (2, 3):  # 3: only the top layer's adapter runs
        set_adapter_drop(model, k)
        assert not torch.equal(_logits(model, inputs), plain) and not torch.equal(_logits(model, inputs), bare)


@pytest.mark.parametrize("k, robust_max", [(4, None), (99, None), (-1, None), (0, 4), (1.5, None)])
def test_adapter_drop_refuses_a_k_outside_the_layers_and_changes_nothing(k, robust_max):
    from adapterkit.compose import adapter_drop

    model, inputs = _model_with(("a", ak.BottleneckConfig(bottleneck_dim=8)))  # 4 layers
    ak.set_active(model, ["a"])
    set_adapter_drop(model, 1)
    before = _logits(model, inputs)
    with pytest.raises(ak.AdapterkitError, match="the model has 4 layers; use 0..3" if k != -1 and k != 1.5 else "k must be"):
        set_adapter_drop(model, k, robust_max)
    assert adapter_drop(model) == 1 and not model._forward_pre_hooks
    assert torch.equal(_logits(model, inputs), before)


def test_adapter_drop_k_equals_leaving_those_layers_out():
    model, inputs = _model_with(("a", ak.BottleneckConfig(bottleneck_dim=8)))
    ak.set_active(model, ["a"])
    set_adapter_drop(model, 2)
    dropped = _logits(model, inputs)
    other, _ = build("bert")
    ak.add_adapter(other, "a", ak.BottleneckConfig(bottleneck_dim=8, leave_out=[0, 1]))
    renamed = {"G2": "G0", "G3": "G1"}  # groups are numbered over the adapted layers
    state = {renamed[k.split(".")[0]] + k[2:]: v for k, v in model.adapterkit.adapters["a"].state_dict().items()
             if k.split(".")[0] in renamed}
    other.adapterkit.adapters["a"].load_state_dict(state)
    assert torch.equal(_logits(other, inputs), dropped)


@pytest.mark.parametrize("sharing", SHARINGS)
def test_adapter_drop_backward_stops_at_the_lowest_adapted_layer(sharing):
    model, inputs = _model_with(("a", ak.BottleneckConfig(bottleneck_dim=8, sharing=sharing)))
    ak.train_adapter(model, "a")
    set_adapter_drop(model, 2)
    layers = model.bert.encoder.layer
    needs_grad = {}
    hooks = [layer.register_forward_hook(lambda m, a, out, i=i: needs_grad.__setitem__(i, out[0].requires_grad))
             for i, layer in enumerate(layers)]
    model.train()
    model(**inputs, labels=torch.tensor([0, 1])).loss.backward()
    assert needs_grad == {0: False, 1: False, 2: True, 3: True}  # no graph below layer 2
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    if sharing == 1:
        assert not any(n.split(".")[3] in ("G0", "G1") for n in grads if n.startswith("adapterkit.adapters.a."))
    for h in hooks:
        h.remove()


def test_robust_adapter_drop_draws_k_per_training_forward_and_keeps_k_in_eval():
    from adapterkit.compose import adapter_drop

    model, inputs = _model_with(("a", ak.BottleneckConfig(bottleneck_dim=8)))
    ak.set_active(model, ["a"])
    set_adapter_drop(model, 1, robust_max=3)
    model.train()
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        model(**inputs)
        seen.add(adapter_drop(model))
    assert seen == {0, 1, 2, 3}
    model.eval()
    model(**inputs)
    assert adapter_drop(model) == 1
    set_adapter_drop(model, 0)
    assert not model._forward_pre_hooks


@pytest.mark.parametrize("sharing, count", [(1, "2,658,816"), (3, "886,272"), ("all", "443,136")])
def test_readme_fusion_counts_on_minilm(sharing, count):
    from pathlib import Path

    from adapterkit.backbone import load_config, skeleton_from_config

    assert f" {count}" in (Path(__file__).resolve().parents[1] / "README.md").read_text()
    skeleton = skeleton_from_config(load_config(None))  # all-MiniLM-L6-v2's structure, no weights
    for name in ("a", "b"):
        ak.add_adapter(skeleton, name, ak.BottleneckConfig(bottleneck_dim=8), activate=False)
    add_fusion(skeleton, "f", ["a", "b"], FusionConfig(sharing=sharing), activate=False)
    assert count_fusion_parameters(skeleton, "f") == int(count.replace(",", ""))
