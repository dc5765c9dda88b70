"""Task types on user files: every type trains, evaluates, predicts and round-trips its head
from the CLI (in process) on slices of the real shared data with tiny models; bad input gives
one line; tag schemes, SQuAD scores and the loop's accumulation and early stopping."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from adapterkit.cli import main
from tests import task_fixtures as fx

DATA = fx.shared_data()
needs_data = pytest.mark.skipif(DATA is None, reason="../shared/data not present")


def cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    """A 2-layer, width-32 GPT-2 with the all-MiniLM-L6-v2 tokenizer (its [SEP] ends a text)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from adapterkit.backbone import load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = load_tokenizer(None)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=128,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


CASES = {  # type: (fixture writer, extra train flags, main metric, fields of a prediction)
    "classification": (fx.amazon_csv, ["--label-column", "stars"], "accuracy", {"label", "score", "scores", "id"}),
    "regression": (fx.amazon_regression, [], "pearson", {"score"}),
    "multilabel": (fx.amazon_multilabel, [], "micro_f1", {"labels", "scores"}),
    "token-classification": (fx.conll, [], "f1", {"words", "tags", "scores"}),
    "extractive-qa": (fx.squad, ["--max-seq-len", 96, "--doc-stride", 24], "f1", {"id", "answer", "start", "end", "score"}),
    "causal-lm": (fx.causal, [], "perplexity", {"prompt", "generated"}),
}


@needs_data
@pytest.mark.parametrize("task_type", [  # one type in the fast tier; each takes 10-60 s on a busy 2-core machine
    t if t == "classification" else pytest.param(t, marks=pytest.mark.slow) for t in CASES])
def test_every_type_trains_evaluates_predicts_and_round_trips(task_type, tiny_bert_dir, tiny_gpt2_dir, tmp_path, capsys):
    writer, flags, metric, fields = CASES[task_type]
    files = writer(DATA, tmp_path / "data")
    model = tiny_gpt2_dir if task_type == "causal-lm" else tiny_bert_dir
    out = tmp_path / "run"
    args = ["train", "--task-type", task_type, "--model", model, "--train-file", files["train"], "--output", out,
            "--epochs", 2, "--batch-size", 8, "--max-seq-len", 64, "--bottleneck", 8, "--quiet", "--lr", 3e-3, *flags]
    if files["validation"]:
        args += ["--validation-file", files["validation"]]
    code, stdout, err = cli(capsys, *args)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task_type"] == task_type and metrics["metric"] == metric
    assert len(metrics["epochs"]) == 2 and metrics["adapter_parameters"] > 0
    if not files["validation"]:
        assert "no validation file: held out" in stdout
    manifest = json.loads((out / "adapterkit_config.json").read_text())
    assert manifest["task"]["type"] == task_type

    # eval reloads backbone + head + adapter and reproduces the best dev score exactly
    dev = files["validation"]
    if dev:
        code, stdout, err = cli(capsys, "eval", "--adapter", out, "--file", dev, "--max-seq-len", 64, *(
            ["--max-seq-len", 96] if task_type == "extractive-qa" else []))
        assert code == 0, err
        scores = dict(line.split(": ") for line in stdout.strip().splitlines())
        assert float(scores[metric]) == pytest.approx(metrics["best"][metric], abs=1e-4)

    predictions = tmp_path / "pred.jsonl"
    code, stdout, err = cli(capsys, "predict", "--adapter", out, "--input", files["inputs"], "--output", predictions)
    assert code == 0, err
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert records and fields <= set(records[0]), records[0]
    _check_prediction(task_type, records, manifest["task"], files)


def _check_prediction(task_type: str, records: list[dict], spec: dict, files: dict) -> None:
    if task_type == "classification":
        assert all(r["label"] in spec["labels"] == sorted(spec["labels"], key=int) for r in records)
        assert spec["labels"] == ["1", "2", "4", "5"]
        assert all(abs(sum(r["scores"].values()) - 1) < 1e-4 for r in records)
    elif task_type == "multilabel":
        assert spec["labels"] == ["books", "kitchen", "negative", "positive"]
        assert all(set(r["labels"]) <= set(spec["labels"]) for r in records)
    elif task_type == "token-classification":
        words = [chunk for chunk in Path(files["inputs"]).read_text().split("\n\n")
                 if chunk.strip() and not chunk.strip().startswith("-DOCSTART-")]
        assert len(records) == len(words)
        assert all(len(r["words"]) == len(r["tags"]) and set(r["tags"]) <= set(spec["labels"]) for r in records)
        assert spec["tag_scheme"] == "iob1" and spec["labels"][0] == "O"
    elif task_type == "extractive-qa":
        contexts = {qa["id"]: p["context"] for a in json.loads(Path(files["inputs"]).read_text())["data"]
                    for p in a["paragraphs"] for qa in p["qas"]}
        for r in records:
            assert contexts[r["id"]][r["start"]:r["end"]] == r["answer"]
    elif task_type == "causal-lm":
        assert all(isinstance(r["generated"], str) for r in records)


@pytest.mark.parametrize("task_type", list(CASES))
def test_head_round_trip_is_exact_through_load_for_inference(task_type, tiny_bert_dir, tiny_gpt2_dir, tmp_path):
    """A saved adapter with its head metadata rebuilds the same head, also after a hub push and
    pull: identical outputs."""
    import adapterkit as ak
    from adapterkit.hub import pull_adapter, push_adapter
    from adapterkit.tasks import TaskSpec, load_for_inference, model_for

    labels = {"classification": ["neg", "pos", "mid"], "multilabel": ["a", "b"],
              "token-classification": ["O", "B-PER", "I-PER"]}.get(task_type)
    spec = TaskSpec(type=task_type, labels=labels)
    source = str(tiny_gpt2_dir if task_type == "causal-lm" else tiny_bert_dir)
    torch.manual_seed(1)
    model = model_for(spec, source)
    ak.add_adapter(model, "mine", ak.BottleneckConfig(bottleneck_dim=4, sharing=1))
    ak.train_adapter(model, "mine")  # only the adapter and the head stay trainable
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))  # adapter and head away from their initial values
    ak.save_adapter(model, "mine", tmp_path / "adapter", task=spec.to_dict())
    # and through a folder hub: push, pull, rebuild
    push_adapter(tmp_path / "adapter", "me/heads:v1", hub=str(tmp_path / "hub"))
    pulled = pull_adapter("me/heads:v1", tmp_path / "pulled", hub=str(tmp_path / "hub"))
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    model.eval()
    keys = {"extractive-qa": ("start_logits", "end_logits")}.get(task_type, ("logits",))
    for folder in (tmp_path / "adapter", pulled):
        loaded, _, spec2, _ = load_for_inference(folder)
        assert spec2 == spec
        if labels:
            assert loaded.config.id2label == dict(enumerate(labels))
        with torch.inference_mode():
            a, b = model(input_ids=ids), loaded(input_ids=ids)
        for key in keys:
            assert torch.equal(getattr(a, key), getattr(b, key))


@needs_data
def test_glue_style_pair_columns_are_guessed_and_told(tiny_bert_dir, tmp_path, capsys):
    rows = ["sentence1\tsentence2\tlabel"] + [f"a cat {i}\ta dog {i}\t{'yes' if i % 2 else 'no'}" for i in range(20)]
    (tmp_path / "pairs.tsv").write_text("\n".join(rows) + "\n")
    code, stdout, err = cli(capsys, "train", "--task-type", "classification", "--model", tiny_bert_dir,
                            "--train-file", tmp_path / "pairs.tsv", "--output", tmp_path / "run", "--max-steps", 1,
                            "--bottleneck", 4, "--quiet")
    assert code == 0, err
    assert "text column 'sentence1' (guessed" in stdout and "text pair column 'sentence2'" in stdout
    assert "held out 2 of 20 rows" in stdout and "stratified by label" in stdout
    spec = json.loads((tmp_path / "run/adapterkit_config.json").read_text())["task"]
    assert (spec["text_column"], spec["text_pair_column"], spec["labels"]) == ("sentence1", "sentence2", ["no", "yes"])


BAD_FILES = [  # (file name, content, type, expected message)
    ("bad.csv", "text,label\nfine,1\nnot fine,1,extra\n", "classification", "bad.csv:3: expected 2 columns, found 3"),
    ("bad.jsonl", '{"text": "a", "label": "x"}\n{"text": "", "label": "y"}\n', "classification",
     "bad.jsonl row 2: column 'text' is empty"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": \n', "classification", "bad.jsonl:2: not valid JSON"),
    ("bad.tsv", "text\tscore\nok\t1.5\nno\tabc\n", "regression", "bad.tsv row 2: column 'score': expected a number"),
    ("bad.csv", "words,stuff\nhello,1\n", "classification", "cannot tell which column holds the text"),
    ("bad.txt", "EU I-ORG\nrejects O\nGerman X-MISC\n", "token-classification", "bad.txt:3: column 'tag': bad tag 'X-MISC'"),
    ("bad.txt", "EU NNP I-ORG\nrejects O\n", "token-classification", "bad.txt:2: expected 3 columns"),
    ("bad.jsonl", '{"question": "q?", "context": "abc", "answers": [{"text": "zz", "answer_start": 0}]}\n',
     "extractive-qa", "bad.jsonl:1: answer"),
    ("bad.jsonl", '{"prompt": "p", "response": 3}\n', "causal-lm", "bad.jsonl:1: column 'response' is empty or not text"),
    ("bad.json", '{"data": [{"paragraphs": "x"}]}', "extractive-qa", "bad.json: data[0].paragraphs must be a list"),
    ("bad.json", '{"data": ' + "[" * 100_000, "extractive-qa", "bad.json: JSON nested too deeply"),
]


@pytest.mark.parametrize("name,content,task_type,message", BAD_FILES)
def test_malformed_rows_give_one_line_and_write_nothing(name, content, task_type, message, tiny_bert_dir, tmp_path, capsys):
    (tmp_path / name).write_text(content)
    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--task-type", task_type, "--model", tiny_bert_dir, "--train-file",
                       tmp_path / name, "--output", out, "--quiet")
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert message in err, err
    assert not out.exists()


def test_flag_mistakes_give_one_line(tmp_path, capsys):
    for args, message in [(["--train-file", "x.csv"], "--train-file needs --task-type"),
                          (["--task-type", "classification"], "needs --train-file"),
                          (["--task-type", "summarisation", "--train-file", "x.csv"], "unknown task type"),
                          (["--task-type", "classification", "--train-file", "x.csv", "--validation-fraction", "1.5"],
                           "validation_fraction must be < 1"),
                          (["--task-type", "multilabel", "--train-file", "x.csv", "--threshold", "nan"],
                           "threshold must be a finite number"),
                          (["--task-type", "extractive-qa", "--train-file", "x.json", "--doc-stride", "0"],
                           "doc_stride must be >= 1"),
                          (["--task", "rte", "--task-type", "classification", "--train-file", "x.csv"],
                           "--task rte (a GLUE task) and --task-type classification (your files) exclude each other")]:
        code, _, err = cli(capsys, "train", *args, "--output", tmp_path / "run")
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("labels", [["a", "b"] * 6, ["a"] * 11 + ["b"], list("abcdefghijkl")])
def test_held_out_validation_is_never_empty(labels):
    import datasets

    from adapterkit.tasks.load import hold_out

    raw = datasets.Dataset.from_dict({"i": list(range(12)), "label": labels})
    train, dev = hold_out(raw, "label", 0.1, seed=0)  # round(1.2) = 1 row; per label round(0.5) = 0 rows
    assert len(dev) == 1 and len(train) == 11 and sorted([*train["i"], *dev["i"]]) == list(range(12))


def test_eval_and_predict_of_a_file_run_refuse_what_they_would_ignore(tiny_bert_dir, tmp_path, capsys):
    rows = "".join(f"r{i}\ta cat {i}\t{'yes' if i % 2 else 'no'}\n" for i in range(12))
    (tmp_path / "t.tsv").write_text("key\ttext\tlabel\n" + rows)
    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--task-type", "classification", "--model", tiny_bert_dir, "--train-file",
                       tmp_path / "t.tsv", "--output", out, "--max-steps", 1, "--bottleneck", 4, "--quiet")
    assert code == 0, err
    for args, message in [(["eval", "--split", "bogus"], "--split 'bogus': use dev, train or test"),
                          (["eval", "--split", "test"], "the run has no test file; pass --file"),
                          (["predict", "--input", tmp_path / "t.tsv", "--output", tmp_path / "p.jsonl", "--id-column", "nope"],
                           "no id column 'nope'")]:
        code, _, err = cli(capsys, *args, "--adapter", out)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "p.jsonl").exists()
    code, _, err = cli(capsys, "predict", "--adapter", out, "--input", tmp_path / "t.tsv", "--output", tmp_path / "p.jsonl",
                       "--id-column", "key")
    assert code == 0, err
    assert [json.loads(line)["key"] for line in (tmp_path / "p.jsonl").read_text().splitlines()] == [f"r{i}" for i in range(12)]


def test_tag_schemes_are_read_as_their_entities():
    from adapterkit.tasks.metrics import entity_metrics
    from adapterkit.tasks.tags import detect_scheme, normalise, to_iob2

    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]
    assert detect_scheme([iob1]) == "iob1"
    assert to_iob2(iob1) == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG"]
    assert detect_scheme([["B-PER", "I-PER", "O"]]) == "iob2"
    bioes = ["B-PER", "E-PER", "S-LOC", "O"]
    assert detect_scheme([bioes]) == "bioes"
    assert normalise([bioes], None, "x") == ([bioes], "bioes")
    # the same three entities in all three schemes score perfectly against each other
    iob2 = to_iob2(iob1)
    assert entity_metrics([iob2], [iob2])["f1"] == 1.0
    # gold holds 4 entities (PER, PER, LOC, ORG); 3 predicted, 2 of them right: P = 2/3, R = 1/2
    predicted = ["B-PER", "I-PER", "O", "O", "B-LOC", "B-MISC"]
    m = entity_metrics([predicted], [iob2])
    assert (m["precision"], m["recall"]) == pytest.approx((2 / 3, 1 / 2))
    from adapterkit.errors import AdapterkitError

    with pytest.raises(AdapterkitError, match="not part of the iob2 scheme"):
        normalise([bioes], "iob2", "f")
    for tags, scheme, shown in ((["B-PER", "O"], "bioes", "B-PER O"), (["S-PER", "I-PER"], "bioes", "S-PER I-PER"),
                                (["B-PER", "I-PER"], "bioes", "B-PER I-PER (end)"), (["B-PER", "E-LOC"], "bioes", "B-PER E-LOC"),
                                (["O", "I-PER"], "iob2", "O I-PER"), (["B-PER", "I-LOC"], "iob2", "B-PER I-LOC")):
        with pytest.raises(AdapterkitError, match=f"f.txt:3: tags '{re.escape(shown)}' break the {scheme} scheme"):
            normalise([["O"], tags], scheme, "f.txt", ["f.txt:1", "f.txt:3"])
    assert normalise([["I-PER", "O", "I-LOC"]], "iob1", "f")[0] == [["B-PER", "O", "B-LOC"]]  # IOB1: any sequence


def test_squad_scores_follow_the_official_definitions():
    from adapterkit.tasks.squad_metric import f1, normalize_answer, squad_scores

    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("an Apple a day") == "apple day"
    assert f1("x b c", "b c d") == pytest.approx(2 / 3)
    assert f1("a b c", "b c d") == pytest.approx(0.8)  # the article "a" is dropped: P 2/2, R 2/3
    assert f1("the", "a") == 0.0  # both normalise to nothing: no common tokens
    scores = squad_scores({"q1": "Denver Broncos", "q2": "in 1990"},
                          {"q1": ["Denver Broncos", "Broncos"], "q2": ["1990"], "q3": ["x"]})
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)


def test_qa_span_search_respects_context_and_length():
    from adapterkit.tasks.extractive_qa import best_span

    offsets = [[-1, -1], [-1, -1], [0, 3], [4, 9], [10, 12], [-1, -1]]
    start = torch.tensor([9.0, 0, 1, 5, 0, 0])
    end = torch.tensor([9.0, 0, 0, 1, 6, 0])
    assert best_span(start, end, offsets, n_best=6, max_answer_length=30)[:2] == (4, 12)
    assert best_span(start, end, offsets, n_best=6, max_answer_length=1)[:2] == (4, 9)


def test_gradient_accumulation_matches_one_large_batch(tiny_bert_dir):
    from adapterkit.backbone import load_model
    from adapterkit.data import PadCollator
    from adapterkit.loop import LocalRunner, _optimizer_step

    rows = [{"input_ids": [101, 2000 + i, 2001 + i, 102], "attention_mask": [1] * 4, "labels": i % 2} for i in range(8)]
    collate = PadCollator(0)
    params = []
    for accum, size in ((1, 8), (2, 4)):
        torch.manual_seed(0)
        model = load_model(str(tiny_bert_dir), num_labels=2)
        model.config.hidden_dropout_prob = 0.0
        model.eval()  # no dropout: both runs see the same function
        runner = LocalRunner(model)
        optimizer = torch.optim.SGD(runner.parameters(), lr=0.5)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        micro = iter([(None, collate(rows[i:i + size])) for i in range(0, 8, size)])
        _, seen = _optimizer_step(runner, micro, accum, optimizer, scheduler)
        assert seen == 8
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(params[0], params[1], atol=1e-6)


def test_early_stopping_and_eval_steps(tmp_path):
    """A metric that never improves stops the run after `patience` evaluations past the best."""
    from adapterkit.data import PadCollator
    from adapterkit.loop import LocalRunner, LoopSettings, fit
    from adapterkit.tasks import Split, TaskData, TaskSpec

    import datasets

    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.zeros(1))
    model.forward = lambda input_ids, attention_mask=None, labels=None: type("O", (), {"loss": (model.w - 1).pow(2).sum()})()
    rows = datasets.Dataset.from_dict({"input_ids": [[1, 2]] * 40, "attention_mask": [[1, 1]] * 40, "labels": [0] * 40})
    calls = []
    task = TaskData(name="t", spec=TaskSpec(type="classification", labels=["a", "b"]), train=Split(None, rows),
                    dev=Split(None, rows), collate=PadCollator(0),
                    evaluate=lambda m, s: calls.append(1) or {"accuracy": 0.5}, metric="accuracy")
    runner = LocalRunner(model)
    runner.save_best = lambda *a, **k: None
    runner.checkpoint = lambda *a, **k: None
    cfg = LoopSettings(epochs=5, batch_size=4, eval_steps=3, early_stopping_patience=2, lr=0.1)
    metrics = fit(model, task, runner, cfg, tmp_path, progress=False, log=lambda line: None)
    assert metrics["stopped_early"] is True
    assert [h["step"] for h in metrics["epochs"]] == [3, 6, 9]  # best at 3, then 2 evaluations without gain
    assert metrics["best_step"] == 3 and len(calls) == 3


def test_parquet_files_are_read_like_csv(tmp_path):
    """Parquet goes through the same datasets loader, column guessing and label names as CSV."""
    import pandas as pd

    from adapterkit.tasks.load import DataFiles, task_spec
    from adapterkit.tasks.registry import get_task_type

    frame = pd.DataFrame({"review": ["good film", "bad film", "great", "awful"], "stars": ["5", "1", "4", "1"]})
    frame.to_parquet(tmp_path / "r.parquet")
    frame.to_csv(tmp_path / "r.csv", index=False)
    kind = get_task_type("classification")
    read = {}
    for name in ("r.parquet", "r.csv"):
        spec = task_spec("classification", DataFiles(train=str(tmp_path / name)))
        notes = []
        raw = kind.read(str(tmp_path / name), spec, notes)
        read[name] = (raw["text_a"], [str(v) for v in raw["label"]], spec.labels)
        assert any("text column 'review' (guessed" in n for n in notes), notes
    assert read["r.parquet"] == read["r.csv"]


@needs_data
def test_eval_drop_layers_applies_to_runs_on_user_files(tiny_bert_dir, tmp_path, capsys):
    """`eval --drop-layers k` (and the run's own --drop-layers by default) acts on --task-type
    runs as on GLUE runs; a fully fine-tuned run refuses an explicit k > 0 in one line."""
    from adapterkit.compose.drop import adapter_drop, drop_for_run
    from adapterkit.errors import AdapterkitError
    from adapterkit.tasks import load_for_inference

    lines = Path(fx.amazon_regression(DATA, tmp_path / "data")["train"]).read_text().splitlines(keepends=True)
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"  # a regression: its scores move with any change
    train.write_text("".join(lines[:33]))
    dev.write_text(lines[0] + "".join(lines[33:]))
    out = tmp_path / "run"
    common = ["--model", tiny_bert_dir, "--train-file", train, "--validation-file", dev, "--epochs", 1,
              "--batch-size", 8, "--max-seq-len", 48, "--quiet"]
    code, _, err = cli(capsys, "train", "--task-type", "regression", "--output", out, "--bottleneck", 8,
                       "--sharing", 2, "--drop-layers", 1, "--lr", 3e-2, *common)  # one adapter shared by both layers
    assert code == 0, err
    best = json.loads((out / "metrics.json").read_text())["best"]
    scores = {}
    for k in (None, 0, 1):
        code, stdout, err = cli(capsys, "eval", "--adapter", out, "--file", dev, *([] if k is None else ["--drop-layers", k]))
        assert code == 0, err
        scores[k] = {name: float(v) for name, v in (line.split(": ") for line in stdout.strip().splitlines())}
    assert scores[None] == scores[1] and scores[None]["pearson"] == pytest.approx(best["pearson"], abs=1e-4)
    assert scores[0] != scores[1]

    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    logits = {}
    for k in (None, 0):
        model = load_for_inference(out, drop_layers=k)[0]
        assert adapter_drop(model) == (1 if k is None else k)
        with torch.inference_mode():
            logits[k] = model(input_ids=ids).logits
    assert not torch.equal(logits[None], logits[0])
    with pytest.raises(AdapterkitError, match="--drop-layers 2: the model has 2 layers"):  # would skip every adapter
        load_for_inference(out, drop_layers=2)

    code, _, err = cli(capsys, "eval", "--adapter", out, "--file", dev, "--drop-layers", -1)
    assert code == 1 and "--drop-layers must be >= 0" in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(AdapterkitError, match="full fine-tuning; it has no adapters to drop"):
        drop_for_run(model, {"full_finetune": True}, 1)


@needs_data
def test_python_api_trains_scores_and_predicts_a_tagger(tiny_bert_dir, tmp_path):
    """The CLI's path from Python: train(TrainConfig(task_type=...)) on CoNLL files, then
    evaluate_file reproduces the best dev score and the test score, predict_file tags each word."""
    from adapterkit.config import BottleneckConfig
    from adapterkit.tasks import DataFiles
    from adapterkit.tasks.inference import evaluate_file, predict_file
    from adapterkit.training import TrainConfig, train

    files = fx.conll(DATA, tmp_path / "data")
    out = tmp_path / "run"
    data = DataFiles(train=files["train"], validation=files["validation"], test=files["test"])
    metrics = train(TrainConfig(task_type="token-classification", data=data, model=str(tiny_bert_dir), epochs=1,
                                batch_size=8, max_seq_len=64, lr=3e-3, output=str(out),
                                adapter=BottleneckConfig(bottleneck_dim=8)), progress=False, log=lambda line: None)
    assert metrics["task_type"] == "token-classification" and set(metrics["test"]) >= {"f1", "precision", "recall"}
    for split, expected in (("dev", metrics["best"]), ("test", metrics["test"])):
        scores = evaluate_file(out, split=split, note=lambda line: None)
        assert scores == pytest.approx(expected, abs=1e-6)
    records = predict_file(out, files["inputs"], note=lambda line: None)
    sentences = [c for c in Path(files["inputs"]).read_text().split("\n\n") if c.strip() and "-DOCSTART-" not in c]
    assert [r["words"] for r in records] == [c.split() for c in sentences]
    assert all(len(r["tags"]) == len(r["words"]) for r in records)
