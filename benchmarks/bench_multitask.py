"""The flexible multi-task model on CoLA, SST-2, MRPC, RTE: the shape of Wei et al. 2022, table 2.

    OMP_NUM_THREADS=1 python3 benchmarks/bench_multitask.py                 # the run in benchmarks/README.md
    OMP_NUM_THREADS=1 python3 benchmarks/bench_multitask.py --quick         # minutes: a smoke run

Backbone all-MiniLM-L6-v2 (6 layers, hidden 384). Rows, per task:
  full fine-tuning   every weight trained (6 layers; overhead 6 per task)
  KD baselines       3-layer students (half the depth, like the paper's 6-of-12 baselines)
                     initialised from the full model's bottom 3 layers, distilled from it with
                     vanilla KD, BERT-PKD and TinyBERT-style losses (adapterkit.transfer.kd)
  ours               the pipeline of adapterkit.multitask.train: partial fine-tuning
                     search L in [n_min, n_max] on dev, vanilla KD into l = 1..3 layers
                     initialised from the teacher, then merged budgets KD-1, KD-2, KD-3,
                     w/o KD (the teachers) and mixed (growth rule) for each --c
Metric: Matthews correlation x100 for CoLA, accuracy x100 otherwise, on the full dev sets (as in
the paper). Overhead = transformer layers to serve all tasks (trunk + task layers) and its share
of separate full models (6 x tasks). Every merged model's dev metrics are computed by running the
merged model itself (one trunk pass per batch, all branches).
Throughput: every input answered by every task, batch 32 of dev sentences: the merged model (one
call) vs the separate models one after another (full fine-tuned models, and the standalone
students), interleaved repeats, medians and ratios.
Everything runs with torch.set_num_threads(--threads) (default 1: the machine is shared).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import _data  # noqa: F401,E402  (points adapterkit at ../shared/data)

PAIR_TASKS = ("mrpc", "rte")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="cola,sst2,mrpc,rte")
    p.add_argument("--train-limit", type=int, default=1000, help="training rows per single-sentence task")
    p.add_argument("--pair-train-limit", type=int, default=400, help="training rows per sentence-pair task")
    p.add_argument("--max-seq-len", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3, help="partial and full fine-tuning epochs")
    p.add_argument("--kd-epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-4, help="partial fine-tuning (the top L layers and the head)")
    p.add_argument("--full-lr", type=float, default=1e-4, help="full fine-tuning (every weight)")
    p.add_argument("--kd-lr", type=float, default=5e-4, help="our students (l task layers and the head)")
    p.add_argument("--baseline-kd-lr", type=float, default=2e-4, help="3-layer baseline students (every weight)")
    p.add_argument("--n-min", type=int, default=2)
    p.add_argument("--n-max", type=int, default=5)
    p.add_argument("--c", default="1,2", help="growth thresholds for 'mixed' (dev points per layer)")
    p.add_argument("--kd-baselines", default="vanilla,tinybert", help="also: pkd")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--stage", choices=("all", "fit", "report"), default="all",
                   help="fit: train --tasks and save their candidates under --work (tasks can run in parallel "
                        "processes); report: merge the saved tasks, score and time the merged models")
    p.add_argument("--work", default="runs/bench_multitask", help="folder for per-task candidates (--stage fit/report)")
    p.add_argument("--out", default="benchmarks/results/multitask.json")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.quick:
        args.train_limit, args.pair_train_limit, args.epochs, args.kd_epochs, args.repeats = 64, 32, 1, 1, 3
    torch.set_num_threads(args.threads)
    tasks = [t for t in args.tasks.split(",") if t]
    if args.stage in ("all", "fit"):
        for name in tasks:
            fit_and_save(name, args)
    if args.stage in ("all", "report"):
        report(tasks, args)


def fit_and_save(name: str, args) -> None:
    """The pipeline and the baselines for one task; candidates saved as one-branch merged models."""
    from adapterkit import backbone
    from adapterkit.multitask.io import save_multitask
    from adapterkit.multitask.train import MultiTaskConfig, assemble, fit_task

    tokenizer = backbone.load_tokenizer(None)
    cfg = MultiTaskConfig(tasks=[name], n_min=args.n_min, n_max=args.n_max, epochs=args.epochs,
                          kd_epochs=args.kd_epochs, lr=args.lr, kd_lr=args.kd_lr, max_seq_len=args.max_seq_len,
                          batch_size=args.batch_size, seed=args.seed,
                          train_limit=args.pair_train_limit if name in PAIR_TASKS else args.train_limit)
    t0 = time.perf_counter()
    result = fit_task(name, cfg, tokenizer, log=lambda m: print(m, flush=True))
    ours = time.perf_counter() - t0
    source = backbone.load_model(None, num_labels=2)
    folder = Path(args.work) / name
    for cand in result.candidates:
        save_multitask(assemble([result], source, cand.name), folder / cand.name)
    t0 = time.perf_counter()
    baselines = run_baselines(name, cfg, tokenizer, args)
    record = {"summary": result.summary(), "baselines": baselines, "train_rows": cfg.train_limit,
              "seconds": {"ours": ours, "baselines": time.perf_counter() - t0}}
    (folder / "result.json").write_text(json.dumps(record, indent=2, default=str))


def load_task(name: str, args):
    """A TaskResult rebuilt from the saved candidates (branches and dev metrics)."""
    from adapterkit.multitask.io import load_multitask
    from adapterkit.multitask.train import Candidate, TaskResult

    folder = Path(args.work) / name
    record = json.loads((folder / "result.json").read_text())
    summary, candidates = record["summary"], []
    for cname, c in summary["candidates"].items():
        branch = load_multitask(folder / cname).branches[name]
        candidates.append(Candidate(cname, c["branch"][0], c["branch"][1], c["dev"], branch))
    result = TaskResult(name, {int(k): v for k, v in summary["search"].items()}, summary["best_L"],
                        sorted(candidates, key=lambda k: k.num_layers), summary["seconds"])
    return result, record


def report(tasks: list[str], args) -> None:
    from adapterkit import backbone

    tokenizer = backbone.load_tokenizer(None)
    loaded = [load_task(name, args) for name in tasks]
    results = [r for r, _ in loaded]
    rows, merged = merged_rows(results, args, tokenizer)
    throughput = measure_throughput(merged, tasks, tokenizer, args)
    out = {"args": vars(args), "seconds": {t: rec["seconds"] for t, (_, rec) in zip(tasks, loaded)},
           "train_rows": {t: rec["train_rows"] for t, (_, rec) in zip(tasks, loaded)},
           "search": [rec["summary"] for _, rec in loaded], "baselines": {t: rec["baselines"] for t, (_, rec) in zip(tasks, loaded)},
           "merged": rows, "throughput": throughput, "machine": platform.processor() or platform.machine(),
           "torch_threads": torch.get_num_threads()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(markdown(out, tasks))


def task_rows(name, cfg, tokenizer):
    from adapterkit.data import get_task
    from adapterkit.multitask.train import load_task_rows

    task = get_task(name)
    return task, *load_task_rows(task, tokenizer, cfg)


def dev_score(model, task, dev, pad) -> float:
    from adapterkit.data.metrics import compute_metrics
    from adapterkit.toolkit.scoring import predict_logits
    from adapterkit.multitask.train import task_score

    return task_score(compute_metrics(task, predict_logits(model, dev, pad).numpy(), [r["labels"] for r in dev]))


def run_baselines(name, cfg, tokenizer, args):
    """Full fine-tuning, then 3-layer students distilled from it with each KD method."""
    from adapterkit import backbone
    from adapterkit.transfer.kd import KDConfig, TrainConfig, distill, train_supervised
    from adapterkit.transfer.student import make_student

    task, train, dev = task_rows(name, cfg, tokenizer)
    pad = tokenizer.pad_token_id or 0
    torch.manual_seed(args.seed)
    full = backbone.load_model(None, num_labels=task.num_labels)
    train_supervised(full, train, TrainConfig(epochs=args.epochs, lr=args.full_lr, batch_size=args.batch_size,
                                              seed=args.seed), pad)
    out = {"full": dev_score(full, task, dev, pad)}
    print(f"{name}: full fine-tuning dev {out['full']:.1f}", flush=True)
    for method in [m for m in args.kd_baselines.split(",") if m]:
        torch.manual_seed(args.seed)
        student = make_student(full, 3)
        kd = KDConfig(method=method, epochs=args.kd_epochs, lr=args.baseline_kd_lr, batch_size=args.batch_size,
                      seed=args.seed, temperature=1.0 if method == "tinybert" else 2.0)
        distill(full, student, train, kd, pad)
        out[f"kd3-{method}"] = dev_score(student, task, dev, pad)
        print(f"{name}: 3-layer {method} student dev {out[f'kd3-{method}']:.1f}", flush=True)
    return out


def merged_rows(results, args, tokenizer):
    """Each budget's merged model, scored on dev by running the merged model itself."""
    from adapterkit import backbone
    from adapterkit.multitask.train import assemble

    source = backbone.load_model(None, num_labels=2)
    budgets = [("KD-1", "kd1", 0.0), ("KD-2", "kd2", 0.0), ("KD-3", "kd3", 0.0), ("w/o KD", "teacher", 0.0)]
    budgets += [(f"mixed c={c}", "mixed", float(c)) for c in args.c.split(",") if c]
    rows, models = {}, {}
    for label, budget, c in budgets:
        merged = assemble(results, source, budget, c)
        scores = {name: merged_dev_score(merged, name, args, tokenizer) for name in merged.tasks}
        rows[label] = {"scores": scores, "overhead": merged.overhead()}
        models[label] = merged
        print(f"{label}: {scores} layers {merged.overhead()['total']}", flush=True)
    return rows, models


_DEV: dict[str, list] = {}


def merged_dev_score(merged, name, args, tokenizer) -> float:
    from adapterkit.data import PadCollator, get_task
    from adapterkit.data.metrics import compute_metrics
    from adapterkit.multitask.train import MultiTaskConfig, load_task_rows, task_score

    task = get_task(name)
    if name not in _DEV:
        _DEV[name] = load_task_rows(task, tokenizer, MultiTaskConfig(tasks=[name], max_seq_len=args.max_seq_len, train_limit=1))[1]
    dev = _DEV[name]
    collate, logits = PadCollator(tokenizer.pad_token_id or 0), []
    for i in range(0, len(dev), 64):
        batch = collate(dev[i:i + 64])
        batch.pop("labels")
        logits.append(merged(**batch, tasks=[name]).logits[name])
    return task_score(compute_metrics(task, torch.cat(logits).numpy(), [r["labels"] for r in dev]))


def measure_throughput(merged: dict, tasks: list[str], tokenizer, args) -> dict:
    """Examples/s when every input is answered by every task. The separate full models are the
    pre-trained backbone with each task's head size: the same computation as the fine-tuned ones."""
    from adapterkit import backbone
    from adapterkit.data import PadCollator, encode, get_task, load_glue

    full_models = {t: backbone.load_model(None, num_labels=get_task(t).num_labels).eval() for t in tasks}

    rows = [dict(r) for r in encode(load_glue("sst2", "dev"), tokenizer, "sst2", args.max_seq_len)]
    batches = [PadCollator(tokenizer.pad_token_id or 0)(rows[i:i + 32]) for i in range(0, 32 * 8, 32)]
    for b in batches:
        b.pop("labels")
    mixed = next(k for k in merged if k.startswith("mixed"))
    students = {t: merged["KD-1"].extract(t) for t in merged["KD-1"].tasks}
    variants = {
        f"merged {mixed}": lambda b: merged[mixed](**b),
        "merged KD-1": lambda b: merged["KD-1"](**b),
        "separate full models": lambda b: [m(**b) for m in full_models.values()],
        "separate KD-1 students": lambda b: [m(**b) for m in students.values()],
    }
    times = {k: [] for k in variants}
    with torch.inference_mode():
        for fn in variants.values():  # warm-up
            fn(batches[0])
        for _ in range(args.repeats):
            for name, fn in variants.items():  # interleaved: every repeat runs every variant
                t0 = time.perf_counter()
                for b in batches:
                    fn(b)
                times[name].append(time.perf_counter() - t0)
    n = sum(len(b["input_ids"]) for b in batches)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["separate full models"]
    return {k: {"examples_per_s": n / v, "median_s": v, "min_s": min(times[k]), "speedup_vs_separate_full": base / v}
            for k, v in med.items()} | {"rows_per_repeat": n, "repeats": args.repeats}


def markdown(report: dict, tasks: list[str]) -> str:
    names = {"cola": "CoLA (MCC)", "sst2": "SST-2", "mrpc": "MRPC", "rte": "RTE"}
    n, n_full = len(tasks), 6 * len(tasks)
    lines = ["| model | " + " | ".join(names.get(t, t) for t in tasks) + " | avg | layers | overhead |",
             "|---|" + "---:|" * (n + 3)]

    def line(label, scores, layers, total, shape=None):
        avg = sum(scores[t] for t in tasks) / n
        cells = [f"{scores[t]:.1f}" + (" ({},{})".format(*shape[t]) if shape else "") for t in tasks]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {avg:.1f} | {layers} | {total} ({100 * total / n_full:.1f}%) |")

    b = report["baselines"]
    line("full fine-tuning", {t: b[t]["full"] for t in tasks}, f"6x{n}", n_full)
    for key in [k for k in b[tasks[0]] if k != "full"]:
        line(f"3-layer students, {key.split('-', 1)[1]} KD", {t: b[t][key] for t in tasks}, f"3x{n}", 3 * n)
    for label, row in report["merged"].items():
        o = row["overhead"]
        line(f"ours ({label})", row["scores"], f"{o['trunk']}+{o['total'] - o['trunk']}", o["total"], o["shape"])
    out = "\n".join(lines) + "\n\n| serving: every input, every task | examples/s | vs separate full models |\n|---|---:|---:|\n"
    for k, v in report["throughput"].items():
        if isinstance(v, dict):
            out += f"| {k} | {v['examples_per_s']:.1f} | {v['speedup_vs_separate_full']:.2f}x |\n"
    return out


if __name__ == "__main__":
    main()
