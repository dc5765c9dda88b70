"""Layer-stack slicing (adapterkit.slicing) on every single-stack family, and the pipeline
strategy's stages built from it: embeddings + layer slices + head compose to the model's own
forward (padding and an active adapter included), and gradients reach the same adapter weights."""
from __future__ import annotations

import pytest
import torch

import adapterkit as ak
from adapterkit.errors import AdapterkitError
from adapterkit.slicing import StackSlicer
from tests.tiny_models import FAMILIES, build

SINGLE_STACK = [f for f in FAMILIES if f not in ("t5", "bart", "albert")]
PIPELINE_FAMILIES = ["bert", "roberta", "distilbert", "electra", "deberta_v2", "llama", "gpt2"]


def adapted(family: str):
    model, inputs = build(family)
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=4))
    with torch.no_grad():  # off the identity init, so a skipped or doubled adapter shows
        for p in ak.adapter_parameters(model, "a").values():
            p.normal_(0, 0.2)
    pad = model.config.pad_token_id
    inputs["attention_mask"][1, -3:] = 0  # right padding in the second row
    inputs["input_ids"][1, -3:] = pad
    inputs["input_ids"][1, -4] = 2
    return model, inputs


@pytest.mark.parametrize("family", SINGLE_STACK)
def test_pieces_compose_to_the_models_forward(family):
    model, inputs = adapted(family)
    slicer = StackSlicer(model)
    mask = inputs["attention_mask"]
    with torch.no_grad():
        expected = model(**inputs).logits
        h = slicer.embed(inputs["input_ids"], mask)
        h = slicer.run(h, mask, 0, 1)
        h = slicer.run(h, mask, 1, 1)  # an empty slice is the identity
        h = slicer.run(h, mask, 1, slicer.num_layers)
        got = slicer.head(h, mask)
        last = model.base_model(input_ids=inputs["input_ids"], attention_mask=mask).last_hidden_state
        from_2 = slicer.last_hidden(slicer.run(slicer.embed(inputs["input_ids"], mask), mask, 0, 2), mask, 2)
        from_top = slicer.last_hidden(h, mask, slicer.num_layers)  # only what follows the stack
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(from_2, last, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(from_top, last, rtol=1e-5, atol=1e-5)
    assert len(slicer.layers) == slicer.num_layers == 4


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2", "llama"])
def test_transfer_prefix_cache_gives_the_full_forward_on_other_families(family):
    """The transfer encoder's frozen-prefix cache (layers below the first adapted one run once
    per row) gives the full forward's features and gradients, on encoders and decoders."""
    from adapterkit.transfer.encoder import Encoder, clear_prefix_cache

    model, inputs = build(family)
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=4, top_n=2))
    for p in ak.adapter_parameters(model, "a").values():
        torch.nn.init.normal_(p, std=0.2)
    pad = model.config.pad_token_id
    rows = [{"input_ids": [i for i in ids.tolist()], "labels": 0} for ids in inputs["input_ids"]]
    rows[1]["input_ids"] = rows[1]["input_ids"][:-3]  # a shorter row: padding in the batch
    clear_prefix_cache()
    cached, full = Encoder(model, pad, split=2), Encoder(model, pad)
    expected = full.features(full.collate(rows), ["a"])
    got = cached.features(cached.collate(cached.prepare(rows)), ["a"])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ak.adapter_parameters(model, "a").values())


def test_other_stacks_are_refused_with_one_line():
    for family, words in (("t5", "single layer stack"), ("albert", "reuses its 1 layer")):
        with pytest.raises(AdapterkitError, match=words):
            StackSlicer(build(family)[0])
    with pytest.raises(AdapterkitError, match="out of range"):
        StackSlicer(build("bert")[0]).run(torch.zeros(1, 2, 32), None, 3, 5)


@pytest.mark.parametrize("family", PIPELINE_FAMILIES)
def test_pipeline_stages_chain_to_the_model_with_the_same_gradients(family):
    from adapterkit.dist.strategies.pipeline import build_stages

    model, inputs = adapted(family)
    ak.train_adapter(model, "a")
    labels = torch.tensor([0, 1])
    loss = torch.nn.functional.cross_entropy(model(**inputs).logits, labels)
    loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    stages = build_stages(model, 2)
    assert [(s.start, s.end) for s in stages] == [(0, 2), (2, 4)]
    h, mask = stages[0](inputs["input_ids"], inputs["attention_mask"])
    got = torch.nn.functional.cross_entropy(stages[1](h, mask), labels)
    got.backward()
    torch.testing.assert_close(got, loss)
    for name, grad in expected.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, msg=name)
    owned = [{id(p) for p in s.parameters() if p.requires_grad} for s in stages]
    assert not owned[0] & owned[1] and len(owned[0] | owned[1]) == len(expected)  # each trained tensor in one stage
