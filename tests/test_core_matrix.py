"""The shared behaviours over (architecture x sharing): injection, identity at init, gradients
only where expected, the number of distinct modules the plan promises, save/load round trip."""
import math

import pytest
import torch

import adapterkit as ak
from tests.tiny_models import FAMILIES, build, layers_per_stack

SHARINGS = [1, 3, "all", "none"]


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _expected_modules(family, sharing, n_site_kinds=2):
    total = 0
    for n in layers_per_stack(family):
        total += {"all": 1, "none": n_site_kinds * n}.get(sharing) or math.ceil(n / sharing)
    return total


def _distinct_site_modules(model, name):
    bank = model.adapterkit
    return {id(bank.adapters[name][gid]) for gid in bank.plans[name].group_of().values()}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("sharing", SHARINGS)
def test_identity_at_init_and_modules_per_plan(family, sharing):
    model, inputs = build(family)
    before = _logits(model, inputs)
    plan = ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=8, sharing=sharing))
    assert torch.equal(_logits(model, inputs), before), "zero-init adapter must not change the function"
    expected = _expected_modules(family, sharing)
    assert len(plan.groups) == expected
    assert len(_distinct_site_modules(model, "a")) == expected
    n_sites = sum(layers_per_stack(family)) * 2
    assert len(plan.sites) == n_sites
    d, m = 32, 8
    assert ak.count_parameters(model, "a") == expected * (2 * m * d + d + m)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "t5", "distilbert", "roberta", "bart", "mixtral"])
@pytest.mark.parametrize("sharing", SHARINGS)
def test_gradients_only_on_adapter_and_head(family, sharing):
    model, inputs = build(family)
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=8, sharing=sharing, init="houlsby"))
    ak.train_adapter(model, "a")
    model.train()
    model(**inputs).logits.float().pow(2).mean().backward()
    adapter = {id(p) for p in ak.adapter_parameters(model, "a").values()}
    head = {id(p) for p in ak.head_parameters(model).values()}
    for name, p in model.named_parameters():
        if id(p) in adapter:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        elif id(p) in head:
            assert p.requires_grad, name
        else:
            assert not p.requires_grad and p.grad is None, name


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "t5", "distilbert", "roberta", "bart", "gpt_neox", "albert"])
@pytest.mark.parametrize("sharing", SHARINGS)
def test_save_load_round_trip(tmp_path, family, sharing):
    model, inputs = build(family)
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=8, sharing=sharing))
    torch.manual_seed(3)
    with torch.no_grad():
        for p in ak.adapter_parameters(model, "a").values():
            p.normal_(std=0.1)
        for p in ak.head_parameters(model).values():
            p.normal_(std=0.1)
    expected = _logits(model, inputs)
    ak.save_adapter(model, "a", tmp_path / "a")

    fresh, _ = build(family, seed=0)
    assert ak.load_adapter(fresh, str(tmp_path / "a")) == "a"
    assert torch.equal(_logits(fresh, inputs), expected)
    assert len(_distinct_site_modules(fresh, "a")) == _expected_modules(family, sharing)
