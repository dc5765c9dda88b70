"""--precision / --backbone-dtype: recorded with the run and reused by eval/predict, master
weights kept fp32, refusal for training and a visible fp32 fallback for inference where the
CPU lacks the format."""
import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from adapterkit.cli import _register_all, app
from adapterkit.errors import AdapterkitError
from adapterkit.precision import Precision, native_support, resolve

_register_all()
runner = CliRunner()
needs_bf16 = pytest.mark.skipif(not native_support("bf16", "cpu")[0], reason="this CPU has no native bf16")


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _train(tiny_bert_dir, glue_dir, out, *extra):
    result = _invoke("train", "--task", "sst2", "--model", tiny_bert_dir, "--data-dir", glue_dir, "--output", out,
                     "--max-steps", 10, "--batch-size", 8, "--max-seq-len", 32, "--bottleneck", 8, "--lr", 5e-3,
                     "--quiet", *extra)
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture
def no_cpu_bf16(monkeypatch):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)


@needs_bf16
def test_bf16_run_records_precision_and_eval_reuses_it(tiny_bert_dir, glue_dir, tmp_path):
    out = tmp_path / "bf16"
    metrics = _train(tiny_bert_dir, glue_dir, out, "--precision", "bf16", "--backbone-dtype", "bf16")
    run = json.loads((out / "run_config.json").read_text())
    assert (run["precision"], run["backbone_dtype"]) == ("bf16", "bf16")
    printed = _invoke("eval", "--adapter", out, "--data-dir", glue_dir).output
    assert f"accuracy: {metrics['best']['accuracy']:.4f}" in printed  # the same numbers: same precision reused

    from adapterkit.evaluation import load_run

    model, _, _, resolved = load_run(out)
    assert resolved["precision"] == "bf16"
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes["bert.encoder.layer.0.attention.self.query.weight"] == torch.bfloat16  # frozen: stored bf16
    assert all(d == torch.float32 for n, d in dtypes.items() if n.startswith("adapterkit.") or "classifier" in n)


@needs_bf16
def test_bf16_training_keeps_fp32_master_weights_and_tracks_fp32(tiny_bert_dir):
    import adapterkit as ak
    from adapterkit.backbone import load_model

    losses = {}
    for name in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = load_model(str(tiny_bert_dir), num_labels=2)
        ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=8))
        ak.train_adapter(model, "a")
        precision = Precision(name, "cpu", backbone_dtype=name)
        precision.prepare(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-2)
        step = precision.trainer()
        g = torch.Generator().manual_seed(1)
        batch = {"input_ids": torch.randint(1000, 5000, (8, 16), generator=g), "labels": torch.arange(8) % 2}
        losses[name] = []
        for _ in range(8):
            with precision.autocast():
                loss = model(**batch).loss
            step.backward(loss)
            step.step(optimizer)
            optimizer.zero_grad()
            losses[name].append(loss.item())
        assert all(p.dtype == torch.float32 for p in trainable)
    assert losses["bf16"][-1] < 0.5 * losses["bf16"][0]  # it learns the batch
    assert abs(losses["bf16"][-1] - losses["fp32"][-1]) < 0.1 + 0.1 * losses["fp32"][-1]


def test_training_refuses_bf16_where_the_cpu_lacks_it(tiny_bert_dir, glue_dir, tmp_path, no_cpu_bf16):
    out = tmp_path / "refused"
    result = _invoke("train", "--task", "sst2", "--model", tiny_bert_dir, "--data-dir", glue_dir, "--output", out,
                     "--precision", "bf16", "--quiet")
    assert isinstance(result.exception, AdapterkitError)  # main() prints it as one line, exit 1
    assert "neither avx512_bf16 nor AMX" in str(result.exception) and "use --precision fp32" in str(result.exception)
    assert not out.exists()  # refused before anything was written


def test_eval_falls_back_to_fp32_with_a_note_where_the_cpu_lacks_bf16(tiny_bert_dir, glue_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    metrics = _train(tiny_bert_dir, glue_dir, out)
    run_config = json.loads((out / "run_config.json").read_text())
    (out / "run_config.json").write_text(json.dumps(run_config | {"precision": "bf16", "backbone_dtype": "bf16"}))
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    result = _invoke("eval", "--adapter", out, "--data-dir", glue_dir)
    assert result.exit_code == 0, result.output
    assert "note: --precision bf16 requested, but this CPU has neither avx512_bf16 nor AMX" in result.output
    assert f"accuracy: {metrics['best']['accuracy']:.4f}" in result.output  # fp32, as trained


def test_fp16_on_cpu_without_amx_fp16_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False, raising=False)
    with pytest.raises(AdapterkitError, match="no AMX-FP16"):
        resolve("fp16", "cpu")
    notes = []
    assert resolve("fp16", "cpu", training=False, note=notes.append).name == "fp32" and len(notes) == 1


@pytest.mark.parametrize("settings, message", [
    (dict(precision="fp8"), "precision must be one of fp32, bf16, fp16"),
    (dict(backbone_dtype="bf16"), "--backbone-dtype bf16 needs --precision bf16"),
    (dict(precision="bf16", backbone_dtype="int8"), "backbone dtype must be one of fp32, bf16"),
])
def test_bad_precision_settings_are_refused(settings, message):
    from adapterkit.training import TrainConfig

    with pytest.raises(AdapterkitError, match=message):
        TrainConfig(**settings)


def test_bad_precision_option_is_one_line_on_the_command_line():
    result = subprocess.run([sys.executable, "-m", "adapterkit.cli", "train", "--task", "sst2", "--precision", "fp8"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "precision must be one of fp32, bf16, fp16" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_backbone_bf16_with_full_finetuning_is_refused(tiny_bert_dir):
    from adapterkit.backbone import load_model

    model = load_model(str(tiny_bert_dir), num_labels=2)
    with pytest.raises(AdapterkitError, match="full fine-tuning trains every weight"):
        Precision("bf16", "cpu", "bf16").prepare(model)
