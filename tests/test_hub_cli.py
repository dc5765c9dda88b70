"""The hub from the outside: the CLI commands against a folder hub and a live server, the
`hub serve` command itself, and `ak.load_adapter(model, "hub:...")` with a real adapter."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
import torch
import typer
from typer.testing import CliRunner

import adapterkit as ak
from adapterkit.cli import hub as hub_cli
from adapterkit.hub import HubError, NotFound, show
from tests.test_hub_support import (  # noqa: F401  (fixtures)
    REPO_ROOT,
    TOKEN,
    expected_version,
    free_port,
    hub,
    make_adapter,
    server,
    server_env,
)
from tests.tiny_models import build, inputs_for


@pytest.fixture
def cli():
    app = typer.Typer()
    hub_cli.register(app)
    runner = CliRunner()

    def run(*args: str, ok: bool = True) -> str:
        result = runner.invoke(app, list(args))
        if ok:
            assert result.exit_code == 0, (args, result.output, result.exception)
            return result.stdout.strip()
        return result
    return run


def test_cli_push_pull_list_show_tag(cli, hub, tmp_path):
    where = str(hub.root) if hub.kind == "folder" else hub.url
    auth = ["--token", TOKEN] if hub.token else []
    src = make_adapter(tmp_path / "a", seed=11)
    version = cli("push", str(src), "team/cli:v1", "--hub", where, "-t", "best", *auth)
    assert version == expected_version(src)

    out = tmp_path / "out"
    assert cli("pull", "team/cli:best", str(out), "--hub", where) == str(out)
    assert (out / "adapterkit_weights.safetensors").read_bytes() == (src / "adapterkit_weights.safetensors").read_bytes()
    assert cli("pull", f"team/cli@{version[:12]}", "--hub", where).endswith(f"pulled/team/cli/{version}")

    assert cli("hub", "list", "team/*", "--hub", where) == \
        f"team/cli  (1 version)  best={version[:12]}, latest={version[:12]}, v1={version[:12]}"
    shown = cli("hub", "show", "team/cli:v1", "--hub", where)
    assert f"version:       {version}" in shown and "accuracy 0.9125" in shown and "task sst2" in shown
    assert json.loads(cli("hub", "show", "team/cli", "--hub", where, "--json"))["version"] == version

    v2 = cli("push", str(make_adapter(tmp_path / "b", seed=12)), "team/cli", "--hub", where, *auth)
    assert cli("hub", "tag", f"team/cli@{v2[:8]}", "best", "--hub", where, *auth) == v2
    assert cli("hub", "delete-tag", "team/cli:v1", "--hub", where, *auth) == "deleted team/cli:v1"
    tags = json.loads(cli("hub", "list", "--hub", where, "--json"))[0]["tags"]
    assert tags == {"best": v2, "latest": v2}
    failed = cli("pull", "team/cli:v1", "--hub", where, ok=False)
    assert failed.exit_code != 0 and isinstance(failed.exception, NotFound)


def test_cli_errors_are_one_line(tmp_path):
    script = ("import typer, sys; from adapterkit.cli.hub import register; from adapterkit.errors import AdapterkitError\n"
              "app = typer.Typer(); register(app)\n"
              "try: app()\n"
              "except AdapterkitError as e: print(f'error: {e}', file=sys.stderr); sys.exit(1)\n")
    proc = subprocess.run([sys.executable, "-c", script, "pull", "../etc", "--hub", str(tmp_path / "h")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: invalid namespace '..': use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"]


def test_hub_serve_command_and_env_default(tmp_path, monkeypatch):
    (tmp_path / "tokens").write_text(TOKEN + "\n")
    port = free_port()
    script = "import typer; from adapterkit.cli.hub import register; app = typer.Typer(); register(app); app()"
    proc = subprocess.Popen([sys.executable, "-c", script, "hub", "serve", "--root", str(tmp_path / "root"),
                             "--port", str(port), "--token-file", str(tmp_path / "tokens")],
                            env=server_env(), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                info = httpx.get(f"{url}/api/v1/info", trust_env=False).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read().decode()
                time.sleep(0.1)
        assert info["writable"] is True and info["max_file_bytes"] == 512 << 20
        monkeypatch.setenv("ADAPTERKIT_HUB", url)  # the default hub, from the environment
        monkeypatch.setenv("ADAPTERKIT_HUB_TOKEN", TOKEN)
        monkeypatch.setenv("ADAPTERKIT_CACHE", str(tmp_path / "cache"))
        src = make_adapter(tmp_path / "a")
        assert ak.push_adapter(src, "team/env") == expected_version(src)
        assert (tmp_path / "root" / "repos" / "team" / "env" / "tags.json").is_file()
        assert ak.pull_adapter("team/env").parent == tmp_path / "cache" / "pulled" / "team" / "env"
    finally:
        proc.terminate()
        proc.wait(10)


def test_default_hub_is_a_per_user_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("ADAPTERKIT_HUB", raising=False)
    monkeypatch.setenv("ADAPTERKIT_CACHE", str(tmp_path / "cache"))
    version = ak.push_adapter(make_adapter(tmp_path / "a"), "me/local:v1")
    tags = json.loads((tmp_path / "cache" / "hub" / "repos" / "me" / "local" / "tags.json").read_text())
    assert tags == {"latest": version, "v1": version}
    with pytest.raises(HubError, match="unsupported hub"):
        ak.pull_adapter("me/local", hub="ftp://example")


def test_load_adapter_from_hub_restores_outputs(hub, tmp_path, monkeypatch):
    model, _ = build("bert", seed=0)
    ak.add_adapter(model, "sst2", ak.BottleneckConfig(bottleneck_dim=8, sharing=2))
    with torch.no_grad():
        for p in ak.adapter_parameters(model, "sst2").values():
            p.normal_(0, 0.5)
    inputs = inputs_for("bert")
    with torch.no_grad():
        expected = model(**inputs).logits
    folder = ak.save_adapter(model, "sst2", tmp_path / "saved")
    version = ak.push_adapter(folder, "team/bert-sst2:v1", hub=hub.spec, token=hub.token)
    card = show(f"team/bert-sst2@{version}", hub=hub.spec)
    assert card["parameters"]["adapter"] == ak.count_parameters(model, "sst2")
    assert card["sharing"] == 2 and card["bottleneck_dim"] == 8 and card["base_model"]["model_type"] == "bert"

    fresh, _ = build("bert", seed=0)
    with torch.no_grad():
        assert not torch.allclose(fresh(**inputs).logits, expected)
    monkeypatch.setenv("ADAPTERKIT_HUB", str(hub.root) if hub.kind == "folder" else hub.url)
    assert ak.load_adapter(fresh, "hub:team/bert-sst2:v1") == "sst2"  # pulls from the default hub
    with torch.no_grad():
        torch.testing.assert_close(fresh(**inputs).logits, expected)


def test_push_leaves_the_training_checkpoint_out_unless_asked(cli, hub, tmp_path, caplog):
    """What a consumer needs is sent (adapter, head, configs, metrics, tokenizer, log); the
    resume checkpoint only with --include-checkpoint, and the push says so in plain words."""
    where = str(hub.root) if hub.kind == "folder" else hub.url
    auth = ["--token", TOKEN] if hub.token else []
    src = make_adapter(tmp_path / "run")
    (src / "tokenizer").mkdir()
    (src / "tokenizer" / "tokenizer_config.json").write_text("{}")
    (src / "checkpoint").mkdir()
    for name in ("weights.safetensors", "optimizer.safetensors"):
        (src / "checkpoint" / name).write_bytes((src / "adapterkit_head.safetensors").read_bytes())
    (src / "checkpoint" / "state.json").write_text("{}")
    with caplog.at_level("WARNING", logger="adapterkit.hub"):
        version = cli("push", str(src), "team/run:v1", "--hub", where, *auth)
    files = [f["path"] for f in show(f"team/run@{version}", hub=hub.spec)["files"]]
    assert files == ["adapterkit_config.json", "adapterkit_head.safetensors", "adapterkit_weights.safetensors",
                     "metrics.json", "tokenizer/tokenizer_config.json", "train.log", "vocab.txt"]
    assert any("not pushed: the training checkpoint (checkpoint/, 3 files" in r.getMessage() and
               "--include-checkpoint" in r.getMessage() for r in caplog.records)
    version = cli("push", str(src), "team/run:v2", "--hub", where, "--include-checkpoint", *auth)
    files = [f["path"] for f in show(f"team/run@{version}", hub=hub.spec)["files"]]
    assert [f for f in files if f.startswith("checkpoint/")] == [
        "checkpoint/optimizer.safetensors", "checkpoint/state.json", "checkpoint/weights.safetensors"]
