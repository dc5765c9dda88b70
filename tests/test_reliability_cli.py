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


# -- each command's bad values: refused with one line, before any work ----------------------
TRAIN = ["train", "--task", "rte", "--max-steps", 1, "--batch-size", 8, "--max-seq-len", 32, "--bottleneck", 4, "--quiet"]


def _with(args, flag, value):
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


@pytest.mark.parametrize("flag, value, match", [
    ("--batch-size", "0", "batch_size must be >= 1"), ("--batch-size", "-1", "batch_size"),
    ("--max-seq-len", "0", "max_seq_len"), ("--max-seq-len", "1", "max_seq_len"),
    ("--lr", "inf", "lr must be a finite number"), ("--lr", "nan", "lr"), ("--lr", "0", "lr must be > 0"),
    ("--epochs", "0", "epochs"), ("--max-steps", "0", "max_steps"), ("--bottleneck", "0", "bottleneck"),
    ("--strategy", "bogus", "strategy must be one of"), ("--compression", "bogus", "--compression"),
    ("--bucket-mb", "nan", "bucket_mb"), ("--bucket-mb", "0", "bucket_mb"), ("--push", "bad ref!", "bad ref!"),
])
def test_train_refuses_bad_values_before_loading_anything(capsys, tmp_path, flag, value, match):
    # --model names nothing that exists: the value must be refused before the model is looked at
    args = _with(TRAIN, flag, value) + ["--model", tmp_path / "no-model", "--output", tmp_path / "out"]
    refused(capsys, *args, match=match)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-2"])
def test_train_refuses_bad_reduction_factors(capsys, tmp_path, value):
    args = [a for a in TRAIN if a not in ("--bottleneck", 4)] + ["--reduction-factor", value]
    refused(capsys, *args, "--model", tmp_path / "no-model", "--output", tmp_path / "out", match="reduction_factor")


def test_train_refuses_a_max_seq_len_beyond_the_model_positions(capsys, tiny_bert_dir, glue_dir, tmp_path):
    args = _with(TRAIN, "--max-seq-len", "4096") + ["--model", tiny_bert_dir, "--data-dir", glue_dir, "--output", tmp_path / "o"]
    refused(capsys, *args, match="longer than the model's 128 positions")


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("flag, value, match", [("--max-seq-len", "0", "--max-seq-len"), ("--batch-size", "0", "--batch-size"),
                                                ("--max-seq-len", "100000", "positions")])
def test_eval_and_predict_refuse_bad_sizes(capsys, run_dir, glue_dir, tmp_path, command, flag, value, match):
    where = (["--data-dir", glue_dir] if command == "eval"
             else ["--input", _inputs(tmp_path / "in.jsonl"), "--output", tmp_path / "p.jsonl"])
    refused(capsys, command, "--adapter", run_dir, *where, flag, value, match=match)
    assert not (tmp_path / "p.jsonl").exists()


@pytest.mark.parametrize("flag, value, match", [
    ("--temperature", "0", "temperature must be > 0"), ("--temperature", "nan", "temperature"),
    ("--alpha", "2", "alpha"), ("--alpha", "nan", "alpha"), ("--epochs", "0", "epochs"), ("--lr", "nan", "lr"),
    ("--batch-size", "0", "batch_size"), ("--layer-map", "bogus", "layer_map"), ("--method", "x", "--method"),
])
def test_distill_refuses_bad_values(capsys, run_dir, tmp_path, flag, value, match):
    args = ["distill", "--teacher", run_dir, "--student-layers", 1, "--train-limit", 8, "--epochs", 1, "--output", tmp_path / "s"]
    refused(capsys, *_with(args, flag, value), match=match)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("flag, value, match", [("--epochs", "0", "epochs"), ("--batch-size", "0", "batch_size"),
                                                ("--max-seq-len", "0", "max_seq_len"), ("--lr", "nan", "lr"),
                                                ("--target-shots", "1", "target_shots")])
def test_transfer_refuses_bad_values(capsys, flag, value, match):
    refused(capsys, "transfer", "run", "fs", "--quick", "--target", "kitchen", "--source", "books", flag, value, match=match)


@pytest.mark.parametrize("flag, value, match", [("--port", "0", "--port"), ("--port", "70000", "--port"),
                                                ("--max-upload-mb", "0", "--max-upload-mb"), ("--max-upload-mb", "nan", "--max-upload-mb"),
                                                ("--log-level", "bogus", "--log-level")])
def test_hub_serve_refuses_bad_settings_before_starting(capsys, tmp_path, flag, value, match):
    refused(capsys, "hub", "serve", "--root", tmp_path / "hub", flag, value, match=match)


def test_hub_serve_refuses_token_files_that_are_folders_or_binary(capsys, tmp_path):
    binary = tmp_path / "tokens.bin"
    binary.write_bytes(bytes(range(128, 256)))
    refused(capsys, "hub", "serve", "--root", tmp_path / "hub", "--token-file", tmp_path, match="is a folder")
    refused(capsys, "hub", "serve", "--root", tmp_path / "hub", "--token-file", binary, match="not UTF-8")


def test_an_empty_or_corrupt_model_folder_is_one_line(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(capsys, *TRAIN, "--model", empty, "--output", tmp_path / "o1", match="could not load")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes(b"\xff\xfe{")
    refused(capsys, *TRAIN, "--model", broken, "--output", tmp_path / "o2", match="config.json")


@pytest.mark.parametrize("label, data, match", [("binary", b"\x80\xff" * 8, "not UTF-8"), ("deep", b"[" * 100_000, "nested"),
                                                ("list", b"[1, 2]", "must be an object"), ("cut", b'{"format": "adapt', "not valid JSON")])
def test_eval_of_a_corrupt_run_config_is_one_line(capsys, run_dir, glue_dir, tmp_path, label, data, match):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    (folder / "run_config.json").write_bytes(data)
    refused(capsys, "eval", "--adapter", folder, "--data-dir", glue_dir, match=match)


def test_resume_over_only_incomplete_checkpoints_is_an_error_not_a_fresh_start(capsys, run_dir, tiny_bert_dir, glue_dir, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    checkpoint = folder / "checkpoint"
    assert checkpoint.is_dir()
    (checkpoint / "state.json").write_bytes(b"{")
    args = TRAIN + ["--model", tiny_bert_dir, "--data-dir", glue_dir, "--output", folder, "--resume"]
    refused(capsys, *args, match="no complete checkpoint to resume from")
    assert (checkpoint / "state.json").read_bytes() == b"{"  # kept for the user to look at


@pytest.mark.parametrize("flag, value, match", [
    ("--port", "0", "--port"), ("--port", "70000", "--port"), ("--max-batch-size", "0", "max_batch_size"),
    ("--max-queue", "0", "max_queue"), ("--max-wait-ms", "nan", "max_wait_ms"), ("--max-wait-ms", "inf", "max_wait_ms"),
    ("--max-wait-ms", "-1", "max_wait_ms"), ("--max-adapters", "0", "max_adapters"), ("--max-memory-mb", "0", "max_memory_mb"),
    ("--max-memory-mb", "nan", "max_memory_mb"), ("--max-length", "1", "max_length"), ("--threads", "0", "threads"),
    ("--replicas", "0", "--replicas"), ("--engine", "bogus", "--engine"), ("--adapter", "noequals", "NAME=REF"),
])
def test_serve_refuses_bad_settings_before_loading_a_model(capsys, tmp_path, flag, value, match):
    refused(capsys, "serve", "--model", tmp_path / "no-model", flag, value, match=match)


def test_serve_refuses_bad_token_files_and_a_max_length_beyond_the_positions(capsys, tmp_path, tiny_bert_dir):
    binary = tmp_path / "token.bin"
    binary.write_bytes(bytes(range(128, 256)))
    refused(capsys, "serve", "--model", tiny_bert_dir, "--token-file", binary, match="not UTF-8")
    refused(capsys, "serve", "--model", tiny_bert_dir, "--token-file", tmp_path, match="is a folder")
    refused(capsys, "serve", "--model", tiny_bert_dir, "--max-length", "4096", match="longer than the model's 128 positions")


@pytest.mark.parametrize("label, data", [("binary", b"\xff\xfe"), ("deep", b"[" * 100_000), ("list", b"[]"),
                                         ("values", b'{"latest": 1}'), ("cut", b'{"latest": "ab')])
def test_corrupt_folder_hub_tags_and_cards_are_one_line(capsys, run_dir, tmp_path, label, data):
    hub = tmp_path / "hub"
    code, err = cli(capsys, "push", run_dir, "team/a", "--hub", hub)
    assert code == 0, err
    repo = hub / "repos" / "team" / "a"
    (repo / "tags.json").write_bytes(data)
    for args in (["hub", "list"], ["hub", "show", "team/a"], ["pull", "team/a", tmp_path / "p1"]):
        refused(capsys, *args, "--hub", hub, match="corrupt")
    assert not (tmp_path / "p1").exists()
    if label == "values":
        return  # an object: a (meaningless) card, shown as it is
    (repo / "tags.json").write_text('{"latest": "%s"}' % next((repo / "versions").glob("*.json")).stem)
    for card in (repo / "versions").glob("*.json"):
        card.write_bytes(data)
    refused(capsys, "hub", "show", "team/a", "--hub", hub, match="corrupt")


@pytest.mark.parametrize("targets", [{"layers": "(("}, {"attn": "[a-"}, {"ffn": "*x"}])
def test_a_bad_targets_regex_is_one_clear_error(targets):
    import adapterkit as ak
    from adapterkit.errors import AdapterkitError

    with pytest.raises(AdapterkitError, match="targets"):
        ak.BottleneckConfig(bottleneck_dim=4, targets=targets)


@pytest.mark.parametrize("flag, value, match", [
    ("--c", "nan", "c must be"), ("--c", "inf", "c must be"), ("--epochs", "0", "epochs"), ("--kd-epochs", "0", "kd_epochs"),
    ("--lr", "nan", "lr"), ("--lr", "0", "lr"), ("--kd-lr", "inf", "kd_lr"), ("--batch-size", "0", "batch_size"),
    ("--max-seq-len", "0", "max_seq_len"), ("--train-limit", "0", "train_limit"), ("--adapter-bottleneck", "0", "bottleneck"),
    ("--branch-layer", "-1", "branch_layer"), ("--n-min", "0", "n_min"),
])
def test_multitask_build_refuses_bad_values_before_any_work(capsys, tmp_path, flag, value, match):
    args = ["multitask", "build", "--tasks", "rte", "--model", tmp_path / "no-model", "--output", tmp_path / "out", flag, value]
    refused(capsys, *args, match=match)
    assert not (tmp_path / "out").exists()


def test_multitask_build_refuses_a_max_seq_len_beyond_the_positions(capsys, tiny_bert_dir, glue_dir, tmp_path):
    args = ["multitask", "build", "--tasks", "rte", "--model", tiny_bert_dir, "--data-dir", glue_dir, "--max-seq-len", "4096",
            "--output", tmp_path / "out"]
    refused(capsys, *args, match="longer than the model's 128 positions")


@pytest.mark.parametrize("args, match", [
    (["fuse", "--task", "rte", "--composition", "average", "--weights", "x,y"], "'x' is not a number"),
    (["fuse", "--task", "rte", "--composition", "average", "--weights", "nan,1"], "finite"),
    (["fuse", "--task", "rte", "--weights", "1,2"], "--weights is for --composition average"),
    (["fuse", "--task", "rte", "--composition", "split", "--splits", "-5"], "--splits must be >= 1"),
    (["fuse", "--task", "rte", "--drop-layers", "-1"], "--drop-layers"),
    (["merge", "--output", "OUT", "--weights", "x"], "'x' is not a number"),
    (["merge", "--output", "OUT", "--weights", "nan,1"], "finite"),
])
def test_fuse_and_merge_refuse_bad_numbers_before_loading(capsys, tmp_path, args, match):
    args = [tmp_path / "out" if a == "OUT" else a for a in args]
    refused(capsys, *args, "--adapters", f"{tmp_path / 'a'},{tmp_path / 'b'}", "--model", tmp_path / "no-model", match=match)
    assert not (tmp_path / "out").exists()
