"""AdapterHub interop: adapterkit adapters exported to the `adapters` format compute the same
outputs there, and AdapterHub bottleneck adapters imported into adapterkit compute theirs.

File-format tests run everywhere; tests that run the `adapters` library itself need the extra
(`adapters` 1.3 pins transformers 4.57: `.ci/compat` runs them in a second environment).
"""
import json

import pytest
import torch

import adapterkit as ak
from adapterkit.interop import adapterhub as ah
from adapterkit.interop import convert_to_adapterhub, export_adapterhub, import_adapterhub
from adapterkit.model import adapter_config
from tests.tiny_models import FAMILIES, build

TOL = 1e-5


@pytest.fixture
def adapters_lib():
    return pytest.importorskip("adapters", reason="AdapterHub `adapters` not installed (run .ci/compat)")


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _trained(family, seed=3, **config):
    """A model with adapter "a" and head set to random non-zero values, and its inputs."""
    model, inputs = build(family)
    ak.add_adapter(model, "a", ak.BottleneckConfig(**{"bottleneck_dim": 8, **config}))
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in ak.adapter_parameters(model, "a").values():
            p.normal_(std=0.2)
        for p in ak.head_parameters(model).values():
            p.normal_(std=0.2)
    return model, inputs


# ---------------------------------------------------------------- files only (any transformers)


def test_export_writes_per_site_copies_with_exact_flags(tmp_path):
    model, _ = _trained("bert", sharing=3)
    export_adapterhub(model, "a", tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    bn = config["config"]
    assert {k: bn[k] for k in ah.EXACT_FLAGS} == ah.EXACT_FLAGS
    assert bn["mh_adapter"] and bn["output_adapter"] and bn["leave_out"] == []
    assert int(32 // bn["reduction_factor"]) == 8 and bn["non_linearity"] == "gelu"
    assert (config["name"], config["model_type"], config["model_class"]) == ("a", "bert", "BertForSequenceClassification")

    from safetensors.torch import load_file

    safe = load_file(str(tmp_path / "adapter.safetensors"))
    binary = torch.load(tmp_path / "pytorch_adapter.bin", weights_only=True)
    assert set(safe) == set(binary) and all(torch.equal(safe[k], binary[k]) for k in safe)
    assert len(safe) == 4 * 2 * 4  # 4 layers x 2 sites x 4 tensors: one copy per site
    shared = model.adapterkit.adapters["a"]["G0"].up.weight  # layers 0-2 share one module
    for layer in range(3):
        for module in ("attention.output", "output"):
            assert torch.equal(safe[f"bert.encoder.layer.{layer}.{module}.adapters.a.adapter_up.weight"], shared)
    assert not torch.equal(safe["bert.encoder.layer.3.output.adapters.a.adapter_up.weight"], shared)
    head = load_file(str(tmp_path / "model_head.safetensors"))
    assert {"classifier.weight", "classifier.bias"} <= set(head)
    assert json.loads((tmp_path / "head_config.json").read_text())["model_class"] == "BertForSequenceClassification"


@pytest.mark.parametrize("weights, present, absent", [
    ("safetensors", ["adapter.safetensors", "model_head.safetensors"], ["pytorch_adapter.bin", "pytorch_model_head.bin"]),
    ("bin", ["pytorch_adapter.bin", "pytorch_model_head.bin"], ["adapter.safetensors", "model_head.safetensors"]),
])
def test_weights_format_choice_leaves_no_stale_file(tmp_path, weights, present, absent):
    model, _ = _trained("bert")
    export_adapterhub(model, "a", tmp_path)  # both formats first
    export_adapterhub(model, "a", tmp_path, weights=weights)
    for name in present:
        assert (tmp_path / name).is_file()
    for name in absent:
        assert not (tmp_path / name).exists()


@pytest.mark.parametrize("hidden, m", [(32, 8), (32, 12), (768, 64), (768, 48), (768, 100), (384, 7), (1024, 1), (50, 49)])
def test_reduction_factor_reproduces_bottleneck(hidden, m):
    assert int(hidden // ah.reduction_factor_for(hidden, m)) == m


def test_layer_selection_becomes_global_leave_out(tmp_path):
    model, _ = _trained("t5", layers=[1], placement="pfeiffer")
    export_adapterhub(model, "a", tmp_path, include_head=False)
    bn = json.loads((tmp_path / "adapter_config.json").read_text())["config"]
    assert bn["leave_out"] == [0, 2, 3, 5]  # AdapterHub numbers decoder layers 3-5 after encoder 0-2
    assert not bn["mh_adapter"] and bn["output_adapter"]
    assert ah.per_stack_leave_out([0, 2, 3, 5], [3, 3], tmp_path) == [0, 2]
    with pytest.raises(ak.IncompatibleAdapterError, match="encoder and the decoder"):
        ah.per_stack_leave_out([0], [3, 3], tmp_path)


@pytest.mark.parametrize("family", ["bert", "gpt2", "t5"])
@pytest.mark.parametrize("sharing", [1, 3, "none"])
def test_export_then_import_round_trip(tmp_path, family, sharing):
    model, inputs = _trained(family, sharing=sharing, activation="tanh", scaling=0.5)
    expected = _logits(model, inputs)
    export_adapterhub(model, "a", tmp_path / "hub", weights="safetensors")
    fresh, _ = build(family)
    assert import_adapterhub(fresh, tmp_path / "hub", name="b") == "b"
    assert (_logits(fresh, inputs) - expected).abs().max() < TOL
    plan = fresh.adapterkit.plans["b"]
    assert all(len(sites) == 1 for sites in plan.groups.values())  # imported as sharing "none"
    assert adapter_config(fresh, "b").activation == "tanh" and adapter_config(fresh, "b").scaling == 0.5


def test_convert_saved_folder_matches_export_from_model(tmp_path):
    model, _ = _trained("gpt2", sharing="all", placement="pfeiffer", leave_out=[0])
    ak.save_adapter(model, "a", tmp_path / "ak")
    convert_to_adapterhub(tmp_path / "ak", tmp_path / "from_folder", name="task")
    export_adapterhub(model, "a", tmp_path / "from_model")
    from safetensors.torch import load_file

    folder = load_file(str(tmp_path / "from_folder" / "adapter.safetensors"))
    direct = load_file(str(tmp_path / "from_model" / "adapter.safetensors"))
    assert set(folder) == {k.replace(".adapters.a.", ".adapters.task.") for k in direct}
    assert sorted(folder) == sorted(k for k in folder if ".output_adapters.adapters.task." in k)
    assert json.loads((tmp_path / "from_folder" / "adapter_config.json").read_text())["config"]["leave_out"] == [0]


def test_refusals_are_clear(tmp_path):
    model, _ = _trained("bert", train_layer_norms=True)
    with pytest.raises(ak.AdapterkitError, match="LayerNorms"):
        export_adapterhub(model, "a", tmp_path / "ln")

    model, _ = _trained("deberta_v2")
    with pytest.raises(ak.AdapterkitError, match="model type 'deberta-v2' is not one of them"):
        export_adapterhub(model, "a", tmp_path / "deberta")

    model, _ = _trained("bert")
    export_adapterhub(model, "a", tmp_path / "hub", weights="bin")
    with pytest.raises(ak.AdapterkitError, match="only pytorch_adapter.bin"):
        import_adapterhub(build("bert")[0], tmp_path / "hub")
    fresh, _ = build("bert")
    import_adapterhub(fresh, tmp_path / "hub", allow_bin=True)  # torch.load(weights_only=True)
    assert ak.list_adapters(fresh) == ["a"]

    config_path = tmp_path / "hub" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    for key, value, message in [
        ("original_ln_before", True, "original_ln_before=True"),  # AdapterHub's seq_bn / Pfeiffer
        ("use_gating", True, "use_gating=True"),
        ("non_linearity", "gelu_new", "activation 'gelu_new'"),
        ("scaling", "learned", "learned scaling"),
    ]:
        config_path.write_text(json.dumps({**config, "config": {**config["config"], key: value}}))
        fresh, _ = build("bert")
        with pytest.raises(ak.IncompatibleAdapterError, match=message):
            import_adapterhub(fresh, tmp_path / "hub", allow_bin=True)
        assert ak.list_adapters(fresh) == []
    legacy = {k: v for k, v in config.items() if k != "version"}  # old files: "gelu" meant gelu_new
    config_path.write_text(json.dumps(legacy))
    with pytest.raises(ak.IncompatibleAdapterError, match="gelu_new"):
        import_adapterhub(build("bert")[0], tmp_path / "hub", allow_bin=True)


def test_import_into_other_model_fails_and_leaves_it_clean(tmp_path):
    model, _ = _trained("bert")
    export_adapterhub(model, "a", tmp_path)
    from transformers import BertConfig, BertForSequenceClassification

    wider = BertForSequenceClassification(BertConfig(vocab_size=99, hidden_size=64, num_hidden_layers=4,
                                                      num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ak.IncompatibleAdapterError, match="shape"):
        import_adapterhub(wider, tmp_path)
    assert ak.list_adapters(wider) == []
    deeper = BertForSequenceClassification(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=5,
                                                       num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ak.IncompatibleAdapterError, match="no weights for site"):
        import_adapterhub(deeper, tmp_path)
    assert ak.list_adapters(deeper) == []


def _cli(*args):
    import typer
    from typer.testing import CliRunner

    from adapterkit.cli import interop as interop_cli

    app = typer.Typer()
    interop_cli.register(app)
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_export_then_import_through_a_model_folder(tmp_path):
    model, inputs = _trained("bert", sharing=3)
    expected = _logits(model, inputs)
    ak.save_adapter(model, "a", tmp_path / "ak")
    build("bert")[0].save_pretrained(tmp_path / "backbone")

    result = _cli("export", tmp_path / "ak", tmp_path / "hub", "--to", "adapterhub", "--name", "task")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "hub")
    assert json.loads((tmp_path / "hub" / "adapter_config.json").read_text())["name"] == "task"
    result = _cli("import", tmp_path / "hub", tmp_path / "back", "--from", "adapterhub", "--model", tmp_path / "backbone")
    assert result.exit_code == 0, result.output

    fresh, _ = build("bert")
    assert ak.load_adapter(fresh, str(tmp_path / "back")) == "task"
    assert (_logits(fresh, inputs) - expected).abs().max() < TOL
    assert len(fresh.adapterkit.plans["task"].groups) == 8  # one module per site after the round trip


def test_cli_import_from_bare_config_refuses_a_head_it_cannot_complete(tmp_path):
    model, inputs = _trained("bert")
    export_adapterhub(model, "a", tmp_path / "hub", weights="safetensors")
    from safetensors.torch import load_file, save_file

    head_file = tmp_path / "hub" / "model_head.safetensors"  # as `adapters` writes it: no pooler
    save_file({k: v for k, v in load_file(str(head_file)).items() if k.startswith("classifier.")}, str(head_file))
    build("bert")[0].config.to_json_file(tmp_path / "config.json")
    result = _cli("import", tmp_path / "hub", tmp_path / "out", "--from", "adapterhub", "--model", tmp_path / "config.json")
    assert isinstance(result.exception, ak.AdapterkitError) and "pooler" in str(result.exception)
    assert not (tmp_path / "out").exists()
    result = _cli("import", tmp_path / "hub", tmp_path / "out", "--from", "adapterhub", "--model",
                  tmp_path / "config.json", "--no-head")
    assert result.exit_code == 0, result.output
    fresh, _ = build("bert")
    ak.load_adapter(fresh, str(tmp_path / "out"))
    with torch.no_grad():
        for name, p in ak.head_parameters(fresh).items():
            p.copy_(dict(model.named_parameters())[name])
    assert (_logits(fresh, inputs) - _logits(model, inputs)).abs().max() < TOL
    result = _cli("export", tmp_path / "out", tmp_path / "x", "--to", "peft")
    assert isinstance(result.exception, ak.AdapterkitError) and "supported formats are adapterhub" in str(result.exception)


# ---------------------------------------------------------------- with the `adapters` library


def _load_with_adapters(adapters, family, folder, **kwargs):
    model, inputs = build(family)
    adapters.init(model)
    name = model.load_adapter(str(folder), **kwargs)
    model.set_active_adapters(name)
    return model, inputs


# BERT with every sharing, and every family of FAMILY_RULES that tests/tiny_models builds
_HUB_FAMILIES = sorted(f for f in FAMILIES if f.replace("_", "-") in ah.FAMILY_RULES and f != "bert")


@pytest.mark.parametrize("family, sharing", [("bert", 1), ("bert", 3), ("bert", "none")] + [
    (family, "none" if i % 2 else 3) for i, family in enumerate(_HUB_FAMILIES)
])
def test_adapters_library_reproduces_exported_adapter(tmp_path, adapters_lib, family, sharing):
    model, inputs = _trained(family, sharing=sharing)
    expected = _logits(model, inputs)
    export_adapterhub(model, "a", tmp_path)
    hub_model, _ = _load_with_adapters(adapters_lib, family, tmp_path)
    assert (_logits(hub_model, inputs) - expected).abs().max() < TOL
    assert (_logits(build(family)[0], inputs) - expected).abs().max() > 0.05  # the adapter matters


@pytest.mark.parametrize("family, config", [
    ("bert", dict(placement="pfeiffer", activation="relu", bottleneck_dim=12, leave_out=[1])),
    ("distilbert", dict(activation="swish", scaling=2.0, top_n=2)),
    ("bart", dict(placement="pfeiffer", sharing="all", activation="silu")),
])
def test_adapters_library_reproduces_placement_and_options(tmp_path, adapters_lib, family, config):
    model, inputs = _trained(family, **config)
    expected = _logits(model, inputs)
    export_adapterhub(model, "a", tmp_path, weights="safetensors")
    hub_model, _ = _load_with_adapters(adapters_lib, family, tmp_path, use_safetensors=True)
    assert (_logits(hub_model, inputs) - expected).abs().max() < TOL


@pytest.mark.parametrize("family, bn_kwargs", [
    ("bert", dict()),  # DoubleSeqBnConfig (Houlsby): its defaults are adapterkit's computation
    ("gpt2", dict(mh_adapter=False, original_ln_before=False, non_linearity="relu", leave_out=[0, 2])),
    ("t5", dict(reduction_factor=2, scaling=0.5)),
])
def test_import_adapter_saved_by_adapters_library(tmp_path, adapters_lib, family, bn_kwargs):
    hub_model, inputs = build(family)
    adapters_lib.init(hub_model)
    hub_model.add_adapter("my-task", config=adapters_lib.DoubleSeqBnConfig(**{"reduction_factor": 4, **bn_kwargs}))
    torch.manual_seed(4)
    with torch.no_grad():
        for name, p in hub_model.named_parameters():
            if ".my-task." in name:
                p.normal_(std=0.2)
    hub_model.set_active_adapters("my-task")
    expected = _logits(hub_model, inputs)
    assert (_logits(build(family)[0], inputs) - expected).abs().max() > 100 * TOL  # the adapter matters
    hub_model.save_adapter(str(tmp_path / "bin"), "my-task")
    hub_model.save_adapter(str(tmp_path / "safe"), "my-task", use_safetensors=True)

    model, _ = build(family)
    assert import_adapterhub(model, tmp_path / "safe") == "my_task"  # made an identifier
    assert (_logits(model, inputs) - expected).abs().max() < TOL
    with pytest.raises(ak.AdapterkitError, match="only pytorch_adapter.bin"):
        import_adapterhub(build(family)[0], tmp_path / "bin")
    model, _ = build(family)
    import_adapterhub(model, tmp_path / "bin", allow_bin=True)
    assert (_logits(model, inputs) - expected).abs().max() < TOL


def test_adapterhub_pfeiffer_config_is_refused_with_reason(tmp_path, adapters_lib):
    hub_model, _ = build("bert")
    adapters_lib.init(hub_model)
    hub_model.add_adapter("seq", config="seq_bn")
    hub_model.save_adapter(str(tmp_path), "seq", use_safetensors=True)
    model, _ = build("bert")
    with pytest.raises(ak.IncompatibleAdapterError, match="original_ln_before=True"):
        import_adapterhub(model, tmp_path)
    assert ak.list_adapters(model) == []
