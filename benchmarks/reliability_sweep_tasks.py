"""The task-type part of benchmarks/reliability_sweep.py: `train --task-type`, `eval` and
`predict` on the user's files (CSV, TSV, JSONL, SQuAD-style rows, CoNLL), per task type.

`task_runs` writes one small good file set per type and trains a run on each (one step, tiny
models); `task_type_cases` then lists the cases that must be refused: malformed rows, missing
columns, wrong label values, empty files, bad flags, missing paths, and outputs that exist (the
third element of a case names files whose bytes must survive it).
"""
from __future__ import annotations

import json
from pathlib import Path

# type -> {file name: text}: "train" and "inputs" are good; "bad-*" must be refused by train, eval and
# predict (broken rows, no input column), "badlabel-*" by train and eval (labels, answers, tags),
# "badtrain-*" by train (nothing to learn)
WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]


def _rows(n: int, make) -> str:
    return "".join(json.dumps(make(i)) + "\n" for i in range(n))


def _conll(n: int) -> str:
    return "".join(f"{WORDS[i % 8]} B-PER\nsays O\nhi O\n\n" for i in range(n))


def _qa(i: int) -> dict:
    context = f"{WORDS[i % 8]} lives in {WORDS[(i + 3) % 8]} town."
    answer = WORDS[(i + 3) % 8]
    return {"id": f"q{i}", "question": f"where does {WORDS[i % 8]} live?", "context": context,
            "answers": [{"text": answer, "answer_start": context.index(answer)}]}


FILES = {
    "classification": {"train.csv": "text,label\n" + "".join(f"{WORDS[i % 8]} word {i},{'x' if i % 2 else 'y'}\n" for i in range(16)),
                       "inputs.jsonl": _rows(3, lambda i: {"text": f"{WORDS[i]} word"}),
                       "bad-columns.csv": "text,label\nfine,x\nnot fine,y,extra\n",
                       "badlabel-empty-text.jsonl": _rows(2, lambda i: {"text": "" if i else "a", "label": "x"}),
                       "bad-json.jsonl": '{"text": "a", "label": "x"}\n{"text": "b", "label": \n',
                       "badlabel-no-label.csv": "text\nfine\nalso fine\n",
                       "badtrain-one-label.csv": "text,label\n" + "".join(f"w {i},x\n" for i in range(8)),
                       "badlabel-label-list.jsonl": _rows(4, lambda i: {"text": "a", "label": [1, 2]})},
    "regression": {"train.tsv": "text\tscore\n" + "".join(f"{WORDS[i % 8]} {i}\t{i / 4}\n" for i in range(16)),
                   "inputs.tsv": "text\nalpha\nbeta\n",
                   "badlabel-score.tsv": "text\tscore\nok\t1.5\nno\tabc\n",
                   "badlabel-nan.tsv": "text\tscore\nok\t1.5\nno\tnan\n",
                   "badlabel-inf.jsonl": _rows(4, lambda i: {"text": "a", "score": 1e400 if i == 2 else i}).replace("Infinity", "1e400")},
    "multilabel": {"train.jsonl": _rows(16, lambda i: {"text": f"{WORDS[i % 8]} {i}", "labels": ["a", "b"][: 1 + i % 2]}),
                   "inputs.jsonl": _rows(2, lambda i: {"text": WORDS[i]}),
                   "badlabel-nested.jsonl": _rows(4, lambda i: {"text": "a", "labels": [["a"]]})},
    "token-classification": {"train.txt": _conll(16), "inputs.txt": "alpha\nsays\n\nbeta\n",
                             "badlabel-tag.txt": "EU I-ORG\nrejects O\nGerman X-MISC\n",
                             "badlabel-columns.txt": "EU NNP I-ORG\nrejects O\n",
                             "badlabel-tokens.jsonl": _rows(2, lambda i: {"tokens": ["a", "b"], "tags": ["O"]})},
    "extractive-qa": {"train.jsonl": _rows(12, _qa), "inputs.jsonl": _rows(2, lambda i: {k: v for k, v in _qa(i).items() if k != "answers"}),
                      "badlabel-answer.jsonl": _rows(2, lambda i: {**_qa(i), "answers": [{"text": "zz", "answer_start": 0}]}),
                      "badlabel-start.jsonl": _rows(2, lambda i: {**_qa(i), "answers": [{"text": "town", "answer_start": 9999}]}),
                      "bad-no-context.jsonl": _rows(2, lambda i: {"id": "q", "question": "why?", "answers": []}),
                      "bad-squad-shape.json": json.dumps({"data": [{"paragraphs": "x"}]})},
    "causal-lm": {"train.jsonl": _rows(12, lambda i: {"prompt": f"say {WORDS[i % 8]}:", "response": f" {WORDS[i % 8]}"}),
                  "inputs.jsonl": _rows(2, lambda i: {"prompt": f"say {WORDS[i]}:"}),
                  "badlabel-response.jsonl": _rows(2, lambda i: {"prompt": "p", "response": 3}),
                  "bad-no-prompt.jsonl": _rows(2, lambda i: {"response": "r"})},
}
EXTRA = {"classification": [], "regression": [], "multilabel": [],  # train flags each type's good run needs
         "token-classification": [], "extractive-qa": ["--doc-stride", 4], "causal-lm": []}
BAD_FLAGS = {  # (flag, value) per type that must be refused before any work
    "classification": [("--validation-fraction", "0"), ("--validation-fraction", "1"), ("--validation-fraction", "nan"),
                       ("--text-column", "nope"), ("--label-column", "nope"), ("--text-pair-column", "nope"),
                       ("--task", "rte"), ("--eval-steps", "0"), ("--gradient-accumulation-steps", "0"),
                       ("--early-stopping-patience", "0"), ("--drop-layers", "2"), ("--drop-layers", "99")],
    "regression": [("--label-column", "text"), ("--max-seq-len", "1")],
    "multilabel": [("--threshold", "nan"), ("--threshold", "2"), ("--threshold", "0")],
    "token-classification": [("--tag-scheme", "bogus"), ("--tag-scheme", "bioes")],
    "extractive-qa": [("--doc-stride", "0"), ("--max-answer-length", "0"), ("--n-best", "0")],  # a stride > max-seq-len/4: capped, as documented
    "causal-lm": [("--max-new-tokens", "0"), ("--max-new-tokens", "-1")],
}


def write_files(tmp: Path) -> dict[str, dict[str, Path]]:
    out = {}
    for kind, files in FILES.items():
        folder = tmp / f"tt-{kind}"
        folder.mkdir(parents=True, exist_ok=True)
        out[kind] = {}
        for name, text in files.items():
            (folder / name).write_text(text)
            out[kind][name.split(".")[0]] = folder / name
    return out


def tiny_gpt2(tmp: Path) -> Path:
    """A 2-layer GPT-2 with the all-MiniLM-L6-v2 tokenizer (as tests/test_tasks.py builds it)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from adapterkit.backbone import load_tokenizer

    folder = tmp / "tiny-gpt2"
    tokenizer = load_tokenizer(None)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=128,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def task_runs(run, bert: Path, tmp: Path) -> tuple[dict, dict]:
    """(files per type, a trained run folder per type): one optimizer step each."""
    files, gpt2 = write_files(tmp), tiny_gpt2(tmp)
    runs = {}
    for kind in FILES:
        out = tmp / f"tt-run-{kind}"
        result = run(train_args(kind, gpt2 if kind == "causal-lm" else bert, files[kind]["train"]) + ["--output", out],
                     timeout=1800)
        assert result["code"] == 0, result
        runs[kind] = out
    return files, runs


def train_args(kind: str, model: Path, train_file: Path) -> list:
    return ["train", "--task-type", kind, "--model", model, "--train-file", train_file, "--max-steps", 1, "--epochs", 1,
            "--batch-size", 4, "--max-seq-len", 32, "--bottleneck", 4, "--quiet", *EXTRA[kind]]


def task_type_cases(bert: Path, gpt2: Path, files: dict, runs: dict, tmp: Path, out) -> list[tuple]:
    """(name, argv[, files that must keep their bytes]) for every task type."""
    binary, deep, empty_dir, a_file = tmp / "binary.bin", tmp / "deep.jsonl", tmp / "empty-dir", tmp / "a-file.txt"
    empty, header, binary_csv = tmp / "tt-empty.csv", tmp / "tt-header.csv", tmp / "tt-binary.csv"
    empty.write_bytes(b"")
    header.write_text("text,label\n")
    binary_csv.write_bytes(b"text,label\n" + bytes(range(128, 256)) + b",x\n")
    c: list[tuple] = []
    for kind in FILES:
        model, f, R = gpt2 if kind == "causal-lm" else bert, files[kind], runs[kind]
        base = train_args(kind, model, f["train"])
        i = base.index("--train-file") + 1

        def train(name, *extra, train_file=None, output=None):
            args = list(base)
            if train_file is not None:
                args[i] = train_file
            c.append((f"train --task-type {kind} {name}", args + list(extra) + ["--output", output or out()]))

        for label, path in (("binary", binary), ("binary csv", binary_csv), ("deep", deep), ("missing", tmp / "nope.jsonl"),
                            ("folder", empty_dir), ("empty", empty), ("header only", header)):
            train(f"--train-file {label}", train_file=path)
        for name, path in f.items():
            if name.startswith("bad"):
                train(f"--train-file {name}", train_file=path)
            if name.startswith(("bad-", "badlabel-")):
                train(f"--validation-file {name}", "--validation-file", path)
        train("--validation-file missing", "--validation-file", tmp / "nope.csv")
        train("--test-file binary", "--test-file", binary)
        for flag, value in BAD_FLAGS[kind]:
            train(f"{flag} {value}", flag, value)
        train("--output holds a run", output=R)
        train("--output under a file", output=a_file / "x")
        c += _eval_predict_cases(kind, f, R, tmp, out, binary, binary_csv, empty, header)
    c.append(("train --task-type bogus", ["train", "--task-type", "bogus", "--model", bert, "--train-file",
                                          files["classification"]["train"], "--output", out()]))
    c.append(("train --train-file without --task-type", ["train", "--model", bert, "--train-file",
                                                         files["classification"]["train"], "--output", out()]))
    return c


def _eval_predict_cases(kind, f, R, tmp, out, binary, binary_csv, empty, header) -> list[tuple]:
    c: list[tuple] = []
    for label, path in (("binary", binary), ("binary csv", binary_csv), ("missing", tmp / "nope.csv"), ("empty", empty),
                        ("header only", header), ("folder", tmp / "empty-dir"),
                        *((n, p) for n, p in f.items() if n.startswith(("bad-", "badlabel-")))):
        c.append((f"eval {kind} --file {label}", ["eval", "--adapter", R, "--file", path]))
        conll_word = kind == "token-classification" and label == "header only"  # to a CoNLL reader, one word
        if not label.startswith("badlabel-") and not conll_word:
            c.append((f"predict {kind} --input {label}", ["predict", "--adapter", R, "--input", path, "--output", out() / "p.jsonl"]))
    c.append((f"eval {kind} --split test (the run has no test file)", ["eval", "--adapter", R, "--split", "test"]))
    for flag, value in (("--split", "bogus"), ("--drop-layers", "2"), ("--drop-layers", "-1"),
                        ("--max-seq-len", "0"), ("--batch-size", "0"), ("--task", "bogus")):
        c.append((f"eval {kind} {flag} {value}", ["eval", "--adapter", R, "--file", f["train"], flag, value]))
    inputs = f["inputs"]
    existing = tmp / f"tt-pred-{kind}.jsonl"
    existing.write_text("keep me\n")
    c.append((f"predict {kind} --output exists", ["predict", "--adapter", R, "--input", inputs, "--output", existing], [existing]))
    c.append((f"predict {kind} --output == --input", ["predict", "--adapter", R, "--input", inputs, "--output", inputs,
                                                     "--overwrite"], [inputs]))
    c.append((f"predict {kind} --output .txt", ["predict", "--adapter", R, "--input", inputs, "--output", out() / "p.txt"]))
    c.append((f"predict {kind} --id-column nope", ["predict", "--adapter", R, "--input", inputs, "--output",
                                                  out() / "p.jsonl", "--id-column", "nope"]))
    c.append((f"predict {kind} --max-seq-len 0", ["predict", "--adapter", R, "--input", inputs, "--output",
                                                 out() / "p.jsonl", "--max-seq-len", "0"]))
    return c
