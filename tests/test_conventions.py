"""What a new user meets: no files left behind, consistent options, readable help, refusals."""
from pathlib import Path


def test_tests_never_touch_the_users_cache():
    """conftest points the per-user cache (pulled adapters, the default hub) at a session folder."""
    from adapterkit.hub.api import cache_dir, open_hub

    home = Path.home() / ".cache" / "adapterkit"
    assert not cache_dir().is_relative_to(home) and "adapterkit-tests-" in str(cache_dir())
    assert str(open_hub().root).startswith(str(cache_dir()))


def test_saved_adapters_and_cards_name_the_bundled_base_model_canonically(tmp_path):
    """Not the machine's site-packages path: an adapter pulled elsewhere names its base model."""
    import json

    from transformers import AutoModelForSequenceClassification

    import adapterkit as ak
    from adapterkit.backbone import load_model, resolve_model
    from adapterkit.hub import show
    from adapterkit.hub.card import summary_lines
    from adapterkit.io import describe_base_model

    model = load_model(None, num_labels=2)
    ak.add_adapter(model, "cola", ak.BottleneckConfig(bottleneck_dim=8, sharing=3))
    folder = ak.save_adapter(model, "cola", tmp_path / "a")
    base = json.loads((folder / "adapterkit_config.json").read_text())["base_model"]
    assert base["name_or_path"] == "all-MiniLM-L6-v2" and len(base["config_hash"]) == 16
    direct = AutoModelForSequenceClassification.from_pretrained(resolve_model(None), num_labels=2)  # by path
    assert describe_base_model(direct)["name_or_path"] == "all-MiniLM-L6-v2"
    version = ak.push_adapter(folder, "me/cola", hub=tmp_path / "hub")
    card = show(f"me/cola@{version}", hub=tmp_path / "hub")
    assert card["base_model"]["name_or_path"] == "all-MiniLM-L6-v2"
    assert any(line.startswith("base model:") and "all-MiniLM-L6-v2" in line and "site-packages" not in line
               for line in summary_lines(card))
    fresh = load_model(base["name_or_path"], num_labels=2)  # the recorded name loads the same backbone
    assert ak.load_adapter(fresh, folder) == "cola"


def _cli_app():
    from adapterkit.cli import _register_all, app

    _register_all()
    return app


def _defaults(app, *path):
    import typer

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return {p.name: p.default for p in command.params}


def test_seed_and_batch_size_defaults_agree_across_training_commands():
    app = _cli_app()
    for path in (("train",), ("distill",), ("transfer", "run"), ("multitask", "build"), ("multitask", "add")):
        defaults = _defaults(app, *path)
        assert defaults["seed"] == 42 and defaults["batch_size"] == 32, path


def test_python_configs_default_like_the_cli():
    """A run from Python with defaults is the run the CLI makes with defaults."""
    import dataclasses

    from adapterkit.multitask.train import MultiTaskConfig
    from adapterkit.training import TrainConfig
    from adapterkit.transfer.kd import KDConfig
    from adapterkit.transfer.registry import TransferSpec

    for config in (TransferSpec, KDConfig, MultiTaskConfig, TrainConfig):
        fields = {f.name: f.default for f in dataclasses.fields(config)}
        assert fields["seed"] == 42 and fields["batch_size"] == 32, config.__name__


def test_unknown_options_get_close_suggestions_only():
    from adapterkit.cli.suggest import unknown_option

    app = _cli_app()
    assert unknown_option(app, ["train", "--epoch", "1"]) == "no such option --epoch; did you mean --epochs?"
    assert unknown_option(app, ["--verbose", "transfer", "run", "kd", "--sorce", "x"]) == \
        "no such option --sorce; did you mean --source?"
    assert unknown_option(app, ["train", "--lr-rate", "3"]) == "no such option --lr-rate; see `adapterkit train --help`"
    assert unknown_option(app, ["--quiet", "train", "--epochs", "1", "--task=cola", "--", "--x"]) is None


def test_help_shows_flags_as_flags_and_the_attention_default():
    from typer.testing import CliRunner

    app = _cli_app()
    out = CliRunner().invoke(app, ["plan", "--help"], env={"COLUMNS": "120"}).output
    line = next(text for text in out.splitlines() if "--train-layer-norms" in text)
    assert "<bool>" not in out and line.split()[0] == "--train-layer-norms" and line.split()[1] != "<bool>"
    out = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "sdpa for all-MiniLM-L6-v2" in out
    out = CliRunner().invoke(app, ["push", "--help"], env={"COLUMNS": "120"}).output
    assert "FOLDER" in out and "-t, --tag TAG" in out and "list[str]" not in out
    out = CliRunner().invoke(app, ["distill", "--help"], env={"COLUMNS": "200"}).output
    assert "Required (except with --method metakd)" in out


def test_full_finetune_with_adapter_options_is_refused():
    import pytest

    from adapterkit.cli.options import adapter_config
    from adapterkit.errors import AdapterkitError
    from adapterkit.training import TrainConfig

    TrainConfig(full_finetune=True, adapter=adapter_config())  # the defaults are fine
    with pytest.raises(AdapterkitError, match="--full-finetune trains the whole backbone and no adapter"):
        TrainConfig(full_finetune=True, adapter=adapter_config(sharing="3"))


def test_summary_labels_adapter_and_head_parameters():
    from adapterkit.cli.train import parameter_summary

    assert parameter_summary({"trainable_parameters": 247_810, "adapter_parameters": 99_200,
                              "head_parameters": 148_610}) == \
        "trained parameters: 247,810 (adapter 99,200 + head 148,610)"
    assert parameter_summary({"trainable_parameters": 22_713_986, "adapter_parameters": None,
                              "head_parameters": 148_610}) == "trained parameters: 22,713,986 (the whole model)"
