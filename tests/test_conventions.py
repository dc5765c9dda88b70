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
