"""Gradient communication for adapter training across two "nodes" joined by a slow link.

Two network namespaces joined by a veth pair whose bandwidth `tc tbf` limits
(benchmarks/dist_netns.sh), 2 processes per namespace, gloo bound to the namespace's
interface. Per backbone (MiniLM-L6-sized, bert-base-sized; random weights; adapters on every
layer, bottleneck 64, sharing 1) and per link rate, one DDP model trains with each way of
communicating, interleaved step by step (round-robin, rotated each round), and we report per
step the median wall time and the bytes that crossed the link (veth tx counters of both
namespaces, TCP/IP headers included) next to adapterkit's own byte model.

    sudo python3 benchmarks/bench_dist_comm.py            # sets up, runs, cleans up (minutes)
    python3 benchmarks/bench_dist_comm.py --rates 200 --rounds 3 --backbones minilm
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NETNS = HERE / "dist_netns.sh"
NODES = [("akdistA", "akdA", "10.77.0.1"), ("akdistB", "akdB", "10.77.0.2")]
BACKBONES = {
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
# mode -> (hierarchical, compression); "ddp-stock" is DDP's own all-reduce (torch's allreduce_hook);
# "no-comm" skips gradient sync (DDP no_sync): the compute part of a step
MODES = {
    "no-comm": None,
    "ddp-stock": None,
    "flat": (False, "none"),
    "hier": (True, "none"),
    "hier+fp16": (True, "fp16"),
    "hier+topk:0.01": (True, "topk:0.01,warmup=0"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="1000,200,50", help="link rates in Mbit/s, comma separated")
    p.add_argument("--backbones", default="minilm,bert-base")
    p.add_argument("--rounds", type=int, default=7, help="timed steps per mode (interleaved)")
    p.add_argument("--batch", type=int, default=1, help="sequences per rank per step")
    p.add_argument("--seq-len", type=int, default=16)
    p.add_argument("--bucket-mb", type=float, default=4.0)
    p.add_argument("--out", default="runs/bench_dist_comm.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------- orchestrator (root namespace)
def orchestrate(args) -> None:
    subprocess.run(["bash", str(NETNS), "down"], check=True)
    subprocess.run(["bash", str(NETNS), "up", args.rates.split(",")[0]], check=True)
    try:
        procs = [launch_node(i, args) for i in range(len(NODES))]
        codes = [p.wait() for p in procs]
        if any(codes):
            sys.exit(f"workers failed: exit codes {codes} (logs in {Path(args.out).parent})")
    finally:
        subprocess.run(["bash", str(NETNS), "down"], check=True)
    print_tables(json.loads(Path(args.out).read_text()))


def launch_node(node: int, args) -> subprocess.Popen:
    ns, ifname, _ = NODES[node]
    env = dict(os.environ, GLOO_SOCKET_IFNAME=ifname, OMP_NUM_THREADS="1", BENCH_IFNAME=ifname, BENCH_NS=ns)
    cmd = [
        "ip", "netns", "exec", ns, sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
        "--node-rank", str(node), "--nproc-per-node", "2", "--master-addr", NODES[0][2], "--master-port", "29555",
        str(Path(__file__).resolve()), "--worker", *sys.argv[1:],
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    log = open(Path(args.out).with_suffix(f".node{node}.log"), "w")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


# ---------------------------------------------------------------- workers (inside a namespace)
def worker(args) -> None:
    import torch
    import torch.distributed as dist

    from adapterkit.dist.launch import init_distributed

    torch.set_num_threads(1)
    init_distributed()
    results = []
    for backbone in args.backbones.split(","):
        results += bench_backbone(backbone, args)
    if dist.get_rank() == 0:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    dist.barrier()
    dist.destroy_process_group()


def bench_backbone(backbone: str, args) -> list[dict]:
    import torch
    import torch.distributed as dist

    model, batch = build(backbone, args)
    ddp, states = wrap(model, args)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out = []
    for rate in [int(r) for r in args.rates.split(",")]:
        set_rate(rate)
        records = {m: [] for m in MODES}
        for r in range(-2, args.rounds):  # two untimed rounds: bucket rebuild, warm caches
            order = list(MODES)[r % len(MODES):] + list(MODES)[:r % len(MODES)]
            for mode in order:
                rec = timed_step(ddp, states, mode, batch, opt)
                if r >= 0:
                    records[mode].append(rec)
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, records)
        for mode in MODES:
            out.append(summarize(backbone, rate, mode, trainable, gathered, states))
    return out


def build(backbone: str, args):
    import torch
    import transformers as T

    import adapterkit as ak

    torch.manual_seed(0)  # the same random backbone on every rank
    config = T.BertConfig(vocab_size=30522, num_labels=2, **BACKBONES[backbone])
    model = T.BertForSequenceClassification(config)
    ak.add_adapter(model, "bench", ak.BottleneckConfig(bottleneck_dim=64, sharing=1))
    ak.train_adapter(model, "bench")
    g = torch.Generator().manual_seed(int(os.environ["RANK"]))
    ids = torch.randint(1000, 30000, (args.batch, args.seq_len), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.zeros(args.batch, dtype=torch.long)}
    return model, batch


class Dispatch:
    """One DDP model, one hook: the current mode picks the hook state (each keeps its residuals)."""

    def __init__(self, states):
        self.states, self.mode = states, "flat"


def dispatch_hook(d: Dispatch, bucket):
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    from adapterkit.dist.hook import hierarchical_hook

    if d.mode == "ddp-stock":
        return allreduce_hook(None, bucket)
    return hierarchical_hook(d.states[d.mode], bucket)


def wrap(model, args):
    from torch.nn.parallel import DistributedDataParallel as DDP

    from adapterkit.dist.compression import Compression
    from adapterkit.dist.hook import HookState
    from adapterkit.dist.topology import build_topology

    flat, hier = build_topology(hierarchical=False), build_topology(hierarchical=True)
    states = {
        mode: HookState(topo=hier if spec[0] else flat, compression=Compression.parse(spec[1]))
        for mode, spec in MODES.items() if spec is not None
    }
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    DDP._set_params_and_buffers_to_ignore_for_model(model, frozen + [n for n, _ in model.named_buffers()])
    ddp = DDP(model, bucket_cap_mb=args.bucket_mb, forward_sync_buffers=False)
    dispatch = Dispatch(states)
    ddp.register_comm_hook(dispatch, dispatch_hook)
    return ddp, dispatch


def set_rate(rate: int) -> None:
    """Local rank 0 of each node reshapes its own side of the link."""
    import torch.distributed as dist

    if os.environ["LOCAL_RANK"] == "0":
        burst = max(65536, rate * 1_000_000 // 8 // 100)
        subprocess.run(["tc", "qdisc", "replace", "dev", os.environ["BENCH_IFNAME"], "root", "tbf", "rate",
                        f"{rate}mbit", "burst", str(burst), "limit", str(4 * burst)], check=True)
    dist.barrier()


def tx_bytes() -> int:
    return int(Path(f"/sys/class/net/{os.environ['BENCH_IFNAME']}/statistics/tx_bytes").read_text())


def timed_step(ddp, dispatch: Dispatch, mode: str, batch: dict, opt) -> dict:
    import torch.distributed as dist

    dispatch.mode = mode
    before = dict(vars(dispatch.states[mode].stats)) if mode in dispatch.states else None
    dist.barrier()
    tx0, t0 = tx_bytes(), time.perf_counter()
    with ddp.no_sync() if mode == "no-comm" else contextlib.nullcontext():
        ddp(**batch).loss.backward()
    opt.step()
    opt.zero_grad()
    seconds = time.perf_counter() - t0
    dist.barrier()
    wire = tx_bytes() - tx0 if os.environ["LOCAL_RANK"] == "0" else 0
    model = 0
    if before is not None:
        model = dispatch.states[mode].stats.cross_bytes - before["cross_bytes"]
    return {"seconds": seconds, "wire": wire, "model": model}


def summarize(backbone, rate, mode, trainable, gathered, dispatch) -> dict:
    rounds = len(gathered[0][mode])
    wire = [sum(g[mode][i]["wire"] for g in gathered) for i in range(rounds)]
    model = [sum(g[mode][i]["model"] for g in gathered) for i in range(rounds)]
    return {
        "backbone": backbone, "rate_mbit": rate, "mode": mode, "trainable_params": trainable,
        "step_s": statistics.median(r["seconds"] for r in gathered[0][mode]),
        "wire_bytes": statistics.median(wire), "model_bytes": statistics.median(model) if mode in dispatch.states else None,
    }


# ---------------------------------------------------------------- report
def print_tables(data: dict) -> None:
    rows = data["results"]
    print(f"args: {data['args']}")
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        sub = [r for r in rows if r["backbone"] == backbone]
        print(f"\n{backbone}: {sub[0]['trainable_params']:,} trainable parameters "
              f"({4 * sub[0]['trainable_params'] / 1e6:.1f} MB fp32 gradients)")
        print("| Mbit/s | mode | step s (median) | step vs flat | comm s (step - no-comm) | "
              "MB across link (wire) | bytes vs flat | MB (model) |")
        print("|---|---|---|---|---|---|---|---|")
        for rate in dict.fromkeys(r["rate_mbit"] for r in sub):
            at = {r["mode"]: r for r in sub if r["rate_mbit"] == rate}
            flat, compute = at["flat"], at["no-comm"]["step_s"]
            for mode, r in at.items():
                model = "" if r["model_bytes"] is None else f"{r['model_bytes'] / 1e6:.2f}"
                comm = "" if mode == "no-comm" else f"{r['step_s'] - compute:.3f}"
                ratio = "" if mode == "no-comm" else f"{flat['wire_bytes'] / max(r['wire_bytes'], 1):.1f}x"
                print(f"| {rate} | {mode} | {r['step_s']:.3f} | {flat['step_s'] / r['step_s']:.2f}x | {comm} | "
                      f"{r['wire_bytes'] / 1e6:.2f} | {ratio} | {model} |")


if __name__ == "__main__":
    args = parse_args()
    if args.worker:
        worker(args)
    elif os.geteuid() != 0:
        sys.exit("needs root (network namespaces and tc)")
    else:
        orchestrate(args)
