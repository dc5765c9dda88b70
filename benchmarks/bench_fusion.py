"""Combining source adapters for a few-shot target: AdapterFusion vs output averaging vs weight
merging vs a single target adapter, on the Amazon domains (each target with the other three as
sources, settings of the transfer table 8 so its rows compare) and on GLUE (CoLA, SST-2 and
MRPC adapters for RTE).

    python3 benchmarks/bench_fusion.py --suite amazon --targets kitchen        # 100/400 shots, seeds 0-2
    python3 benchmarks/bench_fusion.py --suite glue --seeds 0                  # RTE from cola,sst2,mrpc
    python3 benchmarks/bench_fusion.py --report                                # tables from the log
    python3 benchmarks/bench_fusion.py --quick --model DIR --data-dir DIR      # smoke run

Stage 1 adapters (one per source and seed, all from one initialisation) are trained once and
kept under --cache (runs/fusion-cache/<suite>-s<seed>/<source>/), so every method and shot count
of a seed fuses the same adapters. Every run is appended to --log; a rerun skips what is there.
Methods run back to back in one process, in a rotated order per setting.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = ("target-only", "fusion", "average", "merge")
LABELS = {"target-only": "single target adapter (Tgt-Only)", "fusion": "AdapterFusion (3 sources)",
          "average": "output averaging + head", "merge": "weight merging (linear) + head"}
DOMAINS = ("books", "dvd", "electronics", "kitchen")
SUITES = {  # suite -> (data dir, targets, sources of a target, defaults)
    "amazon": ("/work/shared/data/amazon", DOMAINS, lambda t: [d for d in DOMAINS if d != t],
               dict(shots="100,400", epochs="100:6,400:2", max_seq_len=64, source_rows=300)),
    "glue": ("/work/shared/data/glue", ("rte",), lambda t: ["cola", "sst2", "mrpc"],
             dict(shots="500", epochs="500:3", max_seq_len=128, source_rows=600)),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", choices=sorted(SUITES), default="amazon")
    p.add_argument("--targets", default=None, help="comma-separated targets (default: the suite's)")
    p.add_argument("--shots", default=None, help="target training rows, comma-separated")
    p.add_argument("--epochs", default=None, help="target epochs per shot count, SHOTS:EPOCHS,...")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--max-seq-len", type=int, default=None)
    p.add_argument("--source-rows", type=int, default=None, help="train rows per source")
    p.add_argument("--source-epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--fusion-lr", type=float, default=1e-3)
    p.add_argument("--top-n", type=int, default=2, help="adapted top layers (the frozen rest is cached)")
    p.add_argument("--model", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default="runs/fusion-cache")
    p.add_argument("--log", default="benchmarks/results/fusion_runs.jsonl")
    p.add_argument("--report", action="store_true", help="only print the tables from the log")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    data_dir, targets, _, defaults = SUITES[args.suite]
    args.data_dir = args.data_dir or data_dir
    args.targets = args.targets or ",".join(targets)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def run_grid(args) -> list[dict]:
    import torch

    from adapterkit.transfer import TransferSpec, run_algorithm

    torch.set_num_threads(args.threads)
    log = Path(args.log)
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    have = {_key(r) for r in done}
    epochs = dict(tuple(map(int, pair.split(":"))) for pair in args.epochs.split(","))
    methods = args.methods.split(",")
    settings = [(t, int(n), int(s)) for s in args.seeds.split(",") for t in args.targets.split(",")
                for n in args.shots.split(",")]
    for k, (target, shots, seed) in enumerate(settings[:1] if args.quick else settings):
        for method in methods[k % len(methods):] + methods[: k % len(methods)]:
            row = {"suite": args.suite, "target": target, "shots": shots, "seed": seed, "method": method,
                   "config": _config(args)}
            if _key(row) in have and not args.quick:
                continue
            options = {"source_rows": args.source_rows, "top_n": args.top_n}
            if method != "target-only":
                options.update(source_adapters=f"{args.cache}/{args.suite}-{_config(args)}-s{seed}",
                               source_epochs=args.source_epochs)
            if method == "fusion":
                options["fusion_lr"] = args.fusion_lr
            spec = TransferSpec(source=SUITES[args.suite][2](target), target=target, target_shots=shots,
                                model=args.model, seed=seed, max_seq_len=args.max_seq_len, epochs=epochs[shots],
                                batch_size=16, lr=args.lr, quick=args.quick, data_dir=args.data_dir, options=options)
            cpu = time.process_time()
            result = run_algorithm(method, spec)
            row.update(test=result["test"], seconds=result["seconds"], cpu_seconds=time.process_time() - cpu,
                       steps=result.get("steps"), fusion_parameters=result.get("fusion_parameters"))
            print(f"{target:<12} {shots:>4} seed {seed}  {method:<12} acc {row['test']['accuracy']:.4f} "
                  f"f1 {row['test']['f1']:.4f}  {row['seconds']:.0f} s", flush=True)
            if not args.quick:
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "a") as f:
                    f.write(json.dumps(row) + "\n")
            done.append(row)
    return [r for r in done if r.get("suite") == args.suite and r["config"] == _config(args)]


def _config(args) -> str:
    return (f"len{args.max_seq_len}-src{args.source_rows}x{args.source_epochs}-top{args.top_n}-ep{args.epochs}"
            f"-lr{args.lr}-flr{args.fusion_lr}-{args.model or 'minilm'}")


def _key(row: dict) -> tuple:
    return row.get("suite"), row["target"], row["shots"], row["seed"], row["method"], row["config"]


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    spread = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {spread:.1f}"


def table(runs: list[dict]) -> str:
    """Methods x (target, shots): test accuracy (and F1) in %, mean ± sd over seeds, seeds, s/run."""
    cells = sorted({(r["target"], r["shots"]) for r in runs})
    head = "| method | " + " | ".join(f"{t} {n} acc | {t} {n} F1" for t, n in cells) + " | seeds | s/run |"
    lines = [head, "|---|" + "---:|" * (2 * len(cells) + 2)]
    for method in METHODS:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        values = []
        for t, n in cells:
            values += [cell([r["test"][m] for r in mine if (r["target"], r["shots"]) == (t, n)]) for m in ("accuracy", "f1")]
        seeds = len({r["seed"] for r in mine})
        lines.append(f"| {LABELS[method]} | " + " | ".join(values)
                     + f" | {seeds} | {statistics.median(r['seconds'] for r in mine):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report:
        log = Path(args.log)
        runs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        runs = [r for r in runs if r.get("suite") == args.suite and r["config"] == _config(args)]
    else:
        runs = run_grid(args)
    print(f"\n{args.suite}: {_config(args)}\n")
    print(table(runs))


if __name__ == "__main__":
    main()
