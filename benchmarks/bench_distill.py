"""Distillation on the Amazon review domains: the shape of EasyTransfer's table 10 (MetaKD).

    OMP_NUM_THREADS=1 python3 benchmarks/bench_distill.py                   # the run in benchmarks/README.md
    OMP_NUM_THREADS=1 python3 benchmarks/bench_distill.py --quick           # minutes: a smoke run

Teachers are all-MiniLM-L6-v2 (6 layers) with a bottleneck adapter (64, every layer; or the
whole backbone with --teacher-mode full); students are the teacher's bottom --student-layers
layers (adapter included), every parameter trained. Per seed:
  BERT-s           one teacher per domain, trained on that domain
  BERT-mix         one teacher trained on the four domains together
  Meta-teacher     MetaKD's meta-teacher: the four domains, prototype-weighted loss plus the
                   domain-corruption loss (adapterkit.transfer.metakd)
  BERT-s -> TinyBERT, BERT-mix -> TinyBERT
                   each domain's student distilled from that teacher with TinyBERT-style
                   losses (embeddings, hidden states, attention maps, soft logits)
  MetaKD           each domain's student meta-distilled from the meta-teacher (weighted
                   intermediate losses + domain-knowledge term + soft logits)
Accuracy on each domain's fixed test split (400 reviews), mean and standard deviation over
--seeds; parameter counts; inference speed of teacher vs student (batch 32 of test reviews,
interleaved repeats, median examples/s and the ratio).
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

ROWS = ["BERT-s", "BERT-mix", "Meta-teacher", "BERT-s -> TinyBERT", "BERT-mix -> TinyBERT", "MetaKD"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--domains", default="books,dvd,electronics,kitchen")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--train-limit", type=int, default=200, help="training reviews per domain (of 1400)")
    p.add_argument("--max-seq-len", type=int, default=64)
    p.add_argument("--teacher-mode", choices=("adapter", "full"), default="full")
    p.add_argument("--teacher-lr", type=float, default=None, help="default 3e-3 (adapter) or 1e-4 (full)")
    p.add_argument("--teacher-epochs", type=int, default=3)
    p.add_argument("--kd-epochs", type=int, default=3)
    p.add_argument("--kd-lr", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--student-layers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--merge", default=None, help="comma-separated result files of runs with other --seeds: "
                                                   "write their joint summary to --out")
    p.add_argument("--out", default="benchmarks/results/distill.json")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.quick:
        args.train_limit, args.teacher_epochs, args.kd_epochs, args.repeats, args.seeds = 16, 1, 1, 2, "0"
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    domains = [d for d in args.domains.split(",") if d]
    if args.merge:
        return merge(args, domains)
    runs, speed = [], None
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        t0 = time.perf_counter()
        accs, models = run_seed(seed, domains, args)
        runs.append({"seed": seed, "accuracy": accs, "seconds": time.perf_counter() - t0})
        print(json.dumps(runs[-1]), flush=True)
        if speed is None:
            speed = measure_speed(*models, args)
    report = {"args": vars(args), "runs": runs, "speed": speed, "summary": summarize(runs, domains),
              "total_seconds": time.perf_counter() - t_start, "machine": platform.processor() or platform.machine(),
              "torch_threads": torch.get_num_threads()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(markdown(report, domains))


def run_seed(seed: int, domains: list[str], args) -> tuple[dict, tuple]:
    from adapterkit.toolkit.scoring import score
    from adapterkit.transfer.common import load_domains
    from adapterkit.transfer.distill import concat_domains, new_teacher
    from adapterkit.transfer.kd import KDConfig, distill, train_supervised
    from adapterkit.toolkit.features import frozen_features
    from adapterkit.transfer.metakd import meta_distill, train_meta_teacher
    from adapterkit.transfer.typicality import typicality_scores
    from adapterkit.transfer.registry import TransferSpec
    from adapterkit.transfer.student import make_student

    spec = TransferSpec(source=domains[:-1], target=domains[-1], seed=seed, batch_size=args.batch_size,
                        epochs=args.teacher_epochs, max_seq_len=args.max_seq_len,
                        options={} if args.teacher_lr is None else {"teacher_lr": args.teacher_lr})
    if args.teacher_lr is None:
        spec.options["teacher_lr"] = 1e-4 if args.teacher_mode == "full" else 3e-3

    def teacher():
        torch.manual_seed(seed)
        return new_teacher(spec, args.teacher_mode)

    _, tokenizer, tcfg = teacher()
    data = load_domains(spec, tokenizer, args.train_limit, sample_seed=0)  # spec's sources and target: `domains`
    pad = tokenizer.pad_token_id or 0
    acc = {row: {} for row in ROWS}
    kd = KDConfig(method="tinybert", temperature=1.0, epochs=args.kd_epochs, lr=args.kd_lr,
                  batch_size=args.batch_size, seed=seed)

    def student_of(t, d, method_teacher_row):
        torch.manual_seed(seed)
        s = make_student(t, args.student_layers)
        distill(t, s, data[d].train, kd, pad)
        acc[method_teacher_row][d] = score(s, data[d].test, pad)["accuracy"]

    for d in domains:  # BERT-s and its students
        t, _, _ = teacher()
        train_supervised(t, data[d].train, tcfg, pad)
        acc["BERT-s"][d] = score(t, data[d].test, pad)["accuracy"]
        student_of(t, d, "BERT-s -> TinyBERT")
        print(f"seed {seed} {d}: BERT-s {acc['BERT-s'][d]:.3f} -> student {acc['BERT-s -> TinyBERT'][d]:.3f}", flush=True)
    rows, dom = concat_domains(data, domains)
    mix, _, _ = teacher()
    train_supervised(mix, rows, tcfg, pad)
    for d in domains:
        acc["BERT-mix"][d] = score(mix, data[d].test, pad)["accuracy"]
        student_of(mix, d, "BERT-mix -> TinyBERT")
    print(f"seed {seed}: BERT-mix {acc['BERT-mix']} students {acc['BERT-mix -> TinyBERT']}", flush=True)
    meta, _, _ = teacher()
    labels = torch.tensor([r["labels"] for r in rows])
    scores = typicality_scores(frozen_features(meta, rows, pad), labels, dom)
    head = train_meta_teacher(meta, rows, dom, scores, tcfg, pad)
    for k, d in enumerate(domains):
        acc["Meta-teacher"][d] = score(meta, data[d].test, pad)["accuracy"]
        torch.manual_seed(seed)
        s = make_student(meta, args.student_layers)
        meta_distill(meta, head, s, data[d].train, k, scores[dom == k], kd, pad)
        acc["MetaKD"][d] = score(s, data[d].test, pad)["accuracy"]
    print(f"seed {seed}: meta-teacher {acc['Meta-teacher']} MetaKD {acc['MetaKD']}", flush=True)
    return acc, (meta, s, data[domains[-1]].test, pad)


def measure_speed(teacher, student, rows, pad, args) -> dict:
    from adapterkit.data import PadCollator
    from adapterkit.transfer.distill import count_params

    for m in (teacher, student):
        m.set_attn_implementation("sdpa")
        m.eval()
    collate = PadCollator(pad)
    batches = []
    for i in range(0, min(len(rows), 32 * 6), 32):
        b = collate(rows[i:i + 32])
        b.pop("labels")
        batches.append(b)
    times = {"teacher": [], "student": []}
    with torch.inference_mode():
        for _ in range(args.repeats + 1):
            for name, model in (("teacher", teacher), ("student", student)):
                t0 = time.perf_counter()
                for b in batches:
                    model(**b)
                times[name].append(time.perf_counter() - t0)
    n = sum(len(b["input_ids"]) for b in batches)
    med = {k: statistics.median(v[1:]) for k, v in times.items()}  # the first repeat warms up
    return {"rows": n, "repeats": args.repeats, "teacher_examples_per_s": n / med["teacher"],
            "student_examples_per_s": n / med["student"], "speedup": med["teacher"] / med["student"],
            "teacher_params": count_params(teacher), "student_params": count_params(student)}


def merge(args, domains: list[str]) -> None:
    parts = [json.loads(Path(f).read_text()) for f in args.merge.split(",") if f]
    runs = [r for p in parts for r in p["runs"]]
    report = {"args": [p["args"] for p in parts], "runs": runs, "speed": parts[0]["speed"],
              "summary": summarize(runs, domains), "total_seconds": [p["total_seconds"] for p in parts],
              "machine": parts[0]["machine"], "torch_threads": parts[0]["torch_threads"]}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(markdown(report, domains))


def summarize(runs: list[dict], domains: list[str]) -> dict:
    out = {}
    for row in ROWS:
        per = {d: [100 * r["accuracy"][row][d] for r in runs] for d in domains}
        avg = [sum(100 * r["accuracy"][row][d] for d in domains) / len(domains) for r in runs]
        out[row] = {d: (statistics.mean(v), statistics.pstdev(v)) for d, v in per.items()}
        out[row]["avg"] = (statistics.mean(avg), statistics.pstdev(avg))
    return out


def markdown(report: dict, domains: list[str]) -> str:
    s, sp = report["summary"], report["speed"]
    lines = ["| method | " + " | ".join(domains) + " | avg |", "|---|" + "---:|" * (len(domains) + 1)]
    for row in ROWS:
        lines.append(f"| {row} | " + " | ".join(f"{s[row][d][0]:.1f} ± {s[row][d][1]:.1f}" for d in [*domains, "avg"]) + " |")
    lines.append("")
    lines.append(f"teacher {sp['teacher_params']:,} parameters, student {sp['student_params']:,} "
                 f"({sp['teacher_params'] / sp['student_params']:.2f}x smaller); inference {sp['teacher_examples_per_s']:.1f} "
                 f"vs {sp['student_examples_per_s']:.1f} examples/s: {sp['speedup']:.2f}x faster")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
