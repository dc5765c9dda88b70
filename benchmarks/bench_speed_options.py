"""--gradient-checkpointing and --compile: memory and step time, on and off, interleaved in one
process, medians (adapterkit.speed).

    flock /work/notes/bench.lock python3 benchmarks/bench_speed_options.py --part checkpointing \
        --batch-size 4 --seq-len 512 --steps 5
    flock /work/notes/bench.lock python3 benchmarks/bench_speed_options.py --part compile \
        --batch-size 16 --seq-len 64 --steps 10

Adapters: one per site on every layer of the default backbone (all-MiniLM-L6-v2), bottleneck =
hidden/16, AdamW, the backbone's dropout off (adapterkit's default). Memory is the activation
memory of one training step, counted exactly: bytes of the distinct storages autograd keeps for
backward (with checkpointing: the layer inputs it keeps plus what the recompute holds at once is
not counted, so the column is what stays alive between forward and backward). Compile: the first
step's time (compile + run) and the later steps' median.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def build(checkpointing: bool = False, compile: bool = False, model_name=None):
    import adapterkit as ak
    from adapterkit.backbone import load_model
    from adapterkit.speed import apply_speed_options

    torch.manual_seed(0)
    model = load_model(model_name, num_labels=2)
    ak.add_adapter(model, "a", ak.BottleneckConfig(reduction_factor=16, sharing="none"))
    ak.train_adapter(model, "a")
    model.train()
    apply_speed_options(model, gradient_checkpointing=checkpointing, compile=compile)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, optimizer


def step(model, optimizer, batch) -> None:
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def saved_bytes(model, batch) -> int:
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def make_batch(batch_size: int, seq_len: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(1000, 20000, (batch_size, seq_len), generator=g),
            "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
            "labels": torch.randint(0, 2, (batch_size,), generator=g)}


def peak_child(args) -> None:
    """In a fresh process: the rise of the peak RSS over one training step (after one untimed
    step, so the optimizer state and allocator pools exist): the step's transient memory."""
    import resource

    batch = make_batch(args.batch_size, args.seq_len)
    model, optimizer = build(checkpointing=args.peak_child == "on", model_name=args.model)
    step(model, optimizer, batch)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    import gc

    gc.collect()
    step(model, optimizer, batch)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"PEAK {after} {before}")


def peak_rss(args) -> dict:
    import subprocess
    import sys

    out = {}
    for on in (False, True):
        cmd = [sys.executable, __file__, "--part", "checkpointing", "--batch-size", str(args.batch_size),
               "--seq-len", str(args.seq_len), "--peak-child", "on" if on else "off"]
        if args.model:
            cmd += ["--model", args.model]
        line = [l for l in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
                if l.startswith("PEAK")][0]
        out[on] = int(line.split()[1]) * 1024  # ru_maxrss is in KiB on Linux
    return out


def checkpointing(args) -> None:
    batch = make_batch(args.batch_size, args.seq_len)
    runs = {on: build(checkpointing=on, model_name=args.model) for on in (False, True)}
    memory = {on: saved_bytes(m, batch) for on, (m, _) in runs.items()}
    peak = peak_rss(args)
    if args.memory_only:  # no timing: needs no quiet machine
        print(f"\nbatch {args.batch_size} x {args.seq_len}")
        print("| --gradient-checkpointing | saved for backward outside checkpoints (MB) | peak RSS of the process (MB) |")
        print("|---|---:|---:|")
        for on in runs:
            print(f"| {'on' if on else 'off'} | {memory[on] / 2**20:.0f} | {peak[on] / 2**20:.0f} |")
        return
    times = {on: [] for on in runs}
    for i in range(args.warmup + args.steps):
        for on, (m, o) in runs.items():
            t0 = time.perf_counter()
            step(m, o, batch)
            if i >= args.warmup:
                times[on].append(time.perf_counter() - t0)
    print(f"\nbatch {args.batch_size} x {args.seq_len}, {args.steps} interleaved steps (after {args.warmup} warm-up)")
    print("| --gradient-checkpointing | saved for backward outside checkpoints (MB) | peak RSS (MB) | step (s, median) | vs off |")
    print("|---|---:|---:|---:|---:|")
    base = statistics.median(times[False])
    for on in runs:
        med = statistics.median(times[on])
        print(f"| {'on' if on else 'off'} | {memory[on] / 2**20:.0f} | {peak[on] / 2**20:.0f} | {med:.2f} | "
              f"{med / base:.2f}x |")


def compiled(args) -> None:
    batch = make_batch(args.batch_size, args.seq_len)
    runs = {on: build(compile=on, model_name=args.model) for on in (False, True)}
    first = {}
    for on, (m, o) in runs.items():
        t0 = time.perf_counter()
        step(m, o, batch)
        first[on] = time.perf_counter() - t0
    times = {on: [] for on in runs}
    for i in range(args.warmup + args.steps):
        for on, (m, o) in runs.items():
            t0 = time.perf_counter()
            step(m, o, batch)
            if i >= args.warmup:
                times[on].append(time.perf_counter() - t0)
    print(f"\nbatch {args.batch_size} x {args.seq_len} (one shape), {args.steps} interleaved steps after the first "
          f"and {args.warmup} warm-up")
    print("| --compile | first step (s) | later steps (s, median) | vs off | steps to pay back the first |")
    print("|---|---:|---:|---:|---:|")
    base = statistics.median(times[False])
    for on in runs:
        med = statistics.median(times[on])
        gain = base - med
        payback = f"{(first[on] - first[False]) / gain:.0f}" if on and gain > 0 else ("-" if not on else "never")
        print(f"| {'on' if on else 'off'} | {first[on]:.1f} | {med:.3f} | {med / base:.2f}x | {payback} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("checkpointing", "compile"), required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--memory-only", action="store_true", help="checkpointing: memory counts, no step times")
    parser.add_argument("--peak-child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    import transformers

    if not args.peak_child:
        print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}")
    if args.peak_child:
        return peak_child(args)
    checkpointing(args) if args.part == "checkpointing" else compiled(args)


if __name__ == "__main__":
    main()
