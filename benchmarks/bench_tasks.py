"""Task types on the user-file path: adapters (3-shared, per layer) vs full fine-tuning on
all-MiniLM-L6-v2, same epochs, several seeds; mean ± sd and train time per run.

    python3 benchmarks/bench_tasks.py conll  --data /work/shared/data --seeds 1,2,3
    python3 benchmarks/bench_tasks.py squad  --data /work/shared/data --seeds 1,2,3
    python3 benchmarks/bench_tasks.py amazon --data /work/shared/data --seeds 1,2,3

Each run is `adapterkit train --task-type ...` (adapterkit.training.train) on files this script
writes from the shared data (seeded subsamples, sizes printed and recorded): CoNLL-2003
(IOB1 column files, scored on the test file with seqeval entity F1), SQuAD v1.1 (train on the
partial train file, model selection on 300 dev questions, scored on other dev questions with
the official EM/F1 definitions), the Amazon reviews as a user CSV (text, stars: 4 classes).
The variants are interleaved per seed, so machine load hits all of them alike. The test score
is of the best validation evaluation's weights, reloaded from the output folder. A finished run
(its metrics.json) is not trained again; --report-only tabulates the finished runs alone.
--include-record adds the runs of an earlier record (a tasks_<bench>.json written by this script
with the same settings, e.g. seeds run in another process or session) to the table.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

from adapterkit.config import BottleneckConfig
from adapterkit.tasks.load import DataFiles
from adapterkit.training import TrainConfig, train

VARIANTS = {
    "full": ("full fine-tuning", dict(full_finetune=True)),
    "sharing3": ("adapters, 3-shared", dict(adapter=BottleneckConfig(bottleneck_dim=64, sharing=3))),
    "sharing1": ("adapters, per layer", dict(adapter=BottleneckConfig(bottleneck_dim=64, sharing=1))),
    # not run by default: 3-shared with the per-layer arm's parameter count (3 x 64 wide)
    "sharing3w": ("adapters, 3-shared, bottleneck 192", dict(adapter=BottleneckConfig(bottleneck_dim=192, sharing=3))),
}
DEFAULT_VARIANTS = "full,sharing3,sharing1"


def conll_files(data: Path, work: Path, args) -> tuple[str, DataFiles, dict]:
    from adapterkit.tasks.tags import read_tagged

    def write(name, sentences):
        path = work / f"{name}.txt"
        path.write_text("".join("".join(f"{w} {t}\n" for w, t in zip(ws, ts)) + "\n" for ws, ts, _ in sentences))
        return str(path)

    rng = random.Random(0)
    train = rng.sample(read_tagged(data / "conll2003/train.txt"), args.train_rows)
    dev = rng.sample(read_tagged(data / "conll2003/dev.txt"), args.dev_rows)
    test = read_tagged(data / "conll2003/test.txt")
    test = rng.sample(test, args.test_rows) if args.test_rows < len(test) else test
    files = DataFiles(train=write("train", train), validation=write("dev", dev), test=write("test", test),
                      tag_scheme="iob1")
    return "token-classification", files, {"train sentences": len(train), "dev sentences": len(dev),
                                           "test sentences": len(test)}


def squad_files(data: Path, work: Path, args) -> tuple[str, DataFiles, dict]:
    def questions(path):
        rows = []
        for article in json.loads(path.read_text())["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    rows.append({"id": qa["id"], "question": qa["question"], "context": paragraph["context"],
                                 "answers": qa["answers"]})
        return rows

    def write(name, rows):
        path = work / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    rng = random.Random(0)
    train = questions(data / "squad/train-v1.1.first-11-articles.json")
    train = rng.sample(train, args.train_rows) if args.train_rows < len(train) else train
    dev = questions(data / "squad/dev-v1.1.json")
    rng.shuffle(dev)
    select, score = dev[:args.dev_rows], dev[args.dev_rows:args.dev_rows + args.test_rows]
    files = DataFiles(train=write("train", train), validation=write("dev", select), test=write("test", score))
    return "extractive-qa", files, {"train questions": len(train), "dev questions (selection)": len(select),
                                    "dev questions (scored)": len(score)}


def amazon_files(data: Path, work: Path, args) -> tuple[str, DataFiles, dict]:
    import csv

    from adapterkit.data import parse_reviews

    rows = []
    for domain in ("books", "dvd", "electronics", "kitchen"):
        for polarity in ("positive", "negative"):
            for review in parse_reviews(data / f"amazon/{domain}.{polarity}.review"):
                text = f"{review.get('title', '')}. {review.get('review_text', '')}".strip()
                rows.append({"text": text, "stars": str(int(float(review["rating"])))})
    rng = random.Random(0)
    rng.shuffle(rows)
    parts = {"train": rows[:args.train_rows], "dev": rows[args.train_rows:args.train_rows + args.dev_rows],
             "test": rows[args.train_rows + args.dev_rows:args.train_rows + args.dev_rows + args.test_rows]}
    paths = {}
    for name, part in parts.items():
        paths[name] = work / f"{name}.csv"
        with open(paths[name], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "stars"])
            writer.writeheader()
            writer.writerows(part)
    files = DataFiles(train=str(paths["train"]), validation=str(paths["dev"]), test=str(paths["test"]))
    return "classification", files, {f"{k} reviews": len(v) for k, v in parts.items()}


BENCHES = {"conll": conll_files, "squad": squad_files, "amazon": amazon_files}
DEFAULTS = {  # rows, max_seq_len, epochs, batch size, eval batch
    "conll": dict(train_rows=1000, dev_rows=200, test_rows=3453, max_seq_len=64, epochs=2, batch_size=16),
    "squad": dict(train_rows=600, dev_rows=100, test_rows=400, max_seq_len=128, epochs=2, batch_size=16),
    "amazon": dict(train_rows=800, dev_rows=200, test_rows=600, max_seq_len=96, epochs=2, batch_size=16),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bench", choices=list(BENCHES))
    parser.add_argument("--data", required=True, help="the shared data folder (conll2003/, squad/, amazon/)")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"some of {', '.join(VARIANTS)}")
    parser.add_argument("--adapter-lr", type=float, default=1e-3)
    parser.add_argument("--full-lr", type=float, default=5e-5)
    parser.add_argument("--out", default="runs/bench_tasks")
    parser.add_argument("--report-only", action="store_true",
                        help="tabulate the runs already finished under --out (train nothing)")
    parser.add_argument("--include-record", action="append", default=[], metavar="JSON",
                        help="an earlier tasks_<bench>.json of the same settings whose runs join the table")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (on a loaded 2-core machine 1 thread ran a step 5x faster than 2)")
    for key, value in DEFAULTS["conll"].items():
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    args = parser.parse_args()
    unknown = [name for name in args.variants.split(",") if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r} (variants: {', '.join(VARIANTS)})")
    for key, value in DEFAULTS[args.bench].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    results: dict[str, list[dict]] = {}
    for path in args.include_record:
        for name, runs in earlier_runs(path, args).items():
            results.setdefault(name, []).extend(runs)
    seeds = [int(s) for s in args.seeds.split(",")]
    for name, runs in results.items():  # before anything is written
        both = sorted({r["seed"] for r in runs} & set(seeds)) if name in args.variants.split(",") else []
        if both:
            raise SystemExit(f"error: {name} seed {both[0]} is both in --include-record and in --seeds")
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.out) / args.bench
    work.mkdir(parents=True, exist_ok=True)
    task_type, files, sizes = BENCHES[args.bench](Path(args.data), work, args)
    print(f"{args.bench}: {task_type}, {sizes}, max_seq_len {args.max_seq_len}, {args.epochs} epochs, "
          f"batch {args.batch_size}", flush=True)
    for seed in seeds:
        for name in args.variants.split(","):
            if args.report_only and not (work / f"{name}-s{seed}" / "metrics.json").exists():
                continue
            results.setdefault(name, []).append({"seed": seed, **run(name, seed, task_type, files, work, args)})
    for runs in results.values():
        runs.sort(key=lambda r: r["seed"])
    report(args, task_type, sizes, results)


SAME = ("bench", "adapter_lr", "full_lr", *DEFAULTS["conll"])


def earlier_runs(path: str, args) -> dict[str, list[dict]]:
    """The runs of an earlier record, refused unless it was made with the same settings. Records
    before each run carried its seed list their runs in the order of their --seeds."""
    from adapterkit.errors import AdapterkitError
    from adapterkit.io.files import read_json

    try:
        record = read_json(path, "a bench_tasks record", schema={"args": {"seeds": str}, "runs": dict})
    except AdapterkitError as e:
        raise SystemExit(f"error: {e}") from None
    differ = [k for k in SAME if record["args"].get(k) != getattr(args, k)]
    if differ:
        raise SystemExit(f"error: {path}: made with other settings ({', '.join(differ)}); "
                         "its runs cannot join this table")
    seeds = [int(s) for s in record["args"]["seeds"].split(",")]
    return {name: [{"seed": seeds[i], **r} if "seed" not in r else r for i, r in enumerate(runs)]
            for name, runs in record["runs"].items()}


def run(name: str, seed: int, task_type: str, files: DataFiles, work: Path, args) -> dict:
    settings = VARIANTS[name][1]
    lr = args.full_lr if settings.get("full_finetune") else args.adapter_lr
    out = work / f"{name}-s{seed}"
    if (out / "metrics.json").exists():
        return json.loads((out / "metrics.json").read_text())
    cfg = TrainConfig(task_type=task_type, data=files, epochs=args.epochs, lr=lr, seed=seed,
                      max_seq_len=args.max_seq_len, batch_size=args.batch_size, output=str(out), **settings)
    metrics = train(cfg, progress=False, log=lambda line: print(f"  [{name} s{seed}] {line}", flush=True))
    print(f"{name} seed {seed}: test {metrics['test']}  train {metrics['train_seconds']:.0f} s", flush=True)
    return metrics


RECORDED = ("seed", "test", "best", "train_seconds", "best_step", "trainable_parameters")


def report(args, task_type: str, sizes: dict, results: dict) -> None:
    keys = {"token-classification": ["f1", "precision", "recall"], "extractive-qa": ["exact_match", "f1"],
            "classification": ["accuracy", "macro_f1"]}[task_type]
    scale = 1.0 if task_type == "extractive-qa" else 100.0
    lines = [f"{args.bench} ({task_type}), all-MiniLM-L6-v2, {sizes}, max_seq_len {args.max_seq_len}, "
             f"{args.epochs} epochs, batch {args.batch_size}, lr adapters {args.adapter_lr} / full {args.full_lr}, "
             "seeds per variant: " + ", ".join(f"{name} {','.join(str(r['seed']) for r in runs)}"
                                               for name, runs in results.items()),
             "| variant | trainable params | " + " | ".join(f"test {k} (mean ± sd)" for k in keys)
             + f" | test {keys[0]} per seed | train s per run (median; per seed) |",
             "|---|---:|" + "---:|" * len(keys) + "---:|---:|"]
    for name, runs in results.items():
        cells = []
        for key in keys:
            values = [scale * r["test"][key] for r in runs]
            sd = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else " (1 seed)"
            cells.append(f"{statistics.mean(values):.1f}{sd}")
        seconds = [r["train_seconds"] for r in runs]
        per_seed = " / ".join(f"{scale * r['test'][keys[0]]:.1f}" for r in runs)
        params = next((f"{r['trainable_parameters']:,}" for r in runs if "trainable_parameters" in r), "?")
        times = " / ".join(f"{t:.0f}" for t in seconds)
        lines.append(f"| {VARIANTS[name][0]} | {params} | " + " | ".join(cells)
                     + f" | {per_seed} | {statistics.median(seconds):.0f} ({times}) |")
    print("\n".join(lines), flush=True)
    record = Path(args.out) / f"tasks_{args.bench}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"args": vars(args), "sizes": sizes, "table": lines,
                                  "runs": {k: [{key: r[key] for key in RECORDED if key in r} for r in v]
                                           for k, v in results.items()}},
                                 indent=1))


if __name__ == "__main__":
    main()
