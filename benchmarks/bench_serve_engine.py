"""Mixed-adapter batches without HTTP: sequences/s for a batch of 32 whose rows use K distinct
adapters, with N adapters resident, against the alternatives a user has today.

    python3 benchmarks/bench_serve_engine.py --data /work/shared/data/glue/SST-2/dev.tsv \
        [--resident 1000] [--ks 1,4,16,32] [--reps 8] [--sharing 3] [--json out.json]

Alternatives, interleaved per repetition in one process (medians over --reps):
  gather      adapterkit.routing, per-row weights stacked -> two batched GEMMs per site (default)
  group       adapterkit.routing, rows of each adapter index_select-ed, run, index_copy-ed back
  single      the same 32 rows through one active adapter (the plain, unrouted forward)
  switching   set_active(adapter) and run the rows of each adapter as their own sub-batch
              (what users of PEFT / AdapterHub do today to serve several adapters)
  peft-lora   PEFT LoRA r=8 at the same sites with `adapter_names=[...]` (PEFT's mixed batches;
              K LoRA adapters resident: loading 1,000 into PEFT takes too long for this run)
  bare        the backbone without adapters
Every alternative runs the backbone and the model's own head on the same tokenized batch (32 SST-2
dev sentences, padded to the longest); tokenization is outside the timing.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import time

import torch


def sentences(path: str, n: int) -> list[str]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows[:n]]


def add_adapters(model, n: int, sharing, bottleneck: int) -> list[str]:
    import adapterkit as ak
    from adapterkit.model import get_bank

    names = [f"a{i}" for i in range(n)]
    g = torch.Generator().manual_seed(0)
    for name in names:
        ak.add_adapter(model, name, ak.BottleneckConfig(bottleneck_dim=bottleneck, sharing=sharing), activate=False)
        with torch.no_grad():
            for p in get_bank(model).adapters[name].parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return names


def peft_model(model_name: str, k: int):
    from peft import LoraConfig, get_peft_model

    from adapterkit.backbone import load_model

    base = load_model(model_name, num_labels=2).eval()
    config = LoraConfig(r=8, lora_alpha=16, target_modules=r".*layer\.\d+\.(attention\.)?output\.dense")
    model = get_peft_model(base, config, adapter_name="l0")
    for i in range(1, k):
        model.add_adapter(f"l{i}", config)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()


def row_names(names: list[str], k: int, batch: int) -> list[str]:
    chosen = names[:: max(1, len(names) // k)][:k]
    return [chosen[i % k] for i in range(batch)]


def timed(fn) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="SST-2 dev.tsv")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--resident", type=int, default=1000)
    p.add_argument("--ks", default="1,4,16,32")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=8)
    p.add_argument("--sharing", default="3")
    p.add_argument("--bottleneck", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip", default="", help="comma-separated alternatives to leave out")
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    import adapterkit as ak
    from adapterkit.backbone import load_model, load_tokenizer
    from adapterkit.config import parse_sharing
    from adapterkit.routing import route

    tokenizer = load_tokenizer(args.model)
    inputs = tokenizer(sentences(args.data, args.batch), padding=True, truncation=True, max_length=128, return_tensors="pt")
    model = load_model(args.model, num_labels=2).eval()
    t0 = time.perf_counter()
    names = add_adapters(model, args.resident, parse_sharing(args.sharing), args.bottleneck)
    print(f"{args.resident} adapters added in {time.perf_counter() - t0:.1f} s; batch {tuple(inputs['input_ids'].shape)}", flush=True)
    ks = [int(k) for k in args.ks.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    lora = peft_model(args.model, max(ks)) if "peft-lora" not in skip else None

    def routed(rows, formulation):
        with route(model, rows, formulation):
            model(**inputs)

    def switching(rows):
        for name in dict.fromkeys(rows):
            idx = [i for i, r in enumerate(rows) if r == name]
            ak.set_active(model, [name])
            model(**{k: v[idx] for k, v in inputs.items()})

    def single():
        ak.set_active(model, [names[0]])
        model(**inputs)

    def bare():
        ak.set_active(model, [])
        model(**inputs)

    cases = {}
    for k in ks:
        rows = row_names(names, k, args.batch)
        lrows = [f"l{i % k}" for i in range(args.batch)]
        cases.update({
            f"gather K={k}": lambda rows=rows: routed(rows, "gather"),
            f"group K={k}": lambda rows=rows: routed(rows, "group"),
            f"switching K={k}": lambda rows=rows: switching(rows),
            f"peft-lora K={k}": lambda lrows=lrows: lora(**inputs, adapter_names=lrows),
        })
    cases.update({"single": single, "bare": bare})
    cases = {n: f for n, f in cases.items() if n.split(" ")[0] not in skip}
    for fn in cases.values():  # warm-up
        timed(fn)
    times = {name: [] for name in cases}
    for rep in range(args.reps):
        for name, fn in cases.items():
            times[name].append(timed(fn))
        print(f"rep {rep + 1}/{args.reps}: " + ", ".join(f"{n} {1000 * t[-1]:.0f} ms" for n, t in times.items()), flush=True)
    report(args, cases, times, ks)


def report(args, cases, times, ks) -> None:
    med = {n: statistics.median(t) for n, t in times.items()}
    rate = {n: args.batch / m for n, m in med.items()}
    print(f"\n| alternative | ms / batch of {args.batch} (median) | sequences/s | vs single |")
    print("|---|---:|---:|---:|")
    for n in cases:
        print(f"| {n} | {1000 * med[n]:.1f} | {rate[n]:.1f} | {rate[n] / rate['single']:.2f}x |")
    for k in ks:
        line = f"K={k}: gather / single {rate[f'gather K={k}'] / rate['single']:.2f}x"
        if f"switching K={k}" in rate:
            line += f", gather / switching {rate[f'gather K={k}'] / rate[f'switching K={k}']:.2f}x"
        if f"peft-lora K={k}" in rate:
            line += f", gather / peft-lora {rate[f'gather K={k}'] / rate[f'peft-lora K={k}']:.2f}x"
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "median_s": med, "seq_per_s": rate, "times": times}, f, indent=2)


if __name__ == "__main__":
    main()
