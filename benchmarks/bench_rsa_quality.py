"""Adapter fine-tuning on long reviews: Random Sparse Attention (density 1/4) vs dense attention.

    python3 benchmarks/bench_rsa_quality.py --domain books --seeds 0,1,2

One Amazon domain's fixed split (adapterkit.data.amazon_splits: 1400 train / 200 dev / 400 test),
reviews truncated to --max-seq-len 512 tokens, all-MiniLM-L6-v2 with a bottleneck adapter
(64, one per layer) and a head trained for --epochs; the same data order, initialisation and
settings for both arms; the arms of one seed run back to back. Reports test accuracy and F1 of
the last epoch, mean and spread over seeds, and training time per arm. RSA: block 64, the
layout seeded per layer (adapterkit.ops.hf.configure_rsa), the same in training and test.
Results are appended to --log as they finish and a rerun skips what is there.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--domain", default="books")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--density", type=float, default=0.25)
    p.add_argument("--train-limit", type=int, default=None, help="train rows (default: all 1400)")
    p.add_argument("--log", default="runs/bench_rsa_quality.jsonl")
    return p.parse_args()


def encoded_splits(domain: str, tokenizer, max_seq_len: int, train_limit: int | None):
    import datasets

    from adapterkit.data.amazon import amazon_splits

    splits = amazon_splits(domain)
    out = {}
    for name in ("train", "test"):
        data = splits[name]
        if name == "train" and train_limit:
            data = data.shuffle(seed=0).select(range(train_limit))
        enc = tokenizer(list(data["text"]), truncation=True, max_length=max_seq_len)
        out[name] = datasets.Dataset.from_dict({**{k: enc[k] for k in ("input_ids", "attention_mask",
                                                                        "token_type_ids")},
                                                 "labels": [int(y) for y in data["label"]]})
    return out


def run_arm(attention: str, seed: int, data, args) -> dict:
    import adapterkit as ak
    from adapterkit import backbone
    from adapterkit.evaluation import make_batches, predict_logits
    from adapterkit.metrics import compute_metrics
    from sklearn.metrics import f1_score

    torch.manual_seed(seed)
    model = backbone.load_model(None, num_labels=2)
    if attention == "rsa":
        backbone.set_attention(model, "adapterkit_rsa", {"density": args.density, "block_size": 64, "seed": seed})
    else:
        backbone.set_attention(model, "sdpa")
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=64, sharing=1))
    ak.train_adapter(model, "a")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for batch in make_batches(data["train"], args.batch_size, 0, False, seed=seed + epoch):
            batch.pop("_index")
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - t0
    model.eval()
    logits = predict_logits(model, data["test"], 32, 0)
    labels = data["test"]["labels"]
    metrics = compute_metrics("sst2", logits.numpy(), labels)
    f1 = f1_score(labels, logits.argmax(-1).numpy())
    return {"attention": attention, "seed": seed, "accuracy": metrics["accuracy"], "f1": float(f1),
            "train_seconds": seconds}


def main() -> None:
    args = parse_args()
    from adapterkit import backbone

    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    config = f"{args.domain}-len{args.max_seq_len}-ep{args.epochs}-lr{args.lr}-d{args.density}-n{args.train_limit}"
    done = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    done = [r for r in done if r["config"] == config]
    have = {(r["attention"], r["seed"]) for r in done}
    tokenizer = backbone.load_tokenizer(None)
    data = encoded_splits(args.domain, tokenizer, args.max_seq_len, args.train_limit)
    lengths = [len(ids) for ids in data["train"]["input_ids"]]
    for seed in [int(s) for s in args.seeds.split(",")]:
        for attention in ("dense", "rsa") if seed % 2 == 0 else ("rsa", "dense"):
            if (attention, seed) in have:
                continue
            row = {"config": config, **run_arm(attention, seed, data, args)}
            done.append(row)
            with open(log, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"seed {seed} {attention:<5} acc {row['accuracy']:.4f} f1 {row['f1']:.4f} "
                  f"train {row['train_seconds']:.0f} s", flush=True)
    print(f"\n{args.domain}: {len(data['train'])} train / {len(data['test'])} test reviews, max_seq_len "
          f"{args.max_seq_len} (train tokens: median {statistics.median(lengths):.0f}, "
          f"{sum(n == args.max_seq_len for n in lengths) / len(lengths):.0%} truncated), {args.epochs} epochs")
    print("| attention | test accuracy (mean ± sd) | per seed | test F1 (mean) | train time per run (s) |")
    print("|---|---:|---|---:|---:|")
    for attention in ("dense", "rsa"):
        rows = sorted((r for r in done if r["attention"] == attention), key=lambda r: r["seed"])
        if not rows:
            continue
        acc = [100 * r["accuracy"] for r in rows]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        label = "dense (SDPA)" if attention == "dense" else f"RSA, density {args.density:g}, block 64"
        print(f"| {label} | {statistics.mean(acc):.1f} ± {sd:.1f} | {', '.join(f'{a:.1f}' for a in acc)} | "
              f"{100 * statistics.mean(r['f1'] for r in rows):.1f} | "
              f"{statistics.median(r['train_seconds'] for r in rows):.0f} |")


if __name__ == "__main__":
    main()
