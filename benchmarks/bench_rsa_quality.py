"""Adapter fine-tuning on Amazon reviews: Random Sparse Attention layouts vs dense attention.

    python3 benchmarks/bench_rsa_quality.py --data-dir ../shared/data/amazon --seeds 0,1,2 \\
        --arms dense,global:0.25,global:0.5
    python3 benchmarks/bench_rsa_quality.py --data-dir ../shared/data/amazon --concat-tokens 2048 \\
        --arms dense,global:0.25                      # long inputs: reviews joined to 2,048 tokens

One Amazon domain's fixed split (adapterkit.data.amazon_splits: 1400 train / 200 dev / 400 test),
all-MiniLM-L6-v2 with a bottleneck adapter (64, one per layer) and a head trained for --epochs;
the same data order, initialisation and settings for every arm; the arms of one seed run back
to back (their order alternates with the seed). Reports test accuracy and F1 of the last epoch,
mean and spread over seeds, and training time per arm.

Arms: `dense` (SDPA), `plain:D` (the original RSA layout at density D: the diagonal block and
random blocks, density counting the diagonal), `global:D` (block 0, holding [CLS], global, and at
least one random block besides the diagonal and block 0). RSA: block 64, the layout seeded per
layer, the same in training and test.

Long inputs (--concat-tokens N): the reviews of each split are grouped by label (in the split's
order) and joined, [SEP]-separated, into examples of up to N tokens; the model's 512 position
embeddings are tiled to N (Longformer's copy initialisation), for every arm alike.
Results are appended to --log as they finish and a rerun skips what is there.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import _data  # noqa: F401,E402  (points adapterkit at ../shared/data)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder with <domain>.positive.review etc.")
    p.add_argument("--domain", default="books")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default="dense,global:0.25,global:0.5",
                   help="comma-separated: dense, plain:DENSITY, global:DENSITY")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--concat-tokens", type=int, default=None, help="join reviews into examples this long")
    p.add_argument("--train-limit", type=int, default=None, help="train examples (default: all)")
    p.add_argument("--test-limit", type=int, default=None, help="test examples (default: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log", default="runs/bench_rsa_quality.jsonl")
    return p.parse_args()


def rsa_settings(arm: str, seed: int) -> dict | None:
    """The configure_rsa settings of an arm (None: dense)."""
    if arm == "dense":
        return None
    kind, density = arm.split(":")
    extra = {"plain": {}, "global": {"global_blocks": 1, "min_random_blocks": 1}}[kind]
    return {"density": float(density), "block_size": 64, "seed": seed, **extra}


def _limit(data, n: int | None):
    return data if not n or n >= len(data) else data.shuffle(seed=0).select(range(n))


def _concatenated(enc: dict, labels: list[int], tokens: int, sep: int) -> tuple[dict, list[int]]:
    """Reviews of one label joined into examples of up to `tokens` tokens ([CLS] a [SEP] b [SEP] ...)."""
    out, out_labels = {"input_ids": [], "attention_mask": [], "token_type_ids": []}, []
    for label in sorted(set(labels)):
        current = None
        for ids, y in zip(enc["input_ids"], labels):
            if y != label:
                continue
            body = ids[1:]                         # drop this review's [CLS], keep its [SEP]
            if current is not None and len(current) + len(body) > tokens:
                out["input_ids"].append(current)
                out_labels.append(label)
                current = None
            current = (ids if current is None else current + body)[:tokens]
            if current[-1] != sep:
                current[-1] = sep
        if current is not None:
            out["input_ids"].append(current)
            out_labels.append(label)
    out["attention_mask"] = [[1] * len(x) for x in out["input_ids"]]
    out["token_type_ids"] = [[0] * len(x) for x in out["input_ids"]]
    return out, out_labels


def encoded_splits(args, tokenizer):
    import datasets

    from adapterkit.data.amazon import amazon_splits

    splits = amazon_splits(args.domain, data_dir=args.data_dir)
    out = {}
    for name, limit in (("train", args.train_limit), ("test", args.test_limit)):
        data = splits[name]
        labels = [int(y) for y in data["label"]]
        if args.concat_tokens:
            enc = tokenizer(list(data["text"]), truncation=True, max_length=args.concat_tokens)
            enc, labels = _concatenated(enc, labels, args.concat_tokens, tokenizer.sep_token_id)
        else:
            enc = tokenizer(list(data["text"]), truncation=True, max_length=args.max_seq_len)
        rows = datasets.Dataset.from_dict({**{k: enc[k] for k in ("input_ids", "attention_mask",
                                                                 "token_type_ids")}, "labels": labels})
        out[name] = _limit(rows, limit)
    return out


def tile_positions(model, length: int) -> None:
    """Grow a BERT-style model's position embeddings to `length` by repeating the learned ones."""
    emb = model.base_model.embeddings
    old = emb.position_embeddings.weight.data
    if length <= old.shape[0]:
        return
    reps = -(-length // old.shape[0])
    new = torch.nn.Embedding(length, old.shape[1])
    new.weight.data.copy_(old.repeat(reps, 1)[:length])
    new.weight.requires_grad_(False)
    emb.position_embeddings = new
    emb.register_buffer("position_ids", torch.arange(length)[None], persistent=False)
    emb.register_buffer("token_type_ids", torch.zeros(1, length, dtype=torch.long), persistent=False)
    model.config.max_position_embeddings = length


def run_arm(arm: str, seed: int, data, args) -> dict:
    import adapterkit as ak
    from adapterkit import backbone
    from adapterkit.evaluation import make_batches, predict_logits
    from sklearn.metrics import f1_score

    torch.manual_seed(seed)
    model = backbone.load_model(None, num_labels=2)
    if args.concat_tokens:
        tile_positions(model, args.concat_tokens)
    rsa = rsa_settings(arm, seed)
    backbone.set_attention(model, "adapterkit_rsa" if rsa else "sdpa", rsa)
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=64, sharing=1))
    ak.train_adapter(model, "a")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for batch in make_batches(data["train"], args.batch_size, 0, False, seed=seed + epoch):
            batch.pop("_rows")
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    logits = predict_logits(model, data["test"], 16, 0)
    test_seconds = time.perf_counter() - t0
    labels = data["test"]["labels"]
    predicted = logits.argmax(-1).numpy()
    accuracy = sum(int(p == y) for p, y in zip(predicted, labels)) / len(labels)
    return {"arm": arm, "seed": seed, "accuracy": accuracy, "f1": float(f1_score(labels, predicted)),
            "train_seconds": seconds, "test_seconds": test_seconds}


def label(arm: str) -> str:
    if arm == "dense":
        return "dense (SDPA)"
    kind, density = arm.split(":")
    layout = {"plain": "original layout", "global": "global block 0 + >= 1 random block"}[kind]
    return f"RSA {float(density):g}, {layout}"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from adapterkit import backbone

    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    length = f"cat{args.concat_tokens}" if args.concat_tokens else f"len{args.max_seq_len}"
    config = (f"{args.domain}-{length}-ep{args.epochs}-lr{args.lr}-bs{args.batch_size}"
              f"-n{args.train_limit}-t{args.test_limit}")
    done = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    done = [r for r in done if r["config"] == config]
    have = {(r["arm"], r["seed"]) for r in done}
    arms = args.arms.split(",")
    tokenizer = backbone.load_tokenizer(None)
    data = encoded_splits(args, tokenizer)
    lengths = [len(ids) for ids in data["train"]["input_ids"]]
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in arms if seed % 2 == 0 else arms[::-1]:
            if (arm, seed) in have:
                continue
            row = {"config": config, **run_arm(arm, seed, data, args)}
            done.append(row)
            with open(log, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"seed {seed} {arm:<12} acc {row['accuracy']:.4f} f1 {row['f1']:.4f} "
                  f"train {row['train_seconds']:.0f} s test {row['test_seconds']:.0f} s", flush=True)
    print(f"\n{args.domain}: {len(data['train'])} train / {len(data['test'])} test examples, {length} "
          f"(train tokens: median {statistics.median(lengths):.0f}, max {max(lengths)}), "
          f"{args.epochs} epochs, config {config}")
    print("| attention | test accuracy (mean ± sd) | per seed | test F1 (mean) | train s per run (median) | "
          "test s (median) |")
    print("|---|---:|---|---:|---:|---:|")
    for arm in arms:
        rows = sorted((r for r in done if r["arm"] == arm), key=lambda r: r["seed"])
        if not rows:
            continue
        acc = [100 * r["accuracy"] for r in rows]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        print(f"| {label(arm)} | {statistics.mean(acc):.1f} ± {sd:.1f} | {', '.join(f'{a:.1f}' for a in acc)} | "
              f"{100 * statistics.mean(r['f1'] for r in rows):.1f} | "
              f"{statistics.median(r['train_seconds'] for r in rows):.0f} | "
              f"{statistics.median(r['test_seconds'] for r in rows):.0f} |")


if __name__ == "__main__":
    main()
