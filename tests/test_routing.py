"""Per-row adapter routing: every row of a mixed batch equals that row run alone with its adapter
active (1e-5, fp32), across sharing plans, bottleneck sizes, placements, layer sets, stacks,
bare rows and per-row heads with different label counts and task types."""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch
import transformers as T

import adapterkit as ak
from adapterkit.errors import AdapterkitError
from adapterkit.model import get_bank, head_parameters
from adapterkit.routing import build_head, forward_rows, head_size, route

from tiny_models import FAMILIES

TOL = 1e-5
# name -> (config, labels of its head; 1 = regression)
ADAPTERS = {
    "a": (dict(bottleneck_dim=8, sharing=3), 2),
    "b": (dict(bottleneck_dim=16, sharing=1, placement="pfeiffer"), 3),
    "c": (dict(bottleneck_dim=4, sharing="none", layers=[2, 3], activation="relu", scaling=2.0), 1),
    "d": (dict(bottleneck_dim=6, sharing="all", share_sites=False, activation="tanh"), 2),
}
ROWS = ["a", None, "c", ("a", "b"), "b", "d", "a", ("d", "c")]


def tiny(family: str, num_labels: int = 2) -> torch.nn.Module:
    config_name, kwargs, model_name = FAMILIES[family]
    config = getattr(T, config_name)(vocab_size=99, pad_token_id=0, num_labels=num_labels, **kwargs)
    torch.manual_seed(0)  # same backbone every time; heads differ by their own seed below
    return getattr(T, model_name)(config).eval()


def randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@lru_cache(maxsize=None)
def build_models(family: str):
    """One routed model holding every adapter, and per adapter a reference model (its own head);
    built once per family (tests only switch active adapters, which routing ignores)."""
    routed = tiny(family)
    refs, heads = {}, {}
    for i, (name, (kwargs, labels)) in enumerate(ADAPTERS.items()):
        ref = tiny(family, labels)
        ak.add_adapter(ref, name, ak.BottleneckConfig(**kwargs))
        randomize(get_bank(ref).adapters[name], seed=10 + i)
        head = head_parameters(ref)
        for j, p in enumerate(head.values()):
            randomize_tensor(p, seed=100 + 10 * i + j)
        ak.add_adapter(routed, name, ak.BottleneckConfig(**kwargs), activate=False)
        get_bank(routed).adapters[name].load_state_dict(get_bank(ref).adapters[name].state_dict())
        refs[name] = ref
        heads[name] = build_head(routed, {k: v.detach() for k, v in head.items()})
    return routed, refs, heads


def randomize_tensor(p: torch.Tensor, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def batch(n: int, lengths: list[int]) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 99, (n, max(lengths)), generator=g)
    mask = torch.zeros_like(ids)
    for i, length in enumerate(lengths):
        mask[i, :length] = 1
        ids[i, length:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def alone(model, inputs, row: int, names) -> dict:
    """Row `row` by itself, without padding, its stack active."""
    length = int(inputs["attention_mask"][row].sum())
    one = {k: v[row:row + 1, :length] for k, v in inputs.items()}
    stack = [] if names is None else [names] if isinstance(names, str) else list(names)
    ak.set_active(model, stack)
    with torch.no_grad():
        return model(**one)


LENGTHS = [7, 5, 7, 3, 6, 7, 4, 2]


@pytest.mark.parametrize("formulation", ["gather", "group"])
@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_rows_equal_rows_alone_with_their_heads(family, formulation):
    routed, refs, heads = build_models(family)
    inputs = batch(len(ROWS), LENGTHS)
    with torch.no_grad():
        rows = [r for r in ROWS if r is not None]
        keep = [i for i, r in enumerate(ROWS) if r is not None]
        sub = {k: v[keep] for k, v in inputs.items()}
        out = forward_rows(routed, sub, rows, heads, formulation)
    for pos, (row, names) in enumerate(zip(keep, rows)):
        last = names if isinstance(names, str) else names[-1]
        ref = refs[last]
        if not isinstance(names, str):  # a stack: the reference model needs the lower adapters too
            for lower in names[:-1]:
                if lower not in ak.list_adapters(ref):
                    ak.add_adapter(ref, lower, ak.BottleneckConfig(**ADAPTERS[lower][0]), activate=False)
                    get_bank(ref).adapters[lower].load_state_dict(get_bank(routed).adapters[lower].state_dict())
        expected = alone(ref, sub, pos, names).logits[0]
        assert out[pos].shape == (ADAPTERS[last][1],)
        torch.testing.assert_close(out[pos], expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("formulation", ["gather", "group"])
def test_model_head_and_bare_rows(formulation):
    routed, _, _ = build_models("bert")
    inputs = batch(len(ROWS), LENGTHS)
    with torch.no_grad():
        logits = forward_rows(routed, inputs, ROWS, formulation=formulation)
    for row, names in enumerate(ROWS):
        torch.testing.assert_close(logits[row], alone(routed, inputs, row, names).logits[0], atol=TOL, rtol=0)
    # the bare row really is the bare backbone, and adapters change the others
    ak.set_active(routed, [])
    assert not torch.allclose(logits[0], alone(routed, inputs, 0, None).logits[0], atol=1e-3)


def test_route_context_leaves_active_adapters_alone():
    routed, _, _ = build_models("bert")
    ak.set_active(routed, ["a"])
    inputs = batch(2, [7, 7])
    with torch.no_grad():
        before = routed(**inputs).logits
        with route(routed, ["b", "b"]):
            routed(**inputs)
        after = routed(**inputs).logits
    assert torch.equal(before, after) and ak.active_adapters(routed) == ["a"]
    assert get_bank(routed).router is None


def test_heads_report_their_sizes_and_errors_are_clear():
    routed, _, heads = build_models("bert")
    assert [head_size(heads[n]) for n in "abcd"] == [2, 3, 1, 2]
    inputs = batch(2, [7, 7])
    with pytest.raises(AdapterkitError, match="no adapter named 'zzz'"):
        forward_rows(routed, inputs, ["a", "zzz"])
    with pytest.raises(AdapterkitError, match="2 rows but 3 adapter names"):
        forward_rows(routed, inputs, ["a", "a", "b"])
    with pytest.raises(AdapterkitError, match="no head for <bare backbone>"):
        forward_rows(routed, inputs, ["a", None], heads)
    with pytest.raises(AdapterkitError, match="not part of"):
        build_head(routed, {"bert.encoder.layer.0.output.dense.weight": torch.zeros(32, 64)})


def test_backbone_walks_skip_the_bank():
    """Site discovery, hooks and heads walk the backbone only: loading adapter N does not walk N-1 others."""
    from adapterkit.sharing.sites import backbone_modules, backbone_parameters

    routed, _, _ = build_models("bert")
    names = [n for n, _ in backbone_modules(routed)]
    assert names and not any(n.startswith("adapterkit") for n in names)
    assert list(dict(backbone_parameters(routed))) == [n for n, _ in routed.named_parameters() if not n.startswith("adapterkit.")]
