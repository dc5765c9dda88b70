"""`adapterkit train / eval / predict` end to end on a tiny model and tiny GLUE-layout data."""
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from adapterkit.cli import _register_all, app
from tests.glue_fixtures import ALL_TASKS

_register_all()
runner = CliRunner()


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _train(tiny_bert_dir, glue_dir, out, task="cola", *extra):
    return _run("train", "--task", task, "--model", tiny_bert_dir, "--data-dir", glue_dir, "--output", out,
                "--max-steps", 20, "--epochs", 10, "--batch-size", 8, "--max-seq-len", 32, "--bottleneck", 8, "--lr", 5e-3,
                "--quiet", *extra)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_every_glue_task_trains_and_eval_reproduces(tiny_bert_dir, glue_dir, tmp_path, task):
    out = tmp_path / task
    _train(tiny_bert_dir, glue_dir, out, task, "--sharing", "2")
    metrics = json.loads((out / "metrics.json").read_text())
    expected_keys = {"cola": {"matthews_correlation"}, "mrpc": {"accuracy", "f1"}, "qqp": {"accuracy", "f1"},
                     "stsb": {"pearson", "spearmanr"}}.get(task, {"accuracy"})
    assert expected_keys <= set(metrics["best"])
    assert metrics["epochs"][-1]["step"] == 20
    assert metrics["adapter_parameters"] == 1 * (2 * 8 * 32 + 32 + 8)  # 2 layers, sharing 2: one module
    for name in ("adapterkit_config.json", "adapterkit_weights.safetensors", "adapterkit_head.safetensors",
                 "run_config.json", "train.log", "tokenizer", "checkpoint"):
        assert (out / name).exists(), name
    printed = _run("eval", "--adapter", out, "--data-dir", glue_dir)
    for key in expected_keys:
        assert f"{key}: {metrics['best'][key]:.4f}" in printed
    if task == "cola":  # GLUE's own header-less dev file as predict input; labels by name, inputs carried
        _run("predict", "--adapter", out, "--input", glue_dir / "CoLA" / "dev.tsv", "--output", tmp_path / "p.tsv")
        lines = (tmp_path / "p.tsv").read_text().splitlines()
        assert lines[0].split("\t") == ["sentence", "label", "label_id", "probability"]
        first = (glue_dir / "CoLA" / "dev.tsv").read_text().splitlines()[0].split("\t")[3]
        assert lines[1].split("\t")[0] == " ".join(first.split())
        assert {line.split("\t")[1] for line in lines[1:]} <= {"acceptable", "unacceptable"}


def test_full_finetune_baseline_and_eval(tiny_bert_dir, glue_dir, tmp_path):
    out = tmp_path / "full"
    _run("train", "--task", "sst2", "--model", tiny_bert_dir, "--data-dir", glue_dir, "--output", out, "--max-steps", 20,
         "--epochs", 10, "--batch-size", 8, "--max-seq-len", 32, "--lr", 5e-3, "--quiet", "--full-finetune")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["adapter_parameters"] is None
    assert metrics["trainable_parameters"] > 900_000  # the whole backbone (embeddings included)
    assert (out / "model" / "model.safetensors").exists()
    printed = _run("eval", "--adapter", out, "--data-dir", glue_dir)
    assert f"accuracy: {metrics['best']['accuracy']:.4f}" in printed


def test_predict_writes_one_prediction_per_input(tiny_bert_dir, glue_dir, tmp_path):
    out = tmp_path / "run"
    _train(tiny_bert_dir, glue_dir, out, "rte")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("\n".join(json.dumps({"sentence1": f"a cat sat {i}", "sentence2": "a cat"}) for i in range(5)) + "\n")
    _run("predict", "--adapter", out, "--input", inputs, "--output", tmp_path / "pred.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and all(r["label"] in ("entailment", "not_entailment") for r in lines)
    assert [r["sentence1"] for r in lines] == [f"a cat sat {i}" for i in range(5)] and lines[0]["sentence2"] == "a cat"


def test_resume_continues_from_the_checkpoint(tiny_bert_dir, glue_dir, tmp_path):
    out = tmp_path / "resume"
    common = ["--task", "cola", "--model", tiny_bert_dir, "--data-dir", glue_dir, "--output", out, "--batch-size", 8,
              "--max-seq-len", 32, "--bottleneck", 8, "--quiet"]
    _run("train", *common, "--epochs", 1)
    (out / "metrics.json").unlink()  # as if killed after the first epoch's checkpoint
    (out / "checkpoint.tmp").mkdir()  # and half-way through writing the next one
    _run("train", *common, "--epochs", 3, "--resume")
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["epochs"]] == [1, 2, 3]
    assert metrics["epochs"][-1]["step"] == 3 * 5  # 40 rows / batch 8 per epoch


@pytest.mark.slow  # 15-22 s: keeps the default run under 10 minutes
def test_random_sparse_attention_run_is_evaluated_with_its_own_layout(tiny_bert_dir, glue_dir, tmp_path):
    out = tmp_path / "rsa"
    _train(tiny_bert_dir, glue_dir, out, "sst2", "--attention", "rsa", "--rsa-density", 0.5,
           "--rsa-block-size", 4, "--seed", 7)
    run = json.loads((out / "run_config.json").read_text())
    assert run["attention"] == "adapterkit_rsa"
    assert run["rsa"] | {"per_layer_layout": True} == {"density": 0.5, "block_size": 4, "seed": 7, "per_layer_layout": True}
    best = json.loads((out / "metrics.json").read_text())["best"]["accuracy"]
    evaluated = _cli("eval", "--adapter", out, "--data-dir", glue_dir)  # a new process: settings from the run
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"accuracy: {best:.4f}" in evaluated.stdout
    from adapterkit.evaluation import load_run
    from adapterkit.ops.hf import config_of

    model = load_run(out)[0]
    assert model.config._attn_implementation == "adapterkit_rsa"
    assert (config_of(model).density, config_of(model).block_size, config_of(model).seed) == (0.5, 4, 7)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "adapterkit.cli", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--task", "colaa"], "unknown task 'colaa'"),
        (["train", "--sharing", "zero"], "sharing must be a positive integer"),
        (["train", "--model", "/no/such/model"], "not found"),
        (["train", "--data-dir", "/no/such/dir"], "/no/such/dir"),
        (["eval", "--adapter", "/no/such/run"], "no such folder"),
        (["train", "--attention", "rsa", "--rsa-density", "1.5"], "density"),
        (["train", "--attention", "flash"], "--attention must be sdpa, eager or rsa"),
    ],
)
def test_user_errors_print_one_line_and_exit_1(args, message):
    result = _cli(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_finished_output_is_not_overwritten(tiny_bert_dir, glue_dir, tmp_path):
    out = tmp_path / "done"
    _train(tiny_bert_dir, glue_dir, out)
    before = (out / "adapterkit_weights.safetensors").read_bytes()
    result = _cli("train", "--task", "cola", "--model", tiny_bert_dir, "--data-dir", glue_dir, "--output", out)
    assert result.returncode == 1 and "already holds a run" in result.stderr
    assert (out / "adapterkit_weights.safetensors").read_bytes() == before


def test_train_push_publishes_with_metrics_and_loads_from_hub(tiny_bert_dir, glue_dir, tmp_path, monkeypatch):
    import torch

    import adapterkit as ak
    from adapterkit.backbone import load_model
    from adapterkit.evaluation import load_run

    hub = tmp_path / "hub"
    out = tmp_path / "run"
    printed = _train(tiny_bert_dir, glue_dir, out, "sst2", "--push", "team/sst2:v1", "--hub", hub)
    assert "pushed team/sst2:v1 version" in printed
    monkeypatch.setenv("ADAPTERKIT_HUB", str(hub))
    model = load_model(str(tiny_bert_dir), num_labels=2)
    assert ak.load_adapter(model, "hub:team/sst2:v1") == "sst2"
    reference, *_ = load_run(out)
    ids = {"input_ids": torch.tensor([[101, 2023, 2003, 2204, 102]])}
    model.eval()
    assert torch.equal(model(**ids).logits, reference(**ids).logits)


@pytest.mark.slow  # 15-22 s: keeps the default run under 10 minutes
def test_distributed_train_two_workers_writes_outputs_and_comm_stats(tiny_bert_dir, glue_dir, tmp_path):
    out = tmp_path / "ddp"
    result = _cli("train", "--task", "sst2", "--model", tiny_bert_dir, "--data-dir", glue_dir, "--output", out,
                  "--max-steps", 4, "--batch-size", 8, "--max-seq-len", 32, "--bottleneck", 8, "--quiet",
                  "--nproc", 2, "--compression", "fp16")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"][-1]["step"] == 4
    stats = json.loads((out / "comm_stats.json").read_text())
    assert stats["world_size"] == 2 and stats["compression"] == "fp16"
    printed = _run("eval", "--adapter", out, "--data-dir", glue_dir)
    assert f"accuracy: {metrics['best']['accuracy']:.4f}" in printed


def test_a_failed_train_removes_only_the_output_folder_it_created(tiny_bert_dir, glue_dir, tmp_path, monkeypatch):
    import adapterkit.loop

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(adapterkit.loop, "fit", broken)
    new = tmp_path / "runs" / "new"
    with pytest.raises(RuntimeError, match="boom"):
        _train(tiny_bert_dir, glue_dir, new)
    assert not (tmp_path / "runs").exists()  # the run created runs/ and runs/new: both gone
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        _train(tiny_bert_dir, glue_dir, mine)
    assert mine.is_dir()  # a folder the user made stays
