"""Sweep every `adapterkit` command with bad values and corrupted files; report any traceback.

    PYTHONPATH=$PWD:$PWD/hub python3 benchmarks/reliability_sweep.py [--only WORD] [--json OUT]

Builds a tiny BERT and GPT-2, a tiny GLUE-layout folder, one trained GLUE run and one run per
task type on small files of its own (benchmarks/reliability_sweep_tasks.py) in a temporary
folder (no download), then runs each case in this process through `adapterkit.cli.main` (the CLI's one
error path) with a 300 s alarm. A case passes when the command is refused with exit status 1 and
an `error:` line last (warnings may precede it) or click's usage error (exit 2), no traceback, and
every file the case names as kept (an existing output, the input) unchanged. Printed: one line per
failing case and a summary count; with --json, every case's outcome.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import shutil
import signal
import struct
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "hub"), str(ROOT / "benchmarks")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Hang(Exception):
    pass


def run(args: list, timeout: int = 300) -> dict:
    from adapterkit.cli import main

    err, out = io.StringIO(), io.StringIO()
    outcome = {"args": [str(a) for a in args]}

    def alarm(*_):
        raise Hang

    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout)  # a hang, not slowness: generous on a loaded machine
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
    from reliability_sweep_tasks import task_runs
    from tests.glue_fixtures import write_glue_fixture
    from tests.tiny_models import write_tiny_bert

    model = write_tiny_bert(tmp / "model")  # 2 layers, width 32
    glue = write_glue_fixture(tmp / "glue", tasks=("rte", "sst2"))
    run_dir = tmp / "run"
    result = run(["train", "--task", "rte", "--model", model, "--data-dir", glue, "--output", run_dir, "--max-steps", 2,
                  "--epochs", 1, "--batch-size", 8, "--max-seq-len", 32, "--bottleneck", 4, "--quiet"], timeout=1800)
    assert result["code"] == 0, result
    files, runs = task_runs(run, model, tmp)
    return {"model": model, "glue": glue, "run": run_dir, "task_files": files, "task_runs": runs,
            "gpt2": tmp / "tiny-gpt2"}


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
                         "--task": ["bogus"], "--attention": ["flash"], "--drop-layers": ["-1", "2", "99"]}.items():
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
    c.append(("train --drop-robust without --drop-layers", train + ["--drop-robust", "--output", out()]))
    c.append(("train --full-finetune --drop-layers 1", [a for a in train if a not in ("--bottleneck", 4)] +
              ["--full-finetune", "--drop-layers", 1, "--output", out()]))
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
    for v in ("-1", "2", "99"):
        c.append((f"eval --drop-layers {v}", ["eval", "--adapter", R, "--data-dir", G, "--drop-layers", v]))
    for label, path in (("binary", binary), ("deep", deep), ("folder", empty_dir), ("missing", tmp / "nope.jsonl")):
        target = path if path.suffix in (".jsonl", ".tsv") or path.is_dir() else tmp / f"in-{label}.jsonl"
        if target != path:
            shutil.copy(path, target)
        c.append((f"predict --input {label}", ["predict", "--adapter", R, "--input", target, "--output", out() / "p.jsonl"]))
    c.append(("predict --output a folder", ["predict", "--adapter", R, "--input", inputs, "--output", empty_dir]))
    existing = tmp / "pred-existing.jsonl"
    existing.write_text("keep me\n")
    c.append(("predict --output exists", ["predict", "--adapter", R, "--input", inputs, "--output", existing], [existing]))
    c.append(("predict --output == --input", ["predict", "--adapter", R, "--input", inputs, "--output", inputs, "--overwrite"],
              [inputs]))
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
    c += multitask_cases(T, G, R, tmp, out)
    c += serve_cases(T, tmp, binary, empty_dir)
    from reliability_sweep_tasks import task_type_cases

    c += task_type_cases(T, f["gpt2"], f["task_files"], f["task_runs"], tmp, out)
    c += compose_cases(T, G, R, tmp, out)
    return c


def compose_cases(T, G, R, tmp: Path, out) -> list[tuple[str, list]]:
    """`fuse` and `merge` (combining saved adapters), when this build has them."""
    from adapterkit.cli import _register_all, app

    _register_all()
    names = {c.name for c in app.registered_commands}
    if "fuse" not in names:
        return []
    both = f"{R},{R}"
    fuse = ["fuse", "--adapters", both, "--task", "rte", "--model", T, "--data-dir", G, "--max-steps", 1, "--batch-size", 4,
            "--max-seq-len", 32, "--quiet"]
    c = []
    for flag, v in (("--composition", "bogus"), ("--fusion-sharing", "0"), ("--temperature", "0"), ("--temperature", "nan"),
                    ("--weights", "x,y"), ("--weights", "nan,1"), ("--splits", "x"), ("--splits", "-5"), ("--epochs", "0"),
                    ("--lr", "inf"), ("--batch-size", "0"), ("--max-seq-len", "0"), ("--drop-layers", "-1"),
                    ("--drop-layers", "99"), ("--adapters", ""), ("--adapters", str(tmp / "nope")),
                    ("--adapters", str(tmp / "binary.bin")), ("--task", "bogus")):
        args = list(fuse)
        if flag in args:
            args[args.index(flag) + 1] = v
        else:
            args += [flag, v]
        c.append((f"fuse {flag} {v}", args + ["--output", out()]))
    c.append(("fuse --composition average --weights 1", fuse + ["--composition", "average", "--weights", "1", "--output", out()]))
    c.append(("fuse --output under a file", fuse + ["--output", tmp / "a-file.txt" / "x"]))
    c.append(("fuse --output holds a run", fuse + ["--output", R], [R / "adapterkit_weights.safetensors", R / "metrics.json"]))
    merge = ["merge", "--adapters", both, "--model", T]
    for flag, v in (("--method", "bogus"), ("--weights", "x"), ("--weights", "nan,1"), ("--weights", "1"), ("--density", "nan"),
                    ("--density", "2"), ("--density", "0"), ("--drop", "1"), ("--drop", "-0.5"), ("--drop", "nan"),
                    ("--adapters", ""), ("--adapters", str(tmp / "nope")), ("--adapters", str(tmp / "binary.bin")),
                    ("--adapters", f"{R},{tmp / 'run-adapterkit_config.json-binary'}"), ("--name", "bad name/..")):
        args = list(merge)
        if flag in args:
            args[args.index(flag) + 1] = v
        else:
            args += [flag, v]
        c.append((f"merge {flag} {v}", args + ["--output", out()]))
    c.append(("merge --output == an input", merge + ["--output", R]))
    taken = tmp / "merge-taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("keep me")
    c.append(("merge --output exists", merge + ["--output", taken], [taken / "keep.txt"]))
    c.append(("merge --output under a file", merge + ["--output", tmp / "a-file.txt" / "x"]))
    return c


def multitask_cases(T, G, R, tmp: Path, out) -> list[tuple[str, list]]:
    build = ["multitask", "build", "--tasks", "rte", "--model", T, "--data-dir", G, "--train-limit", 8, "--epochs", 1,
             "--kd-epochs", 1, "--batch-size", 8, "--max-seq-len", 32]
    c = []
    for flag, v in (("--tasks", ""), ("--tasks", "bogus"), ("--tasks", "rte,rte"), ("--budget", "bogus"), ("--c", "nan"),
                    ("--c", "inf"), ("--n-min", "0"), ("--n-max", "0"), ("--epochs", "0"), ("--kd-epochs", "0"),
                    ("--lr", "nan"), ("--lr", "0"), ("--kd-lr", "inf"), ("--batch-size", "0"), ("--max-seq-len", "0"),
                    ("--max-seq-len", "100000"), ("--train-limit", "0"), ("--adapter-bottleneck", "0"), ("--branch-layer", "-1")):
        args = list(build)
        if flag in args:
            args[args.index(flag) + 1] = v
        else:
            args += [flag, v]
        c.append((f"multitask build {flag} {v}", args + ["--output", out()]))
    c.append(("multitask build --n-min > --n-max", build + ["--n-min", 4, "--n-max", 2, "--output", out()]))
    c.append(("multitask build --output == model", build + ["--output", T]))
    c.append(("multitask build --output under a file", build + ["--output", tmp / "a-file.txt" / "x"]))
    for cmd in (["add", "--task", "rte"], ["remove", "--task", "rte"], ["info"]):
        for label, folder in (("a run folder", R), ("an empty folder", tmp / "empty-dir"), ("a binary file", tmp / "binary.bin")):
            c.append((f"multitask {cmd[0]} on {label}", ["multitask", *cmd, "--model", folder]))
    return c


def serve_cases(T, tmp: Path, binary: Path, empty_dir: Path) -> list[tuple[str, list]]:
    serve = ["serve", "--model", tmp / "no-model"]
    c = []
    for flag, v in (("--port", "0"), ("--port", "70000"), ("--max-batch-size", "0"), ("--max-queue", "0"),
                    ("--max-wait-ms", "nan"), ("--max-wait-ms", "inf"), ("--max-wait-ms", "-1"), ("--max-adapters", "0"),
                    ("--max-memory-mb", "0"), ("--max-memory-mb", "nan"), ("--max-length", "1"), ("--threads", "0"),
                    ("--replicas", "0"), ("--engine", "bogus"), ("--adapter", "noequals"), ("--adapter", "=x"),
                    ("--token-file", binary), ("--token-file", empty_dir), ("--token-file", tmp / "nope")):
        c.append((f"serve {flag} {v}", serve + [flag, v]))
    c.append(("serve --adapter twice", serve + ["--adapter", "a=x", "--adapter", "a=y"]))
    c.append(("serve --model empty folder", ["serve", "--model", empty_dir]))
    c.append(("serve --max-length beyond positions", ["serve", "--model", T, "--max-length", 100000]))
    c.append(("serve --adapter missing folder", ["serve", "--model", T, "--adapter", f"a={tmp / 'nope'}", "--port", 1]))
    c.append(("serve --adapter corrupt folder", ["serve", "--model", T, "--adapter", f"a={tmp / 'run-adapterkit_config.json-binary'}", "--port", 1]))
    # No serve case for a corrupt run_config.json: a run's manifest carries its task, so serving never
    # reads run_config.json there (such a case starts a server instead of failing); the folder-only path
    # is tests/test_serve.py::test_glue_runs_are_served_with_the_label_names_predict_writes.
    return c


# -- the hub server on loopback ---------------------------------------------------------------
HUB_LIMIT = 4 << 20  # upload limit of the swept server: above the tokenizer files of a run


def hub_server_outcomes(R: Path, tmp: Path) -> list[dict]:
    """A live `adapterkit hub serve` (a subprocess on 127.0.0.1) probed over HTTP and through the
    CLI: every bad request gets a 4xx (never a 500 or a traceback in the server's log)."""
    import hashlib

    import httpx

    from tests.test_hub_support import TOKEN, HubServer

    token_file = tmp / "hub-token"
    token_file.write_text(TOKEN + "\n")
    server = HubServer(tmp / "served-hub", token_file, limit_bytes=HUB_LIMIT)
    results = []
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ok_push = run(["push", R, "team/good", "--hub", server.url, "--token", TOKEN])
        assert ok_push["code"] == 0, ok_push
        for name, argv in (("push no token", ["push", R, "team/x", "--hub", server.url]),
                           ("push wrong token", ["push", R, "team/x", "--hub", server.url, "--token", "wrong"]),
                           ("pull missing repo", ["pull", "team/nope", tmp / "http-pull-1", "--hub", server.url]),
                           ("pull missing tag", ["pull", "team/good:nope", tmp / "http-pull-2", "--hub", server.url]),
                           ("pull dest under a file", ["pull", "team/good", tmp / "a-file.txt" / "x", "--hub", server.url]),
                           ("hub show missing", ["hub", "show", "team/nope", "--hub", server.url]),
                           ("hub tag without token", ["hub", "tag", "team/good:latest", "x", "--hub", server.url]),
                           ("push to a closed port", ["push", R, "team/x", "--hub", "http://127.0.0.1:9", "--token", TOKEN]),
                           ("hub list at a closed port", ["hub", "list", "--hub", "http://127.0.0.1:9"])):
            results.append({"case": f"hub http: {name}", **run(argv)})

        def probe(name, method, path, expect=range(400, 500), **kw):
            try:
                r = httpx.request(method, f"{server.url}/api/v1{path}", timeout=30, trust_env=False, **kw)
                outcome = {"code": r.status_code, "ok": r.status_code in expect, "stderr": r.text[:300]}
            except httpx.HTTPError as e:
                outcome = {"code": "connection", "ok": False, "stderr": str(e)[:300]}
            results.append({"case": f"hub http: {name}", "args": [method, path], **outcome})

        def upload(data: bytes) -> tuple[str, dict]:
            up = httpx.post(f"{server.url}/api/v1/uploads", headers=auth, trust_env=False).json()["upload"]
            sha = hashlib.sha256(data).hexdigest()
            httpx.put(f"{server.url}/api/v1/uploads/{up}/{sha}", content=data, headers=auth, trust_env=False)
            return up, {"path": "adapterkit_weights.safetensors", "sha256": sha, "size": len(data)}

        good_w = (R / "adapterkit_weights.safetensors").read_bytes()
        for label, data in safetensors_variants(good_w).items():
            up, entry = upload(data)
            probe(f"commit corrupt weights {label}", "POST", "/repos/team/bad/versions", headers=auth,
                  json={"upload": up, "files": [entry], "tags": ["t"]})
        for label, body in (("deep", b"[" * 100_000), ("nan", b'{"upload": NaN}'), ("list", b"[]"), ("binary", b"\xff\xfe"),
                            ("empty", b""), ("wrong types", b'{"upload": 3, "files": "x"}')):
            probe(f"commit body {label}", "POST", "/repos/team/bad/versions", headers={**auth, "Content-Type": "application/json"}, content=body)
            probe(f"commit body {label} unauthenticated", "POST", "/repos/team/bad/versions",
                  headers={"Content-Type": "application/json"}, content=body, expect=(401,))
            probe(f"tag body {label}", "PUT", "/repos/team/good/tags/x", headers={**auth, "Content-Type": "application/json"}, content=body)
        for label, path in (("bad repo", "/repos/..%2f..%2fetc/passwd"), ("bad tag", "/repos/team/good/tags/bad%20tag"),
                            ("bad blob", "/blobs/zz"), ("missing version", "/repos/team/good/versions/" + "0" * 64),
                            ("missing blob", "/blobs/" + "0" * 64)):
            probe(f"GET {label}", "GET", path)
        probe("upload over the limit", "PUT", "/uploads/x/" + "0" * 64, headers=auth, content=b"\0" * (HUB_LIMIT + 1))
        probe("upload with a wrong hash", "PUT", f"/uploads/{upload(b'x')[0]}/" + "0" * 64, headers=auth, content=b"y")
    finally:
        server.stop()
    log = server.proc.stdout.read().decode(errors="replace") if server.proc.stdout else ""
    results.append({"case": "hub http: server log has no traceback", "code": 0, "ok": "Traceback" not in log,
                    "stderr": log[-400:]})
    return results


def checked(name: str, argv: list, keep: tuple = ()) -> dict:
    """The case's outcome; a file in `keep` whose bytes changed fails it (data loss)."""
    before = {path: path.read_bytes() for path in keep}
    outcome = {"case": name, **run(argv)}
    changed = [str(path) for path, data in before.items() if not path.is_file() or path.read_bytes() != data]
    if changed:
        outcome.update(ok=False, stderr=f"changed: {', '.join(changed)}; " + outcome["stderr"])
    return outcome


def _later(fn, *args):
    yield from fn(*args)  # run after the CLI cases


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="run only cases whose name contains this")
    p.add_argument("--json", help="write every outcome here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="adapterkit-sweep-") as tmp:
        tmp = Path(tmp)
        f = fixtures(tmp)
        results = []
        outcomes = (checked(*case) for case in cases(f, tmp) if not args.only or args.only in case[0])
        if not args.only or "hub http" in args.only:
            outcomes = itertools.chain(outcomes, _later(hub_server_outcomes, f["run"], tmp))
        for outcome in outcomes:
            if args.only and args.only not in outcome["case"]:
                continue
            results.append(outcome)
            if not outcome["ok"]:
                detail = outcome.get("exception") or outcome["stderr"].splitlines()[-1:] or ""
                print(f"FAIL {outcome['case']}: exit {outcome['code']}: {detail}", flush=True)
        bad = [r for r in results if not r["ok"]]
        print(f"{len(results)} cases, {len(results) - len(bad)} refused cleanly, {len(bad)} not")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
