"""A crafted adapter folder can only write its own modules and the head: never the backbone."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import adapterkit as ak
from adapterkit.errors import IncompatibleAdapterError
from adapterkit.io import CONFIG_FILE, HEAD_FILE, WEIGHTS_FILE
from tests.tiny_models import build

QUERY = "bert.encoder.layer.0.attention.self.query.weight"
EMBED = "bert.embeddings.word_embeddings.weight"
FAR_NORM = "bert.embeddings.LayerNorm.weight"


def _saved(tmp_path, **config):
    model, _ = build("bert")
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=4, **config))
    return ak.save_adapter(model, "a", tmp_path / "ad")


def _backbone_unchanged(folder, error_part):
    fresh, _ = build("bert")
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(IncompatibleAdapterError, match=error_part):
        ak.load_adapter(fresh, folder)
    after = fresh.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert "a" not in ak.list_adapters(fresh)


@pytest.mark.parametrize("key, shape", [(QUERY, (32, 32)), (EMBED, (99, 32)), ("bert.embeddings.position_ids", (1, 512))])
def test_a_head_file_naming_backbone_tensors_is_refused(tmp_path, key, shape):
    folder = _saved(tmp_path)
    head = load_file(str(folder / HEAD_FILE))
    head[key] = torch.full(shape, 7.0)
    save_file(head, str(folder / HEAD_FILE))
    _backbone_unchanged(folder, "refusing")


def test_a_head_tensor_not_declared_in_the_config_is_refused(tmp_path):
    folder = _saved(tmp_path)
    manifest = json.loads((folder / CONFIG_FILE).read_text())
    manifest["head"] = [k for k in manifest["head"] if k != "classifier.bias"]
    (folder / CONFIG_FILE).write_text(json.dumps(manifest))
    _backbone_unchanged(folder, "declared")


def test_a_head_tensor_of_the_wrong_shape_is_refused(tmp_path):
    folder = _saved(tmp_path)
    head = load_file(str(folder / HEAD_FILE))
    head["classifier.weight"] = torch.zeros(5, 32)
    save_file(head, str(folder / HEAD_FILE))
    _backbone_unchanged(folder, "shape")


@pytest.mark.parametrize("train_norms, key", [(True, EMBED), (True, FAR_NORM), (False, "bert.encoder.layer.0.output.LayerNorm.weight")])
def test_layer_norm_keys_outside_the_adapted_layers_are_refused(tmp_path, train_norms, key):
    folder = _saved(tmp_path, train_layer_norms=train_norms)
    weights = load_file(str(folder / WEIGHTS_FILE))
    weights[f"layer_norms.{key}"] = torch.zeros(99, 32) if key == EMBED else torch.zeros(32)
    save_file(weights, str(folder / WEIGHTS_FILE))
    _backbone_unchanged(folder, "refusing")


def test_an_honest_adapter_with_layer_norms_and_head_still_loads(tmp_path):
    model, inputs = build("bert")
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=4, train_layer_norms=True, init="houlsby"))
    with torch.no_grad():
        model.classifier.weight.add_(1.0)
        model.bert.encoder.layer[1].output.LayerNorm.weight.add_(0.5)
    expected = model(**inputs).logits
    folder = ak.save_adapter(model, "a", tmp_path / "ad")
    fresh, _ = build("bert")
    ak.load_adapter(fresh, folder)
    torch.testing.assert_close(fresh(**inputs).logits, expected)
