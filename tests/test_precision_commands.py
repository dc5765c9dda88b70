"""--precision on the commands beyond train/eval/predict: transfer, distill, multitask, serve.
Training commands run under the chosen autocast and record it, and refuse a format this CPU
lacks before any work; inference commands (multitask predict, serve) fall back to fp32 with a
note. bf16 runs here with the CPU's bf16 flag forced on (emulated where the CPU lacks it: the
numbers are right, only slower), so the plumbing is tested on every machine."""
import json

import pytest
import torch
from typer.testing import CliRunner

from adapterkit.cli import _register_all, app
from adapterkit.errors import AdapterkitError
from adapterkit.transfer import TransferSpec, run_algorithm
from adapterkit.transfer.registry import ALGORITHMS, register_algorithm

_register_all()
runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def cpu_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)


@pytest.fixture
def no_cpu_bf16(monkeypatch):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported", "_is_amx_fp16_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)


@pytest.fixture
def probe_algorithm():
    """A registered transfer algorithm that reports the autocast it ran under."""
    @register_algorithm("precision-probe", needs_sources=False)
    def probe(spec):
        return {"test": {}, "autocast": torch.is_autocast_enabled("cpu"),
                "dtype": str(torch.get_autocast_dtype("cpu"))}

    yield "precision-probe"
    del ALGORITHMS["precision-probe"]


def test_transfer_runs_under_the_chosen_autocast_and_records_it(probe_algorithm, cpu_bf16, tmp_path):
    result = run_algorithm(probe_algorithm, TransferSpec(source=[], target="kitchen", precision="bf16",
                                                         output=str(tmp_path)))
    assert result["autocast"] and result["dtype"] == "torch.bfloat16"
    assert json.loads((tmp_path / "results.json").read_text())["spec"]["precision"] == "bf16"
    assert run_algorithm(probe_algorithm, TransferSpec(source=[], target="kitchen"))["autocast"] is False


def test_transfer_cli_passes_the_precision(probe_algorithm, cpu_bf16, tmp_path):
    result = _invoke("transfer", "run", probe_algorithm, "--target", "kitchen", "--output", tmp_path, "--precision", "bf16")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["spec"]["precision"] == "bf16" and saved["autocast"] and saved["dtype"] == "torch.bfloat16"


@pytest.fixture(scope="module")
def teacher_run(tiny_bert_dir, glue_dir, tmp_path_factory):
    from adapterkit import BottleneckConfig
    from adapterkit.training import TrainConfig, train

    out = tmp_path_factory.mktemp("teacher")
    train(TrainConfig(task="sst2", model=str(tiny_bert_dir), data_dir=str(glue_dir), max_steps=2, epochs=1,
                      batch_size=8, max_seq_len=32, output=str(out), adapter=BottleneckConfig(bottleneck_dim=8)),
          progress=False, log=lambda *a: None)
    return out


def test_training_commands_refuse_a_format_this_cpu_lacks_before_any_work(no_cpu_bf16, teacher_run, tmp_path):
    cases = [
        ("transfer", "run", "fs", "--source", "books", "--target", "kitchen", "--output", tmp_path / "t"),
        ("distill", "--teacher", teacher_run, "--student-layers", 1, "--output", tmp_path / "d"),
        ("multitask", "build", "--tasks", "cola", "--output", tmp_path / "m"),
    ]
    for args in cases:
        for precision in ("bf16", "fp16"):
            result = _invoke(*args, "--precision", precision)
            assert isinstance(result.exception, AdapterkitError), (args, result.output)
            assert f"--precision {precision}: this CPU" in str(result.exception)
            assert "use --precision fp32" in str(result.exception)
        assert not any((tmp_path / name).exists() for name in ("t/results.json", "d/metrics.json", "m/search.json"))
    with pytest.raises(AdapterkitError, match="precision must be one of"):
        TransferSpec(source=["books"], target="dvd", precision="fp8")


def test_distill_bf16_records_the_precision(cpu_bf16, teacher_run, tmp_path, monkeypatch):
    import adapterkit.transfer.distill as distill_module

    seen = []
    real = distill_module.distill

    def spy(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return real(*args, **kwargs)

    monkeypatch.setattr(distill_module, "distill", spy)
    out = tmp_path / "student"
    result = _invoke("distill", "--teacher", teacher_run, "--student-layers", 1, "--output", out, "--epochs", 1,
                     "--train-limit", 16, "--batch-size", 8, "--precision", "bf16")
    assert result.exit_code == 0, result.output
    assert seen == [True]
    assert json.loads((out / "metrics.json").read_text())["kd"]["precision"] == "bf16"


def test_multitask_bf16_build_and_predict_fallback(cpu_bf16, tiny_bert_dir, glue_dir, tmp_path, monkeypatch):
    out = tmp_path / "mt"
    result = _invoke("multitask", "build", "--tasks", "cola", "--output", out, "--budget", "teacher",
                     "--model", tiny_bert_dir, "--data-dir", glue_dir, "--train-limit", 16, "--epochs", 1,
                     "--n-min", 1, "--n-max", 1, "--max-seq-len", 24, "--batch-size", 8, "--precision", "bf16")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "search.json").read_text())["config"]["precision"] == "bf16"
    (tmp_path / "in.jsonl").write_text(json.dumps({"sentence": "the cat sat on the mat"}) + "\n")
    predictions = {}
    for precision in ("bf16", "fp32"):
        target = tmp_path / f"{precision}.jsonl"
        result = _invoke("multitask", "predict", "--model", out, "--input", tmp_path / "in.jsonl", "--output", target,
                         "--precision", precision)
        assert result.exit_code == 0, result.output
        predictions[precision] = json.loads(target.read_text())["predictions"]["cola"]
    assert predictions["bf16"]["probability"] == pytest.approx(predictions["fp32"]["probability"], abs=0.05)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    result = _invoke("multitask", "predict", "--model", out, "--input", tmp_path / "in.jsonl", "--output",
                     tmp_path / "fallback.jsonl", "--precision", "bf16")
    assert result.exit_code == 0, result.output
    assert "note: --precision bf16 requested, but this CPU" in result.output and "running in fp32" in result.output
    assert json.loads((tmp_path / "fallback.jsonl").read_text())["predictions"]["cola"] == predictions["fp32"]


def test_serve_engine_precision_and_fallback(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    from adapterkit.serve import Engine, EngineConfig
    from tests.serve_support import make_adapters

    refs = {n: str(p) for n, p in make_adapters(tiny_bert_dir, tmp_path).items()}
    name = next(iter(refs))
    inputs = [{"adapter": name, "text": "a fine day"}, {"adapter": name, "text": "nothing works"}]
    results = {}
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    for precision in ("fp32", "bf16"):
        engine = Engine(EngineConfig(model=str(tiny_bert_dir), max_wait_ms=0, precision=precision), adapters=refs)
        try:
            assert engine.precision.name == precision
            results[precision] = engine.predict(inputs, timeout=60)
        finally:
            engine.close()
    for fp32, bf16 in zip(results["fp32"], results["bf16"]):
        assert bf16["adapter"] == name and len(bf16.get("scores", [0])) == len(fp32.get("scores", [0]))
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    engine = Engine(EngineConfig(model=str(tiny_bert_dir), max_wait_ms=0, precision="bf16"))
    engine.close()
    assert engine.precision.name == "fp32"
    assert "note: --precision bf16 requested, but this CPU" in capsys.readouterr().err
    with pytest.raises(AdapterkitError, match="precision must be one of"):
        EngineConfig(precision="int8")
