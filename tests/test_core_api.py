"""Public API behaviour: errors, storage of shared modules, composition, functional_call, lean import."""
import copy
import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from torch import nn

import adapterkit as ak
from tests.tiny_models import build


def test_exact_counts_of_the_reference_report():
    from adapterkit.backbone import load_config, skeleton_from_config

    skeleton = skeleton_from_config(load_config("tests/fixtures/bert-base-uncased-config.json"))
    expected = {1: 1_189_632, 3: 396_544, "none": 2_379_264}
    for sharing, count in expected.items():
        ak.add_adapter(skeleton, "a", ak.BottleneckConfig(bottleneck_dim=64, sharing=sharing))
        assert ak.count_parameters(skeleton, "a") == count
        ak.remove_adapter(skeleton, "a")
    ak.add_adapter(skeleton, "a", ak.BottleneckConfig(bottleneck_dim=64, sharing="none", train_layer_norms=True))
    assert ak.count_parameters(skeleton, "a") == 2_416_128


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sharing=0), "sharing must be >= 1"),
        (dict(sharing="some"), "sharing must be a positive integer"),
        (dict(bottleneck_dim=0), "bottleneck_dim must be a positive integer"),
        (dict(bottleneck_dim=-4), "bottleneck_dim must be a positive integer"),
        (dict(reduction_factor=0), "reduction_factor must be > 0"),
        (dict(activation="swishy"), "activation must be one of"),
        (dict(placement="middle"), "placement must be one of"),
        (dict(bottleneck_dim=8, reduction_factor=4), "not both"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ak.AdapterkitError, match=message):
        ak.BottleneckConfig(**kwargs)


def test_model_without_layers_names_class_and_override():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ak.PlacementError, match=r"Sequential.*targets="):
        ak.add_adapter(model, "a")
    assert not hasattr(model, "adapterkit") or not ak.list_adapters(model)


def test_targets_override_places_custom_model():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.mix, self.proj = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            return x + self.proj(torch.relu(self.mix(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(Block() for _ in range(4))

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    net = Net()
    config = ak.BottleneckConfig(bottleneck_dim=2, sharing=2, placement="pfeiffer",
                                 targets={"layers": r"blocks\.\d+", "ffn": r"^proj$"})
    plan = ak.add_adapter(net, "a", config)
    assert [s.path for s in plan.sites] == [f"blocks.{i}.proj" for i in range(4)]
    assert len(plan.groups) == 2


def test_shared_module_is_one_object_and_stored_once(tmp_path):
    model, _ = build("bert")
    plan = ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=8, sharing=2))
    bank = model.adapterkit
    g0 = bank.adapters["a"]["G0"]
    site_modules = [bank.adapters["a"][gid] for gid in plan.group_of().values()]
    assert sum(m is g0 for m in site_modules) == 4  # layers 0-1, attn + ffn
    ak.save_adapter(model, "a", tmp_path)
    with safe_open(str(tmp_path / "adapterkit_weights.safetensors"), "pt") as f:
        keys = sorted(f.keys())
    assert keys == sorted(f"{g}.{p}.{t}" for g in ("G0", "G1") for p in ("down", "up") for t in ("weight", "bias"))
    manifest = json.loads((tmp_path / "adapterkit_config.json").read_text())
    assert len(manifest["groups"]["G0"]) == 4
    assert {p.name for p in tmp_path.iterdir()} == {"adapterkit_config.json", "adapterkit_weights.safetensors", "adapterkit_head.safetensors"}


def test_incompatible_backbone_is_refused_with_what_differs(tmp_path):
    model, _ = build("bert")
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=8))
    ak.save_adapter(model, "a", tmp_path)
    from transformers import BertConfig, BertForSequenceClassification

    wider = BertForSequenceClassification(BertConfig(vocab_size=99, hidden_size=48, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ak.IncompatibleAdapterError, match=r"hidden size: adapter 32 vs model 48"):
        ak.load_adapter(wider, str(tmp_path))
    shallower = BertForSequenceClassification(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ak.IncompatibleAdapterError, match=r"layers per stack: adapter \[4\] vs model \[2\]"):
        ak.load_adapter(shallower, str(tmp_path))
    other_family, _ = build("roberta")
    with pytest.raises(ak.IncompatibleAdapterError, match=r"sites missing in the model: bert\.encoder"):
        ak.load_adapter(other_family, str(tmp_path))
    assert ak.list_adapters(wider) == [] and ak.list_adapters(other_family) == []


def test_head_with_other_label_count_is_refused(tmp_path):
    model, _ = build("bert")
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=8))
    ak.save_adapter(model, "a", tmp_path)
    from transformers import BertForSequenceClassification

    config = copy.deepcopy(model.config)
    config.num_labels = 3  # setting the property rebuilds id2label on transformers 4.x and 5.x
    three = BertForSequenceClassification(config)
    with pytest.raises(ak.IncompatibleAdapterError, match="different number of labels"):
        ak.load_adapter(three, str(tmp_path))


def test_missing_and_malformed_folders(tmp_path):
    model, _ = build("bert")
    with pytest.raises(ak.AdapterkitError, match="not an adapterkit adapter"):
        ak.load_adapter(model, str(tmp_path))
    (tmp_path / "adapterkit_config.json").write_text("{not json")
    with pytest.raises(ak.AdapterkitError, match="not valid JSON"):
        ak.load_adapter(model, str(tmp_path))


def test_corrupt_weights_leave_model_unchanged(tmp_path):
    model, inputs = build("bert")
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=8))
    ak.save_adapter(model, "a", tmp_path)
    (tmp_path / "adapterkit_weights.safetensors").write_bytes(b"garbage")
    fresh, _ = build("bert")
    with pytest.raises(ak.AdapterkitError, match="not a safetensors file"):
        ak.load_adapter(fresh, str(tmp_path))
    assert ak.list_adapters(fresh) == []


def test_duplicate_and_unknown_names():
    model, _ = build("bert")
    ak.add_adapter(model, "a")
    with pytest.raises(ak.AdapterkitError, match="already has an adapter named 'a'"):
        ak.add_adapter(model, "a")
    with pytest.raises(ak.AdapterkitError, match="no adapter named 'b'"):
        ak.set_active(model, ["a", "b"])


def test_stack_and_parallel_composition():
    model, _ = build("bert")
    for name in ("shared", "books"):
        ak.add_adapter(model, name, ak.BottleneckConfig(bottleneck_dim=4, init="houlsby"))
    bank = model.adapterkit
    path = bank.plans["shared"].sites[0].path
    a, b = bank.adapters["shared"]["G0"], bank.adapters["books"]["G0"]
    h = torch.randn(2, 3, 32)
    ak.set_active(model, ["shared", "books"])
    torch.testing.assert_close(bank.adapt_site(path, h), b(a(h)))
    ak.set_active(model, ["books", "shared"])
    torch.testing.assert_close(bank.adapt_site(path, h), a(b(h)))
    ak.set_active(model, ["shared", "books"], composition="parallel")
    torch.testing.assert_close(bank.adapt_site(path, h), a(h) + b(h) - h)
    ak.set_active(model, [])
    assert bank.adapt_site(path, h) is h


def test_remove_restores_the_bare_model():
    model, inputs = build("bert")
    with torch.no_grad():
        before = model(**inputs).logits
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=4, init="houlsby"))
    ak.train_adapter(model, "a")
    ak.remove_adapter(model, "a")
    assert not hasattr(model, "adapterkit")
    assert "save_pretrained" not in model.__dict__
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, before)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_module_apply_and_hookless_copies_work_with_adapters():
    from adapterkit.model import detached_hooks

    model, inputs = build("bert")
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=4))
    with torch.no_grad():
        for p in ak.adapter_parameters(model, "a").values():
            p.normal_()  # far from the identity, so whether the adapter ran shows in the logits
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))  # nn.Module.apply, not shadowed by the bank
    assert "AdapterBank" in seen and "BottleneckAdapter" in seen
    marker = []
    layer = model.bert.encoder.layer[0]
    other = layer.output.register_forward_hook(lambda *a: marker.append(1))  # a user's own hook
    with detached_hooks(layer):
        twin = copy.deepcopy(layer)
    h = torch.randn(1, 3, 32)
    with torch.no_grad():
        twin(h), layer(h)
    assert len(marker) == 2  # the user's hook is kept (in the copy too)
    with torch.no_grad():
        adapted = model(**inputs).logits
        ak.set_active(model, [])
        bare = model(**inputs).logits
    assert not torch.allclose(adapted, bare)  # the original's adapter hooks came back
    other.remove()


def test_train_adapter_slims_saves_reversibly(tmp_path):
    from safetensors.torch import load_file

    model, _ = build("bert")
    before = set(model._keys_to_ignore_on_save)
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=4))
    ak.train_adapter(model, "a")
    assert "save_pretrained" not in model.__dict__
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    model.save_pretrained(tmp_path / "slim")
    assert set(load_file(tmp_path / "slim" / "model.safetensors")) == trainable
    with ak.model.full_saves(model):
        model.save_pretrained(tmp_path / "full")
    assert set(load_file(tmp_path / "full" / "model.safetensors")) > trainable
    ak.remove_adapter(model, "a")
    assert set(model._keys_to_ignore_on_save) == before


def test_functional_call_over_adapter_weights():
    model, inputs = build("bert")
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=4))
    params = {n: p.detach().clone().requires_grad_(True) for n, p in ak.adapter_parameters(model, "a").items()}
    base = torch.func.functional_call(model, params, args=(), kwargs=inputs).logits
    with torch.no_grad():
        torch.testing.assert_close(base, model(**inputs).logits)
    torch.manual_seed(0)  # random, not constant: a constant shift would vanish in the next LayerNorm
    bumped = {n: (p + 0.5 * torch.randn_like(p) if n.endswith("up.weight") else p) for n, p in params.items()}
    out = torch.func.functional_call(model, bumped, args=(), kwargs=inputs).logits
    assert not torch.allclose(out, base)
    grads = torch.autograd.grad(out.sum(), list(params.values()))
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.parameters())  # the module's own weights untouched


def test_import_is_lean():
    code = (
        "import sys, adapterkit, adapterkit.cli\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'adapters', 'datasets', 'fastapi') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert adapterkit.BottleneckConfig(sharing=3).sharing == 3\n"
        "assert 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_adapter_switches_backbone_dropout_off_and_remove_restores():
    model, _ = build("bert")
    ak.add_adapter(model, "a")
    ak.train_adapter(model, "a")
    backbone = [m for m in model.bert.modules() if isinstance(m, nn.Dropout)]
    assert backbone and all(m.p == 0.0 for m in backbone)
    assert model.dropout.p == 0.1  # the head's dropout is kept
    ak.train_adapter(model, "a", backbone_dropout=True)
    assert all(m.p == 0.1 for m in backbone)
    ak.train_adapter(model, "a")
    ak.remove_adapter(model, "a")
    assert all(m.p == 0.1 for m in backbone)


@pytest.mark.parametrize("config", ["TrainConfig", "TransferSpec", "MultiTaskConfig", "KDConfig"])
@pytest.mark.parametrize("setting, value, message", [
    ("epochs", 0, "epochs must be >= 1, got 0"),
    ("batch_size", 2.5, "batch_size must be an integer"),
    ("lr", float("inf"), "lr must be a finite number"),
    ("lr", -1e-3, "lr must be > 0"),
])
def test_every_config_checks_the_shared_settings_alike(config, setting, value, message):
    # one rule per setting (adapterkit.config.SETTING_RULES), whichever command's config carries it
    from adapterkit.multitask.train import MultiTaskConfig
    from adapterkit.training import TrainConfig
    from adapterkit.transfer.kd import KDConfig
    from adapterkit.transfer.registry import TransferSpec

    make = {"TrainConfig": TrainConfig, "MultiTaskConfig": MultiTaskConfig, "KDConfig": KDConfig,
            "TransferSpec": lambda **kw: TransferSpec(source=["books"], target="dvd", **kw)}[config]
    with pytest.raises(ak.AdapterkitError, match=message):
        make(**{setting: value})
