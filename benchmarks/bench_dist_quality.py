"""Does top-k 1% gradient compression (with error feedback) cost quality? CoLA, pretrained
all-MiniLM-L6-v2 with an adapter, 4 processes as 2 nodes x 2 (hierarchical ddp), the same
seed, data order and number of steps, uncompressed vs topk:0.01; dev Matthews correlation.

    python3 benchmarks/bench_dist_quality.py                  # both runs, then the table
    python3 benchmarks/bench_dist_quality.py --epochs 1       # quicker
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import _data  # noqa: F401,E402  (points adapterkit at ../shared/data)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compressions", nargs="+", default=["none", "topk:0.01,warmup=20"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32, help="global batch (split over the 4 ranks)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-seq-len", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="runs/bench_dist_quality.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args) -> None:
    import torch
    import torch.distributed as dist

    from adapterkit.dist.launch import init_distributed

    torch.set_num_threads(1)
    init_distributed()
    results = [train_one(args, spec) for spec in args.compressions]
    if dist.get_rank() == 0:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    dist.destroy_process_group()


def train_one(args, spec: str) -> dict:
    import torch

    from adapterkit import backbone
    from adapterkit.config import BottleneckConfig
    from adapterkit.data import encode, get_task, load_glue
    from adapterkit.dist.strategies import DistConfig, wrap_for_strategy
    from adapterkit.evaluation import evaluate, make_batches
    from adapterkit.model import add_adapter, train_adapter
    from adapterkit.toolkit.schedule import linear_warmup

    task = get_task("cola")
    tokenizer = backbone.load_tokenizer(None)
    train_rows = encode(load_glue(task, "train"), tokenizer, task, args.max_seq_len)
    dev_rows = encode(load_glue(task, "dev"), tokenizer, task, args.max_seq_len)
    torch.manual_seed(args.seed)  # the same head and adapter init on every rank and in every run
    model = backbone.load_model(None, num_labels=task.num_labels)
    add_adapter(model, "cola", BottleneckConfig(bottleneck_dim=64, sharing=1))
    train_adapter(model, "cola")
    run = wrap_for_strategy(model, "ddp", DistConfig(compression=spec, bucket_mb=4))
    opt = torch.optim.AdamW(run.parameters(), lr=args.lr)
    steps = args.epochs * math.ceil(len(train_rows) / args.batch_size)
    sched = linear_warmup(opt, int(0.1 * steps), steps)  # the trainer's schedule
    pad_id, t0, losses = tokenizer.pad_token_id or 0, time.perf_counter(), []
    for epoch in range(args.epochs):
        model.train()
        for batch in make_batches(train_rows, args.batch_size, pad_id, False, seed=args.seed + epoch):
            batch.pop("_rows", None)
            losses.append(run.step(run.shard(batch)))
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - t0
    with run.eval_model() as m:
        dev = evaluate(m, dev_rows, task, 128, pad_id) if m is not None else None
    run.write_stats(Path(args.out).parent / f"quality-{spec.split(',')[0].replace(':', '')}")
    return {"compression": spec, "steps": len(losses), "final_loss": sum(losses[-50:]) / 50,
            "dev": dev, "train_seconds": seconds,
            "cross_node_bytes_per_step": run.stats.cross_bytes / max(1, run.stats.steps)}


def orchestrate(args) -> None:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4",
           str(Path(__file__).resolve()), "--worker", *sys.argv[1:]]
    subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS="1", ADAPTERKIT_DIST_NNODES="2"))
    data = json.loads(Path(args.out).read_text())
    print(f"args: {data['args']}")
    print("| compression | steps | dev MCC | final train loss | cross-node MB per step (rank 0, model) |")
    print("|---|---|---|---|---|")
    for r in data["results"]:
        print(f"| {r['compression']} | {r['steps']} | {r['dev']['matthews_correlation']:.4f} | {r['final_loss']:.4f} | "
              f"{r['cross_node_bytes_per_step'] / 1e6:.3f} |")


if __name__ == "__main__":
    args = parse_args()
    worker(args) if args.worker else orchestrate(args)
