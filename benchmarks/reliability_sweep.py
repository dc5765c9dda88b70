"""Sweep every `adapterkit` command with bad values and corrupted files; report any traceback.

    PYTHONPATH=$PWD:$PWD/hub python3 benchmarks/reliability_sweep.py [--only WORD] [--json OUT]

Builds a tiny BERT, a tiny GLUE-layout folder and one trained run in a temporary folder (no
download), then runs each case in this process through `adapterkit.cli.main` (the CLI's one
error path) with a 60 s alarm. A case passes when the command is refused with exit status 1 and
an `error:` line last (warnings may precede it) or click's usage error (exit 2), and no traceback. Printed: one line per
failing case and a summary count; with --json, every case's outcome.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import struct
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "hub")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Hang(Exception):
    pass


def run(args: list) -> dict:
    from adapterkit.cli import main

    err, out = io.StringIO(), io.StringIO()
    outcome = {"args": [str(a) for a in args]}

    def alarm(*_):
        raise Hang

    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(60)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            main([str(a) for a in args])
        outcome["code"] = 0
    except SystemExit as e:
        outcome["code"] = e.code if isinstance(e.code, int) else 1
    except Hang:
        outcome["code"] = "hang"
    except BaseException as e:  # noqa: BLE001  (that is what the sweep looks for)
        outcome["code"] = "traceback"
        outcome["exception"] = f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        signal.alarm(0)
    text = err.getvalue()
    outcome["stderr"] = text.strip()[-400:]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    one_line = outcome["code"] == 1 and bool(lines) and lines[-1].startswith("error:")  # after any warnings
    usage = outcome["code"] == 2 and "Error" in text
    outcome["ok"] = (one_line or usage) and "Traceback" not in text
    return outcome


def fixtures(tmp: Path) -> dict:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from adapterkit.backbone import load_tokenizer
    from tests.glue_fixtures import write_glue_fixture

    model = tmp / "model"
    tokenizer = load_tokenizer(None)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(str(model))
    tokenizer.save_pretrained(str(model))
    glue = write_glue_fixture(tmp / "glue", tasks=("rte", "sst2"))
    run_dir = tmp / "run"
    result = run(["train", "--task", "rte", "--model", model, "--data-dir", glue, "--output", run_dir, "--max-steps", 2,
                  "--epochs", 1, "--batch-size", 8, "--max-seq-len", 32, "--bottleneck", 4, "--quiet"])
    assert result["code"] == 0, result
    return {"model": model, "glue": glue, "run": run_dir}


def corrupt_copies(src: Path, tmp: Path, name: str, contents: dict[str, bytes]) -> list[Path]:
    """Copies of folder `src`, each with file `name` replaced by one of `contents`."""
    out = []
    for label, data in contents.items():
        dst = tmp / f"{src.name}-{name.replace('/', '_')}-{label}"
        shutil.copytree(src, dst)
        (dst / name).write_bytes(data)
        out.append(dst)
    return out


def json_variants(good: bytes) -> dict[str, bytes]:
    variants = {"binary": b"\x80\x81\xfe\xff" * 20, "empty": b"", "deep": b"[" * 100_000 + b"]" * 100_000,
                "list": b"[1, 2]", "string": b'"x"', "nan": b'{"a": NaN}'}
    for cut in sorted({1, len(good) // 3, len(good) // 2, len(good.rstrip()) - 1}):
        variants[f"cut{cut}"] = good[:cut]
    return variants


def safetensors_variants(good: bytes) -> dict[str, bytes]:
    n = struct.unpack("<Q", good[:8])[0]
    variants = {"binary": os.urandom(64), "empty": b"", "trailing": good + b"\0", "hugelen": struct.pack("<Q", 1 << 60) + good[8:]}
    for cut in sorted({4, 8, 8 + n // 2, 8 + n, len(good) - 1}):
        variants[f"cut{cut}"] = good[:cut]
    return variants


def cases(f: dict, tmp: Path) -> list[tuple[str, list]]:
    T, G, R = f["model"], f["glue"], f["run"]
    a_file = tmp / "a-file.txt"
    a_file.write_text("x")
    binary = tmp / "binary.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    empty_dir = tmp / "empty-dir"
    empty_dir.mkdir()
    deep = tmp / "deep.jsonl"
    deep.write_text("[" * 50_000 + "]" * 50_000 + "\n")
    inputs = tmp / "in.jsonl"
    inputs.write_text('{"sentence1": "a cat", "sentence2": "a dog"}\n')
    n = [0]

    def out():
        n[0] += 1
        return tmp / f"out{n[0]}"

    train = ["train", "--task", "rte", "--model", T, "--data-dir", G, "--max-steps", 1, "--batch-size", 8,
             "--max-seq-len", 32, "--bottleneck", 4, "--quiet"]
    c: list[tuple[str, list]] = []
    for flag, values in {"--batch-size": ["0", "-1"], "--max-seq-len": ["0", "1", "100000"],
                         "--lr": ["inf", "nan", "-1", "0"], "--epochs": ["0"], "--max-steps": ["0"],
                         "--bottleneck": ["0", "-3"], "--sharing": ["0", "x"], "--strategy": ["bogus"],
                         "--compression": ["bogus", "topk:2"], "--bucket-mb": ["0", "nan"], "--nproc": ["0"],
                         "--nnodes": ["0"], "--layers": ["top0", "x"], "--leave-out": ["a"], "--push": ["bad ref!", "a/b@v1"],
                         "--task": ["bogus"], "--attention": ["flash"]}.items():
        for v in values:
            args = [a for a in train]
            if flag in args:
                i = args.index(flag)
                args[i + 1] = v
            else:
                args += [flag, v]
            c.append((f"train {flag} {v}", args + ["--output", out()]))
    for v in ("nan", "inf", "0"):
        c.append((f"train --reduction-factor {v}", [a for a in train if a not in ("--bottleneck", 4)] + ["--reduction-factor", v, "--output", out()]))
    c.append(("train --attention rsa --rsa-density nan", train + ["--attention", "rsa", "--rsa-density", "nan", "--output", out()]))
    c.append(("train --output under a file", train + ["--output", a_file / "run"]))
    c.append(("train --output is a file", train + ["--output", a_file]))
    c.append(("train --model empty folder", [*train[:4], empty_dir, *train[5:], "--output", out()]))
    c.append(("train --data-dir binary", [*train[:6], binary, *train[7:], "--output", out()]))
    glue_bin = tmp / "glue-bin"
    shutil.copytree(G, glue_bin)
    (glue_bin / "RTE" / "train.tsv").write_bytes(b"index\tsentence1\tsentence2\tlabel\n" + bytes(range(128, 256)) + b"\n")
    c.append(("train non-UTF-8 train.tsv", [*train[:6], glue_bin, *train[7:], "--output", out()]))
    resumed = tmp / "resume-other"
    shutil.copytree(R, resumed)
    c.append(("train --resume other --bottleneck", [*train[:-3], "--bottleneck", 8, "--quiet", "--output", resumed, "--resume"]))
    truncated = tmp / "resume-truncated"
    shutil.copytree(R, truncated)
    w = truncated / "checkpoint" / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-7])
    c.append(("train --resume truncated weights", train + ["--output", truncated, "--resume"]))
    config_json = tmp / "config-bin.json"
    config_json.write_bytes(b"\xff\xfe" * 10)
    c.append(("train --model binary config.json", [*train[:4], config_json, *train[5:], "--output", out()]))
    # eval / predict
    for flag, v in (("--max-seq-len", "0"), ("--max-seq-len", "100000"), ("--batch-size", "0")):
        c.append((f"eval {flag} {v}", ["eval", "--adapter", R, "--data-dir", G, flag, v]))
        c.append((f"predict {flag} {v}", ["predict", "--adapter", R, "--input", inputs, "--output", out() / "p.jsonl", flag, v]))
    for label, path in (("binary", binary), ("deep", deep), ("folder", empty_dir), ("missing", tmp / "nope.jsonl")):
        target = path if path.suffix in (".jsonl", ".tsv") or path.is_dir() else tmp / f"in-{label}.jsonl"
        if target != path:
            shutil.copy(path, target)
        c.append((f"predict --input {label}", ["predict", "--adapter", R, "--input", target, "--output", out() / "p.jsonl"]))
    c.append(("predict --output a folder", ["predict", "--adapter", R, "--input", inputs, "--output", empty_dir]))
    c.append(("predict --output under a file", ["predict", "--adapter", R, "--input", inputs, "--output", a_file / "p.jsonl"]))
    c.append(("eval --adapter a file", ["eval", "--adapter", a_file]))
    good_cfg = (R / "adapterkit_config.json").read_bytes()
    for folder in corrupt_copies(R, tmp, "adapterkit_config.json", json_variants(good_cfg)):
        c.append((f"eval corrupt config {folder.name.rsplit('-', 1)[1]}", ["eval", "--adapter", folder, "--data-dir", G]))
    manifest = json.loads(good_cfg)
    shapes = {"no-config": {k: v for k, v in manifest.items() if k != "config"},
              "no-sites": {k: v for k, v in manifest.items() if k != "sites"},
              "sites-str": {**manifest, "sites": "x"}, "base-list": {**manifest, "base_model": []},
              "bad-regex": {**manifest, "config": {**manifest["config"], "targets": {"layers": "(("}}},
              "config-list": {**manifest, "config": []}, "head-int": {**manifest, "head": 3}}
    for folder in corrupt_copies(R, tmp, "adapterkit_config.json", {k: json.dumps(v).encode() for k, v in shapes.items()}):
        c.append((f"eval config shape {folder.name.rsplit('-', 1)[1]}", ["eval", "--adapter", folder, "--data-dir", G]))
    for folder in corrupt_copies(R, tmp, "run_config.json", json_variants((R / "run_config.json").read_bytes())):
        c.append((f"eval corrupt run_config {folder.name.rsplit('-', 1)[1]}", ["eval", "--adapter", folder, "--data-dir", G]))
    good_w = (R / "adapterkit_weights.safetensors").read_bytes()
    for folder in corrupt_copies(R, tmp, "adapterkit_weights.safetensors", safetensors_variants(good_w)):
        c.append((f"eval corrupt weights {folder.name.rsplit('-', 1)[1]}", ["eval", "--adapter", folder, "--data-dir", G]))
    good_h = (R / "adapterkit_head.safetensors").read_bytes()
    for folder in corrupt_copies(R, tmp, "adapterkit_head.safetensors", safetensors_variants(good_h)):
        c.append((f"eval corrupt head {folder.name.rsplit('-', 1)[1]}", ["eval", "--adapter", folder, "--data-dir", G]))
    # distill
    distill = ["distill", "--teacher", R, "--student-layers", 1, "--train-limit", 8, "--epochs", 1]
    for flag, v in (("--temperature", "0"), ("--temperature", "nan"), ("--temperature", "-1"), ("--alpha", "2"),
                    ("--alpha", "nan"), ("--epochs", "0"), ("--lr", "nan"), ("--batch-size", "0"),
                    ("--student-layers", "0"), ("--student-layers", "99"), ("--layer-map", "bogus"), ("--method", "x")):
        args = [a for a in distill]
        if flag in args:
            args[args.index(flag) + 1] = v
        else:
            args += [flag, v]
        c.append((f"distill {flag} {v}", args + ["--output", out()]))
    c.append(("distill --output == teacher", distill + ["--output", R]))
    # transfer
    transfer = ["transfer", "run", "fs", "--quick", "--target", "kitchen", "--source", "books"]
    for flag, v in (("--epochs", "0"), ("--batch-size", "0"), ("--max-seq-len", "0"), ("--lr", "nan"),
                    ("--target-shots", "1"), ("--target", "bogus"), ("--option", "x"), ("--domain-file", binary),
                    ("--domain-file", empty_dir)):
        c.append((f"transfer {flag} {v}", transfer + [flag, v]))
    c.append(("transfer fs without --source", ["transfer", "run", "fs", "--quick", "--target", "kitchen"]))
    c.append(("transfer mixed without --source", ["transfer", "run", "mixed", "--quick", "--target", "kitchen"]))
    c.append(("transfer bogus algorithm", ["transfer", "run", "bogus", "--target", "kitchen"]))
    # hub
    hub = tmp / "hub"
    assert run(["push", R, "team/good", "--hub", hub])["code"] == 0
    for ref in ("bad ref!", "a", "a/b/c", "a/b:bad tag", "../x/y"):
        c.append((f"push ref {ref!r}", ["push", R, ref, "--hub", hub]))
        c.append((f"pull ref {ref!r}", ["pull", ref, out(), "--hub", hub]))
    c.append(("push --hub a file", ["push", R, "team/x", "--hub", a_file]))
    c.append(("push a file", ["push", a_file, "team/x", "--hub", hub]))
    c.append(("pull dest under a file", ["pull", "team/good", a_file / "x", "--hub", hub]))
    c.append(("pull missing", ["pull", "team/nope", out(), "--hub", hub]))
    for label, data in (("binary", b"\xff\xfe"), ("deep", b"[" * 100_000), ("list", b"[]"), ("values", b'{"latest": 1}')):
        bad_hub = tmp / f"hub-tags-{label}"
        shutil.copytree(hub, bad_hub)
        (bad_hub / "repos" / "team" / "good" / "tags.json").write_bytes(data)
        c.append((f"hub list corrupt tags.json {label}", ["hub", "list", "--hub", bad_hub]))
        c.append((f"pull corrupt tags.json {label}", ["pull", "team/good", out(), "--hub", bad_hub]))
    for label, data in (("binary", b"\xff\xfe"), ("deep", b"[" * 100_000), ("list", b"[]")):
        bad_hub = tmp / f"hub-card-{label}"
        shutil.copytree(hub, bad_hub)
        for card in (bad_hub / "repos" / "team" / "good" / "versions").glob("*.json"):
            card.write_bytes(data)
        c.append((f"hub show corrupt card {label}", ["hub", "show", "team/good", "--hub", bad_hub]))
        c.append((f"pull corrupt card {label}", ["pull", "team/good", out(), "--hub", bad_hub]))
    serve = ["hub", "serve", "--root", tmp / "served"]
    for flag, v in (("--port", "0"), ("--port", "70000"), ("--port", "-1"), ("--max-upload-mb", "0"),
                    ("--max-upload-mb", "nan"), ("--log-level", "bogus"), ("--token-file", empty_dir),
                    ("--token-file", binary)):
        c.append((f"hub serve {flag} {v}", serve + [flag, v]))
    c.append(("hub serve --root a file", ["hub", "serve", "--root", a_file]))
    # plan, export / import, multitask
    for flag, v in (("--sharing", "0"), ("--bottleneck", "0"), ("--reduction-factor", "nan"), ("--model", empty_dir)):
        c.append((f"plan {flag} {v}", ["plan", "--model", T, flag, v]))
    c.append(("export corrupt src", ["export", tmp / f"{R.name}-adapterkit_config.json-binary", out(), "--to", "adapterhub"]))
    c.append(("export dest under a file", ["export", R, a_file / "x", "--to", "adapterhub"]))
    c.append(("export --weights bogus", ["export", R, out(), "--to", "adapterhub", "--weights", "bogus"]))
    c.append(("import not adapterhub", ["import", R, out(), "--from", "adapterhub"]))
    c.append(("multitask info missing", ["multitask", "info", "--model", tmp / "nope"]))
    c.append(("multitask info binary", ["multitask", "info", "--model", binary]))
    c.append(("multitask predict missing model", ["multitask", "predict", "--model", tmp / "nope", "--input", inputs, "--output", out() / "p.jsonl"]))
    return c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="run only cases whose name contains this")
    p.add_argument("--json", help="write every outcome here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="adapterkit-sweep-") as tmp:
        tmp = Path(tmp)
        f = fixtures(tmp)
        results = []
        for name, argv in cases(f, tmp):
            if args.only and args.only not in name:
                continue
            outcome = {"case": name, **run(argv)}
            results.append(outcome)
            if not outcome["ok"]:
                detail = outcome.get("exception") or outcome["stderr"].splitlines()[-1:] or ""
                print(f"FAIL {name}: exit {outcome['code']}: {detail}", flush=True)
        bad = [r for r in results if not r["ok"]]
        print(f"{len(results)} cases, {len(results) - len(bad)} refused cleanly, {len(bad)} not")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
