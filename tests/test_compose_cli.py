"""Combining adapters from the command line, end to end on a tiny BERT and tiny GLUE-layout data:
`train --drop-layers`, `fuse` (fusion, average, split) with eval reproducing the score, `merge`,
and `transfer run fusion|average|merge`."""
import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

import adapterkit as ak
from adapterkit.cli import _register_all, app

_register_all()
runner = CliRunner()


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


COMMON = ("--max-steps", 6, "--epochs", 3, "--batch-size", 8, "--max-seq-len", 32, "--lr", 5e-3, "--quiet")


@pytest.fixture(scope="module")
def sources(tiny_bert_dir, glue_dir, tmp_path_factory):
    """Two trained adapters (CoLA per layer, SST-2 shared across both layers)."""
    root = tmp_path_factory.mktemp("sources")
    for task, sharing in (("cola", "1"), ("sst2", "2")):
        _run("train", "--task", task, "--model", tiny_bert_dir, "--data-dir", glue_dir, "--output", root / task,
             "--bottleneck", 8, "--sharing", sharing, *COMMON)
    return root


def test_train_with_drop_layers_leaves_the_lowest_adapters_untrained(tiny_bert_dir, glue_dir, tmp_path):
    out = tmp_path / "drop"
    _run("train", "--task", "cola", "--model", tiny_bert_dir, "--data-dir", glue_dir, "--output", out,
         "--bottleneck", 8, "--drop-layers", 1, *COMMON)
    assert json.loads((out / "run_config.json").read_text())["drop_layers"] == 1
    from safetensors.torch import load_file

    weights = load_file(out / "adapterkit_weights.safetensors")
    assert not weights["G0.up.weight"].any() and weights["G1.up.weight"].any()  # layer 0 never ran
    metrics = json.loads((out / "metrics.json").read_text())
    printed = _run("eval", "--adapter", out, "--data-dir", glue_dir)
    assert f"matthews_correlation: {metrics['best']['matthews_correlation']:.4f}" in printed
    _run("eval", "--adapter", out, "--data-dir", glue_dir, "--drop-layers", 0)  # another k at inference
    from adapterkit.compose import adapter_drop
    from adapterkit.evaluation import load_run

    assert adapter_drop(load_run(out, note=lambda _: None)[0]) == 1  # eval and predict run at the run's k


@pytest.mark.parametrize("command", ["train", "fuse", "eval"])
@pytest.mark.parametrize("k", [2, 99])
def test_drop_layers_beyond_the_model_is_refused_before_any_work(capsys, tiny_bert_dir, glue_dir, tmp_path, command, k):
    from tests.test_reliability_cli import refused

    missing = tmp_path / "no-data"  # a refusal after loading the data would name this folder instead
    args = {"train": ["train", "--task", "cola", "--model", tiny_bert_dir, "--data-dir", missing, "--output", tmp_path / "out"],
            "fuse": ["fuse", "--adapters", f"{tmp_path / 'a'},{tmp_path / 'b'}", "--task", "rte", "--model", tiny_bert_dir,
                     "--data-dir", missing, "--output", tmp_path / "out"],
            "eval": ["eval", "--adapter", _drop_run(tiny_bert_dir, glue_dir, tmp_path), "--data-dir", missing]}[command]
    refused(capsys, *args, "--drop-layers", k, match=f"--drop-layers {k}: the model has 2 layers; use 0..1")
    assert not (tmp_path / "out").exists()


def _drop_run(model, glue_dir, tmp_path):
    out = tmp_path / "run"
    _run("train", "--task", "cola", "--model", model, "--data-dir", glue_dir, "--output", out, "--bottleneck", 8,
         "--drop-layers", 1, "--max-steps", 1, "--epochs", 1, "--batch-size", 8, "--max-seq-len", 32, "--quiet")
    return out


def test_runs_on_user_files_keep_their_drop_layers_at_inference(capsys, tiny_bert_dir, tmp_path):
    from adapterkit.compose import adapter_drop
    from adapterkit.tasks.heads import load_for_inference
    from tests.test_reliability_cli import refused

    (tmp_path / "t.tsv").write_text("text\tlabel\n" + "".join(f"a cat {i}\t{'yes' if i % 2 else 'no'}\n" for i in range(20)))
    out = tmp_path / "run"
    _run("train", "--task-type", "classification", "--model", tiny_bert_dir, "--train-file", tmp_path / "t.tsv",
         "--output", out, "--max-steps", 1, "--bottleneck", 4, "--drop-layers", 1, "--quiet")
    assert adapter_drop(load_for_inference(out, note=lambda _: None)[0]) == 1  # eval, predict and a test file's score
    assert adapter_drop(load_for_inference(out, note=lambda _: None, drop_layers=0)[0]) == 0
    assert "accuracy" in _run("eval", "--adapter", out, "--file", tmp_path / "t.tsv", "--drop-layers", 0)  # was ignored
    refused(capsys, "eval", "--adapter", out, "--drop-layers", 2, match="--drop-layers 2: the model has 2 layers")


def test_drop_robust_needs_drop_layers_and_full_finetune_refuses_them():
    from adapterkit.training import TrainConfig

    with pytest.raises(ak.AdapterkitError, match="give --drop-layers K >= 1"):
        TrainConfig(drop_robust=True)
    with pytest.raises(ak.AdapterkitError, match="--full-finetune trains none"):
        TrainConfig(full_finetune=True, drop_layers=1)


@pytest.mark.parametrize("composition, extra", [("fusion", ("--fusion-sharing", "all")), ("average", ("--weights", "0.7,0.3")),
                                                ("split", ("--segments",))])
def test_fuse_trains_a_combination_and_eval_reproduces_it(sources, tiny_bert_dir, glue_dir, tmp_path, composition, extra):
    out = tmp_path / composition
    _run("fuse", "--adapters", f"{sources / 'cola'},{sources / 'sst2'}", "--task", "rte", "--composition", composition,
         "--model", tiny_bert_dir, "--data-dir", glue_dir, "--output", out, *extra, *COMMON)
    manifest = json.loads((out / "adapterkit_combination.json").read_text())
    assert manifest["composition"] == composition and [a["name"] for a in manifest["adapters"]] == ["cola", "sst2"]
    metrics = json.loads((out / "metrics.json").read_text())
    head = 32 * 2 + 2 + 32 * 32 + 32  # classifier and pooler
    fusion = 3 * 32 * 32 + 2 * 32 if composition == "fusion" else 0  # one shared fusion layer
    assert metrics["trainable_parameters"] == head + fusion
    printed = _run("eval", "--adapter", out, "--data-dir", glue_dir)
    assert f"accuracy: {metrics['best']['accuracy']:.4f}" in printed


def test_merge_writes_one_adapter_and_refuses_different_plans(sources, tiny_bert_dir, tmp_path):
    from adapterkit.backbone import load_model

    _run("merge", "--adapters", f"{sources / 'cola'},{sources / 'cola'}", "--output", tmp_path / "m",
         "--model", tiny_bert_dir)
    model = load_model(str(tiny_bert_dir))
    ak.load_adapter(model, sources / "cola", name="a")
    ak.load_adapter(model, tmp_path / "m", name="m", activate=False)
    for key, value in model.adapterkit.adapters["a"].state_dict().items():
        torch.testing.assert_close(model.adapterkit.adapters["m"].state_dict()[key], value)
    result = subprocess.run([sys.executable, "-m", "adapterkit.cli", "merge", "--adapters",
                             f"{sources / 'cola'},{sources / 'sst2'}", "--output", tmp_path / "bad",
                             "--model", tiny_bert_dir], capture_output=True, text=True)
    assert result.returncode == 1 and "sharing 1 vs 2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("algorithm", [pytest.param("fusion", marks=pytest.mark.slow), "average", "merge"])
def test_transfer_run_combines_source_adapters(tiny_bert_dir, tmp_path, algorithm):
    from adapterkit.transfer import TransferSpec, run_algorithm

    cache = tmp_path / "cache"
    spec = TransferSpec(source=["books", "dvd"], target="kitchen", target_shots=16, model=str(tiny_bert_dir),
                        quick=True, max_seq_len=48, output=str(tmp_path / "out"),
                        options={"source_adapters": str(cache), "top_n": 1})
    result = run_algorithm(algorithm, spec)
    assert 0.0 <= result["test"]["accuracy"] <= 1.0
    assert (cache / "books" / "adapterkit_config.json").exists()
    if algorithm == "fusion":
        assert result["fusion_parameters"] == 3 * 32 * 32 + 2 * 32  # top 1 layer: one fusion layer
        assert (tmp_path / "out" / "fusion" / "adapterkit_combination.json").exists()


# the options each command of the README gets on top of what is written there: the tiny model, the
# fixture data and a couple of steps (and, for the quickstart's CoLA adapter, its own command first)
_SMALL = {"train": ("--max-steps", 2, "--epochs", 1, "--batch-size", 8, "--max-seq-len", 32, "--quiet"),
          "fuse": ("--max-steps", 2, "--epochs", 1, "--batch-size", 8, "--max-seq-len", 32, "--quiet"),
          "eval": (), "merge": (),
          "transfer": ("--quick", "--max-seq-len", 32, "--option", "top_n=1")}


@pytest.mark.slow
def test_readme_combining_commands_run_as_written(glue_dir, tmp_path, monkeypatch):
    import re
    import shlex
    from pathlib import Path

    from tests.tiny_models import write_tiny_bert

    tiny_bert_dir = write_tiny_bert(tmp_path / "tiny-bert6", layers=6)  # all-MiniLM-L6-v2's depth: --drop-layers 4

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Combining adapters"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    lines = [shlex.split(line, comments=True) for line in block.splitlines()]
    commands = [["train", "--task", "cola", "--sharing", "3"]] + [words[1:] for words in lines if words]
    assert all(words[0] in _SMALL for words in commands), commands
    monkeypatch.chdir(tmp_path)
    for words in commands:
        where = {"eval": ("--data-dir", glue_dir), "merge": ("--model", tiny_bert_dir),
                 "transfer": ("--model", tiny_bert_dir)}.get(words[0], ("--model", tiny_bert_dir, "--data-dir", glue_dir))
        _run(*words, *where, *_SMALL[words[0]])
    for folder in ("rte-fusion", "rte-average", "rte-split"):
        assert (tmp_path / "runs" / folder / "adapterkit_combination.json").exists()
    assert (tmp_path / "runs" / "cola-mrpc-merged" / "adapterkit_config.json").exists()
