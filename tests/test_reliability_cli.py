"""Every CLI command refuses bad values and unsafe outputs with one line and exit 1, in process
(through `adapterkit.cli.main`, the one place that turns errors into messages)."""
from __future__ import annotations

import json

import pytest

from adapterkit.cli import main


def cli(capsys, *args) -> tuple[int, str]:
    """(exit status, stderr) of `adapterkit ARGS`."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    err = capsys.readouterr().err
    return code, err


def refused(capsys, *args, match: str) -> str:
    code, err = cli(capsys, *args)
    assert code == 1, (args, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert match in err, err
    return err


@pytest.fixture(scope="module")
def run_dir(tiny_bert_dir, glue_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rel") / "run"
    main_args = ["train", "--task", "rte", "--model", tiny_bert_dir, "--data-dir", glue_dir, "--output", out,
                 "--max-steps", 2, "--epochs", 1, "--batch-size", 8, "--max-seq-len", 32, "--bottleneck", 4, "--quiet"]
    try:
        main([str(a) for a in main_args])
    except SystemExit as e:
        assert not e.code
    return out


def _inputs(path):
    path.write_text("".join(json.dumps({"sentence1": f"a cat {i}", "sentence2": "a cat"}) + "\n" for i in range(3)))
    return path


def test_predict_never_overwrites_without_asking(capsys, run_dir, tmp_path):
    inputs = _inputs(tmp_path / "in.jsonl")
    original = inputs.read_text()
    for flags in ([], ["--overwrite"]):
        refused(capsys, "predict", "--adapter", run_dir, "--input", inputs, "--output", inputs, *flags, match="would overwrite the input")
    assert inputs.read_text() == original
    out = tmp_path / "pred.jsonl"
    out.write_text("keep me\n")
    refused(capsys, "predict", "--adapter", run_dir, "--input", inputs, "--output", out, match="--overwrite")
    assert out.read_text() == "keep me\n"
    code, err = cli(capsys, "predict", "--adapter", run_dir, "--input", inputs, "--output", out, "--overwrite")
    assert code == 0, err
    assert len(out.read_text().splitlines()) == 3


def test_outputs_under_a_file_or_unwritable_are_refused_before_work(capsys, run_dir, tmp_path):
    inputs = _inputs(tmp_path / "in.jsonl")
    refused(capsys, "predict", "--adapter", run_dir, "--input", inputs, "--output", inputs / "x.jsonl", match="is a file, not a folder")
    refused(capsys, "train", "--output", inputs / "run", match="is a file, not a folder")


def test_distill_export_import_refuse_existing_outputs(capsys, run_dir, tmp_path):
    refused(capsys, "distill", "--teacher", run_dir, "--student-layers", 1, "--output", run_dir, match="would overwrite the input")
    refused(capsys, "distill", "--teacher", run_dir, "--student-layers", 1, "--output", run_dir, "--overwrite", match="would overwrite the input")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    refused(capsys, "distill", "--teacher", run_dir, "--student-layers", 1, "--output", busy, match="--overwrite")
    refused(capsys, "export", run_dir, busy, "--to", "adapterhub", match="--overwrite")
    refused(capsys, "export", run_dir, run_dir, "--to", "adapterhub", "--overwrite", match="would overwrite the input")
    exported = tmp_path / "exported"
    assert cli(capsys, "export", run_dir, exported, "--to", "adapterhub")[0] == 0
    refused(capsys, "import", exported, run_dir, "--from", "adapterhub", "--model", run_dir, match="--overwrite")
    assert (busy / "keep.txt").read_text() == "x"


@pytest.mark.parametrize("algorithm", ["fs", "mixed", "sequential"])
def test_transfer_algorithms_that_learn_from_sources_refuse_to_run_without(capsys, algorithm):
    refused(capsys, "transfer", "run", algorithm, "--quick", "--target", "kitchen", match="give --source")
