"""The multi-task model on every family the issue names (tiny configs): a layer branch, a deeper
layer branch and an adapter branch merged on one trunk give each standalone model's logits
(right padding included), survive save/load bit for bit, and extract back; a version-1 folder
(BERT, written by earlier releases) still loads with the same logits."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import adapterkit as ak
from adapterkit.multitask.io import load_multitask, save_multitask
from adapterkit.multitask.model import MultiTaskModel
from adapterkit.slicing import StackSlicer
from tests.tiny_models import build

FAMILIES = ["bert", "roberta", "distilbert", "electra", "deberta_v2", "llama"]


def _tuned(base, seed: int, branch_layer: int):
    """`base` with its layers from `branch_layer` up and its head changed (a task model)."""
    model, g = copy.deepcopy(base), torch.Generator().manual_seed(seed)
    slicer = StackSlicer(model)
    with torch.no_grad():
        params = [p for layer in slicer.layers[branch_layer:] for p in layer.parameters()]
        params += [p for path in slicer.head_paths() for p in model.get_submodule(path).parameters()]
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_model_matches_standalone_models_and_round_trips(family, tmp_path):
    base, inputs = build(family)
    inputs["attention_mask"][1, -2:] = 0
    inputs["input_ids"][1, -2:] = base.config.pad_token_id
    adapter = copy.deepcopy(base)
    ak.add_adapter(adapter, "x", ak.BottleneckConfig(bottleneck_dim=4, layers=[2, 3]))
    with torch.no_grad():
        for p in ak.adapter_parameters(adapter, "x").values():
            p.normal_(0, 0.1)
    models = {"a": (_tuned(base, 1, 2), 2), "b": (_tuned(base, 2, 3), 3), "c": (adapter, 2)}
    merged = MultiTaskModel.from_backbone(base)
    for name, (model, b) in models.items():
        merged.add_model(name, model, b)
    out = merged(**inputs)
    for name, (model, _) in models.items():
        with torch.no_grad():
            torch.testing.assert_close(out.logits[name], model(**inputs).logits, rtol=1e-5, atol=1e-5)
    assert merged.overhead()["trunk"] == 3
    per_row = merged(**inputs, row_tasks=["a", ["b", "c"]])
    torch.testing.assert_close(per_row.logits["b"], out.logits["b"][1:], rtol=1e-5, atol=1e-5)
    loaded = load_multitask(save_multitask(merged, tmp_path / "m"))
    again = loaded(**inputs)
    assert all(torch.equal(again.logits[t], out.logits[t]) for t in models)
    with torch.no_grad():
        torch.testing.assert_close(loaded.extract("a")(**inputs).logits, out.logits["a"], rtol=1e-5, atol=1e-5)


def test_version_1_folder_loads_with_its_logits():
    # written by adapterkit before the multi-task model took every family (format_version 1)
    model = load_multitask(Path(__file__).parent / "fixtures" / "multitask-v1")
    ids = torch.tensor([[5, 6, 7, 8, 2], [9, 10, 11, 0, 0]])
    logits = model(input_ids=ids, attention_mask=(ids != 0).long()).logits["three"]
    expected = torch.tensor([[-0.15325355529785156, -0.13529029488563538, -0.14747761189937592],
                             [-0.08186529576778412, -0.0650881826877594, -0.07596058398485184]])
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
