"""Peak memory per rank of FSDP2 adapter training on a frozen bert-base-sized backbone, at 1, 2
and 4 processes (gloo, CPU).

The model is created on the meta device, sharded with adapterkit's fsdp strategy (every layer
and the root), then materialised shard by shard with random weights, so no rank ever holds the
whole backbone. Each rank reports its peak resident memory above what it used right after the
imports (VmHWM - VmRSS from /proc/self/status), and the bytes of parameters it holds.

Two allocator settings: glibc's default, whose dynamic mmap threshold rises to the size of the
freed all-gather buffers (~28 MB per bert-base layer) so later buffers come from heap arenas
that keep their pages (peak RSS then measures allocator retention), and a fixed threshold
(MALLOC_MMAP_THRESHOLD_=65536), where freed buffers go back to the system.

    python3 benchmarks/bench_dist_fsdp_memory.py            # runs 1, 2, 4 processes in turn
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nprocs", default="1,2,4")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=2, help="sequences per rank")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--out", default="runs/bench_dist_fsdp_memory.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def worker(args) -> None:
    import torch
    import torch.distributed as dist
    import transformers as T

    import adapterkit as ak
    from adapterkit.dist.launch import init_distributed
    from adapterkit.dist.strategies import DistConfig, wrap_for_strategy

    torch.set_num_threads(1)
    init_distributed()
    base_kb = status_kb("VmRSS")
    with torch.device("meta"):
        model = T.BertForSequenceClassification(T.BertConfig(vocab_size=30522, num_labels=2, **BERT_BASE))
        ak.add_adapter(model, "bench", ak.BottleneckConfig(bottleneck_dim=64, sharing=1))
    ak.train_adapter(model, "bench")
    run = wrap_for_strategy(model, "fsdp", DistConfig(hybrid=False))
    materialize(model)
    opt = torch.optim.AdamW(run.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(dist.get_rank())
    ids = torch.randint(1000, 30000, (args.batch, args.seq_len), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.zeros(args.batch, dtype=torch.long)}
    losses = []
    for _ in range(args.steps):
        losses.append(run.step(batch))
        opt.step()
        opt.zero_grad()
    local_bytes = sum(_local(p).numel() * p.element_size() for p in model.parameters())
    mine = {"peak_mb": (status_kb("VmHWM") - base_kb) / 1024, "param_mb": local_bytes / 2**20, "loss": losses[-1]}
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    if dist.get_rank() == 0:
        Path(args.out).write_text(json.dumps(everyone))
    dist.destroy_process_group()


def _local(p):
    return p.to_local() if hasattr(p, "to_local") else p


def materialize(model) -> None:
    """Allocate this rank's shards and fill them: random weights, the embeddings' index buffers."""
    import torch

    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            _local(p).normal_(0.0, 0.02, generator=g)
        emb = model.bert.embeddings
        emb.position_ids.copy_(torch.arange(emb.position_ids.shape[-1]).expand_as(emb.position_ids))
        emb.token_type_ids.zero_()


ALLOCATORS = {"glibc default": {}, "MALLOC_MMAP_THRESHOLD_=65536": {"MALLOC_MMAP_THRESHOLD_": "65536"}}


def orchestrate(args) -> None:
    rows = []
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for allocator, extra_env in ALLOCATORS.items():
        for n in [int(x) for x in args.nprocs.split(",")]:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
                   str(Path(__file__).resolve()), "--worker", *sys.argv[1:]]
            subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS="1", **extra_env))
            rows.append({"allocator": allocator, "nproc": n, "ranks": json.loads(Path(args.out).read_text())})
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print(f"args: {vars(args)}")
    print("| allocator | processes | peak MB per rank above baseline (median, max) | parameter MB per rank | peak vs 1 process |")
    print("|---|---|---|---|---|")
    for allocator in ALLOCATORS:
        sub = [r for r in rows if r["allocator"] == allocator]
        first = statistics.median(r["peak_mb"] for r in sub[0]["ranks"])
        for row in sub:
            peaks = [r["peak_mb"] for r in row["ranks"]]
            params = statistics.median(r["param_mb"] for r in row["ranks"])
            print(f"| {allocator} | {row['nproc']} | {statistics.median(peaks):.0f}, {max(peaks):.0f} | {params:.0f} | "
                  f"{statistics.median(peaks) / first:.2f} |")


if __name__ == "__main__":
    args = parse_args()
    worker(args) if args.worker else orchestrate(args)
