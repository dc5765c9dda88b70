"""AdapterDrop: training-step and inference time with adapters dropped from the lowest k layers,
against full fine-tuning and k = 0, and CoLA / SST-2 dev scores per k (static and robust).

    python3 benchmarks/bench_adapterdrop.py --part speed            # interleaved timings
    python3 benchmarks/bench_adapterdrop.py --part quality          # training runs (minutes each)
    python3 benchmarks/bench_adapterdrop.py --part speed --quick --model DIR   # smoke run

Speed: all-MiniLM-L6-v2 (6 layers), one batch of 32 real CoLA sentences padded to --seq-len;
one adapter model (bottleneck 64, every layer) switched between k = 0, 2, 4 with
set_adapter_drop, and a full fine-tuning copy, timed in rotated order within every round (so
machine load hits all alike); medians over --rounds. A training step is forward, backward and
AdamW step; inference is one forward under inference_mode.
Quality: `adapterkit train`'s loop (training.train) per task and k with --max-steps steps,
dev scores of the best evaluation; the robust run draws k in 0..max per step and is scored at
every k from one trained adapter.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("speed", "quality"), required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--data-dir", default="/work/shared/data/glue")
    p.add_argument("--ks", default="0,2,4")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tasks", default="cola,sst2")
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--max-seq-len", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="runs/adapterdrop")
    p.add_argument("--results", default="benchmarks/results/adapterdrop.json")
    p.add_argument("--quick", action="store_true")
    return p.parse_args(argv)


def speed(args) -> dict:
    import torch

    import adapterkit as ak
    from adapterkit import backbone
    from adapterkit.compose import set_adapter_drop

    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    batch = _batch(args)
    torch.manual_seed(0)
    adapted = backbone.load_model(args.model, num_labels=2)
    ak.add_adapter(adapted, "a", ak.BottleneckConfig(bottleneck_dim=64))
    ak.train_adapter(adapted, "a")
    full = backbone.load_model(args.model, num_labels=2)
    for module in full.modules():  # no dropout in either: the same function, timed alike
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    models = {"full": (full, torch.optim.AdamW([p for p in full.parameters() if p.requires_grad], lr=1e-5))}
    adam = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=1e-5)
    arms = ["full", *[f"k={k}" for k in ks]]

    def model_of(arm):
        if arm == "full":
            return models["full"]
        set_adapter_drop(adapted, int(arm[2:]))
        return adapted, adam

    times = {(arm, kind): [] for arm in arms for kind in ("train", "infer")}
    rounds = 2 if args.quick else args.rounds
    for r in range(rounds + 1):  # round 0 warms up
        for arm in arms[r % len(arms):] + arms[: r % len(arms)]:
            model, optimizer = model_of(arm)
            model.train()
            t0 = time.perf_counter()
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            t1 = time.perf_counter()
            model.eval()
            with torch.inference_mode():
                model(**{k: v for k, v in batch.items() if k != "labels"})
            t2 = time.perf_counter()
            if r:
                times[(arm, "train")].append(t1 - t0)
                times[(arm, "infer")].append(t2 - t1)
    medians = {f"{arm}/{kind}": statistics.median(v) for (arm, kind), v in times.items()}
    return {"rounds": rounds, "batch_size": args.batch_size, "seq_len": args.seq_len, "threads": args.threads,
            "median_seconds": medians}


def _batch(args) -> dict:
    import torch

    from adapterkit import backbone
    from adapterkit.data import load_glue

    tokenizer = backbone.load_tokenizer(args.model)
    data = load_glue("cola", "train", args.data_dir, limit=args.batch_size)
    enc = tokenizer(list(data["text_a"]), padding="max_length", truncation=True, max_length=args.seq_len,
                    return_tensors="pt")
    return {**{k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc},
            "labels": torch.tensor(data["label"])}


def quality(args) -> list[dict]:
    from adapterkit.training import TrainConfig, train

    rows = []
    ks = [int(k) for k in args.ks.split(",")]
    for task in args.tasks.split(","):
        for k, robust in [*((k, False) for k in ks), (max(ks), True)]:
            name = f"{task}-robust{k}" if robust else f"{task}-k{k}"
            out = Path(args.out) / name
            cfg = TrainConfig(task=task, model=args.model, epochs=1, max_steps=2 if args.quick else args.max_steps,
                              max_seq_len=args.max_seq_len, seed=args.seed, data_dir=args.data_dir,
                              output=str(out), drop_layers=k, drop_robust=robust)
            if (out / "metrics.json").exists():
                metrics = json.loads((out / "metrics.json").read_text())
            else:
                metrics = train(cfg, progress=False)
            row = {"task": task, "train_k": k, "robust": robust, "train_seconds": metrics["train_seconds"],
                   "dev": {0 if robust else k: metrics["best"]}}
            if robust:
                row["dev"] = {e: _score(out, task, e, args) for e in ks}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _score(out: Path, task: str, k: int, args) -> dict:
    from adapterkit.compose import set_adapter_drop
    from adapterkit.data import encode, load_glue
    from adapterkit.evaluation import evaluate, load_run

    model, tokenizer, task_, run = load_run(out)
    set_adapter_drop(model, k)
    rows = encode(load_glue(task_, "dev", args.data_dir), tokenizer, task_, args.max_seq_len)
    return evaluate(model, rows, task_, 128, tokenizer.pad_token_id or 0)


def main(argv=None) -> None:
    args = parse_args(argv)
    result = speed(args) if args.part == "speed" else quality(args)
    print(json.dumps(result, indent=2))
    if not args.quick:
        path = Path(args.results)
        data = json.loads(path.read_text()) if path.exists() else {}
        data[args.part] = result
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
    if args.part == "speed":
        med = result["median_seconds"]
        for kind in ("train", "infer"):
            for arm in [a.split("/")[0] for a in med if a.endswith(kind)]:
                m = med[f"{arm}/{kind}"]
                print(f"{kind:<6} {arm:<6} {1000 * m:8.1f} ms  x{m / med[f'full/{kind}']:.2f} of full  "
                      f"x{m / med[f'k=0/{kind}']:.2f} of k=0")


if __name__ == "__main__":
    main()
